//! The issuer reconciler's executor: connects (or reuses the cached signer), checks step-ca's
//! health when no recent check holds, and writes the `Ready` condition when it changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::controller::context::Context;
use crate::crd::IssuerStatus;
use crate::crd::condition;
use crate::issuer::IssuerObject;
use crate::issuer::error::IssuerError;
use crate::step::Signer;

use super::IssuerCtx;
use super::check::{self, Health, SIGN_AUTH_FAILED, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to write the issuer status")]
    Status(#[source] kube::Error),
    /// The status was refused because the issuer's CRD is older than ours (an `OutdatedCRD`
    /// Event says so): checked again only after [`check::OUTDATED_CRD_RECHECK`].
    #[error("the apiserver refused the issuer status: its CRD is outdated, upgrade the CRDs")]
    OutdatedCrd(#[source] kube::Error),
}

#[tracing::instrument(
    name = "reconcile_issuer",
    skip_all,
    fields(issuer = %issuer.key())
)]
pub async fn reconcile<K: IssuerObject>(
    issuer: Arc<K>,
    c: Arc<IssuerCtx>,
) -> Result<Action, ReconcileError> {
    let ctx = &c.ctx;
    let key = issuer.key();
    if issuer.meta().deletion_timestamp.is_some() {
        c.forget(&key);
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let status = issuer.issuer_status();
    let previous = status.map(|s| s.conditions.clone()).unwrap_or_default();
    let recheck = check::recheck_requested(
        issuer
            .annotations()
            .get(check::RECHECK_ANNOTATION)
            .map(String::as_str),
        status.and_then(|s| s.last_recheck.as_deref()),
    );
    if check::after_auth_failure(&previous) || recheck.is_some() {
        ctx.issuers.signers.evict(&key);
    }
    let interval = ctx.settings.issuer_recheck_interval;
    let (outcome, next_check) = connect_and_check(&c, &*issuer, interval).await;
    let mut verdict = check::verdict::<K>(&outcome, next_check, interval);
    let ca = ca_status(ctx, &key, &outcome, status, &mut verdict.message);
    if let (Ok(signer), true) = (&outcome, ctx.settings.trust_bundles) {
        let (trust, federation_error) = signer.trust_pem().await;
        if let Some(e) = federation_error {
            tracing::debug!(error = %crate::error_chain::display(&e), "No federated roots; the bundle holds the roots alone");
        }
        super::trust_bundle::publish(ctx, &*issuer, &trust).await;
    }
    let cond = condition::build(
        condition::READY,
        &previous,
        verdict.ready,
        &verdict.reason,
        &verdict.message,
        issuer.meta().generation,
        Timestamp::now(),
    );
    let new_status = IssuerStatus {
        conditions: ctx.issuer_conditions(&*issuer, &previous, cond),
        ca,
        last_recheck: recheck
            .clone()
            .or_else(|| status.and_then(|s| s.last_recheck.clone())),
    };
    if check::status_changed(status, &new_status) {
        if let Some(wait) = yield_to_rival(&c, &*issuer).await {
            c.ready.set(ctx, &key, Some(verdict.ready));
            return Ok(Action::requeue(wait.min(verdict.requeue)));
        }
        if let Err(e) = ctx.apply_issuer_status(&*issuer, &new_status).await {
            return Err(status_refused(ctx, &*issuer, e).await);
        }
        if recheck.is_some() || check::conditions_changed(&previous, &new_status.conditions) {
            tell(ctx, &*issuer, &verdict, recheck.is_some()).await;
            tracing::info!(
                ready = verdict.ready,
                reason = verdict.reason,
                recheck = recheck.is_some(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Issuer checked"
            );
        }
    }
    c.ready.set(ctx, &key, Some(verdict.ready));
    Ok(Action::requeue(verdict.requeue))
}

/// A status the apiserver refuses as invalid comes from a CRD older than ours (step-issuer's own
/// allows no condition but Ready): say so on the issuer, with the fix.
async fn status_refused<K: IssuerObject>(
    ctx: &Context,
    issuer: &K,
    e: kube::Error,
) -> ReconcileError {
    let kube::Error::Api(api) = &e else {
        return ReconcileError::Status(e);
    };
    if !check::outdated_crd(api.code, &api.message) {
        return ReconcileError::Status(e);
    }
    let message = format!(
        "The apiserver refused this {}'s status ({}): its CRD is older than step-operator's \
         (step-issuer's own, for example). Upgrade the CRDs: helm upgrade with \
         crds.enabled=true, or kubectl apply --server-side -f crds/",
        K::KIND,
        api.message
    );
    ctx.event(issuer, EventType::Warning, "OutdatedCRD", message, "Check")
        .await;
    ReconcileError::OutdatedCrd(e)
}

/// What `status.ca` says after this check, with a CA expiry warning added to `message`.
fn ca_status(
    ctx: &Context,
    key: &crate::issuer::IssuerKey,
    outcome: &Result<Signer, IssuerError>,
    status: Option<&IssuerStatus>,
    message: &mut String,
) -> Option<crate::crd::CaStatus> {
    match outcome {
        Ok(signer) => {
            let facts = signer.facts();
            super::facts::record_expiry(ctx, key, &facts);
            if let Some(warning) = super::facts::expiry_warning(&facts, chrono::Utc::now()) {
                *message = format!("{message}; {warning}");
            }
            Some(super::facts::ca_status(&facts))
        }
        // What the last successful check learned still describes the CA best.
        Err(_) => status.and_then(|s| s.ca.clone()),
    }
}

/// Another controller writes this issuer's status too (step-issuer still running after a
/// migration): instead of answering each of its writes with ours, tell once and leave the status
/// to it for a while. Returns how long, or `None` to write now.
async fn yield_to_rival<K: IssuerObject>(c: &IssuerCtx, issuer: &K) -> Option<Duration> {
    use crate::controller::rival::{self, Turn};
    let fields = issuer.meta().managed_fields.as_deref().unwrap_or_default();
    let found = rival::rival_status_writer(
        fields,
        crate::controller::context::FIELD_MANAGER,
        rival::process_start(),
    );
    let key = issuer.key().to_string();
    match c.yielding.turn(&key, found.is_some(), Instant::now()) {
        Turn::Write => None,
        Turn::Yield { tell, left } => {
            if let (true, Some(r)) = (tell, &found) {
                tracing::warn!(manager = %r.manager, "Another controller writes this issuer's status; leaving it alone for a while");
                let message = rival::issuer_message(r, K::KIND);
                c.ctx
                    .event(
                        issuer,
                        EventType::Warning,
                        "AnotherController",
                        message,
                        "Check",
                    )
                    .await;
            }
            Some(left)
        }
    }
}

/// The signer, proved to work: a fresh connection, or a health check unless a recent one holds.
/// Returns when the CA is next due a check.
async fn connect_and_check<K: IssuerObject>(
    c: &IssuerCtx,
    issuer: &K,
    interval: Duration,
) -> (Result<Signer, IssuerError>, Duration) {
    let key = issuer.key();
    let (signer, fresh) = match c.ctx.issuers.signer_for(issuer).await {
        Ok(s) => s,
        Err(e) => {
            c.ready.forget_verified(&key);
            return (Err(e), interval);
        }
    };
    match check::health(fresh, c.ready.verified_ago(&key), interval) {
        Health::Proved => {
            c.ready.mark_verified(&key);
            (Ok(signer), interval)
        }
        Health::Holds { next_check } => (Ok(signer), next_check),
        Health::CheckNow => {
            let t = Instant::now();
            let result = signer.check_health().await;
            c.ctx
                .metrics
                .observe_ca("health", result.is_ok(), t.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    c.ready.mark_verified(&key);
                    (Ok(signer), interval)
                }
                Err(e) => {
                    c.ready.forget_verified(&key);
                    (Err(IssuerError::from(e)), interval)
                }
            }
        }
    }
}

async fn tell<K: IssuerObject>(ctx: &Context, issuer: &K, verdict: &Verdict, recheck: bool) {
    let (type_, action) = match (verdict.ready, recheck) {
        (true, false) => (EventType::Normal, "Verified"),
        (true, true) => (EventType::Normal, "Recheck"),
        (false, _) => (EventType::Warning, "Check"),
    };
    ctx.event(
        issuer,
        type_,
        &verdict.reason,
        verdict.message.clone(),
        action,
    )
    .await;
}

pub fn error_policy<K: IssuerObject>(
    issuer: Arc<K>,
    err: &ReconcileError,
    _c: Arc<IssuerCtx>,
) -> Action {
    tracing::warn!(
        issuer = %issuer.key(),
        error = %crate::error_chain::display(err),
        "Issuer reconcile failed; retrying"
    );
    Action::requeue(check::retry_after_error(matches!(
        err,
        ReconcileError::OutdatedCrd(_)
    )))
}

/// Marks an issuer not Ready after step-ca refused its token at sign time; its reconciler then
/// reconnects and re-checks.
pub async fn report_sign_auth_failure<K: IssuerObject>(ctx: &Context, issuer: &K, detail: &str) {
    let previous = issuer
        .issuer_status()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let cond = condition::build(
        condition::READY,
        &previous,
        false,
        SIGN_AUTH_FAILED,
        &format!(
            "step-ca refused a signing token ({detail}); re-checking the provisioner and password"
        ),
        issuer.meta().generation,
        Timestamp::now(),
    );
    ctx.issuers.signers.evict(&issuer.key());
    let status = IssuerStatus {
        conditions: ctx.issuer_conditions(issuer, &previous, cond),
        ..issuer.issuer_status().cloned().unwrap_or_default()
    };
    if let Err(e) = ctx.apply_issuer_status(issuer, &status).await {
        tracing::warn!(
            issuer = %issuer.key(),
            error = %crate::error_chain::display(&e),
            "Failed to mark the issuer not Ready"
        );
    }
}
