//! `step-operator webhook`: HTTPS `/mutate` and `/bootstrap`; plain-HTTP admin endpoints.
//! Every replica serves (no leader election): the handlers keep no state between requests.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::cli::WebhookArgs;
use crate::crd::StepClusterIssuer;
use crate::issuer::IssuerAccess;
use crate::kube_client::{self, Use};
use crate::metrics::Metrics;
use crate::policy::{InvalidPolicy, IssuerPolicy};
use crate::webhook::body_budget::{self, BodyBudget, MUTATE_BODY_BUDGET};
use crate::webhook::bootstrap::{self, BootstrapSettings};
use crate::webhook::config;
use crate::webhook::mutate::{self, InjectConfig};
use crate::webhook::rate_limit::{self, BootstrapLimiter, Rate};
use crate::webhook::serving;

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

struct AppState {
    ctx: Arc<IssuerAccess>,
    inject: RwLock<Arc<InjectConfig>>,
    bootstrap: BootstrapSettings,
    issuers: KnownIssuers,
}

/// The StepClusterIssuers' policies as admission sees them: a watched cache, so that `/mutate`
/// makes no API call. `/bootstrap` reads the issuer fresh and decides for good.
struct KnownIssuers(Store<StepClusterIssuer>);

impl mutate::IssuerPolicies for KnownIssuers {
    fn policy_of(&self, issuer: &str) -> Option<Result<IssuerPolicy, InvalidPolicy>> {
        let known = self.0.get(&ObjectRef::new(issuer))?;
        Some(crate::policy::issuer::for_pods(
            known.spec.policy.as_ref().map(|p| p.input()),
        ))
    }
}

/// Watches the StepClusterIssuers into a cache for admission. A failing watch leaves the cache
/// as it was (admission then falls back to the webhook's own policy for unknown issuers).
fn watch_issuers(client: kube::Client) -> KnownIssuers {
    let (store, writer) = reflector::store::<StepClusterIssuer>();
    let stream = watcher(
        Api::<StepClusterIssuer>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "Watching StepClusterIssuers for admission failed; retrying");
            }
        }
    });
    KnownIssuers(store)
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let (kube_config, client) = kube_client::connect(Use::Calls, args.cluster.kube_timeout).await?;
    let watch_client = kube_client::client(kube_config, Use::Watches, args.cluster.kube_timeout)?;
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, ready_rx) = watch::channel(false);
    let admin = tokio::spawn(crate::admin::serve(
        args.admin_addr(),
        ready_rx,
        metrics.clone(),
    ));

    // Checked before anything else so that a bad flag fails at once; built again below with the
    // bootstrap root once the serving certificate is known.
    config::from_args(&args, "")?;
    // The webhook reaches issuers as the controller does, and writes no status and no Event.
    let ctx = Arc::new(IssuerAccess {
        client,
        metrics: metrics.clone(),
        signers: Default::default(),
        cluster_resource_namespace: args.issuers.cluster_resource_namespace.clone(),
        ca_timeout: args.issuers.ca_timeout,
        // Pods name StepClusterIssuers only, which the deny-list does not restrict.
        forbidden_ca_cidrs: Default::default(),
    });

    let names = serving::serving_names(
        &args.service_name,
        &args.pod.pod_namespace,
        &args.cluster.cluster_domain,
        &args.tls_sans,
    );
    let issuers = watch_issuers(watch_client);
    let first = obtain_until_ready(&ctx, &args, &names).await;
    // Ready once the issuers are known too: a pod admitted before would be checked against the
    // webhook's own policy only, and one that its issuer allows more would be denied.
    if let Err(e) =
        tokio::time::timeout(Duration::from_secs(60), issuers.0.wait_until_ready()).await
    {
        tracing::warn!(error = %e, "StepClusterIssuers not listed within 60s; admitting with the webhook's own policy for issuers not known yet");
    }
    let tls = RustlsConfig::from_pem(
        first.chain_pem.as_bytes().to_vec(),
        first.key_pem.as_bytes().to_vec(),
    )
    .await
    .context("loading the serving certificate")?;

    let config = config::from_args(&args, &first.root_pem)?;
    let state = Arc::new(AppState {
        ctx: ctx.clone(),
        inject: RwLock::new(Arc::new(config.inject)),
        bootstrap: config.bootstrap,
        issuers,
    });

    tokio::spawn(keep_serving_cert(
        ctx.clone(),
        args.clone(),
        names,
        tls.clone(),
        first,
        state.clone(),
    ));

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
    let limited_metrics = metrics.clone();
    let mutate_budget = BodyBudget::new(MUTATE_BODY_BUDGET, MAX_BODY);
    let app = Router::new()
        .route(
            "/mutate",
            post(mutate_handler).layer(axum::middleware::from_fn(move |req, next| {
                body_budget::reserve(mutate_budget.clone(), req, next)
            })),
        )
        .route(
            "/bootstrap",
            post(bootstrap_handler).layer(axum::middleware::from_fn(move |req, next| {
                let metrics = limited_metrics.clone();
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
        .with_state(state);
    let handle = axum_server::Handle::new();
    let server = axum_server::bind_rustls(args.listen_addr, tls)
        .handle(handle.clone())
        .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>());
    let _ = ready_tx.send(true);
    tracing::info!(addr = %args.listen_addr, "Webhook serving HTTPS");
    tokio::select! {
        r = server => r.context("the HTTPS server stopped")?,
        r = admin => anyhow::bail!("admin server stopped: {r:?}"),
        _ = crate::signal::shutdown_signal() => {
            tracing::info!("Shutting down");
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        }
    }
    Ok(())
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

/// Keeps trying to get the first serving certificate; the pod stays unready meanwhile.
async fn obtain_until_ready(
    ctx: &IssuerAccess,
    args: &WebhookArgs,
    names: &[String],
) -> serving::Serving {
    let mut delay = Duration::from_secs(1);
    loop {
        match serving::issue(ctx, &args.default_issuer, names, args.serving_cert_duration).await {
            Ok(s) => {
                tracing::info!(names = ?names, not_after = %s.not_after, "Obtained the serving certificate from step-ca");
                sync_bundle(ctx, args, &s.root_pem).await;
                return s;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "Cannot obtain the serving certificate yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn sync_bundle(ctx: &IssuerAccess, args: &WebhookArgs, root: &str) {
    match serving::sync_ca_bundle(ctx, &args.webhook_config_name, root).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(config = %args.webhook_config_name, "No MutatingWebhookConfiguration to update")
        }
        Err(e) => {
            tracing::warn!(config = %args.webhook_config_name, error = %e, "Failed to update the caBundle")
        }
    }
}

/// Renews the serving certificate at 2/3 of its lifetime and swaps it in; re-syncs the caBundle
/// every minute in case someone (a Helm upgrade) reset it.
async fn keep_serving_cert(
    ctx: Arc<IssuerAccess>,
    args: WebhookArgs,
    names: Vec<String>,
    tls: RustlsConfig,
    mut current: serving::Serving,
    state: Arc<AppState>,
) {
    loop {
        let renew_at = crate::pki::chain::renew_at(
            current.not_before,
            current.not_after,
            rand::random::<f64>(),
        );
        loop {
            let now = chrono::Utc::now();
            if now >= renew_at {
                break;
            }
            let wait = (renew_at - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(60));
            tokio::time::sleep(wait).await;
            sync_bundle(&ctx, &args, &current.root_pem).await;
        }
        match serving::issue(
            &ctx,
            &args.default_issuer,
            &names,
            args.serving_cert_duration,
        )
        .await
        {
            Ok(next) => {
                if let Err(e) = tls
                    .reload_from_pem(
                        next.chain_pem.as_bytes().to_vec(),
                        next.key_pem.as_bytes().to_vec(),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "Failed to load the renewed serving certificate; keeping the old one");
                    continue;
                }
                tracing::info!(not_after = %next.not_after, "Renewed the serving certificate");
                if next.root_pem != current.root_pem {
                    let mut inject = state
                        .inject
                        .read()
                        .map(|c| (**c).clone())
                        .unwrap_or_else(|p| (**p.into_inner()).clone());
                    inject.bootstrap_ca_pem = Some(next.root_pem.clone());
                    if let Ok(mut slot) = state.inject.write() {
                        *slot = Arc::new(inject);
                    }
                }
                sync_bundle(&ctx, &args, &next.root_pem).await;
                current = next;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Failed to renew the serving certificate; retrying in 10s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

async fn mutate_handler(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let cfg = state
        .inject
        .read()
        .map(|c| c.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let (status, json) = mutate::review_with(&body, &cfg, &state.issuers);
    state
        .ctx
        .metrics
        .admission_duration
        .observe(started.elapsed().as_secs_f64());
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response()
}

// The body is read (and ignored) so that HTTP/2 clients see the request completed, not reset;
// an announced body over the limit is refused from its Content-Length alone, so that a client that
// waits for `100 Continue` never sends it.
async fn bootstrap_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            &format!(
                "the body is larger than {MAX_BOOTSTRAP_BODY} bytes: /bootstrap needs no body, the token is all it reads"
            ),
        )
    };
    if announced.is_some_and(|n| n > MAX_BOOTSTRAP_BODY as u64) {
        return too_large();
    }
    if axum::body::to_bytes(body, MAX_BOOTSTRAP_BODY)
        .await
        .is_err()
    {
        return too_large();
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let result = match bootstrap::bearer(auth) {
        Ok(token) => match tokio::time::timeout(
            BOOTSTRAP_TIMEOUT,
            bootstrap::handle(&state.ctx, &state.bootstrap, token),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(bootstrap::Refusal {
                status: 503,
                reason: "Timeout",
                message: "bootstrap timed out talking to the Kubernetes API or step-ca; retry"
                    .into(),
            }),
        },
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(answer) => {
            state.ctx.metrics.count_bootstrap("Issued");
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Err(refusal) => {
            state.ctx.metrics.count_bootstrap(refusal.reason);
            tracing::info!(reason = refusal.reason, message = %refusal.message, "Bootstrap refused");
            (
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                axum::Json(
                    serde_json::json!({"reason": refusal.reason, "message": refusal.message}),
                ),
            )
                .into_response()
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
