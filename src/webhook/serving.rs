//! The webhook's own serving certificate, signed by step-ca through the default
//! StepClusterIssuer, so the webhook needs no cert-manager. It is renewed in the process at 2/3 of
//! its lifetime and hot-swapped without a restart; the named MutatingWebhookConfiguration's
//! `caBundle` is kept equal to the step-ca root.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};

use crate::crd::StepClusterIssuer;
use crate::duration::to_go_seconds;
use crate::issuer::IssuerAccess;
use crate::pki;

/// A signed serving certificate and what the webhook derives from it.
pub struct Serving {
    pub chain_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
    pub root_pem: String,
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// The DNS names of the webhook Service plus any extra names.
pub fn serving_names(
    service: &str,
    namespace: &str,
    cluster_domain: &str,
    extra: &[String],
) -> Vec<String> {
    let mut names = vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
    ];
    for e in extra {
        let e = e.trim();
        if !e.is_empty() && !names.iter().any(|n| n == e) {
            names.push(e.to_string());
        }
    }
    names
}

/// Obtains a serving certificate from step-ca through the StepClusterIssuer `issuer`.
pub async fn issue(
    ctx: &IssuerAccess,
    issuer: &str,
    names: &[String],
    lifetime: Duration,
) -> anyhow::Result<Serving> {
    let api = Api::<StepClusterIssuer>::all(ctx.client.clone());
    let issuer_obj = api.get_opt(issuer).await?.ok_or_else(|| {
        anyhow::anyhow!("StepClusterIssuer {issuer} (--default-issuer) does not exist: create it")
    })?;
    let (signer, _) = ctx
        .signer_for(&issuer_obj)
        .await
        .map_err(|e| anyhow::anyhow!("StepClusterIssuer {issuer} cannot sign: {e}"))?;
    let key = pki::keys::GeneratedKey::generate(pki::keys::KeyAlgorithm::EcdsaP256)?;
    let cn = names.first().cloned().unwrap_or_default();
    let csr = key.csr_pem(&cn, names)?;
    let response = signer
        .sign(&csr, &cn, names, Some(to_go_seconds(lifetime)))
        .await?;
    let issued = pki::chain::verify_issued(
        &response.cert_chain,
        &key.public_key_der(),
        chrono::Utc::now(),
    )?;
    let root_pem = signer
        .roots_pem()
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("step-ca returned no root certificate"))?;
    Ok(Serving {
        chain_pem: issued.certificate_pem,
        key_pem: zeroize::Zeroizing::new(key.private_key_pem()),
        root_pem,
        not_before: issued.leaf.not_before,
        not_after: issued.not_after,
    })
}

/// Sets `caBundle` of every webhook in the named MutatingWebhookConfiguration to `root_pem`.
/// Returns Ok(false) when the configuration does not exist (yet).
pub async fn sync_ca_bundle(
    ctx: &IssuerAccess,
    config_name: &str,
    root_pem: &str,
) -> Result<bool, kube::Error> {
    if config_name.is_empty() {
        return Ok(false);
    }
    let api = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    let Some(config) = api.get_opt(config_name).await? else {
        return Ok(false);
    };
    let bundle = k8s_openapi::ByteString(root_pem.as_bytes().to_vec());
    let mut ops = Vec::new();
    for (i, w) in config.webhooks.unwrap_or_default().iter().enumerate() {
        if w.client_config.ca_bundle.as_ref() == Some(&bundle) {
            continue;
        }
        // `test` guards against the list changing between our read and the patch.
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}));
    }
    if ops.is_empty() {
        return Ok(true);
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    api.patch(
        config_name,
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await?;
    tracing::info!(
        config = config_name,
        "Set the MutatingWebhookConfiguration caBundle to the step-ca root"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_service_and_extras_once() {
        let names = serving_names(
            "wh",
            "ops",
            "cluster.local",
            &["127.0.0.1".into(), "wh.ops.svc".into(), " ".into()],
        );
        assert_eq!(
            names,
            ["wh.ops.svc", "wh.ops.svc.cluster.local", "127.0.0.1"]
        );
    }
}
