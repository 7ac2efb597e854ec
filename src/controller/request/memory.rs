//! What this process remembers of the requests it works on, beyond what the API shows: one map,
//! one lock, one entry per request uid. Lost on restart, which is safe: a restarted controller
//! re-reads every request's status from the API, and a request it finished shows so there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::plan::Signed;

#[derive(Default, Debug)]
struct Entry {
    /// Failed signing attempts so far.
    attempts: u32,
    /// No attempt before this instant (the backoff of the last failure).
    not_before: Option<Instant>,
    /// A certificate step-ca signed whose status write failed (an apiserver blip): written on
    /// the next attempt instead of signing again.
    unwritten: Option<Signed>,
    /// The request was told once that it waits for approval.
    told_approval: bool,
    /// This process finished the request; its status write may not be in the cache yet, and it
    /// must never be signed again.
    finished: bool,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.attempts == 0
            && self.not_before.is_none()
            && self.unwritten.is_none()
            && !self.told_approval
            && !self.finished
    }
}

#[derive(Default)]
pub struct RequestMemory {
    entries: Mutex<HashMap<String, Entry>>,
}

impl RequestMemory {
    /// Runs `f` on the request's entry, and drops the entry when nothing is left in it. A
    /// poisoned lock is taken over: every update is a single assignment, so none is half done.
    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.entry(uid.to_string()).or_default();
        let out = f(entry);
        if entry.is_empty() {
            entries.remove(uid);
        }
        out
    }

    /// How long the backoff of the last failure still holds, if it does.
    pub fn backoff_left(&self, uid: &str, now: Instant) -> Option<Duration> {
        self.with(uid, |e| e.not_before)
            .filter(|t| *t > now)
            .map(|t| t - now)
    }

    /// Failed attempts so far.
    pub fn attempts(&self, uid: &str) -> u32 {
        self.with(uid, |e| e.attempts)
    }

    /// Records one more failed attempt; the next may run after `delay`.
    pub fn record_failure(&self, uid: &str, now: Instant, delay: Duration) {
        self.with(uid, |e| {
            e.attempts += 1;
            e.not_before = Some(now + delay);
        });
    }

    pub fn stash_unwritten(&self, uid: &str, issued: Signed) {
        self.with(uid, |e| e.unwritten = Some(issued));
    }

    pub fn take_unwritten(&self, uid: &str) -> Option<Signed> {
        self.with(uid, |e| e.unwritten.take())
    }

    /// Whether the request was already told that it waits for approval (once per request).
    pub fn told_approval(&self, uid: &str) -> bool {
        self.with(uid, |e| e.told_approval)
    }

    pub fn mark_told_approval(&self, uid: &str) {
        self.with(uid, |e| e.told_approval = true);
    }

    pub fn is_finished(&self, uid: &str) -> bool {
        self.with(uid, |e| e.finished)
    }

    /// This process wrote the request's final status: never sign it again.
    pub fn finish(&self, uid: &str) {
        self.with(uid, |e| {
            *e = Entry {
                finished: true,
                ..Entry::default()
            }
        });
    }

    /// Forgets all but the never-sign-again guard (the request is being deleted).
    pub fn forget(&self, uid: &str) {
        self.with(uid, |e| {
            *e = Entry {
                finished: e.finished,
                ..Entry::default()
            }
        });
    }

    /// The API itself shows the request finished (or gone): no guard is needed any more.
    pub fn release(&self, uid: &str) {
        self.with(uid, |e| *e = Entry::default());
    }

    /// Requests remembered, for tests and the memory bound.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued() -> Signed {
        Signed {
            certificate: "leaf".into(),
            notes: Vec::new(),
            ca: "root".into(),
            message: "issued".into(),
        }
    }

    #[test]
    fn failures_back_off_and_count() {
        let m = RequestMemory::default();
        let t0 = Instant::now();
        assert_eq!(m.backoff_left("a", t0), None);
        assert_eq!(m.attempts("a"), 0);
        m.record_failure("a", t0, Duration::from_secs(2));
        m.record_failure("a", t0, Duration::from_secs(4));
        assert_eq!(m.attempts("a"), 2);
        assert_eq!(m.backoff_left("a", t0), Some(Duration::from_secs(4)));
        assert_eq!(m.backoff_left("a", t0 + Duration::from_secs(5)), None);
        assert_eq!(m.attempts("b"), 0, "entries are per request");
    }

    #[test]
    fn an_unwritten_certificate_is_taken_once() {
        let m = RequestMemory::default();
        m.stash_unwritten("a", issued());
        assert_eq!(m.take_unwritten("a"), Some(issued()));
        assert_eq!(m.take_unwritten("a"), None);
        assert_eq!(m.len(), 0, "an empty entry is dropped");
    }

    #[test]
    fn the_approval_notice_is_remembered_per_request() {
        let m = RequestMemory::default();
        assert!(!m.told_approval("a"));
        m.mark_told_approval("a");
        assert!(m.told_approval("a"));
        assert!(!m.told_approval("b"));
    }

    #[test]
    fn finish_keeps_only_the_guard_until_released() {
        let m = RequestMemory::default();
        let t0 = Instant::now();
        m.record_failure("a", t0, Duration::from_secs(60));
        m.stash_unwritten("a", issued());
        m.mark_told_approval("a");
        m.finish("a");
        assert!(m.is_finished("a"));
        assert_eq!(m.attempts("a"), 0);
        assert_eq!(m.backoff_left("a", t0), None);
        assert_eq!(m.take_unwritten("a"), None);
        // Deleting the request keeps the guard; the API showing it finished releases it.
        m.forget("a");
        assert!(m.is_finished("a"));
        m.release("a");
        assert!(!m.is_finished("a"));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn forget_drops_everything_else() {
        let m = RequestMemory::default();
        m.record_failure("a", Instant::now(), Duration::from_secs(1));
        m.mark_told_approval("a");
        m.forget("a");
        assert_eq!(m.len(), 0);
    }
}
