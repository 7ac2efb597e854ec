//! Everything needed to sign certificates for one issuer: the CA client, the provisioner key,
//! the CA roots and what else is known about the CA ([`CaFacts`]).
//!
//! Building a [`Signer`] costs a PBKDF2 run (up to ~150 ms) and a few round trips, so the
//! controller builds it once per (issuer spec, password) and caches it; clones share state.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::client::{Client, SignRequest, SignResponse};
use super::facts::{CaFacts, ProvisionerClaims, cert_not_after, supports_token_binding};
use super::lookup::{check_given_key, claims_by_kid, load_by_kid, load_by_name};
use super::provisioner::ProvisionerKey;
use super::revoke::{RevocationReason, SerialNumber};
use super::token::{DEFAULT_TOKEN_LIFETIME, TokenClaims, TokenPurpose, csr_fingerprint};
use super::{Error, Result};

const ACTION_ROOTS: &str = "fetch the step-ca roots";

/// At most this many JWK provisioners of the same name are tried when no kid is given. step-ca
/// names are unique in practice; trying every one would let whoever controls the CA URL make
/// the controller run PBKDF2 without end (each key may ask for up to a million iterations), and
/// would tell, by which key decrypted, which of many guessed passwords is the Secret's.
pub const MAX_SAME_NAME_CANDIDATES: usize = 3;
/// Time allowed for decrypting keys within one connect: a second for each candidate, which a
/// key at the largest accepted iteration count (a million) takes with room to spare.
pub const DECRYPT_BUDGET: Duration = Duration::from_secs(MAX_SAME_NAME_CANDIDATES as u64);

/// The overall deadline of [`Signer::connect`]: twice the per-request timeout for all its
/// requests together (a working step-ca answers each in milliseconds), plus the decryption
/// budget. Without it, a CA answering each request just within the timeout could keep a
/// connect, and what waits on it, going for hours. Pure.
pub fn connect_deadline(request_timeout: Duration) -> Duration {
    request_timeout
        .saturating_mul(2)
        .saturating_add(DECRYPT_BUDGET)
}

/// A ready-to-use signer for one step-ca JWK provisioner. Cheap to clone; Send + Sync.
#[derive(Clone)]
pub struct Signer {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    provisioner_name: String,
    key: ProvisionerKey,
    roots_pem: Vec<String>,
    root_sha256_hex: Option<String>,
    /// What was learnt at connect; `intermediate_not_after` is kept in the mutex below.
    facts: CaFacts,
    /// notAfter of the intermediate in the latest sign answer, updated by every sign.
    intermediate_not_after: Mutex<Option<DateTime<Utc>>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("url", &self.inner.client.url())
            .field("provisioner", &self.inner.provisioner_name)
            .field("kid", &self.inner.key.kid())
            .field("alg", &self.inner.key.alg())
            .field("roots", &self.inner.roots_pem.len())
            .field("version", &self.inner.facts.version)
            .finish_non_exhaustive()
    }
}

/// Options of one sign request; `Default` is a plain sign.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SignOptions {
    /// Sent as `X-Request-Id` (the CertificateRequest's UID, say), so that step-ca's log line
    /// and ours can be matched. A random id without it.
    pub request_id: Option<String>,
    /// Start of validity, RFC 3339 or Go duration. Without it step-ca backdates by a minute.
    pub not_before: Option<String>,
    /// End of validity, Go duration (`"2160h0m0s"`) or RFC 3339.
    pub not_after: Option<String>,
    /// The CSR DER that the token's `cnf` binds; read from the PEM's first block when `None`.
    pub csr_der: Option<Vec<u8>>,
}

impl fmt::Debug for SignOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignOptions")
            .field("request_id", &self.request_id)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("csr_der", &self.csr_der.as_ref().map(Vec::len))
            .finish()
    }
}

/// The DER of the first PEM block of a CSR, the one step-ca reads; `None` when it is not PEM.
fn first_csr_der(csr_pem: &str) -> Option<Vec<u8>> {
    let block = pem::parse(csr_pem).ok()?;
    block
        .tag()
        .ends_with("CERTIFICATE REQUEST")
        .then(|| block.into_contents())
}

/// Runs a connect under [`connect_deadline`] of the client's timeout.
async fn within_deadline(
    client: &Client,
    connect: impl std::future::Future<Output = Result<Signer>>,
) -> Result<Signer> {
    let deadline = connect_deadline(client.timeout());
    tokio::time::timeout(deadline, connect)
        .await
        .map_err(|_| Error::ConnectDeadline {
            url: client.url().to_owned(),
            deadline,
            decrypt_budget: DECRYPT_BUDGET,
        })?
}

impl Signer {
    /// Connects to the CA and loads the provisioner key.
    ///
    /// 1. `GET /health`.
    /// 2. With `kid`: `GET /1.0/provisioners/{kid}/encrypted-key` (as step-issuer does); on 404 the
    ///    provisioner list is read to say precisely what is wrong. Without `kid`: the paged list
    ///    is searched by name and each JWK provisioner with that name is tried until one
    ///    decrypts (`ca/provisioner.go loadProvisionerJWKByName`), if there are at most
    ///    [`MAX_SAME_NAME_CANDIDATES`]; with more, the name is ambiguous and `kid` is needed.
    /// 3. Decrypts the key with `password` (used verbatim) and checks its thumbprint.
    /// 4. `GET /1.0/roots`, keeping the PEMs and the first root's SHA-256 for the `sha` claim,
    ///    and, for [`Signer::facts`], `GET /version` and (with `kid`) the provisioner's claims
    ///    from the list; those two may fail without failing the connect.
    ///
    /// With a `kid`, the provisioner name is not checked against the CA here (the
    /// encrypted-key endpoint does not return it); a wrong name shows up as a 401 at sign time,
    /// exactly as with step-issuer.
    pub async fn connect(
        url: &str,
        ca_bundle_pem: Option<&[u8]>,
        provisioner_name: &str,
        kid: Option<&str>,
        password: &[u8],
        timeout: Duration,
    ) -> Result<Signer> {
        let client = Client::new(url, ca_bundle_pem, timeout)?;
        Self::connect_with_client(client, provisioner_name, kid, password).await
    }

    /// As [`Signer::connect`], with an existing client. Fails with
    /// [`Error::ConnectDeadline`] after [`connect_deadline`] of the client's timeout.
    pub async fn connect_with_client(
        client: Client,
        provisioner_name: &str,
        kid: Option<&str>,
        password: &[u8],
    ) -> Result<Signer> {
        let connect = Self::connect_unbounded(client.clone(), provisioner_name, kid, password);
        within_deadline(&client, connect).await
    }

    /// Connects with a provisioner key the caller already holds (from a Secret, see
    /// [`provisioner_key_from_material`](super::provisioner_key_from_material)) instead of
    /// fetching the encrypted key from the CA, which is never asked for it: `GET /health`, the
    /// provisioner list (when it can be read, a JWK provisioner called `provisioner_name` must
    /// hold this public key: [`Error::ProvisionerKeyMismatch`] otherwise), then the roots and
    /// version as [`Signer::connect`] does. Bounded by [`connect_deadline`].
    pub async fn connect_with_key(
        client: Client,
        provisioner_name: &str,
        key: ProvisionerKey,
    ) -> Result<Signer> {
        let connect = async {
            client.health().await?;
            let claims = check_given_key(&client, provisioner_name, &key).await?;
            Self::assemble(client.clone(), provisioner_name, key, claims).await
        };
        within_deadline(&client, connect).await
    }

    async fn connect_unbounded(
        client: Client,
        provisioner_name: &str,
        kid: Option<&str>,
        password: &[u8],
    ) -> Result<Signer> {
        client.health().await?;
        let password = Arc::new(Zeroizing::new(password.to_vec()));
        let kid = kid.map(str::trim).filter(|k| !k.is_empty());
        let (key, claims) = match kid {
            Some(kid) => {
                let key = load_by_kid(&client, provisioner_name, kid, password).await?;
                (key, claims_by_kid(&client, provisioner_name, kid).await)
            }
            None => load_by_name(&client, provisioner_name, password).await?,
        };
        Self::assemble(client, provisioner_name, key, claims).await
    }

    /// The roots (required) and the version (informative), then the signer.
    async fn assemble(
        client: Client,
        provisioner_name: &str,
        key: ProvisionerKey,
        claims: Option<ProvisionerClaims>,
    ) -> Result<Signer> {
        let (roots, version, intermediates) =
            tokio::join!(client.roots(), client.version(), client.intermediates());
        let roots_pem = roots?;
        let root_sha256_hex = roots_pem.first().and_then(|pem| root_fingerprint(pem));
        if roots_pem.is_empty() || root_sha256_hex.is_none() {
            return Err(Error::Decode {
                action: ACTION_ROOTS,
                detail: if roots_pem.is_empty() {
                    "the CA returned no root certificates".into()
                } else {
                    "the first root is not a PEM certificate".into()
                },
            });
        }
        let version = version.ok().map(|v| v.version);
        // Known before the first sign where the CA serves its intermediates; a CA with several
        // may sign with any, so the first to expire is the one that bounds lifetimes.
        let intermediate_not_after = intermediates
            .ok()
            .and_then(|pems| pems.iter().filter_map(|p| cert_not_after(p)).min());
        let facts = CaFacts {
            token_binding: version.as_deref().is_some_and(supports_token_binding),
            version,
            claims,
            roots_not_after: roots_pem.iter().filter_map(|p| cert_not_after(p)).collect(),
            intermediate_not_after: None,
        };
        tracing::debug!(
            url = client.url(),
            provisioner = provisioner_name,
            kid = key.kid(),
            alg = key.alg(),
            version = facts.version.as_deref().unwrap_or("unknown"),
            token_binding = facts.token_binding,
            "Loaded step-ca provisioner key"
        );
        Ok(Signer {
            inner: Arc::new(Inner {
                client,
                provisioner_name: provisioner_name.to_owned(),
                key,
                roots_pem,
                root_sha256_hex,
                facts,
                intermediate_not_after: Mutex::new(intermediate_not_after),
            }),
        })
    }

    /// `GET /health`, for readiness checks of a cached signer.
    pub async fn check_health(&self) -> Result<()> {
        self.inner.client.health().await
    }

    /// Signs a CSR with a fresh 5-minute token (audience `<url>/1.0/sign`). `not_after` is a Go
    /// duration or RFC 3339 time. Retry only on [`Error::is_retryable`]; each call mints a new
    /// token, as step-ca burns tokens even on failure.
    pub async fn sign(
        &self,
        csr_pem: &str,
        subject: &str,
        sans: &[String],
        not_after: Option<String>,
    ) -> Result<SignResponse> {
        let options = SignOptions {
            not_after,
            ..SignOptions::default()
        };
        self.sign_with_options(csr_pem, subject, sans, &options)
            .await
    }

    /// Signs a CSR with a fresh token. When the CA checks CSR fingerprints
    /// ([`CaFacts::token_binding`]), the token is bound to this CSR (`cnf`), so that it cannot
    /// be redeemed for another one. Remembers the intermediate's notAfter from the answer.
    pub async fn sign_with_options(
        &self,
        csr_pem: &str,
        subject: &str,
        sans: &[String],
        options: &SignOptions,
    ) -> Result<SignResponse> {
        let fingerprint = if self.inner.facts.token_binding {
            let der = options.csr_der.clone().or_else(|| first_csr_der(csr_pem));
            der.map(|der| csr_fingerprint(&der))
        } else {
            None
        };
        let ott = self.token(
            subject,
            sans,
            DEFAULT_TOKEN_LIFETIME,
            fingerprint,
            TokenPurpose::Sign,
        )?;
        let request = SignRequest {
            csr_pem: csr_pem.to_owned(),
            ott,
            not_after: options.not_after.clone(),
            not_before: options.not_before.clone(),
        };
        let response = self
            .inner
            .client
            .sign_with_request_id(&request, options.request_id.as_deref())
            .await?;
        self.remember_intermediate(&response);
        Ok(response)
    }

    fn remember_intermediate(&self, response: &SignResponse) {
        let intermediate = response
            .cert_chain
            .get(1)
            .or(Some(&response.ca))
            .and_then(|pem| cert_not_after(pem));
        if let Some(not_after) = intermediate {
            let mut seen = self
                .inner
                .intermediate_not_after
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *seen = Some(not_after);
        }
    }

    /// Mints a sign token for someone else to redeem (pod bootstrap, `step ca certificate`).
    /// Not bound to a CSR, since the redeemer makes its own.
    pub fn mint_token(&self, subject: &str, sans: &[String], lifetime: Duration) -> Result<String> {
        self.token(subject, sans, lifetime, None, TokenPurpose::Sign)
    }

    fn token(
        &self,
        subject: &str,
        sans: &[String],
        lifetime: Duration,
        csr_fingerprint: Option<String>,
        purpose: TokenPurpose,
    ) -> Result<String> {
        let audience = match purpose {
            TokenPurpose::Sign => self.inner.client.audience_sign(),
            TokenPurpose::Revoke => self.inner.client.audience_revoke(),
        };
        self.inner.key.sign_token(
            &TokenClaims {
                issuer: self.inner.provisioner_name.clone(),
                subject: subject.to_owned(),
                sans: sans.to_vec(),
                audience,
                root_sha256_hex: self.inner.root_sha256_hex.clone(),
                lifetime,
                csr_fingerprint,
                purpose,
            },
            SystemTime::now(),
        )
    }

    /// Revokes a certificate (passively: step-ca marks it in its database, which blocks renewal
    /// and feeds the CRL) with a revoke token whose `sub` is the decimal serial. A CA without a
    /// database answers 501 ([`Error::is_not_implemented`]); a certificate revoked before gives
    /// [`Error::is_already_revoked`], which callers may treat as done.
    pub async fn revoke(
        &self,
        serial: &SerialNumber,
        reason: RevocationReason,
        reason_text: &str,
        request_id: Option<&str>,
    ) -> Result<()> {
        let decimal = serial.to_decimal()?;
        let ott = self.token(
            &decimal,
            &[],
            DEFAULT_TOKEN_LIFETIME,
            None,
            TokenPurpose::Revoke,
        )?;
        self.inner
            .client
            .revoke(&decimal, &ott, reason.code(), reason_text, request_id)
            .await
    }

    /// What is known about the CA: version, token binding, the provisioner's claims, and the
    /// notAfter of the roots and of the intermediate that issued the latest certificate.
    pub fn facts(&self) -> CaFacts {
        CaFacts {
            intermediate_not_after: self.intermediate_not_after(),
            ..self.inner.facts.clone()
        }
    }

    /// notAfter of the intermediate in the latest sign answer; `None` before the first sign.
    pub fn intermediate_not_after(&self) -> Option<DateTime<Utc>> {
        *self
            .inner
            .intermediate_not_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The CA roots as PEM, as returned by `/roots`.
    pub fn roots_pem(&self) -> &[String] {
        &self.inner.roots_pem
    }

    /// What a peer of this CA's certificates should trust: the roots, then the federated roots
    /// (`/federation`), each once. Read from step-ca on each call; when `/federation` fails, the
    /// roots alone, and the error.
    pub async fn trust_pem(&self) -> (Vec<String>, Option<super::Error>) {
        let mut all = self.inner.roots_pem.clone();
        match self.inner.client.federation().await {
            Ok(federated) => {
                for pem in federated {
                    let same = |p: &String| p.trim() == pem.trim();
                    if !all.iter().any(same) {
                        all.push(pem);
                    }
                }
                (all, None)
            }
            Err(e) => (all, Some(e)),
        }
    }

    /// Lowercase hex SHA-256 of the first root's DER: the `step` fingerprint.
    pub fn root_sha256_hex(&self) -> Option<&str> {
        self.inner.root_sha256_hex.as_deref()
    }

    pub fn provisioner_name(&self) -> &str {
        &self.inner.provisioner_name
    }

    pub fn kid(&self) -> &str {
        self.inner.key.kid()
    }

    /// The normalised CA URL.
    pub fn url(&self) -> &str {
        self.inner.client.url()
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }
}

/// Lowercase hex SHA-256 of the DER inside a PEM certificate.
pub fn root_fingerprint(pem_text: &str) -> Option<String> {
    let block = pem::parse(pem_text).ok()?;
    (block.tag() == "CERTIFICATE").then(|| hex::encode(Sha256::digest(block.contents())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::fake_ca::{FakeCa, Hostile, HostileCa};
    use crate::step::provisioner::tests::{KeyKind, encrypt_jwk, generate_private_jwk};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;
    use std::time::Instant;

    fn assert_send_sync<T: Send + Sync + Clone>() {}

    #[test]
    fn signer_is_send_sync_clone() {
        assert_send_sync::<Signer>();
        assert_send_sync::<Client>();
    }

    fn claims_of(token: &str) -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    /// The trust for peers: the roots, then the federated roots, each once; without
    /// `/federation`, the roots alone and the error.
    #[tokio::test]
    async fn trust_is_the_roots_then_the_federated_roots_once() {
        let ca = FakeCa::start().await;
        let signer = Signer::connect(
            &ca.url,
            Some(ca.certs.root_pem.as_bytes()),
            "admin",
            Some(&ca.kid),
            FakeCa::PASSWORD,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let (trust, error) = signer.trust_pem().await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            trust,
            [
                ca.certs.root_pem.clone(),
                crate::step::fake_ca::FEDERATED_PEM.to_string()
            ]
        );
        assert!(ca.requests().iter().any(|r| r == "GET /1.0/federation"));
    }

    #[tokio::test]
    async fn connect_by_name_tries_each_same_named_provisioner() {
        let ca = FakeCa::start().await;
        // "admin" is listed twice; the first entry's key was encrypted with another password.
        let signer = Signer::connect(
            &ca.url,
            Some(ca.certs.root_pem.as_bytes()),
            "admin",
            None,
            FakeCa::PASSWORD,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(signer.kid(), ca.kid);
        assert_eq!(signer.provisioner_name(), "admin");
        assert_eq!(signer.url(), ca.url);
        assert_eq!(signer.roots_pem(), std::slice::from_ref(&ca.certs.root_pem));
        assert_eq!(
            signer.root_sha256_hex(),
            Some(hex::encode(Sha256::digest(&ca.certs.root_der)).as_str())
        );
        assert!(!format!("{signer:?}").contains("\"d\""));
        signer.check_health().await.unwrap();

        let sans = vec!["web.default.svc".to_owned()];
        let resp = signer
            .sign("CSR", "web.default.svc", &sans, Some("2160h0m0s".into()))
            .await
            .unwrap();
        assert_eq!(resp.cert_chain.len(), 2);
        let body = ca.last_sign_body().unwrap();
        assert_eq!(body["notAfter"], "2160h0m0s");
        let claims = claims_of(body["ott"].as_str().unwrap());
        assert_eq!(claims["iss"], "admin");
        assert_eq!(claims["sub"], "web.default.svc");
        assert_eq!(claims["aud"], format!("{}/1.0/sign", ca.url));
        assert_eq!(claims["sans"], serde_json::json!(["web.default.svc"]));
        assert_eq!(claims["sha"], signer.root_sha256_hex().unwrap());
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            300
        );
        assert!(
            ca.last_sign_token_verified(),
            "the fake CA verified the token signature"
        );

        // A retry after a failure must use a fresh token: step-ca burns every jti it sees.
        let err = signer
            .sign("BOOM", "web.default.svc", &sans, None)
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        let first = ca.last_sign_body().unwrap()["ott"].clone();
        signer
            .sign("CSR", "web.default.svc", &sans, None)
            .await
            .unwrap();
        let second = ca.last_sign_body().unwrap();
        assert_ne!(first, second["ott"]);
        assert_ne!(
            claims_of(first.as_str().unwrap())["jti"],
            claims_of(second["ott"].as_str().unwrap())["jti"]
        );
        assert!(second.get("notAfter").is_none());

        let token = signer
            .mint_token("pod.ns.svc", &[], Duration::from_secs(3600))
            .unwrap();
        let claims = claims_of(&token);
        assert_eq!(claims["sans"], serde_json::json!(["pod.ns.svc"]));
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
    }

    #[tokio::test]
    async fn connect_by_kid() {
        let ca = FakeCa::start().await;
        let signer = Signer::connect(
            &ca.url,
            Some(ca.certs.root_pem.as_bytes()),
            "admin",
            Some(&ca.kid),
            FakeCa::PASSWORD,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(signer.kid(), ca.kid);
        let reqs = ca.requests();
        assert!(
            reqs.iter().any(|r| r.contains("/encrypted-key")),
            "{reqs:?}"
        );
        // The list is read for the provisioner's claims only, up to the page that has it.
        let listing: Vec<&String> = reqs
            .iter()
            .filter(|r| r.starts_with("GET /1.0/provisioners?"))
            .collect();
        assert_eq!(listing.len(), 2, "{reqs:?}");
        assert!(signer.facts().claims.is_some());
    }

    #[tokio::test]
    async fn connect_errors() {
        let ca = FakeCa::start().await;
        let connect = |name: &'static str, kid: Option<String>, pw: &'static [u8]| {
            let url = ca.url.clone();
            let root = ca.certs.root_pem.clone();
            async move {
                Signer::connect(
                    &url,
                    Some(root.as_bytes()),
                    name,
                    kid.as_deref(),
                    pw,
                    Duration::from_secs(5),
                )
                .await
                .unwrap_err()
            }
        };
        let err = connect("nobody", None, FakeCa::PASSWORD).await;
        assert_eq!(err.reason(), "ProvisionerNotFound", "{err}");
        let err = connect("acme", None, FakeCa::PASSWORD).await;
        assert_eq!(err.reason(), "NotJWKProvisioner", "{err}");
        let err = connect("ed", None, FakeCa::PASSWORD).await;
        assert_eq!(err.reason(), "NoEncryptedKey", "{err}");
        let err = connect("admin", None, b"wrong").await;
        assert_eq!(err.reason(), "WrongPassword", "{err}");
        assert!(err.to_string().contains("\"admin\""), "{err}");
        let err = connect("admin", Some(ca.kid.clone()), b"wrong").await;
        assert_eq!(err.reason(), "WrongPassword", "{err}");
        let err = connect("admin", Some("no-such-kid".into()), FakeCa::PASSWORD).await;
        assert_eq!(err.reason(), "ProvisionerNotFound", "{err}");
        let err = connect("ed", Some(ca.ed_kid.clone()), FakeCa::PASSWORD).await;
        assert_eq!(err.reason(), "NoEncryptedKey", "{err}");

        let err = Signer::connect(
            &ca.url,
            Some(b"not pem"),
            "admin",
            None,
            FakeCa::PASSWORD,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidCABundle");
    }

    async fn connect_to(hostile: &HostileCa, ca: &FakeCa, timeout: Duration) -> Error {
        Signer::connect(
            &hostile.url,
            Some(ca.certs.root_pem.as_bytes()),
            "admin",
            None,
            FakeCa::PASSWORD,
            timeout,
        )
        .await
        .unwrap_err()
    }

    #[test]
    fn the_connect_deadline_is_twice_the_request_timeout_plus_decryption() {
        let s = Duration::from_secs;
        for (timeout, deadline) in [(s(10), s(23)), (s(1), s(5)), (s(0), s(3))] {
            assert_eq!(connect_deadline(timeout), deadline, "{timeout:?}");
        }
        assert_eq!(connect_deadline(Duration::MAX), Duration::MAX);
    }

    /// Security review H2: a list that never ends is given up after the page limit.
    #[tokio::test]
    async fn a_provisioner_list_that_never_ends_stops_at_the_page_limit() {
        let ca = FakeCa::start().await;
        let hostile = HostileCa::start(
            &ca.certs,
            Hostile::EndlessPages {
                delay: Duration::ZERO,
            },
        )
        .await;
        let err = connect_to(&hostile, &ca, Duration::from_secs(5)).await;
        assert_eq!(err.reason(), "TooManyProvisioners", "{err}");
        assert!(
            err.to_string()
                .contains("too many pages/provisioners (11 pages"),
            "{err}"
        );
        assert!(
            err.to_string().contains("set spec.provisioner.kid"),
            "{err}"
        );
        assert_eq!(hostile.pages(), crate::step::client::MAX_PROVISIONER_PAGES);
        assert!(!err.is_retryable());
    }

    /// Security review H2: pages that each come just within the request timeout are cut off by
    /// the connect's overall deadline (here 2 × 1 s + 3 s), not after hours.
    #[tokio::test]
    async fn a_slow_provisioner_list_is_cut_off_at_the_connect_deadline() {
        let ca = FakeCa::start().await;
        let hostile = HostileCa::start(
            &ca.certs,
            Hostile::EndlessPages {
                delay: Duration::from_millis(900),
            },
        )
        .await;
        let timeout = Duration::from_secs(1);
        let started = Instant::now();
        let err = connect_to(&hostile, &ca, timeout).await;
        let took = started.elapsed();
        assert_eq!(err.reason(), "CAConnectTooSlow", "{err}");
        assert!(
            err.to_string().contains("took longer than 5s in all"),
            "{err}"
        );
        assert!(
            took >= connect_deadline(timeout)
                && took < connect_deadline(timeout) + Duration::from_secs(2),
            "gave up after {took:?}"
        );
        assert!(hostile.pages() <= 6, "{} pages", hostile.pages());
    }

    #[tokio::test]
    async fn a_page_with_too_many_provisioners_is_refused() {
        let ca = FakeCa::start().await;
        let hostile = HostileCa::start(&ca.certs, Hostile::LongPage { count: 1001 }).await;
        let err = connect_to(&hostile, &ca, Duration::from_secs(5)).await;
        assert_eq!(err.reason(), "TooManyProvisioners", "{err}");
        assert!(
            err.to_string().contains("(1 pages, 1001 provisioners read"),
            "{err}"
        );
    }

    /// Security review H2 and L8: 10,000 same-name candidates, each a million PBKDF2 rounds,
    /// cost no decryption at all: the name is ambiguous and the admin is told to set kid.
    #[tokio::test]
    async fn many_same_name_candidates_are_not_tried() {
        let ca = FakeCa::start().await;
        let jwe = encrypt_jwk(
            &generate_private_jwk(KeyKind::P256),
            b"a-guess",
            1_000_000,
            "A256GCM",
        );
        let hostile = HostileCa::start(
            &ca.certs,
            Hostile::SameName {
                name: "admin".into(),
                count: 10_000,
                jwe,
            },
        )
        .await;
        let started = Instant::now();
        let err = connect_to(&hostile, &ca, Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert_eq!(err.reason(), "AmbiguousProvisioner", "{err}");
        assert!(
            err.to_string().contains("set spec.provisioner.kid"),
            "{err}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert_eq!(
            hostile.pages(),
            1,
            "the list is not read past the fourth candidate"
        );
    }

    /// The most a name without kid can cost: every allowed candidate at the largest accepted
    /// iteration count, none with the right password. Prints the time, to compare with
    /// [`DECRYPT_BUDGET`].
    #[tokio::test]
    async fn the_allowed_candidates_are_all_tried_within_the_budget() {
        let ca = FakeCa::start().await;
        let jwe = encrypt_jwk(
            &generate_private_jwk(KeyKind::P256),
            b"a-guess",
            1_000_000,
            "A256GCM",
        );
        let hostile = HostileCa::start(
            &ca.certs,
            Hostile::SameName {
                name: "admin".into(),
                count: MAX_SAME_NAME_CANDIDATES,
                jwe,
            },
        )
        .await;
        let started = Instant::now();
        let err = connect_to(&hostile, &ca, Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert_eq!(err.reason(), "WrongPassword", "{err}");
        assert!(err.to_string().contains("\"admin\""), "{err}");
        println!("{MAX_SAME_NAME_CANDIDATES} decryptions at p2c=1e6 took {took:?}");
    }
}

#[cfg(test)]
#[path = "signer_tests.rs"]
mod more_tests;
