//! The executor of the request controller: reads what a [`Plan`] needs, carries it out (one
//! status writer, then memory, metric and Event), and signs when the gates are open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::cert_manager::{CertificateRequest, CertificateRequestStatus};
use crate::controller::context::{Context, FIELD_MANAGER};
use crate::controller::decision::{self, Gate};
use crate::controller::in_flight;
use crate::issuer::IssuerKey;

use super::RequestCtx;
use super::failure::SignFailure;
use super::plan::{self, Attempt, Next, Plan, Remember, Seen, Signed, StatusChange, Step};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to write the CertificateRequest status")]
    Status(#[source] kube::Error),
    #[error("failed to read the CertificateRequest")]
    Read(#[source] kube::Error),
}

impl ReconcileError {
    /// The write was refused because the request changed since it was read.
    fn is_conflict(&self) -> bool {
        matches!(self, ReconcileError::Status(kube::Error::Api(s)) if s.code == 409)
    }
}

#[tracing::instrument(
    name = "reconcile_request",
    skip_all,
    fields(request = %cr.name_any(), namespace = cr.namespace().as_deref().unwrap_or_default())
)]
pub async fn reconcile(
    cr: Arc<CertificateRequest>,
    c: Arc<RequestCtx>,
) -> Result<Action, ReconcileError> {
    let namespace = cr.namespace().unwrap_or_default();
    let Some(key) = decision::owning_issuer(&cr.spec.issuer_ref, &namespace) else {
        // Not ours: no status, no event.
        return Ok(Action::await_change());
    };
    let uid = cr.uid().unwrap_or_default();
    if cr.meta().deletion_timestamp.is_some() || c.memory.is_finished(&uid) {
        c.memory.forget(&uid);
        return Ok(Action::await_change());
    }
    // No wait for the issuer caches here: requests are only watched once both have listed
    // (see `run`).
    let seen = Seen {
        status: cr.status.as_ref(),
        key: &key,
        issuer: &c.issuers.state(&key),
        told_approval: c.memory.told_approval(&uid),
        created: cr.creation_timestamp().map(|t| t.0),
        now: Timestamp::now(),
    };
    match plan::before_signing(&seen) {
        Step::Do(plan) => execute(&c, &cr, &key, &uid, *plan).await,
        Step::Sign => sign(&c, &cr, &key, &uid).await,
    }
}

async fn sign(
    c: &RequestCtx,
    cr: &CertificateRequest,
    key: &IssuerKey,
    uid: &str,
) -> Result<Action, ReconcileError> {
    let ctx = &c.ctx;
    // Honour the backoff of an earlier failure: our own Pending write re-triggers us at once.
    if let Some(wait) = c.memory.backoff_left(uid, Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    // One CA that hangs must not take every worker: at most `--max-signs-per-issuer` requests
    // of an issuer are signed at once; the others wait briefly for a place behind a CA that
    // answers, else go back to the queue without a status write. The place is taken before the
    // read below: workers that read first and found the issuer busy afterwards cost a read per
    // attempt (the bench counted up to three status reads per issued request).
    let Some(permit) = c.in_flight.acquire_within(key, in_flight::BUSY_WAIT).await else {
        let retry = c.in_flight.busy(key).unwrap_or(in_flight::BUSY_RETRY);
        return Ok(issuer_busy(ctx, key, retry));
    };
    // The cache may lag our own writes: read the status fresh, and never sign twice.
    let fresh = read_status(ctx, cr).await.map_err(ReconcileError::Read)?;
    if fresh.uid().as_deref() != Some(uid) {
        return Ok(Action::await_change());
    }
    if decision::gate(fresh.status.as_ref()) != Gate::Open {
        signed_elsewhere(c, &fresh, c.memory.take_unwritten(uid)).await;
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    tracing::debug!(issuer = %key, "Signing");
    let result = match c.memory.take_unwritten(uid) {
        Some(signed) => Ok(signed),
        None => match c.issuers.get(key) {
            Some(issuer) => issuer.sign(ctx, &fresh).await,
            None => Err(SignFailure::issuer_missing(key)),
        },
    };
    // The CA's work is done; the status write below does not count against the issuer.
    drop(permit);
    let attempt = Attempt {
        status: fresh.status.as_ref(),
        attempts: c.memory.attempts(uid),
        created: fresh
            .creation_timestamp()
            .map_or_else(Timestamp::now, |t| t.0),
        now: Timestamp::now(),
        budget: ctx.settings.retry_budget,
    };
    let plan = plan::after_signing(result, &attempt);
    if let Some(message) = &plan.issuer_auth_failure
        && let Some(issuer) = c.issuers.get(key)
    {
        issuer.report_auth_failure(ctx, message).await;
    }
    tracing::debug!(
        issuer = %key,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Signing attempt ended"
    );
    execute_and_supersede(c, &fresh, key, uid, plan).await
}

/// A request finished under our feet (by another replica or another controller): a certificate
/// of ours that was not written (`dropped`) is not used; when another controller signed it, say
/// so (two controllers serve our group).
async fn signed_elsewhere(c: &RequestCtx, fresh: &CertificateRequest, dropped: Option<Signed>) {
    let fields = fresh.managed_fields();
    let rival = crate::controller::rival::certificate_writer(fields, FIELD_MANAGER);
    if let Some(signed) = dropped {
        // step-ca issued it all the same: its serial lets an operator revoke it by hand.
        let serial = crate::pki::chain::parse_pem_chain(signed.certificate.as_bytes())
            .ok()
            .and_then(|chain| chain.into_iter().next())
            .map(|leaf| leaf.serial_hex)
            .unwrap_or_default();
        match &rival {
            Some(manager) => tracing::info!(
                manager,
                serial,
                "Another controller signed this request first; the certificate step-ca gave us (serial above) is not used"
            ),
            // Another replica of ours (a leader handover), or the request was denied meanwhile.
            None => tracing::info!(
                serial,
                "This request was finished meanwhile; the certificate step-ca gave us (serial above) is not used"
            ),
        }
    }
    let Some(manager) = rival else {
        return;
    };
    let message = crate::controller::rival::request_message(&manager);
    c.ctx
        .event(
            fresh,
            EventType::Warning,
            "SignedByAnotherController",
            message,
            "Sign",
        )
        .await;
}

/// [`execute`], and with `spec.revocation.onSupersede` the revocation of what an issued request
/// supersedes: read before its status is written (see `revoke::superseded_by`), revoked after.
async fn execute_and_supersede(
    c: &RequestCtx,
    fresh: &CertificateRequest,
    key: &IssuerKey,
    uid: &str,
    plan: Plan,
) -> Result<Action, ReconcileError> {
    let supersede = match (&plan.status, c.issuers.get(key)) {
        (Some(StatusChange::Issued(_)), Some(issuer)) => issuer.supersede_signer(&c.ctx),
        _ => None,
    };
    let superseded = match &supersede {
        Some(_) => crate::controller::revoke::superseded_by(&c.ctx, fresh).await,
        None => Vec::new(),
    };
    // Decided on the fresh read: written only if nothing overtook it (409 otherwise, and the
    // certificate is kept for the retry, which reads again).
    let action = execute_at(
        c,
        fresh,
        fresh.resource_version().as_deref(),
        key,
        uid,
        plan,
    )
    .await?;
    if let Some(signer) = supersede
        && !superseded.is_empty()
    {
        tokio::spawn(crate::controller::revoke::revoke_superseded(
            c.ctx.clone(),
            signer,
            fresh.name_any(),
            superseded,
        ));
    }
    Ok(action)
}

/// Carries a plan out: the status first (a request is finished only once the API says so),
/// then what this process remembers, the metric, the log line and the Event.
async fn execute(
    c: &RequestCtx,
    cr: &CertificateRequest,
    key: &IssuerKey,
    uid: &str,
    plan: Plan,
) -> Result<Action, ReconcileError> {
    execute_at(c, cr, None, key, uid, plan).await
}

/// [`execute`], its status write conditional on `resource_version` when given.
async fn execute_at(
    c: &RequestCtx,
    cr: &CertificateRequest,
    resource_version: Option<&str>,
    key: &IssuerKey,
    uid: &str,
    plan: Plan,
) -> Result<Action, ReconcileError> {
    let ctx = &c.ctx;
    if let Remember::Failure(delay) = plan.remember {
        // Before the write: a failed write must not skip the backoff.
        c.memory.record_failure(uid, Instant::now(), delay);
    }
    if let Some(change) = &plan.status {
        let status = plan::status_for(change, cr.status.as_ref(), Timestamp::now());
        if let Err(e) = apply_status(ctx, cr, resource_version, &status).await {
            if let StatusChange::Issued(signed) = change {
                // Refused because the request changed since we read it: if it was finished
                // meanwhile, by someone else, say so now. Its watch event will take it out of
                // the cache, and with it the retry that would have read it again.
                if e.is_conflict()
                    && let Some(now) = finished_meanwhile(ctx, cr, uid).await
                {
                    signed_elsewhere(c, &now, Some(signed.clone())).await;
                    c.memory.release(uid);
                    return Ok(Action::await_change());
                }
                // Never sign twice because the API was briefly away: keep what step-ca gave us.
                c.memory.stash_unwritten(uid, signed.clone());
            }
            return Err(e);
        }
    }
    match plan.remember {
        Remember::Finish => c.memory.finish(uid),
        Remember::Release => c.memory.release(uid),
        Remember::ToldApproval => c.memory.mark_told_approval(uid),
        Remember::Failure(_) | Remember::Nothing => {}
    }
    if let Some(result) = plan.count {
        ctx.metrics.count_request(result, key.kind());
        log_result(cr, key, result, &plan, c.memory.attempts(uid));
    }
    if let Some(StatusChange::Issued(_)) = &plan.status {
        crate::metrics::observe_since(
            &ctx.metrics.issuance_duration,
            cr.creation_timestamp().map(|t| t.0),
        );
    }
    if let Some(note) = plan.event {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(cr, type_, note.reason, note.message, note.action)
            .await;
    }
    Ok(match plan.next {
        Next::AwaitChange => Action::await_change(),
        Next::Requeue(after) => Action::requeue(after),
    })
}

/// One line per result, in the reconcile's span (which names the request).
fn log_result(cr: &CertificateRequest, key: &IssuerKey, result: &str, plan: &Plan, attempts: u32) {
    match (&plan.status, plan.remember) {
        (Some(StatusChange::Issued(_)), _) => tracing::info!(issuer = %key, "Certificate issued"),
        (_, Remember::Failure(_)) => {
            tracing::info!(issuer = %key, reason = result, attempt = attempts, "Signing failed; will retry")
        }
        (Some(StatusChange::Denied(_)), _) => {
            tracing::info!(issuer = %key, "Denied by an approver")
        }
        _ => tracing::warn!(
            issuer = %key,
            reason = result,
            created = ?cr.creation_timestamp().map(|t| t.0),
            "CertificateRequest failed"
        ),
    }
}

fn issuer_busy(ctx: &Context, key: &IssuerKey, retry: Duration) -> Action {
    ctx.metrics.requests_deferred.inc();
    if retry >= in_flight::SLOW_RETRY {
        tracing::debug!(issuer = %key, "The issuer's CA is slow and it has as many signs in flight as allowed; trying again in a second");
    }
    Action::requeue(retry)
}

/// The request as the API holds it now, not as the cache does.
async fn read_status(
    ctx: &Context,
    cr: &CertificateRequest,
) -> Result<CertificateRequest, kube::Error> {
    Api::<CertificateRequest>::namespaced(ctx.client.clone(), &cr.namespace().unwrap_or_default())
        .get_status(&cr.name_any())
        .await
}

/// The request as the API holds it now, if it is still this one (`uid`) and finished.
async fn finished_meanwhile(
    ctx: &Context,
    cr: &CertificateRequest,
    uid: &str,
) -> Option<CertificateRequest> {
    let now = read_status(ctx, cr).await.ok()?;
    (now.uid().as_deref() == Some(uid) && decision::gate(now.status.as_ref()) != Gate::Open)
        .then_some(now)
}

/// The one status writer: server-side apply on `/status` with our field manager.
async fn apply_status(
    ctx: &Context,
    cr: &CertificateRequest,
    resource_version: Option<&str>,
    status: &CertificateRequestStatus,
) -> Result<(), ReconcileError> {
    let api = Api::<CertificateRequest>::namespaced(
        ctx.client.clone(),
        &cr.namespace().unwrap_or_default(),
    );
    crate::controller::context::apply_status_if(&api, &cr.name_any(), resource_version, status)
        .await
        .map_err(ReconcileError::Status)
}

pub fn error_policy(
    cr: Arc<CertificateRequest>,
    err: &ReconcileError,
    _c: Arc<RequestCtx>,
) -> Action {
    tracing::warn!(
        request = %cr.name_any(),
        namespace = %cr.namespace().unwrap_or_default(),
        error = %crate::error_chain::display(err),
        "CertificateRequest reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(2))
}
