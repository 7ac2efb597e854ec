//! `step-operator bootstrap`: obtain the pod's first certificate.
//!
//! 1. If `site.crt`, `site.key` and `root.crt` exist, parse, match each other and are not yet due
//!    for renewal ([`keep_existing`]), keep them and exit 0 (a restarted pod with a surviving
//!    emptyDir).
//! 2. Otherwise ([`obtain`]): ask the webhook for a one-time token (`POST /bootstrap`, retried per
//!    [`crate::pod_protocol`]), generate the key in-process, have step-ca sign a CSR for exactly the
//!    names the webhook returned, verify the chain and the key, and write the files atomically
//!    ([`super::files::write_all`]). A step-ca token is single use, so any sign failure goes back
//!    to the webhook for a new one.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tracing::Instrument as _;
use zeroize::Zeroizing;

use super::files::{self, CertFiles, Current, Invalid};
use super::{AgentArgs, AgentConfig};
use crate::backoff::{self, Backoff, Failure};
use crate::pki::chain::{renew_at, signing_root, verify_issued};
use crate::pki::keys::GeneratedKey;
use crate::pod_protocol::{BOOTSTRAP_PATH, BootstrapRequest, BootstrapResponse, ErrorResponse};
use crate::step;

/// The bootstrap endpoint for a configured URL: used verbatim when it has a path (the webhook
/// injects `https://<service>/bootstrap`), `/bootstrap` appended when it has none.
pub fn endpoint(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    match url::Url::parse(trimmed) {
        Ok(u) if u.path().is_empty() || u.path() == "/" => format!("{trimmed}{BOOTSTRAP_PATH}"),
        _ => trimmed.to_owned(),
    }
}

/// Whether a bootstrapper finding `current` at `now` keeps it: the files are valid and the
/// certificate is not yet within its renewal window (`renew_at` with no jitter is in the future).
pub fn keep_existing(now: DateTime<Utc>, current: Option<&Current>) -> bool {
    current.is_some_and(|c| now < c.not_after && renew_at(c.not_before, c.not_after, 0.0) > now)
}

/// A failed `POST /bootstrap`. Messages never contain the tokens.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot read the ServiceAccount token {path}: {detail}")]
    Token { path: String, detail: String },
    #[error("webhook unreachable ({0})")]
    Unreachable(String),
    #[error("webhook answered HTTP {status}: {message}")]
    Unavailable { status: u16, message: String },
    #[error("refused: {message} (HTTP {status})")]
    Refused { status: u16, message: String },
    #[error("invalid answer from the webhook: {0}")]
    InvalidResponse(String),
}

impl BootstrapError {
    /// How quickly to retry.
    pub fn failure(&self) -> Failure {
        match self {
            BootstrapError::Refused { .. } | BootstrapError::InvalidResponse(_) => Failure::Refused,
            _ => Failure::Transient,
        }
    }
}

/// The HTTP client for the webhook's `/bootstrap`.
#[derive(Clone, Debug)]
pub struct BootstrapClient {
    http: reqwest::Client,
    url: String,
    token_path: std::path::PathBuf,
    retry: crate::backoff::RetryPolicy,
}

impl BootstrapClient {
    /// Trusts only `cfg.bootstrap_ca_pem` when set, the system roots otherwise.
    pub fn new(cfg: &AgentConfig) -> anyhow::Result<BootstrapClient> {
        let url = cfg.bootstrap_url.clone().context(
            "STEP_OPERATOR_BOOTSTRAP_URL is not set: the webhook injects it; set it to https://<webhook service>/bootstrap",
        )?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .https_only(true)
            .user_agent(concat!("step-operator-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.bootstrap_ca_pem {
            let roots = step::client::parse_ca_bundle(pem.as_bytes())
                .context("STEP_OPERATOR_BOOTSTRAP_CA is unusable")?;
            b = b.tls_certs_only(roots);
        }
        Ok(BootstrapClient {
            http: b.build().context("cannot build the HTTP client")?,
            url,
            token_path: cfg.token_path.clone(),
            retry: cfg.retry,
        })
    }

    /// One `POST /bootstrap`.
    pub async fn request_once(&self) -> Result<BootstrapResponse, BootstrapError> {
        let token = Zeroizing::new(std::fs::read_to_string(&self.token_path).map_err(|e| {
            BootstrapError::Token {
                path: self.token_path.display().to_string(),
                detail: e.to_string(),
            }
        })?);
        let token = token.trim();
        if token.is_empty() {
            return Err(BootstrapError::Token {
                path: self.token_path.display().to_string(),
                detail: "the file is empty".into(),
            });
        }
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .json(&BootstrapRequest {})
            .send()
            .await
            .map_err(|e| BootstrapError::Unreachable(causes(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| BootstrapError::Unreachable(causes(&e)))?;
        if status == 200 {
            let resp: BootstrapResponse = serde_json::from_slice(&body)
                .map_err(|e| BootstrapError::InvalidResponse(format!("bad JSON: {e}")))?;
            if resp.token.trim().is_empty() {
                return Err(BootstrapError::InvalidResponse("the token is empty".into()));
            }
            return Ok(resp);
        }
        let message = match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(e) => e.message,
            Err(_) => {
                let text: String = String::from_utf8_lossy(&body)
                    .chars()
                    .take(160)
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                format!("no JSON message; the body starts with {:?}", text.trim())
            }
        };
        if (400..500).contains(&status) && status != 408 && status != 429 {
            Err(BootstrapError::Refused { status, message })
        } else {
            Err(BootstrapError::Unavailable { status, message })
        }
    }

    /// `POST /bootstrap` until it succeeds, logging each failure and the delay.
    pub async fn fetch(&self) -> BootstrapResponse {
        let mut b = Backoff::new(self.retry);
        loop {
            match self.request_once().await {
                Ok(r) => return r,
                Err(e) => {
                    let delay = b.next(e.failure());
                    tracing::warn!(error = %e, retry_in = %backoff::display(delay), "Bootstrap request failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(c) = next {
        let t = c.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        next = c.source();
    }
    parts.join(": ")
}

/// A signed certificate with its new key, ready to be written.
#[derive(Debug)]
pub struct Issued {
    pub files: CertFiles,
    /// The CA that signed it (for renewals).
    pub ca_url: String,
    pub subject: String,
    pub sans: Vec<String>,
    pub not_after: DateTime<Utc>,
}

/// Why signing failed.
#[derive(Debug)]
enum SignFailure {
    /// Nothing a retry can fix (e.g. the key algorithm cannot be generated).
    Fatal(anyhow::Error),
    /// Get a new token and try again after a delay of this class.
    Retry(Failure, String),
}

/// Generates a key, has step-ca sign it with the webhook's token and checks the result.
async fn sign_with(cfg: &AgentConfig, resp: &BootstrapResponse) -> Result<Issued, SignFailure> {
    let refused = |m: String| SignFailure::Retry(Failure::Refused, m);
    // An RSA key takes up to seconds: off the runtime's workers.
    let algorithm = cfg.key_algorithm;
    let key = tokio::task::spawn_blocking(move || GeneratedKey::generate(algorithm))
        .await
        .map_err(|e| SignFailure::Fatal(anyhow::anyhow!("key generation stopped: {e}")))?
        .map_err(|e| SignFailure::Fatal(anyhow::Error::new(e).context("AUTOCERT_KEY_ALGORITHM")))?;
    let sans = if resp.sans.is_empty() && !resp.common_name.is_empty() {
        vec![resp.common_name.clone()]
    } else {
        resp.sans.clone()
    };
    let csr_pem = key
        .csr_pem(&resp.common_name, &sans)
        .map_err(|e| refused(format!("the webhook's names do not fit a CSR: {e}")))?;
    let not_after = match resp.duration.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => {
            let parsed = crate::duration::parse_go_duration(d)
                .map_err(|e| refused(format!("the webhook's duration is invalid: {e}")))?;
            (!parsed.is_zero()).then(|| crate::duration::format_go_duration(parsed))
        }
    };
    let client = step::Client::new(&resp.ca_url, Some(resp.root_pem.as_bytes()), cfg.timeout)
        .map_err(|e| refused(format!("the webhook's CA settings are unusable: {e}")))?;
    let signed = client
        .sign(&step::SignRequest {
            csr_pem,
            ott: resp.token.clone(),
            not_after,
            not_before: None,
        })
        .await
        .map_err(|e| {
            let class = if e.is_retryable() {
                Failure::Transient
            } else {
                Failure::Refused
            };
            SignFailure::Retry(class, e.to_string())
        })?;
    let issued =
        verify_issued(&signed.cert_chain, &key.public_key_der(), Utc::now()).map_err(|e| {
            SignFailure::Retry(
                Failure::Transient,
                format!("step-ca returned an unusable certificate: {e}"),
            )
        })?;
    match signing_root(&issued.chain, std::slice::from_ref(&resp.root_pem)) {
        Ok(Some(_)) => {}
        _ => tracing::warn!(
            "The certificate chain does not verify against the root from the webhook; writing it anyway"
        ),
    }
    Ok(Issued::new(&issued, &key, &resp.root_pem, client.url()))
}

impl Issued {
    fn new(
        issued: &crate::pki::chain::Issued,
        key: &GeneratedKey,
        root_pem: &str,
        ca_url: &str,
    ) -> Self {
        let leaf = &issued.leaf;
        let mut root_crt = root_pem.trim().to_owned();
        root_crt.push('\n');
        Issued {
            files: CertFiles {
                site_crt: issued.certificate_pem.clone(),
                site_key: Zeroizing::new(key.private_key_pem()),
                root_crt,
            },
            ca_url: ca_url.to_owned(),
            subject: leaf.subject.clone(),
            sans: leaf
                .dns_names
                .iter()
                .cloned()
                .chain(leaf.ip_addresses.iter().map(|ip| ip.to_string()))
                .chain(leaf.uris.iter().cloned())
                .chain(leaf.emails.iter().cloned())
                .collect(),
            not_after: issued.not_after,
        }
    }
}

/// Asks the webhook for a token and step-ca for a certificate until one is issued. Errors only
/// for problems no retry can fix.
pub async fn obtain(cfg: &AgentConfig) -> anyhow::Result<Issued> {
    let client = BootstrapClient::new(cfg)?;
    let mut b = Backoff::new(cfg.retry);
    loop {
        let resp = client.fetch().await;
        match sign_with(cfg, &resp).await {
            Ok(issued) => return Ok(issued),
            Err(SignFailure::Fatal(e)) => return Err(e),
            Err(SignFailure::Retry(class, message)) => {
                let delay = b.next(class);
                tracing::warn!(
                    error = %message,
                    retry_in = %backoff::display(delay),
                    "Signing failed; asking the webhook for a new token"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Writes an issued certificate with its key and root, and logs it.
pub fn write_issued(cfg: &AgentConfig, issued: &Issued) -> anyhow::Result<()> {
    files::write_all(&cfg.certs_dir, &issued.files, cfg.key_mode, cfg.owner)
        .context("cannot write the certificate files")?;
    tracing::info!(
        dir = %cfg.certs_dir.display(),
        subject = %issued.subject,
        sans = %issued.sans.join(","),
        not_after = %issued.not_after.to_rfc3339(),
        "Wrote the certificate files"
    );
    Ok(())
}

/// Logs what was found on disk; `true` when it is kept.
fn decide(cfg: &AgentConfig, now: DateTime<Utc>) -> bool {
    match files::check_current(&cfg.certs_dir) {
        Ok(cur) if keep_existing(now, Some(&cur)) => {
            tracing::info!(
                subject = %cur.subject,
                not_after = %cur.not_after.to_rfc3339(),
                "Keeping the existing certificate"
            );
            true
        }
        Ok(cur) => {
            tracing::info!(
                subject = %cur.subject,
                not_after = %cur.not_after.to_rfc3339(),
                "The existing certificate is due for renewal or expired; replacing it"
            );
            false
        }
        Err(Invalid::Missing(_)) => false,
        Err(e) => {
            tracing::warn!(error = %e, "The existing files are unusable; replacing them");
            false
        }
    }
}

/// Entry point of `step-operator bootstrap`. Every line it logs is in a `bootstrap` span naming
/// the certificate (`certificate`: the span's own `name` is taken in JSON logs) and its issuer.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let cfg = AgentConfig::from_args(&args)?;
    let span = tracing::info_span!(
        "bootstrap",
        certificate = cfg.log_name(),
        issuer = cfg.log_issuer()
    );
    bootstrap(cfg).instrument(span).await
}

async fn bootstrap(cfg: AgentConfig) -> anyhow::Result<()> {
    if decide(&cfg, Utc::now()) {
        return Ok(());
    }
    tracing::info!(
        sans = %cfg.sans.join(","),
        duration = cfg.duration.as_deref().unwrap_or(""),
        webhook = cfg.bootstrap_url.as_deref().unwrap_or(""),
        "Requesting a certificate"
    );
    tokio::select! {
        r = obtain(&cfg) => write_issued(&cfg, &r?),
        _ = crate::signal::shutdown_signal() => {
            anyhow::bail!("interrupted by a signal before a certificate was written")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fake::Fake;
    use chrono::TimeDelta;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(crate) fn current(not_before: &str, not_after: &str) -> Current {
        Current {
            chain_pem: String::new(),
            key_pem: Zeroizing::new(String::new()),
            root_pem: String::new(),
            subject: "CN=app".into(),
            not_before: at(not_before),
            not_after: at(not_after),
            public_key_der: vec![],
        }
    }

    #[test]
    fn keep_or_replace() {
        // A 30-day certificate from 2026-01-01: renewal (jitter 0) at 2026-01-21.
        let c = current("2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z");
        let cases: &[(&str, Option<&Current>, bool)] = &[
            ("2026-01-02T00:00:00Z", Some(&c), true),
            ("2026-01-20T23:59:00Z", Some(&c), true),
            ("2026-01-21T00:00:00Z", Some(&c), false),
            ("2026-01-25T00:00:00Z", Some(&c), false),
            ("2026-02-01T00:00:00Z", Some(&c), false),
            // Not yet valid (clock skew): still kept; it was just issued.
            ("2025-12-31T23:59:00Z", Some(&c), true),
            ("2026-01-02T00:00:00Z", None, false),
        ];
        for (now, cur, want) in cases {
            assert_eq!(
                keep_existing(at(now), *cur),
                *want,
                "{now} {}",
                cur.is_some()
            );
        }
        let broken = current("2026-01-31T00:00:00Z", "2026-01-01T00:00:00Z");
        assert!(!keep_existing(at("2026-01-02T00:00:00Z"), Some(&broken)));
    }

    #[test]
    fn endpoints() {
        let cases = [
            ("https://wh.ns.svc", "https://wh.ns.svc/bootstrap"),
            ("https://wh.ns.svc/", "https://wh.ns.svc/bootstrap"),
            ("https://wh.ns.svc:8443", "https://wh.ns.svc:8443/bootstrap"),
            ("https://wh.ns.svc/bootstrap", "https://wh.ns.svc/bootstrap"),
            (
                "https://wh.ns.svc/bootstrap/",
                "https://wh.ns.svc/bootstrap",
            ),
            ("https://wh/custom/path", "https://wh/custom/path"),
        ];
        for (input, want) in cases {
            assert_eq!(endpoint(input), want, "{input}");
        }
    }

    #[tokio::test]
    async fn retries_unavailable_webhook_then_succeeds() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake.config(dir.path());
        fake.log().script.extend([
            (503, r#"{"message":"webhook starting"}"#.to_owned()),
            (503, "<html>busy</html>".to_owned()),
        ]);
        let client = BootstrapClient::new(&cfg).unwrap();
        let resp = client.fetch().await;
        assert_eq!(resp.token, "ott-1");
        assert_eq!(resp.ca_url, fake.url);
        let log = fake.log();
        assert_eq!(log.auth, vec!["Bearer projected-token"; 3]);
        assert_eq!(log.bootstrap_bodies, vec!["{}"; 3]);
    }

    #[tokio::test]
    async fn classifies_statuses_and_surfaces_the_message() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake.config(dir.path());
        let msg =
            "pod default/app may not request app.other.svc: names are bound to the pod's namespace";
        fake.log().script.extend([
            (403, format!(r#"{{"message":"{msg}"}}"#)),
            (429, r#"{"message":"slow down"}"#.to_owned()),
            (401, "not json".to_owned()),
        ]);
        let client = BootstrapClient::new(&cfg).unwrap();
        let e = client.request_once().await.unwrap_err();
        assert!(
            matches!(&e, BootstrapError::Refused { status: 403, message } if message == msg),
            "{e:?}"
        );
        assert_eq!(e.failure(), Failure::Refused);
        assert_eq!(e.to_string(), format!("refused: {msg} (HTTP 403)"));
        let e = client.request_once().await.unwrap_err();
        assert!(
            matches!(e, BootstrapError::Unavailable { status: 429, .. }),
            "{e:?}"
        );
        assert_eq!(e.failure(), Failure::Transient);
        let e = client.request_once().await.unwrap_err();
        assert!(
            matches!(&e, BootstrapError::Refused { status: 401, message } if message.contains("not json")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn token_file_problems_and_untrusted_server() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = fake.config(dir.path());
        std::fs::write(&cfg.token_path, "  \n").unwrap();
        let e = BootstrapClient::new(&cfg)
            .unwrap()
            .request_once()
            .await
            .unwrap_err();
        assert!(matches!(e, BootstrapError::Token { .. }), "{e:?}");
        std::fs::remove_file(&cfg.token_path).unwrap();
        let e = BootstrapClient::new(&cfg)
            .unwrap()
            .request_once()
            .await
            .unwrap_err();
        assert!(matches!(e, BootstrapError::Token { .. }), "{e:?}");
        assert!(fake.log().auth.is_empty());

        // Only the configured root is trusted: another root (or the system roots) fails TLS
        // before the token is sent.
        std::fs::write(&cfg.token_path, "projected-token").unwrap();
        let other = Fake::start().await;
        cfg.bootstrap_ca_pem = Some(other.root_pem.clone());
        let e = BootstrapClient::new(&cfg)
            .unwrap()
            .request_once()
            .await
            .unwrap_err();
        assert!(matches!(e, BootstrapError::Unreachable(_)), "{e:?}");
        cfg.bootstrap_ca_pem = None;
        let e = BootstrapClient::new(&cfg)
            .unwrap()
            .request_once()
            .await
            .unwrap_err();
        assert!(matches!(e, BootstrapError::Unreachable(_)), "{e:?}");
        assert!(fake.log().auth.is_empty());

        cfg.bootstrap_url = None;
        assert!(BootstrapClient::new(&cfg).is_err());
    }

    #[tokio::test]
    async fn obtain_signs_verifies_and_writes() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake.config(dir.path());
        fake.log().duration = Some("24h".into());
        let issued = obtain(&cfg).await.unwrap();
        write_issued(&cfg, &issued).unwrap();
        assert_eq!(issued.sans, ["app.default.svc", "app"]);
        assert!(
            issued.subject.contains("app.default.svc"),
            "{}",
            issued.subject
        );
        assert_eq!(issued.ca_url, fake.url);
        let cur = files::read_current(&cfg.certs_dir).unwrap();
        let lifetime = cur.not_after - Utc::now();
        assert!(
            lifetime > TimeDelta::hours(23) && lifetime <= TimeDelta::hours(24),
            "{lifetime}"
        );
        // site.crt holds the leaf and the intermediate, root.crt the root.
        assert_eq!(cur.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(cur.root_pem.trim(), fake.root_pem.trim());
        let log = fake.log();
        assert_eq!(log.sign_otts, ["ott-1"]);
        assert_eq!(log.sign_not_after, [Some("24h".to_owned())]);
        // A restarted bootstrapper keeps these files.
        assert!(keep_existing(Utc::now(), Some(&cur)));
    }

    #[tokio::test]
    async fn sign_failure_gets_a_new_token() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake.config(dir.path());
        fake.log().sign_failures = 2;
        let issued = obtain(&cfg).await.unwrap();
        assert!(issued.not_after > Utc::now());
        let log = fake.log();
        assert_eq!(log.sign_otts, ["ott-1", "ott-2", "ott-3"]);
        assert_eq!(log.sign_not_after, [None, None, None]);
        assert_eq!(log.auth.len(), 3);
    }

    /// `autocert.step.sm/key-type` reaches the agent as `AUTOCERT_KEY_ALGORITHM`: the key it
    /// writes is of that algorithm, for every value the webhook injects.
    #[tokio::test]
    async fn the_key_has_the_configured_algorithm() {
        use crate::pki::keys::KeyAlgorithm;
        let fake = Fake::start().await;
        for (_, algorithm) in crate::webhook::annotations::KEY_TYPES {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = fake.config(dir.path());
            cfg.key_algorithm = algorithm.to_string().parse().unwrap();
            let issued = obtain(&cfg).await.unwrap();
            let key = GeneratedKey::from_pkcs8_pem(&issued.files.site_key).unwrap();
            assert_eq!(key.algorithm(), algorithm);
            assert_eq!(
                algorithm == KeyAlgorithm::EcdsaP256,
                cfg.key_algorithm == KeyAlgorithm::default()
            );
        }
    }
}
