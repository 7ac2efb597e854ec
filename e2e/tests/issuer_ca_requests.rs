//! `spec.isCA: true` against the real step-ca: its default template issues leaves, so a CA request
//! must end Failed with a message that names the fix, never Issued with a leaf.

use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, shared_controller};
use e2e::{Env, TestNamespace, dump};
use kube::api::PostParams;

#[tokio::test]
async fn issuer_ca_request_signed_as_a_leaf_fails_with_the_fix() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let log = shared_controller(&env)?.to_string();
    let issuer = ready_cluster_issuer(&env, &client, "ca-request", &log).await?;
    let ns = TestNamespace::create(&client, "ca-request").await?;
    let api = namespaced(&client, &ns.name, &certificate_requests());

    let mut ca = certificate_request(
        "wants-ca",
        &csr(&format!("sub-ca.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&issuer),
    )?;
    ca.data["spec"]["isCA"] = serde_json::json!(true);
    api.create(&PostParams::default(), &ca).await?;
    // The same request without isCA, as a positive control: the issuer signs.
    let leaf = certificate_request(
        "wants-leaf",
        &csr(&format!("leaf.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&issuer),
    )?;
    api.create(&PostParams::default(), &leaf).await?;

    let issued = wait_ready_condition(
        &api,
        "wants-leaf",
        "True",
        Some("Issued"),
        Duration::from_secs(60),
        &log,
    )
    .await?;
    assert!(issued.data["status"]["certificate"].is_string());

    let failed = wait_ready_condition(
        &api,
        "wants-ca",
        "False",
        Some("Failed"),
        Duration::from_secs(60),
        &log,
    )
    .await?;
    let message = condition(&failed, "Ready")
        .and_then(|c| c["message"].as_str())
        .context("no Ready message")?;
    for needle in [
        "isCA: true",
        "without BasicConstraints CA:TRUE and keyUsage keyCertSign",
        "provisioner whose template issues CA certificates",
    ] {
        assert!(message.contains(needle), "{needle:?} in {}", dump(&failed));
    }
    assert!(
        failed.data["status"]["certificate"].is_null(),
        "a leaf must not be handed out for a CA request: {}",
        dump(&failed)
    );
    assert!(
        failed.data["status"]["failureTime"].is_string(),
        "{}",
        dump(&failed)
    );
    ns.delete().await
}
