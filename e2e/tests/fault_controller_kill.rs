//! The controller SIGKILLed in the middle of a burst and started again: every request is Issued
//! and each certificate is written once.

use std::time::{Duration, Instant};

use anyhow::Result;
use e2e::faults::*;
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process};
use e2e::{Env, TestNamespace, wait_for};

/// `initial_list`: how the watches load their initial state (both ways are exercised here: the
/// restarted controller must pick up a half-finished burst with either).
fn controller(env: &Env, initial_list: &str) -> Result<Process> {
    Process::start(
        env,
        "controller-kill",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            CLUSTER_RESOURCE_NAMESPACE,
            "--initial-list",
            initial_list,
        ],
        &[],
    )
}

#[tokio::test]
async fn fault_controller_sigkill_mid_burst() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let mut first = controller(&env, "streaming")?;
    let log = first.log.display().to_string();
    let issuer = ready_cluster_issuer(&env, &client, "fault-kill", &log).await?;
    let ns = TestNamespace::create(&client, "fault-kill").await?;
    let ledger = CertificateLedger::start(&client, &ns.name);
    let api = namespaced(&client, &ns.name, &certificate_requests());
    burst(&client, &ns.name, &issuer, "kill", 200).await?;
    wait_for(
        "some requests to be issued before the kill",
        Duration::from_secs(60),
        async || Ok((reasons(&api).await?.get("Issued").copied().unwrap_or(0) >= 10).then_some(())),
        async || format!("{:?}", reasons(&api).await.ok()),
    )
    .await?;
    first.kill_hard();
    let at_kill = reasons(&api).await?;
    let restarted = Instant::now();
    let second = controller(&env, "paged")?;
    wait_all_issued(
        &api,
        200,
        Duration::from_secs(180),
        &second.log.display().to_string(),
    )
    .await?;
    assert_eq!(ledger.assert_written_once()?, 200);
    for (p, mode) in [(&first, "streaming"), (&second, "paged")] {
        assert!(
            p.logs().contains(&format!("initial_list=\"{mode}\""))
                || p.logs().contains(&format!("initial_list={mode}")),
            "the controller did not log initial_list={mode}:\n{}",
            p.log_tail()
        );
    }
    // Signs in flight when the process died reached step-ca but never the API; the restarted
    // controller signs those requests again (the orphaned certificates are written nowhere).
    let extra = assert_signed_once_except_in_flight(&env, &ns.name, "kill-", 200, 16)?;
    eprintln!(
        "fault_controller_sigkill_mid_burst: at SIGKILL {at_kill:?}; the restarted controller finished in {:?}; each certificate written once; {extra} in-flight signs repeated",
        restarted.elapsed()
    );
    ns.delete().await
}
