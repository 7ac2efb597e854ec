//! Pure helpers for the issuers' `Ready` condition (`metav1.Condition` shape).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub const READY: &str = "Ready";

/// The longest condition message written, in bytes. Messages quote things others chose (a
/// `spec.url`, a CA's answer): unbounded, one of them makes the status write fail, and the object
/// is then retried forever with its old status.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `message`, cut at a character boundary to at most [`MAX_MESSAGE_BYTES`] bytes (with "…" at
/// the end when cut).
pub fn bounded_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = MAX_MESSAGE_BYTES - ELLIPSIS.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &message[..end])
}

/// Builds a condition of `type_` (`Ready`, `NamePolicy`), keeping `lastTransitionTime` from
/// `previous` when its status did not flip, so that `kubectl get` shows how long the issuer has
/// been in its state.
pub fn build(
    type_: &str,
    previous: &[Condition],
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: bounded_message(message),
        observed_generation: generation,
        last_transition_time,
    }
}

/// What an issuer's status says about its ability to sign right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Ready=False (or Unknown) with the reason and message to relay to waiting requests.
    NotReady {
        reason: String,
        message: String,
    },
    /// No condition yet, or one written for an older generation of the spec.
    NotChecked,
}

pub fn readiness(conditions: &[Condition], generation: Option<i64>) -> Readiness {
    match conditions.iter().find(|c| c.type_ == READY) {
        None => Readiness::NotChecked,
        Some(c) if c.observed_generation.is_some() && c.observed_generation != generation => {
            Readiness::NotChecked
        }
        Some(c) if c.status == "True" => Readiness::Ready,
        Some(c) => Readiness::NotReady {
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_at_a_character_boundary() {
        assert_eq!(bounded_message("short"), "short");
        let exact = "a".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(bounded_message(&exact), exact);
        for filler in ["a", "é", "€", "𝄞"] {
            let long = filler.repeat(100 * 1024);
            let cut = bounded_message(&long);
            assert!(
                cut.len() <= MAX_MESSAGE_BYTES,
                "{filler}: {} bytes",
                cut.len()
            );
            assert!(cut.len() > MAX_MESSAGE_BYTES - 8, "{filler}: cut too short");
            assert!(cut.ends_with('…') && cut.starts_with(filler), "{filler}");
        }
        let condition = build(
            READY,
            &[],
            false,
            "InvalidSpec",
            &"u".repeat(100 * 1024),
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert!(condition.message.len() <= MAX_MESSAGE_BYTES);
    }

    fn cond(status: &str, generation: Option<i64>, at: i64) -> Condition {
        Condition {
            type_: READY.into(),
            status: status.into(),
            reason: "R".into(),
            message: "M".into(),
            observed_generation: generation,
            last_transition_time: Time(Timestamp::from_second(at).unwrap()),
        }
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let now = Timestamp::from_second(2000).unwrap();
        let prev = [cond("True", Some(1), 1000)];
        let same = build(READY, &prev, true, "Verified", "ok", Some(2), now);
        assert_eq!(same.last_transition_time.0.as_second(), 1000);
        assert_eq!(same.observed_generation, Some(2));
        let flipped = build(READY, &prev, false, "WrongPassword", "bad", Some(2), now);
        assert_eq!(flipped.last_transition_time.0.as_second(), 2000);
        assert_eq!(flipped.status, "False");
        let first = build(READY, &[], true, "Verified", "ok", Some(1), now);
        assert_eq!(first.last_transition_time.0.as_second(), 2000);
    }

    #[test]
    fn readiness_table() {
        let cases = [
            (vec![], Some(1), Readiness::NotChecked),
            (vec![cond("True", Some(1), 0)], Some(1), Readiness::Ready),
            (
                vec![cond("True", Some(1), 0)],
                Some(2),
                Readiness::NotChecked,
            ),
            // step-issuer's status had no observedGeneration: trust it until we write ours.
            (vec![cond("True", None, 0)], Some(3), Readiness::Ready),
            (
                vec![cond("False", Some(1), 0)],
                Some(1),
                Readiness::NotReady {
                    reason: "R".into(),
                    message: "M".into(),
                },
            ),
            (
                vec![cond("Unknown", Some(1), 0)],
                Some(1),
                Readiness::NotReady {
                    reason: "R".into(),
                    message: "M".into(),
                },
            ),
        ];
        for (conds, generation, want) in cases {
            assert_eq!(
                readiness(&conds, generation),
                want,
                "{conds:?} gen {generation:?}"
            );
        }
    }
}
