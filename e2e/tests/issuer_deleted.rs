//! A deleted issuer leaves nothing behind in the controller (security review M4): its signer,
//! which holds the decrypted provisioner key, is dropped, and the ready-issuers gauge forgets it.
//! Its own test binary: the gauge counts every issuer, and no other test changes them meanwhile.

use std::time::Duration;

use anyhow::Result;
use e2e::fixtures::*;
use e2e::operator::{
    CLUSTER_RESOURCE_NAMESPACE, metric_value, shared_controller_leading, shared_controller_metrics,
};
use e2e::{Env, wait_for};
use kube::api::DeleteParams;

/// `step_operator_issuers_ready{kind="StepClusterIssuer"}`.
async fn ready_cluster_issuers() -> Result<i64> {
    let text = shared_controller_metrics().await?;
    let ready = metric_value(
        &text,
        r#"step_operator_issuers_ready{kind="StepClusterIssuer"}"#,
    )?;
    // No line yet: no issuer has been counted.
    Ok(ready.unwrap_or(0.0) as i64)
}

#[tokio::test]
async fn issuer_deleted_is_forgotten() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let log = shared_controller_leading(&env).await?;
    let api = cluster(&client, &step_cluster_issuers());
    // The gauge must say what the API says: the issuers of earlier test binaries are still being
    // checked when this starts, so it is compared with the Ready issuers listed, not with itself.
    let agrees = async |what: &str| {
        wait_for(
            what,
            Duration::from_secs(60),
            async || {
                let listed = api.list(&Default::default()).await?;
                let ready = listed.items.iter().filter(|i| is_true(i, "Ready")).count() as i64;
                Ok((ready_cluster_issuers().await? == ready).then_some(ready))
            },
            async || shared_controller_metrics().await.unwrap_or_default(),
        )
        .await
    };
    let name = ready_cluster_issuer(&env, &client, "deleted", &log).await?;
    agrees("the ready-issuers gauge to count the new issuer").await?;

    api.delete(&name, &DeleteParams::default()).await?;
    wait_for(
        "the issuer to be gone",
        Duration::from_secs(30),
        async || Ok(api.get_opt(&name).await?.is_none().then_some(())),
        async || String::new(),
    )
    .await?;
    agrees("the ready-issuers gauge to forget the deleted issuer").await?;
    let needle = format!(
        "Issuer deleted; dropped its signer and provisioner key issuer=StepClusterIssuer {name}"
    );
    wait_for(
        "the controller to drop the deleted issuer's signer",
        Duration::from_secs(30),
        async || {
            Ok(std::fs::read_to_string(&log)?
                .contains(&needle)
                .then_some(()))
        },
        async || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
    .await
}
