//! HTTP client for the step-ca API (protocol doc §1, §2, §5, §6).
//!
//! One [`Client`] per CA: it holds a keep-alive connection pool, so the controller builds it once
//! per issuer and reuses it. Only the latency and status of requests are logged, never bodies,
//! because bodies carry tokens and keys.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

use super::address_policy::{ForbiddenAddress, ForbiddenRanges, GuardedResolver};
use super::endpoint::{check_literal_address, parse_audience_authority};
pub(crate) use super::endpoint::{normalise_url, parse_ca_bundle};
use super::error::decode_error_body;
use super::facts::ProvisionerClaims;
pub use super::wire::{ClientIdentity, ProvisionerInfo, SignRequest, SignResponse, VersionInfo};
use super::wire::{ProvisionersPage, RawSignResponse};
use super::{Error, Result};

const ACTION_HEALTH: &str = "check step-ca health";
const ACTION_VERSION: &str = "read the step-ca version";
const ACTION_ROOTS: &str = "fetch the step-ca roots";
const ACTION_FEDERATION: &str = "fetch the step-ca federated roots";
const ACTION_INTERMEDIATES: &str = "fetch the step-ca intermediate certificates";
const ACTION_PROVISIONERS: &str = "list the step-ca provisioners";
const ACTION_ENCRYPTED_KEY: &str = "fetch the provisioner's encrypted key";
const ACTION_SIGN: &str = "sign the certificate request";
const ACTION_RENEW: &str = "renew the certificate";

/// step-ca caps `limit` at 100; asking for the cap keeps paging short.
const PROVISIONER_PAGE_LIMIT: u32 = 100;
/// Bound on pages followed: a server that never ends its list, each page just within the
/// per-request timeout, would otherwise keep a connect going for hours. Ten full pages are a
/// thousand provisioners, more than step-ca deployments use; beyond that, set `kid`.
pub const MAX_PROVISIONER_PAGES: usize = 10;
/// Bound on the provisioners read in all, whatever the pages hold (a page may hold more than
/// `limit` asked for).
pub const MAX_LISTED_PROVISIONERS: usize = 1000;
/// The largest answer read from the CA URL, per call. step-ca's answers to health, roots,
/// encrypted-key, sign and renew are a few KiB; a provisioner page of 100 JWK provisioners with
/// their encrypted keys is about 300 KiB. Whoever controls a StepIssuer's URL controls what comes
/// back: without a bound, one endless body takes the controller's memory.
const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_PROVISIONERS_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A step-ca API client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) http: reqwest::Client,
    /// `https://host[:port]`, no trailing slash.
    url: String,
    /// The `host[:port]` token audiences name, when it is not the URL's.
    audience: Option<String>,
    /// The pinned roots, reused for one-off mTLS clients; `None` means system roots.
    roots: Option<Vec<reqwest::Certificate>>,
    timeout: Duration,
    forbidden: ForbiddenRanges,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.url)
            .field("audience", &self.inner.audience)
            .field("pinned_roots", &self.inner.roots.as_ref().map(Vec::len))
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

fn builder(
    roots: Option<&[reqwest::Certificate]>,
    timeout: Duration,
    forbidden: &ForbiddenRanges,
) -> reqwest::ClientBuilder {
    // reqwest is built without a default crypto provider and panics when none is installed.
    // main installs ring first; installing it here too (a no-op when one is already installed)
    // keeps every entry point, including tests and one-shot subcommands, panic-free.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .https_only(true)
        // step-ca never redirects; following one would send requests (a sign request's body
        // included) wherever the URL's owner points them.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("step-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(roots) = roots {
        b = b.tls_certs_only(roots.iter().cloned());
    }
    if !forbidden.is_empty() {
        // Through a proxy, the proxy would pick the CA's address and the ranges would guard
        // only the proxy's: with ranges set, connect directly.
        b = b.no_proxy().dns_resolver(Arc::new(GuardedResolver {
            ranges: forbidden.clone(),
        }));
    }
    b
}

impl Client {
    /// Builds a client for the CA at `url`.
    ///
    /// With `ca_bundle_pem`, only those roots are trusted (the normal case: step-ca has a private
    /// root); without it, the platform's roots are used. `timeout` bounds each request.
    pub fn new(url: &str, ca_bundle_pem: Option<&[u8]>, timeout: Duration) -> Result<Client> {
        Self::with_forbidden(url, ca_bundle_pem, timeout, &ForbiddenRanges::default())
    }

    /// As [`Client::new`], refusing to connect to any address in `forbidden`: a literal one in
    /// the URL at once, a resolved one at each new connection.
    pub fn with_forbidden(
        url: &str,
        ca_bundle_pem: Option<&[u8]>,
        timeout: Duration,
        forbidden: &ForbiddenRanges,
    ) -> Result<Client> {
        let url = normalise_url(url)?;
        check_literal_address(&url, forbidden)?;
        let roots = ca_bundle_pem.map(parse_ca_bundle).transpose()?;
        let http = builder(roots.as_deref(), timeout, forbidden)
            .build()
            .map_err(|source| Error::BuildClient { source })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                url,
                audience: None,
                roots,
                timeout,
                forbidden: forbidden.clone(),
            }),
        })
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The normalised CA URL, `https://host[:port]`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The same client (sharing its connections) with tokens naming `audience` instead of the
    /// URL's host, for a CA reached through a proxy or a Service alias whose name is not one of
    /// step-ca's dnsNames. `audience` is a `host[:port]` or `https://host[:port]`; see
    /// [`parse_audience_authority`].
    pub fn with_audience(&self, audience: &str) -> Result<Client> {
        let audience = parse_audience_authority(audience)?;
        let inner = &self.inner;
        Ok(Client {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                url: inner.url.clone(),
                audience: Some(audience),
                roots: inner.roots.clone(),
                timeout: inner.timeout,
                forbidden: inner.forbidden.clone(),
            }),
        })
    }

    /// `https://<host[:port]>` that token audiences start with: the audience override, else the
    /// URL.
    pub fn audience_base(&self) -> String {
        match &self.inner.audience {
            Some(authority) => format!("https://{authority}"),
            None => self.inner.url.clone(),
        }
    }

    /// The audience for sign tokens: `<audience base>/1.0/sign`.
    pub fn audience_sign(&self) -> String {
        format!("{}/1.0/sign", self.audience_base())
    }

    /// The audience for revoke tokens: `<audience base>/1.0/revoke`.
    pub fn audience_revoke(&self) -> String {
        format!("{}/1.0/revoke", self.audience_base())
    }

    /// `GET /health`; Ok when the CA answers 2xx with `{"status":"ok"}` (or no status).
    pub async fn health(&self) -> Result<()> {
        #[derive(Deserialize)]
        struct Health {
            #[serde(default)]
            status: Option<String>,
        }
        let h: Health = self.get_json("/health", ACTION_HEALTH).await?;
        match h.status.as_deref() {
            None | Some("ok") => Ok(()),
            Some(other) => Err(Error::UnexpectedAnswer {
                action: ACTION_HEALTH,
                status: StatusCode::OK.as_u16(),
                detail: format!("health status is {other:?}, expected \"ok\""),
            }),
        }
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<VersionInfo> {
        self.get_json("/version", ACTION_VERSION).await
    }

    /// `GET /1.0/roots` (answers 201): the root certificates as PEM.
    pub async fn roots(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Roots {
            crts: Vec<String>,
        }
        let roots: Roots = self.get_json("/1.0/roots", ACTION_ROOTS).await?;
        Ok(roots.crts)
    }

    /// `GET /1.0/intermediates`: the CA's intermediate certificates as PEM (step-ca 0.25 and
    /// later; older CAs answer 404).
    pub async fn intermediates(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Crts {
            crts: Vec<String>,
        }
        let crts: Crts = self
            .get_json("/1.0/intermediates", ACTION_INTERMEDIATES)
            .await?;
        Ok(crts.crts)
    }

    /// `GET /federation`: the roots of this CA and of the CAs it federates with.
    pub async fn federation(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Roots {
            crts: Vec<String>,
        }
        let roots: Roots = self.get_json("/1.0/federation", ACTION_FEDERATION).await?;
        Ok(roots.crts)
    }

    /// All provisioners, following `nextCursor` until it is empty (within the limits of
    /// [`Client::find_provisioners`]).
    pub async fn provisioners(&self) -> Result<Vec<ProvisionerInfo>> {
        self.find_provisioners(|_| true, MAX_LISTED_PROVISIONERS)
            .await
    }

    /// The provisioners `keep` selects, following `nextCursor` until it is empty. Stops as soon
    /// as more than `max_kept` are selected, so the answer then holds `max_kept + 1` of them:
    /// enough for the caller to tell that there are too many.
    ///
    /// Whoever controls the CA URL controls the list: at most [`MAX_PROVISIONER_PAGES`] pages
    /// and [`MAX_LISTED_PROVISIONERS`] provisioners are read, and only the selected ones are
    /// kept, so memory stays at one page plus what the caller asked for.
    pub async fn find_provisioners(
        &self,
        keep: impl Fn(&ProvisionerInfo) -> bool,
        max_kept: usize,
    ) -> Result<Vec<ProvisionerInfo>> {
        let mut kept = Vec::new();
        let mut listed = 0usize;
        let mut cursor = String::new();
        for pages in 1..=MAX_PROVISIONER_PAGES {
            let mut url = self.endpoint("/1.0/provisioners")?;
            {
                let mut q = url.query_pairs_mut();
                if !cursor.is_empty() {
                    q.append_pair("cursor", &cursor);
                }
                q.append_pair("limit", &PROVISIONER_PAGE_LIMIT.to_string());
            }
            let page: ProvisionersPage = self
                .send_json_limited(
                    self.inner.http.get(url),
                    "/1.0/provisioners",
                    ACTION_PROVISIONERS,
                    MAX_PROVISIONERS_PAGE_BYTES,
                    None,
                )
                .await?;
            listed += page.provisioners.len();
            if listed > MAX_LISTED_PROVISIONERS {
                return Err(Error::TooManyProvisioners { pages, listed });
            }
            for p in page.provisioners {
                let info = ProvisionerInfo {
                    kid: p.key.get("kid").and_then(Value::as_str).map(str::to_owned),
                    name: p.name,
                    type_: p.type_,
                    key: p.key,
                    encrypted_key: p.encrypted_key.filter(|k| !k.is_empty()),
                    claims: p.claims.as_ref().and_then(ProvisionerClaims::from_json),
                };
                if keep(&info) {
                    kept.push(info);
                    if kept.len() > max_kept {
                        return Ok(kept);
                    }
                }
            }
            if page.next_cursor.is_empty() {
                return Ok(kept);
            }
            if page.next_cursor == cursor {
                return Err(Error::Decode {
                    action: ACTION_PROVISIONERS,
                    detail: "the CA returned the same nextCursor twice".into(),
                });
            }
            cursor = page.next_cursor;
        }
        Err(Error::TooManyProvisioners {
            pages: MAX_PROVISIONER_PAGES + 1,
            listed,
        })
    }

    /// `GET /1.0/provisioners/{kid}/encrypted-key`: the compact JWE. 404 when no provisioner
    /// with that kid has an encrypted key.
    pub async fn encrypted_key(&self, kid: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Key {
            key: String,
        }
        let mut url = self.endpoint("/")?;
        url.path_segments_mut()
            .map_err(|_| Error::InvalidUrl {
                url: self.inner.url.clone(),
                detail: "cannot be a base URL".into(),
            })?
            .clear()
            .extend(["1.0", "provisioners", kid, "encrypted-key"]);
        let key: Key = self
            .send_json(
                self.inner.http.get(url),
                "/1.0/provisioners/{kid}/encrypted-key",
                ACTION_ENCRYPTED_KEY,
            )
            .await?;
        Ok(key.key)
    }

    /// `POST /1.0/sign`.
    pub async fn sign(&self, request: &SignRequest) -> Result<SignResponse> {
        self.sign_with_request_id(request, None).await
    }

    /// `POST /1.0/sign` with `request_id` as `X-Request-Id` (e.g. the CertificateRequest's
    /// UID), so that step-ca's log line and ours can be matched; a random one without it.
    pub async fn sign_with_request_id(
        &self,
        request: &SignRequest,
        request_id: Option<&str>,
    ) -> Result<SignResponse> {
        let url = self.endpoint("/1.0/sign")?;
        let raw: RawSignResponse = self
            .send_json_limited(
                self.inner.http.post(url).json(request),
                "/1.0/sign",
                ACTION_SIGN,
                MAX_BODY_BYTES,
                request_id,
            )
            .await?;
        Ok(raw.into())
    }

    /// `POST /1.0/renew` over mTLS with `identity` as the client certificate. Builds a one-off
    /// connection because the identity is per certificate.
    pub async fn renew(&self, identity: &ClientIdentity) -> Result<SignResponse> {
        let mut buf = Zeroizing::new(Vec::with_capacity(
            identity.key_pem.len() + identity.cert_chain_pem.len() + 1,
        ));
        buf.extend_from_slice(identity.key_pem.as_bytes());
        buf.push(b'\n');
        buf.extend_from_slice(identity.cert_chain_pem.as_bytes());
        let id = reqwest::Identity::from_pem(&buf).map_err(|_| Error::InvalidIdentity {
            detail: "the key or certificate PEM does not parse".into(),
        })?;
        let http = builder(
            self.inner.roots.as_deref(),
            self.inner.timeout,
            &self.inner.forbidden,
        )
        .identity(id)
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|source| Error::BuildClient { source })?;
        let url = self.endpoint("/1.0/renew")?;
        let raw: RawSignResponse = self
            .send_json(http.post(url), "/1.0/renew", ACTION_RENEW)
            .await?;
        Ok(raw.into())
    }

    pub(super) fn endpoint(&self, path: &str) -> Result<url::Url> {
        url::Url::parse(&format!("{}{path}", self.inner.url)).map_err(|e| Error::InvalidUrl {
            url: self.inner.url.clone(),
            detail: e.to_string(),
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str, action: &'static str) -> Result<T> {
        let url = self.endpoint(path)?;
        self.send_json(self.inner.http.get(url), path, action).await
    }

    /// [`Self::send_json_limited`] with the limit of every call but the provisioner pages.
    async fn send_json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
        action: &'static str,
    ) -> Result<T> {
        self.send_json_limited(request, path, action, MAX_BODY_BYTES, None)
            .await
    }

    /// Sends a request, maps transport and status errors, and decodes a JSON 2xx body of at most
    /// `limit` bytes. `path` is the route template, used for logs only. `request_id` becomes
    /// `X-Request-Id` when it is a plain token (a random one otherwise).
    pub(super) async fn send_json_limited<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
        action: &'static str,
        limit: usize,
        request_id: Option<&str>,
    ) -> Result<T> {
        let request_id = usable_request_id(request_id)
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
        let started = Instant::now();
        let result = request.header("X-Request-Id", &request_id).send().await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(
                    path,
                    request_id,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "step-ca request failed"
                );
                return Err(self.transport_error(e, action));
            }
        };
        let status = response.status();
        if status.is_redirection() {
            return Err(Error::Redirected {
                action,
                url: self.inner.url.clone(),
                status: status.as_u16(),
            });
        }
        let body = self.read_body(response, action, limit).await?;
        tracing::debug!(
            path,
            request_id,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "step-ca request"
        );
        if !status.is_success() {
            return Err(Error::Status {
                status: status.as_u16(),
                message: decode_error_body(status.as_u16(), &body),
                action,
            });
        }
        decode_success(status, &body, action)
    }

    /// Reads the body chunk by chunk and stops as soon as it passes `limit`: the rest is never
    /// received, so an endless body costs at most `limit` plus one chunk.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        action: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let too_large = || Error::ResponseTooLarge {
            action,
            url: self.inner.url.clone(),
            limit,
        };
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e, action))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, e: reqwest::Error, action: &'static str) -> Error {
        if let Some(refused) = forbidden_cause(&e) {
            Error::ForbiddenAddress {
                url: self.inner.url.clone(),
                address: refused.address,
                range: refused.range.to_string(),
            }
        } else if e.is_timeout() {
            Error::Timeout {
                action,
                url: self.inner.url.clone(),
                timeout: self.inner.timeout,
            }
        } else if e.is_decode() {
            Error::Decode {
                action,
                detail: e.to_string(),
            }
        } else if e.is_builder() {
            Error::InvalidUrl {
                url: self.inner.url.clone(),
                detail: e.to_string(),
            }
        } else {
            Error::Connect {
                action,
                url: self.inner.url.clone(),
                source: e,
            }
        }
    }
}

/// Longest caller-given request id sent; a Kubernetes UID is 36 characters.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The caller's request id when it can go in a header and a log line as is: printable ASCII
/// without spaces, at most [`MAX_REQUEST_ID_LEN`]. An unusable one is replaced rather than
/// failing the request over a log aid.
fn usable_request_id(id: Option<&str>) -> Option<String> {
    id.filter(|id| {
        !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
    })
    .map(str::to_owned)
}

/// The resolver's refusal, if that is what failed the request.
fn forbidden_cause(e: &reqwest::Error) -> Option<&ForbiddenAddress> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = next {
        if let Some(refused) = cause.downcast_ref::<ForbiddenAddress>() {
            return Some(refused);
        }
        next = cause.source();
    }
    None
}

fn decode_success<T: DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
    action: &'static str,
) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::UnexpectedAnswer {
        action,
        status: status.as_u16(),
        detail: format!(
            "HTTP {} body is not the expected JSON ({}): {}",
            status.as_u16(),
            e.classify_name(),
            decode_error_body(status.as_u16(), body)
        ),
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::fake_ca::{FakeCa, Hostile, HostileCa};

    /// A client for `url` that trusts the fake CA's root (the hostile server's certificate too).
    fn client_for(ca: &FakeCa, url: &str) -> Client {
        Client::new(
            url,
            Some(ca.certs.root_pem.as_bytes()),
            Duration::from_secs(10),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_off_at_the_limit() {
        let ca = FakeCa::start().await;
        let hostile = HostileCa::start(&ca.certs, Hostile::EndlessBody).await;
        let client = client_for(&ca, &hostile.url);
        for (call, limit) in [
            ("health", MAX_BODY_BYTES),
            ("roots", MAX_BODY_BYTES),
            ("provisioners", MAX_PROVISIONERS_PAGE_BYTES),
            ("encrypted-key", MAX_BODY_BYTES),
        ] {
            let before = hostile.sent();
            let err = match call {
                "health" => client.health().await.err(),
                "roots" => client.roots().await.err(),
                "provisioners" => client.provisioners().await.err(),
                _ => client.encrypted_key("kid").await.err(),
            }
            .unwrap_or_else(|| panic!("{call}: an endless body was accepted"));
            assert!(
                matches!(err, Error::ResponseTooLarge { .. }),
                "{call}: {err}"
            );
            assert_eq!(err.reason(), "CAResponseTooLarge");
            assert!(!err.is_retryable(), "{call}");
            assert!(
                err.to_string()
                    .contains("check that spec.url points at step-ca"),
                "{err}"
            );
            // What the server managed to hand over: the limit, the chunk that crossed it, and
            // what the socket buffers took before the client stopped reading.
            let sent = hostile.sent() - before;
            assert!(
                sent < limit + 8 * 1024 * 1024,
                "{call}: the server sent {sent} bytes"
            );
        }
    }

    /// A redirect is never followed: the server it points at (a working CA, trusted by the same
    /// bundle) receives nothing, and the error says why.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        let ca = FakeCa::start().await;
        let hostile =
            HostileCa::start(&ca.certs, Hostile::RedirectTo(format!("{}/health", ca.url))).await;
        let client = client_for(&ca, &hostile.url);
        let err = client.health().await.unwrap_err();
        assert!(
            matches!(err, Error::Redirected { status: 302, .. }),
            "{err}"
        );
        assert_eq!(err.reason(), "CARedirected");
        assert!(err.to_string().contains("does not follow"), "{err}");
        let csr = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .serialize_request(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem()
            .unwrap();
        let err = client
            .sign(&SignRequest {
                csr_pem: csr,
                ott: "token".into(),
                not_before: None,
                not_after: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Redirected { .. }), "{err}");
        assert!(
            ca.requests().is_empty(),
            "the redirect target was reached: {:?}",
            ca.requests()
        );
    }

    /// Security review M1: with `--forbidden-ca-cidrs`, neither a literal address nor a name
    /// resolving into a forbidden range is connected to.
    #[tokio::test]
    async fn forbidden_addresses_are_never_connected_to() {
        use crate::step::address_policy::Cidr;
        let ca = FakeCa::start().await;
        let port = ca.url.rsplit(':').next().unwrap().to_owned();
        let loopback = ForbiddenRanges::new(vec![
            "169.254.0.0/16".parse::<Cidr>().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ]);
        let root = Some(ca.certs.root_pem.as_bytes());
        let timeout = Duration::from_secs(5);

        let err = Client::with_forbidden(&ca.url, root, timeout, &loopback).unwrap_err();
        assert!(matches!(err, Error::ForbiddenAddress { .. }), "{err}");
        assert_eq!(err.reason(), "CAAddressForbidden");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1, which is in the range 127.0.0.0/8")
                && text.contains("--forbidden-ca-cidrs"),
            "{text}"
        );

        let by_name = format!("https://localhost:{port}");
        let client = Client::with_forbidden(&by_name, root, timeout, &loopback).unwrap();
        let err = client.health().await.unwrap_err();
        assert!(matches!(err, Error::ForbiddenAddress { .. }), "{err}");
        assert!(err.to_string().contains("range 127.0.0.0/8"), "{err}");
        assert!(
            ca.requests().is_empty(),
            "the CA was reached: {:?}",
            ca.requests()
        );

        // Ranges that do not hold the address change nothing, for names and literals alike.
        let elsewhere = ForbiddenRanges::new(vec!["10.0.0.0/8".parse().unwrap()]);
        for url in [&by_name, &ca.url] {
            Client::with_forbidden(url, root, timeout, &elsewhere)
                .unwrap()
                .health()
                .await
                .unwrap();
        }
        assert_eq!(ca.requests().len(), 2, "{:?}", ca.requests());
    }

    #[test]
    fn url_normalisation() {
        assert_eq!(
            normalise_url("https://ca.example:9000/").unwrap(),
            "https://ca.example:9000"
        );
        assert_eq!(
            normalise_url(" https://ca.example ").unwrap(),
            "https://ca.example"
        );
        assert_eq!(
            normalise_url("https://ca.example:443").unwrap(),
            "https://ca.example"
        );
        assert_eq!(
            normalise_url("https://[::1]:9000").unwrap(),
            "https://[::1]:9000"
        );
        assert_eq!(
            normalise_url("https://127.0.0.1:9000").unwrap(),
            "https://127.0.0.1:9000"
        );
        for bad in [
            "http://ca.example",
            "ca.example:9000",
            "https://ca.example/1.0",
            "https://u:p@ca.example",
            "https://ca.example/?x=1",
            "",
        ] {
            let err = normalise_url(bad).unwrap_err();
            assert_eq!(err.reason(), "InvalidURL", "{bad}");
        }
    }

    #[test]
    fn ca_bundle_must_be_pem() {
        let ca = FakeCa::certs();
        assert_eq!(parse_ca_bundle(ca.root_pem.as_bytes()).unwrap().len(), 1);
        let two = format!("{}{}", ca.root_pem, ca.root_pem);
        assert_eq!(parse_ca_bundle(two.as_bytes()).unwrap().len(), 2);
        for bad in [
            &ca.root_der[..],
            b"garbage",
            b"",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let err = parse_ca_bundle(bad).unwrap_err();
            assert!(
                err.to_string()
                    .contains("caBundle must be PEM certificates"),
                "{err}"
            );
            assert_eq!(err.reason(), "InvalidCABundle");
        }
    }

    #[test]
    fn sign_response_falls_back_to_crt_ca() {
        let raw: RawSignResponse = serde_json::from_str(r#"{"crt":"L","ca":"I"}"#).unwrap();
        let resp: SignResponse = raw.into();
        assert_eq!(resp.cert_chain, vec!["L", "I"]);
        let raw: RawSignResponse = serde_json::from_str(
            r#"{"crt":"L","ca":"I","certChain":["L","I","J"],"tlsOptions":{}}"#,
        )
        .unwrap();
        assert_eq!(SignResponse::from(raw).cert_chain, vec!["L", "I", "J"]);
    }

    #[test]
    fn debug_is_redacted() {
        let req = SignRequest {
            csr_pem: "CSR".into(),
            ott: "secret.token.value".into(),
            not_after: None,
            not_before: None,
        };
        assert!(!format!("{req:?}").contains("secret"));
        let id = ClientIdentity {
            cert_chain_pem: "C".into(),
            key_pem: Zeroizing::new("PRIVATEKEYDATA".into()),
        };
        assert!(!format!("{id:?}").contains("PRIVATEKEYDATA"));
    }

    #[tokio::test]
    async fn client_against_fake_ca() {
        let ca = FakeCa::start().await;
        let client = ca.client();
        assert_eq!(client.url(), ca.url);
        assert_eq!(client.audience_sign(), format!("{}/1.0/sign", ca.url));
        client.health().await.unwrap();
        assert_eq!(client.version().await.unwrap().version, "0.30.2");
        assert_eq!(
            client.roots().await.unwrap(),
            vec![ca.certs.root_pem.clone()]
        );

        let provs = client.provisioners().await.unwrap();
        assert_eq!(
            provs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["acme", "admin", "admin", "ed"]
        );
        assert!(!provs[0].is_jwk());
        assert!(
            provs[1].is_jwk() && provs[2].is_jwk(),
            "type is case-insensitive"
        );
        assert_eq!(provs[1].kid.as_deref(), Some(ca.other_kid.as_str()));
        // Two pages were fetched, the second with the first page's cursor.
        let reqs = ca.requests();
        let listing: Vec<&String> = reqs
            .iter()
            .filter(|r| r.starts_with("GET /1.0/provisioners?"))
            .collect();
        assert_eq!(listing.len(), 2, "{reqs:?}");
        assert!(listing[0].ends_with("?limit=100"), "{listing:?}");
        assert!(listing[1].contains("cursor=page2"), "{listing:?}");

        let jwe = client.encrypted_key(&ca.kid).await.unwrap();
        assert_eq!(jwe, ca.jwe);
        let err = client.encrypted_key("unknown").await.unwrap_err();
        assert_eq!(err.http_status(), Some(404));

        let resp = client
            .sign(&SignRequest {
                csr_pem: "CSR".into(),
                ott: "tok".into(),
                not_after: Some("24h".into()),
                not_before: None,
            })
            .await
            .unwrap();
        assert_eq!(
            resp.cert_chain,
            vec!["LEAF".to_owned(), "INTERMEDIATE".to_owned()]
        );
        assert_eq!(resp.crt, "LEAF");
        assert_eq!(resp.ca, "INTERMEDIATE");
        let body = ca.last_sign_body().unwrap();
        assert_eq!(
            body,
            serde_json::json!({"csr": "CSR", "ott": "tok", "notAfter": "24h"})
        );

        let forbidden = SignRequest {
            csr_pem: "FORBIDDEN".into(),
            ott: "tok2".into(),
            not_after: None,
            not_before: None,
        };
        let err = client.sign(&forbidden).await.unwrap_err();
        assert_eq!(err.http_status(), Some(403));
        assert!(!err.is_retryable());
        assert!(
            err.to_string()
                .contains("does not contain the valid DNS names"),
            "{err}"
        );
        let boom = SignRequest {
            csr_pem: "BOOM".into(),
            ..forbidden.clone()
        };
        let err = client.sign(&boom).await.unwrap_err();
        assert_eq!(err.http_status(), Some(500));
        assert!(err.is_retryable());
        let html = SignRequest {
            csr_pem: "HTML".into(),
            ..forbidden.clone()
        };
        let err = client.sign(&html).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("HTML response (HTTP 502 Bad Gateway)"),
            "{err}"
        );
        let unauth = SignRequest {
            csr_pem: "UNAUTH".into(),
            ..forbidden
        };
        let err = client.sign(&unauth).await.unwrap_err();
        assert!(err.is_auth_failure());

        assert!(
            ca.requests_with_header()
                .iter()
                .all(|(_, id)| id.len() == 32),
            "every request carries an X-Request-Id"
        );
    }

    #[tokio::test]
    async fn untrusted_server_is_unreachable() {
        let ca = FakeCa::start().await;
        let other = FakeCa::certs();
        let client = Client::new(
            &ca.url,
            Some(other.root_pem.as_bytes()),
            Duration::from_secs(5),
        )
        .unwrap();
        let err = client.health().await.unwrap_err();
        assert_eq!(err.reason(), "CAUnreachable", "{err}");
        assert!(err.is_retryable());
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn connection_refused_and_timeout() {
        crate::step::fake_ca::install_provider();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = Client::new(
            &format!("https://127.0.0.1:{port}"),
            None,
            Duration::from_secs(2),
        )
        .unwrap();
        let err = client.health().await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(err.reason(), "CAUnreachable");

        // A listener that accepts but never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let client = Client::new(
            &format!("https://127.0.0.1:{port}"),
            None,
            Duration::from_millis(300),
        )
        .unwrap();
        let err = client.health().await.unwrap_err();
        assert_eq!(err.reason(), "CATimeout", "{err}");
        assert!(err.is_retryable());
        hold.abort();
    }

    #[tokio::test]
    async fn renew_over_mtls() {
        let ca = FakeCa::start_with(true).await;
        let client = ca.client();
        // The server requires a client certificate: without one the handshake fails.
        let err = client.health().await.unwrap_err();
        assert_eq!(err.reason(), "CAUnreachable", "{err}");
        let identity = ca.client_identity();
        let resp = client.renew(&identity).await.unwrap();
        assert_eq!(resp.crt, "RENEWED");
        let bad = ClientIdentity {
            cert_chain_pem: "nope".into(),
            key_pem: Zeroizing::new("nope".into()),
        };
        let err = client.renew(&bad).await.unwrap_err();
        assert_eq!(err.reason(), "InvalidClientIdentity");
    }
}
