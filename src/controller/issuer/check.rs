//! What an issuer check means, as pure functions: whether to ask step-ca for its health, what the
//! outcome makes of the Ready condition, when to check again, and whether the status changed.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::condition;
use crate::issuer::IssuerObject;
use crate::issuer::error::IssuerError;

/// Reason of a Ready issuer.
pub const VERIFIED: &str = "Verified";
/// Reason the request reconciler writes when step-ca refuses a token at sign time.
pub const SIGN_AUTH_FAILED: &str = "CARejectedToken";

/// Set this annotation on an issuer to a new value to have it checked against step-ca at once,
/// from scratch (a new connection, the provisioner key read again).
pub const RECHECK_ANNOTATION: &str = "certmanager.step.sm/recheck";

/// The value of the recheck annotation when it asks for a check not yet done (`last` is the value
/// recorded in the status by the check that answered the previous request).
pub fn recheck_requested(annotation: Option<&str>, last: Option<&str>) -> Option<String> {
    let value = annotation.map(str::trim).filter(|v| !v.is_empty())?;
    (Some(value) != last).then(|| value.to_string())
}

/// A step-ca refused a token signed with this issuer's key since the last check: its signer is
/// dropped and the check connects from scratch.
pub fn after_auth_failure(previous: &[Condition]) -> bool {
    previous
        .iter()
        .any(|c| c.type_ == condition::READY && c.reason == SIGN_AUTH_FAILED)
}

/// Whether a reconcile that reuses a cached connection must ask step-ca for its health (a fresh
/// connection has just proved the CA works). A check that passed less than `interval` ago still holds: without this,
/// the reconcile that our own status write triggers checked the CA again at once, which doubled
/// the health checks and could report a CA outage that began right after a successful check
/// (the Ready issuer flipped to not Ready although the next check was minutes away). A changed
/// spec or password, or a token refused at sign time, always connects afresh.
pub fn health_check_due(verified_ago: Option<Duration>, interval: Duration) -> bool {
    verified_ago.is_none_or(|ago| ago >= interval)
}

/// What to do with a signer the cache gave back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// A fresh connection: it proved the CA works.
    Proved,
    /// Ask step-ca's `/health` now.
    CheckNow,
    /// An earlier check still holds; look again after this.
    Holds { next_check: Duration },
}

pub fn health(fresh: bool, verified_ago: Option<Duration>, interval: Duration) -> Health {
    if fresh {
        Health::Proved
    } else if health_check_due(verified_ago, interval) {
        Health::CheckNow
    } else {
        let ago = verified_ago.unwrap_or_default();
        Health::Holds {
            next_check: interval.saturating_sub(ago).max(Duration::from_secs(1)),
        }
    }
}

/// What a check's outcome makes of the issuer's Ready condition, and when to check again.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: String,
    pub message: String,
    pub requeue: Duration,
}

/// A StepIssuer's message never quotes what its CA answered (see [`IssuerObject::AUDIENCE`]).
pub fn verdict<K: IssuerObject>(
    outcome: &Result<crate::step::Signer, IssuerError>,
    next_check: Duration,
    interval: Duration,
) -> Verdict {
    match outcome {
        Ok(signer) => Verdict {
            ready: true,
            reason: VERIFIED.to_string(),
            message: format!(
                "Signing with JWK provisioner {:?} (kid {}) at {}",
                signer.provisioner_name(),
                signer.kid(),
                signer.url()
            ),
            requeue: next_check,
        },
        Err(e) => Verdict {
            ready: false,
            reason: e.reason().to_string(),
            message: e.message_for(K::AUDIENCE),
            requeue: retry_after(e.is_transient(), interval),
        },
    }
}

/// When a failed check is repeated: soon for what may pass by itself, and otherwise never less
/// often than a Ready issuer, since without the Secret watch this re-check is what notices a
/// fixed password.
pub fn retry_after(transient: bool, interval: Duration) -> Duration {
    if transient {
        RETRY_SOON
    } else {
        Duration::from_secs(60).min(interval)
    }
}

/// Whether the apiserver's refusal of an issuer's status says its CRD is older than ours. A field
/// the old schema lacks (`status.ca`) fails server-side apply before validation, with a 500 that
/// says so; a value the old schema forbids (a condition type other than Ready) fails validation
/// with a 422.
pub fn outdated_crd(code: u16, message: &str) -> bool {
    code == 422 || (code == 500 && message.contains("field not declared in schema"))
}

/// When an issuer whose reconcile failed is checked again: a status refused for an outdated CRD
/// stays refused until someone upgrades the CRDs, so every minute (each check is a refused write,
/// a log line and an Event); any other failure (the API away) soon.
pub fn retry_after_error(outdated_crd: bool) -> Duration {
    if outdated_crd {
        OUTDATED_CRD_RECHECK
    } else {
        RETRY_SOON
    }
}

/// When a check that failed for what may pass by itself is repeated.
const RETRY_SOON: Duration = Duration::from_secs(5);

/// How often an issuer whose CRD is outdated is checked again.
pub const OUTDATED_CRD_RECHECK: Duration = Duration::from_secs(60);

/// Whether the status to write differs from the one the issuer has: its conditions (see
/// [`conditions_changed`]), the CA facts or the recheck answered.
pub fn status_changed(
    previous: Option<&crate::crd::IssuerStatus>,
    new: &crate::crd::IssuerStatus,
) -> bool {
    let empty = crate::crd::IssuerStatus::default();
    let previous = previous.unwrap_or(&empty);
    conditions_changed(&previous.conditions, &new.conditions)
        || previous.ca != new.ca
        || previous.last_recheck != new.last_recheck
}

/// Whether `new` says anything `previous` does not: only then is the status written (and an
/// Event published), since every write wakes every watcher of the issuer.
pub fn conditions_changed(previous: &[Condition], new: &[Condition]) -> bool {
    !new.iter().all(|cond| {
        previous.iter().any(|p| {
            p.type_ == cond.type_
                && p.status == cond.status
                && p.reason == cond.reason
                && p.message == cond.message
                && p.observed_generation == cond.observed_generation
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outdated_crd_is_checked_again_every_minute_other_failures_soon() {
        assert_eq!(retry_after_error(true), Duration::from_secs(60));
        assert_eq!(retry_after_error(false), Duration::from_secs(5));
    }

    #[test]
    fn outdated_crds_are_told_apart_from_other_refusals() {
        let cases = [
            (
                500,
                "failed to create typed patch object (/; certmanager.step.sm/v1beta1, Kind=StepIssuer): .status.ca: field not declared in schema",
                true,
            ),
            (
                422,
                "StepIssuer.certmanager.step.sm \"x\" is invalid: status.conditions[1].type: Unsupported value: \"NamePolicy\"",
                true,
            ),
            (500, "etcdserver: request timed out", false),
            (409, "the object has been modified", false),
            (403, "forbidden", false),
        ];
        for (code, message, want) in cases {
            assert_eq!(outdated_crd(code, message), want, "{code} {message}");
        }
    }
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn health_is_checked_when_no_recent_check_holds() {
        let min = Duration::from_secs(60);
        let interval = 5 * min;
        let cases = [
            // (last passed check, due)
            (None, true),
            (Some(Duration::from_secs(1)), false),
            (Some(interval - Duration::from_secs(1)), false),
            (Some(interval), true),
            (Some(10 * min), true),
        ];
        for (ago, due) in cases {
            assert_eq!(health_check_due(ago, interval), due, "verified_ago={ago:?}");
        }
    }

    #[test]
    fn a_fresh_connection_proves_and_a_recent_check_holds() {
        let interval = Duration::from_secs(300);
        let cases = [
            (true, None, Health::Proved),
            (true, Some(Duration::from_secs(1)), Health::Proved),
            (false, None, Health::CheckNow),
            (false, Some(interval), Health::CheckNow),
            (
                false,
                Some(Duration::from_secs(100)),
                Health::Holds {
                    next_check: Duration::from_secs(200),
                },
            ),
            // Never a busy loop, even just before the interval ends.
            (
                false,
                Some(interval - Duration::from_millis(1)),
                Health::Holds {
                    next_check: Duration::from_secs(1),
                },
            ),
        ];
        for (fresh, ago, want) in cases {
            assert_eq!(health(fresh, ago, interval), want, "{fresh} {ago:?}");
        }
    }

    #[test]
    fn failed_checks_repeat_soon_or_at_most_every_interval() {
        let five_min = Duration::from_secs(300);
        assert_eq!(retry_after(true, five_min), Duration::from_secs(5));
        assert_eq!(retry_after(false, five_min), Duration::from_secs(60));
        assert_eq!(
            retry_after(false, Duration::from_secs(20)),
            Duration::from_secs(20)
        );
    }

    fn ready(status: bool, reason: &str, message: &str, generation: i64) -> Condition {
        condition::build(
            condition::READY,
            &[],
            status,
            reason,
            message,
            Some(generation),
            Timestamp::now(),
        )
    }

    #[test]
    fn only_a_change_is_written() {
        let ok = ready(true, VERIFIED, "ok", 1);
        let cases = [
            (vec![], vec![ok.clone()], true),
            (vec![ok.clone()], vec![ok.clone()], false),
            (vec![ok.clone()], vec![ready(true, VERIFIED, "ok", 2)], true),
            (
                vec![ok.clone()],
                vec![ready(true, VERIFIED, "other", 1)],
                true,
            ),
            (
                vec![ok.clone()],
                vec![ready(false, "SecretNotFound", "ok", 1)],
                true,
            ),
            // Only what is sent counts: other conditions on the object are not ours.
            (
                vec![ok.clone(), ready(true, "X", "y", 1)],
                vec![ok.clone()],
                false,
            ),
        ];
        for (previous, new, want) in cases {
            assert_eq!(
                conditions_changed(&previous, &new),
                want,
                "{previous:?} -> {new:?}"
            );
        }
        let stale_time = Condition {
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            ),
            ..ok.clone()
        };
        assert!(
            !conditions_changed(&[stale_time], &[ok]),
            "times are not compared"
        );
    }

    #[test]
    fn auth_failures_are_read_from_the_ready_condition() {
        assert!(after_auth_failure(&[ready(
            false,
            SIGN_AUTH_FAILED,
            "401",
            1
        )]));
        assert!(!after_auth_failure(&[ready(true, VERIFIED, "ok", 1)]));
        assert!(!after_auth_failure(&[]));
    }

    /// Security review M1: whatever a StepIssuer's URL points at, its status and Events show
    /// the HTTP status and a generic reason, never the answer; a StepClusterIssuer, set up by
    /// the admin, keeps step-ca's own words.
    #[tokio::test]
    async fn a_step_issuer_never_shows_what_its_ca_answered() {
        use crate::crd::{StepClusterIssuer, StepIssuer};
        use crate::step::fake_ca::{FakeCa, Hostile, HostileCa};
        let ca = FakeCa::start().await;
        let answers = [
            (500, "SECRET-MARKER from an internal service".to_owned()),
            (500, r#"{"message":"SECRET-MARKER in JSON"}"#.to_owned()),
            (403, "<html><body>SECRET-MARKER</body></html>".to_owned()),
            (200, "SECRET-MARKER, not JSON".to_owned()),
            (200, r#"{"status":"SECRET-MARKER"}"#.to_owned()),
        ];
        for (status, body) in answers {
            let hostile = HostileCa::start(
                &ca.certs,
                Hostile::Answer {
                    status,
                    body: body.clone(),
                },
            )
            .await;
            let outcome = crate::step::Signer::connect(
                &hostile.url,
                Some(ca.certs.root_pem.as_bytes()),
                "admin",
                None,
                FakeCa::PASSWORD,
                Duration::from_secs(5),
            )
            .await
            .map_err(IssuerError::from);
            let tenant = verdict::<StepIssuer>(&outcome, Duration::ZERO, Duration::from_secs(300));
            assert!(!tenant.ready);
            assert!(
                !tenant.message.contains("SECRET-MARKER"),
                "{status} {body}: {}",
                tenant.message
            );
            assert!(
                tenant.message.contains(&format!("HTTP {status}")),
                "{status} {body}: {}",
                tenant.message
            );
            let admin =
                verdict::<StepClusterIssuer>(&outcome, Duration::ZERO, Duration::from_secs(300));
            assert_eq!(admin.reason, tenant.reason);
            assert!(
                admin.message.contains("SECRET-MARKER"),
                "{status} {body}: {}",
                admin.message
            );
        }
    }

    #[test]
    fn a_recheck_is_asked_by_a_new_annotation_value() {
        // (annotation, value recorded by the last recheck, requested)
        let cases = [
            (None, None, None),
            (Some(""), None, None),
            (Some("  "), Some("1"), None),
            (Some("1"), None, Some("1")),
            (Some("1"), Some("1"), None),
            (Some("2"), Some("1"), Some("2")),
            (Some(" 2 "), Some("2"), None),
        ];
        for (annotation, last, want) in cases {
            assert_eq!(
                recheck_requested(annotation, last).as_deref(),
                want,
                "{annotation:?} {last:?}"
            );
        }
    }

    #[test]
    fn the_status_is_written_when_facts_or_the_recheck_change() {
        use crate::crd::{CaStatus, IssuerStatus};
        let base = IssuerStatus::default();
        assert!(!status_changed(None, &base));
        assert!(!status_changed(Some(&base), &base));
        let with_ca = IssuerStatus {
            ca: Some(CaStatus {
                version: Some("0.30.2".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(status_changed(Some(&base), &with_ca));
        assert!(!status_changed(Some(&with_ca), &with_ca.clone()));
        let rechecked = IssuerStatus {
            last_recheck: Some("1".into()),
            ..with_ca.clone()
        };
        assert!(status_changed(Some(&with_ca), &rechecked));
    }
}
