//! The CertificateSigningRequest signer (`certificates.k8s.io/v1`): an approved CSR whose
//! `signerName` names one of our issuers (`stepclusterissuers.certmanager.step.sm/<name>`, or
//! `stepissuers.certmanager.step.sm/<namespace>.<name>`, the forms cert-manager uses) is signed
//! through step-ca with the same gates and checks as a CertificateRequest: never before it is
//! approved, never when denied or failed, at most once, the issuer's name policy and the lifetime
//! policy first, and the issued certificate compared with the request. Approval is someone
//! else's: `kubectl certificate approve`, or an approver with `approve` on our signer names.

pub mod plan;
mod reconcile;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use kube::runtime::{Controller, WatchStreamExt, watcher};

use crate::controller::context::Context;
use crate::controller::initial_list;
use crate::controller::request::memory::RequestMemory;
use crate::controller::watch_health::{WatchHealth, report_outcome};

use self::reconcile::{error_policy, reconcile};

/// Under which name the signer's watch reports to [`WatchHealth`].
pub const WATCH_CSRS: &str = "CertificateSigningRequests";

pub struct CsrCtx {
    ctx: Arc<Context>,
    memory: RequestMemory,
}

/// Signs our approved CertificateSigningRequests until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    health: WatchHealth,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let cfg = initial_list::watch_config(ctx.settings.streaming_lists);
    let (store, writer) = kube::runtime::reflector::store::<CertificateSigningRequest>();
    let requests = health
        .observe(
            WATCH_CSRS,
            "CertificateSigningRequests",
            watcher(
                Api::<CertificateSigningRequest>::all(ctx.watch_client.clone()),
                cfg,
            )
            .default_backoff(),
        )
        // Others' requests (kubelet serving and client certificates, ...) are kept as names
        // only: their CSRs are never read.
        .modify(|r: &mut CertificateSigningRequest| {
            r.metadata.managed_fields = None;
            if plan::gate(r) == plan::Gate::NotOurs {
                r.spec.request = k8s_openapi::ByteString(Vec::new());
                r.status = None;
            }
        })
        .reflect(writer)
        .applied_objects();
    let metrics = ctx.metrics.clone();
    let c = Arc::new(CsrCtx {
        ctx,
        memory: RequestMemory::default(),
    });
    Controller::for_stream(requests, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, c)
        .for_each(|outcome| {
            report_outcome("CertificateSigningRequest", &metrics, outcome);
            futures::future::ready(())
        })
        .await;
}
