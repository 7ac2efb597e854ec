//! Signing one CertificateSigningRequest: the issuer its `signerName` names, the issuer's name
//! policy for whoever asked, the lifetime policy, step-ca, and the same check of the result as
//! for CertificateRequests; then `status.certificate`, or a `Failed` condition with the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestStatus,
};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use crate::controller::context::Context;
use crate::controller::decision::Retry;
use crate::controller::issuer_lookup::{self, NotYet};
use crate::controller::request::failure::SignFailure;
use crate::controller::request::sign::{SignInput, sign_and_check};
use crate::crd::{StepClusterIssuer, StepIssuer};
use crate::issuer::{IssuerKey, IssuerObject};
use crate::pki;
use crate::policy::Requester;

use super::CsrCtx;
use super::plan::{self, Gate};

/// How long a cached signer's password counts as confirmed (as for `/bootstrap`).
const PASSWORD_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to write the CertificateSigningRequest status")]
    Status(#[source] kube::Error),
}

#[tracing::instrument(name = "reconcile_csr", skip_all, fields(request = %csr.name_any()))]
pub async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    c: Arc<CsrCtx>,
) -> Result<Action, ReconcileError> {
    let uid = csr.uid().unwrap_or_default();
    let key = match plan::gate(&csr) {
        Gate::NotOurs | Gate::AwaitApproval => return Ok(Action::await_change()),
        Gate::Finished => {
            c.memory.release(&uid);
            return Ok(Action::await_change());
        }
        Gate::Sign(key) => key,
    };
    if c.memory.is_finished(&uid) {
        return Ok(Action::await_change());
    }
    if let Some(wait) = c.memory.backoff_left(&uid, Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    let result = match &key {
        IssuerKey::Cluster { .. } => sign::<StepClusterIssuer>(&c.ctx, &csr, &key).await,
        IssuerKey::Namespaced { .. } => sign::<StepIssuer>(&c.ctx, &csr, &key).await,
    };
    match result {
        Ok(signed) => {
            write(&c.ctx, &csr, &plan::issued_status(&signed.certificate)).await?;
            c.memory.finish(&uid);
            c.ctx.metrics.count_request("Issued", key.kind());
            let (type_, reason, note) = if signed.notes.is_empty() {
                (EventType::Normal, "Issued", signed.message)
            } else {
                let note = format!("{}; but {}", signed.message, signed.notes.join("; "));
                (EventType::Warning, "IssuedWithChanges", note)
            };
            tracing::info!("CertificateSigningRequest signed");
            c.ctx.event(&*csr, type_, reason, note, "Sign").await;
            Ok(Action::await_change())
        }
        Err(SignFailure::Retryable { reason, message }) => {
            retry(&c, &csr, &key, reason, message).await
        }
        Err(SignFailure::Auth(message)) => {
            c.ctx.issuers.signers.evict(&key);
            retry(&c, &csr, &key, "CARejectedToken", message).await
        }
        Err(SignFailure::Invalid(message)) => {
            fail(&c, &csr, &key, "InvalidRequest", &message).await
        }
        Err(SignFailure::Permanent { reason, message }) => {
            fail(&c, &csr, &key, reason, &message).await
        }
    }
}

async fn fail(
    c: &CsrCtx,
    csr: &CertificateSigningRequest,
    key: &IssuerKey,
    reason: &str,
    message: &str,
) -> Result<Action, ReconcileError> {
    write(
        &c.ctx,
        csr,
        &plan::failed_status(reason, message, Timestamp::now()),
    )
    .await?;
    c.memory.finish(&csr.uid().unwrap_or_default());
    c.ctx.metrics.count_request(reason, key.kind());
    tracing::warn!(reason, "CertificateSigningRequest failed");
    c.ctx
        .event(
            csr,
            EventType::Warning,
            reason,
            format!("Failed: {message}"),
            "Sign",
        )
        .await;
    Ok(Action::await_change())
}

/// Another attempt after a backoff, until `--max-retry-duration` from the request's creation.
async fn retry(
    c: &CsrCtx,
    csr: &CertificateSigningRequest,
    key: &IssuerKey,
    reason: &'static str,
    message: String,
) -> Result<Action, ReconcileError> {
    let uid = csr.uid().unwrap_or_default();
    let created = csr
        .creation_timestamp()
        .map_or_else(Timestamp::now, |t| t.0);
    let budget = c.ctx.settings.retry_budget;
    match budget.retry(created, Timestamp::now(), c.memory.attempts(&uid)) {
        Retry::GiveUp => {
            let message = format!(
                "Failed to sign for longer than --max-retry-duration ({}s) since the request was created; last error: {message}",
                budget.max.as_secs()
            );
            fail(c, csr, key, reason, &message).await
        }
        Retry::After(delay) => {
            c.memory.record_failure(&uid, Instant::now(), delay);
            c.ctx.metrics.count_request(reason, key.kind());
            let note = format!(
                "Not signed yet, will retry in {}s: {message}",
                delay.as_secs().max(1)
            );
            c.ctx
                .event(csr, EventType::Warning, reason, note, "Sign")
                .await;
            Ok(Action::requeue(delay))
        }
    }
}

async fn sign<K: IssuerObject>(
    ctx: &Context,
    csr: &CertificateSigningRequest,
    key: &IssuerKey,
) -> Result<crate::controller::request::plan::Signed, SignFailure> {
    let issuer = issuer_lookup::ready_issuer::<K>(ctx, key, "fix the request's signerName")
        .await
        .map_err(retryable)?;
    let asked = plan::asked(csr).map_err(SignFailure::Invalid)?;
    let parsed = pki::csr::parse_csr(&csr.spec.request.0)
        .map_err(|e| SignFailure::Invalid(format!("The CSR is not acceptable: {e}")))?;
    let sans = parsed.sans();
    let Some(subject) = parsed.token_subject() else {
        return Err(SignFailure::Invalid(
            "The CSR has neither a common name nor subject alternative names".into(),
        ));
    };
    let input = SignInput {
        csr: parsed,
        sans,
        subject,
        duration: asked.duration,
        usages: asked.usages,
        is_ca: asked.is_ca,
    };
    check_policy(ctx, &issuer, &plan::requester(csr), &input)?;
    let (signer, _) = ctx
        .issuers
        .signer_with_recheck(&issuer, PASSWORD_RECHECK)
        .await
        .map_err(|e| SignFailure::from_issuer(&e, key, K::AUDIENCE))?;
    sign_and_check(
        ctx,
        &issuer,
        &signer,
        &input,
        &csr.uid().unwrap_or_default(),
    )
    .await
}

/// The issuer's name policy for whoever created the CSR: a ServiceAccount is held to its
/// namespace's names and its own SPIFFE ID, as a pod is; a StepIssuer's requests to its
/// namespace's names. Anyone else (a user, a node) has no namespace: only the names the issuer's
/// `spec.policy` lists (or `allowAnyName`) are signed, and only by an issuer that does not limit
/// its namespaces.
fn check_policy<K: IssuerObject>(
    ctx: &Context,
    issuer: &K,
    requester: &plan::Requester,
    input: &SignInput,
) -> Result<(), SignFailure> {
    let denied = |message: String| SignFailure::Permanent {
        reason: "PolicyDenied",
        message,
    };
    let policy = issuer_lookup::policy_of(issuer).map_err(retryable)?;
    let own = issuer.own_namespace();
    let who = match (&own, requester) {
        (Some(ns), _) => Requester::Namespace(ns),
        (None, plan::Requester::ServiceAccount { namespace, name }) => Requester::Pod {
            namespace,
            service_account: name,
        },
        (None, plan::Requester::Other(user)) => {
            if !policy.allows_namespace("") {
                return Err(denied(format!(
                    "{user:?} is not a ServiceAccount, and {} is limited to some namespaces: create the CSR as a ServiceAccount of an allowed namespace",
                    issuer.key()
                )));
            }
            Requester::Namespace("")
        }
    };
    crate::policy::issuer::check(
        &issuer.key().to_string(),
        &policy,
        &policy.name_policy(&ctx.settings.names),
        who,
        input.sans.iter().map(String::as_str),
    )
    .map_err(|e| denied(format!("Refused by the name policy: {e}")))
}

async fn write(
    ctx: &Context,
    csr: &CertificateSigningRequest,
    status: &CertificateSigningRequestStatus,
) -> Result<(), ReconcileError> {
    let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
    crate::controller::context::apply_status(&api, &csr.name_any(), status)
        .await
        .map_err(ReconcileError::Status)
}

pub fn error_policy(
    csr: Arc<CertificateSigningRequest>,
    err: &ReconcileError,
    _c: Arc<CsrCtx>,
) -> Action {
    tracing::warn!(
        request = %csr.name_any(),
        error = %crate::error_chain::display(err),
        "CertificateSigningRequest reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(2))
}

fn retryable(n: NotYet) -> SignFailure {
    SignFailure::Retryable {
        reason: n.reason,
        message: n.message,
    }
}
