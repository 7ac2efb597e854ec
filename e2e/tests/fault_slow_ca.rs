//! One CA that hangs does not stall the others: 50 requests for an issuer whose step-ca accepts
//! connections and never answers, then 20 requests for a healthy issuer; the 20 are issued about
//! as fast as on an idle controller, and the 50 are issued once their CA answers again.

use std::time::{Duration, Instant};

use anyhow::Result;
use e2e::faults::*;
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process};
use e2e::tcp_proxy::{Mode, TcpProxy};
use e2e::{Env, TestNamespace};
use kube::ResourceExt;
use serde_json::json;

fn controller(env: &Env) -> Result<Process> {
    Process::start(
        env,
        "controller-slow-ca",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            CLUSTER_RESOURCE_NAMESPACE,
            // The defaults that matter here, spelled out: 16 workers, 10 s per CA call, and so
            // at most 4 signs in flight per issuer.
            "--concurrency",
            "16",
            "--ca-timeout",
            "10s",
        ],
        &[],
    )
}

/// Creates `n` requests for `issuer` in a fresh namespace and returns how long until all were
/// Issued.
async fn issue(env: &Env, issuer: &str, prefix: &str, n: usize, log: &str) -> Result<Duration> {
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    let api = namespaced(&client, &ns.name, &certificate_requests());
    let started = Instant::now();
    burst(&client, &ns.name, issuer, prefix, n).await?;
    wait_all_issued(&api, n, Duration::from_secs(120), log).await?;
    Ok(started.elapsed())
}

#[tokio::test]
async fn fault_one_hanging_ca_does_not_stall_other_issuers() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let controller = controller(&env)?;
    let log = controller.log.display().to_string();
    let healthy = ready_cluster_issuer(&env, &client, "healthy", &log).await?;

    // The slow issuer reaches the same step-ca through a proxy that the test can silence.
    let (proxy, through) = TcpProxy::for_url(&env.step_ca_url).await?;
    let slow = verified_cluster_issuer_with(&env, &client, "slow", &log, |spec| {
        spec["url"] = json!(through);
    })
    .await?
    .name_any();

    // An idle run, for comparison.
    let idle = issue(&env, &healthy, "idle", 20, &log).await?;

    proxy.set(Mode::Blackhole);
    let stuck_ns = TestNamespace::create(&client, "hanging").await?;
    let stuck = namespaced(&client, &stuck_ns.name, &certificate_requests());
    burst(&client, &stuck_ns.name, &slow, "hanging", 50).await?;
    let loaded = issue(&env, &healthy, "beside", 20, &log).await?;
    eprintln!(
        "fault_one_hanging_ca_does_not_stall_other_issuers: 20 requests issued in {idle:?} idle, {loaded:?} beside 50 requests for a hanging CA"
    );
    assert!(
        loaded <= idle + Duration::from_secs(5),
        "a hanging CA slowed the healthy issuer: {loaded:?} vs {idle:?} idle\nreasons of the hanging requests: {:?}\n{}",
        reasons(&stuck).await.ok(),
        controller.log_tail()
    );
    let waiting = reasons(&stuck).await?;
    assert_eq!(
        waiting.get("Issued").copied().unwrap_or(0),
        0,
        "nothing can be issued through a silent CA: {waiting:?}"
    );
    assert_eq!(waiting.get("Failed"), None, "{waiting:?}");

    // The CA answers again: everything it was asked for is issued, nothing failed.
    proxy.set(Mode::Forward);
    wait_all_issued(&stuck, 50, Duration::from_secs(180), &log).await?;
    stuck_ns.delete().await
}
