//! Revocation at step-ca (passive: step-ca records it, refuses to renew the certificate and lists
//! it in its CRL), opt-in two ways:
//! - per issuer, `spec.revocation.onSupersede`: once a Certificate's new revision is issued, the
//!   certificates of its older revisions from the same issuer are revoked (`superseded`);
//! - on demand: the label `certmanager.step.sm/revoke=true` on a CertificateRequest of ours
//!   (reason in `certmanager.step.sm/revoke-reason`). A watch selects only labelled requests, so
//!   the apiserver filters and the cost is nil until someone asks.
//!
//! Each revoked request gets the `certmanager.step.sm/revoked` annotation and a `Revoked` Event;
//! a CA without a database (501) gets a `RevocationUnsupported` Warning instead, naming the fix.

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::cert_manager::CertificateRequest;
use crate::controller::context::Context;
use crate::controller::decision;
use crate::controller::watch_health::{WatchHealth, report_outcome};
use crate::crd::{StepClusterIssuer, StepIssuer};
use crate::issuer::{IssuerKey, IssuerObject};
use crate::step::{RevocationReason, SerialNumber, Signer};

use self::plan::{ANNOTATION_REVOKED, LABEL_REVOKE};

/// Under which name the on-demand watch reports to [`WatchHealth`].
pub const WATCH_REVOCATIONS: &str = "CertificateRequests to revoke";

/// What one revocation came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Revoked,
    /// step-ca has no database: it cannot revoke, and never will until configured with one.
    Unsupported,
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RevokeError(String);

/// What follows a failed revocation, as its Event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    RetryLater,
    /// The last attempt: the user has to revoke by hand.
    GiveUp,
}

/// The Warning for a failed revocation: what failed, and what happens next or what to do.
fn failure_message(serial_hex: &str, why: &str, after: AfterFailure) -> String {
    match after {
        AfterFailure::RetryLater => {
            format!("Revoking serial {serial_hex} at step-ca failed, will retry: {why}")
        }
        AfterFailure::GiveUp => format!(
            "Revoking serial {serial_hex} at step-ca failed, not retried any more: {why}. \
             Revoke it with the certmanager.step.sm/revoke=true label on this request, or with \
             `step ca revoke` and the serial in decimal"
        ),
    }
}

/// Revokes the certificate of `cr` with `signer`, then records it (annotation and Event).
pub async fn revoke(
    ctx: &Context,
    signer: &Signer,
    cr: &CertificateRequest,
    reason: RevocationReason,
    text: &str,
    after: AfterFailure,
) -> Outcome {
    let serial = match leaf_serial(cr) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e),
    };
    let uid = cr.uid();
    let result = signer
        .revoke(
            &SerialNumber::Hex(serial.clone()),
            reason,
            text,
            uid.as_deref(),
        )
        .await;
    let outcome = outcome_of(result);
    match &outcome {
        Outcome::Revoked => {
            let when = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let note = format!("{when} serial {serial}: {text}");
            match annotate(ctx, cr, &note).await {
                // cert-manager may have deleted a superseded request meanwhile: the certificate
                // is revoked all the same, and the Event below (which outlives it) says so.
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Outcome::Failed(format!("revoked, but recording it failed: {e}")),
            }
            let message = format!("Revoked at step-ca (serial {serial}): {text}");
            ctx.event(cr, EventType::Normal, "Revoked", message, "Revoke")
                .await;
        }
        Outcome::Unsupported => {
            let message = "step-ca cannot revoke: it has no database (HTTP 501). Give step-ca a database (\"db\" in ca.json), or remove spec.revocation from the issuer and the certmanager.step.sm/revoke label".to_string();
            ctx.event(
                cr,
                EventType::Warning,
                "RevocationUnsupported",
                message,
                "Revoke",
            )
            .await;
        }
        Outcome::Failed(why) => {
            let message = failure_message(&serial, why, after);
            ctx.event(
                cr,
                EventType::Warning,
                "RevocationFailed",
                message,
                "Revoke",
            )
            .await;
        }
    }
    outcome
}

/// What step-ca's answer to a revocation means: "already revoked" is the goal reached, and 501
/// (no database) will not change by retrying.
fn outcome_of(result: Result<(), crate::step::Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Revoked,
        Err(e) if e.is_already_revoked() => Outcome::Revoked,
        Err(e) if e.is_not_implemented() => Outcome::Unsupported,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn leaf_serial(cr: &CertificateRequest) -> Result<String, String> {
    let pem = cr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .ok_or("the request holds no certificate")?;
    let chain = crate::pki::chain::parse_pem_chain(&pem.0)
        .map_err(|e| format!("its certificate does not parse: {e}"))?;
    chain
        .first()
        .map(|leaf| leaf.serial_hex.clone())
        .ok_or_else(|| "its certificate chain is empty".into())
}

async fn annotate(ctx: &Context, cr: &CertificateRequest, note: &str) -> Result<(), kube::Error> {
    let api = Api::<CertificateRequest>::namespaced(
        ctx.client.clone(),
        &cr.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_REVOKED: note}}});
    api.patch(
        &cr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// The requests `issued` supersedes, read before its status is written: cert-manager deletes
/// them (`revisionHistoryLimit`) soon after it sees the new certificate, so a list made later
/// could miss them.
pub async fn superseded_by(ctx: &Context, issued: &CertificateRequest) -> Vec<CertificateRequest> {
    let api = Api::<CertificateRequest>::namespaced(
        ctx.client.clone(),
        &issued.namespace().unwrap_or_default(),
    );
    match api.list(&ListParams::default()).await {
        Ok(list) => plan::superseded(issued, &list.items)
            .into_iter()
            .cloned()
            .collect(),
        Err(e) => {
            tracing::warn!(request = %issued.name_any(), error = %e, "Could not list the requests this one supersedes; none revoked");
            Vec::new()
        }
    }
}

/// How often a superseded certificate's revocation is tried while step-ca fails, and how many
/// times: nothing requeues it (the request may be deleted already), so this task retries itself
/// on an interval clock.
const SUPERSEDED_RETRY_EVERY: Duration = Duration::from_secs(30);
const SUPERSEDED_ATTEMPTS: u32 = 3;

/// Revokes `old`, the requests that `issued_name` superseded; those step-ca fails to revoke are
/// tried again every [`SUPERSEDED_RETRY_EVERY`], [`SUPERSEDED_ATTEMPTS`] times in all.
pub async fn revoke_superseded(
    ctx: Arc<Context>,
    signer: Signer,
    issued_name: String,
    old: Vec<CertificateRequest>,
) {
    let text = format!("superseded by CertificateRequest {issued_name}");
    let (ctx, signer, text) = (&ctx, &signer, text.as_str());
    retry_failed(
        old,
        SUPERSEDED_RETRY_EVERY,
        SUPERSEDED_ATTEMPTS,
        |cr: CertificateRequest, after, attempt| async move {
            let outcome = revoke(ctx, signer, &cr, RevocationReason::Superseded, text, after).await;
            tracing::info!(request = %cr.name_any(), outcome = ?outcome, attempt, "Superseded certificate");
            outcome
        },
    )
    .await;
}

/// Tries `revoke_one` on each of `pending` at once, then again every `every` on those that
/// failed, `attempts` times in all; the last attempt is told it is the last. A CA that cannot
/// revoke at all (no database) ends it: no other request will fare better, now or later.
async fn retry_failed<T: Clone, F, Fut>(
    mut pending: Vec<T>,
    every: Duration,
    attempts: u32,
    mut revoke_one: F,
) where
    F: FnMut(T, AfterFailure, u32) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let mut clock = tokio::time::interval(every);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for attempt in 1..=attempts {
        // The first tick is at once.
        clock.tick().await;
        let after = if attempt == attempts {
            AfterFailure::GiveUp
        } else {
            AfterFailure::RetryLater
        };
        let mut failed = Vec::new();
        for item in pending {
            match revoke_one(item.clone(), after, attempt).await {
                Outcome::Unsupported => return,
                Outcome::Failed(_) => failed.push(item),
                Outcome::Revoked => {}
            }
        }
        if failed.is_empty() {
            return;
        }
        pending = failed;
    }
}

struct RevokeCtx {
    ctx: Arc<Context>,
}

/// Revokes the certificates of our CertificateRequests labelled `certmanager.step.sm/revoke`
/// until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    health: WatchHealth,
    scope: crate::controller::scope::Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let cfg = watcher::Config::default().labels(&format!("{LABEL_REVOKE}=true"));
    let (store, writer) = kube::runtime::reflector::store::<CertificateRequest>();
    let api = match scope.namespace() {
        Some(ns) => Api::<CertificateRequest>::namespaced(ctx.watch_client.clone(), ns),
        None => Api::<CertificateRequest>::all(ctx.watch_client.clone()),
    };
    let asked = health
        .observe(
            scope.watch_name(WATCH_REVOCATIONS),
            "CertificateRequests labelled certmanager.step.sm/revoke",
            watcher(api, cfg).default_backoff(),
        )
        .modify(|r: &mut CertificateRequest| r.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects();
    let metrics = ctx.metrics.clone();
    Controller::for_stream(asked, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(RevokeCtx { ctx }))
        .for_each(|outcome| {
            report_outcome("Revocation", &metrics, outcome);
            futures::future::ready(())
        })
        .await;
}

async fn reconcile(cr: Arc<CertificateRequest>, c: Arc<RevokeCtx>) -> Result<Action, RevokeError> {
    let namespace = cr.namespace().unwrap_or_default();
    let Some(key) = decision::owning_issuer(&cr.spec.issuer_ref, &namespace) else {
        return Ok(Action::await_change());
    };
    if !plan::revocation_asked(&cr)
        || !plan::revocable(&cr)
        || cr.meta().deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let signer = match signer_of(&c.ctx, &key).await {
        Ok(s) => s,
        Err(why) => {
            let message = format!("Cannot revoke yet: {why}");
            c.ctx
                .event(
                    &*cr,
                    EventType::Warning,
                    "RevocationFailed",
                    message,
                    "Revoke",
                )
                .await;
            return Err(RevokeError(why));
        }
    };
    let (reason, text) = plan::asked_reason(&cr);
    match revoke(
        &c.ctx,
        &signer,
        &cr,
        reason,
        &text,
        AfterFailure::RetryLater,
    )
    .await
    {
        Outcome::Revoked | Outcome::Unsupported => Ok(Action::await_change()),
        Outcome::Failed(why) => Err(RevokeError(why)),
    }
}

fn error_policy(_cr: Arc<CertificateRequest>, _e: &RevokeError, _c: Arc<RevokeCtx>) -> Action {
    Action::requeue(Duration::from_secs(30))
}

/// The signer of an issuer read from the API (with its caBundle).
async fn signer_of(ctx: &Context, key: &IssuerKey) -> Result<Signer, String> {
    async fn of<K: IssuerObject>(
        ctx: &Context,
        key: &IssuerKey,
        ns: Option<&str>,
    ) -> Result<Signer, String> {
        let issuer = K::api(ctx.client.clone(), ns)
            .get(key.name())
            .await
            .map_err(|e| format!("reading {key}: {e}"))?;
        ctx.issuers
            .signer_for(&issuer)
            .await
            .map(|(s, _)| s)
            .map_err(|e| format!("{key} is not usable: {}", e.message_for(K::AUDIENCE)))
    }
    match key {
        IssuerKey::Namespaced { namespace, .. } => {
            of::<StepIssuer>(ctx, key, Some(namespace)).await
        }
        IssuerKey::Cluster { .. } => of::<StepClusterIssuer>(ctx, key, None).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ca_answers_are_read_for_what_retrying_can_change() {
        let status = |status: u16, message: &str| {
            Err(crate::step::Error::Status {
                status,
                message: message.into(),
                action: "revoke",
            })
        };
        assert_eq!(outcome_of(Ok(())), Outcome::Revoked);
        assert_eq!(
            outcome_of(status(
                400,
                "certificate with serial number '1' is already revoked"
            )),
            Outcome::Revoked
        );
        assert_eq!(
            outcome_of(status(501, "not implemented")),
            Outcome::Unsupported
        );
        assert!(matches!(
            outcome_of(status(400, "bad serial")),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            outcome_of(status(503, "down")),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn a_failed_revocation_says_whether_it_is_retried_and_else_what_to_do() {
        let later = failure_message("0a", "503 down", AfterFailure::RetryLater);
        assert!(later.contains("will retry: 503 down"), "{later}");
        let given_up = failure_message("0a", "503 down", AfterFailure::GiveUp);
        assert!(!given_up.contains("will retry"), "{given_up}");
        for fix in [
            "certmanager.step.sm/revoke=true",
            "step ca revoke",
            "serial 0a",
        ] {
            assert!(given_up.contains(fix), "{given_up}");
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use std::sync::Mutex;

    /// Each call: (item, attempt, last attempt?, seconds since the start).
    type Calls = Arc<Mutex<Vec<(&'static str, u32, bool, u64)>>>;

    /// Runs [`retry_failed`] over `items` with outcomes scripted per (item, attempt).
    async fn run(
        items: Vec<&'static str>,
        script: impl Fn(&str, u32) -> Outcome,
    ) -> Vec<(&'static str, u32, bool, u64)> {
        let calls: Calls = Default::default();
        let start = tokio::time::Instant::now();
        let seen = calls.clone();
        retry_failed(
            items,
            Duration::from_secs(30),
            3,
            |item: &'static str, after, attempt| {
                let at = start.elapsed().as_secs();
                let last = after == AfterFailure::GiveUp;
                seen.lock().unwrap().push((item, attempt, last, at));
                std::future::ready(script(item, attempt))
            },
        )
        .await;
        calls.lock().unwrap().clone()
    }

    fn failed() -> Outcome {
        Outcome::Failed("step-ca answered 500".into())
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_failed_are_retried_every_30s_three_times_in_all() {
        let calls = run(vec!["a", "b"], |item, _| match item {
            "a" => Outcome::Revoked,
            _ => failed(),
        })
        .await;
        assert_eq!(
            calls,
            [
                ("a", 1, false, 0),
                ("b", 1, false, 0),
                ("b", 2, false, 30),
                ("b", 3, true, 60),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_success_ends_the_retries() {
        let calls = run(vec!["a"], |_, attempt| match attempt {
            1 => failed(),
            _ => Outcome::Revoked,
        })
        .await;
        assert_eq!(calls, [("a", 1, false, 0), ("a", 2, false, 30)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ca_without_a_database_ends_it_at_once() {
        let calls = run(vec!["a", "b", "c"], |item, _| match item {
            "a" => failed(),
            _ => Outcome::Unsupported,
        })
        .await;
        assert_eq!(calls, [("a", 1, false, 0), ("b", 1, false, 0)]);
    }
}
