//! Which certificate names a namespace may get (pure; table-tested). One policy for every path:
//! pods (`/mutate`, `/bootstrap`) and cert-manager CertificateRequests.
//!
//! By default a requester may only name itself inside its own namespace. A DNS name is allowed
//! when it is (case-insensitively, `<x>` being one DNS label and `<ns>` the namespace):
//!
//! - `<x>.<ns>`, `<x>.<ns>.svc` or `<x>.<ns>.svc.<cluster-domain>`;
//! - `<pod>.<svc>.<ns>.svc` or `<pod>.<svc>.<ns>.svc.<cluster-domain>` (a StatefulSet pod behind a
//!   headless Service; everything under `<ns>.svc` belongs to the namespace);
//! - a single label (`api`, resolved through the DNS search path) only when short names are
//!   allowed (`--allow-short-names`, or an issuer's `spec.policy.allowShortNames`): `db` or
//!   `localhost` from one namespace would be trusted by clients in every other (security review L1);
//! - or matched by an operator pattern (`--allowed-names`, an issuer's `spec.policy.names`).
//!
//! Patterns are either exact names (`api.example.com`, `10.0.0.1`, `spiffe://example.org/x`,
//! `ops@example.com`) or DNS wildcards `*.example.com`, which match any DNS name **ending in**
//! `.example.com` with one or more labels in front (`a.example.com`, `a.b.example.com`, and the
//! wildcard name `*.example.com` itself) but not `example.com`.
//!
//! Other kinds of names have their own rules:
//!
//! - IP addresses: only when a pattern is that exact address (compared as addresses, so `::1` and
//!   `0::1` are equal);
//! - URIs (contain `://`): `spiffe://<cluster-domain>/ns/<ns>/sa/<service-account>`, the SPIFFE ID
//!   of the pod's own namespace and ServiceAccount (compared case-insensitively in the scheme and
//!   trust domain only), or an exact pattern. A CertificateRequest has no ServiceAccount of its
//!   own (cert-manager creates it), so it may name any ServiceAccount of its namespace;
//! - emails (contain `@`): only an exact pattern.
//!
//! A policy may also allow any name at all (`allowAnyName`, step-issuer's behaviour).
//!
//! Caveat: `<x>.<ns>` means that a namespace named like a public suffix (`com`, `io`) can ask for
//! `example.com`. Do not enable injection in such namespaces.

use std::net::IpAddr;
use std::str::FromStr;

/// Quotes a user-supplied value for an error message: escaped, and cut after 64 characters so a
/// huge annotation does not make a huge message.
pub(crate) fn quote(value: &str) -> String {
    const MAX: usize = 64;
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(MAX).collect();
    if chars.next().is_some() {
        format!("{:?}...", head)
    } else {
        format!("{:?}", head)
    }
}

/// The default cluster DNS domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// An operator-supplied allowed-name pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// An exact name. DNS names are stored lowercase.
    Exact(String),
    /// `*.<suffix>`; stores `.<suffix>` lowercase.
    Suffix(String),
}

/// A pattern that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid name pattern {pattern}: {problem}; use an exact name (api.example.com, 10.0.0.1) or *.example.com"
)]
pub struct PatternError {
    pattern: String,
    problem: &'static str,
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| PatternError {
            pattern: quote(s),
            problem,
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(err("it contains whitespace or a control character"));
        }
        if let Some(suffix) = s.strip_prefix("*.") {
            let suffix = suffix.to_ascii_lowercase();
            if !is_dns_name(&suffix, false) {
                return Err(err("the part after *. is not a DNS name"));
            }
            return Ok(Pattern::Suffix(format!(".{suffix}")));
        }
        if s.contains('*') {
            return Err(err(
                "* is only allowed as the whole first label (*.example.com)",
            ));
        }
        match classify(s) {
            Kind::Dns => {
                let lower = s.to_ascii_lowercase();
                if is_dns_name(&lower, true) {
                    Ok(Pattern::Exact(lower))
                } else {
                    Err(err("it is not a DNS name, IP address, URI or email"))
                }
            }
            Kind::Ip(_) | Kind::Uri | Kind::Email => Ok(Pattern::Exact(s.to_owned())),
        }
    }
}

impl Pattern {
    /// Whether `name` matches this pattern (see the module documentation).
    pub fn matches(&self, name: &str) -> bool {
        match (self, classify(name)) {
            // Only a valid DNS name (or wildcard name) matches: `x:y.example.com` ends with the
            // suffix too, but step-ca would make it a URI SAN (security review L2), and
            // `..example.com` is no name at all.
            (Pattern::Suffix(suffix), Kind::Dns) => {
                let lower = name.to_ascii_lowercase();
                lower.len() > suffix.len()
                    && lower.ends_with(suffix.as_str())
                    && is_dns_name(&lower, true)
            }
            (Pattern::Suffix(_), _) => false,
            (Pattern::Exact(exact), Kind::Ip(ip)) => {
                IpAddr::from_str(exact).is_ok_and(|pattern_ip| pattern_ip == ip)
            }
            (Pattern::Exact(exact), Kind::Dns) => exact.eq_ignore_ascii_case(name),
            (Pattern::Exact(exact), Kind::Uri | Kind::Email) => exact == name,
        }
    }
}

/// Why a name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "name {name} is not allowed in namespace {namespace:?}: use <svc>.{namespace}.svc (or <svc>.{namespace}.svc.{cluster_domain}), or ask the cluster administrators to allow it (an issuer's spec.policy.names, or the webhook's --allowed-names)"
    )]
    DnsNotAllowed {
        name: String,
        namespace: String,
        cluster_domain: String,
    },
    #[error(
        "name {name} is not a valid DNS name: use letters, digits and hyphens in dot-separated labels, e.g. api.{namespace}.svc"
    )]
    InvalidDns { name: String, namespace: String },
    #[error(
        "IP address {name} is not allowed in namespace {namespace:?}: IP addresses need an exact pattern: use <svc>.{namespace}.svc, or ask the cluster administrators to allow it (an issuer's spec.policy.names, or the webhook's --allowed-names)"
    )]
    IpNotAllowed { name: String, namespace: String },
    #[error(
        "URI {name} is not allowed for {requester}: use spiffe://{cluster_domain}/ns/{namespace}/sa/{service_account}, or ask the cluster administrators to allow it (an issuer's spec.policy.names, or the webhook's --allowed-names)"
    )]
    UriNotAllowed {
        name: String,
        namespace: String,
        requester: String,
        service_account: String,
        cluster_domain: String,
    },
    #[error(
        "email {name} is not allowed in namespace {namespace:?}: emails need an exact pattern; ask the cluster administrators to allow it (an issuer's spec.policy.names, or the webhook's --allowed-names)"
    )]
    EmailNotAllowed { name: String, namespace: String },
    #[error(
        "single-label name {name} is not allowed in namespace {namespace:?}: a short name like this one means the same service in every namespace; use <svc>.{namespace}.svc, or ask the cluster administrators to allow short names (--allow-short-names, or an issuer's spec.policy.allowShortNames)"
    )]
    ShortNameNotAllowed { name: String, namespace: String },
}

/// A name policy: the namespace-bound rule, widened by patterns and two switches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePolicy {
    /// Cluster DNS domain (`cluster.local`), without leading or trailing dot.
    pub cluster_domain: String,
    /// Operator patterns (`--allowed-names`, `spec.policy.names`) that allow names in every
    /// namespace.
    pub allowed: Vec<Pattern>,
    /// Whether single-label DNS names (`api`) are allowed.
    pub short_names: bool,
    /// Whether every name is allowed (no policy at all).
    pub any_name: bool,
}

impl Default for NamePolicy {
    fn default() -> Self {
        Self {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            allowed: Vec::new(),
            short_names: false,
            any_name: false,
        }
    }
}

/// Who asks for a name: the ServiceAccount decides which SPIFFE ID is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester<'a> {
    /// A pod, whose ServiceAccount is known: only its own SPIFFE ID.
    Pod {
        namespace: &'a str,
        service_account: &'a str,
    },
    /// A CertificateRequest of this namespace: the SPIFFE ID of any of its ServiceAccounts.
    Namespace(&'a str),
}

impl Requester<'_> {
    fn namespace(&self) -> &str {
        match self {
            Requester::Pod { namespace, .. } | Requester::Namespace(namespace) => namespace,
        }
    }
}

enum Kind {
    Dns,
    Ip(IpAddr),
    Uri,
    Email,
}

fn classify(name: &str) -> Kind {
    if name.contains("://") {
        Kind::Uri
    } else if name.contains('@') {
        Kind::Email
    } else if let Ok(ip) = IpAddr::from_str(name) {
        Kind::Ip(ip)
    } else {
        Kind::Dns
    }
}

/// A DNS label: 1-63 letters, digits and hyphens, not starting or ending with a hyphen.
fn is_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

/// A DNS name of labels (optionally with a leading `*` label), at most 253 bytes.
fn is_dns_name(name: &str, allow_wildcard: bool) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let mut labels = name.split('.');
    let first_ok = match labels.next() {
        Some("*") => allow_wildcard,
        Some(label) => is_label(label),
        None => false,
    };
    first_ok && labels.all(is_label)
}

impl NamePolicy {
    /// A policy for `cluster_domain` (trimmed of dots; empty means `cluster.local`) and patterns.
    pub fn new(cluster_domain: &str, allowed: Vec<Pattern>) -> Self {
        let domain = cluster_domain.trim().trim_matches('.').to_ascii_lowercase();
        Self {
            cluster_domain: if domain.is_empty() {
                DEFAULT_CLUSTER_DOMAIN.to_owned()
            } else {
                domain
            },
            allowed,
            short_names: false,
            any_name: false,
        }
    }

    /// This policy with `extra` patterns and switches added (an issuer's `spec.policy` on top of
    /// the webhook's flags).
    pub fn widened(&self, extra: &[Pattern], short_names: bool, any_name: bool) -> Self {
        let mut wider = self.clone();
        wider.allowed.extend(extra.iter().cloned());
        wider.short_names |= short_names;
        wider.any_name |= any_name;
        wider
    }

    fn pattern_allows(&self, name: &str) -> bool {
        self.allowed.iter().any(|p| p.matches(name))
    }

    /// Whether a pod in `namespace` running as `service_account` may have `name` in its
    /// certificate.
    pub fn check(
        &self,
        namespace: &str,
        service_account: &str,
        name: &str,
    ) -> Result<(), PolicyError> {
        self.check_for(
            Requester::Pod {
                namespace,
                service_account,
            },
            name,
        )
    }

    /// Whether `requester` may have `name` in its certificate.
    pub fn check_for(&self, requester: Requester<'_>, name: &str) -> Result<(), PolicyError> {
        if self.any_name || self.pattern_allows(name) {
            return Ok(());
        }
        let namespace = requester.namespace();
        match classify(name) {
            Kind::Dns => self.check_dns(namespace, name),
            Kind::Ip(_) => Err(PolicyError::IpNotAllowed {
                name: quote(name),
                namespace: namespace.to_owned(),
            }),
            Kind::Email => Err(PolicyError::EmailNotAllowed {
                name: quote(name),
                namespace: namespace.to_owned(),
            }),
            Kind::Uri => {
                if self.spiffe_allows(requester, name) {
                    Ok(())
                } else {
                    let (who, service_account) = match requester {
                        Requester::Pod {
                            service_account, ..
                        } => (
                            format!("a pod of ServiceAccount {namespace}/{service_account}"),
                            service_account,
                        ),
                        Requester::Namespace(_) => {
                            (format!("namespace {namespace:?}"), "<service-account>")
                        }
                    };
                    Err(PolicyError::UriNotAllowed {
                        name: quote(name),
                        namespace: namespace.to_owned(),
                        requester: who,
                        service_account: service_account.to_owned(),
                        cluster_domain: self.cluster_domain.clone(),
                    })
                }
            }
        }
    }

    fn check_dns(&self, namespace: &str, name: &str) -> Result<(), PolicyError> {
        if !is_dns_name(name, true) {
            return Err(PolicyError::InvalidDns {
                name: quote(name),
                namespace: namespace.to_owned(),
            });
        }
        let lower = name.to_ascii_lowercase();
        let labels: Vec<&str> = lower.split('.').collect();
        let ns = namespace.to_ascii_lowercase();
        let domain: Vec<&str> = self.cluster_domain.split('.').collect();
        // `rest` is what follows `<ns>`: nothing, `svc` or `svc.<cluster-domain>`.
        let in_namespace = |rest: &[&str]| {
            rest.is_empty()
                || rest == ["svc"]
                || (rest.first() == Some(&"svc") && rest.get(1..) == Some(&domain[..]))
        };
        let allowed = match labels.as_slice() {
            [x] if is_label(x) && !self.short_names => {
                return Err(PolicyError::ShortNameNotAllowed {
                    name: quote(name),
                    namespace: namespace.to_owned(),
                });
            }
            [x] => is_label(x),
            [x, n, rest @ ..] if *n == ns && is_label(x) && in_namespace(rest) => true,
            [pod, svc, n, rest @ ..]
                if *n == ns && is_label(pod) && is_label(svc) && !rest.is_empty() =>
            {
                in_namespace(rest)
            }
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(PolicyError::DnsNotAllowed {
                name: quote(name),
                namespace: namespace.to_owned(),
                cluster_domain: self.cluster_domain.clone(),
            })
        }
    }

    /// Only the pod's own SPIFFE ID: a pod of ServiceAccount `app` must not claim `admin`'s
    /// (security review L2). A CertificateRequest may name any ServiceAccount of its namespace.
    fn spiffe_allows(&self, requester: Requester<'_>, uri: &str) -> bool {
        let Some(rest) = uri
            .get(..9)
            .filter(|scheme| scheme.eq_ignore_ascii_case("spiffe://"))
            .and_then(|_| uri.get(9..))
        else {
            return false;
        };
        let Some((trust_domain, path)) = rest.split_once('/') else {
            return false;
        };
        if !trust_domain.eq_ignore_ascii_case(&self.cluster_domain) {
            return false;
        }
        match requester {
            Requester::Pod {
                namespace,
                service_account,
            } => {
                !service_account.is_empty()
                    && path == format!("ns/{namespace}/sa/{service_account}")
            }
            Requester::Namespace(namespace) => path
                .strip_prefix(&format!("ns/{namespace}/sa/"))
                .is_some_and(|sa| {
                    is_dns_name(sa, false) && !sa.bytes().any(|b| b.is_ascii_uppercase())
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> NamePolicy {
        let allowed = patterns
            .iter()
            .map(|p| p.parse::<Pattern>())
            .collect::<Result<Vec<_>, _>>();
        match allowed {
            Ok(allowed) => NamePolicy::new("cluster.local", allowed),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn name_policy_table() {
        let p = policy(&[
            "*.example.com",
            "api.example.org",
            "10.0.0.1",
            "::1",
            "ops@example.com",
            "https://example.net/x",
        ]);
        // (namespace, name, allowed)
        let cases: &[(&str, &str, bool)] = &[
            // Short names only when allowed (security review L1; see `short_names`).
            ("default", "api", false),
            ("default", "localhost", false),
            ("default", "api.default", true),
            ("default", "api.default.svc", true),
            ("default", "Api.Default.SVC.Cluster.Local", true),
            ("default", "web-0.nginx.default.svc", true),
            ("default", "web-0.nginx.default.svc.cluster.local", true),
            ("default", "api.other", false),
            ("default", "api.other.svc", false),
            ("default", "api.other.svc.cluster.local", false),
            ("default", "api.default.svc.cluster.evil", false),
            ("default", "api.default.svc.cluster", false),
            ("default", "api.default.pod", false),
            ("default", "web-0.nginx.default", false),
            ("default", "a.b.c.default.svc", false),
            ("default", "*.default.svc", false),
            ("default", "default.svc", false),
            ("default", "-api", false),
            ("default", "a_b", false),
            ("default", "a..b", false),
            ("default", "www.google.com", false),
            ("default", "a.example.com", true),
            ("default", "a.b.EXAMPLE.com", true),
            ("default", "*.example.com", true),
            ("default", "example.com", false),
            ("default", "badexample.com", false),
            ("default", "api.example.org", true),
            ("default", "x.api.example.org", false),
            ("default", "10.0.0.1", true),
            ("default", "10.0.0.2", false),
            ("default", "0:0::1", true),
            ("default", "::2", false),
            ("default", "ops@example.com", true),
            ("default", "OPS@example.com", false),
            ("default", "dev@example.com", false),
            ("default", "https://example.net/x", true),
            ("default", "https://example.net/y", false),
            ("default", "spiffe://cluster.local/ns/default/sa/api", true),
            ("default", "SPIFFE://cluster.local/ns/default/sa/api", true),
            ("default", "spiffe://cluster.local/ns/default/", false),
            ("default", "spiffe://cluster.local/ns/default", false),
            (
                "default",
                "spiffe://cluster.local/ns/default/../other/x",
                false,
            ),
            ("default", "spiffe://cluster.local/ns/default//x", false),
            (
                "default",
                "spiffe://cluster.local/ns/defaultx/sa/api",
                false,
            ),
            ("default", "spiffe://cluster.local/ns/other/sa/api", false),
            ("default", "spiffe://evil.org/ns/default/sa/api", false),
            ("default", "spiffe://cluster.local/ns/default/sa?x", false),
            // Only the pod's own ServiceAccount (this table's pods run as `api`).
            (
                "default",
                "spiffe://cluster.local/ns/default/sa/admin",
                false,
            ),
            (
                "default",
                "spiffe://cluster.local/ns/default/sa/api/x",
                false,
            ),
            (
                "default",
                "spiffe://cluster.local/ns/default/other/api",
                false,
            ),
            ("default", "sp://", false),
        ];
        for (ns, name, want) in cases {
            let got = p.check(ns, "api", name);
            assert_eq!(got.is_ok(), *want, "{ns} {name}: {got:?}");
        }
    }

    #[test]
    fn default_policy_refuses_patterns_only_names() {
        let p = NamePolicy::default();
        for name in ["a.example.com", "10.0.0.1", "a@b.c", "https://x.y/z"] {
            assert!(p.check("default", "api", name).is_err(), "{name}");
        }
        assert!(
            p.check("default", "api", "api.default.svc.cluster.local")
                .is_ok()
        );
    }

    #[test]
    fn custom_cluster_domain() {
        let p = NamePolicy::new(".Corp.Internal.", vec![]);
        assert_eq!(p.cluster_domain, "corp.internal");
        assert!(p.check("ns", "x", "api.ns.svc.corp.internal").is_ok());
        assert!(p.check("ns", "x", "api.ns.svc.cluster.local").is_err());
        assert!(
            p.check("ns", "x", "spiffe://corp.internal/ns/ns/sa/x")
                .is_ok()
        );
        assert_eq!(NamePolicy::new("", vec![]).cluster_domain, "cluster.local");
    }

    #[test]
    fn error_messages() {
        let p = NamePolicy::default();
        let msg = |ns: &str, name: &str| match p.check(ns, "api", name) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{name} allowed"),
        };
        assert_eq!(
            msg("default", "api.other.svc"),
            "name \"api.other.svc\" is not allowed in namespace \"default\": use <svc>.default.svc \
             (or <svc>.default.svc.cluster.local), or ask the cluster administrators to allow it \
             (an issuer's spec.policy.names, or the webhook's --allowed-names)"
        );
        assert!(msg("default", "10.1.2.3").contains("\"10.1.2.3\" is not allowed"));
        assert!(msg("default", "a@b.c").contains("email \"a@b.c\""));
        assert!(msg("default", "spiffe://x/y").contains(
            "for a pod of ServiceAccount default/api: use spiffe://cluster.local/ns/default/sa/api"
        ));
        assert!(msg("default", "a_b").contains("not a valid DNS name"));
        assert!(msg("default", "db").contains("single-label name \"db\" is not allowed"));
    }

    /// Security review L1: `db` or `localhost` from one namespace would be trusted by clients in
    /// every other; only an explicit switch allows them.
    #[test]
    fn short_names_only_when_allowed() {
        let strict = NamePolicy::default();
        let lenient = strict.widened(&[], true, false);
        for name in ["db", "localhost", "kubernetes", "API"] {
            assert!(strict.check("team", "app", name).is_err(), "{name}");
            assert_eq!(lenient.check("team", "app", name), Ok(()), "{name}");
        }
        // The switch widens DNS labels only: still no bad label, no other namespace.
        for name in ["-db", "a_b", "api.other.svc"] {
            assert!(lenient.check("team", "app", name).is_err(), "{name}");
        }
    }

    #[test]
    fn any_name_allows_everything() {
        let any = NamePolicy::default().widened(&[], false, true);
        for name in [
            "api.other.svc",
            "10.0.0.1",
            "spiffe://x/y",
            "db",
            "*.example.com",
        ] {
            assert_eq!(any.check("team", "app", name), Ok(()), "{name}");
        }
    }

    /// A CertificateRequest may name any ServiceAccount of its own namespace, and no other.
    #[test]
    fn requests_get_the_spiffe_ids_of_their_namespace() {
        let p = NamePolicy::default();
        let team = Requester::Namespace("team");
        let cases: &[(&str, bool)] = &[
            ("spiffe://cluster.local/ns/team/sa/app", true),
            ("spiffe://cluster.local/ns/team/sa/my.robot", true),
            ("spiffe://cluster.local/ns/team/sa/App", false),
            ("spiffe://cluster.local/ns/team/sa/", false),
            ("spiffe://cluster.local/ns/team/sa/a/b", false),
            ("spiffe://cluster.local/ns/other/sa/app", false),
            ("spiffe://cluster.local/ns/teamx/sa/app", false),
            ("spiffe://evil.org/ns/team/sa/app", false),
            ("api.team.svc", true),
            ("api.other.svc", false),
        ];
        for (name, want) in cases {
            let got = p.check_for(team, name);
            assert_eq!(got.is_ok(), *want, "{name}: {got:?}");
        }
        let msg = p
            .check_for(team, "spiffe://cluster.local/ns/kube-system/sa/x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains(
                "for namespace \"team\": use spiffe://cluster.local/ns/team/sa/<service-account>"
            ),
            "{msg}"
        );
    }

    /// Security review L2: a `*.suffix` pattern lets through valid DNS names only.
    #[test]
    fn suffix_patterns_match_only_valid_dns_names() {
        let p = policy(&["*.example.com"]);
        for bad in [
            "x:y.example.com",
            "..example.com",
            "a_b.example.com",
            "é.example.com",
            "*.*.example.com",
            "-a.example.com",
        ] {
            assert!(p.check("team", "app", bad).is_err(), "{bad} was allowed");
        }
        for good in ["a.example.com", "a.b.example.com", "A-1.Example.COM"] {
            assert_eq!(p.check("team", "app", good), Ok(()), "{good}");
        }
    }

    #[test]
    fn patterns() {
        let ok: &[(&str, Pattern)] = &[
            ("*.Example.com", Pattern::Suffix(".example.com".into())),
            ("API.example.com", Pattern::Exact("api.example.com".into())),
            ("10.0.0.1", Pattern::Exact("10.0.0.1".into())),
            ("a@b.c", Pattern::Exact("a@b.c".into())),
            ("spiffe://x/y", Pattern::Exact("spiffe://x/y".into())),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<Pattern>().as_ref(), Ok(want), "{s}");
        }
        for bad in [
            "", "*", "*.", "a.*.com", "*.*.com", "a b", "a_b.com", "*.-a.com",
        ] {
            let err = bad.parse::<Pattern>();
            assert!(err.is_err(), "{bad}: {err:?}");
        }
        let msg = "a.*.com"
            .parse::<Pattern>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("\"a.*.com\""), "{msg}");
    }
}
