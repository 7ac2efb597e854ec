//! An in-process fake of the webhook's `/bootstrap` and of step-ca's `/1.0/sign` and
//! `/1.0/renew`, on one axum-over-TLS server (rcgen PKI: root → intermediate → leaves; the
//! server certificate for 127.0.0.1 is issued by the root).
//!
//! `/bootstrap` answers the scripted `(status, body)` pairs first, then 200 with token `ott-<n>`.
//! `/1.0/sign` signs the CSR (failing `sign_failures` times with 500 first); `/1.0/renew`
//! re-signs the last CSR, or answers `renew_status` when it is not 201. Lifetimes: `duration`
//! from now when set, else "backdated" (from now−2h to now+1h, i.e. already due for renewal).

use std::collections::VecDeque;
use std::ops::{Add, Sub};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use super::AgentConfig;
use crate::backoff::RetryPolicy;
use crate::pod_protocol::BootstrapResponse;

#[derive(Default)]
pub(crate) struct Log {
    pub script: VecDeque<(u16, String)>,
    pub auth: Vec<String>,
    pub bootstrap_bodies: Vec<String>,
    pub issued_tokens: usize,
    pub sign_otts: Vec<String>,
    pub sign_not_after: Vec<Option<String>>,
    pub sign_failures: usize,
    pub renews: usize,
    pub renew_status: u16,
    pub last_csr: Option<String>,
    pub duration: Option<String>,
}

struct AppState {
    log: Mutex<Log>,
    url: String,
    root_pem: String,
    inter_pem: String,
    inter: Issuer<'static, KeyPair>,
}

pub(crate) struct Fake {
    /// Serves everything without asking for a client certificate.
    pub url: String,
    /// Serves the same routes but requires a client certificate issued under the fake root:
    /// set it as `STEP_CA_URL` to prove that renewal authenticates with the current certificate.
    pub mtls_url: String,
    pub root_pem: String,
    state: Arc<AppState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn serve(
    listener: std::net::TcpListener,
    config: rustls::ServerConfig,
    app: Router,
) -> tokio::task::JoinHandle<()> {
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(async move {
        let _ = server.serve(app.into_make_service()).await;
    })
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn shift<T: Add<Duration, Output = T> + Sub<Duration, Output = T>>(t: T, secs: i64) -> T {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs < 0 { t - d } else { t + d }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

impl Fake {
    pub async fn start() -> Fake {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("Fake Agent Root");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let inter_key = KeyPair::generate().unwrap();
        let inter_params = ca_params("Fake Agent Intermediate");
        let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut sp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        sp.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = sp.signed_by(&server_key, &root_issuer).unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let state = Arc::new(AppState {
            log: Mutex::new(Log {
                renew_status: 201,
                ..Log::default()
            }),
            url: url.clone(),
            root_pem: root.pem(),
            inter_pem: inter.pem(),
            inter: Issuer::new(inter_params, inter_key),
        });
        let app = Router::new()
            .route("/bootstrap", post(bootstrap))
            .route("/1.0/sign", post(sign))
            .route("/1.0/renew", post(renew))
            .with_state(state.clone());
        let chain = vec![
            server.der().clone(),
            CertificateDer::from(root.der().to_vec()),
        ];
        let key_der = server_key.serialize_der();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let plain = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.clone())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(root.der().to_vec()))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mtls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                chain,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
            )
            .unwrap();
        let mtls_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        mtls_listener.set_nonblocking(true).unwrap();
        let mtls_url = format!(
            "https://127.0.0.1:{}",
            mtls_listener.local_addr().unwrap().port()
        );
        let tasks = vec![
            serve(listener, plain, app.clone()),
            serve(mtls_listener, mtls, app),
        ];
        Fake {
            url,
            mtls_url,
            root_pem: root.pem(),
            state,
            tasks,
        }
    }

    pub fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.state.log.lock().unwrap()
    }

    /// A config pointing at this fake, with a token file in `dir` and millisecond retries.
    pub fn config(&self, dir: &Path) -> AgentConfig {
        let token = dir.join("token");
        std::fs::write(&token, "projected-token\n").unwrap();
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        AgentConfig {
            certs_dir: certs,
            bootstrap_url: Some(format!("{}/bootstrap", self.url)),
            token_path: token,
            bootstrap_ca_pem: Some(self.root_pem.clone()),
            ca_url: None,
            key_algorithm: crate::pki::keys::KeyAlgorithm::EcdsaP256,
            owner: None,
            key_mode: 0o600,
            name: Some("app.default.svc".into()),
            sans: vec![],
            issuer: Some("step-ca".into()),
            duration: None,
            timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                transient_initial: Duration::from_millis(5),
                transient_max: Duration::from_millis(20),
                refused_initial: Duration::from_millis(10),
                refused_max: Duration::from_millis(40),
            },
            reload: None,
        }
    }
}

/// Sets the validity to `[now + from, now + to]` seconds.
fn set_validity(p: &mut CertificateParams, from: i64, to: i64) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let now = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(since.as_secs());
    p.not_before = shift(now, from);
    p.not_after = shift(now, to);
}

fn error(status: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"status": status, "message": message})),
    )
        .into_response()
}

async fn bootstrap(State(s): State<Arc<AppState>>, headers: HeaderMap, body: String) -> Response {
    let mut log = s.log.lock().unwrap();
    log.auth.push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    );
    log.bootstrap_bodies.push(body);
    if let Some((status, body)) = log.script.pop_front() {
        return (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response();
    }
    log.issued_tokens += 1;
    axum::Json(BootstrapResponse {
        token: format!("ott-{}", log.issued_tokens),
        ca_url: s.url.clone(),
        root_pem: s.root_pem.clone(),
        common_name: "app.default.svc".into(),
        sans: vec!["app.default.svc".into(), "app".into()],
        duration: log.duration.clone(),
    })
    .into_response()
}

/// Signs the CSR with the intermediate; the response has step-ca's shape.
fn issue(s: &AppState, csr: &str, duration: Option<&str>) -> Response {
    let Ok(mut req) = CertificateSigningRequestParams::from_pem(csr) else {
        return error(400, "bad csr");
    };
    match duration {
        Some(d) => {
            let d = crate::duration::parse_go_duration(d).unwrap();
            set_validity(&mut req.params, -60, d.as_secs() as i64);
        }
        None => set_validity(&mut req.params, -7200, 3600),
    }
    req.params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = req.signed_by(&s.inter).unwrap().pem();
    (
        StatusCode::CREATED,
        axum::Json(json!({"crt": leaf, "ca": s.inter_pem, "certChain": [leaf, s.inter_pem]})),
    )
        .into_response()
}

async fn sign(State(s): State<Arc<AppState>>, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap();
    let csr = body["csr"].as_str().unwrap_or_default().to_owned();
    let duration = {
        let mut log = s.log.lock().unwrap();
        log.sign_otts
            .push(body["ott"].as_str().unwrap_or_default().to_owned());
        log.sign_not_after
            .push(body["notAfter"].as_str().map(str::to_owned));
        if log.sign_failures > 0 {
            log.sign_failures -= 1;
            return error(
                500,
                "The certificate authority encountered an Internal Server Error.",
            );
        }
        log.last_csr = Some(csr.clone());
        log.duration.clone()
    };
    issue(&s, &csr, duration.as_deref())
}

async fn renew(State(s): State<Arc<AppState>>) -> Response {
    let (csr, duration) = {
        let mut log = s.log.lock().unwrap();
        log.renews += 1;
        if log.renew_status != 201 {
            return error(
                log.renew_status,
                "The request lacked necessary authorization to be completed.",
            );
        }
        (log.last_csr.clone(), log.duration.clone())
    };
    match csr {
        Some(csr) => issue(&s, &csr, duration.as_deref()),
        None => error(401, "unknown certificate"),
    }
}
