//! Rate limit of `/bootstrap`: token buckets, one for the whole replica and one per client IP,
//! checked before the handler, so that a caller looping on garbage tokens cannot turn each
//! request into a TokenReview (and each valid one into four API calls).
//!
//! The agents retry a 429 with backoff, so a burst of pods starting together is slowed down,
//! not failed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

/// Per-client buckets kept at most; beyond it, the buckets of clients that have been quiet long
/// enough to be full again are dropped (they would start full anyway).
const MAX_CLIENTS: usize = 10_000;

/// How many requests per second, and how many at once after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// A rate of 0 per second (or a burst of 0) means no limit.
    pub fn is_unlimited(&self) -> bool {
        self.per_second <= 0.0 || self.burst == 0
    }
}

/// A token bucket: holds up to `burst` tokens, refilled at `per_second`; a request takes one.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.updated = now;
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        if rate.is_unlimited() {
            return Ok(());
        }
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / rate.per_second;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut probe = self.clone();
        probe.refill(rate, now);
        probe.tokens >= f64::from(rate.burst)
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    Client,
    Everyone,
}

/// The buckets of one webhook replica.
#[derive(Debug)]
pub struct BootstrapLimiter {
    all: Rate,
    per_client: Rate,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    all: TokenBucket,
    clients: HashMap<IpAddr, TokenBucket>,
}

impl BootstrapLimiter {
    pub fn new(all: Rate, per_client: Rate) -> Self {
        let now = Instant::now();
        Self {
            all,
            per_client,
            state: Mutex::new(Buckets {
                all: TokenBucket::new(all, now),
                clients: HashMap::new(),
            }),
        }
    }

    /// Admits one request from `client` (when known) at `now`, or says which limit refused it
    /// and when to retry. The client's own limit is checked first, so a client over it does not
    /// also use up everyone's.
    pub fn admit(&self, client: Option<IpAddr>, now: Instant) -> Result<(), (Limited, Duration)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = client.filter(|_| !self.per_client.is_unlimited()) {
            if state.clients.len() >= MAX_CLIENTS && !state.clients.contains_key(&ip) {
                let rate = self.per_client;
                state.clients.retain(|_, b| !b.is_full(rate, now));
            }
            // Still full of busy clients: the new one is held to everyone's limit only.
            if state.clients.len() < MAX_CLIENTS || state.clients.contains_key(&ip) {
                let rate = self.per_client;
                let bucket = state
                    .clients
                    .entry(ip)
                    .or_insert_with(|| TokenBucket::new(rate, now));
                bucket.take(rate, now).map_err(|d| (Limited::Client, d))?;
            }
        }
        let rate = self.all;
        state
            .all
            .take(rate, now)
            .map_err(|d| (Limited::Everyone, d))
    }
}

/// The 429 answer: `Retry-After` in whole seconds (at least 1) and a message saying which limit.
pub fn too_many(limited: Limited, retry_after: Duration) -> Response {
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let who = match limited {
        Limited::Client => "from this client",
        Limited::Everyone => "from all clients",
    };
    let body = serde_json::json!({
        "reason": "RateLimited",
        "message": format!(
            "too many /bootstrap requests {who}; retry in {seconds}s (the limits are the webhook's \
             --bootstrap-rate/--bootstrap-burst and --bootstrap-client-rate/--bootstrap-client-burst)"
        ),
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Middleware for the `/bootstrap` route: answers 429 over the limits, before the handler runs.
pub async fn limit(
    limiter: Arc<BootstrapLimiter>,
    on_limited: impl Fn(Limited),
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match limiter.admit(client, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err((limited, retry_after)) => {
            on_limited(limited);
            too_many(limited, retry_after)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt as _;

    const SECOND: Duration = Duration::from_secs(1);

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    #[test]
    fn bucket_decisions() {
        let t0 = Instant::now();
        // (rate, requests at these offsets in ms, expected admitted pattern)
        let cases: [(Rate, &[u64], &[bool]); 5] = [
            // The burst passes at once, then one per 1/rate.
            (
                rate(2.0, 3),
                &[0, 0, 0, 0, 499, 501, 999, 1002],
                &[true, true, true, false, false, true, false, true],
            ),
            // Refill never exceeds the burst.
            (
                rate(10.0, 2),
                &[0, 10_000, 10_000, 10_000],
                &[true, true, true, false],
            ),
            // A fractional rate: one every 4 s.
            (rate(0.25, 1), &[0, 3_999, 4_001], &[true, false, true]),
            // Unlimited.
            (rate(0.0, 1), &[0, 0, 0], &[true, true, true]),
            (rate(5.0, 0), &[0, 0], &[true, true]),
        ];
        for (r, offsets, want) in cases {
            let mut bucket = TokenBucket::new(r, t0);
            let got: Vec<bool> = offsets
                .iter()
                .map(|ms| bucket.take(r, t0 + Duration::from_millis(*ms)).is_ok())
                .collect();
            assert_eq!(got, want, "{r:?} at {offsets:?}");
        }
    }

    #[test]
    fn retry_after_is_the_time_to_the_next_token() {
        let t0 = Instant::now();
        let r = rate(4.0, 1);
        let mut bucket = TokenBucket::new(r, t0);
        assert_eq!(bucket.take(r, t0), Ok(()));
        let wait = bucket.take(r, t0).err().unwrap_or_default();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-9, "waited {wait:?}");
    }

    #[test]
    fn clients_are_limited_apart_and_together() {
        let t0 = Instant::now();
        let limiter = BootstrapLimiter::new(rate(1.0, 5), rate(1.0, 2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let outcome = |ip| limiter.admit(Some(ip), t0).map_err(|(who, _)| who);
        assert_eq!(outcome(a), Ok(()));
        assert_eq!(outcome(a), Ok(()));
        assert_eq!(outcome(a), Err(Limited::Client));
        assert_eq!(outcome(b), Ok(()));
        assert_eq!(outcome(b), Ok(()));
        assert_eq!(outcome(c), Ok(()));
        // Five admitted in all: everyone's bucket is empty though c has a token left.
        assert_eq!(outcome(c), Err(Limited::Everyone));
        // Unknown clients are held to everyone's limit only.
        assert_eq!(
            limiter.admit(None, t0 + SECOND).map_err(|(who, _)| who),
            Ok(())
        );
    }

    #[test]
    fn quiet_clients_are_forgotten_when_there_are_too_many() {
        let t0 = Instant::now();
        let limiter = BootstrapLimiter::new(rate(0.0, 0), rate(1.0, 1));
        for i in 0..MAX_CLIENTS as u32 {
            assert!(
                limiter
                    .admit(Some(IpAddr::from(i.to_be_bytes())), t0)
                    .is_ok()
            );
        }
        let newcomer = IpAddr::from([255, 255, 255, 255]);
        // All buckets empty (busy): the newcomer is not tracked but still admitted.
        assert!(limiter.admit(Some(newcomer), t0).is_ok());
        let tracked = |l: &BootstrapLimiter| l.state.lock().map(|s| s.clients.len()).unwrap_or(0);
        assert_eq!(tracked(&limiter), MAX_CLIENTS);
        // A second later they are all full again, so they are dropped to make room.
        assert!(limiter.admit(Some(newcomer), t0 + SECOND).is_ok());
        assert_eq!(tracked(&limiter), 1);
    }

    /// Security review L4: of a burst of 1,000 requests, only the burst reaches the handler; the
    /// others get 429 with Retry-After, and never reach it.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_1000_reaches_the_handler_only_up_to_the_limit() {
        let handled = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let limiter = Arc::new(BootstrapLimiter::new(rate(10.0, 20), rate(0.0, 0)));
        let app = Router::new().route(
            "/bootstrap",
            post({
                let handled = handled.clone();
                move || async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            })
            .layer(axum::middleware::from_fn({
                let refused = refused.clone();
                move |req, next| {
                    let refused = refused.clone();
                    limit(
                        limiter.clone(),
                        move |_| {
                            refused.fetch_add(1, Ordering::SeqCst);
                        },
                        req,
                        next,
                    )
                }
            })),
        );
        let mut statuses = HashMap::new();
        let mut retry_after = None;
        for _ in 0..1000 {
            let request = axum::extract::Request::post("/bootstrap")
                .body(Body::empty())
                .unwrap_or_default();
            let response = match app.clone().oneshot(request).await {
                Ok(r) => r,
                Err(e) => panic!("{e}"),
            };
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                retry_after = response.headers().get(header::RETRY_AFTER).cloned();
                let body = axum::body::to_bytes(response.into_body(), 4096)
                    .await
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&body).into_owned();
                assert!(text.contains("--bootstrap-rate"), "{text}");
                *statuses.entry(429).or_insert(0) += 1;
            } else {
                *statuses.entry(response.status().as_u16()).or_insert(0) += 1;
            }
        }
        assert_eq!(handled.load(Ordering::SeqCst), 20, "{statuses:?}");
        assert_eq!(statuses.get(&429), Some(&980), "{statuses:?}");
        assert_eq!(refused.load(Ordering::SeqCst), 980);
        assert_eq!(retry_after, Some(HeaderValue::from(1u64)));
        // A second later, the rate's worth is admitted again.
        tokio::time::advance(SECOND).await;
        for _ in 0..11 {
            let request = axum::extract::Request::post("/bootstrap")
                .body(Body::empty())
                .unwrap_or_default();
            let _ = app.clone().oneshot(request).await;
        }
        assert_eq!(handled.load(Ordering::SeqCst), 30);
    }
}
