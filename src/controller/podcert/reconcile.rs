//! Signing one PodCertificateRequest: the issuer its `signerName` names, the issuer's name
//! policy for the pod's namespace and ServiceAccount, step-ca, and the status the API accepts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::{PodCertificateRequest, PodCertificateRequestStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use crate::controller::context::Context;
use crate::controller::decision;
use crate::controller::issuer_lookup::{self, NotYet};
use crate::crd::{StepClusterIssuer, StepIssuer};
use crate::issuer::{IssuerKey, IssuerObject};
use crate::pki;
use crate::policy::Requester;

use super::PodCertCtx;
use super::plan::{self, CONDITION_DENIED, CONDITION_FAILED, Denial, Issued};

/// How long a cached signer's password counts as confirmed (as for `/bootstrap`).
const PASSWORD_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to write the PodCertificateRequest status")]
    Status(#[source] kube::Error),
}

/// Why no certificate came of an attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Denied(Denial),
    Failed {
        reason: &'static str,
        message: String,
    },
    /// Worth another attempt (an issuer not Ready yet, step-ca away), for as long as the request
    /// exists (see [`retry`]).
    Retry {
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    fn retry(n: NotYet) -> Self {
        Outcome::Retry {
            reason: n.reason,
            message: n.message,
        }
    }
}

#[tracing::instrument(
    name = "reconcile_pod_certificate",
    skip_all,
    fields(request = %pcr.name_any(), namespace = pcr.namespace().as_deref().unwrap_or_default(), pod = %pcr.spec.pod_name)
)]
pub async fn reconcile(
    pcr: Arc<PodCertificateRequest>,
    c: Arc<PodCertCtx>,
) -> Result<Action, ReconcileError> {
    let namespace = pcr.namespace().unwrap_or_default();
    let Some(key) = plan::issuer_for(&pcr.spec.signer_name, &namespace) else {
        return Ok(Action::await_change());
    };
    let uid = pcr.uid().unwrap_or_default();
    if plan::is_finished(pcr.status.as_ref()) || pcr.metadata.deletion_timestamp.is_some() {
        c.memory.release(&uid);
        return Ok(Action::await_change());
    }
    if let Some(wait) = c.memory.backoff_left(&uid, Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    let outcome = match key {
        Err(denial) => Err(Outcome::Denied(denial)),
        Ok(key) => sign(&c.ctx, &pcr, &key).await,
    };
    match outcome {
        Ok(issued) => {
            let status = plan::issued_status(&issued, pcr.metadata.generation, Timestamp::now());
            write(&c.ctx, &pcr, &status).await?;
            c.memory.release(&uid);
            c.ctx.metrics.count_pod_certificate("Issued");
            crate::metrics::observe_since(
                &c.ctx.metrics.pod_certificate_duration,
                pcr.creation_timestamp().map(|t| t.0),
            );
            tracing::info!(not_after = %issued.not_after, "Pod certificate issued");
            tell(&c.ctx, &pcr, EventType::Normal, "Issued", issued.message).await;
            Ok(Action::await_change())
        }
        Err(Outcome::Denied(d)) => finish(&c, &pcr, CONDITION_DENIED, d.reason, d.message).await,
        Err(Outcome::Failed { reason, message }) => {
            finish(&c, &pcr, CONDITION_FAILED, reason, message).await
        }
        Err(Outcome::Retry { reason, message }) => retry(&c, &pcr, reason, message).await,
    }
}

/// A final refusal: the condition, an Event on the request and on the pod, a metric.
async fn finish(
    c: &PodCertCtx,
    pcr: &PodCertificateRequest,
    type_: &str,
    reason: &'static str,
    message: String,
) -> Result<Action, ReconcileError> {
    let status = plan::refused_status(
        type_,
        reason,
        &message,
        pcr.metadata.generation,
        Timestamp::now(),
    );
    write(&c.ctx, pcr, &status).await?;
    c.memory.release(&pcr.uid().unwrap_or_default());
    c.ctx.metrics.count_pod_certificate(reason);
    tracing::warn!(outcome = type_, reason, "Pod certificate refused");
    tell(
        &c.ctx,
        pcr,
        EventType::Warning,
        reason,
        format!("{type_}: {message}"),
    )
    .await;
    Ok(Action::await_change())
}

/// Another attempt after a backoff, for as long as the request exists. There is no retry budget
/// here, unlike for CertificateRequests: the kubelet never asks again for a volume whose request
/// turned Failed (the pod keeps its old certificate until it expires, or never starts), whereas a
/// request left Pending is deleted by kube-controller-manager 15 minutes after its creation and
/// the kubelet then asks afresh. So a CA outage or an issuer not Ready yet ends in a certificate
/// as soon as they recover, never in a pod that needs to be recreated.
async fn retry(
    c: &PodCertCtx,
    pcr: &PodCertificateRequest,
    reason: &'static str,
    message: String,
) -> Result<Action, ReconcileError> {
    let uid = pcr.uid().unwrap_or_default();
    let delay = decision::backoff(c.memory.attempts(&uid));
    c.memory.record_failure(&uid, Instant::now(), delay);
    c.ctx.metrics.count_pod_certificate(reason);
    tracing::info!(reason, "Pod certificate not signed yet; will retry");
    let note = format!(
        "Not signed yet, will retry in {}s: {message}",
        delay.as_secs().max(1)
    );
    tell(&c.ctx, pcr, EventType::Warning, reason, note).await;
    Ok(Action::requeue(delay))
}

async fn sign(
    ctx: &Context,
    pcr: &PodCertificateRequest,
    key: &IssuerKey,
) -> Result<Issued, Outcome> {
    match key {
        IssuerKey::Cluster { .. } => sign_with::<StepClusterIssuer>(ctx, pcr, key).await,
        IssuerKey::Namespaced { .. } => sign_with::<StepIssuer>(ctx, pcr, key).await,
    }
}

async fn sign_with<K: IssuerObject>(
    ctx: &Context,
    pcr: &PodCertificateRequest,
    key: &IssuerKey,
) -> Result<Issued, Outcome> {
    let namespace = pcr.namespace().unwrap_or_default();
    let issuer =
        issuer_lookup::ready_issuer::<K>(ctx, key, "fix the podCertificate volume's signerName")
            .await
            .map_err(Outcome::retry)?;
    let names = plan::pod_names(&pcr.spec, &namespace, &ctx.settings.names.cluster_domain)
        .map_err(Outcome::Denied)?;
    let renew_before = plan::renew_before(&pcr.spec).map_err(Outcome::Denied)?;
    check_policy(
        ctx,
        &issuer,
        &namespace,
        &pcr.spec.service_account_name,
        &names.sans,
    )?;
    let csr = pki::csr::parse_csr_der(&pcr.spec.stub_pkc_s10_request.0).map_err(|e| {
        let reason = match e {
            pki::Error::UnsupportedKey { .. } => "UnsupportedKeyType",
            _ => "InvalidRequest",
        };
        Outcome::Denied(Denial {
            reason,
            message: format!(
                "The kubelet's request is not acceptable: {e}; step-ca signs ECDSAP256, ECDSAP384, ECDSAP521, ED25519, RSA3072 and RSA4096 keys"
            ),
        })
    })?;
    let (signer, _) = ctx
        .issuers
        .signer_with_recheck(&issuer, PASSWORD_RECHECK)
        .await
        .map_err(|e| Outcome::Retry {
            reason: e.reason(),
            message: format!("{key} is not usable: {}", e.message_for(K::AUDIENCE)),
        })?;
    let (not_before, not_after) = plan::window(pcr.spec.max_expiration_seconds, Timestamp::now());
    let started = Instant::now();
    let options = crate::step::SignOptions {
        request_id: pcr.metadata.uid.clone(),
        not_before: Some(not_before.to_string()),
        not_after: Some(not_after.to_string()),
        csr_der: Some(csr.der.clone()),
    };
    let result = signer
        .sign_with_options(&csr.pem, &names.subject, &names.sans, &options)
        .await;
    ctx.metrics
        .observe_ca("sign", result.is_ok(), started.elapsed().as_secs_f64());
    let response = result.map_err(|e| {
        if e.is_auth_failure() {
            ctx.issuers.signers.evict(key);
        }
        let message = e.message_for(K::AUDIENCE);
        if e.is_retryable() || e.is_auth_failure() {
            Outcome::Retry {
                reason: e.reason(),
                message,
            }
        } else {
            Outcome::Failed {
                reason: e.reason(),
                message: format!("step-ca refused to sign: {message}"),
            }
        }
    })?;
    let mut issued = issued(
        &response.cert_chain,
        &csr,
        pcr.spec.max_expiration_seconds,
        key,
        &names.subject,
    )?;
    issued.renew_before = renew_before;
    Ok(issued)
}

/// The issuer's policy for pods: without `spec.policy`, a pod gets only its namespace's names
/// and its own ServiceAccount's SPIFFE ID, whatever `--issuers-without-policy` says for
/// CertificateRequests (the same default as `/bootstrap`).
fn check_policy<K: IssuerObject>(
    ctx: &Context,
    issuer: &K,
    namespace: &str,
    service_account: &str,
    sans: &[String],
) -> Result<(), Outcome> {
    let policy = issuer_lookup::policy_of(issuer).map_err(Outcome::retry)?;
    crate::policy::issuer::check(
        &issuer.key().to_string(),
        &policy,
        &policy.name_policy(&ctx.settings.names),
        Requester::Pod {
            namespace,
            service_account,
        },
        sans.iter().map(String::as_str),
    )
    .map_err(|e| {
        Outcome::Denied(Denial {
            reason: "PolicyDenied",
            message: format!("Refused by the name policy: {e}"),
        })
    })
}

/// What step-ca returned, checked as the API will check it: the pod's key, a chain, and a
/// lifetime of at least an hour and at most what the request allows.
fn issued(
    chain: &[String],
    csr: &pki::csr::Csr,
    max_expiration_seconds: Option<i32>,
    key: &IssuerKey,
    subject: &str,
) -> Result<Issued, Outcome> {
    let unusable = |message: String| Outcome::Failed {
        reason: "UnusableCertificate",
        message,
    };
    let issued = pki::chain::verify_issued(chain, &csr.public_key_der, chrono::Utc::now())
        .map_err(|e| unusable(format!("step-ca returned an unusable certificate: {e}")))?;
    let to_ts = |t: chrono::DateTime<chrono::Utc>| Timestamp::from_second(t.timestamp()).ok();
    let (Some(not_before), Some(not_after)) =
        (to_ts(issued.leaf.not_before), to_ts(issued.not_after))
    else {
        return Err(unusable(
            "the certificate's validity is out of range".into(),
        ));
    };
    let life = not_after.duration_since(not_before).as_secs();
    let max = i64::from(max_expiration_seconds.unwrap_or(86_400));
    if life < 3600 || life > max {
        return Err(unusable(format!(
            "step-ca issued a certificate valid for {life}s, but a pod certificate must last between 3600s and spec.maxExpirationSeconds ({max}s): check the provisioner's claims (minTLSCertDuration, maxTLSCertDuration) and its template"
        )));
    }
    Ok(Issued {
        message: format!("Certificate issued by {key} for {subject:?}, valid until {not_after}"),
        chain_pem: issued.certificate_pem,
        not_before,
        not_after,
        renew_before: None,
    })
}

async fn write(
    ctx: &Context,
    pcr: &PodCertificateRequest,
    status: &PodCertificateRequestStatus,
) -> Result<(), ReconcileError> {
    let api = Api::<PodCertificateRequest>::namespaced(
        ctx.client.clone(),
        &pcr.namespace().unwrap_or_default(),
    );
    crate::controller::context::apply_status(&api, &pcr.name_any(), status)
        .await
        .map_err(ReconcileError::Status)
}

/// An Event on the request, and the same on its pod, where users look first.
async fn tell(
    ctx: &Context,
    pcr: &PodCertificateRequest,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.event(pcr, type_, reason, note.clone(), "Sign").await;
    let pod = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pcr.spec.pod_name.clone()),
        namespace: pcr.namespace(),
        uid: Some(pcr.spec.pod_uid.clone()),
        ..Default::default()
    };
    ctx.event_for(&pod, type_, reason, note, "Sign").await;
}

pub fn error_policy(
    pcr: Arc<PodCertificateRequest>,
    err: &ReconcileError,
    _c: Arc<PodCertCtx>,
) -> Action {
    tracing::warn!(
        request = %pcr.name_any(),
        namespace = %pcr.namespace().unwrap_or_default(),
        error = %crate::error_chain::display(err),
        "PodCertificateRequest reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(2))
}
