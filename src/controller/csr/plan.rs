//! What the CertificateSigningRequest signer does with a request, as pure functions: whether it
//! is ours and may be signed (approved, not denied or failed, not yet signed), who asked, and
//! what it asks for (lifetime, CA-ness, usages), from the spec and cert-manager's annotations.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::issuer::IssuerKey;

/// cert-manager's annotations on CSRs it creates (its experimental CSR support).
pub const ANNOTATION_DURATION: &str = "experimental.cert-manager.io/request-duration";
pub const ANNOTATION_IS_CA: &str = "experimental.cert-manager.io/request-is-ca";

const APPROVED: &str = "Approved";
const DENIED: &str = "Denied";
pub const FAILED: &str = "Failed";

/// What to do with a CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Its signerName is not one of ours.
    NotOurs,
    /// Signed, denied or failed: never touched again.
    Finished,
    /// Ours, but nobody approved it yet.
    AwaitApproval,
    Sign(IssuerKey),
}

pub fn gate(csr: &CertificateSigningRequest) -> Gate {
    let Some(key) = IssuerKey::from_signer_name(&csr.spec.signer_name) else {
        return Gate::NotOurs;
    };
    let status = csr.status.as_ref();
    if status
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
    {
        return Gate::Finished;
    }
    let holds = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
    };
    if holds(DENIED) || holds(FAILED) {
        Gate::Finished
    } else if holds(APPROVED) {
        Gate::Sign(key)
    } else {
        Gate::AwaitApproval
    }
}

/// Who created the CSR, as the apiserver recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requester {
    ServiceAccount {
        namespace: String,
        name: String,
    },
    /// A user, a node, or anything else that is not a ServiceAccount.
    Other(String),
}

pub fn requester(csr: &CertificateSigningRequest) -> Requester {
    let user = csr.spec.username.clone().unwrap_or_default();
    let parts: Vec<&str> = user.split(':').collect();
    match parts.as_slice() {
        ["system", "serviceaccount", namespace, name]
            if !namespace.is_empty() && !name.is_empty() =>
        {
            Requester::ServiceAccount {
                namespace: (*namespace).to_string(),
                name: (*name).to_string(),
            }
        }
        _ => Requester::Other(user),
    }
}

/// What the CSR asks for beyond its CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// `spec.expirationSeconds`, else cert-manager's duration annotation; `None`: the CA's
    /// default.
    pub duration: Option<Duration>,
    pub is_ca: bool,
    pub usages: Vec<String>,
}

pub fn asked(csr: &CertificateSigningRequest) -> Result<Asked, String> {
    let annotation = csr.annotations().get(ANNOTATION_DURATION);
    let duration = match (csr.spec.expiration_seconds, annotation) {
        (Some(s), _) if s > 0 => Some(Duration::from_secs(u64::from(s.unsigned_abs()))),
        (Some(s), _) => {
            return Err(format!(
                "spec.expirationSeconds is {s}: ask for a positive number of seconds (the API's minimum is 600)"
            ));
        }
        (None, Some(text)) => Some(crate::duration::parse_go_duration(text).map_err(|e| {
            format!("the annotation {ANNOTATION_DURATION} is not a Go duration ({e}): write it like 2160h")
        })?)
        .filter(|d| !d.is_zero()),
        (None, None) => None,
    };
    Ok(Asked {
        duration,
        is_ca: csr
            .annotations()
            .get(ANNOTATION_IS_CA)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        usages: csr.spec.usages.clone().unwrap_or_default(),
    })
}

/// The status that says the CSR failed for good: the `Failed` condition, which the API keeps
/// alongside the approver's.
pub fn failed_status(
    reason: &str,
    message: &str,
    now: Timestamp,
) -> CertificateSigningRequestStatus {
    CertificateSigningRequestStatus {
        certificate: None,
        conditions: Some(vec![CertificateSigningRequestCondition {
            type_: FAILED.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(crate::crd::condition::bounded_message(message)),
            last_transition_time: Some(Time(now)),
            last_update_time: Some(Time(now)),
        }]),
    }
}

/// The status with the issued chain (leaf first, PEM).
pub fn issued_status(chain_pem: &str) -> CertificateSigningRequestStatus {
    CertificateSigningRequestStatus {
        certificate: Some(k8s_openapi::ByteString(chain_pem.as_bytes().to_vec())),
        conditions: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn csr(
        signer: &str,
        conditions: &[(&str, &str)],
        certificate: bool,
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: Default::default(),
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                username: Some("system:serviceaccount:team:app".into()),
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                certificate: certificate.then(|| k8s_openapi::ByteString(b"PEM".to_vec())),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| CertificateSigningRequestCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
        }
    }

    #[test]
    fn only_approved_unsigned_requests_of_ours_are_signed() {
        let ours = "stepclusterissuers.certmanager.step.sm/ca";
        let key = IssuerKey::Cluster { name: "ca".into() };
        let cases = [
            (
                "kubernetes.io/kube-apiserver-client",
                vec![(APPROVED, "True")],
                false,
                Gate::NotOurs,
            ),
            (ours, vec![], false, Gate::AwaitApproval),
            (ours, vec![(APPROVED, "False")], false, Gate::AwaitApproval),
            (
                ours,
                vec![(APPROVED, "True")],
                false,
                Gate::Sign(key.clone()),
            ),
            (ours, vec![(APPROVED, "True")], true, Gate::Finished),
            (ours, vec![(DENIED, "True")], false, Gate::Finished),
            (
                ours,
                vec![(APPROVED, "True"), (FAILED, "True")],
                false,
                Gate::Finished,
            ),
            (
                "stepissuers.certmanager.step.sm/team.ca",
                vec![(APPROVED, "True")],
                false,
                Gate::Sign(IssuerKey::Namespaced {
                    namespace: "team".into(),
                    name: "ca".into(),
                }),
            ),
        ];
        for (signer, conditions, certificate, want) in cases {
            assert_eq!(
                gate(&csr(signer, &conditions, certificate)),
                want,
                "{signer} {conditions:?} {certificate}"
            );
        }
    }

    #[test]
    fn the_requester_is_a_service_account_or_someone_else() {
        let mut c = csr("x", &[], false);
        assert_eq!(
            requester(&c),
            Requester::ServiceAccount {
                namespace: "team".into(),
                name: "app".into()
            }
        );
        for user in [
            "kubernetes-admin",
            "system:node:worker-1",
            "system:serviceaccount:team",
            "system:serviceaccount::app",
        ] {
            c.spec.username = Some(user.into());
            assert_eq!(requester(&c), Requester::Other(user.into()), "{user}");
        }
    }

    #[test]
    fn lifetime_and_ca_come_from_the_spec_or_cert_managers_annotations() {
        let mut c = csr("x", &[], false);
        assert_eq!(asked(&c).unwrap().duration, None);
        c.annotations_mut()
            .insert(ANNOTATION_DURATION.into(), "2h".into());
        assert_eq!(asked(&c).unwrap().duration, Some(Duration::from_secs(7200)));
        c.spec.expiration_seconds = Some(3600);
        assert_eq!(
            asked(&c).unwrap().duration,
            Some(Duration::from_secs(3600)),
            "the spec wins"
        );
        c.spec.expiration_seconds = None;
        c.annotations_mut()
            .insert(ANNOTATION_DURATION.into(), "soon".into());
        assert!(asked(&c).unwrap_err().contains(ANNOTATION_DURATION));
        c.annotations_mut().remove(ANNOTATION_DURATION);
        assert!(!asked(&c).unwrap().is_ca);
        c.annotations_mut()
            .insert(ANNOTATION_IS_CA.into(), "true".into());
        assert!(asked(&c).unwrap().is_ca);
    }

    #[test]
    fn a_failure_is_one_condition_and_an_issue_is_the_chain() {
        let s = failed_status("PolicyDenied", "no", Timestamp::from_second(0).unwrap());
        let conds = s.conditions.unwrap();
        assert_eq!(
            (conds[0].type_.as_str(), conds[0].status.as_str()),
            (FAILED, "True")
        );
        assert_eq!(conds[0].reason.as_deref(), Some("PolicyDenied"));
        assert!(s.certificate.is_none());
        let s = issued_status("LEAF\nINTERMEDIATE\n");
        assert_eq!(s.certificate.unwrap().0, b"LEAF\nINTERMEDIATE\n");
        assert!(s.conditions.is_none());
    }
}
