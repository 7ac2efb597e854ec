//! The PodCertificateRequest signer (Kubernetes pod certificates, `certificates.k8s.io/v1`, GA in
//! 1.37): a pod declares a `podCertificate` projected volume whose `signerName` names one of our
//! issuers (`stepclusterissuers.certmanager.step.sm/<name>` or
//! `stepissuers.certmanager.step.sm/<namespace>.<name>`); the kubelet generates the key and
//! creates the request; this controller signs it through step-ca with the pod's identity, and the
//! kubelet writes the chain and key into the pod and asks again before `beginRefreshAt`.

#[cfg(test)]
mod mock_tests;
mod plan;
mod reconcile;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use kube::api::Api;
use kube::runtime::{Controller, WatchStreamExt, watcher};

use crate::controller::context::Context;
use crate::controller::initial_list;
use crate::controller::request::memory::RequestMemory;
use crate::controller::watch_health::{WatchHealth, report_outcome};

pub use self::plan::{ANNOTATION_DNS_NAMES, KNOWN_ANNOTATIONS};
use self::reconcile::{error_policy, reconcile};

/// Under which name the signer's watch reports to [`WatchHealth`].
pub const WATCH_POD_CERTIFICATES: &str = "PodCertificateRequests";

/// The signer's state: the shared context and, as for CertificateRequests, what this process
/// remembers of the requests it retries (their failed attempts and backoff).
pub struct PodCertCtx {
    ctx: Arc<Context>,
    memory: RequestMemory,
}

/// Whether this apiserver serves `resource` in `certificates.k8s.io/v1`
/// (`podcertificaterequests`, `clustertrustbundles`: both GA in 1.37).
pub async fn served(client: &kube::Client, resource: &str) -> bool {
    match client
        .list_api_group_resources("certificates.k8s.io/v1")
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == resource),
        Err(e) => {
            tracing::info!(error = %e, resource, "Could not read certificates.k8s.io/v1; taking it as not served");
            false
        }
    }
}

/// Signs our PodCertificateRequests until `shutdown` resolves. Requests already Issued, Denied or
/// Failed are never touched: the API makes their status immutable.
pub async fn run(
    ctx: Arc<Context>,
    health: WatchHealth,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let cfg = initial_list::watch_config(ctx.settings.streaming_lists);
    let (store, writer) = kube::runtime::reflector::store::<PodCertificateRequest>();
    let requests = health
        .observe(
            WATCH_POD_CERTIFICATES,
            "PodCertificateRequests",
            watcher(
                Api::<PodCertificateRequest>::all(ctx.watch_client.clone()),
                cfg,
            )
            .default_backoff(),
        )
        // Only ours, and only what a reconcile reads: the stub CSR is read from the cache, so
        // the spec stays whole.
        .modify(|r: &mut PodCertificateRequest| {
            r.metadata.managed_fields = None;
        })
        .reflect(writer)
        .applied_objects();
    let metrics = ctx.metrics.clone();
    let c = Arc::new(PodCertCtx {
        ctx,
        memory: RequestMemory::default(),
    });
    Controller::for_stream(requests, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, c)
        .for_each(|outcome| {
            report_outcome("PodCertificateRequest", &metrics, outcome);
            futures::future::ready(())
        })
        .await;
}
