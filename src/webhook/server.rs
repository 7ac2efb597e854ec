//! The webhook's HTTP shell: the routes, the limits every request passes (in-flight cap,
//! request timeout, body sizes, `/bootstrap` rate limits), and the handlers that turn the pure
//! answers of [`mutate`] and [`bootstrap`] into HTTP responses. Every replica serves (no leader
//! election): the handlers keep no state between requests.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::issuer::IssuerAccess;
use crate::webhook::admission;
use crate::webhook::args::WebhookArgs;
use crate::webhook::body_budget::{self, BodyBudget, MUTATE_BODY_BUDGET};
use crate::webhook::bootstrap::{self, BootstrapSettings};
use crate::webhook::config::WebhookConfig;
use crate::webhook::issuers::KnownIssuers;
use crate::webhook::mutate::{self, BadRequest, InjectConfig, ReviewOutcome};
use crate::webhook::rate_limit::{self, BootstrapLimiter, Rate};

/// Largest body read: one byte over what `/mutate` accepts, so that `review` answers an
/// oversized AdmissionReview with its own Status-shaped 413.
const MAX_BODY: usize = mutate::MAX_REVIEW_BYTES + 1;
/// Largest /bootstrap body: the agents send `{}`, everything is in the token. Anything bigger is
/// refused (413) before the token costs a TokenReview, and before a megabyte is buffered for an
/// unauthenticated caller.
const MAX_BOOTSTRAP_BODY: usize = 4 * 1024;
/// Requests handled at once; more are answered 503 at once (the apiserver and the agents retry)
/// instead of queueing bodies in memory without bound.
const MAX_IN_FLIGHT: usize = 64;
/// A caller that has not sent its whole request within this is cut off (a body trickled a byte at
/// a time would otherwise hold its connection and buffer for good).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on one /bootstrap (TokenReview, Pod read, maybe a provisioner key decryption).
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the handlers share.
pub struct AppState {
    access: Arc<IssuerAccess>,
    /// Replaced when the step-ca root changes (see [`AppState::set_bootstrap_root`]).
    inject: RwLock<Arc<InjectConfig>>,
    bootstrap: BootstrapSettings,
    issuers: KnownIssuers,
}

impl AppState {
    pub fn new(access: Arc<IssuerAccess>, config: WebhookConfig, issuers: KnownIssuers) -> Self {
        Self {
            access,
            inject: RwLock::new(Arc::new(config.inject)),
            bootstrap: config.bootstrap,
            issuers,
        }
    }

    /// The injection settings in force.
    fn inject(&self) -> Arc<InjectConfig> {
        self.inject
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The root the injected agents trust for the webhook's TLS, after the serving certificate
    /// was renewed under another one.
    pub fn set_bootstrap_root(&self, root_pem: &str) {
        let mut inject = (*self.inject()).clone();
        inject.bootstrap_ca_pem = Some(root_pem.to_owned());
        *self.inject.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(inject);
    }
}

/// The routes with their limits: `/mutate` behind a budget of bodies in flight, `/bootstrap`
/// behind the rate limits, both behind the in-flight cap and the request timeout.
pub fn router(state: Arc<AppState>, args: &WebhookArgs) -> Router {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let limiter = Arc::new(BootstrapLimiter::new(
        Rate {
            per_second: args.bootstrap_rate,
            burst: args.bootstrap_burst,
        },
        Rate {
            per_second: args.bootstrap_client_rate,
            burst: args.bootstrap_client_burst,
        },
    ));
    let metrics = state.access.metrics.clone();
    let mutate_budget = BodyBudget::new(MUTATE_BODY_BUDGET, MAX_BODY);
    Router::new()
        .route(
            "/mutate",
            post(mutate_handler).layer(axum::middleware::from_fn(move |req, next| {
                body_budget::reserve(mutate_budget.clone(), req, next)
            })),
        )
        .route(
            "/bootstrap",
            post(bootstrap_handler).layer(axum::middleware::from_fn(move |req, next| {
                let metrics = metrics.clone();
                rate_limit::limit(
                    limiter.clone(),
                    move |_| metrics.count_bootstrap("RateLimited"),
                    req,
                    next,
                )
            })),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(move |req, next| {
            shed_and_time_out(in_flight.clone(), req, next)
        }))
        .with_state(state)
}

/// Answers 503 when [`MAX_IN_FLIGHT`] requests are being handled, and 408 when one (its body
/// read included) takes longer than [`REQUEST_TIMEOUT`].
async fn shed_and_time_out(
    in_flight: Arc<tokio::sync::Semaphore>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = in_flight.try_acquire() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "the webhook is handling as many requests as it may; retry",
        );
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => refusal(
            StatusCode::REQUEST_TIMEOUT,
            "Timeout",
            "the request was not received and answered within 30s",
        ),
    }
}

fn refusal(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"reason": reason, "message": message})),
    )
        .into_response()
}

async fn mutate_handler(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let started = Instant::now();
    // Filled in by `review` once it has read the request.
    let span = tracing::info_span!("admission", uid = Empty, namespace = Empty, pod = Empty);
    let _entered = span.enter();
    let outcome = mutate::review_with(&body, &state.inject(), &state.issuers);
    log_outcome(&outcome);
    let (status, json) = render(outcome);
    state
        .access
        .metrics
        .admission_duration
        .observe(started.elapsed().as_secs_f64());
    (status, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// One line per review: a denial or an injection at info, the rest at debug (the body of a bad
/// request is anyone's, so what it says is not logged above debug).
fn log_outcome(outcome: &ReviewOutcome) {
    match outcome {
        ReviewOutcome::Answer(answer) if !answer.allowed => {
            tracing::info!(message = %answer.result.message, "Pod denied");
        }
        ReviewOutcome::Answer(answer) if answer.patch.is_some() => {
            tracing::info!("Pod injected with the certificate agents");
        }
        ReviewOutcome::Answer(_) => tracing::debug!("Admitted unchanged"),
        ReviewOutcome::BadRequest { problem, message } => {
            tracing::debug!(?problem, %message, "Not an AdmissionReview to answer");
        }
    }
}

/// `/mutate`'s answer on the wire: 200 with the AdmissionReview, or a `Status`-shaped error:
/// 413 for a body over the limit, 400 for one that is no AdmissionReview, 500 if the answer
/// cannot be encoded.
pub fn render(outcome: ReviewOutcome) -> (StatusCode, Vec<u8>) {
    let (status, reason, message) = match outcome {
        ReviewOutcome::Answer(response) => match admission::encode(*response) {
            Ok(body) => return (StatusCode::OK, body),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("cannot serialize the AdmissionReview response: {e}"),
            ),
        },
        ReviewOutcome::BadRequest { problem, message } => match problem {
            BadRequest::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                message,
            ),
            BadRequest::Malformed => (StatusCode::BAD_REQUEST, "BadRequest", message),
        },
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": status.as_u16(),
    });
    (status, serde_json::to_vec(&body).unwrap_or_default())
}

/// Reads and drops a `/bootstrap` body. It is read so that HTTP/2 clients see the request
/// completed, not reset; an announced body over the limit is refused from its Content-Length
/// alone, so that a client that waits for `100 Continue` never sends it.
async fn drain_small_body(headers: &HeaderMap, body: axum::body::Body) -> Result<(), Response> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BOOTSTRAP_BODY as u64)
        || axum::body::to_bytes(body, MAX_BOOTSTRAP_BODY)
            .await
            .is_err()
    {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            &format!(
                "the body is larger than {MAX_BOOTSTRAP_BODY} bytes: /bootstrap needs no body, the token is all it reads"
            ),
        ));
    }
    Ok(())
}

async fn bootstrap_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Err(too_large) = drain_small_body(&headers, body).await {
        return too_large;
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Filled in by `bootstrap::handle` as it learns who calls; every line below carries it.
    let span = tracing::info_span!(
        "bootstrap",
        namespace = Empty,
        pod = Empty,
        uid = Empty,
        issuer = Empty
    );
    let result = async {
        let token = bootstrap::bearer(auth)?;
        let answer = bootstrap::handle(&state.access, &state.bootstrap, token);
        tokio::time::timeout(BOOTSTRAP_TIMEOUT, answer)
            .await
            .unwrap_or_else(|_| {
                Err(bootstrap::Refusal {
                    status: 503,
                    reason: "Timeout",
                    message: "bootstrap timed out talking to the Kubernetes API or step-ca; retry"
                        .into(),
                })
            })
    }
    .instrument(span.clone())
    .await;
    let _entered = span.enter();
    match result {
        Ok(answer) => {
            state.access.metrics.count_bootstrap("Issued");
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Err(refused) => {
            state.access.metrics.count_bootstrap(refused.reason);
            tracing::info!(reason = refused.reason, message = %refused.message, "Bootstrap refused");
            let status =
                StatusCode::from_u16(refused.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            refusal(status, refused.reason, &refused.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    fn app(in_flight: Arc<tokio::sync::Semaphore>) -> Router {
        Router::new()
            .route("/x", post(|| async { "ok" }))
            .layer(axum::middleware::from_fn(move |req, next| {
                shed_and_time_out(in_flight.clone(), req, next)
            }))
    }

    fn request() -> axum::extract::Request {
        axum::extract::Request::post("/x")
            .body(Body::empty())
            .expect("a request")
    }

    /// Security review H4: beyond the limit a request is answered 503 at once, not queued.
    #[tokio::test]
    async fn requests_beyond_the_limit_are_shed() {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(1));
        let busy = in_flight.clone().try_acquire_owned().expect("a permit");
        let shed = app(in_flight.clone())
            .oneshot(request())
            .await
            .expect("an answer");
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(busy);
        let served = app(in_flight).oneshot(request()).await.expect("an answer");
        assert_eq!(served.status(), StatusCode::OK);
    }
}
