//! One-time tokens (OTT) for the JWK provisioner, built exactly like `step` builds them
//! (protocol doc §4): a compact JWS with header `{"alg","kid","typ":"JWT"}` and claims
//! `iss, sub, aud, sans, jti, iat, nbf, exp[, sha][, cnf]`; a revoke token has no `sans`.
//!
//! The JWS is assembled by hand, not with a JWT library, so that the claim set is exact and the
//! NumericDates are whole seconds.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::provisioner::ProvisionerKey;
use super::{Error, Result};

/// Lifetime step uses for sign tokens (`token.DefaultValidity`).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// What goes into a one-time token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The provisioner name; step-ca requires `iss` to equal it exactly.
    pub issuer: String,
    /// The certificate subject (becomes the CN); must not be empty.
    pub subject: String,
    /// SANs the CA will put in the certificate. Empty means `[subject]`, as step does.
    pub sans: Vec<String>,
    /// `<ca url>/1.0/sign`; the host must be one of the CA's dnsNames.
    pub audience: String,
    /// Lowercase hex SHA-256 of the root DER (`sha` claim; informative, the CA ignores it).
    pub root_sha256_hex: Option<String>,
    /// `exp - iat`.
    pub lifetime: Duration,
    /// The `cnf` `x5rt#S256` confirmation, see [`csr_fingerprint`]: the token then signs only
    /// that CSR (step-ca >= 0.27.3 checks it; older ones ignore it). `None` leaves it unbound.
    pub csr_fingerprint: Option<String>,
    /// What the token authorises; a revoke token carries neither `sans` nor `cnf`.
    pub purpose: TokenPurpose,
}

/// What a one-time token is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenPurpose {
    /// `POST /1.0/sign`: `sub` and `sans` name the certificate.
    #[default]
    Sign,
    /// `POST /1.0/revoke`: `sub` is the decimal serial, and there are no `sans`, as
    /// `step ca token --revoke` makes it.
    Revoke,
}

/// base64url (no padding) of SHA-256 over the CSR DER: the value step-ca compares with the
/// token's `cnf` `x5rt#S256`.
pub fn csr_fingerprint(csr_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(csr_der))
}

impl fmt::Debug for TokenClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claims are not secret, but keep the shape compact in logs.
        f.debug_struct("TokenClaims")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("sans", &self.sans)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .field("csr_fingerprint", &self.csr_fingerprint)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

fn token_error(detail: impl Into<String>) -> Error {
    Error::Token {
        detail: detail.into(),
    }
}

impl ProvisionerKey {
    /// Signs a fresh one-time token. Every call uses a new random `jti`, because step-ca burns
    /// each jti forever, even when the request fails.
    pub fn sign_token(&self, claims: &TokenClaims, now: SystemTime) -> Result<String> {
        if claims.subject.is_empty() {
            return Err(token_error(
                "the subject is empty; step-ca requires a non-empty sub (set a common name or a SAN)",
            ));
        }
        if claims.issuer.is_empty() {
            return Err(token_error("the provisioner name (iss) is empty"));
        }
        if claims.lifetime.is_zero() {
            return Err(token_error("the token lifetime must be positive"));
        }
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| token_error("the system clock is before 1970"))?
            .as_secs();
        let exp = iat
            .checked_add(claims.lifetime.as_secs().max(1))
            .ok_or_else(|| token_error("the token lifetime overflows"))?;
        let jti = hex::encode(rand::random::<[u8; 32]>());
        let sans = if claims.sans.is_empty() {
            vec![claims.subject.clone()]
        } else {
            claims.sans.clone()
        };

        let header = json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"});
        let mut payload = Map::new();
        payload.insert("iss".into(), Value::String(claims.issuer.clone()));
        payload.insert("sub".into(), Value::String(claims.subject.clone()));
        payload.insert("aud".into(), Value::String(claims.audience.clone()));
        if claims.purpose == TokenPurpose::Sign {
            payload.insert("sans".into(), json!(sans));
        }
        payload.insert("jti".into(), Value::String(jti));
        payload.insert("iat".into(), json!(iat));
        payload.insert("nbf".into(), json!(iat));
        payload.insert("exp".into(), json!(exp));
        if let Some(sha) = &claims.root_sha256_hex {
            payload.insert("sha".into(), Value::String(sha.to_ascii_lowercase()));
        }
        if let (Some(fingerprint), TokenPurpose::Sign) = (&claims.csr_fingerprint, claims.purpose) {
            payload.insert("cnf".into(), json!({"x5rt#S256": fingerprint}));
        }

        let header = serde_json::to_vec(&header).map_err(|e| token_error(e.to_string()))?;
        let payload = serde_json::to_vec(&payload).map_err(|e| token_error(e.to_string()))?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = self
            .signer
            .sign(signing_input.as_bytes())
            .map_err(|_| token_error(format!("signing with {} failed", self.alg)))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// The token `sans` for a CSR, as step-issuer builds them: DNS names, emails, IPs (canonical
/// text form), then URIs.
pub fn sans_from_csr_parts(
    dns: &[String],
    ips: &[IpAddr],
    uris: &[String],
    emails: &[String],
) -> Vec<String> {
    let mut sans: Vec<String> =
        Vec::with_capacity(dns.len() + ips.len() + uris.len() + emails.len());
    let candidates = dns
        .iter()
        .cloned()
        .chain(emails.iter().cloned())
        .chain(ips.iter().map(IpAddr::to_string))
        .chain(uris.iter().cloned());
    for san in candidates {
        if !san.is_empty() && !sans.contains(&san) {
            sans.push(san);
        }
    }
    sans
}

/// The token subject (`sub`) for a CSR, which never invents a name, because step-ca's default
/// template makes `sub` the certificate's CN: the CSR's common name as it is; else the first DNS
/// or IP SAN, passing over `localhost` and `127.0.0.1` when another DNS or IP SAN exists; else the
/// first URI or email SAN. `None` when there is nothing to use, which the caller must report
/// (step-ca rejects an empty `sub`).
///
/// SANs are told apart as step-ca's `x509util.SplitSANs` does: an IP, else a URL with a scheme
/// (a URI), else text with `@` (an email), else a DNS name.
pub fn subject_for(common_name: Option<&str>, sans: &[String]) -> Option<String> {
    if let Some(cn) = common_name.filter(|cn| !cn.is_empty()) {
        return Some(cn.to_owned());
    }
    let sans = sans.iter().filter(|s| !s.is_empty());
    let hosts: Vec<&String> = sans.clone().filter(|s| names_a_host(s)).collect();
    hosts
        .iter()
        .find(|s| s.as_str() != "localhost" && s.as_str() != "127.0.0.1")
        .or_else(|| hosts.first())
        .copied()
        .or_else(|| sans.clone().find(|s| !names_a_host(s)))
        .cloned()
}

/// Whether step-ca reads this SAN as a DNS name or an IP address (not a URI or an email).
fn names_a_host(san: &str) -> bool {
    san.parse::<IpAddr>().is_ok() || (url::Url::parse(san).is_err() && !san.contains('@'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::provisioner::decrypt_provisioner_key;
    use crate::step::provisioner::tests::{ALL_KINDS, KeyKind, encrypt_jwk, generate_private_jwk};
    use std::collections::{BTreeSet, HashSet};

    fn key(kind: KeyKind) -> (ProvisionerKey, josekit::jwk::Jwk) {
        let jwk = generate_private_jwk(kind);
        let jwe = encrypt_jwk(&jwk, b"pw", 1000, "A256GCM");
        (decrypt_provisioner_key(&jwe, b"pw").unwrap(), jwk)
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            issuer: "admin@example.com".into(),
            subject: "web.default.svc".into(),
            sans: vec!["web.default.svc".into(), "10.0.0.1".into()],
            audience: "https://ca.example:9000/1.0/sign".into(),
            root_sha256_hex: Some("ABCDEF0123".into()),
            lifetime: Duration::from_secs(300),
            csr_fingerprint: None,
            purpose: TokenPurpose::Sign,
        }
    }

    /// Verifies with josekit (OpenSSL), an implementation independent of the one that signed.
    fn verify(kind: KeyKind, jwk: &josekit::jwk::Jwk, input: &[u8], sig: &[u8]) {
        use josekit::jws::*;
        let public = jwk.to_public_key().unwrap();
        let alg = jwk.algorithm().unwrap();
        let res = match (kind, alg) {
            (KeyKind::P256, "ES256") => {
                ES256.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::P384, "ES384") => {
                ES384.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::P521, "ES512") => {
                ES512.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::Ed25519, "EdDSA") => {
                EdDSA.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::Rsa | KeyKind::RsaPss, "RS256") => {
                RS256.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::Rsa | KeyKind::RsaPss, "RS384") => {
                RS384.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::Rsa | KeyKind::RsaPss, "RS512") => {
                RS512.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::Rsa | KeyKind::RsaPss, "PS256") => {
                PS256.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::Rsa | KeyKind::RsaPss, "PS384") => {
                PS384.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            (KeyKind::Rsa | KeyKind::RsaPss, "PS512") => {
                PS512.verifier_from_jwk(&public).unwrap().verify(input, sig)
            }
            other => panic!("unexpected {other:?}"),
        };
        res.unwrap_or_else(|e| panic!("{kind:?} {alg}: signature does not verify: {e}"));
    }

    /// The signature segment and the signing input of a compact JWS.
    fn split_token(token: &str) -> (Vec<u8>, String) {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        (sig, format!("{}.{}", parts[0], parts[1]))
    }

    #[test]
    fn token_shape_and_signature_for_every_key_type() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_750);
        for kind in ALL_KINDS {
            let (key, jwk) = key(kind);
            let token = key.sign_token(&claims(), now).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 3);

            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
            assert_eq!(
                header,
                json!({"alg": jwk.algorithm().unwrap(), "kid": jwk.key_id().unwrap(), "typ": "JWT"})
            );

            let payload: Map<String, Value> =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            let names: BTreeSet<&str> = payload.keys().map(String::as_str).collect();
            assert_eq!(
                names,
                BTreeSet::from([
                    "aud", "exp", "iat", "iss", "jti", "nbf", "sans", "sha", "sub"
                ])
            );
            assert_eq!(payload["iss"], "admin@example.com");
            assert_eq!(payload["sub"], "web.default.svc");
            assert_eq!(payload["aud"], "https://ca.example:9000/1.0/sign");
            assert_eq!(payload["sans"], json!(["web.default.svc", "10.0.0.1"]));
            assert_eq!(payload["iat"], json!(1_800_000_000u64));
            assert_eq!(payload["nbf"], json!(1_800_000_000u64));
            assert_eq!(payload["exp"], json!(1_800_000_300u64));
            assert!(payload["iat"].is_u64());
            assert_eq!(payload["sha"], "abcdef0123");
            let jti = payload["jti"].as_str().unwrap();
            assert_eq!(jti.len(), 64);
            assert!(jti.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));

            let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            if matches!(kind, KeyKind::P256) {
                assert_eq!(sig.len(), 64, "JWS ECDSA signatures are raw r||s");
            }
            if matches!(kind, KeyKind::P384) {
                assert_eq!(sig.len(), 96, "JWS ECDSA signatures are raw r||s");
            }
            if matches!(kind, KeyKind::P521) {
                assert_eq!(sig.len(), 132, "JWS ECDSA signatures are raw r||s");
            }
            let input = format!("{}.{}", parts[0], parts[1]);
            verify(kind, &jwk, input.as_bytes(), &sig);
        }
    }

    #[test]
    fn every_rsa_alg_signs_what_josekit_verifies() {
        let mut jwk = generate_private_jwk(KeyKind::Rsa);
        for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
            jwk.set_algorithm(alg);
            let key = ProvisionerKey::from_private_jwk(jwk.to_string().as_bytes()).unwrap();
            assert_eq!(key.alg(), alg);
            let token = key.sign_token(&claims(), SystemTime::now()).unwrap();
            let (sig, input) = split_token(&token);
            assert_eq!(sig.len(), 256, "{alg}: RSA 2048 signatures are 256 bytes");
            verify(KeyKind::Rsa, &jwk, input.as_bytes(), &sig);
        }
    }

    #[test]
    fn es512_signatures_are_fixed_132_bytes() {
        let (key, jwk) = key(KeyKind::P521);
        for _ in 0..20 {
            let (sig, input) = split_token(&key.sign_token(&claims(), SystemTime::now()).unwrap());
            // r and s are 66 bytes each, whatever their leading bytes (the first is 0 or 1).
            assert_eq!(sig.len(), 132);
            verify(KeyKind::P521, &jwk, input.as_bytes(), &sig);
        }
    }

    #[test]
    fn no_sha_claim_and_default_sans() {
        let (key, _) = key(KeyKind::P256);
        let mut c = claims();
        c.root_sha256_hex = None;
        c.sans.clear();
        let token = key.sign_token(&c, SystemTime::now()).unwrap();
        let payload: Map<String, Value> = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(!payload.contains_key("sha"));
        assert_eq!(payload["sans"], json!(["web.default.svc"]));
    }

    fn payload_of(token: &str) -> Map<String, Value> {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_bound_token_carries_the_csr_fingerprint() {
        let (key, _) = key(KeyKind::P256);
        let der = b"not really DER, but any bytes hash";
        let fingerprint = csr_fingerprint(der);
        // SHA-256 is 32 bytes: 43 base64url characters without padding.
        assert_eq!(fingerprint.len(), 43);
        assert!(!fingerprint.contains(['=', '+', '/']));
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&fingerprint).unwrap(),
            Sha256::digest(der).to_vec()
        );
        let mut c = claims();
        c.csr_fingerprint = Some(fingerprint.clone());
        let payload = payload_of(&key.sign_token(&c, SystemTime::now()).unwrap());
        assert_eq!(payload["cnf"], json!({"x5rt#S256": fingerprint}));
        // Without one, no cnf at all.
        let payload = payload_of(&key.sign_token(&claims(), SystemTime::now()).unwrap());
        assert!(!payload.contains_key("cnf"));
    }

    #[test]
    fn a_revoke_token_has_neither_sans_nor_cnf() {
        let (key, _) = key(KeyKind::Ed25519);
        let mut c = claims();
        c.purpose = TokenPurpose::Revoke;
        c.subject = "340282366920938463463374607431768211455".into();
        c.audience = "https://ca.example:9000/1.0/revoke".into();
        c.csr_fingerprint = Some("ignored".into());
        let payload = payload_of(&key.sign_token(&c, SystemTime::now()).unwrap());
        let names: BTreeSet<&str> = payload.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            BTreeSet::from(["aud", "exp", "iat", "iss", "jti", "nbf", "sha", "sub"])
        );
        assert_eq!(payload["sub"], "340282366920938463463374607431768211455");
    }

    #[test]
    fn jti_is_unique() {
        let (key, _) = key(KeyKind::Ed25519);
        let now = SystemTime::now();
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let token = key.sign_token(&claims(), now).unwrap();
            let payload: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(token.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert!(seen.insert(payload["jti"].as_str().unwrap().to_owned()));
        }
    }

    #[test]
    fn empty_subject_rejected() {
        let (key, _) = key(KeyKind::P256);
        let mut c = claims();
        c.subject.clear();
        let err = key.sign_token(&c, SystemTime::now()).unwrap_err();
        assert_eq!(err.reason(), "TokenFailed");
    }

    #[test]
    fn sans_and_subject_helpers() {
        let sans = sans_from_csr_parts(
            &["localhost".into(), "web.example".into()],
            &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            &["spiffe://cluster/ns/default".into()],
            &["ops@example.com".into()],
        );
        assert_eq!(
            sans,
            vec![
                "localhost",
                "web.example",
                "ops@example.com",
                "127.0.0.1",
                "::1",
                "spiffe://cluster/ns/default"
            ]
        );
    }

    #[test]
    fn the_subject_is_never_invented() {
        let v = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let uri = "spiffe://cluster/ns/default";
        let cases: Vec<(Option<&str>, Vec<String>, Option<&str>)> = vec![
            // The CN as it is, whatever the SANs.
            (Some("cn.example"), v(&["web.example"]), Some("cn.example")),
            (Some(" spaced CN"), v(&["web.example"]), Some(" spaced CN")),
            (Some("cn.example"), v(&[]), Some("cn.example")),
            // No CN: the first DNS or IP SAN, loopback names only as a last resort.
            (
                Some(""),
                v(&["localhost", "web.example"]),
                Some("web.example"),
            ),
            (
                None,
                v(&["localhost", "127.0.0.1", "10.0.0.1"]),
                Some("10.0.0.1"),
            ),
            (None, v(&["127.0.0.1", "localhost"]), Some("127.0.0.1")),
            (None, v(&["localhost"]), Some("localhost")),
            (None, v(&["::1", "localhost"]), Some("::1")),
            // A DNS or IP SAN comes before a URI or an email, wherever they are listed.
            (
                None,
                v(&[uri, "ops@example.com", "web.example"]),
                Some("web.example"),
            ),
            (
                None,
                v(&["ops@example.com", "localhost"]),
                Some("localhost"),
            ),
            // Else the first URI or email.
            (None, v(&[uri, "ops@example.com"]), Some(uri)),
            (None, v(&["ops@example.com", uri]), Some("ops@example.com")),
            (None, v(&["", "ops@example.com"]), Some("ops@example.com")),
            (None, v(&[]), None),
            (None, v(&[""]), None),
        ];
        for (cn, sans, want) in cases {
            assert_eq!(subject_for(cn, &sans).as_deref(), want, "{cn:?} {sans:?}");
        }
    }
}
