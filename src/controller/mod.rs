//! `step-operator controller`: the cert-manager external issuer.

pub mod args;
pub mod context;
pub mod csr;
pub mod decision;
pub mod in_flight;
pub mod initial_list;
pub mod issuer;
pub mod issuer_lookup;
pub mod issuer_policy;
mod leader;
#[cfg(test)]
mod mock_tests;
pub mod podcert;
pub mod relist;
pub mod request;
pub mod revoke;
pub mod rival;
pub mod scope;
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
    // Status writes of other managers from before this moment are a predecessor's (rival.rs).
    rival::process_start();
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

    let (roles, trust_bundles) = decide_roles(&args, &client).await;
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let controllers = controllers(ctx, health, args.concurrency.max(1), roles, stop_rx);
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

/// Which reconcilers run, and whether trust bundles are published: what the flags ask, less what
/// a namespace-scoped install cannot do and what the apiserver does not serve.
async fn decide_roles(args: &ControllerArgs, client: &kube::Client) -> (Roles, bool) {
    let scopes = scope::scopes(&args.namespaces, args.cluster_issuers);
    let scoped = scopes.iter().all(|s| s.namespace().is_some());
    if scoped {
        tracing::info!(
            namespaces = ?args.namespaces,
            cluster_issuers = args.cluster_issuers,
            "Namespace-scoped: watching only these namespaces with Roles; pod certificates, Kubernetes CSRs and trust bundles are off"
        );
    }
    let trust_bundles = args.trust_bundles
        && !scoped
        && args.cluster_issuers
        && podcert::served(client, "clustertrustbundles").await;
    let pod_certificates =
        args.pod_certificates && !scoped && podcert::served(client, "podcertificaterequests").await;
    tracing::info!(
        pod_certificates,
        trust_bundles,
        "Kubernetes pod certificates: the PodCertificateRequest signer, and the issuers' roots as ClusterTrustBundles"
    );
    let roles = Roles {
        scopes,
        pod_certificates,
        signing_requests: args.certificate_signing_requests && !scoped,
    };
    (roles, trust_bundles)
}

/// Which reconcilers run: every one over the whole cluster, or, with `--namespaces`, the issuer,
/// request and revocation reconcilers once per namespace (see [`scope`]).
pub struct Roles {
    pub scopes: Vec<scope::Scope>,
    pub pod_certificates: bool,
    pub signing_requests: bool,
}

/// Every reconciler, running until `stop` turns true.
async fn controllers(
    ctx: Arc<Context>,
    health: watch_health::WatchHealth,
    concurrency: u16,
    roles: Roles,
    stop: watch::Receiver<bool>,
) {
    let stopped = move || {
        let mut rx = stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tracker = Arc::new(issuer::ReadyTracker::default());
    let mut tasks: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    let cluster_wide = roles.scopes.iter().any(|s| s.namespace().is_none());
    for scope in &roles.scopes {
        let (c, h, t) = (ctx.clone(), health.clone(), tracker.clone());
        tasks.push(Box::pin(issuer::run::<StepIssuer>(
            c,
            h,
            t,
            scope.clone(),
            4,
            stopped(),
        )));
        let (c, h) = (ctx.clone(), health.clone());
        tasks.push(Box::pin(request::run(
            c,
            h,
            scope.clone(),
            concurrency,
            stopped(),
        )));
        let (c, h) = (ctx.clone(), health.clone());
        tasks.push(Box::pin(revoke::run(c, h, scope.clone(), stopped())));
    }
    if roles.scopes.iter().any(|s| s.cluster_issuers) {
        let (c, h, t) = (ctx.clone(), health.clone(), tracker);
        let all = scope::Scope::cluster();
        tasks.push(Box::pin(issuer::run::<StepClusterIssuer>(
            c,
            h,
            t,
            all,
            4,
            stopped(),
        )));
    }
    if roles.pod_certificates && cluster_wide {
        let (c, h) = (ctx.clone(), health.clone());
        tasks.push(Box::pin(podcert::run(c, h, 4, stopped())));
    }
    if roles.signing_requests && cluster_wide {
        tasks.push(Box::pin(csr::run(ctx, health, 4, stopped())));
    }
    futures::future::join_all(tasks).await;
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
            retry_budget: decision::RetryBudget::new(args.max_retry_duration),
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
