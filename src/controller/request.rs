//! CertificateRequest reconciler: carries out `decision::decide`, signs at step-ca, checks the
//! result and writes the status by server-side apply on `/status`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::cert_manager::{
    CONDITION_READY, CertificateRequest, CertificateRequestStatus, RequestCondition, reason,
};
use crate::controller::context::{Context, FIELD_MANAGER};
use crate::controller::decision::{self, Decision, IssuerKey, IssuerState, Retry};
use crate::controller::in_flight::{self, InFlight};
use crate::controller::initial_list;
use crate::controller::relist::triggers;
use crate::controller::watch_health::{WatchHealth, log_unreported};
use crate::crd::condition::{Readiness, readiness};
use crate::crd::{StepClusterIssuer, StepIssuer};
use crate::duration::{parse_go_duration, to_go_seconds};
use crate::issuer::IssuerObject;
use crate::pki;
use crate::policy::Requester;
use crate::step;

const CONDITION_INVALID_REQUEST: &str = "InvalidRequest";
/// Metric and log reason of a CA request that step-ca signed as a leaf.
const REASON_NOT_A_CA: &str = "IssuedNotCA";
/// The issuer's name policy refused the request (its namespace or a name).
const REASON_POLICY_DENIED: &str = "PolicyDenied";

/// Per-process memory of requests in flight. Lost on restart, which is safe: a restarted
/// controller re-reads every request's status from the API.
#[derive(Default)]
struct Memory {
    /// Failed attempts and when the next one may run, by request uid.
    retries: Mutex<HashMap<String, (u32, Instant)>>,
    /// Requests this process finished; their status write may not be in the cache yet, and they
    /// must never be signed again.
    finished: Mutex<HashSet<String>>,
    /// Certificates signed whose status write failed (apiserver blip): written on the next
    /// attempt instead of signing again.
    unwritten: Mutex<HashMap<String, (String, String, String)>>,
    /// Requests already told they wait for approval (one Event each).
    told_approval: Mutex<HashSet<String>>,
}

struct RequestCtx {
    ctx: Arc<Context>,
    issuers: Store<StepIssuer>,
    cluster_issuers: Store<StepClusterIssuer>,
    memory: Arc<Memory>,
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
    memory: &Memory,
) -> Option<watcher::Event<CertificateRequest>> {
    use watcher::Event;
    match ev {
        Event::Apply(cr) if worth_caching(&cr) => Some(Event::Apply(slim(cr))),
        Event::InitApply(cr) if worth_caching(&cr) => Some(Event::InitApply(slim(cr))),
        Event::Apply(cr) | Event::Delete(cr) => {
            if let Some(uid) = cr.uid() {
                release(memory, &uid);
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

pub async fn run(
    ctx: Arc<Context>,
    health: WatchHealth,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.watch_client.clone();
    let cfg = initial_list::watch_config(ctx.settings.streaming_lists);

    let memory = Arc::new(Memory::default());
    let (issuers, issuers_writer) = reflector::store::<StepIssuer>();
    let issuer_stream = health
        .observe(
            WATCH_ISSUERS,
            "StepIssuers",
            watcher(Api::<StepIssuer>::all(client.clone()), cfg.clone()).default_backoff(),
        )
        .modify(|i: &mut StepIssuer| {
            i.spec.ca_bundle = None;
            slim_issuer_meta(i.meta_mut());
        })
        .reflect(issuers_writer)
        .touched_objects();
    let (cluster_issuers, cluster_writer) = reflector::store::<StepClusterIssuer>();
    let cluster_stream = health
        .observe(
            WATCH_CLUSTER_ISSUERS,
            "StepClusterIssuers",
            watcher(Api::<StepClusterIssuer>::all(client.clone()), cfg.clone()).default_backoff(),
        )
        .modify(|i: &mut StepClusterIssuer| {
            i.spec.ca_bundle = None;
            slim_issuer_meta(i.meta_mut());
        })
        .reflect(cluster_writer)
        .touched_objects();

    // Requests are watched, and so reconciled, only once both issuer caches hold a complete
    // listing: a request is never told that its issuer is missing while the list is still
    // loading, and no reconcile ever waits for a cache (and holds a worker) meanwhile.
    let (requests, requests_writer) = reflector::store::<CertificateRequest>();
    let admit_memory = memory.clone();
    let gate = health.clone();
    let request_watch = health.observe(
        WATCH_REQUESTS,
        "CertificateRequests",
        watcher(
            Api::<CertificateRequest>::all(client.clone()),
            initial_list::watch_config_paged(
                ctx.settings.streaming_lists,
                initial_list::REQUEST_PAGE_SIZE,
            ),
        )
        .default_backoff(),
    );
    let request_stream = futures::stream::once(async move {
        gate.listed(&[WATCH_ISSUERS, WATCH_CLUSTER_ISSUERS]).await;
        request_watch
    })
    .flatten()
    .boxed()
    .try_filter_map(move |ev| futures::future::ready(Ok(admit(ev, &admit_memory))))
    .reflect(requests_writer)
    .map_ok({
        let requests = requests.clone();
        move |ev| futures::stream::iter(triggers(ev, || requests.state()).into_iter().map(Ok))
    })
    .try_flatten()
    // Deletes of finished requests only clean the cache; they need no reconcile.
    .try_filter(|cr| futures::future::ready(worth_caching(cr)));

    let waiting_on = |requests: Store<CertificateRequest>| {
        move |key: IssuerKey| {
            requests
                .state()
                .into_iter()
                .filter(|cr| {
                    decision::owning_issuer(
                        &cr.spec.issuer_ref,
                        &cr.namespace().unwrap_or_default(),
                    )
                    .as_ref()
                        == Some(&key)
                })
                .map(|cr| ObjectRef::from_obj(&*cr))
                .collect::<Vec<_>>()
        }
    };
    let for_issuer = waiting_on(requests.clone());
    let for_cluster_issuer = waiting_on(requests.clone());

    let in_flight = InFlight::new(ctx.settings.max_signs_per_issuer);
    let rctx = Arc::new(RequestCtx {
        ctx,
        issuers,
        cluster_issuers,
        memory,
        in_flight,
    });
    Controller::for_stream(request_stream, requests)
        // Requests waiting on an issuer are re-queued the moment it turns Ready.
        .watches_stream(issuer_stream, move |i: StepIssuer| {
            if is_ready(&i) {
                for_issuer(i.key())
            } else {
                Vec::new()
            }
        })
        .watches_stream(cluster_stream, move |i: StepClusterIssuer| {
            if is_ready(&i) {
                for_cluster_issuer(i.key())
            } else {
                Vec::new()
            }
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, rctx)
        .for_each(|outcome| {
            log_unreported("CertificateRequest", outcome);
            futures::future::ready(())
        })
        .await;
}

fn is_ready<K: IssuerObject>(issuer: &K) -> bool {
    issuer_readiness(issuer) == Readiness::Ready
}

fn issuer_readiness<K: IssuerObject>(issuer: &K) -> Readiness {
    let conditions = issuer
        .issuer_status()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    readiness(conditions, issuer.meta().generation)
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to write the CertificateRequest status: {0}")]
    Status(#[source] kube::Error),
    #[error("failed to read the CertificateRequest: {0}")]
    Read(#[source] kube::Error),
}

async fn reconcile(
    cr: Arc<CertificateRequest>,
    c: Arc<RequestCtx>,
) -> Result<Action, ReconcileError> {
    let namespace = cr.namespace().unwrap_or_default();
    let Some(key) = decision::owning_issuer(&cr.spec.issuer_ref, &namespace) else {
        // Not ours: no status, no event.
        return Ok(Action::await_change());
    };
    let uid = cr.uid().unwrap_or_default();
    if cr.meta().deletion_timestamp.is_some()
        || c.memory
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&uid)
    {
        forget(&c.memory, &uid);
        return Ok(Action::await_change());
    }
    // No wait for the issuer caches here: requests are only watched once both have listed
    // (see `run`).
    let issuer_state = match &key {
        IssuerKey::Namespaced { namespace, name } => c
            .issuers
            .get(&ObjectRef::new(name).within(namespace))
            .map(|i| IssuerState::Known(issuer_readiness(&*i))),
        IssuerKey::Cluster { name } => c
            .cluster_issuers
            .get(&ObjectRef::new(name))
            .map(|i| IssuerState::Known(issuer_readiness(&*i))),
    }
    .unwrap_or(IssuerState::Missing);

    let ctx = &c.ctx;
    match decision::decide(cr.status.as_ref(), &key, &issuer_state) {
        Decision::Done => {
            // The cache has caught up with our write: the guard is no longer needed.
            release(&c.memory, &uid);
            Ok(Action::await_change())
        }
        Decision::Deny => {
            let message = "The CertificateRequest was denied by an approval controller";
            write_ready(ctx, &cr, "False", reason::DENIED, message, true).await?;
            ctx.event(&*cr, EventType::Warning, "Denied", message.into(), "Deny")
                .await;
            ctx.metrics.count_request(reason::DENIED);
            finish(&c.memory, &uid);
            Ok(Action::await_change())
        }
        Decision::AwaitApproval => {
            let created = cr.creation_timestamp().map(|t| t.0);
            if let Some(wait) = decision::approval_event_delay(created, Timestamp::now()) {
                return Ok(Action::requeue(wait));
            }
            let first = c
                .memory
                .told_approval
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid);
            if first {
                ctx.event(
                    &*cr,
                    EventType::Normal,
                    "WaitingForApproval",
                    "Not signing CertificateRequest until it is Approved".into(),
                    "Wait",
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Decision::WaitForIssuer {
            event_reason,
            message,
        } => {
            if pending_message(&cr) != Some(message.as_str()) {
                write_ready(ctx, &cr, "False", reason::PENDING, &message, false).await?;
                ctx.event(&*cr, EventType::Normal, event_reason, message, "Wait")
                    .await;
            }
            // The issuer watch re-queues this request when the issuer turns Ready.
            Ok(Action::await_change())
        }
        Decision::Sign => sign(&c, &cr, &key, &uid).await,
    }
}

fn pending_message(cr: &CertificateRequest) -> Option<&str> {
    cr.status
        .as_ref()
        .and_then(|s| s.condition(CONDITION_READY))
        .filter(|c| c.reason.as_deref() == Some(reason::PENDING))
        .and_then(|c| c.message.as_deref())
}

fn forget(memory: &Memory, uid: &str) {
    memory
        .unwritten
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(uid);
    memory
        .retries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(uid);
    memory
        .told_approval
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(uid);
}

/// The API itself shows the request finished (or gone): no guard is needed any more.
fn release(memory: &Memory, uid: &str) {
    forget(memory, uid);
    memory
        .finished
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(uid);
}

fn finish(memory: &Memory, uid: &str) {
    forget(memory, uid);
    memory
        .finished
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(uid.to_string());
}

/// Why signing did not produce a certificate.
enum SignFailure {
    /// The request itself is bad: Failed + InvalidRequest; a new request is needed.
    Invalid(String),
    /// step-ca refused for a reason retrying will not change (policy, duration limit): Failed.
    Permanent {
        reason: &'static str,
        message: String,
    },
    /// Worth retrying (CA down, 5xx, timeouts).
    Retryable {
        reason: &'static str,
        message: String,
    },
    /// step-ca refused our token: the issuer is re-checked, the request retried.
    Auth(String),
}

async fn sign(
    c: &RequestCtx,
    cr: &CertificateRequest,
    key: &IssuerKey,
    uid: &str,
) -> Result<Action, ReconcileError> {
    let ctx = &c.ctx;
    // Honour the backoff of an earlier failure: our own Pending write re-triggers us at once.
    if let Some((_, not_before)) = c
        .memory
        .retries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(uid)
        .copied()
    {
        let now = Instant::now();
        if not_before > now {
            return Ok(Action::requeue(not_before - now));
        }
    }
    // One CA that hangs must not take every worker: at most `--max-signs-per-issuer` requests
    // of an issuer are signed at once; the others go back to the queue without a status write
    // (checked before the read below, so that a busy issuer costs no API call).
    if let Some(retry) = c.in_flight.busy(key) {
        return Ok(issuer_busy(ctx, cr, key, retry));
    }
    // The cache may lag our own writes: read the status fresh, and never sign twice.
    let api = Api::<CertificateRequest>::namespaced(
        ctx.client.clone(),
        &cr.namespace().unwrap_or_default(),
    );
    let fresh = api
        .get_status(&cr.name_any())
        .await
        .map_err(ReconcileError::Read)?;
    if fresh.uid().as_deref() != Some(uid)
        || decision::decide(
            fresh.status.as_ref(),
            key,
            &IssuerState::Known(Readiness::Ready),
        ) != Decision::Sign
    {
        return Ok(Action::await_change());
    }
    let Some(permit) = c.in_flight.try_acquire(key) else {
        let retry = c.in_flight.busy(key).unwrap_or(in_flight::BUSY_RETRY);
        return Ok(issuer_busy(ctx, cr, key, retry));
    };
    let started = Instant::now();
    let unwritten = c
        .memory
        .unwritten
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(uid);
    let result = match (unwritten, key) {
        (Some((certificate, ca, message)), _) => Ok(Issued {
            certificate,
            ca,
            message,
        }),
        (None, IssuerKey::Namespaced { namespace, name }) => {
            match c.issuers.get(&ObjectRef::new(name).within(namespace)) {
                Some(issuer) => sign_with(ctx, &*issuer, &fresh).await,
                None => Err(SignFailure::Retryable {
                    reason: "IssuerMissing",
                    message: format!("{key} disappeared"),
                }),
            }
        }
        (None, IssuerKey::Cluster { name }) => match c.cluster_issuers.get(&ObjectRef::new(name)) {
            Some(issuer) => sign_with(ctx, &*issuer, &fresh).await,
            None => Err(SignFailure::Retryable {
                reason: "IssuerMissing",
                message: format!("{key} disappeared"),
            }),
        },
    };
    // The CA's work is done; the status write below does not count against the issuer.
    drop(permit);
    match result {
        Ok(issued) => {
            let keep = (
                issued.certificate.clone(),
                issued.ca.clone(),
                issued.message.clone(),
            );
            let status = CertificateRequestStatus {
                conditions: vec![ready_condition(
                    &fresh,
                    "True",
                    reason::ISSUED,
                    &issued.message,
                )],
                certificate: Some(ByteString(issued.certificate.into_bytes())),
                ca: Some(ByteString(issued.ca.into_bytes())),
                failure_time: None,
            };
            if let Err(e) = apply_status(ctx, &fresh, &status).await {
                // Never sign twice because the API was briefly away: keep what step-ca gave us.
                c.memory
                    .unwritten
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(uid.to_string(), keep);
                return Err(e);
            }
            finish(&c.memory, uid);
            ctx.metrics.count_request(reason::ISSUED);
            if let Some(created) = fresh.creation_timestamp() {
                let age = Timestamp::now().duration_since(created.0).as_secs_f64();
                ctx.metrics.issuance_duration.observe(age.max(0.0));
            }
            tracing::info!(request = %fresh.name_any(), namespace = %fresh.namespace().unwrap_or_default(), issuer = %key, elapsed_ms = started.elapsed().as_millis() as u64, "Certificate issued");
            ctx.event(&fresh, EventType::Normal, "Issued", issued.message, "Sign")
                .await;
            Ok(Action::await_change())
        }
        Err(SignFailure::Invalid(message)) => {
            let mut status = CertificateRequestStatus {
                conditions: vec![ready_condition(&fresh, "False", reason::FAILED, &message)],
                failure_time: Some(Time(Timestamp::now())),
                ..Default::default()
            };
            status.conditions.push(RequestCondition {
                type_: CONDITION_INVALID_REQUEST.into(),
                status: "True".into(),
                reason: Some("InvalidRequest".into()),
                message: Some(crate::crd::condition::bounded_message(&message)),
                last_transition_time: Some(Time(Timestamp::now())),
            });
            apply_status(ctx, &fresh, &status).await?;
            finish(&c.memory, uid);
            ctx.metrics.count_request("InvalidRequest");
            ctx.event(
                &fresh,
                EventType::Warning,
                "PermanentError",
                message,
                "Sign",
            )
            .await;
            Ok(Action::await_change())
        }
        Err(SignFailure::Permanent {
            reason: why,
            message,
        }) => fail(c, &fresh, uid, why, &message).await,
        Err(SignFailure::Retryable {
            reason: why,
            message,
        }) => retry_later(c, &fresh, uid, why, message).await,
        Err(SignFailure::Auth(message)) => {
            match key {
                IssuerKey::Namespaced { namespace, name } => {
                    if let Some(i) = c.issuers.get(&ObjectRef::new(name).within(namespace)) {
                        crate::controller::issuer::report_sign_auth_failure(ctx, &*i, &message)
                            .await;
                    }
                }
                IssuerKey::Cluster { name } => {
                    if let Some(i) = c.cluster_issuers.get(&ObjectRef::new(name)) {
                        crate::controller::issuer::report_sign_auth_failure(ctx, &*i, &message)
                            .await;
                    }
                }
            }
            retry_later(
                c,
                &fresh,
                uid,
                "CARejectedToken",
                format!("step-ca refused the signing token: {message}"),
            )
            .await
        }
    }
}

fn issuer_busy(ctx: &Context, cr: &CertificateRequest, key: &IssuerKey, retry: Duration) -> Action {
    ctx.metrics.requests_deferred.inc();
    if retry >= in_flight::SLOW_RETRY {
        tracing::debug!(request = %cr.name_any(), namespace = %cr.namespace().unwrap_or_default(), issuer = %key, "The issuer's CA is slow and it has as many signs in flight as allowed; trying again in a second");
    }
    Action::requeue(retry)
}

async fn fail(
    c: &RequestCtx,
    cr: &CertificateRequest,
    uid: &str,
    why: &str,
    message: &str,
) -> Result<Action, ReconcileError> {
    let ctx = &c.ctx;
    let status = CertificateRequestStatus {
        conditions: vec![ready_condition(cr, "False", reason::FAILED, message)],
        failure_time: Some(Time(Timestamp::now())),
        ..Default::default()
    };
    apply_status(ctx, cr, &status).await?;
    finish(&c.memory, uid);
    ctx.metrics.count_request(why);
    tracing::warn!(request = %cr.name_any(), namespace = %cr.namespace().unwrap_or_default(), reason = why, "CertificateRequest failed");
    ctx.event(
        cr,
        EventType::Warning,
        "PermanentError",
        message.to_string(),
        "Sign",
    )
    .await;
    Ok(Action::await_change())
}

async fn retry_later(
    c: &RequestCtx,
    cr: &CertificateRequest,
    uid: &str,
    why: &'static str,
    message: String,
) -> Result<Action, ReconcileError> {
    let ctx = &c.ctx;
    let attempts = c
        .memory
        .retries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(uid)
        .map_or(0, |(n, _)| *n);
    let created = cr.creation_timestamp().map_or_else(Timestamp::now, |t| t.0);
    match decision::retry(
        created,
        Timestamp::now(),
        attempts,
        ctx.settings.max_retry_duration,
    ) {
        Retry::GiveUp => {
            let message = format!(
                "Failed to sign for longer than --max-retry-duration ({}s) since the request was created; last error: {message}",
                ctx.settings.max_retry_duration.as_secs()
            );
            fail(c, cr, uid, why, &message).await
        }
        Retry::After(delay) => {
            c.memory
                .retries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid.to_string(), (attempts + 1, Instant::now() + delay));
            let message = format!(
                "Failed to sign, will retry in {}s: {message}",
                delay.as_secs().max(1)
            );
            ctx.metrics.count_request(why);
            tracing::info!(request = %cr.name_any(), namespace = %cr.namespace().unwrap_or_default(), reason = why, attempt = attempts + 1, "Signing failed; will retry");
            if pending_message(cr) != Some(message.as_str()) {
                write_ready(ctx, cr, "False", reason::PENDING, &message, false).await?;
                ctx.event(cr, EventType::Warning, "RetryableError", message, "Sign")
                    .await;
            }
            Ok(Action::requeue(delay))
        }
    }
}

struct Issued {
    certificate: String,
    ca: String,
    message: String,
}

async fn sign_with<K: IssuerObject>(
    ctx: &Context,
    issuer: &K,
    cr: &CertificateRequest,
) -> Result<Issued, SignFailure> {
    // Validate the request before touching the CA: a bad CSR never costs a token.
    let csr = pki::csr::parse_csr(&cr.spec.request.0)
        .map_err(|e| SignFailure::Invalid(format!("The CSR is not acceptable: {e}")))?;
    let not_after = match cr.spec.duration.as_deref() {
        None | Some("") => None,
        Some(d) => match parse_go_duration(d) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(to_go_seconds(d)),
            Err(e) => return Err(SignFailure::Invalid(format!("spec.duration: {e}"))),
        },
    };
    // step-ca classifies token SANs by their text, so an IP written as a DNS name can never match
    // the CSR: say so now instead of relaying step-ca's 403.
    if let Some(ip) = csr
        .dns_names
        .iter()
        .find(|d| d.parse::<std::net::IpAddr>().is_ok())
    {
        return Err(SignFailure::Invalid(format!(
            "The CSR lists the IP address {ip} as a DNS name, which step-ca cannot sign: move it from dnsNames to ipAddresses in the Certificate"
        )));
    }
    let sans = csr.sans();
    let Some(subject) = step::token::subject_for(csr.common_name.as_deref(), &sans) else {
        return Err(SignFailure::Invalid(
            "The CSR has neither a common name nor subject alternative names: add dnsNames, ipAddresses, uris or emailAddresses to the Certificate".into(),
        ));
    };

    check_policy(ctx, issuer, cr, csr.common_name.as_deref(), &sans)?;

    let signer = match ctx.issuers.signers.current(
        &issuer.key(),
        &issuer.uid().unwrap_or_default(),
        issuer.meta().generation.unwrap_or_default(),
    ) {
        Some(s) => s,
        // The cached issuer is slimmed (no caBundle): connect from the API's copy. Waiting here
        // for a connect of this issuer holds one of its --max-signs-per-issuer places, never
        // more, and no longer than the connect's deadline.
        None => match ctx.issuers.signer_for_latest(issuer).await {
            Ok((s, _)) => s,
            Err(e) if e.is_transient() => {
                return Err(SignFailure::Retryable {
                    reason: e.reason(),
                    message: e.message_for(K::AUDIENCE),
                });
            }
            // The issuer reconciler will report this on the issuer; the request waits.
            Err(e) => {
                return Err(SignFailure::Retryable {
                    reason: e.reason(),
                    message: format!(
                        "{} is not usable: {}",
                        issuer.key(),
                        e.message_for(K::AUDIENCE)
                    ),
                });
            }
        },
    };

    let started = Instant::now();
    let result = signer.sign(&csr.pem, &subject, &sans, not_after).await;
    ctx.metrics
        .observe_ca("sign", result.is_ok(), started.elapsed().as_secs_f64());
    // A StepIssuer's requests show what its CA answered no more than the StepIssuer does.
    let response = match result {
        Ok(r) => r,
        Err(e) if e.is_auth_failure() => {
            return Err(SignFailure::Auth(e.message_for(K::AUDIENCE)));
        }
        Err(e) if e.is_retryable() => {
            return Err(SignFailure::Retryable {
                reason: e.reason(),
                message: e.message_for(K::AUDIENCE),
            });
        }
        Err(e) => {
            return Err(SignFailure::Permanent {
                reason: e.reason(),
                message: format!("step-ca refused to sign: {}", e.message_for(K::AUDIENCE)),
            });
        }
    };
    let issued = pki::chain::verify_issued(
        &response.cert_chain,
        &csr.public_key_der,
        chrono::Utc::now(),
    )
    .map_err(|e| SignFailure::Permanent {
        reason: e.reason(),
        message: format!("step-ca returned an unusable certificate: {e}"),
    })?;
    if cr.spec.is_ca == Some(true)
        && let Some(message) = pki::ca::ca_request_shortfall(&issued.leaf)
    {
        return Err(SignFailure::Permanent {
            reason: REASON_NOT_A_CA,
            message,
        });
    }
    let chain_infos =
        pki::chain::parse_pem_chain(issued.certificate_pem.as_bytes()).map_err(|e| {
            SignFailure::Permanent {
                reason: e.reason(),
                message: format!("step-ca returned an unusable certificate: {e}"),
            }
        })?;
    let ca = pki::chain::signing_root(&chain_infos, signer.roots_pem())
        .ok()
        .flatten()
        .or_else(|| signer.roots_pem().first().cloned())
        .unwrap_or_default();
    Ok(Issued {
        certificate: issued.certificate_pem,
        ca,
        message: format!(
            "Certificate issued by {} for {subject:?}, valid until {}",
            issuer.key(),
            issued.not_after.to_rfc3339()
        ),
    })
}

/// The issuer's name policy, before any token is minted (security review H3): a namespace that
/// may not use the issuer, or a name it may not have, fails the request for good with the rule
/// and the fix. The common name is checked too, unless it cannot be a name at all (it has
/// whitespace, and SANs carry the names): without SANs, step-ca makes it the certificate's name.
fn check_policy<K: IssuerObject>(
    ctx: &Context,
    issuer: &K,
    cr: &CertificateRequest,
    common_name: Option<&str>,
    sans: &[String],
) -> Result<(), SignFailure> {
    let policy = ctx
        .request_policy(issuer)
        .map_err(|e| SignFailure::Retryable {
            reason: "InvalidPolicy",
            message: format!("{} has an unusable spec.policy: {e}", issuer.key()),
        })?;
    let names = policy.name_policy(&ctx.settings.names);
    let namespace = cr.namespace().unwrap_or_default();
    let common_name = common_name
        .filter(|cn| !cn.is_empty())
        .filter(|cn| sans.is_empty() || !cn.chars().any(char::is_whitespace));
    crate::policy::issuer::check(
        &issuer.key().to_string(),
        &policy,
        &names,
        Requester::Namespace(&namespace),
        common_name
            .into_iter()
            .chain(sans.iter().map(String::as_str)),
    )
    .map_err(|e| SignFailure::Permanent {
        reason: REASON_POLICY_DENIED,
        message: format!("Refused by the name policy: {e}"),
    })
}

fn ready_condition(
    cr: &CertificateRequest,
    status: &str,
    why: &str,
    message: &str,
) -> RequestCondition {
    // Keep the transition time while the status holds, as cert-manager does.
    let previous = cr
        .status
        .as_ref()
        .and_then(|s| s.condition(CONDITION_READY))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    RequestCondition {
        type_: CONDITION_READY.into(),
        status: status.into(),
        reason: Some(why.into()),
        message: Some(crate::crd::condition::bounded_message(message)),
        last_transition_time: Some(previous.unwrap_or(Time(Timestamp::now()))),
    }
}

async fn write_ready(
    ctx: &Context,
    cr: &CertificateRequest,
    status: &str,
    why: &str,
    message: &str,
    failed: bool,
) -> Result<(), ReconcileError> {
    let status = CertificateRequestStatus {
        conditions: vec![ready_condition(cr, status, why, message)],
        failure_time: failed.then(|| Time(Timestamp::now())),
        ..Default::default()
    };
    apply_status(ctx, cr, &status).await
}

async fn apply_status(
    ctx: &Context,
    cr: &CertificateRequest,
    status: &CertificateRequestStatus,
) -> Result<(), ReconcileError> {
    let api = Api::<CertificateRequest>::namespaced(
        ctx.client.clone(),
        &cr.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "status": status,
    });
    api.patch_status(
        &cr.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ReconcileError::Status)?;
    Ok(())
}

/// The status write of a denied request, for the mocked-API tests.
#[cfg(test)]
pub(crate) async fn test_write_denied(
    ctx: &Context,
    cr: &CertificateRequest,
) -> Result<(), ReconcileError> {
    write_ready(ctx, cr, "False", reason::DENIED, "denied", true).await
}

fn error_policy(cr: Arc<CertificateRequest>, err: &ReconcileError, _c: Arc<RequestCtx>) -> Action {
    tracing::warn!(request = %cr.name_any(), namespace = %cr.namespace().unwrap_or_default(), error = %err, "CertificateRequest reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_manager::{CertificateRequestSpec, IssuerRef};

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
        assert_eq!(pending_message(&done), Some("waiting"));
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
        let memory = Memory::default();
        memory
            .finished
            .lock()
            .unwrap()
            .insert("uid-issued".to_string());

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
        assert!(memory.finished.lock().unwrap().is_empty());
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
