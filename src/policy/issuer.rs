//! An issuer's `spec.policy`: which namespaces may use it, and which names they may get through
//! it. Pure: parsed from the spec's plain values, so that this module never sees a Kubernetes
//! type.
//!
//! Who applies what:
//! - a **StepClusterIssuer with `spec.policy`**: its namespaces, and the namespace-bound rule
//!   widened by its `names`, `allowShortNames` and `allowAnyName`, for CertificateRequests and
//!   pods alike;
//! - a **StepClusterIssuer without `spec.policy`**: for CertificateRequests, the controller's
//!   `--issuers-without-policy` (`allow-any-name`, step-issuer's behaviour, or `namespace-names`);
//!   pods always get the namespace-bound rule, never a wider one they did not have before;
//! - a **StepIssuer**: its own namespace only; without `spec.policy` any name, because whoever
//!   holds its provisioner password can mint tokens for any name anyway: a policy there guards
//!   against mistakes, not against its own namespace.

use super::names::{NamePolicy, Pattern, PolicyError, Requester, quote};

/// How many namespace entries and name patterns a policy may hold (the CRD says the same).
pub const MAX_ENTRIES: usize = 256;

/// An entry of `spec.policy.namespaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespacePattern {
    /// `*`: every namespace.
    Any,
    /// `team-*`: every namespace starting with `team-`.
    Prefix(String),
    /// `team-a`.
    Exact(String),
}

impl NamespacePattern {
    fn parse(s: &str) -> Result<Self, InvalidPolicy> {
        let bad = |why: &str| {
            InvalidPolicy(format!(
                "spec.policy.namespaces entry {} {why}: use a namespace name (team-a), a prefix with one trailing * (team-*), or * for all",
                quote(s)
            ))
        };
        let s = s.trim();
        if s == "*" {
            return Ok(Self::Any);
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.is_empty() {
            return Err(bad("is empty"));
        }
        if body.len() > 63
            || !body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                "is not a namespace name (lowercase letters, digits and -)",
            ));
        }
        Ok(if prefix {
            Self::Prefix(body.to_owned())
        } else {
            Self::Exact(body.to_owned())
        })
    }

    fn matches(&self, namespace: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(p) => namespace.starts_with(p.as_str()),
            Self::Exact(n) => namespace == n,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Any => "*".into(),
            Self::Prefix(p) => format!("{p}*"),
            Self::Exact(n) => n.clone(),
        }
    }
}

/// `spec.policy` as written, before parsing.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyInput<'a> {
    pub namespaces: Option<&'a [String]>,
    pub names: &'a [String],
    pub allow_short_names: bool,
    pub allow_any_name: bool,
}

/// A `spec.policy` that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPolicy(pub String);

/// A parsed `spec.policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPolicy {
    /// `None`: every namespace.
    pub namespaces: Option<Vec<NamespacePattern>>,
    pub names: Vec<Pattern>,
    pub allow_short_names: bool,
    pub allow_any_name: bool,
}

impl IssuerPolicy {
    /// The policy of an issuer without `spec.policy` that keeps step-issuer's behaviour.
    pub fn any_name() -> Self {
        Self {
            namespaces: None,
            names: Vec::new(),
            allow_short_names: false,
            allow_any_name: true,
        }
    }

    /// The namespace-bound rule alone, for every namespace.
    pub fn namespace_names() -> Self {
        Self {
            allow_any_name: false,
            ..Self::any_name()
        }
    }

    /// Parses `spec.policy`. `cluster_scoped`: `namespaces` only means something on a
    /// StepClusterIssuer (a StepIssuer serves its own namespace only).
    pub fn parse(input: PolicyInput<'_>, cluster_scoped: bool) -> Result<Self, InvalidPolicy> {
        if input.namespaces.is_some() && !cluster_scoped {
            return Err(InvalidPolicy(
                "spec.policy.namespaces is for StepClusterIssuers: a StepIssuer serves its own namespace only; remove it".into(),
            ));
        }
        let too_many = |field: &str, n: usize| {
            InvalidPolicy(format!(
                "spec.policy.{field} has {n} entries, more than {MAX_ENTRIES}: use prefixes (team-*) or wildcards (*.example.com)"
            ))
        };
        let namespaces = match input.namespaces {
            None => None,
            Some(list) if list.len() > MAX_ENTRIES => {
                return Err(too_many("namespaces", list.len()));
            }
            Some(list) => Some(
                list.iter()
                    .map(|n| NamespacePattern::parse(n))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if input.names.len() > MAX_ENTRIES {
            return Err(too_many("names", input.names.len()));
        }
        let names = input
            .names
            .iter()
            .map(|n| {
                n.parse::<Pattern>()
                    .map_err(|e| InvalidPolicy(format!("spec.policy.names: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            namespaces,
            names,
            allow_short_names: input.allow_short_names,
            allow_any_name: input.allow_any_name,
        })
    }

    /// Whether requests and pods of `namespace` may use the issuer.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p.matches(namespace)))
    }

    /// `base` (the cluster domain, the webhook's flags) widened by this policy.
    pub fn name_policy(&self, base: &NamePolicy) -> NamePolicy {
        base.widened(&self.names, self.allow_short_names, self.allow_any_name)
    }

    /// One sentence for the issuer's `NamePolicy` condition.
    pub fn describe(&self, cluster_domain: &str) -> String {
        let namespaces = match &self.namespaces {
            None => "every namespace".to_owned(),
            Some(list) if list.is_empty() => "no namespace".to_owned(),
            Some(list) => format!(
                "namespaces {}",
                list.iter()
                    .map(NamespacePattern::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if self.allow_any_name {
            return format!("Usable from {namespaces}, for any name (allowAnyName)");
        }
        let mut names = format!(
            "each namespace's own names (<svc>.<ns>.svc, <svc>.<ns>.svc.{cluster_domain}, spiffe://{cluster_domain}/ns/<ns>/sa/<sa>)"
        );
        if self.allow_short_names {
            names.push_str(", single-label names");
        }
        if !self.names.is_empty() {
            let shown: Vec<String> = self.names.iter().take(5).map(describe_pattern).collect();
            let more = self.names.len().saturating_sub(shown.len());
            names.push_str(&format!(" and {}", shown.join(", ")));
            if more > 0 {
                names.push_str(&format!(" (and {more} more)"));
            }
        }
        format!("Usable from {namespaces}, for {names}")
    }
}

fn describe_pattern(p: &Pattern) -> String {
    match p {
        Pattern::Exact(s) => s.clone(),
        Pattern::Suffix(s) => format!("*{s}"),
    }
}

/// What a StepClusterIssuer without `spec.policy` signs for CertificateRequests
/// (`--issuers-without-policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WithoutPolicy {
    /// Any name for any namespace: step-issuer's behaviour, so its manifests keep working.
    #[default]
    AllowAnyName,
    /// Each namespace's own names only.
    NamespaceNames,
}

/// The policy for CertificateRequests signed by an issuer with `spec` (None: no `spec.policy`).
pub fn for_requests(
    spec: Option<PolicyInput<'_>>,
    cluster_scoped: bool,
    without: WithoutPolicy,
) -> Result<IssuerPolicy, InvalidPolicy> {
    match (spec, cluster_scoped, without) {
        (Some(input), _, _) => IssuerPolicy::parse(input, cluster_scoped),
        // A StepIssuer's namespace holds its provisioner password: any name.
        (None, false, _) | (None, true, WithoutPolicy::AllowAnyName) => {
            Ok(IssuerPolicy::any_name())
        }
        (None, true, WithoutPolicy::NamespaceNames) => Ok(IssuerPolicy::namespace_names()),
    }
}

/// The policy for pods that use a StepClusterIssuer through `/bootstrap`: its `spec.policy`, or
/// the namespace-bound rule, never wider than what pods had before issuers had policies.
pub fn for_pods(spec: Option<PolicyInput<'_>>) -> Result<IssuerPolicy, InvalidPolicy> {
    match spec {
        Some(input) => IssuerPolicy::parse(input, true),
        None => Ok(IssuerPolicy::namespace_names()),
    }
}

/// Whether a namespace with `labels` carries every one of `required` (the webhook's
/// namespaceSelector labels). No requirement: every namespace.
pub fn namespace_opted_in<'a>(
    labels: impl Fn(&str) -> Option<&'a str>,
    required: &[(String, String)],
) -> bool {
    required
        .iter()
        .all(|(key, value)| labels(key) == Some(value.as_str()))
}

/// Why a request or pod may not use an issuer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{issuer} may not be used from namespace {namespace:?}: its spec.policy.namespaces does not list it; use another issuer, or ask the cluster administrators to add the namespace"
    )]
    Namespace { issuer: String, namespace: String },
    #[error("{issuer} refuses this name: {source}")]
    Name {
        issuer: String,
        #[source]
        source: Box<PolicyError>,
    },
}

/// Checks that `requester` may use the issuer described as `issuer` (for messages) and get every
/// one of `names` from it. The namespace comes first: a namespace that may not use the issuer
/// learns nothing about its names.
pub fn check<'a>(
    issuer: &str,
    policy: &IssuerPolicy,
    names: &NamePolicy,
    requester: Requester<'_>,
    requested: impl IntoIterator<Item = &'a str>,
) -> Result<(), Refusal> {
    let namespace = match requester {
        Requester::Pod { namespace, .. } | Requester::Namespace(namespace) => namespace,
    };
    if !policy.allows_namespace(namespace) {
        return Err(Refusal::Namespace {
            issuer: issuer.to_owned(),
            namespace: namespace.to_owned(),
        });
    }
    for name in requested {
        names
            .check_for(requester, name)
            .map_err(|source| Refusal::Name {
                issuer: issuer.to_owned(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn parse(namespaces: Option<&[&str]>, names: &[&str]) -> Result<IssuerPolicy, InvalidPolicy> {
        let namespaces = namespaces.map(strings);
        let names = strings(names);
        IssuerPolicy::parse(
            PolicyInput {
                namespaces: namespaces.as_deref(),
                names: &names,
                ..Default::default()
            },
            true,
        )
    }

    #[test]
    fn namespaces_table() {
        let p = match parse(Some(&["team-a", "apps-*"]), &[]) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        for (ns, want) in [
            ("team-a", true),
            ("team-b", false),
            ("team-ab", false),
            ("apps-", true),
            ("apps-x", true),
            ("apps", false),
            ("kube-system", false),
        ] {
            assert_eq!(p.allows_namespace(ns), want, "{ns}");
        }
        let all = parse(Some(&["*"]), &[]).map(|p| p.allows_namespace("anything"));
        assert_eq!(all, Ok(true));
        let none = parse(Some(&[]), &[]).map(|p| p.allows_namespace("team-a"));
        assert_eq!(none, Ok(false));
        let unset = parse(None, &[]).map(|p| p.allows_namespace("team-a"));
        assert_eq!(unset, Ok(true));
    }

    #[test]
    fn bad_policies_are_refused_with_the_fix() {
        type Case<'a> = (Option<&'a [&'a str]>, &'a [&'a str], &'a str);
        let cases: &[Case] = &[
            (Some(&["Team"]), &[], "not a namespace name"),
            (Some(&["*team"]), &[], "not a namespace name"),
            (Some(&["te*am"]), &[], "not a namespace name"),
            (Some(&[""]), &[], "is empty"),
            (
                None,
                &["a.*.com"],
                "spec.policy.names: invalid name pattern",
            ),
            (None, &[""], "spec.policy.names"),
        ];
        for (namespaces, names, want) in cases {
            let got = parse(*namespaces, names)
                .err()
                .map(|e| e.0)
                .unwrap_or_default();
            assert!(got.contains(want), "{namespaces:?} {names:?}: {got}");
        }
        let many = strings(&vec!["x"; MAX_ENTRIES + 1]);
        let got = IssuerPolicy::parse(
            PolicyInput {
                names: &many,
                ..Default::default()
            },
            true,
        );
        assert!(got.is_err_and(|e| e.0.contains("more than 256")));
        // A StepIssuer has one namespace: listing namespaces is a mistake worth telling.
        let ns = strings(&["team"]);
        let got = IssuerPolicy::parse(
            PolicyInput {
                namespaces: Some(&ns),
                ..Default::default()
            },
            false,
        );
        assert!(got.is_err_and(|e| e.0.contains("for StepClusterIssuers")));
    }

    /// Security review H3: through a cluster issuer, a namespace gets its own names only, unless
    /// the policy widens them; a namespace not listed gets nothing.
    #[test]
    fn requests_are_checked_namespace_first_then_every_name() {
        let base = NamePolicy::default();
        let policy = match parse(Some(&["team"]), &["*.example.com", "10.0.0.1"]) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let names = policy.name_policy(&base);
        let team = Requester::Namespace("team");
        let other = Requester::Namespace("other");
        let run = |who, requested: &[&str]| {
            check(
                "StepClusterIssuer ca",
                &policy,
                &names,
                who,
                requested.iter().copied(),
            )
        };
        assert_eq!(
            run(team, &["api.team.svc", "a.example.com", "10.0.0.1"]),
            Ok(())
        );
        assert_eq!(
            run(team, &["spiffe://cluster.local/ns/team/sa/app"]),
            Ok(())
        );
        for bad in [
            "api.other.svc",
            "10.0.0.2",
            "spiffe://cluster.local/ns/kube-system/sa/x",
            "*.corp.example",
            "db",
            "step-operator-webhook.step-operator.svc",
        ] {
            let got = run(team, &["api.team.svc", bad]);
            assert!(matches!(got, Err(Refusal::Name { .. })), "{bad}: {got:?}");
        }
        let got = run(other, &["api.other.svc"]);
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Err("StepClusterIssuer ca may not be used from namespace \"other\": its spec.policy.namespaces does not list it; use another issuer, or ask the cluster administrators to add the namespace".into())
        );
        // Any name, when the policy says so.
        let any = IssuerPolicy::any_name();
        let any_names = any.name_policy(&base);
        assert_eq!(
            check("x", &any, &any_names, team, ["api.other.svc", "10.9.9.9"]),
            Ok(())
        );
    }

    #[test]
    fn which_policy_applies() {
        let names = strings(&["*.example.com"]);
        let spec = PolicyInput {
            names: &names,
            ..Default::default()
        };
        use WithoutPolicy::*;
        let cases = [
            // (spec, cluster-scoped, without, want)
            (None, true, AllowAnyName, IssuerPolicy::any_name()),
            (None, true, NamespaceNames, IssuerPolicy::namespace_names()),
            (None, false, NamespaceNames, IssuerPolicy::any_name()),
            (None, false, AllowAnyName, IssuerPolicy::any_name()),
        ];
        for (spec, cluster, without, want) in cases {
            assert_eq!(
                for_requests(spec, cluster, without),
                Ok(want),
                "{cluster} {without:?}"
            );
        }
        let with = for_requests(Some(spec), true, AllowAnyName);
        assert!(with.is_ok_and(|p| !p.allow_any_name && p.names.len() == 1));
        // Pods never get more than their own names from an issuer without a policy.
        assert_eq!(for_pods(None), Ok(IssuerPolicy::namespace_names()));
        assert!(for_pods(Some(spec)).is_ok_and(|p| p.names.len() == 1));
    }

    #[test]
    fn namespace_labels() {
        let labels = std::collections::BTreeMap::from([
            ("autocert.step.sm".to_string(), "enabled".to_string()),
            ("team".to_string(), "a".to_string()),
        ]);
        let get = |k: &str| labels.get(k).map(String::as_str);
        let req = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(namespace_opted_in(get, &req(&[])));
        assert!(namespace_opted_in(
            get,
            &req(&[("autocert.step.sm", "enabled")])
        ));
        assert!(namespace_opted_in(
            get,
            &req(&[("autocert.step.sm", "enabled"), ("team", "a")])
        ));
        assert!(!namespace_opted_in(
            get,
            &req(&[("autocert.step.sm", "disabled")])
        ));
        assert!(!namespace_opted_in(get, &req(&[("other", "enabled")])));
        assert!(!namespace_opted_in(get, &req(&[("team", "")])));
    }

    #[test]
    fn descriptions() {
        let p = match parse(Some(&["team", "apps-*"]), &["*.example.com"]) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            p.describe("cluster.local"),
            "Usable from namespaces team, apps-*, for each namespace's own names (<svc>.<ns>.svc, \
             <svc>.<ns>.svc.cluster.local, spiffe://cluster.local/ns/<ns>/sa/<sa>) and *.example.com"
        );
        assert_eq!(
            IssuerPolicy::any_name().describe("cluster.local"),
            "Usable from every namespace, for any name (allowAnyName)"
        );
    }
}
