//! step-ca killed (SIGKILL) in the middle of a burst of 200 requests and restarted 20 s later:
//! every request ends Issued, none Failed, none signed twice.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use e2e::faults::*;
use e2e::fixtures::*;
use e2e::operator::shared_controller;
use e2e::{Env, TestNamespace, wait_for};

#[tokio::test]
async fn fault_step_ca_killed_mid_burst() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let log = shared_controller(&env)?.to_string();
    let issuer = ready_cluster_issuer(&env, &client, "fault-ca", &log).await?;
    let ns = TestNamespace::create(&client, "fault-ca").await?;
    let ledger = CertificateLedger::start(&client, &ns.name);
    let api = namespaced(&client, &ns.name, &certificate_requests());
    let started = Instant::now();
    burst(&client, &ns.name, &issuer, "burst", 200).await?;
    // Kill the CA once some, not all, are issued.
    wait_for(
        "the first requests to be issued",
        Duration::from_secs(60),
        async || Ok((reasons(&api).await?.get("Issued").copied().unwrap_or(0) >= 5).then_some(())),
        async || format!("{:?}", reasons(&api).await.ok()),
    )
    .await?;
    let pid = std::fs::read_to_string(env.state.join("step-ca.pid"))?;
    std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()?;
    let at_kill = reasons(&api).await?;
    // Observe the outage: no request may fail while the CA is gone.
    assert_none_failed_for(&api, Duration::from_secs(20))
        .await
        .context("during the step-ca outage")?;
    let during = reasons(&api).await?;
    component("start", "step-ca")
        .await
        .context("restarting step-ca")?;
    wait_all_issued(&api, 200, Duration::from_secs(180), &log).await?;
    // A sign the CA completed but could not answer before it died is repeated after the restart:
    // the client cannot know it succeeded. At most one per worker; none is written twice.
    let repeats = assert_signed_once_except_in_flight(&env, &ns.name, "burst-", 200, 16)?;
    let written = ledger.assert_written_once()?;
    assert_eq!(written, 200);
    eprintln!(
        "fault_step_ca_killed_mid_burst: at kill {at_kill:?}; after 20 s down {during:?}; all 200 issued {:?} after the burst; each written once; {repeats} signs in flight at the kill repeated",
        started.elapsed()
    );
    ns.delete().await
}
