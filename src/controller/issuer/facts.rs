//! What an issuer's status and metrics say of its CA: the version, whether tokens are bound to
//! their CSR, the provisioner's lifetime limits, and when the root and the issuing intermediate
//! expire, with a warning in the Ready message when one expires soon. Pure, but for the metric.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::controller::context::Context;
use crate::crd::{CaStatus, ProvisionerClaimsStatus};
use crate::duration::format_go_duration;
use crate::issuer::IssuerKey;
use crate::step::CaFacts;

/// A CA certificate that expires sooner than this is named in the issuer's Ready message.
pub const EXPIRY_WARNING: chrono::Duration = chrono::Duration::days(14);

pub fn ca_status(facts: &CaFacts) -> CaStatus {
    CaStatus {
        version: facts.version.clone(),
        tokens_bound_to_csr: facts.token_binding,
        provisioner_claims: facts.claims.as_ref().map(|c| ProvisionerClaimsStatus {
            min_duration: c.min_tls_cert_duration.map(format_go_duration),
            max_duration: c.max_tls_cert_duration.map(format_go_duration),
            default_duration: c.default_tls_cert_duration.map(format_go_duration),
        }),
        root_not_after: first_root_expiry(facts).map(time),
        intermediate_not_after: facts.intermediate_not_after.map(time),
    }
}

fn first_root_expiry(facts: &CaFacts) -> Option<DateTime<Utc>> {
    facts.roots_not_after.iter().min().copied()
}

fn time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

/// A warning for the Ready message when the root or the intermediate expires within
/// [`EXPIRY_WARNING`] (or has expired), naming the certificate, the date and the fix.
pub fn expiry_warning(facts: &CaFacts, now: DateTime<Utc>) -> Option<String> {
    let soon = |at: DateTime<Utc>| at - now < EXPIRY_WARNING;
    let when = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut warnings = Vec::new();
    if let Some(at) = facts.intermediate_not_after.filter(|at| soon(*at)) {
        warnings.push(if at <= now {
            format!("step-ca's intermediate certificate expired at {}: renew it, nothing can be issued until then", when(at))
        } else {
            format!("step-ca's intermediate certificate expires at {}: renew it (certificates issued until then end with it)", when(at))
        });
    }
    if let Some(at) = first_root_expiry(facts).filter(|at| soon(*at)) {
        warnings.push(format!(
            "step-ca's root certificate expires at {}: plan a root rotation",
            when(at)
        ));
    }
    (!warnings.is_empty()).then(|| warnings.join("; "))
}

/// Exports the expiry dates as `step_operator_ca_certificate_expiry_timestamp_seconds`.
pub fn record_expiry(ctx: &Context, key: &IssuerKey, facts: &CaFacts) {
    ctx.metrics.set_ca_expiry(
        key.kind(),
        &metric_name(key),
        first_root_expiry(facts).map(|t| t.timestamp()),
        facts.intermediate_not_after.map(|t| t.timestamp()),
    );
}

/// Drops the series of an issuer that is gone.
pub fn forget_expiry(ctx: &Context, key: &IssuerKey) {
    ctx.metrics
        .set_ca_expiry(key.kind(), &metric_name(key), None, None);
}

fn metric_name(key: &IssuerKey) -> String {
    match key {
        IssuerKey::Namespaced { namespace, name } => format!("{namespace}/{name}"),
        IssuerKey::Cluster { name } => name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn facts(root: &str, intermediate: Option<&str>) -> CaFacts {
        CaFacts {
            roots_not_after: vec![at(root)],
            intermediate_not_after: intermediate.map(at),
            ..Default::default()
        }
    }

    #[test]
    fn warnings_name_what_expires_and_the_fix() {
        let now = at("2026-11-29T00:00:00Z");
        // (case, facts, words the warning must hold; empty = no warning)
        let cases: [(&str, CaFacts, &[&str]); 5] = [
            (
                "far away",
                facts("2036-01-01T00:00:00Z", Some("2027-11-01T00:00:00Z")),
                &[],
            ),
            ("not yet known", facts("2036-01-01T00:00:00Z", None), &[]),
            (
                "intermediate tomorrow",
                facts("2036-01-01T00:00:00Z", Some("2026-11-30T00:00:00Z")),
                &[
                    "intermediate certificate expires at 2026-11-30T00:00:00Z",
                    "renew it",
                ],
            ),
            (
                "intermediate expired",
                facts("2036-01-01T00:00:00Z", Some("2026-11-28T00:00:00Z")),
                &["expired at 2026-11-28T00:00:00Z", "nothing can be issued"],
            ),
            (
                "root next week",
                facts("2026-12-05T00:00:00Z", Some("2026-12-05T00:00:00Z")),
                &[
                    "intermediate",
                    "root certificate expires at 2026-12-05T00:00:00Z",
                ],
            ),
        ];
        for (case, f, words) in cases {
            let got = expiry_warning(&f, now);
            if words.is_empty() {
                assert_eq!(got, None, "{case}");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("{case}: no warning"));
            for w in words {
                assert!(got.contains(w), "{case}: {got:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn the_status_carries_the_facts() {
        let f = CaFacts {
            version: Some("0.30.2".into()),
            token_binding: true,
            ..facts("2036-01-01T00:00:00Z", Some("2027-01-01T00:00:00Z"))
        };
        let s = ca_status(&f);
        assert_eq!(s.version.as_deref(), Some("0.30.2"));
        assert!(s.tokens_bound_to_csr);
        assert_eq!(
            s.root_not_after.map(|t| t.0.as_second()),
            Some(at("2036-01-01T00:00:00Z").timestamp())
        );
        assert_eq!(
            s.intermediate_not_after.map(|t| t.0.as_second()),
            Some(at("2027-01-01T00:00:00Z").timestamp())
        );
        assert_eq!(s.provisioner_claims, None);
    }
}
