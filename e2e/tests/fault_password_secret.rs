//! A StepClusterIssuer's password Secret deleted and re-created: requests wait as Pending, then
//! complete.

use std::time::Duration;

use anyhow::Result;
use e2e::faults::*;
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, shared_controller};
use e2e::{Env, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};

#[tokio::test]
async fn fault_password_secret_deleted_and_recreated() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let log = shared_controller(&env)?.to_string();
    let issuer = ready_cluster_issuer(&env, &client, "fault-secret", &log).await?;
    let issuers = cluster(&client, &step_cluster_issuers());
    Api::<Secret>::namespaced(client.clone(), CLUSTER_RESOURCE_NAMESPACE)
        .delete(&issuer, &DeleteParams::default())
        .await?;
    wait_ready_condition(
        &issuers,
        &issuer,
        "False",
        Some("SecretNotFound"),
        Duration::from_secs(30),
        &log,
    )
    .await?;

    let ns = TestNamespace::create(&client, "fault-secret").await?;
    let api = namespaced(&client, &ns.name, &certificate_requests());
    burst(&client, &ns.name, &issuer, "wait", 20).await?;
    wait_for(
        "all 20 requests to wait as Pending",
        Duration::from_secs(60),
        async || Ok((reasons(&api).await?.get("Pending").copied() == Some(20)).then_some(())),
        async || format!("{:?}", reasons(&api).await.ok()),
    )
    .await?;
    password_secret(
        &client,
        CLUSTER_RESOURCE_NAMESPACE,
        &issuer,
        "password",
        &env.provisioner_password()?,
    )
    .await?;
    wait_ready_condition(
        &issuers,
        &issuer,
        "True",
        Some("Verified"),
        Duration::from_secs(30),
        &log,
    )
    .await?;
    wait_all_issued(&api, 20, Duration::from_secs(60), &log).await?;
    assert_signed_once(&env, &ns.name, "wait-", 20)?;
    ns.delete().await
}
