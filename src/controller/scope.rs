//! Where the controller looks: the whole cluster, or only some namespaces (`--namespaces`), with
//! Roles alone. Each watched namespace gets its own watches and reconcilers, since one watch
//! cannot span a chosen set of namespaces; StepClusterIssuers are watched only when
//! `--cluster-issuers` says so (they need a ClusterRole), and the cluster-scoped signers (pod
//! certificates, Kubernetes CSRs, trust bundles) are off.

/// One watch's reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// Whether StepClusterIssuers are served.
    pub cluster_issuers: bool,
}

impl Scope {
    pub fn cluster() -> Self {
        Scope {
            namespace: None,
            cluster_issuers: true,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The name a watch reports under to `/readyz` and the log: `base`, or `base in <ns>`.
    /// Names are `'static` there; a scoped one is made once per namespace at start-up.
    pub fn watch_name(&self, base: &'static str) -> &'static str {
        match &self.namespace {
            None => base,
            Some(ns) => Box::leak(format!("{base} in {ns}").into_boxed_str()),
        }
    }
}

/// The scopes `--namespaces` asks for: the cluster when empty, else one per namespace (each
/// once, in the order given).
pub fn scopes(namespaces: &[String], cluster_issuers: bool) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::new();
    for ns in namespaces
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    {
        if !out.iter().any(|s| s.namespace() == Some(ns)) {
            out.push(Scope {
                namespace: Some(ns.to_string()),
                cluster_issuers,
            });
        }
    }
    if out.is_empty() {
        out.push(Scope::cluster());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_make_one_scope_each_and_none_make_the_cluster() {
        assert_eq!(scopes(&[], false), [Scope::cluster()]);
        assert_eq!(scopes(&[" ".into()], false), [Scope::cluster()]);
        let got = scopes(&["a".into(), "b".into(), "a".into()], false);
        let names: Vec<_> = got.iter().map(|s| s.namespace()).collect();
        assert_eq!(names, [Some("a"), Some("b")]);
        assert!(got.iter().all(|s| !s.cluster_issuers));
        assert_eq!(
            got[0].watch_name("CertificateRequests"),
            "CertificateRequests in a"
        );
        assert_eq!(
            Scope::cluster().watch_name("CertificateRequests"),
            "CertificateRequests"
        );
    }
}
