//! A per-issuer limit on requests being signed at once.
//!
//! The request workers are shared by every issuer. Without a limit, requests for one CA that
//! hangs (each waiting up to `--ca-timeout`) would take every worker and stall issuance for all
//! other issuers. With it, such a CA holds at most `limit` workers; its other requests go back to
//! the queue and the remaining workers serve the healthy issuers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::controller::decision::IssuerKey;

/// Counts of requests in flight, by issuer.
#[derive(Debug)]
pub struct InFlight {
    limit: usize,
    counts: Mutex<HashMap<IssuerKey, usize>>,
}

/// One request's place among its issuer's in-flight signs; released when dropped.
#[derive(Debug)]
pub struct Permit {
    owner: Arc<InFlight>,
    key: IssuerKey,
}

impl InFlight {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A permit when fewer than `limit` requests of this issuer are in flight.
    pub fn try_acquire(self: &Arc<Self>, key: &IssuerKey) -> Option<Permit> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key.clone()).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Permit {
            owner: self.clone(),
            key: key.clone(),
        })
    }

    /// Whether this issuer has as many requests in flight as allowed.
    pub fn is_full(&self, key: &IssuerKey) -> bool {
        self.count(key) >= self.limit
    }

    /// Requests of this issuer in flight now.
    pub fn count(&self, key: &IssuerKey) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(key).copied().unwrap_or_default()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Default per-issuer limit for a number of workers: a quarter of them, at least one, so that a
/// hanging CA leaves three quarters of the workers to the others.
pub fn default_limit(concurrency: u16) -> usize {
    usize::from(concurrency / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> IssuerKey {
        IssuerKey::Cluster { name: name.into() }
    }

    #[test]
    fn one_issuer_cannot_take_more_than_its_share() {
        let in_flight = InFlight::new(2);
        let slow = key("slow");
        let a = in_flight.try_acquire(&slow).unwrap();
        let _b = in_flight.try_acquire(&slow).unwrap();
        assert!(
            in_flight.try_acquire(&slow).is_none(),
            "third sign for the same issuer"
        );
        // Another issuer is not affected.
        let healthy = key("healthy");
        let _c = in_flight.try_acquire(&healthy).unwrap();
        let _d = in_flight.try_acquire(&healthy).unwrap();
        assert_eq!(in_flight.count(&slow), 2);
        drop(a);
        assert_eq!(in_flight.count(&slow), 1);
        assert!(!in_flight.is_full(&slow));
        assert!(
            in_flight.try_acquire(&slow).is_some(),
            "a released place is reused"
        );
    }

    #[test]
    fn namespaced_issuers_are_counted_apart() {
        let in_flight = InFlight::new(1);
        let a = IssuerKey::Namespaced {
            namespace: "a".into(),
            name: "ca".into(),
        };
        let b = IssuerKey::Namespaced {
            namespace: "b".into(),
            name: "ca".into(),
        };
        let _pa = in_flight.try_acquire(&a).unwrap();
        assert!(in_flight.try_acquire(&b).is_some());
        assert!(in_flight.try_acquire(&key("ca")).is_some());
    }

    #[test]
    fn default_limits() {
        for (workers, limit) in [(1, 1), (3, 1), (4, 1), (16, 4), (64, 16)] {
            assert_eq!(default_limit(workers), limit, "{workers} workers");
        }
    }
}
