//! Plain-HTTP admin server: `/healthz` (the process is alive), `/readyz` (it can do its job) and
//! `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    ready: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

pub fn router(ready: watch::Receiver<bool>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AdminState { ready, metrics })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if *s.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    match s.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// How the admin server guards itself against clients that connect and say little: they can
/// reach it from any pod while the NetworkPolicy is off.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A connection whose request headers are not all in within this is closed, and so is one
    /// idle this long between requests. Probes and scrapes send theirs at once.
    pub header_read_timeout: Duration,
    /// Connections open at once; beyond it new ones are closed at once. Far above what the
    /// kubelet and Prometheus use, so that a flood must exceed it to crowd out the probes.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Serves the admin endpoints until the process ends.
/// Starts the admin server on `addr`: returns the switch of its `/readyz` (not ready until set)
/// and its task, which ends only if the server fails.
pub fn start(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (ready_tx, ready_rx) = watch::channel(false);
    (ready_tx, tokio::spawn(serve(addr, ready_rx, metrics)))
}

pub async fn serve(
    addr: SocketAddr,
    ready: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the admin server to {addr}: {e}"))?;
    tracing::info!(%addr, "Admin server listening");
    serve_on(listener, router(ready, metrics), Limits::default()).await;
    Ok(())
}

/// The longest an accept error waits for a connection to end before accepting again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `app` over HTTP/1 on `listener` within `limits`, until the process ends. (`axum::serve`
/// sets no timer, which turns hyper's header-read timeout off, and takes every connection.)
pub async fn serve_on(listener: TcpListener, app: Router, limits: Limits) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    // Signalled when a connection ends and gives its file descriptor back.
    let closed = Arc::new(tokio::sync::Notify::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait for one of our connections to end
                // (at most ACCEPT_RETRY: the descriptors may be held elsewhere in the process).
                tracing::warn!(error = %e, "The admin server cannot accept a connection");
                let _ = tokio::time::timeout(ACCEPT_RETRY, closed.notified()).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(
                max = limits.max_connections,
                "Admin connection refused: too many open"
            );
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let closed = closed.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "Admin connection ended");
            }
            closed.notify_one();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn readyz_follows_the_watch() {
        let (tx, rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let app = router(rx, metrics);
        let get = |p: &'static str| Request::get(p).body(Body::empty()).unwrap();
        let r = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        tx.send(true).unwrap();
        let r = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.oneshot(get("/metrics")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for name in [
            "step_operator_issuance_duration_seconds",
            "step_operator_pod_certificate_issuance_duration_seconds",
        ] {
            assert!(text.contains(name), "no {name} in {text}");
        }
    }

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> SocketAddr {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("binding the admin listener: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        let (_tx, rx) = watch::channel(true);
        tokio::spawn(serve_on(
            listener,
            router(rx, Arc::new(Metrics::default())),
            limits,
        ));
        addr
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => panic!("connecting to {addr}: {e}"),
        }
    }

    /// Sends a whole `GET /healthz` on a fresh connection; returns what came back.
    async fn healthz(addr: SocketAddr) -> String {
        let mut s = connect(addr).await;
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        if let Err(e) = s.write_all(request).await {
            return format!("write failed: {e}");
        }
        let mut answer = Vec::new();
        match s.read_to_end(&mut answer).await {
            Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
            Err(e) => format!("read failed: {e}"),
        }
    }

    /// Whether the server closed `s` (EOF or reset) within `within`.
    async fn closed_within(mut s: TcpStream, within: Duration) -> Result<(), String> {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(within, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await
        {
            Ok(()) => Ok(()),
            Err(_) => Err(format!("still open after {within:?}")),
        }
    }

    /// Security review L3: 500 connections that never finish their headers are closed after the
    /// header-read timeout, and /healthz answers on a fresh connection meanwhile.
    #[tokio::test]
    async fn slow_headers_are_cut_off_and_healthz_answers_meanwhile() {
        let timeout = Duration::from_secs(1);
        let addr = start(Limits {
            header_read_timeout: timeout,
            max_connections: 1024,
        })
        .await;
        let mut flood = Vec::new();
        for _ in 0..500 {
            let mut s = connect(addr).await;
            if let Err(e) = s.write_all(b"GET /healthz HTTP/1.1\r\n").await {
                panic!("writing the partial request: {e}");
            }
            flood.push(s);
        }
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), healthz(addr))
            .await
            .unwrap_or_else(|_| "no answer within 5s".to_owned());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        // Generous: the timeout plus time for 500 closes on a busy machine.
        let deadline = timeout + Duration::from_secs(10);
        let mut still_open = 0;
        for s in flood {
            let left = deadline.saturating_sub(started.elapsed());
            if closed_within(s, left).await.is_err() {
                still_open += 1;
            }
        }
        assert_eq!(
            still_open, 0,
            "{still_open} of 500 slow connections still open {deadline:?} after the flood"
        );
    }

    /// Beyond the connection limit a new connection is closed at once, and served again once one
    /// of the others has gone.
    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed() {
        let addr = start(Limits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 4,
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(connect(addr).await);
        }
        // The server takes the permits as it accepts: wait until the fifth is turned away.
        let turned_away = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let answer = healthz(addr).await;
                if !answer.starts_with("HTTP/1.1 200") {
                    return answer;
                }
            }
        })
        .await;
        assert!(
            turned_away.is_ok(),
            "a fifth connection was still served after 5s"
        );
        drop(held.pop());
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let answer = healthz(addr).await;
                if answer.starts_with("HTTP/1.1 200") {
                    return answer;
                }
            }
        })
        .await;
        assert!(
            answer.is_ok(),
            "no connection served within 5s after one of the four went"
        );
    }
}
