//! A per-issuer limit on requests being signed at once.
//!
//! The request workers are shared by every issuer. Without a limit, requests for one CA that
//! hangs (each waiting up to `--ca-timeout`) would take every worker and stall issuance for all
//! other issuers. With it, such a CA holds at most `limit` workers; its other requests go back to
//! the queue and the remaining workers serve the healthy issuers.
//!
//! How soon a request that found its issuer at the limit is tried again depends on why: behind a
//! CA that answers, places free up within milliseconds, so it comes back almost at once (a burst
//! for one issuer keeps its pace); behind a CA whose oldest sign has run for a second or more, it
//! comes back after a second, costing next to nothing while that CA hangs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::issuer::IssuerKey;

/// A sign that has run this long means the CA is slow or hanging.
pub const SLOW_SIGN: Duration = Duration::from_secs(1);
/// When a request of an issuer at its limit is tried again, behind a CA that answers.
pub const BUSY_RETRY: Duration = Duration::from_millis(20);
/// When it is tried again behind a slow CA.
pub const SLOW_RETRY: Duration = Duration::from_secs(1);
/// How long a worker waits in place for a place behind a CA that answers: places free up within
/// milliseconds there, and a worker that went back to the queue instead would come back every
/// [`BUSY_RETRY`] (in a burst of 1,000 requests with 16 workers and 4 places, that polling cost
/// the controller a core). Bounded, so that a CA that starts hanging holds no worker for long.
pub const BUSY_WAIT: Duration = Duration::from_millis(250);

/// Signs in flight, by issuer, with when each started.
#[derive(Debug)]
pub struct InFlight {
    limit: usize,
    next_id: AtomicU64,
    started: Mutex<HashMap<IssuerKey, Vec<(u64, Instant)>>>,
    /// Woken when a place is released (see [`InFlight::acquire_within`]).
    released: tokio::sync::Notify,
}

/// One request's place among its issuer's in-flight signs; released when dropped.
#[derive(Debug)]
pub struct Permit {
    owner: Arc<InFlight>,
    key: IssuerKey,
    id: u64,
}

/// `None` when another sign may start; otherwise when to try again. Pure.
pub fn retry_after(in_flight: usize, limit: usize, oldest: Duration) -> Option<Duration> {
    if in_flight < limit {
        None
    } else if oldest >= SLOW_SIGN {
        Some(SLOW_RETRY)
    } else {
        Some(BUSY_RETRY)
    }
}

impl InFlight {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            next_id: AtomicU64::new(0),
            started: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
        })
    }

    /// `None` when this issuer may start another sign now; otherwise when to try again.
    pub fn busy(&self, key: &IssuerKey) -> Option<Duration> {
        let started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let list = started.get(key).map(Vec::as_slice).unwrap_or_default();
        let oldest = list
            .iter()
            .map(|(_, at)| at.elapsed())
            .max()
            .unwrap_or_default();
        retry_after(list.len(), self.limit, oldest)
    }

    /// A permit when fewer than `limit` signs of this issuer are in flight.
    pub fn try_acquire(self: &Arc<Self>, key: &IssuerKey) -> Option<Permit> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let list = started.entry(key.clone()).or_default();
        if list.len() >= self.limit {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push((id, Instant::now()));
        Some(Permit {
            owner: self.clone(),
            key: key.clone(),
            id,
        })
    }

    /// A permit, waiting up to `max_wait` for a place while this issuer's signs are quick;
    /// `None` at once behind a slow CA (its oldest sign older than [`SLOW_SIGN`]) or when the
    /// wait is over: then the request goes back to the queue and the worker to other issuers.
    pub async fn acquire_within(
        self: &Arc<Self>,
        key: &IssuerKey,
        max_wait: Duration,
    ) -> Option<Permit> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Registered before the check, so that a place released in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(permit) = self.try_acquire(key) {
                return Some(permit);
            }
            if self.busy(key).is_some_and(|retry| retry >= SLOW_RETRY) {
                return None;
            }
            tokio::time::timeout_at(deadline, released).await.ok()?;
        }
    }

    /// Signs of this issuer in flight now.
    #[cfg(test)]
    fn count(&self, key: &IssuerKey) -> usize {
        let started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        started.get(key).map_or(0, Vec::len)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut started = self.owner.started.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = started.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                started.remove(&self.key);
            }
        }
        drop(started);
        self.owner.released.notify_waiters();
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
        assert!(in_flight.busy(&slow).is_some());
        assert!(
            in_flight.try_acquire(&slow).is_none(),
            "third sign for the same issuer"
        );
        // Another issuer is not affected.
        let healthy = key("healthy");
        assert_eq!(in_flight.busy(&healthy), None);
        let _c = in_flight.try_acquire(&healthy).unwrap();
        let _d = in_flight.try_acquire(&healthy).unwrap();
        assert_eq!(in_flight.count(&slow), 2);
        drop(a);
        assert_eq!(in_flight.count(&slow), 1);
        assert_eq!(in_flight.busy(&slow), None);
        assert!(
            in_flight.try_acquire(&slow).is_some(),
            "a released place is reused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_waits_for_a_place_that_frees_up_and_at_most_busy_wait() {
        let in_flight = InFlight::new(1);
        let ca = key("ca");
        let held = in_flight.try_acquire(&ca).unwrap();
        // Released after 10 ms: the waiter gets the place.
        let waiter = {
            let in_flight = in_flight.clone();
            let ca = ca.clone();
            tokio::spawn(async move { in_flight.acquire_within(&ca, BUSY_WAIT).await.is_some() })
        };
        // Let the waiter start waiting (time is paused: this only runs the other task).
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(
            !waiter.is_finished(),
            "the waiter waits while the place is held"
        );
        drop(held);
        assert!(
            waiter.await.unwrap(),
            "the released place went to the waiter"
        );
        // Not released: the wait ends after BUSY_WAIT.
        let _held = in_flight.try_acquire(&ca).unwrap();
        let started = tokio::time::Instant::now();
        assert!(in_flight.acquire_within(&ca, BUSY_WAIT).await.is_none());
        assert_eq!(started.elapsed(), BUSY_WAIT);
        // (Behind a sign older than SLOW_SIGN it does not wait: signs are timed on the real
        // clock, which a paused test cannot advance; `retry_after`'s table holds that rule.)
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
    fn retry_soon_behind_a_ca_that_answers_and_late_behind_a_slow_one() {
        let ms = Duration::from_millis;
        let cases = [
            // (in flight, limit, oldest sign's age, retry after)
            (0, 4, ms(0), None),
            (3, 4, ms(5_000), None),
            (4, 4, ms(5), Some(BUSY_RETRY)),
            (4, 4, ms(999), Some(BUSY_RETRY)),
            (4, 4, ms(1_000), Some(SLOW_RETRY)),
            (5, 4, ms(9_000), Some(SLOW_RETRY)),
        ];
        for (n, limit, oldest, want) in cases {
            assert_eq!(
                retry_after(n, limit, oldest),
                want,
                "{n}/{limit} oldest {oldest:?}"
            );
        }
    }

    #[test]
    fn default_limits() {
        for (workers, limit) in [(1, 1), (3, 1), (4, 1), (16, 4), (64, 16)] {
            assert_eq!(default_limit(workers), limit, "{workers} workers");
        }
    }

    /// How the request workers use the limit (as `request::sign` does): a request whose issuer
    /// is at its limit waits at most BUSY_WAIT in place, then goes back to the queue after
    /// `busy`'s delay, without holding a worker.
    /// Returns whether the healthy issuer's request was signed within 10 s, with 20 requests
    /// for a CA that never answers queued before it.
    async fn healthy_signed_behind_a_stalling_issuer(limit: usize) -> bool {
        const WORKERS: usize = 16;
        let in_flight = InFlight::new(limit);
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel::<IssuerKey>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (signed_tx, signed_rx) = tokio::sync::oneshot::channel::<()>();
        let signed_tx = Arc::new(Mutex::new(Some(signed_tx)));
        for _ in 0..20 {
            queue.send(key("stalling")).unwrap();
        }
        queue.send(key("healthy")).unwrap();
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (in_flight, rx, queue, signed_tx) = (
                in_flight.clone(),
                rx.clone(),
                queue.clone(),
                signed_tx.clone(),
            );
            workers.push(tokio::spawn(async move {
                loop {
                    let Some(issuer) = rx.lock().await.recv().await else {
                        return;
                    };
                    let Some(_permit) = in_flight.acquire_within(&issuer, BUSY_WAIT).await else {
                        // What Action::requeue(retry) does: the request comes back after `retry`,
                        // and the worker is free at once (the timer is the behaviour under test).
                        let retry = in_flight.busy(&issuer).unwrap_or(BUSY_RETRY);
                        let queue = queue.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(retry).await;
                            let _ = queue.send(issuer);
                        });
                        continue;
                    };
                    if issuer == key("stalling") {
                        // step-ca never answers; the worker holds its permit for good.
                        std::future::pending::<()>().await;
                    }
                    if let Some(tx) = signed_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        let _ = tx.send(());
                    }
                }
            }));
        }
        let signed = tokio::time::timeout(Duration::from_secs(10), signed_rx)
            .await
            .is_ok();
        for w in workers {
            w.abort();
        }
        signed
    }

    /// Security review H2: 20 requests on a stalling issuer and 1 on a healthy one, 16 workers:
    /// with the default limit the healthy one is signed; without a limit (16) it never is.
    #[tokio::test(start_paused = true)]
    async fn a_stalling_issuer_leaves_workers_for_a_healthy_one() {
        assert!(
            healthy_signed_behind_a_stalling_issuer(default_limit(16)).await,
            "the healthy issuer's request waited more than 10 s"
        );
        assert!(
            !healthy_signed_behind_a_stalling_issuer(16).await,
            "without a per-issuer limit the stalling issuer should take every worker"
        );
    }
}
