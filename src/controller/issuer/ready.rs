//! What the issuer reconcilers remember: which issuers are Ready (the `issuers_ready` gauge) and
//! when each one's CA last passed a check (so that our own status write does not trigger another).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::controller::context::Context;
use crate::issuer::IssuerKey;

#[derive(Default)]
struct Entry {
    ready: Option<bool>,
    verified_at: Option<Instant>,
}

/// Shared by both kinds' reconcilers: the gauge counts per kind.
#[derive(Default)]
pub struct ReadyTracker {
    entries: Mutex<HashMap<IssuerKey, Entry>>,
}

impl ReadyTracker {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<IssuerKey, Entry>) -> T) -> T {
        // A poisoned lock is taken over: every update is a single assignment.
        f(&mut self.entries.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records whether an issuer is Ready (`None`: it is gone) and updates its kind's gauge.
    pub fn set(&self, ctx: &Context, key: &IssuerKey, ready: Option<bool>) {
        let kind = key.kind();
        let count = self.with(|map| {
            match ready {
                Some(_) => map.entry(key.clone()).or_default().ready = ready,
                None => {
                    map.remove(key);
                }
            }
            map.iter()
                .filter(|(k, e)| e.ready == Some(true) && k.kind() == kind)
                .count()
        });
        ctx.metrics
            .issuers_ready
            .get_or_create(&crate::metrics::KindLabels { kind: kind.into() })
            .set(count as i64);
    }

    pub fn verified_ago(&self, key: &IssuerKey) -> Option<Duration> {
        self.with(|map| map.get(key).and_then(|e| e.verified_at))
            .map(|at| at.elapsed())
    }

    pub fn mark_verified(&self, key: &IssuerKey) {
        self.with(|map| map.entry(key.clone()).or_default().verified_at = Some(Instant::now()));
    }

    pub fn forget_verified(&self, key: &IssuerKey) {
        self.with(|map| {
            if let Some(e) = map.get_mut(key) {
                e.verified_at = None;
            }
        });
    }
}
