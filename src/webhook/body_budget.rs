//! A budget of AdmissionReview bytes `/mutate` holds at once.
//!
//! Each review is buffered whole and read (up to about twice its size again, see
//! `tests/mutate_memory.rs`), so 64 requests in flight of the largest allowed body would need far
//! more memory than the webhook has. A review reserves its announced `Content-Length` (the
//! apiserver always sends one; without one the largest allowed size) before its body is read; when
//! the budget is spent the request is answered 503 at once. Real AdmissionReviews are tens of
//! kilobytes, so only a flood of huge bodies ever meets the limit.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

/// Body bytes held at once by all `/mutate` requests: five of the largest allowed reviews, six
/// hundred real ones; the memory it stands for stays far under the webhook's limit.
pub const MUTATE_BODY_BUDGET: usize = 32 * 1024 * 1024;

/// The budget, counted in KiB (a semaphore's permits are `u32`).
#[derive(Clone, Debug)]
pub struct BodyBudget {
    kib: Arc<Semaphore>,
    /// What a request without a Content-Length, or with a larger one, reserves.
    largest: usize,
}

impl BodyBudget {
    pub fn new(total: usize, largest: usize) -> Self {
        Self {
            kib: Arc::new(Semaphore::new(total.div_ceil(1024))),
            largest,
        }
    }

    /// KiB a request announcing `content_length` reserves.
    pub fn cost_kib(&self, content_length: Option<u64>) -> u32 {
        let bytes = content_length
            .and_then(|n| usize::try_from(n).ok())
            .map_or(self.largest, |n| n.min(self.largest));
        u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
    }
}

/// Middleware for `/mutate`: reserves the body's share of the budget for the whole request, or
/// answers 503.
pub async fn reserve(
    budget: BodyBudget,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let cost = budget.cost_kib(announced);
    let Ok(_reserved) = budget.kib.clone().try_acquire_many_owned(cost) else {
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "ServiceUnavailable",
            "message": "the webhook is reading as many AdmissionReview bytes as it may; retry",
            "code": 503,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    };
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::routing::post;
    use tower::ServiceExt as _;

    #[test]
    fn costs() {
        let budget = BodyBudget::new(8 * 1024, 4096);
        for (announced, kib) in [
            (Some(0), 1),
            (Some(1), 1),
            (Some(1024), 1),
            (Some(1025), 2),
            (Some(4096), 4),
            (Some(1 << 40), 4),
            (None, 4),
        ] {
            assert_eq!(budget.cost_kib(announced), kib, "{announced:?}");
        }
    }

    fn request(len: usize) -> axum::extract::Request {
        axum::extract::Request::post("/mutate")
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from(vec![b' '; len]))
            .unwrap_or_default()
    }

    /// Security review H4: while large reviews hold the budget, another large one is answered
    /// 503 without being read, a small one still passes, and the budget comes back afterwards.
    #[tokio::test]
    async fn large_bodies_beyond_the_budget_are_shed() {
        let budget = BodyBudget::new(10 * 1024, 6 * 1024);
        let app = Router::new()
            .route(
                "/mutate",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn({
                let budget = budget.clone();
                move |req, next| reserve(budget.clone(), req, next)
            }));
        // Another large review in flight holds 6 KiB of the 10.
        let held = budget.kib.clone().try_acquire_many_owned(6);
        assert!(held.is_ok());
        let shed = app.clone().oneshot(request(6 * 1024)).await;
        assert_eq!(
            shed.map(|r| r.status()).ok(),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        let small = app.clone().oneshot(request(2 * 1024)).await;
        assert_eq!(small.map(|r| r.status()).ok(), Some(StatusCode::OK));
        drop(held);
        let large = app.oneshot(request(6 * 1024)).await;
        assert_eq!(large.map(|r| r.status()).ok(), Some(StatusCode::OK));
        assert_eq!(budget.kib.available_permits(), 10);
    }
}
