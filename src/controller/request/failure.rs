//! Why signing did not produce a certificate, and the one place where the errors of every layer
//! (the request itself, the issuer, step-ca, the returned chain) are classified into what the
//! request's status does next.

use crate::issuer::IssuerKey;
use crate::issuer::error::IssuerError;
use crate::pki;
use crate::step::{self, Audience};

/// Metric and log reason of a CA request that step-ca signed as a leaf.
pub const REASON_NOT_A_CA: &str = "IssuedNotCA";
/// step-ca issued a certificate weaker than the request (a name, a usage or CA-ness missing).
pub const REASON_CERTIFICATE_MISMATCH: &str = "CertificateMismatch";
/// The requested lifetime is outside what the provisioner allows, or the CA's intermediate has
/// expired.
pub const REASON_DURATION: &str = "DurationNotAllowed";
/// The issuer's name policy refused the request (its namespace or a name).
pub const REASON_POLICY_DENIED: &str = "PolicyDenied";
/// The issuer named by the request disappeared between the gate and the signing.
pub const REASON_ISSUER_MISSING: &str = "IssuerMissing";
/// The issuer's `spec.policy` cannot be parsed (the issuer reconciler reports it on the issuer).
pub const REASON_INVALID_POLICY: &str = "InvalidPolicy";
/// step-ca refused our token: the issuer is re-checked and the request retried.
pub const REASON_CA_REJECTED_TOKEN: &str = "CARejectedToken";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignFailure {
    /// The request itself is bad: Failed + InvalidRequest; a new request is needed.
    Invalid(String),
    /// Refused for a reason retrying will not change (policy, duration limit): Failed.
    Permanent {
        reason: &'static str,
        message: String,
    },
    /// Worth retrying (CA down, 5xx, timeouts, an issuer not usable yet).
    Retryable {
        reason: &'static str,
        message: String,
    },
    /// step-ca refused our token: the issuer is re-checked, the request retried.
    Auth(String),
}

impl SignFailure {
    /// The issuer could not give a signer. Its own reconciler reports why on the issuer; the
    /// request waits, whatever the cause, since fixing the issuer fixes the request.
    pub fn from_issuer(e: &IssuerError, key: &IssuerKey, audience: Audience) -> Self {
        let message = if e.is_transient() {
            e.message_for(audience)
        } else {
            format!("{key} is not usable: {}", e.message_for(audience))
        };
        SignFailure::Retryable {
            reason: e.reason(),
            message,
        }
    }

    /// step-ca answered the sign call with an error. A StepIssuer's requests show what its CA
    /// answered no more than the StepIssuer does (`audience`). The message ends with the
    /// `X-Request-Id` the call carried, which step-ca logs with its own account of the failure.
    pub fn from_ca(e: &step::Error, audience: Audience, request_id: &str) -> Self {
        let said = format!(
            "{} (X-Request-Id {request_id} in step-ca's log)",
            e.message_for(audience)
        );
        if e.is_auth_failure() {
            SignFailure::Auth(said)
        } else if e.is_retryable() {
            SignFailure::Retryable {
                reason: e.reason(),
                message: said,
            }
        } else {
            SignFailure::Permanent {
                reason: e.reason(),
                message: format!("step-ca refused to sign: {said}"),
            }
        }
    }

    /// step-ca answered with a chain that does not certify the request's key, or not at all.
    pub fn unusable_chain(e: &pki::Error) -> Self {
        SignFailure::Permanent {
            reason: e.reason(),
            message: format!("step-ca returned an unusable certificate: {e}"),
        }
    }

    pub fn issuer_missing(key: &IssuerKey) -> Self {
        SignFailure::Retryable {
            reason: REASON_ISSUER_MISSING,
            message: format!("{key} disappeared"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_errors_are_classified_by_what_retrying_can_change() {
        let http = |status: u16| step::Error::Status {
            status,
            message: "no".into(),
            action: "sign",
        };
        let cases = [
            (http(401), "Auth"),
            (http(403), "Permanent"),
            (http(500), "Retryable"),
            (http(503), "Retryable"),
        ];
        for (e, want) in cases {
            let got = match SignFailure::from_ca(&e, Audience::Admin, "uid-1") {
                SignFailure::Auth(_) => "Auth",
                SignFailure::Permanent { .. } => "Permanent",
                SignFailure::Retryable { .. } => "Retryable",
                SignFailure::Invalid(_) => "Invalid",
            };
            assert_eq!(got, want, "{e:?}");
        }
    }

    #[test]
    fn an_unusable_issuer_makes_the_request_wait_and_names_it() {
        let key = IssuerKey::Cluster { name: "ca".into() };
        let e = IssuerError::InvalidSpec("spec.url is empty".into());
        let SignFailure::Retryable { reason, message } =
            SignFailure::from_issuer(&e, &key, Audience::Admin)
        else {
            panic!("an unusable issuer is waited for");
        };
        assert_eq!(reason, e.reason());
        assert!(
            message.starts_with("StepClusterIssuer ca is not usable"),
            "{message}"
        );
    }
}
