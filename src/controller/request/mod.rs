//! The CertificateRequest controller: which requests it watches and caches (`run`, the watch
//! plumbing below), what a reconcile decides (`plan`, pure), how it is carried out
//! (`reconcile`), signing (`sign`), the classification of failures (`failure`) and what this
//! process remembers between reconciles (`memory`).

pub(crate) mod failure;
mod issuers;
pub(crate) mod memory;
pub(crate) mod plan;
mod reconcile;
#[cfg(test)]
mod scenario_tests;
pub mod selection;
pub(crate) mod sign;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use kube::api::Api;

use self::selection::Selection;
use crate::controller::scope::Scope;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::cert_manager::{CONDITION_READY, CertificateRequest, reason};
use crate::controller::context::Context;
use crate::controller::decision;
use crate::controller::in_flight::InFlight;
use crate::controller::initial_list;
use crate::controller::relist::triggers;
use crate::controller::watch_health::{WatchHealth, report_outcome};
use crate::crd::{StepClusterIssuer, StepIssuer};
use crate::issuer::IssuerObject;

use self::issuers::{IssuerStores, is_ready};
use self::memory::RequestMemory;
pub use self::reconcile::ReconcileError;
use self::reconcile::{error_policy, reconcile};

pub struct RequestCtx {
    ctx: Arc<Context>,
    issuers: IssuerStores,
    memory: Arc<RequestMemory>,
    in_flight: Arc<InFlight>,
}

/// Keeps in the cache only what the gates read (names, uid, creation and deletion times,
/// `issuerRef`, conditions): signing reads the request fresh from the API, so the CSR, the
/// certificate, labels, annotations and managed fields would only cost memory, for every
/// CertificateRequest in the cluster, ours or not.
fn slim(mut cr: CertificateRequest) -> CertificateRequest {
    let meta = cr.meta_mut();
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    cr.spec.request = ByteString(Vec::new());
    cr.spec.duration = None;
    cr.spec.usages = Vec::new();
    if let Some(s) = cr.status.as_mut() {
        // Only its presence matters to decide(): a certificate in status is final.
        s.certificate = s
            .certificate
            .take()
            .filter(|c| !c.0.is_empty())
            .map(|_| ByteString(b"-".to_vec()));
        s.ca = None;
        for c in &mut s.conditions {
            // Messages matter only for our own Pending condition (written again when it changes).
            if c.type_ != CONDITION_READY || c.reason.as_deref() != Some(reason::PENDING) {
                c.message = None;
            }
        }
    }
    cr
}

/// Only requests that are ours and not finished are cached and reconciled. Everything else (other
/// issuers' requests, and ours once Issued, Failed or Denied) would cost memory for every
/// CertificateRequest the cluster keeps, and a reconcile per event, for nothing: `issuerRef` is
/// immutable and a finished request never changes again.
fn worth_caching(cr: &CertificateRequest) -> bool {
    decision::owning_issuer(&cr.spec.issuer_ref, &cr.namespace().unwrap_or_default()).is_some()
        && !decision::is_finished(cr.status.as_ref())
}

/// Filters and slims the watch events before they reach the cache. A request that has just
/// finished becomes a `Delete`, which takes it out of the cache; its guards in `memory` are no
/// longer needed once the API itself shows it finished.
fn admit(
    ev: watcher::Event<CertificateRequest>,
    memory: &RequestMemory,
) -> Option<watcher::Event<CertificateRequest>> {
    use watcher::Event;
    match ev {
        Event::Apply(cr) if worth_caching(&cr) => Some(Event::Apply(slim(cr))),
        Event::InitApply(cr) if worth_caching(&cr) => Some(Event::InitApply(slim(cr))),
        Event::Apply(cr) | Event::Delete(cr) => {
            if let Some(uid) = cr.uid() {
                memory.release(&uid);
            }
            Some(Event::Delete(slim(cr)))
        }
        // During a (re)list the cache is rebuilt from what is admitted: nothing stale to remove.
        Event::InitApply(_) => None,
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
    }
}

/// What the request path's issuer caches drop, besides `caBundle` (cleared in `run`): the
/// issuer reconciler already holds every issuer in full, and a second full copy let a tenant
/// double what its issuers cost (security review M3). The gates read the status, generation,
/// uid and name; signing connects from the API's copy (`Context::signer_for_latest`).
/// Annotations go too: kubectl's last-applied-configuration repeats the whole spec.
fn slim_issuer_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
}

/// Names under which the request controller's watches report to [`WatchHealth`].
pub const WATCH_REQUESTS: &str = "CertificateRequests";
pub const WATCH_ISSUERS: &str = "StepIssuers (for requests)";
pub const WATCH_CLUSTER_ISSUERS: &str = "StepClusterIssuers (for requests)";

/// A watch of one issuer kind into `writer`, with what the request path does not need dropped
/// (`drop_bundle` clears `caBundle`; see [`slim_issuer_meta`]). Yields the issuers it touched.
fn slim_issuer_watch<K>(
    health: &WatchHealth,
    name: &'static str,
    namespace: Option<&str>,
    client: &kube::Client,
    cfg: &watcher::Config,
    writer: reflector::store::Writer<K>,
    drop_bundle: fn(&mut K),
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + use<K>
where
    K: IssuerObject + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    health
        .observe(
            name,
            K::PLURAL,
            watcher(K::api(client.clone(), namespace), cfg.clone()).default_backoff(),
        )
        .modify(move |i: &mut K| {
            drop_bundle(i);
            slim_issuer_meta(i.meta_mut());
        })
        .reflect(writer)
        .touched_objects()
}

/// The requests to reconcile: ours and open, slimmed, cached in `writer`. They are watched, and
/// so reconciled, only once both issuer caches hold a complete listing: a request is never told
/// that its issuer is missing while the list is still loading, and no reconcile ever waits for a
/// cache (and holds a worker) meanwhile.
fn request_watch(
    ctx: &Context,
    health: &WatchHealth,
    memory: Arc<RequestMemory>,
    writer: reflector::store::Writer<CertificateRequest>,
    requests: Store<CertificateRequest>,
    selection: &Selection,
    scope: &Scope,
) -> impl futures::Stream<Item = Result<CertificateRequest, watcher::Error>> + Send + use<> {
    let gate = health.clone();
    let mut issuer_watches = vec![scope.watch_name(WATCH_ISSUERS)];
    if scope.cluster_issuers {
        issuer_watches.push(scope.watch_name(WATCH_CLUSTER_ISSUERS));
    }
    let client = ctx.watch_client.clone();
    let api = match scope.namespace() {
        Some(ns) => Api::<CertificateRequest>::namespaced(client, ns),
        None => Api::<CertificateRequest>::all(client),
    };
    let mut cfg = initial_list::watch_config_paged(
        ctx.settings.streaming_lists,
        initial_list::REQUEST_PAGE_SIZE,
    );
    if let Some(fields) = selection.field_selector() {
        cfg = cfg.fields(fields);
    }
    let watch = health.observe(
        scope.watch_name(WATCH_REQUESTS),
        "CertificateRequests",
        watcher(api, cfg).default_backoff(),
    );
    futures::stream::once(async move {
        gate.listed(&issuer_watches).await;
        watch
    })
    .flatten()
    .boxed()
    .try_filter_map(move |ev| futures::future::ready(Ok(admit(ev, &memory))))
    .reflect(writer)
    .map_ok(move |ev| futures::stream::iter(triggers(ev, || requests.state()).into_iter().map(Ok)))
    .try_flatten()
    // Deletes of finished requests only clean the cache; they need no reconcile.
    .try_filter(|cr| futures::future::ready(worth_caching(cr)))
}

/// Requests waiting on an issuer are re-queued the moment it turns Ready.
fn waiting_for_ready<K: IssuerObject>(
    requests: Store<CertificateRequest>,
) -> impl Fn(K) -> Vec<ObjectRef<CertificateRequest>> + Send + Sync + 'static {
    move |issuer: K| {
        if !is_ready(&issuer) {
            return Vec::new();
        }
        let key = issuer.key();
        requests
            .state()
            .into_iter()
            .filter(|cr| {
                decision::owning_issuer(&cr.spec.issuer_ref, &cr.namespace().unwrap_or_default())
                    .as_ref()
                    == Some(&key)
            })
            .map(|cr| ObjectRef::from_obj(&*cr))
            .collect()
    }
}

pub async fn run(
    ctx: Arc<Context>,
    health: WatchHealth,
    scope: Scope,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.watch_client.clone();
    let cfg = initial_list::watch_config(ctx.settings.streaming_lists);

    let memory = Arc::new(RequestMemory::default());
    let (issuers, issuers_writer) = reflector::store::<StepIssuer>();
    let issuer_stream = slim_issuer_watch(
        &health,
        scope.watch_name(WATCH_ISSUERS),
        scope.namespace(),
        &client,
        &cfg,
        issuers_writer,
        |i| i.spec.ca_bundle = None,
    );
    let (cluster_issuers, cluster_writer) = reflector::store::<StepClusterIssuer>();
    // Without StepClusterIssuers (a namespace-scoped install without a ClusterRole), their
    // cache stays empty and requests naming one wait as for a missing issuer.
    let cluster_stream = if scope.cluster_issuers {
        slim_issuer_watch(
            &health,
            scope.watch_name(WATCH_CLUSTER_ISSUERS),
            None,
            &client,
            &cfg,
            cluster_writer,
            |i| i.spec.ca_bundle = None,
        )
        .boxed()
    } else {
        futures::stream::empty().boxed()
    };

    let selection =
        selection::decide(&ctx.client, scope.namespace(), ctx.settings.select_requests).await;
    let (requests, requests_writer) = reflector::store::<CertificateRequest>();
    let request_stream = request_watch(
        &ctx,
        &health,
        memory.clone(),
        requests_writer,
        requests.clone(),
        &selection,
        &scope,
    );

    let for_issuer = waiting_for_ready::<StepIssuer>(requests.clone());
    let for_cluster_issuer = waiting_for_ready::<StepClusterIssuer>(requests.clone());
    let in_flight = InFlight::new(ctx.settings.max_signs_per_issuer);
    let metrics = ctx.metrics.clone();
    let rctx = Arc::new(RequestCtx {
        ctx,
        issuers: IssuerStores {
            namespaced: issuers,
            cluster: cluster_issuers,
        },
        memory,
        in_flight,
    });
    Controller::for_stream(request_stream, requests)
        // Requests waiting on an issuer are re-queued the moment it turns Ready.
        .watches_stream(issuer_stream, for_issuer)
        .watches_stream(cluster_stream, for_cluster_issuer)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, rctx)
        .for_each(|outcome| {
            report_outcome("CertificateRequest", &metrics, outcome);
            futures::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_manager::{
        CertificateRequestSpec, CertificateRequestStatus, IssuerRef, RequestCondition,
    };
    use crate::controller::decision::IssuerState;
    use crate::crd::condition::Readiness;

    /// Security review M3: the request path's issuer copies lose what only costs memory.
    #[test]
    fn issuer_copies_of_the_request_path_lose_managed_fields_and_annotations() {
        let mut meta = kube::api::ObjectMeta {
            name: Some("ca".into()),
            uid: Some("u".into()),
            generation: Some(4),
            annotations: Some(
                [(
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{...}".to_string(),
                )]
                .into(),
            ),
            managed_fields: Some(vec![Default::default()]),
            ..Default::default()
        };
        slim_issuer_meta(&mut meta);
        assert_eq!(meta.annotations, None);
        assert_eq!(meta.managed_fields, None);
        assert_eq!(
            (meta.name.as_deref(), meta.uid.as_deref(), meta.generation),
            (Some("ca"), Some("u"), Some(4))
        );
    }

    #[test]
    fn slim_keeps_only_what_the_gates_read() {
        let mut cr = CertificateRequest::new(
            "r",
            CertificateRequestSpec {
                request: ByteString(b"csr".to_vec()),
                duration: Some("1h".into()),
                issuer_ref: IssuerRef {
                    name: "ca".into(),
                    kind: Some("StepClusterIssuer".into()),
                    group: Some(crate::crd::GROUP.into()),
                },
                ..Default::default()
            },
        );
        cr.meta_mut().uid = Some("u1".into());
        cr.meta_mut().annotations = Some([("a".to_string(), "b".to_string())].into());
        cr.meta_mut().labels = Some([("l".to_string(), "v".to_string())].into());
        let open = slim(cr.clone());
        assert!(open.spec.request.0.is_empty());
        assert_eq!(open.meta().annotations, None);
        assert_eq!(open.meta().labels, None);
        assert_eq!(open.uid().as_deref(), Some("u1"));
        assert_eq!(open.spec.issuer_ref, cr.spec.issuer_ref);

        let ready = RequestCondition {
            type_: CONDITION_READY.into(),
            status: "False".into(),
            reason: Some(reason::PENDING.into()),
            message: Some("waiting".into()),
            ..Default::default()
        };
        let approved = RequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("cert-manager.io".into()),
            message: Some("approved by policy".into()),
            ..Default::default()
        };
        cr.status = Some(CertificateRequestStatus {
            conditions: vec![approved, ready.clone()],
            certificate: Some(ByteString(b"long pem".to_vec())),
            ca: Some(ByteString(b"root".to_vec())),
            failure_time: None,
        });
        let key = decision::owning_issuer(&cr.spec.issuer_ref, "ns").unwrap();
        let state = IssuerState::Known(Readiness::Ready);
        let before = decision::decide(cr.status.as_ref(), &key, &state);
        let done = slim(cr);
        let status = done.status.as_ref().unwrap();
        assert_eq!(status.ca, None);
        assert_eq!(status.certificate.as_ref().unwrap().0, b"-");
        assert_eq!(status.conditions[0].message, None);
        // Our own Pending message is compared before it is written again.
        assert_eq!(status.conditions[1], ready);
        // The gates decide the same on the slim copy.
        assert_eq!(decision::decide(done.status.as_ref(), &key, &state), before);
        assert_eq!(plan::pending_message(done.status.as_ref()), Some("waiting"));
    }

    fn request(name: &str, group: &str, ready: Option<(&str, &str)>) -> CertificateRequest {
        let mut cr = CertificateRequest::new(
            name,
            CertificateRequestSpec {
                request: ByteString(b"csr".to_vec()),
                issuer_ref: IssuerRef {
                    name: "ca".into(),
                    kind: Some("StepClusterIssuer".into()),
                    group: Some(group.into()),
                },
                ..Default::default()
            },
        );
        cr.meta_mut().namespace = Some("team".into());
        cr.meta_mut().uid = Some(format!("uid-{name}"));
        cr.status = ready.map(|(status, why)| CertificateRequestStatus {
            conditions: vec![RequestCondition {
                type_: CONDITION_READY.into(),
                status: status.into(),
                reason: Some(why.into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        cr
    }

    #[test]
    fn only_open_requests_of_ours_are_cached() {
        let ours = crate::crd::GROUP;
        let cases = [
            (request("new", ours, None), true),
            (
                request("pending", ours, Some(("False", reason::PENDING))),
                true,
            ),
            (
                request("issued", ours, Some(("True", reason::ISSUED))),
                false,
            ),
            (
                request("failed", ours, Some(("False", reason::FAILED))),
                false,
            ),
            (
                request("denied", ours, Some(("False", reason::DENIED))),
                false,
            ),
            (request("foreign", "cert-manager.io", None), false),
        ];
        for (cr, want) in cases {
            assert_eq!(worth_caching(&cr), want, "{}", cr.name_any());
        }
    }

    #[test]
    fn admit_slims_filters_and_turns_finished_into_deletes() {
        use watcher::Event;
        let ours = crate::crd::GROUP;
        let memory = RequestMemory::default();
        memory.finish("uid-issued");

        // Open and ours: cached, slim.
        let Some(Event::Apply(cr)) = admit(Event::Apply(request("new", ours, None)), &memory)
        else {
            panic!("an open request of ours is admitted as Apply");
        };
        assert!(cr.spec.request.0.is_empty());
        assert!(matches!(
            admit(Event::InitApply(request("new", ours, None)), &memory),
            Some(Event::InitApply(_))
        ));
        // Finished: removed from the cache, and its guard forgotten.
        let issued = request("issued", ours, Some(("True", reason::ISSUED)));
        assert!(matches!(
            admit(Event::Apply(issued.clone()), &memory),
            Some(Event::Delete(_))
        ));
        assert!(!memory.is_finished("uid-issued"));
        // Never cached during a listing.
        assert!(admit(Event::InitApply(issued), &memory).is_none());
        let foreign = request("foreign", "cert-manager.io", None);
        assert!(admit(Event::InitApply(foreign.clone()), &memory).is_none());
        assert!(matches!(
            admit(Event::Apply(foreign), &memory),
            Some(Event::Delete(_))
        ));
        assert!(matches!(
            admit(Event::Delete(request("new", ours, None)), &memory),
            Some(Event::Delete(_))
        ));
        assert!(matches!(admit(Event::Init, &memory), Some(Event::Init)));
        assert!(matches!(
            admit(Event::InitDone, &memory),
            Some(Event::InitDone)
        ));
    }
}
