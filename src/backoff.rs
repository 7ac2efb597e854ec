//! Retry delays after failures, shared by the agents (webhook and step-ca calls) and the webhook
//! (its serving certificate). Pure, so the policy is table-tested.
//!
//! Two classes: a transient failure (unreachable, 5xx, 408, 429) may pass on its own and is
//! retried quickly; a refusal needs someone to change something (a pod's annotations, an issuer,
//! a policy) and is retried slowly, so a broken setup does not hammer the webhook or the CA.

use std::time::Duration;

/// First delay after a transient failure (webhook or CA unreachable, 5xx, 408, 429).
pub const TRANSIENT_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay after transient failures.
pub const TRANSIENT_MAX: Duration = Duration::from_secs(30);
/// First delay after a refusal (4xx): the pod or the policy needs fixing, so retry slowly.
pub const REFUSED_INITIAL: Duration = Duration::from_secs(5);
/// Longest delay after refusals.
pub const REFUSED_MAX: Duration = Duration::from_secs(60);

/// How a failed attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// May succeed soon: retry quickly.
    Transient,
    /// Refused; succeeds only once someone changes something: retry slowly.
    Refused,
}

/// Delays per failure class. [`RetryPolicy::default`] is the production policy; tests use
/// millisecond delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub transient_initial: Duration,
    pub transient_max: Duration,
    pub refused_initial: Duration,
    pub refused_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            transient_initial: TRANSIENT_INITIAL,
            transient_max: TRANSIENT_MAX,
            refused_initial: REFUSED_INITIAL,
            refused_max: REFUSED_MAX,
        }
    }
}

/// The delay after a failure: the class's initial delay first, then double the previous delay,
/// kept within `[initial, max]` of the class of this failure.
pub fn next_delay(policy: &RetryPolicy, previous: Option<Duration>, failure: Failure) -> Duration {
    let (initial, max) = match failure {
        Failure::Transient => (policy.transient_initial, policy.transient_max),
        Failure::Refused => (policy.refused_initial, policy.refused_max),
    };
    match previous {
        None => initial.min(max),
        Some(p) => p.saturating_mul(2).max(initial).min(max),
    }
}

/// Stateful wrapper around [`next_delay`].
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    previous: Option<Duration>,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            previous: None,
        }
    }

    /// The delay to wait after this failure.
    pub fn next(&mut self, failure: Failure) -> Duration {
        let d = next_delay(&self.policy, self.previous, failure);
        self.previous = Some(d);
        d
    }

    /// Forget earlier failures (after a success).
    pub fn reset(&mut self) {
        self.previous = None;
    }
}

/// A delay for log lines: `4s`, `1m`, `250ms`.
pub fn display(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        let s = Duration::from_secs;
        let p = RetryPolicy::default();
        use Failure::*;
        let cases: &[(Option<Duration>, Failure, Duration)] = &[
            (None, Transient, s(1)),
            (Some(s(1)), Transient, s(2)),
            (Some(s(2)), Transient, s(4)),
            (Some(s(16)), Transient, s(30)),
            (Some(s(30)), Transient, s(30)),
            (None, Refused, s(5)),
            (Some(s(1)), Refused, s(5)),
            (Some(s(5)), Refused, s(10)),
            (Some(s(40)), Refused, s(60)),
            (Some(s(60)), Refused, s(60)),
            // A transient failure after slow refusals goes back under the transient cap.
            (Some(s(60)), Transient, s(30)),
            (Some(Duration::MAX), Transient, s(30)),
        ];
        for (prev, failure, want) in cases {
            assert_eq!(
                next_delay(&p, *prev, *failure),
                *want,
                "{prev:?} {failure:?}"
            );
        }
    }

    #[test]
    fn backoff_sequence_and_reset() {
        let mut b = Backoff::new(RetryPolicy::default());
        let got: Vec<u64> = (0..7)
            .map(|_| b.next(Failure::Transient).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next(Failure::Transient), Duration::from_secs(1));
    }

    #[test]
    fn display_is_short() {
        assert_eq!(display(Duration::from_secs(4)), "4s");
        assert_eq!(display(Duration::from_millis(4321)), "4s");
        assert_eq!(display(Duration::from_secs(60)), "1m");
        assert_eq!(display(Duration::from_millis(250)), "250ms");
    }
}
