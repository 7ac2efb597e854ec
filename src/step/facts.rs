//! What a [`Signer`](super::Signer) learns about its CA besides what signing needs: the version
//! (which tells whether tokens can be bound to their CSR), the provisioner's claims, and when the
//! roots and the issuing intermediate expire. All of it is informative: a CA that does not tell
//! still signs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::duration::parse_go_duration;

/// The first step-ca release that checks the token's `cnf` `x5rt#S256` against the CSR.
const TOKEN_BINDING_SINCE: (u64, u64, u64) = (0, 27, 3);

/// A provisioner's own claims, as `GET /provisioners` lists them. Each `None` means the
/// provisioner does not set it: then the authority's claims (not visible in that list) or
/// step-ca's defaults (min 5m, max 24h, default 24h) apply, so `None` is "unknown", not "none".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionerClaims {
    pub min_tls_cert_duration: Option<Duration>,
    pub max_tls_cert_duration: Option<Duration>,
    pub default_tls_cert_duration: Option<Duration>,
    pub disable_renewal: Option<bool>,
}

impl ProvisionerClaims {
    /// Reads the `claims` member of a provisioner. `None` when it is not an object; a member
    /// that is absent or not a Go duration (or bool) is left unknown rather than failing the
    /// list, because these facts only inform.
    pub fn from_json(claims: &Value) -> Option<ProvisionerClaims> {
        let map = claims.as_object()?;
        let duration = |name: &str| {
            map.get(name)
                .and_then(Value::as_str)
                .and_then(|d| parse_go_duration(d).ok())
        };
        Some(ProvisionerClaims {
            min_tls_cert_duration: duration("minTLSCertDuration"),
            max_tls_cert_duration: duration("maxTLSCertDuration"),
            default_tls_cert_duration: duration("defaultTLSCertDuration"),
            disable_renewal: map.get("disableRenewal").and_then(Value::as_bool),
        })
    }
}

/// What is known about the CA behind a signer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaFacts {
    /// `GET /version` as the CA answered it (`"0.30.2"`, or `"N/A"` for a build without a
    /// version); `None` when it did not answer.
    pub version: Option<String>,
    /// Whether sign tokens carry the CSR fingerprint (`cnf`), from [`supports_token_binding`].
    pub token_binding: bool,
    /// The provisioner's own claims, when the provisioner list could be read and has them.
    pub claims: Option<ProvisionerClaims>,
    /// notAfter of each root from `/roots` that parses, in the CA's order.
    pub roots_not_after: Vec<DateTime<Utc>>,
    /// notAfter of the issuing intermediate in the latest sign answer; `None` before the first
    /// sign.
    pub intermediate_not_after: Option<DateTime<Utc>>,
}

/// Whether a step-ca of this version checks the token's CSR fingerprint, i.e. is at least
/// 0.27.3. Accepts `0.30.2`, `v0.30.2`, `0.28` and pre-releases (`0.28.0-rc1`, which is after
/// 0.27.3; `0.27.3-rc1` is before it) and ignores build metadata (`+...`). Anything else
/// (`dev`, `N/A`, empty) is unknown, hence `false`: an unbound token works with every version.
/// Pure.
pub fn supports_token_binding(version: &str) -> bool {
    match parse_version(version) {
        Some((core, prerelease)) => {
            core > TOKEN_BINDING_SINCE || (core == TOKEN_BINDING_SINCE && !prerelease)
        }
        None => false,
    }
}

/// `(major, minor, patch)` and whether it is a pre-release.
fn parse_version(version: &str) -> Option<((u64, u64, u64), bool)> {
    let v = version.trim();
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let v = v.split('+').next().unwrap_or_default();
    let (core, prerelease) = match v.split_once('-') {
        Some((core, pre)) => (core, !pre.is_empty()),
        None => (v, false),
    };
    let number = |part: Option<&str>| -> Option<u64> {
        let part = part?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let mut parts = core.split('.');
    let major = number(parts.next())?;
    let minor = number(parts.next())?;
    let patch = match parts.next() {
        Some(p) => number(Some(p))?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(((major, minor, patch), prerelease))
}

/// notAfter of the first certificate in `pem_text`; `None` when it does not parse.
pub fn cert_not_after(pem_text: &str) -> Option<DateTime<Utc>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    let cert = block.parse_x509().ok()?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_binding_by_version() {
        let cases = [
            ("0.30.2", true),
            ("v0.30.2", true),
            ("V0.30.2", true),
            (" 0.27.3\n", true),
            ("0.27.3", true),
            ("0.27.4", true),
            ("0.28", true),
            ("0.28.0-rc1", true),
            ("0.28.0-rc.1+build.5", true),
            ("1.0.0", true),
            ("0.30.2+dirty", true),
            ("0.27.3-rc1", false),
            ("0.27.2", false),
            ("0.27", false),
            ("0.19.0", false),
            ("v0.26.99", false),
            ("dev", false),
            ("N/A", false),
            ("", false),
            ("0.x.1", false),
            ("0.30.2.1", false),
            ("0..1", false),
            ("-0.30.2", false),
            ("0.+30.2", false),
            ("99999999999999999999999.0.0", false),
        ];
        for (version, want) in cases {
            assert_eq!(supports_token_binding(version), want, "{version:?}");
        }
    }

    #[test]
    fn claims_from_the_provisioner_list() {
        let claims = ProvisionerClaims::from_json(&json!({
            "minTLSCertDuration": "5m0s",
            "maxTLSCertDuration": "2160h0m0s",
            "defaultTLSCertDuration": "24h",
            "disableRenewal": true,
            "enableSSHCA": true,
        }))
        .unwrap();
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(claims.min_tls_cert_duration, Some(Duration::from_secs(300)));
        assert_eq!(claims.max_tls_cert_duration, Some(h(2160)));
        assert_eq!(claims.default_tls_cert_duration, Some(h(24)));
        assert_eq!(claims.disable_renewal, Some(true));

        let partial = ProvisionerClaims::from_json(&json!({"maxTLSCertDuration": "1h30m",
            "minTLSCertDuration": "1d", "disableRenewal": "yes"}))
        .unwrap();
        assert_eq!(
            partial,
            ProvisionerClaims {
                max_tls_cert_duration: Some(Duration::from_secs(5400)),
                ..ProvisionerClaims::default()
            }
        );
        assert_eq!(
            ProvisionerClaims::from_json(&json!({})),
            Some(ProvisionerClaims::default())
        );
        assert_eq!(ProvisionerClaims::from_json(&json!(null)), None);
        assert_eq!(ProvisionerClaims::from_json(&json!("24h")), None);
    }

    #[test]
    fn not_after_of_a_pem_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 2, 3);
        let pem = params.self_signed(&key).unwrap().pem();
        assert_eq!(
            cert_not_after(&pem).unwrap().to_rfc3339(),
            "2031-02-03T00:00:00+00:00"
        );
        assert_eq!(cert_not_after("LEAF"), None);
        assert_eq!(cert_not_after(""), None);
    }
}
