//! What a PodCertificateRequest asks for, and what its status becomes, as pure functions: which
//! of our issuers its `signerName` names, the pod's names, the validity window the API accepts,
//! and the Issued, Denied and Failed statuses.
//!
//! The kubelet attests the pod: `spec.podName`, `spec.serviceAccountName` and the namespace come
//! from the node that runs it (the NodeRestriction admission plugin checks them), so they are the
//! identity. What the pod author asks for rides in `spec.unverifiedUserAnnotations`, and passes
//! the same name policy as every other path.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{PodCertificateRequestSpec, PodCertificateRequestStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::condition::bounded_message;
use crate::issuer::IssuerKey;

/// `spec.unverifiedUserAnnotations` key: more DNS names, comma-separated. `${POD_NAME}`,
/// `${POD_NAMESPACE}` and `${SERVICE_ACCOUNT}` are replaced by the pod's own, so one volume
/// definition gives each replica its own names.
pub const ANNOTATION_DNS_NAMES: &str = "podcert.step.sm/dns-names";
/// `spec.unverifiedUserAnnotations` key: how long before the certificate's end the kubelet
/// should start refreshing it (a Go duration, like cert-manager's `renewBefore`). Without it the
/// refresh starts two thirds into the validity.
pub const ANNOTATION_RENEW_BEFORE: &str = "podcert.step.sm/renew-before";
/// Every annotation this signer reads; any other key is refused, as the API asks of signers.
pub const KNOWN_ANNOTATIONS: &[&str] = &[ANNOTATION_DNS_NAMES, ANNOTATION_RENEW_BEFORE];

pub const CONDITION_ISSUED: &str = "Issued";
pub const CONDITION_DENIED: &str = "Denied";
pub const CONDITION_FAILED: &str = "Failed";

/// The API's shortest lifetime; the kubelet's default request is a day.
const MIN_LIFETIME: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_EXPIRATION_SECONDS: i32 = 86_400;
/// `beginRefreshAt` must lie this far inside the validity at either end.
const REFRESH_MARGIN: Duration = Duration::from_secs(600);

/// Why a request is refused for good: `Denied` with this reason (the API's names where it has
/// them: `UnsupportedKeyType`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: &'static str,
    pub message: String,
}

fn deny(reason: &'static str, message: String) -> Denial {
    Denial { reason, message }
}

/// The issuer `signer_name` names, if it is ours: `None` for another signer's requests; a denial
/// for a StepIssuer of another namespace (a StepIssuer serves its own namespace only).
pub fn issuer_for(signer_name: &str, namespace: &str) -> Option<Result<IssuerKey, Denial>> {
    let key = IssuerKey::from_signer_name(signer_name)?;
    Some(match &key {
        IssuerKey::Namespaced { namespace: own, .. } if own != namespace => Err(deny(
            "SignerNotInNamespace",
            format!(
                "{key} signs only for pods of namespace {own}: use a signerName of an issuer of namespace {namespace}, or a StepClusterIssuer (stepclusterissuers.certmanager.step.sm/<name>)"
            ),
        )),
        _ => Ok(key),
    })
}

/// The names a pod's certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNames {
    /// The token's subject, which step-ca makes the common name: the first DNS name, else the
    /// SPIFFE ID.
    pub subject: String,
    /// The SPIFFE ID of the pod's ServiceAccount, then the DNS names asked for.
    pub sans: Vec<String>,
}

/// The pod's SPIFFE ID and the DNS names its volume asks for, with the placeholders replaced.
/// `trust_domain` is the cluster domain, as in the name policy.
pub fn pod_names(
    spec: &PodCertificateRequestSpec,
    namespace: &str,
    trust_domain: &str,
) -> Result<PodNames, Denial> {
    let empty = BTreeMap::new();
    let annotations = spec.unverified_user_annotations.as_ref().unwrap_or(&empty);
    if let Some(unknown) = annotations
        .keys()
        .find(|k| !KNOWN_ANNOTATIONS.contains(&k.as_str()))
    {
        return Err(deny(
            "UnknownAnnotation",
            format!(
                "this signer does not know the annotation {unknown:?} in the podCertificate volume's userAnnotations: remove it (known: {})",
                KNOWN_ANNOTATIONS.join(", ")
            ),
        ));
    }
    let spiffe = format!(
        "spiffe://{trust_domain}/ns/{namespace}/sa/{}",
        spec.service_account_name
    );
    let mut dns: Vec<String> = Vec::new();
    for raw in annotations
        .get(ANNOTATION_DNS_NAMES)
        .map(|v| v.split(','))
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let name = raw
            .replace("${POD_NAME}", &spec.pod_name)
            .replace("${POD_NAMESPACE}", namespace)
            .replace("${SERVICE_ACCOUNT}", &spec.service_account_name);
        if name.contains("${") {
            return Err(deny(
                "UnknownPlaceholder",
                format!(
                    "{raw:?} in {ANNOTATION_DNS_NAMES} has a placeholder this signer does not know: use ${{POD_NAME}}, ${{POD_NAMESPACE}} or ${{SERVICE_ACCOUNT}}"
                ),
            ));
        }
        if !dns.contains(&name) {
            dns.push(name);
        }
    }
    let subject = dns.first().cloned().unwrap_or_else(|| spiffe.clone());
    let mut sans = vec![spiffe];
    sans.extend(dns);
    Ok(PodNames { subject, sans })
}

/// The validity to ask step-ca for: from `now`, for `spec.maxExpirationSeconds` (the kubelet's
/// default is a day), and never shorter than the API's hour. The start is explicit: step-ca would
/// otherwise backdate it by a minute, and the certificate would outlive what the request allows.
pub fn window(max_expiration_seconds: Option<i32>, now: Timestamp) -> (Timestamp, Timestamp) {
    let seconds = max_expiration_seconds
        .unwrap_or(DEFAULT_MAX_EXPIRATION_SECONDS)
        .max(MIN_LIFETIME.as_secs() as i32);
    // Whole seconds: certificates carry no fractions, and the status must match them exactly.
    let start = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let end = start
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .unwrap_or(start);
    (start, end)
}

/// The pod's `podcert.step.sm/renew-before`, if it asks for one. Its range is not checked here:
/// the lifetime step-ca grants is not known yet, and [`begin_refresh_at`] keeps the refresh inside
/// what the API accepts.
pub fn renew_before(spec: &PodCertificateRequestSpec) -> Result<Option<Duration>, Denial> {
    let Some(raw) = spec
        .unverified_user_annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_RENEW_BEFORE))
    else {
        return Ok(None);
    };
    match crate::duration::parse_positive(raw) {
        Ok(d) => Ok(Some(d)),
        Err(_) => Err(deny(
            "InvalidAnnotation",
            format!(
                "{ANNOTATION_RENEW_BEFORE} {:?} is not a positive Go duration: use e.g. 8h or 30m (the time before the certificate's end at which the kubelet starts refreshing it)",
                crate::pki::csr::truncate(raw, 64)
            ),
        )),
    }
}

/// When the kubelet should start refreshing: `renew_before` before the end, or two thirds into
/// the validity without it, kept inside the API's margins (ten minutes after the start, ten
/// minutes before the end). The kubelet adds up to five minutes of its own jitter.
pub fn begin_refresh_at(
    not_before: Timestamp,
    not_after: Timestamp,
    renew_before: Option<Duration>,
) -> Timestamp {
    let life = not_after.duration_since(not_before);
    let asked = renew_before
        .and_then(|d| SignedDuration::try_from(d).ok())
        .and_then(|d| not_after.checked_sub(d).ok());
    let at = asked.unwrap_or_else(|| not_before.checked_add(life * 2 / 3).unwrap_or(not_before));
    let margin = SignedDuration::try_from(REFRESH_MARGIN).unwrap_or(SignedDuration::ZERO);
    let earliest = not_before.checked_add(margin).unwrap_or(not_before);
    let latest = not_after.checked_sub(margin).unwrap_or(not_after);
    at.max(earliest).min(latest)
}

/// A request is finished once it carries one of the API's three final conditions.
pub fn is_finished(status: Option<&PodCertificateRequestStatus>) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                matches!(
                    c.type_.as_str(),
                    CONDITION_ISSUED | CONDITION_DENIED | CONDITION_FAILED
                )
            })
        })
}

fn condition(
    type_: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.into(),
        message: bounded_message(message),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// What step-ca signed, checked, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The leaf, then its intermediates (no root).
    pub chain_pem: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// The pod's `podcert.step.sm/renew-before`.
    pub renew_before: Option<Duration>,
    pub message: String,
}

pub fn issued_status(
    issued: &Issued,
    generation: Option<i64>,
    now: Timestamp,
) -> PodCertificateRequestStatus {
    PodCertificateRequestStatus {
        certificate_chain: Some(issued.chain_pem.clone()),
        not_before: Some(Time(issued.not_before)),
        not_after: Some(Time(issued.not_after)),
        begin_refresh_at: Some(Time(begin_refresh_at(
            issued.not_before,
            issued.not_after,
            issued.renew_before,
        ))),
        conditions: Some(vec![condition(
            CONDITION_ISSUED,
            "Issued",
            &issued.message,
            generation,
            now,
        )]),
    }
}

/// `Denied` (refused by policy or for what the request asks) or `Failed` (the signer could not
/// issue): only the condition, as the API requires of both.
pub fn refused_status(
    type_: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> PodCertificateRequestStatus {
    PodCertificateRequestStatus {
        conditions: Some(vec![condition(type_, reason, message, generation, now)]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &[(&str, &str)]) -> PodCertificateRequestSpec {
        PodCertificateRequestSpec {
            pod_name: "web-7d9f-abcde".into(),
            service_account_name: "web".into(),
            signer_name: "stepclusterissuers.certmanager.step.sm/ca".into(),
            unverified_user_annotations: (!annotations.is_empty()).then(|| {
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn our_signer_names_map_to_issuers_of_the_right_namespace() {
        let cases = [
            (
                "stepclusterissuers.certmanager.step.sm/ca",
                "team",
                Some(Ok("StepClusterIssuer ca")),
            ),
            (
                "stepissuers.certmanager.step.sm/team.ca",
                "team",
                Some(Ok("StepIssuer team/ca")),
            ),
            (
                "stepissuers.certmanager.step.sm/other.ca",
                "team",
                Some(Err("SignerNotInNamespace")),
            ),
            ("kubernetes.io/kube-apiserver-client-pod", "team", None),
            ("example.com/ca", "team", None),
        ];
        for (signer, ns, want) in cases {
            let got =
                issuer_for(signer, ns).map(|r| r.map(|k| k.to_string()).map_err(|d| d.reason));
            let want = want.map(|r| r.map(str::to_string));
            assert_eq!(got, want, "{signer}");
        }
    }

    #[test]
    fn the_pod_gets_its_spiffe_id_and_the_names_it_asks_for() {
        let names = pod_names(&spec(&[]), "team", "cluster.local").unwrap();
        assert_eq!(names.sans, ["spiffe://cluster.local/ns/team/sa/web"]);
        assert_eq!(names.subject, "spiffe://cluster.local/ns/team/sa/web");

        let asked = spec(&[(
            ANNOTATION_DNS_NAMES,
            "${POD_NAME}.web.${POD_NAMESPACE}.svc, web.team.svc,,web.team.svc",
        )]);
        let names = pod_names(&asked, "team", "cluster.local").unwrap();
        assert_eq!(
            names.sans,
            [
                "spiffe://cluster.local/ns/team/sa/web",
                "web-7d9f-abcde.web.team.svc",
                "web.team.svc"
            ]
        );
        assert_eq!(names.subject, "web-7d9f-abcde.web.team.svc");
    }

    #[test]
    fn what_the_signer_does_not_know_is_denied() {
        let unknown = pod_names(&spec(&[("example.com/x", "1")]), "team", "cluster.local");
        assert_eq!(unknown.unwrap_err().reason, "UnknownAnnotation");
        let placeholder = pod_names(
            &spec(&[(ANNOTATION_DNS_NAMES, "${POD_IP}.team.svc")]),
            "team",
            "cluster.local",
        );
        let denial = placeholder.unwrap_err();
        assert_eq!(denial.reason, "UnknownPlaceholder");
        assert!(denial.message.contains("${POD_NAME}"), "{}", denial.message);
    }

    #[test]
    fn the_window_is_what_the_request_allows_and_at_least_an_hour() {
        let now = Timestamp::from_millisecond(1_000_000_500).unwrap();
        let start = Timestamp::from_second(1_000_000).unwrap();
        let cases = [
            (None, 86_400),
            (Some(7_200), 7_200),
            (Some(3_600), 3_600),
            // Shorter than the API allows is never asked for.
            (Some(60), 3_600),
        ];
        for (max, seconds) in cases {
            let (nb, na) = window(max, now);
            assert_eq!(nb, start, "whole seconds");
            assert_eq!(na.duration_since(nb).as_secs(), seconds, "{max:?}");
        }
    }

    #[test]
    fn refresh_starts_two_thirds_in_or_when_asked_within_the_margins() {
        let at = |s: i64| Timestamp::from_second(1_000_000 + s).unwrap();
        let min = |m: u64| Some(Duration::from_secs(m * 60));
        let cases = [
            (86_400, None, 57_600),
            (3_600, None, 2_400),
            // Never outside [start + 10 min, end - 10 min], even for a very short life.
            (1_500, None, 900),
            (86_400, min(8 * 60), 86_400 - 8 * 3_600),
            (3_600, min(50), 600),
            // More than the life allows: as early as the API accepts.
            (3_600, min(24 * 60), 600),
            // Less than the end margin: as late as it accepts.
            (3_600, min(1), 3_000),
        ];
        for (life, renew_before, want) in cases {
            assert_eq!(
                begin_refresh_at(at(0), at(life), renew_before),
                at(want),
                "{life} {renew_before:?}"
            );
        }
        assert_eq!(
            begin_refresh_at(at(0), at(3_600), Some(Duration::MAX)),
            at(2_400),
            "a duration beyond any timestamp falls back to two thirds"
        );
    }

    #[test]
    fn renew_before_is_read_or_denied() {
        assert_eq!(renew_before(&spec(&[])), Ok(None));
        assert_eq!(
            renew_before(&spec(&[(ANNOTATION_RENEW_BEFORE, "50m")])),
            Ok(Some(Duration::from_secs(3_000)))
        );
        for bad in ["soon", "-5m", "0", ""] {
            let denial = renew_before(&spec(&[(ANNOTATION_RENEW_BEFORE, bad)])).unwrap_err();
            assert_eq!(denial.reason, "InvalidAnnotation", "{bad:?}");
            assert!(denial.message.contains("e.g. 8h"), "{}", denial.message);
        }
        // A known key: names are still planned for a pod that sets it.
        assert!(pod_names(&spec(&[(ANNOTATION_RENEW_BEFORE, "1h")]), "t", "c").is_ok());
    }

    #[test]
    fn statuses_follow_the_apis_rules() {
        let now = Timestamp::from_second(2_000_000).unwrap();
        let issued = Issued {
            chain_pem: "LEAF".into(),
            not_before: Timestamp::from_second(2_000_000).unwrap(),
            not_after: Timestamp::from_second(2_086_400).unwrap(),
            renew_before: None,
            message: "issued".into(),
        };
        let s = issued_status(&issued, Some(1), now);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!((c.type_.as_str(), c.status.as_str()), ("Issued", "True"));
        assert!(s.begin_refresh_at.is_some() && s.not_after.is_some());
        assert!(is_finished(Some(&s)));

        let s = refused_status(
            CONDITION_DENIED,
            "UnsupportedKeyType",
            "use ECDSAP256",
            None,
            now,
        );
        assert_eq!(
            s.certificate_chain, None,
            "a refusal carries only its condition"
        );
        assert_eq!(s.begin_refresh_at, None);
        assert!(is_finished(Some(&s)));
        assert!(!is_finished(Some(&PodCertificateRequestStatus::default())));
        assert!(!is_finished(None));
    }
}
