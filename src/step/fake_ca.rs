//! An in-process fake step-ca for unit tests: axum over TLS (rcgen certificates) on
//! 127.0.0.1:0, implementing just enough of protocol doc §2, §5 and §6.
//!
//! Provisioners (two pages, cursor `page2`):
//! - page 1: `acme` (ACME), `admin` (JWK, key encrypted with another password)
//! - page 2: `admin` (type `jwk`, key encrypted with [`FakeCa::PASSWORD`]), `ed` (JWK, no
//!   encryptedKey)
//!
//! `POST /1.0/sign` switches on the CSR text: `FORBIDDEN` → 403, `BOOM` → 500, `HTML` → 502 HTML,
//! `UNAUTH` → 401; anything else → 201 after verifying the token signature, with a leaf signed
//! by the fake root when the CSR is real PEM, else the placeholder chain `LEAF`, `INTERMEDIATE`.
//! A token with a `cnf` must match the CSR's first PEM block (403 otherwise, as step-ca says).
//!
//! `POST /1.0/revoke` verifies the token like sign does, requires `sub` = the body's serial,
//! then answers 200, or 400 "already revoked" for a serial seen before, or the status set with
//! [`FakeCa::answer_revokes_with`] (501 for a CA without a database). `GET /version` answers
//! `0.30.2`, or what [`FakeCa::set_version`] says (404 for `None`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use josekit::jwk::Jwk;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::client::{Client, ClientIdentity};
use super::provisioner::tests::{KeyKind, encrypt_jwk, generate_private_jwk};

/// Installs the ring provider, ignoring "already installed".
pub(crate) fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Certificates of one fake CA.
pub(crate) struct FakeCerts {
    pub root_pem: String,
    pub root_der: Vec<u8>,
    /// Signs the CSRs that `/1.0/sign` receives as real PEM.
    root_key_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    client_cert_pem: String,
    client_key_pem: String,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<(String, String)>>,
    /// When set, `/1.0/sign` answers this HTTP status, whatever the CSR.
    sign_status: Mutex<Option<u16>>,
    last_sign: Mutex<Option<Value>>,
    verified: Mutex<bool>,
    /// `None` (the default) answers 0.30.2; `Some(None)` answers 404.
    version: Mutex<Option<Option<String>>>,
    revoke_status: Mutex<Option<u16>>,
    last_revoke: Mutex<Option<Value>>,
    revoked: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    kid: String,
    jwe: String,
    other_kid: String,
    other_jwe: String,
    public_jwk: Value,
    page1: Value,
    page2: Value,
    root_pem: String,
    root_key_pem: String,
}

/// What a hostile "CA" does: the answers a tenant's own server could give to a StepIssuer whose
/// URL points at it.
#[derive(Clone)]
pub(crate) enum Hostile {
    /// Every route: 200 with a body that never ends (chunked, no Content-Length).
    EndlessBody,
    /// Every route: 302 to this URL.
    RedirectTo(String),
    /// Every route: this status and body.
    Answer { status: u16, body: String },
    /// `/health` is fine; each `/1.0/provisioners` page comes after `delay`, with one
    /// provisioner and a new `nextCursor`, for ever.
    EndlessPages { delay: std::time::Duration },
    /// `/health` is fine; `/1.0/provisioners` lists `count` JWK provisioners named `name`,
    /// each with the encrypted key `jwe`, 100 a page.
    SameName {
        name: String,
        count: usize,
        jwe: String,
    },
    /// `/health` is fine; `/1.0/provisioners` is one page of `count` provisioners.
    LongPage { count: usize },
}

/// A TLS server under the fake CA's certificates that answers every request as [`Hostile`] says
/// and counts the requests and the body bytes it sent.
pub(crate) struct HostileCa {
    pub url: String,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    pages: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileCa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileCa {
    pub async fn start(certs: &FakeCerts, behaviour: Hostile) -> HostileCa {
        install_provider();
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pages = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (sent_counter, page_counter) = (sent.clone(), pages.clone());
        let app = Router::new().fallback(move |req: Request| {
            let behaviour = behaviour.clone();
            let (sent, pages) = (sent_counter.clone(), page_counter.clone());
            async move { hostile_answer(behaviour, req, sent, pages).await }
        });
        let (url, task) = serve_tls(certs, false, app);
        HostileCa {
            url,
            sent,
            pages,
            task,
        }
    }

    /// Body bytes handed to the connection so far.
    pub fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `/1.0/provisioners` pages answered so far.
    pub fn pages(&self) -> usize {
        self.pages.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn hostile_answer(
    behaviour: Hostile,
    req: Request,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    pages: Arc<std::sync::atomic::AtomicUsize>,
) -> Response {
    use std::sync::atomic::Ordering::SeqCst;
    let path = req.uri().path().to_owned();
    let cursor: usize = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("cursor=")))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let listing = path == "/1.0/provisioners";
    if listing {
        pages.fetch_add(1, SeqCst);
    }
    match behaviour {
        Hostile::EndlessBody => {
            let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures::stream::repeat_with(move || {
                sent.fetch_add(chunk.len(), SeqCst);
                Ok::<_, std::io::Error>(chunk.clone())
            });
            axum::body::Body::from_stream(stream).into_response()
        }
        Hostile::RedirectTo(to) => {
            (StatusCode::FOUND, [(axum::http::header::LOCATION, to)]).into_response()
        }
        Hostile::Answer { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        _ if path == "/health" => axum::Json(json!({"status": "ok"})).into_response(),
        Hostile::EndlessPages { delay } if listing => {
            // The hostile CA itself is slow on purpose (what the connect deadline must cut off);
            // nothing waits on this to synchronise.
            tokio::time::sleep(delay).await;
            axum::Json(json!({
                "provisioners": [{"type": "JWK", "name": "other"}],
                "nextCursor": (cursor + 1).to_string(),
            }))
            .into_response()
        }
        Hostile::SameName { name, count, jwe } if listing => {
            let start = cursor * 100;
            let end = (start + 100).min(count);
            let list: Vec<Value> = (start..end)
                .map(|_| json!({"type": "JWK", "name": name, "key": {}, "encryptedKey": jwe}))
                .collect();
            let next = if end < count {
                (cursor + 1).to_string()
            } else {
                String::new()
            };
            axum::Json(json!({"provisioners": list, "nextCursor": next})).into_response()
        }
        Hostile::LongPage { count } if listing => {
            let list: Vec<Value> = (0..count)
                .map(|i| json!({"type": "JWK", "name": format!("p{i}")}))
                .collect();
            axum::Json(json!({"provisioners": list, "nextCursor": ""})).into_response()
        }
        _ => step_error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Serves `app` over TLS with the fake server certificate on 127.0.0.1:0; with
/// `require_client_cert`, every handshake needs a client certificate from the fake root.
/// Returns the base URL and the server task.
fn serve_tls(
    certs: &FakeCerts,
    require_client_cert: bool,
    app: Router,
) -> (String, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(certs.root_der.clone()))
            .unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let server_config = builder
        .with_single_cert(
            certs.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.server_key.clone())),
        )
        .unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server_config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    let task = tokio::spawn(async move {
        let _ = server.serve(app.into_make_service()).await;
    });
    (format!("https://127.0.0.1:{port}"), task)
}

pub(crate) struct FakeCa {
    pub url: String,
    pub certs: FakeCerts,
    pub kid: String,
    pub other_kid: String,
    pub ed_kid: String,
    pub jwe: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn public_of(jwk: &Jwk) -> Value {
    let mut map: serde_json::Map<String, Value> = jwk.to_public_key().unwrap().into();
    map.insert("use".into(), json!("sig"));
    map.insert("kid".into(), json!(jwk.key_id().unwrap()));
    map.insert("alg".into(), json!(jwk.algorithm().unwrap()));
    Value::Object(map)
}

impl FakeCa {
    pub const PASSWORD: &'static [u8] = b"fake-ca-password";

    /// A fresh root, a server certificate for 127.0.0.1/localhost and a client certificate.
    pub fn certs() -> FakeCerts {
        let root_key = KeyPair::generate().unwrap();
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params
            .distinguished_name
            .push(DnType::CommonName, "Fake Root CA");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_key_pem = root_key.serialize_pem();
        let issuer = Issuer::new(root_params, root_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server_params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server_params.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["client.example".to_owned()]).unwrap();
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &issuer).unwrap();

        FakeCerts {
            root_pem: root.pem(),
            root_der: root.der().to_vec(),
            root_key_pem,
            server_chain: vec![server.der().clone(), root.der().clone()],
            server_key: server_key.serialize_der(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// Starts a fake CA that accepts but does not require client certificates.
    pub async fn start() -> FakeCa {
        Self::start_with(false).await
    }

    /// Starts a fake CA; with `require_client_cert`, every TLS handshake needs a client
    /// certificate issued by the fake root (used to prove mTLS renewal sends the identity).
    pub async fn start_with(require_client_cert: bool) -> FakeCa {
        install_provider();
        let certs = Self::certs();

        let admin = generate_private_jwk(KeyKind::P256);
        let kid = admin.key_id().unwrap().to_owned();
        let jwe = encrypt_jwk(&admin, Self::PASSWORD, 1000, "A256GCM");
        let other = generate_private_jwk(KeyKind::P256);
        let other_kid = other.key_id().unwrap().to_owned();
        let other_jwe = encrypt_jwk(&other, b"another-password", 1000, "A128GCM");
        let ed = generate_private_jwk(KeyKind::Ed25519);
        let ed_kid = ed.key_id().unwrap().to_owned();

        let page1 = json!({
            "provisioners": [
                {"type": "ACME", "name": "acme", "forceCN": true},
                {"type": "JWK", "name": "admin", "key": public_of(&other), "encryptedKey": other_jwe},
            ],
            "nextCursor": "page2",
        });
        let page2 = json!({
            "provisioners": [
                {"type": "jwk", "name": "admin", "key": public_of(&admin), "encryptedKey": jwe,
                 "claims": {"minTLSCertDuration": "5m0s", "maxTLSCertDuration": "2160h",
                            "defaultTLSCertDuration": "24h0m0s", "disableRenewal": false}},
                {"type": "JWK", "name": "ed", "key": public_of(&ed)},
            ],
            "nextCursor": "",
        });

        let shared = Arc::new(Shared::default());
        let state = AppState {
            shared: shared.clone(),
            kid: kid.clone(),
            jwe: jwe.clone(),
            other_kid: other_kid.clone(),
            other_jwe,
            public_jwk: public_of(&admin),
            page1,
            page2,
            root_pem: certs.root_pem.clone(),
            root_key_pem: certs.root_key_pem.clone(),
        };
        let app = Router::new()
            .route(
                "/health",
                get(|| async { axum::Json(json!({"status": "ok"})) }),
            )
            .route("/version", get(version))
            .route("/1.0/roots", get(roots))
            .route("/1.0/federation", get(federation))
            .route("/1.0/provisioners", get(provisioners))
            .route("/1.0/provisioners/{kid}/encrypted-key", get(encrypted_key))
            .route("/1.0/sign", post(sign))
            .route("/1.0/renew", post(renew))
            .route("/1.0/revoke", post(revoke))
            .layer(middleware::from_fn_with_state(state.clone(), record))
            .with_state(state);

        let (url, task) = serve_tls(&certs, require_client_cert, app);

        FakeCa {
            url,
            certs,
            kid,
            other_kid,
            ed_kid,
            jwe,
            shared,
            task,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(
            &format!("{}/", self.url),
            Some(self.certs.root_pem.as_bytes()),
            std::time::Duration::from_secs(5),
        )
        .unwrap()
    }

    pub fn client_identity(&self) -> ClientIdentity {
        ClientIdentity {
            cert_chain_pem: self.certs.client_cert_pem.clone(),
            key_pem: Zeroizing::new(self.certs.client_key_pem.clone()),
        }
    }

    /// `"METHOD path?query"` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests_with_header()
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    /// Requests with their `X-Request-Id` header.
    pub fn requests_with_header(&self) -> Vec<(String, String)> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// From now on `/1.0/sign` answers `status`.
    pub fn answer_signs_with(&self, status: u16) {
        *self.shared.sign_status.lock().unwrap() = Some(status);
    }

    /// From now on `/version` answers `version`, or 404 for `None`.
    pub fn set_version(&self, version: Option<&str>) {
        *self.shared.version.lock().unwrap() = Some(version.map(str::to_owned));
    }

    /// From now on `/1.0/revoke` answers `status` (after recording the body).
    pub fn answer_revokes_with(&self, status: u16) {
        *self.shared.revoke_status.lock().unwrap() = Some(status);
    }

    pub fn last_revoke_body(&self) -> Option<Value> {
        self.shared.last_revoke.lock().unwrap().clone()
    }

    /// The claims of the token in the latest sign request.
    pub fn last_sign_claims(&self) -> Option<Value> {
        let body = self.last_sign_body()?;
        Some(token_claims(body["ott"].as_str()?))
    }

    pub fn last_sign_body(&self) -> Option<Value> {
        self.shared.last_sign.lock().unwrap().clone()
    }

    pub fn last_sign_token_verified(&self) -> bool {
        *self.shared.verified.lock().unwrap()
    }
}

async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default()
    );
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    state.shared.requests.lock().unwrap().push((line, id));
    next.run(req).await
}

fn step_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": status.as_u16(), "message": message})),
    )
        .into_response()
}

async fn roots(State(state): State<AppState>) -> Response {
    (
        StatusCode::CREATED,
        axum::Json(json!({"crts": [state.root_pem]})),
    )
        .into_response()
}

/// The fake's own root, then another CA's (the client certificate stands in for one).
async fn federation(State(state): State<AppState>) -> Response {
    (
        StatusCode::CREATED,
        axum::Json(json!({"crts": [state.root_pem, FEDERATED_PEM]})),
    )
        .into_response()
}

/// Any PEM text other than the fake's root: only its identity matters to the callers.
pub(crate) const FEDERATED_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nRkVERVJBVEVE\n-----END CERTIFICATE-----\n";

async fn provisioners(
    State(state): State<AppState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    match q.get("cursor").map(String::as_str) {
        None | Some("") => axum::Json(state.page1).into_response(),
        Some("page2") => axum::Json(state.page2).into_response(),
        Some(_) => step_error(StatusCode::BAD_REQUEST, "invalid cursor"),
    }
}

async fn encrypted_key(State(state): State<AppState>, Path(kid): Path<String>) -> Response {
    if kid == state.kid {
        axum::Json(json!({"key": state.jwe})).into_response()
    } else if kid == state.other_kid {
        axum::Json(json!({"key": state.other_jwe})).into_response()
    } else {
        step_error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found. Please see the certificate authority logs for more info.",
        )
    }
}

fn verify_token(state: &AppState, token: &str) -> bool {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return false;
    }
    let Ok(header) = URL_SAFE_NO_PAD.decode(parts[0]) else {
        return false;
    };
    let Ok(header) = serde_json::from_slice::<Value>(&header) else {
        return false;
    };
    if header["kid"] != json!(state.kid) || header["alg"] != "ES256" {
        return false;
    }
    let Ok(sig) = URL_SAFE_NO_PAD.decode(parts[2]) else {
        return false;
    };
    let Value::Object(map) = state.public_jwk.clone() else {
        return false;
    };
    let jwk = Jwk::from_map(map).unwrap();
    let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
    use josekit::jws::JwsVerifier as _;
    verifier
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .is_ok()
}

/// The claims of a compact JWS, unverified; `Value::Null` when it is not one.
pub(crate) fn token_claims(token: &str) -> Value {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null)
}

async fn version(State(state): State<AppState>) -> Response {
    match state.shared.version.lock().unwrap().clone() {
        None => axum::Json(json!({"version": "0.30.2"})).into_response(),
        Some(Some(v)) => axum::Json(json!({"version": v})).into_response(),
        Some(None) => step_error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn revoke(State(state): State<AppState>, body: String) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return step_error(StatusCode::BAD_REQUEST, "error decoding json");
    };
    *state.shared.last_revoke.lock().unwrap() = Some(body.clone());
    if let Some(status) = *state.shared.revoke_status.lock().unwrap() {
        let status = StatusCode::from_u16(status).unwrap();
        return step_error(status, "The certificate authority cannot do that.");
    }
    let ott = body["ott"].as_str().unwrap_or_default();
    let claims = token_claims(ott);
    let serial = body["serial"].as_str().unwrap_or_default().to_owned();
    if !verify_token(&state, ott)
        || !claims["aud"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/1.0/revoke")
    {
        return step_error(
            StatusCode::UNAUTHORIZED,
            "The request lacked necessary authorization to be completed.",
        );
    }
    if claims["sub"] != json!(serial) || body["passive"] != json!(true) {
        return step_error(
            StatusCode::FORBIDDEN,
            "The request was forbidden by the certificate authority: token subject does not match the serial.",
        );
    }
    let mut revoked = state.shared.revoked.lock().unwrap();
    if revoked.contains(&serial) {
        return step_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "The request could not be completed: certificate with serial number '{serial}' is already revoked."
            ),
        );
    }
    revoked.push(serial);
    axum::Json(json!({"status": "ok"})).into_response()
}

/// The 403 step-ca gives when the token's `cnf` names another CSR; `None` when it matches or
/// there is none.
fn cnf_mismatch(body: &Value) -> Option<Response> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::Digest as _;
    let claims = token_claims(body["ott"].as_str().unwrap_or_default());
    let want = claims["cnf"]["x5rt#S256"].as_str()?;
    let der = pem::parse(body["csr"].as_str().unwrap_or_default())
        .map(|b| b.into_contents())
        .unwrap_or_default();
    let got = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der));
    (got != want).then(|| {
        step_error(
            StatusCode::FORBIDDEN,
            &format!("The request was forbidden by the certificate authority: certificate request fingerprint does not match \"{want}\"."),
        )
    })
}

async fn sign(State(state): State<AppState>, _headers: HeaderMap, body: String) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return step_error(StatusCode::BAD_REQUEST, "error decoding json");
    };
    *state.shared.last_sign.lock().unwrap() = Some(body.clone());
    if let Some(status) = *state.shared.sign_status.lock().unwrap() {
        let status = StatusCode::from_u16(status).unwrap();
        return step_error(status, "The certificate authority is not well today.");
    }
    if let Some(refused) = cnf_mismatch(&body) {
        return refused;
    }
    match body["csr"].as_str().unwrap_or_default() {
        "FORBIDDEN" => step_error(
            StatusCode::FORBIDDEN,
            "The request was forbidden by the certificate authority: certificate request does not contain the valid DNS names - got [a.example], want [b.example].",
        ),
        "BOOM" => step_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The certificate authority encountered an Internal Server Error. Please see the certificate authority logs for more info.",
        ),
        "UNAUTH" => step_error(
            StatusCode::UNAUTHORIZED,
            "The request lacked necessary authorization to be completed. Please see the certificate authority logs for more info.",
        ),
        "HTML" => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        _ => {
            let ott = body["ott"].as_str().unwrap_or_default();
            *state.shared.verified.lock().unwrap() = verify_token(&state, ott);
            if let Some(leaf) = sign_real_csr(&state, body["csr"].as_str().unwrap_or_default()) {
                return (
                    StatusCode::CREATED,
                    axum::Json(json!({
                        "crt": leaf,
                        "ca": state.root_pem,
                        "certChain": [leaf, state.root_pem],
                    })),
                )
                    .into_response();
            }
            (
                StatusCode::CREATED,
                axum::Json(json!({
                    "crt": "LEAF",
                    "ca": "INTERMEDIATE",
                    "certChain": ["LEAF", "INTERMEDIATE"],
                    "tlsOptions": {"minVersion": 1.2},
                })),
            )
                .into_response()
        }
    }
}

/// A leaf for a real PEM CSR, signed by the fake root; `None` for the placeholder CSRs.
fn sign_real_csr(state: &AppState, csr: &str) -> Option<String> {
    let params = rcgen::CertificateSigningRequestParams::from_pem(csr).ok()?;
    let key = KeyPair::from_pem(&state.root_key_pem).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&state.root_pem, key).unwrap();
    Some(params.signed_by(&issuer).unwrap().pem())
}

async fn renew() -> Response {
    (
        StatusCode::CREATED,
        axum::Json(json!({"crt": "RENEWED", "ca": "INTERMEDIATE"})),
    )
        .into_response()
}
