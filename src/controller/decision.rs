//! What to do with a CertificateRequest: pure functions of its state, its issuer's state and the
//! clock, table-tested. The reconciler only carries the decisions out.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::cert_manager::{
    CONDITION_APPROVED, CONDITION_DENIED, CONDITION_READY, CertificateRequestStatus, IssuerRef,
    reason,
};
use crate::crd::GROUP;
use crate::crd::condition::Readiness;
pub use crate::issuer::IssuerKey;

/// A CertificateRequest is ours only when its `issuerRef.group` is exactly ours and its kind is
/// one of our two kinds. An empty group is cert-manager's own (`cert-manager.io`), never ours.
pub fn owning_issuer(issuer_ref: &IssuerRef, request_namespace: &str) -> Option<IssuerKey> {
    if issuer_ref.group.as_deref() != Some(GROUP) {
        return None;
    }
    match issuer_ref.kind.as_deref() {
        Some("StepIssuer") => Some(IssuerKey::Namespaced {
            namespace: request_namespace.to_string(),
            name: issuer_ref.name.clone(),
        }),
        Some("StepClusterIssuer") => Some(IssuerKey::Cluster {
            name: issuer_ref.name.clone(),
        }),
        _ => None,
    }
}

/// The state of the issuer a request names, as far as signing is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerState {
    Missing,
    Known(Readiness),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do: already Issued, Failed or Denied.
    Done,
    /// Denied by an approver: Ready=False/Denied with failureTime; never signed.
    Deny,
    /// Neither approved nor denied yet: tell the user (see `approval_event_delay`), write
    /// nothing.
    AwaitApproval,
    /// The issuer cannot sign yet: Ready=False/Pending with this message; re-checked when the
    /// issuer changes.
    WaitForIssuer {
        event_reason: &'static str,
        message: String,
    },
    Sign,
}

/// The request's own gates, in order: terminal → denied → approval. Terminal comes first so that
/// a request we already finished is never touched again, even if an approver later adds a
/// condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Done,
    Deny,
    AwaitApproval,
    /// Approved and not finished: whether to sign now depends on the issuer.
    Open,
}

pub fn gate(status: Option<&CertificateRequestStatus>) -> Gate {
    let empty = CertificateRequestStatus::default();
    let status = status.unwrap_or(&empty);
    if is_finished(Some(status)) {
        Gate::Done
    } else if status.has_true(CONDITION_DENIED) {
        Gate::Deny
    } else if !status.has_true(CONDITION_APPROVED) {
        Gate::AwaitApproval
    } else {
        Gate::Open
    }
}

/// The issuer's gate for an open request: `None` when it can sign now, else the Pending message
/// and Event reason to wait with.
pub fn issuer_gate(key: &IssuerKey, issuer: &IssuerState) -> Option<(&'static str, String)> {
    match issuer {
        IssuerState::Missing => Some((
            "WaitingForIssuerExist",
            format!("{key} does not exist. Waiting for it to be created."),
        )),
        IssuerState::Known(Readiness::NotChecked) => Some((
            "WaitingForIssuerReady",
            format!("{key} has not been checked yet. Waiting for it to become Ready."),
        )),
        IssuerState::Known(Readiness::NotReady { reason, message }) => Some((
            "WaitingForIssuerReady",
            match key {
                // The request's namespace owns this issuer: the whole story helps.
                IssuerKey::Namespaced { .. } => format!(
                    "{key} is not Ready ({reason}: {message}). Waiting for it to become Ready."
                ),
                // A cluster issuer's message names its password Secret, the CA's URL and the CA's
                // errors: not the business of every namespace that uses it (security review L6).
                IssuerKey::Cluster { .. } => format!(
                    "{key} is not Ready ({reason}); its status tells the cluster's administrators \
                     why. Waiting for it to become Ready."
                ),
            },
        )),
        IssuerState::Known(Readiness::Ready) => None,
    }
}

/// Both gates: the request's, then its issuer's.
///
/// There is no separate `Ready=Unknown/Initializing` pass (issuer-lib writes one before anything
/// else): it would cost every request one more status write, one more watch event to every
/// CertificateRequest watcher and one more reconcile, for a condition that the next write
/// (Issued, Pending or Failed) replaces milliseconds later. cert-manager waits on any reason.
pub fn decide(
    status: Option<&CertificateRequestStatus>,
    key: &IssuerKey,
    issuer: &IssuerState,
) -> Decision {
    match gate(status) {
        Gate::Done => Decision::Done,
        Gate::Deny => Decision::Deny,
        Gate::AwaitApproval => Decision::AwaitApproval,
        Gate::Open => match issuer_gate(key, issuer) {
            Some((event_reason, message)) => Decision::WaitForIssuer {
                event_reason,
                message,
            },
            None => Decision::Sign,
        },
    }
}

/// Terminal: `Ready=True`, `Ready=False` with reason Failed or Denied, or a certificate in the
/// status. Nothing ever changes a finished request again (cert-manager's contract), so the
/// controller neither reconciles nor caches it.
pub fn is_finished(status: Option<&CertificateRequestStatus>) -> bool {
    let Some(status) = status else {
        return false;
    };
    let terminal = match status.condition(CONDITION_READY) {
        Some(c) if c.status == "True" => true,
        Some(c) => matches!(
            c.reason.as_deref(),
            Some(reason::FAILED) | Some(reason::DENIED)
        ),
        None => false,
    };
    terminal || status.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
}

/// How long a request may wait for approval before the `WaitingForApproval` Event is worth
/// emitting. Approvers (cert-manager's own, approver-policy) usually act within milliseconds of the
/// create; an Event for every request that was approved a moment later would be noise, and an
/// apiserver write per request.
pub const APPROVAL_GRACE: Duration = Duration::from_secs(5);

/// `None`: emit `WaitingForApproval` now. `Some(d)`: look again in `d` (an approval re-triggers
/// the request sooner).
pub fn approval_event_delay(created: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    // Without a creation time (never from a real apiserver) there is nothing to wait for.
    let age = now.duration_since(created?);
    let grace = k8s_openapi::jiff::SignedDuration::try_from(APPROVAL_GRACE).ok()?;
    if age >= grace {
        return None;
    }
    // A creation time in the future (clock skew) waits at most one grace period.
    Some(
        Duration::try_from(grace - age)
            .unwrap_or(APPROVAL_GRACE)
            .min(APPROVAL_GRACE),
    )
}

/// How a failed signing attempt ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Pending; try again after this delay.
    After(Duration),
    /// The retry budget from the request's creation is spent: Failed.
    GiveUp,
}

/// The wait after `attempts` failed attempts: 1 s, doubling, capped at 60 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6)).min(Duration::from_secs(60))
}

/// What a (re)started controller grants every open request before it fails one: at first, all
/// it knows of an issuer is the status the previous leader wrote, which may be stale (step-ca
/// back while nobody checked), and its own check takes a few seconds.
pub const RESTART_GRACE: Duration = Duration::from_secs(60);

/// How long retryable errors are retried before a request is Failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    /// `--max-retry-duration`, from the request's creation.
    pub max: Duration,
    /// When this controller began to act (after it took the lease).
    pub acting_since: Timestamp,
}

impl RetryBudget {
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            acting_since: Timestamp::now(),
        }
    }

    /// Retryable errors back off ([`backoff`]) until `max` after the request's creation, and
    /// never end a request before this controller has acted for [`RESTART_GRACE`] (or `max`, if
    /// shorter): without that, a controller started after an outage failed the requests the
    /// outage had aged on its first attempt, from the stale status of their issuer.
    pub fn retry(&self, created: Timestamp, now: Timestamp, attempts: u32) -> Retry {
        let elapsed = |since: Timestamp| now.duration_since(since).unsigned_abs();
        let left = self.max.saturating_sub(elapsed(created)).max(
            self.max
                .min(RESTART_GRACE)
                .saturating_sub(elapsed(self.acting_since)),
        );
        if left.is_zero() {
            return Retry::GiveUp;
        }
        // Never sleep past the deadline: the last attempt happens right at it.
        Retry::After(backoff(attempts).min(left.max(Duration::from_millis(100))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_manager::RequestCondition;
    use k8s_openapi::ByteString;

    fn cond(type_: &str, status: &str, reason: Option<&str>) -> RequestCondition {
        RequestCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.map(Into::into),
            ..Default::default()
        }
    }

    fn status(conds: &[RequestCondition]) -> CertificateRequestStatus {
        CertificateRequestStatus {
            conditions: conds.to_vec(),
            ..Default::default()
        }
    }

    fn iref(group: Option<&str>, kind: Option<&str>) -> IssuerRef {
        IssuerRef {
            name: "ca".into(),
            kind: kind.map(Into::into),
            group: group.map(Into::into),
        }
    }

    #[test]
    fn ownership_is_exact() {
        let ns = IssuerKey::Namespaced {
            namespace: "team".into(),
            name: "ca".into(),
        };
        let cl = IssuerKey::Cluster { name: "ca".into() };
        let cases = [
            (iref(Some(GROUP), Some("StepIssuer")), Some(ns)),
            (iref(Some(GROUP), Some("StepClusterIssuer")), Some(cl)),
            (iref(None, Some("StepIssuer")), None),
            (iref(Some(""), Some("StepIssuer")), None),
            (iref(Some("cert-manager.io"), Some("StepIssuer")), None),
            (iref(Some(GROUP), Some("Issuer")), None),
            (iref(Some(GROUP), Some("stepissuer")), None),
            (iref(Some(GROUP), None), None),
            (
                iref(Some("certmanager.step.sm.evil"), Some("StepIssuer")),
                None,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(owning_issuer(&r, "team"), want, "{r:?}");
        }
    }

    #[test]
    fn gates_in_order() {
        let key = IssuerKey::Cluster { name: "ca".into() };
        let ready = IssuerState::Known(Readiness::Ready);
        let approved = cond(CONDITION_APPROVED, "True", Some("cert-manager.io"));
        let denied = cond(CONDITION_DENIED, "True", Some("policy"));
        let pending = cond(CONDITION_READY, "False", Some(reason::PENDING));
        let init = cond(CONDITION_READY, "Unknown", Some("Initializing"));
        let issued = cond(CONDITION_READY, "True", Some(reason::ISSUED));
        let failed = cond(CONDITION_READY, "False", Some(reason::FAILED));
        let was_denied = cond(CONDITION_READY, "False", Some(reason::DENIED));
        let not_ready = IssuerState::Known(Readiness::NotReady {
            reason: "WrongPassword".into(),
            message: "fix the Secret".into(),
        });

        let cases: Vec<(Vec<RequestCondition>, IssuerState, Decision)> = vec![
            (vec![], ready.clone(), Decision::AwaitApproval),
            (vec![denied.clone()], ready.clone(), Decision::Deny),
            // A denial wins over an approval and over a missing issuer.
            (vec![approved.clone(), denied.clone()], ready.clone(), Decision::Deny),
            (vec![denied.clone()], IssuerState::Missing, Decision::Deny),
            (vec![denied.clone(), was_denied.clone()], ready.clone(), Decision::Done),
            // No Initializing pass: an approved request for a Ready issuer is signed at once.
            (vec![approved.clone()], ready.clone(), Decision::Sign),
            (vec![approved.clone(), init.clone()], ready.clone(), Decision::Sign),
            (
                vec![approved.clone()],
                IssuerState::Missing,
                Decision::WaitForIssuer {
                    event_reason: "WaitingForIssuerExist",
                    message: "StepClusterIssuer ca does not exist. Waiting for it to be created."
                        .into(),
                },
            ),
            (vec![approved.clone(), pending.clone()], ready.clone(), Decision::Sign),
            (vec![approved.clone(), issued.clone()], ready.clone(), Decision::Done),
            (vec![approved.clone(), failed.clone()], ready.clone(), Decision::Done),
            // Terminal requests stay untouched even when denied afterwards.
            (vec![approved.clone(), issued.clone(), denied.clone()], ready.clone(), Decision::Done),
            (
                vec![approved.clone(), pending.clone()],
                IssuerState::Missing,
                Decision::WaitForIssuer {
                    event_reason: "WaitingForIssuerExist",
                    message: "StepClusterIssuer ca does not exist. Waiting for it to be created."
                        .into(),
                },
            ),
            (
                vec![approved.clone(), pending.clone()],
                not_ready,
                Decision::WaitForIssuer {
                    event_reason: "WaitingForIssuerReady",
                    message: "StepClusterIssuer ca is not Ready (WrongPassword); its status tells \
                              the cluster's administrators why. Waiting for it to become Ready."
                        .into(),
                },
            ),
            (
                vec![approved.clone(), pending.clone()],
                IssuerState::Known(Readiness::NotChecked),
                Decision::WaitForIssuer {
                    event_reason: "WaitingForIssuerReady",
                    message: "StepClusterIssuer ca has not been checked yet. Waiting for it to become Ready.".into(),
                },
            ),
        ];
        for (conds, issuer, want) in cases {
            assert_eq!(
                decide(Some(&status(&conds)), &key, &issuer),
                want,
                "{conds:?} {issuer:?}"
            );
        }
        assert_eq!(decide(None, &key, &ready), Decision::AwaitApproval);
    }

    /// Security review L6: a tenant's request waiting for a StepClusterIssuer learns the reason,
    /// never the message (Secret names, URLs, CA errors); for its own StepIssuer it gets all.
    #[test]
    fn a_waiting_request_sees_only_what_its_namespace_may() {
        let approved = status(&[RequestCondition {
            type_: CONDITION_APPROVED.into(),
            status: "True".into(),
            reason: Some("cert-manager.io".into()),
            message: None,
            last_transition_time: None,
        }]);
        let secret_detail = "Secret step-system/ca-password was not found";
        let not_ready = IssuerState::Known(Readiness::NotReady {
            reason: "SecretNotFound".into(),
            message: secret_detail.into(),
        });
        let message = |key: &IssuerKey| match decide(Some(&approved), key, &not_ready) {
            Decision::WaitForIssuer { message, .. } => message,
            other => panic!("{other:?}"),
        };
        let cluster = message(&IssuerKey::Cluster { name: "ca".into() });
        assert!(cluster.contains("(SecretNotFound)"), "{cluster}");
        assert!(
            !cluster.contains("step-system") && !cluster.contains("ca-password"),
            "{cluster}"
        );
        let own = message(&IssuerKey::Namespaced {
            namespace: "team".into(),
            name: "ca".into(),
        });
        assert!(own.contains(secret_detail), "{own}");
    }

    #[test]
    fn a_certificate_in_status_is_final() {
        let key = IssuerKey::Cluster { name: "ca".into() };
        let mut s = status(&[cond(CONDITION_APPROVED, "True", None)]);
        s.certificate = Some(ByteString(b"-----BEGIN CERTIFICATE-----".to_vec()));
        assert_eq!(
            decide(Some(&s), &key, &IssuerState::Known(Readiness::Ready)),
            Decision::Done
        );
    }

    #[test]
    fn approval_event_waits_out_the_grace_period() {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let at = |ms: i64| Timestamp::from_millisecond(1_000_000_000 + ms).unwrap();
        let cases = [
            (Some(t0), at(0), Some(Duration::from_secs(5))),
            (Some(t0), at(1_500), Some(Duration::from_millis(3_500))),
            (Some(t0), at(4_999), Some(Duration::from_millis(1))),
            (Some(t0), at(5_000), None),
            (Some(t0), at(600_000), None),
            // Created "in the future" (skewed clock): at most one grace period.
            (Some(t0), at(-60_000), Some(APPROVAL_GRACE)),
            (None, at(0), None),
        ];
        for (created, now, want) in cases {
            assert_eq!(
                approval_event_delay(created, now),
                want,
                "{created:?} {now:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_a_second_up_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn retry_backs_off_until_the_budget_is_spent() {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_000_000 + s).unwrap();
        // A controller acting since long before the request.
        let budget = RetryBudget {
            max: Duration::from_secs(300),
            acting_since: at(-3600),
        };
        let retry = |now, attempts| budget.retry(t0, now, attempts);
        assert_eq!(retry(at(1), 0), Retry::After(Duration::from_secs(1)));
        assert_eq!(retry(at(10), 3), Retry::After(Duration::from_secs(8)));
        assert_eq!(retry(at(10), 30), Retry::After(Duration::from_secs(60)));
        // Close to the deadline the wait shrinks to hit it.
        assert_eq!(retry(at(295), 10), Retry::After(Duration::from_secs(5)));
        assert_eq!(retry(at(300), 0), Retry::GiveUp);
        assert_eq!(retry(at(3000), 0), Retry::GiveUp);
    }

    #[test]
    fn a_started_controller_tries_old_requests_for_a_grace_period_first() {
        let created = Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_000_000 + s).unwrap();
        let budget = |max: u64, started: i64| RetryBudget {
            max: Duration::from_secs(max),
            acting_since: at(started),
        };
        // A request an hour old, its budget spent, met by a controller started at 3600 s.
        let old = budget(300, 3600);
        assert_eq!(
            old.retry(created, at(3600), 0),
            Retry::After(Duration::from_secs(1))
        );
        assert_eq!(
            old.retry(created, at(3650), 6),
            Retry::After(Duration::from_secs(10))
        );
        assert_eq!(old.retry(created, at(3660), 0), Retry::GiveUp);
        // A budget shorter than the grace bounds it.
        let short = budget(20, 3600);
        assert_eq!(
            short.retry(created, at(3615), 6),
            Retry::After(Duration::from_secs(5))
        );
        assert_eq!(short.retry(created, at(3620), 0), Retry::GiveUp);
        // A young request keeps its own, longer budget.
        assert_eq!(
            old.retry(at(3500), at(3700), 6),
            Retry::After(Duration::from_secs(60))
        );
        assert_eq!(old.retry(at(3500), at(3800), 0), Retry::GiveUp);
    }
}
