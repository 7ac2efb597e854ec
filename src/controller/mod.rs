//! `step-operator controller`: the cert-manager external issuer.

pub mod context;
pub mod decision;
pub mod in_flight;
pub mod initial_list;
pub mod issuer;
pub mod issuer_policy;
#[cfg(test)]
mod mock_tests;
pub mod relist;
pub mod request;
pub mod watch_health;

use std::sync::Arc;

use anyhow::Context as _;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;

use crate::cli::{ControllerArgs, IssuersWithoutPolicy};
use crate::crd::{StepClusterIssuer, StepIssuer};
use crate::issuer::IssuerAccess;
use crate::kube_client::{self, Use};
use crate::metrics::Metrics;
use crate::policy::{NamePolicy, WithoutPolicy};

use self::context::{Context, Settings};

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let (config, client) = kube_client::connect(Use::Calls, args.cluster.kube_timeout).await?;
    let watch_client = kube_client::client(config, Use::Watches, args.cluster.kube_timeout)?;
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, ready_rx) = watch::channel(false);
    let admin = tokio::spawn(crate::admin::serve(
        args.admin_addr(),
        ready_rx,
        metrics.clone(),
    ));

    let identity = args.pod.identity();
    let mut lost_lease = None;
    if args.leader_elect {
        let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.pod.pod_namespace)
            .with_identity(&identity)
            .with_duration(args.lease_duration.as_secs().max(2))
            .with_grace((args.lease_duration.as_secs() / 3).max(1))
            .with_field_manager(lease_field_manager(&identity))
            .build()
            .await
            .with_context(|| {
                format!(
                    "setting up leader election with Lease {}/{}",
                    args.pod.pod_namespace, args.lease_name
                )
            })?;
        let (mut leader, task) = lease.watch().await;
        // A standby is healthy and ready: it serves /metrics and waits.
        let _ = ready_tx.send(true);
        tracing::info!(identity, lease = %args.lease_name, namespace = %args.pod.pod_namespace, "Waiting to become the leader");
        while !*leader.borrow_and_update() {
            // Say so periodically: a standby and a replica that lacks Lease RBAC look the same.
            match tokio::time::timeout(std::time::Duration::from_secs(30), leader.changed()).await {
                Ok(changed) => changed
                    .context("the leader-election task ended before this replica became leader")?,
                Err(_) => tracing::info!(
                    identity,
                    lease = %args.lease_name,
                    namespace = %args.pod.pod_namespace,
                    "Still waiting for the leader lease: another replica holds it, or this ServiceAccount may not get, create or patch Leases in this namespace"
                ),
            }
        }
        tracing::info!(identity, "Became the leader");
        lost_lease = Some((leader, task));
    }

    let streaming_lists = initial_list::streaming(args.initial_list);
    if !args.watch_secrets {
        tracing::info!(
            recheck_interval_s = args.issuer_recheck_interval.as_secs(),
            "Secrets are not watched (--watch-secrets=false): a changed password Secret is noticed at the issuer's next re-check, or when step-ca refuses a token"
        );
    }
    tracing::info!(
        initial_list = if streaming_lists {
            "streaming"
        } else {
            "paged"
        },
        "Watches load their initial state"
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "step-operator-controller".into(),
            instance: Some(identity.clone()),
        },
    );
    let issuers = IssuerAccess {
        client: client.clone(),
        metrics: metrics.clone(),
        signers: Default::default(),
        cluster_resource_namespace: args.issuers.cluster_resource_namespace.clone(),
        ca_timeout: args.issuers.ca_timeout,
        forbidden_ca_cidrs: crate::step::ForbiddenRanges::new(args.forbidden_ca_cidrs.clone()),
    };
    let ctx = Arc::new(Context {
        client,
        watch_client,
        recorder,
        metrics,
        issuers,
        settings: Settings {
            cluster_resource_namespace: args.issuers.cluster_resource_namespace.clone(),
            max_retry_duration: args.max_retry_duration,
            issuer_recheck_interval: args.issuer_recheck_interval,
            streaming_lists,
            names: NamePolicy::new(&args.cluster.cluster_domain, Vec::new()),
            without_policy: match args.issuers_without_policy {
                IssuersWithoutPolicy::AllowAnyName => WithoutPolicy::AllowAnyName,
                IssuersWithoutPolicy::NamespaceNames => WithoutPolicy::NamespaceNames,
            },
            max_signs_per_issuer: match args.max_signs_per_issuer {
                0 => in_flight::default_limit(args.concurrency.max(1)),
                n => usize::from(n),
            },
            watch_secrets: args.watch_secrets,
        },
    });
    // From here on the leader is ready while every watch has listed and none is failing.
    let health = watch_health::WatchHealth::new(ready_tx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tracker = Arc::new(issuer::ReadyTracker::default());
    let issuers =
        issuer::run::<StepIssuer>(ctx.clone(), health.clone(), tracker.clone(), 4, stopped());
    let cluster_issuers =
        issuer::run::<StepClusterIssuer>(ctx.clone(), health.clone(), tracker, 4, stopped());
    let requests = request::run(ctx.clone(), health, args.concurrency.max(1), stopped());
    let controllers = async {
        tokio::join!(issuers, cluster_issuers, requests);
    };
    tokio::pin!(controllers);

    let lease_lost = async {
        match lost_lease.as_mut() {
            Some((leader, _)) => {
                let _ = leader.wait_for(|is_leader| !*is_leader).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tracing::info!(concurrency = args.concurrency, "Controllers started");
    let outcome = tokio::select! {
        _ = &mut controllers => Ok(()),
        r = admin => Err(anyhow::anyhow!("admin server stopped: {:?}", r)),
        _ = crate::signal::shutdown_signal() => {
            tracing::info!("Shutting down: finishing the reconciles in flight");
            let _ = stop_tx.send(true);
            if tokio::time::timeout(std::time::Duration::from_secs(20), &mut controllers).await.is_err() {
                tracing::warn!("Reconciles still running after 20s; exiting anyway");
            }
            Ok(())
        }
        _ = lease_lost => {
            // Deterministic exit: the Deployment restarts this pod as a standby.
            Err(anyhow::anyhow!("lost the leader lease; exiting so that only one replica writes"))
        }
    };
    // Hand the lease over now rather than make a standby wait for it to expire: closing the
    // receiver makes the lease task release it.
    if let Some((leader, task)) = lost_lease.take() {
        drop(leader);
        match tokio::time::timeout(std::time::Duration::from_secs(3), task).await {
            Ok(Ok(Ok(_))) => tracing::info!("Released the leader lease"),
            _ => tracing::warn!(
                "Could not release the leader lease; a standby takes over when it expires"
            ),
        }
    }
    outcome
}

/// The field manager of this replica's Lease writes. It must differ between replicas: the lease
/// manager takes the lease with a server-side apply that only conflicts with another manager's
/// fields, so replicas sharing one manager name could each "take" the lease at the same moment
/// and both act as leader until the next renewal (seen with two replicas started together).
fn lease_field_manager(identity: &str) -> String {
    // Field managers are limited to 128 characters; pod names are at most 63.
    let name = format!("step-operator-lease-{identity}");
    name.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_writes_the_lease_as_its_own_field_manager() {
        let a = lease_field_manager("step-operator-controller-7d9f-abcde");
        let b = lease_field_manager("step-operator-controller-7d9f-fghij");
        assert_ne!(a, b);
        assert_eq!(a, "step-operator-lease-step-operator-controller-7d9f-abcde");
        assert!(lease_field_manager(&"x".repeat(300)).chars().count() <= 128);
    }
}
