//! The bodies step-ca's API sends and receives (protocol doc §2, §5, §6), as the client reads
//! and writes them. Debug output never shows a token or a key.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use super::facts::ProvisionerClaims;

/// A JWK (or other) provisioner as listed by `GET /provisioners`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProvisionerInfo {
    pub name: String,
    /// As sent by the CA (`JWK`, `jwk`, `ACME`, ...); compare with [`ProvisionerInfo::is_jwk`].
    pub type_: String,
    /// `key.kid` of the public key, when present.
    pub kid: Option<String>,
    /// The public JWK (`Value::Null` for provisioner types without one).
    pub key: Value,
    /// The compact JWE of the private key, when the CA stores it.
    pub encrypted_key: Option<String>,
    /// The provisioner's own `claims`, when it has any. `None` is not "no limits": the
    /// authority-level claims, which the list does not show, or step-ca's defaults apply.
    pub claims: Option<ProvisionerClaims>,
}

impl ProvisionerInfo {
    /// step-ca lowercases types itself, and hand-written configs use either case.
    pub fn is_jwk(&self) -> bool {
        self.type_.eq_ignore_ascii_case("jwk")
    }
}

/// `GET /version`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub version: String,
    #[serde(default)]
    pub require_client_authentication: bool,
}

/// Body of `POST /1.0/sign`.
#[derive(Clone, Serialize)]
pub struct SignRequest {
    /// PEM `CERTIFICATE REQUEST`.
    #[serde(rename = "csr")]
    pub csr_pem: String,
    /// The one-time token; single use, even if the request fails.
    pub ott: String,
    /// Go duration (`"2160h0m0s"`) or RFC 3339 time.
    #[serde(rename = "notAfter", skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    #[serde(rename = "notBefore", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

impl fmt::Debug for SignRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignRequest")
            .field("csr_pem", &format_args!("<{} bytes>", self.csr_pem.len()))
            .field("ott", &"<redacted>")
            .field("not_after", &self.not_after)
            .field("not_before", &self.not_before)
            .finish()
    }
}

/// Answer of sign and renew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignResponse {
    /// Leaf certificate PEM.
    pub crt: String,
    /// Issuing intermediate PEM (not the root).
    pub ca: String,
    /// Leaf first, then intermediates; never the root.
    pub cert_chain: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawSignResponse {
    crt: String,
    #[serde(default)]
    ca: String,
    #[serde(default)]
    cert_chain: Option<Vec<String>>,
}

impl From<RawSignResponse> for SignResponse {
    fn from(raw: RawSignResponse) -> Self {
        let cert_chain = match raw.cert_chain {
            Some(chain) if !chain.is_empty() => chain,
            _ => [raw.crt.clone(), raw.ca.clone()]
                .into_iter()
                .filter(|c| !c.is_empty())
                .collect(),
        };
        SignResponse {
            crt: raw.crt,
            ca: raw.ca,
            cert_chain,
        }
    }
}

/// A certificate and its key, used as the TLS client identity for `POST /1.0/renew`.
#[derive(Clone)]
pub struct ClientIdentity {
    /// Leaf first, then intermediates, PEM.
    pub cert_chain_pem: String,
    /// PKCS#8, SEC1 or PKCS#1 PEM private key.
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field(
                "cert_chain_pem",
                &format_args!("<{} bytes>", self.cert_chain_pem.len()),
            )
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
pub(super) struct ProvisionersPage {
    #[serde(default)]
    pub provisioners: Vec<RawProvisioner>,
    #[serde(default, rename = "nextCursor")]
    pub next_cursor: String,
}

#[derive(Deserialize)]
pub(super) struct RawProvisioner {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub key: Value,
    #[serde(default, rename = "encryptedKey")]
    pub encrypted_key: Option<String>,
    #[serde(default)]
    pub claims: Option<Value>,
}
