//! Which certificates to revoke, as pure functions of CertificateRequests: the ones a newly
//! issued request supersedes (same Certificate, an older revision, the same issuer), and the ones
//! a user asked to revoke with the `certmanager.step.sm/revoke` label. A request is revoked once:
//! the `certmanager.step.sm/revoked` annotation records it.

use kube::ResourceExt;

use crate::cert_manager::CertificateRequest;
use crate::step::RevocationReason;

/// Label a user sets (`=true`) on a CertificateRequest to have its certificate revoked.
pub const LABEL_REVOKE: &str = "certmanager.step.sm/revoke";
/// Optional annotation with the reason: an RFC 5280 reason name (`keyCompromise`,
/// `superseded`, `cessationOfOperation`, ...), or free text (revoked as `unspecified`).
pub const ANNOTATION_REASON: &str = "certmanager.step.sm/revoke-reason";
/// Written once the certificate is revoked: when, and why.
pub const ANNOTATION_REVOKED: &str = "certmanager.step.sm/revoked";

const CERTIFICATE_NAME: &str = "cert-manager.io/certificate-name";
const CERTIFICATE_REVISION: &str = "cert-manager.io/certificate-revision";

/// Whether `cr` holds a certificate not yet revoked by us.
pub fn revocable(cr: &CertificateRequest) -> bool {
    !cr.annotations().contains_key(ANNOTATION_REVOKED)
        && cr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| !c.0.is_empty())
}

/// Whether the user asked to revoke `cr`.
pub fn revocation_asked(cr: &CertificateRequest) -> bool {
    cr.labels()
        .get(LABEL_REVOKE)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn revision(cr: &CertificateRequest) -> Option<u64> {
    cr.annotations().get(CERTIFICATE_REVISION)?.parse().ok()
}

/// The requests `issued` supersedes: of the same Certificate and issuer, with a lower revision,
/// holding a certificate not yet revoked. None when `issued` belongs to no Certificate.
pub fn superseded<'a>(
    issued: &CertificateRequest,
    others: &'a [CertificateRequest],
) -> Vec<&'a CertificateRequest> {
    let (Some(name), Some(rev)) = (issued.annotations().get(CERTIFICATE_NAME), revision(issued))
    else {
        return Vec::new();
    };
    others
        .iter()
        .filter(|o| o.namespace() == issued.namespace())
        .filter(|o| o.annotations().get(CERTIFICATE_NAME) == Some(name))
        .filter(|o| revision(o).is_some_and(|r| r < rev))
        .filter(|o| same_issuer(o, issued))
        .filter(|o| revocable(o))
        .collect()
}

fn same_issuer(a: &CertificateRequest, b: &CertificateRequest) -> bool {
    let (a, b) = (&a.spec.issuer_ref, &b.spec.issuer_ref);
    a.name == b.name && a.kind == b.kind && a.group == b.group
}

/// The reason asked on `cr`, as step-ca's reason code and text.
pub fn asked_reason(cr: &CertificateRequest) -> (RevocationReason, String) {
    let text = cr
        .annotations()
        .get(ANNOTATION_REASON)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    match text {
        Some(t) => (reason_named(&t).unwrap_or(RevocationReason::Unspecified), t),
        None => (
            RevocationReason::Unspecified,
            "asked with the certmanager.step.sm/revoke label".into(),
        ),
    }
}

fn reason_named(text: &str) -> Option<RevocationReason> {
    use RevocationReason::*;
    let all = [
        ("unspecified", Unspecified),
        ("keyCompromise", KeyCompromise),
        ("cACompromise", CaCompromise),
        ("affiliationChanged", AffiliationChanged),
        ("superseded", Superseded),
        ("cessationOfOperation", CessationOfOperation),
        ("certificateHold", CertificateHold),
        ("privilegeWithdrawn", PrivilegeWithdrawn),
        ("aACompromise", AaCompromise),
    ];
    all.iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_manager::{CertificateRequestSpec, CertificateRequestStatus, IssuerRef};
    use k8s_openapi::ByteString;

    fn cr(name: &str, cert: &str, rev: Option<&str>, issuer: &str) -> CertificateRequest {
        let mut cr = CertificateRequest::new(
            name,
            CertificateRequestSpec {
                issuer_ref: IssuerRef {
                    name: issuer.into(),
                    kind: Some("StepClusterIssuer".into()),
                    group: Some("certmanager.step.sm".into()),
                },
                ..Default::default()
            },
        );
        cr.metadata.namespace = Some("team".into());
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(CERTIFICATE_NAME.to_string(), cert.to_string());
        if let Some(rev) = rev {
            annotations.insert(CERTIFICATE_REVISION.to_string(), rev.to_string());
        }
        cr.metadata.annotations = Some(annotations);
        cr.status = Some(CertificateRequestStatus {
            certificate: Some(ByteString(b"PEM".to_vec())),
            ..Default::default()
        });
        cr
    }

    fn names(v: Vec<&CertificateRequest>) -> Vec<String> {
        v.into_iter().map(|c| c.name_any()).collect()
    }

    #[test]
    fn a_new_revision_supersedes_the_older_ones_of_its_certificate_and_issuer() {
        let issued = cr("web-3", "web", Some("3"), "ca");
        let mut revoked = cr("web-0", "web", Some("0"), "ca");
        revoked.annotations_mut().insert(
            ANNOTATION_REVOKED.into(),
            "2026-11-29T00:00:00Z superseded".into(),
        );
        let mut failed = cr("web-1b", "web", Some("1"), "ca");
        failed.status = None;
        let mut elsewhere = cr("web-1c", "web", Some("1"), "ca");
        elsewhere.metadata.namespace = Some("other".into());
        let others = vec![
            cr("web-1", "web", Some("1"), "ca"),
            cr("web-2", "web", Some("2"), "ca"),
            issued.clone(),
            cr("web-4", "web", Some("4"), "ca"),
            cr("api-1", "api", Some("1"), "ca"),
            cr("web-2-other-issuer", "web", Some("2"), "other"),
            cr("web-x", "web", Some("x"), "ca"),
            revoked,
            failed,
            elsewhere,
        ];
        assert_eq!(names(superseded(&issued, &others)), ["web-1", "web-2"]);
        // A request that belongs to no Certificate supersedes nothing.
        let lone = cr("lone", "web", None, "ca");
        assert!(superseded(&lone, &others).is_empty());
    }

    #[test]
    fn the_label_asks_and_the_annotation_says_why() {
        let mut asked = cr("web-1", "web", Some("1"), "ca");
        assert!(!revocation_asked(&asked));
        asked
            .labels_mut()
            .insert(LABEL_REVOKE.into(), "true".into());
        assert!(revocation_asked(&asked));
        assert_eq!(asked_reason(&asked).0, RevocationReason::Unspecified);
        asked
            .annotations_mut()
            .insert(ANNOTATION_REASON.into(), "KeyCompromise".into());
        assert_eq!(
            asked_reason(&asked),
            (RevocationReason::KeyCompromise, "KeyCompromise".to_string())
        );
        asked
            .annotations_mut()
            .insert(ANNOTATION_REASON.into(), "laptop stolen".into());
        assert_eq!(
            asked_reason(&asked),
            (RevocationReason::Unspecified, "laptop stolen".to_string())
        );
    }
}
