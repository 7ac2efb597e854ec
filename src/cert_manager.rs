//! cert-manager's `CertificateRequest`, declared with only the fields step-operator reads and
//! writes. API reference: <https://cert-manager.io/docs/reference/api-docs/#cert-manager.io/v1.CertificateRequest>.

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// A request to sign a CSR, created by cert-manager for a Certificate (or by hand).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "CertificateRequest",
    namespaced,
    status = "CertificateRequestStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestSpec {
    /// PEM-encoded PKCS#10 CSR (base64 in JSON).
    pub request: ByteString,
    /// Requested lifetime as a Go duration (`2160h0m0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    pub issuer_ref: IssuerRef,
    /// cert-manager spells it `isCA` (camelCase would give `isCa`, which it never sends).
    #[serde(default, rename = "isCA", skip_serializing_if = "Option::is_none")]
    pub is_ca: Option<bool>,
    /// The key usages asked for (`digital signature`, `server auth`, ...); cert-manager writes
    /// them into the CSR too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<String>,
}

/// Which issuer should sign. `group` empty or absent means cert-manager's own `cert-manager.io`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RequestCondition>,
    /// PEM leaf followed by intermediates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ByteString>,
    /// PEM root of the signing chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<ByteString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_time: Option<Time>,
}

/// cert-manager's own condition type (not `metav1.Condition`: reason and message are optional
/// and there is no `observedGeneration`; the apiserver rejects unknown fields in an apply).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_APPROVED: &str = "Approved";
pub const CONDITION_DENIED: &str = "Denied";

/// Ready reasons cert-manager's Certificate controllers understand.
pub mod reason {
    pub const PENDING: &str = "Pending";
    pub const FAILED: &str = "Failed";
    pub const ISSUED: &str = "Issued";
    pub const DENIED: &str = "Denied";
}

impl CertificateRequestStatus {
    pub fn condition(&self, type_: &str) -> Option<&RequestCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn has_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    pub fn ready_reason(&self) -> Option<&str> {
        self.condition(CONDITION_READY)
            .and_then(|c| c.reason.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names as cert-manager's API writes them (a CertificateRequest from
    /// `kubectl get -o json`, trimmed).
    #[test]
    fn reads_cert_managers_field_names() {
        let cr: CertificateRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {
                "request": "Y3Ny",
                "duration": "2160h0m0s",
                "isCA": true,
                "issuerRef": {"group": "certmanager.step.sm", "kind": "StepIssuer", "name": "ca"}
            },
            "status": {
                "conditions": [{"type": "Approved", "status": "True", "reason": "cert-manager.io"}],
                "failureTime": "2026-01-01T00:00:00Z"
            }
        }))
        .unwrap();
        assert_eq!(cr.spec.is_ca, Some(true));
        assert_eq!(cr.spec.duration.as_deref(), Some("2160h0m0s"));
        assert_eq!(cr.spec.request.0, b"csr");
        assert_eq!(cr.spec.issuer_ref.kind.as_deref(), Some("StepIssuer"));
        let status = cr.status.unwrap();
        assert!(status.has_true(CONDITION_APPROVED));
        assert!(status.failure_time.is_some());
        let back = serde_json::to_value(&cr.spec).unwrap();
        assert_eq!(back["isCA"], serde_json::json!(true));
    }
}
