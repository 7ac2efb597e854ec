//! `step-operator controller`: the cert-manager external issuer.

pub mod args;
pub mod context;
pub mod csr;
pub mod decision;
pub mod in_flight;
pub mod initial_list;
pub mod issuer;
pub mod issuer_policy;
mod leader;
#[cfg(test)]
mod mock_tests;
pub mod podcert;
pub mod relist;
pub mod request;
pub mod revoke;
pub mod watch_health;

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;

use self::args::{ControllerArgs, IssuersWithoutPolicy};
use crate::crd::{StepClusterIssuer, StepIssuer};
use crate::issuer::IssuerAccess;
use crate::kube_client;
use crate::metrics::Metrics;
use crate::policy::{NamePolicy, WithoutPolicy};

use self::context::{Context, Settings};

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let (client, watch_client) = kube_client::connect_both(args.cluster.kube_timeout).await?;
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, admin) = crate::admin::start(args.admin_addr(), metrics.clone());

    let identity = args.pod.identity();
    let mut leadership = None;
    if args.leader_elect {
        let lease = leader::LeaseSettings {
            name: &args.lease_name,
            namespace: &args.pod.pod_namespace,
            identity: &identity,
            duration: args.lease_duration,
        };
        leadership = Some(leader::Leadership::acquire(client.clone(), &lease, &ready_tx).await?);
    }

    let trust_bundles = args.trust_bundles && podcert::served(&client, "clustertrustbundles").await;
    let ctx = Arc::new(context(
        &args,
        client,
        watch_client,
        metrics,
        &identity,
        trust_bundles,
    ));
    // From here on the leader is ready while every watch has listed and none is failing.
    let health = watch_health::WatchHealth::new(ready_tx);

    let pod_certificates =
        args.pod_certificates && podcert::served(&ctx.client, "podcertificaterequests").await;
    tracing::info!(
        pod_certificates,
        trust_bundles = ctx.settings.trust_bundles,
        "Kubernetes pod certificates: the PodCertificateRequest signer, and the issuers' roots as ClusterTrustBundles"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let controllers = controllers(
        ctx,
        health,
        args.concurrency.max(1),
        pod_certificates,
        args.certificate_signing_requests,
        stop_rx,
    );
    tokio::pin!(controllers);

    let lease_lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
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
    if let Some(l) = leadership {
        l.release().await;
    }
    outcome
}

/// Every reconciler, running until `stop` turns true.
async fn controllers(
    ctx: Arc<Context>,
    health: watch_health::WatchHealth,
    concurrency: u16,
    pod_certificates: bool,
    signing_requests: bool,
    stop: watch::Receiver<bool>,
) {
    let stopped = move || {
        let mut rx = stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tracker = Arc::new(issuer::ReadyTracker::default());
    let issuers =
        issuer::run::<StepIssuer>(ctx.clone(), health.clone(), tracker.clone(), 4, stopped());
    let cluster_issuers =
        issuer::run::<StepClusterIssuer>(ctx.clone(), health.clone(), tracker, 4, stopped());
    let pod_certs = {
        let (ctx, health, stop) = (ctx.clone(), health.clone(), stopped());
        async move {
            if pod_certificates {
                podcert::run(ctx, health, 4, stop).await;
            }
        }
    };
    let revocations = revoke::run(ctx.clone(), health.clone(), stopped());
    let csrs = {
        let (ctx, health, stop) = (ctx.clone(), health.clone(), stopped());
        async move {
            if signing_requests {
                csr::run(ctx, health, 4, stop).await;
            }
        }
    };
    let requests = request::run(ctx, health, concurrency, stopped());
    tokio::join!(
        issuers,
        cluster_issuers,
        requests,
        pod_certs,
        revocations,
        csrs
    );
}

/// The reconcilers' shared state, built from the arguments in one place.
fn context(
    args: &ControllerArgs,
    client: kube::Client,
    watch_client: kube::Client,
    metrics: Arc<Metrics>,
    identity: &str,
    trust_bundles: bool,
) -> Context {
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
            instance: Some(identity.to_string()),
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
    Context {
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
            trust_bundles,
            select_requests: args.select_requests,
        },
    }
}
