//! The roots of each StepClusterIssuer, published as a ClusterTrustBundle linked to its signer
//! name, so that a pod with a pod certificate can also mount the root to verify its peers (a
//! `clusterTrustBundle` projected volume source with `signerName`). Written by server-side apply
//! whenever the issuer is checked, so a rotated root reaches the bundle at the next check; owned
//! by the issuer, so it goes when the issuer does.

use k8s_openapi::api::certificates::v1::{ClusterTrustBundle, ClusterTrustBundleSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use crate::controller::context::{Context, FIELD_MANAGER};
use crate::issuer::{IssuerKey, IssuerObject};

/// The bundle's name: the signer name with `/` as `:` (the API requires that prefix for a bundle
/// linked to a signer), then `:roots`.
pub fn bundle_name(key: &IssuerKey) -> String {
    format!("{}:roots", key.signer_name().replace('/', ":"))
}

/// The bundle for `issuer` holding `roots_pem`, or `None` for a StepIssuer: a bundle is
/// cluster-wide, and a namespace's own issuer must not put roots into every pod's trust.
pub fn bundle<K: IssuerObject>(issuer: &K, roots_pem: &[String]) -> Option<ClusterTrustBundle> {
    let key = issuer.key();
    if !matches!(key, IssuerKey::Cluster { .. }) || roots_pem.is_empty() {
        return None;
    }
    let owner = OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::KIND.into(),
        name: issuer.name_any(),
        uid: issuer.uid()?,
        ..Default::default()
    };
    let trust_bundle = roots_pem
        .iter()
        .map(|p| p.trim_end().to_string() + "\n")
        .collect::<String>();
    Some(ClusterTrustBundle {
        metadata: ObjectMeta {
            name: Some(bundle_name(&key)),
            labels: Some([("certmanager.step.sm/issuer".to_string(), issuer.name_any())].into()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: ClusterTrustBundleSpec {
            signer_name: Some(key.signer_name()),
            trust_bundle,
        },
    })
}

/// Applies the bundle; a failure is logged and told on the issuer, never fatal: signing works
/// without it.
pub async fn publish<K: IssuerObject>(ctx: &Context, issuer: &K, roots_pem: &[String]) {
    let Some(bundle) = bundle(issuer, roots_pem) else {
        return;
    };
    let name = bundle.name_any();
    let mut patch = serde_json::to_value(&bundle).unwrap_or_default();
    patch["apiVersion"] = "certificates.k8s.io/v1".into();
    patch["kind"] = "ClusterTrustBundle".into();
    let result = Api::<ClusterTrustBundle>::all(ctx.client.clone())
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    if let Err(e) = result {
        let message = format!(
            "Could not publish the roots as ClusterTrustBundle {name}: {}; pods cannot mount them with a clusterTrustBundle volume (the controller needs create/patch on clustertrustbundles and attest on its signer names)",
            crate::error_chain::display(&e)
        );
        tracing::warn!(bundle = %name, error = %crate::error_chain::display(&e), "Could not publish the issuer's roots");
        ctx.event(
            issuer,
            kube::runtime::events::EventType::Warning,
            "TrustBundleFailed",
            message,
            "Publish",
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{StepClusterIssuer, StepClusterIssuerSpec, StepIssuer, StepIssuerSpec};

    #[test]
    fn a_cluster_issuers_roots_become_a_bundle_linked_to_its_signer() {
        let mut issuer = StepClusterIssuer::new(
            "ca",
            StepClusterIssuerSpec {
                url: "https://ca".into(),
                ca_bundle: None,
                provisioner: Default::default(),
                policy: None,
                ..Default::default()
            },
        );
        issuer.metadata.uid = Some("u1".into());
        let roots = [
            "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----".to_string(),
            "B\n".to_string(),
        ];
        let b = bundle(&issuer, &roots).unwrap();
        assert_eq!(
            b.name_any(),
            "stepclusterissuers.certmanager.step.sm:ca:roots"
        );
        assert_eq!(
            b.spec.signer_name.as_deref(),
            Some("stepclusterissuers.certmanager.step.sm/ca")
        );
        assert_eq!(b.spec.trust_bundle, format!("{}\nB\n", roots[0]));
        let owner = &b.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("StepClusterIssuer", "u1")
        );
        assert!(bundle(&issuer, &[]).is_none(), "no roots, no bundle");

        let mut own = StepIssuer::new(
            "ca",
            StepIssuerSpec {
                url: "https://ca".into(),
                ca_bundle: None,
                provisioner: Default::default(),
                policy: None,
                ..Default::default()
            },
        );
        own.metadata.namespace = Some("team".into());
        own.metadata.uid = Some("u2".into());
        assert!(
            bundle(&own, &roots).is_none(),
            "a namespace's issuer never gets a cluster-wide bundle"
        );
    }
}
