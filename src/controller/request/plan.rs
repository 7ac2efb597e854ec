//! What a reconcile of a CertificateRequest does, as data: pure functions of what the request's
//! status shows, its issuer's state, what this process remembers and the clock, returning the
//! status change and its effects (an Event, a metric, what to remember, when to look again).
//! The executor (`reconcile.rs`) only carries a [`Plan`] out, so every path of the request
//! controller is table-tested here.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::cert_manager::{CONDITION_READY, CertificateRequestStatus, RequestCondition, reason};
use crate::controller::decision::{self, Gate, IssuerState, Retry, RetryBudget};
use crate::crd::condition::bounded_message;
use crate::issuer::IssuerKey;

use super::failure::{REASON_CA_REJECTED_TOKEN, SignFailure};

/// The reasons of the Events the request controller publishes. The waiting-for-issuer reasons
/// come from [`decision::issuer_gate`].
pub mod event {
    pub const ISSUED: &str = "Issued";
    /// Issued, but not exactly as requested (see [`super::Signed::notes`]).
    pub const ISSUED_WITH_CHANGES: &str = "IssuedWithChanges";
    pub const DENIED: &str = "Denied";
    pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";
    pub const PERMANENT_ERROR: &str = "PermanentError";
    pub const RETRYABLE_ERROR: &str = "RetryableError";
}

/// `certificate_requests{result}` of a request whose CSR or spec is unusable; the other results
/// are `Issued`, `Denied` and the failure reasons.
pub const RESULT_INVALID_REQUEST: &str = "InvalidRequest";
/// The condition cert-manager reads to tell an unusable request from a failed one.
pub const CONDITION_INVALID_REQUEST: &str = "InvalidRequest";

const DENIED_MESSAGE: &str = "The CertificateRequest was denied by an approval controller";
const AWAITING_APPROVAL_MESSAGE: &str = "Not signing CertificateRequest until it is Approved";

/// What step-ca signed, checked, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub certificate: String,
    pub ca: String,
    pub message: String,
    /// What differs from the request without weakening it (a capped lifetime, dropped subject
    /// details): told in a Warning Event instead of the Normal one.
    pub notes: Vec<String>,
}

/// The request's status after this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusChange {
    Issued(Signed),
    /// Ready=False/Failed with failureTime: final.
    Failed(String),
    /// Failed, plus `InvalidRequest=True`: final; only a new request can succeed.
    Invalid(String),
    /// Ready=False/Denied with failureTime: final, never signed.
    Denied(String),
    /// Ready=False/Pending: not final.
    Pending(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    pub action: &'static str,
}

/// What this process must remember afterwards (see `memory.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remember {
    Nothing,
    /// Finished here: never sign again, even before the cache shows it.
    Finish,
    /// The API shows it finished: the guards can go.
    Release,
    ToldApproval,
    /// One more failed attempt; none before this delay.
    Failure(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    AwaitChange,
    Requeue(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub status: Option<StatusChange>,
    pub event: Option<Note>,
    /// The `certificate_requests{result}` label to count, if this reconcile had a result.
    pub count: Option<&'static str>,
    pub remember: Remember,
    pub next: Next,
    /// step-ca refused the issuer's token: the issuer is re-checked, with this message.
    pub issuer_auth_failure: Option<String>,
}

impl Plan {
    fn wait(next: Next) -> Self {
        Plan {
            status: None,
            event: None,
            count: None,
            remember: Remember::Nothing,
            next,
            issuer_auth_failure: None,
        }
    }

    /// A final status, told in a warning Event, counted under `count`.
    fn finish(
        status: StatusChange,
        count: &'static str,
        reason: &'static str,
        action: &'static str,
    ) -> Self {
        let message = match &status {
            StatusChange::Issued(s) => s.message.clone(),
            StatusChange::Failed(m)
            | StatusChange::Invalid(m)
            | StatusChange::Denied(m)
            | StatusChange::Pending(m) => m.clone(),
        };
        Plan {
            event: Some(Note {
                warning: !matches!(status, StatusChange::Issued(_)),
                reason,
                message,
                action,
            }),
            status: Some(status),
            count: Some(count),
            remember: Remember::Finish,
            next: Next::AwaitChange,
            issuer_auth_failure: None,
        }
    }
}

/// What a reconcile sees before it may sign.
pub struct Seen<'a> {
    pub status: Option<&'a CertificateRequestStatus>,
    pub key: &'a IssuerKey,
    pub issuer: &'a IssuerState,
    pub told_approval: bool,
    pub created: Option<Timestamp>,
    pub now: Timestamp,
}

/// The first half of a reconcile: sign, or what to do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Sign,
    /// Boxed: a plan is large, and most reconciles sign.
    Do(Box<Plan>),
}

pub fn before_signing(seen: &Seen) -> Step {
    let plan = match decision::gate(seen.status) {
        // The cache has caught up with our write: the guard is no longer needed.
        Gate::Done => Plan {
            remember: Remember::Release,
            ..Plan::wait(Next::AwaitChange)
        },
        Gate::Deny => Plan::finish(
            StatusChange::Denied(DENIED_MESSAGE.into()),
            reason::DENIED,
            event::DENIED,
            "Deny",
        ),
        Gate::AwaitApproval => match decision::approval_event_delay(seen.created, seen.now) {
            Some(wait) => Plan::wait(Next::Requeue(wait)),
            None if seen.told_approval => Plan::wait(Next::AwaitChange),
            None => Plan {
                event: Some(Note {
                    warning: false,
                    reason: event::WAITING_FOR_APPROVAL,
                    message: AWAITING_APPROVAL_MESSAGE.into(),
                    action: "Wait",
                }),
                remember: Remember::ToldApproval,
                ..Plan::wait(Next::AwaitChange)
            },
        },
        Gate::Open => match decision::issuer_gate(seen.key, seen.issuer) {
            None => return Step::Sign,
            // The issuer watch re-queues this request when the issuer turns Ready.
            Some((reason, message)) => {
                pending(seen.status, message, reason, false, Next::AwaitChange)
            }
        },
    };
    Step::Do(Box::new(plan))
}

/// Ready=False/Pending with an Event, unless the status already says exactly that: our own
/// write re-triggers the request, and must not be answered by another write.
fn pending(
    status: Option<&CertificateRequestStatus>,
    message: String,
    reason: &'static str,
    warning: bool,
    next: Next,
) -> Plan {
    if pending_message(status) == Some(message.as_str()) {
        return Plan::wait(next);
    }
    Plan {
        event: Some(Note {
            warning,
            reason,
            message: message.clone(),
            action: if warning { "Sign" } else { "Wait" },
        }),
        status: Some(StatusChange::Pending(message)),
        ..Plan::wait(next)
    }
}

/// The message of our Pending condition, if the request has one.
pub fn pending_message(status: Option<&CertificateRequestStatus>) -> Option<&str> {
    status
        .and_then(|s| s.condition(CONDITION_READY))
        .filter(|c| c.reason.as_deref() == Some(reason::PENDING))
        .and_then(|c| c.message.as_deref())
}

/// What a reconcile knows after a signing attempt.
pub struct Attempt<'a> {
    /// The status as just read from the API.
    pub status: Option<&'a CertificateRequestStatus>,
    /// Failed attempts before this one.
    pub attempts: u32,
    pub created: Timestamp,
    pub now: Timestamp,
    pub budget: RetryBudget,
}

/// The second half: what the outcome of signing makes of the request.
pub fn after_signing(result: Result<Signed, SignFailure>, attempt: &Attempt) -> Plan {
    match result {
        Ok(signed) if !signed.notes.is_empty() => {
            let mut plan = Plan::finish(
                StatusChange::Issued(signed.clone()),
                reason::ISSUED,
                event::ISSUED_WITH_CHANGES,
                "Sign",
            );
            plan.event = Some(Note {
                warning: true,
                reason: event::ISSUED_WITH_CHANGES,
                message: format!("{}; but {}", signed.message, signed.notes.join("; ")),
                action: "Sign",
            });
            plan
        }
        Ok(signed) => Plan::finish(
            StatusChange::Issued(signed),
            reason::ISSUED,
            event::ISSUED,
            "Sign",
        ),
        Err(SignFailure::Invalid(message)) => Plan::finish(
            StatusChange::Invalid(message),
            RESULT_INVALID_REQUEST,
            event::PERMANENT_ERROR,
            "Sign",
        ),
        Err(SignFailure::Permanent { reason, message }) => Plan::finish(
            StatusChange::Failed(message),
            reason,
            event::PERMANENT_ERROR,
            "Sign",
        ),
        Err(SignFailure::Retryable { reason, message }) => retry(reason, message, attempt),
        Err(SignFailure::Auth(message)) => Plan {
            issuer_auth_failure: Some(message.clone()),
            ..retry(
                REASON_CA_REJECTED_TOKEN,
                format!("step-ca refused the signing token: {message}"),
                attempt,
            )
        },
    }
}

/// Pending with a backoff, until `--max-retry-duration` from the request's creation is spent.
fn retry(why: &'static str, message: String, attempt: &Attempt) -> Plan {
    match attempt
        .budget
        .retry(attempt.created, attempt.now, attempt.attempts)
    {
        Retry::GiveUp => Plan::finish(
            StatusChange::Failed(format!(
                "Failed to sign for longer than --max-retry-duration ({}s) since the request was created; last error: {message}",
                attempt.budget.max.as_secs()
            )),
            why,
            event::PERMANENT_ERROR,
            "Sign",
        ),
        Retry::After(delay) => {
            let message = format!(
                "Failed to sign, will retry in {}s: {message}",
                delay.as_secs().max(1)
            );
            Plan {
                count: Some(why),
                remember: Remember::Failure(delay),
                ..pending(
                    attempt.status,
                    message,
                    event::RETRYABLE_ERROR,
                    true,
                    Next::Requeue(delay),
                )
            }
        }
    }
}

/// The status to apply for `change`. Only our own conditions are sent: an approver's are not ours
/// to write, and server-side apply leaves them alone.
pub fn status_for(
    change: &StatusChange,
    previous: Option<&CertificateRequestStatus>,
    now: Timestamp,
) -> CertificateRequestStatus {
    let ready = |status: &str, why: &str, message: &str| {
        ready_condition(previous, status, why, message, now)
    };
    let failed_at = Some(Time(now));
    match change {
        StatusChange::Issued(signed) => CertificateRequestStatus {
            conditions: vec![ready("True", reason::ISSUED, &signed.message)],
            certificate: Some(k8s_openapi::ByteString(
                signed.certificate.clone().into_bytes(),
            )),
            ca: Some(k8s_openapi::ByteString(signed.ca.clone().into_bytes())),
            failure_time: None,
        },
        StatusChange::Failed(message) => CertificateRequestStatus {
            conditions: vec![ready("False", reason::FAILED, message)],
            failure_time: failed_at,
            ..Default::default()
        },
        StatusChange::Invalid(message) => CertificateRequestStatus {
            conditions: vec![
                ready("False", reason::FAILED, message),
                RequestCondition {
                    type_: CONDITION_INVALID_REQUEST.into(),
                    status: "True".into(),
                    reason: Some(CONDITION_INVALID_REQUEST.into()),
                    message: Some(bounded_message(message)),
                    last_transition_time: Some(Time(now)),
                },
            ],
            failure_time: failed_at,
            ..Default::default()
        },
        StatusChange::Denied(message) => CertificateRequestStatus {
            conditions: vec![ready("False", reason::DENIED, message)],
            failure_time: failed_at,
            ..Default::default()
        },
        StatusChange::Pending(message) => CertificateRequestStatus {
            conditions: vec![ready("False", reason::PENDING, message)],
            ..Default::default()
        },
    }
}

/// Our Ready condition; its transition time is kept while its status holds, as cert-manager does.
fn ready_condition(
    previous: Option<&CertificateRequestStatus>,
    status: &str,
    why: &str,
    message: &str,
    now: Timestamp,
) -> RequestCondition {
    let since = previous
        .and_then(|s| s.condition(CONDITION_READY))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    RequestCondition {
        type_: CONDITION_READY.into(),
        status: status.into(),
        reason: Some(why.into()),
        message: Some(bounded_message(message)),
        last_transition_time: Some(since.unwrap_or(Time(now))),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
