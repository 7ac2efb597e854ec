//! Two controller replicas with leader election: only the leader writes; when it is SIGKILLed the
//! standby takes over within the lease duration and finishes the work.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use e2e::faults::*;
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process};
use e2e::{Env, TestNamespace, random_suffix, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;

const LEASE_SECONDS: u64 = 6;

fn replica(env: &Env, lease: &str, identity: &str) -> Result<Process> {
    let duration = format!("{LEASE_SECONDS}s");
    Process::start(
        env,
        identity,
        &[
            "controller",
            "--leader-elect=true",
            "--lease-name",
            lease,
            "--lease-duration",
            &duration,
            "--cluster-resource-namespace",
            CLUSTER_RESOURCE_NAMESPACE,
        ],
        &[("POD_NAMESPACE", "default"), ("POD_NAME", identity)],
    )
}

async fn holder(leases: &Api<Lease>, name: &str) -> Result<Option<String>> {
    Ok(leases
        .get_opt(name)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

/// Which replicas reported Events about requests in `ns`.
async fn reporters(client: &kube::Client, ns: &str) -> Result<Vec<String>> {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await?;
    let mut out: Vec<String> = events
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("step-operator-controller"))
        .filter_map(|e| e.reporting_instance)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[tokio::test]
async fn fault_leader_killed_standby_takes_over() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let lease = format!("fault-leader-{}", random_suffix());
    let a = format!("replica-a-{}", random_suffix());
    let b = format!("replica-b-{}", random_suffix());
    let mut ra = replica(&env, &lease, &a)?;
    let mut rb = replica(&env, &lease, &b)?;
    let leases = Api::<Lease>::namespaced(client.clone(), "default");
    let leader = wait_for(
        "one replica to hold the lease",
        Duration::from_secs(30),
        async || {
            Ok(holder(&leases, &lease)
                .await?
                .filter(|h| *h == a || *h == b))
        },
        async || format!("a:\n{}\nb:\n{}", ra.log_tail(), rb.log_tail()),
    )
    .await?;
    let (leader_proc, standby_proc, standby) = if leader == a {
        (&mut ra, &mut rb, b.clone())
    } else {
        (&mut rb, &mut ra, a.clone())
    };
    let log = leader_proc.log.display().to_string();
    let issuer = ready_cluster_issuer(&env, &client, "fault-leader", &log).await?;

    let ns = TestNamespace::create(&client, "fault-leader").await?;
    let api = namespaced(&client, &ns.name, &certificate_requests());
    burst(&client, &ns.name, &issuer, "lead", 50).await?;
    wait_all_issued(&api, 50, Duration::from_secs(90), &log).await?;
    assert_eq!(
        reporters(&client, &ns.name).await?,
        vec![leader.clone()],
        "only the leader may act"
    );

    // One leader at a time: the standby never thought it led (replicas that shared one field
    // manager for the Lease could both take it when started together).
    assert!(
        !standby_proc.logs().contains("Became the leader") && standby_proc.is_running(),
        "the standby also became the leader, or exited:\n{}",
        standby_proc.log_tail()
    );
    // SIGKILL: no lease release, the standby must wait for expiry and then take over.
    leader_proc.kill_hard();
    let killed = Instant::now();
    let ns2 = TestNamespace::create(&client, "fault-leader2").await?;
    let api2 = namespaced(&client, &ns2.name, &certificate_requests());
    burst(&client, &ns2.name, &issuer, "follow", 50).await?;
    let standby_log = standby_proc.log.display().to_string();
    wait_for(
        "the standby to take the lease",
        Duration::from_secs(LEASE_SECONDS * 3),
        async || {
            Ok((holder(&leases, &lease).await?.as_deref() == Some(standby.as_str())).then_some(()))
        },
        async || standby_proc.log_tail(),
    )
    .await
    .context("takeover")?;
    let takeover = killed.elapsed();
    wait_all_issued(&api2, 50, Duration::from_secs(90), &standby_log).await?;
    assert_eq!(
        reporters(&client, &ns2.name).await?,
        vec![standby.clone()],
        "only the new leader may act"
    );
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS * 2),
        "takeover took {takeover:?} with a {LEASE_SECONDS}s lease"
    );
    eprintln!(
        "fault_leader_killed_standby_takes_over: leader {leader} SIGKILLed; {standby} took over after {takeover:?} ({LEASE_SECONDS}s lease) and issued the next 50"
    );
    ns.delete().await?;
    ns2.delete().await
}
