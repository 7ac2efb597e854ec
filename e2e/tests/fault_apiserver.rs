//! kube-apiserver restarted during a burst: the controller reconnects and finishes; no request
//! is lost.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use e2e::faults::*;
use e2e::fixtures::*;
use e2e::operator::shared_controller;
use e2e::{Env, TestNamespace, wait_for};

#[tokio::test]
async fn fault_apiserver_restarted_mid_burst() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let log = shared_controller(&env)?.to_string();
    let issuer = ready_cluster_issuer(&env, &client, "fault-api", &log).await?;
    let ns = TestNamespace::create(&client, "fault-api").await?;
    let api = namespaced(&client, &ns.name, &certificate_requests());
    burst(&client, &ns.name, &issuer, "api", 100).await?;
    wait_for(
        "some requests to be issued before the restart",
        Duration::from_secs(60),
        async || Ok((reasons(&api).await?.get("Issued").copied().unwrap_or(0) >= 5).then_some(())),
        async || format!("{:?}", reasons(&api).await.ok()),
    )
    .await?;
    let before = reasons(&api).await?;
    let restart = Instant::now();
    component("stop", "apiserver").await?;
    component("start", "apiserver")
        .await
        .context("restarting kube-apiserver")?;
    let down_for = restart.elapsed();
    // The test's own client reconnects too; the controller must finish without help.
    wait_all_issued_across_apiserver_restart(&api, 100, Duration::from_secs(180), &log).await?;
    // Certificates signed while the apiserver was away are kept and written later, never
    // signed again.
    let repeats = assert_signed_once_except_in_flight(&env, &ns.name, "api-", 100, 0)?;
    eprintln!(
        "fault_apiserver_restarted_mid_burst: before {before:?}; apiserver down and back in {down_for:?}; all 100 issued {:?} after the restart; {repeats} signs repeated",
        restart.elapsed()
    );
    ns.delete().await
}
