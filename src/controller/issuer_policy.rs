//! What an issuer's `NamePolicy` condition says: which namespaces may use it and for which names,
//! or that it has no policy and signs any name. Pure; table-tested.

use crate::policy::issuer::{PolicyInput, WithoutPolicy, for_requests};

/// The condition type next to `Ready` on both issuer kinds.
pub const NAME_POLICY: &str = "NamePolicy";

/// The `NamePolicy` condition's parts: `restricted` is its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stance {
    pub restricted: bool,
    pub reason: &'static str,
    pub message: String,
}

/// `spec`: the issuer's `spec.policy` (None when unset); `cluster_scoped`: a StepClusterIssuer.
pub fn stance(
    spec: Option<PolicyInput<'_>>,
    cluster_scoped: bool,
    without: WithoutPolicy,
    cluster_domain: &str,
) -> Stance {
    let policy = match for_requests(spec, cluster_scoped, without) {
        Ok(p) => p,
        Err(e) => {
            return Stance {
                restricted: false,
                reason: "InvalidPolicy",
                message: format!("{e}; nothing is signed until it is fixed"),
            };
        }
    };
    let described = policy.describe(cluster_domain);
    match (spec.is_some(), cluster_scoped, without) {
        (true, _, _) if policy.allow_any_name => Stance {
            restricted: false,
            reason: "AnyName",
            message: format!("{described}: spec.policy.allowAnyName is set"),
        },
        (true, _, _) => Stance {
            restricted: true,
            reason: "Restricted",
            message: described,
        },
        (false, false, _) => Stance {
            restricted: false,
            reason: "NoPolicy",
            message: "No spec.policy: any name, for this namespace only (whoever holds the provisioner password can ask step-ca for any name anyway)".into(),
        },
        (false, true, WithoutPolicy::AllowAnyName) => Stance {
            restricted: false,
            reason: "NoPolicy",
            message: "No spec.policy: any namespace may get a certificate for any name through CertificateRequests (the controller runs with --issuers-without-policy=allow-any-name, step-issuer's behaviour); pods still get their own namespace's names only. Set spec.policy to restrict it (docs/security.md)".into(),
        },
        (false, true, WithoutPolicy::NamespaceNames) => Stance {
            restricted: true,
            reason: "ControllerDefault",
            message: format!(
                "No spec.policy; the controller's --issuers-without-policy=namespace-names applies. {described}"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stances() {
        let names = vec!["*.example.com".to_string()];
        let restricted = PolicyInput {
            names: &names,
            ..Default::default()
        };
        let any = PolicyInput {
            allow_any_name: true,
            ..Default::default()
        };
        let bad_names = vec!["a.*.b".to_string()];
        let bad = PolicyInput {
            names: &bad_names,
            ..Default::default()
        };
        use WithoutPolicy::*;
        let cases = [
            (Some(restricted), true, AllowAnyName, true, "Restricted"),
            (Some(restricted), false, AllowAnyName, true, "Restricted"),
            (Some(any), true, NamespaceNames, false, "AnyName"),
            (Some(bad), true, NamespaceNames, false, "InvalidPolicy"),
            (None, true, AllowAnyName, false, "NoPolicy"),
            (None, true, NamespaceNames, true, "ControllerDefault"),
            (None, false, NamespaceNames, false, "NoPolicy"),
        ];
        for (spec, cluster, without, want_restricted, want_reason) in cases {
            let s = stance(spec, cluster, without, "cluster.local");
            assert_eq!(
                (s.restricted, s.reason),
                (want_restricted, want_reason),
                "{spec:?} {cluster} {without:?}: {}",
                s.message
            );
        }
        let open = stance(None, true, AllowAnyName, "cluster.local");
        assert!(
            open.message
                .contains("any namespace may get a certificate for any name")
        );
        assert!(open.message.contains("Set spec.policy"));
    }
}
