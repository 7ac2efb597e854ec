//! The webhook's own serving certificate, signed by step-ca through the default
//! StepClusterIssuer, so the webhook needs no cert-manager. [`ServingCert`] obtains it at start,
//! renews it in the process at 2/3 of its lifetime and hot-swaps it without a restart, and keeps
//! the named MutatingWebhookConfiguration's `caBundle` equal to the step-ca root. Failures are
//! retried with the shared [`Backoff`]: quickly when they may pass on their own, slowly when
//! someone has to fix the issuer.

use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};

use crate::backoff::{self, Backoff, Failure, RetryPolicy};
use crate::crd::StepClusterIssuer;
use crate::duration::to_go_seconds;
use crate::issuer::IssuerAccess;
use crate::issuer::error::IssuerError;
use crate::webhook::args::WebhookArgs;
use crate::{pki, step};

/// While waiting to renew, the `caBundle` is re-synced this often, in case someone (a Helm
/// upgrade) reset it.
const BUNDLE_RESYNC: Duration = Duration::from_secs(60);

/// A signed serving certificate and what the webhook derives from it.
pub struct Serving {
    pub chain_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
    pub root_pem: String,
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// Why no serving certificate was issued. The messages name the issuer and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("cannot read StepClusterIssuer {issuer} (--default-issuer): {cause}")]
    IssuerRead { issuer: String, cause: kube::Error },
    #[error("StepClusterIssuer {issuer} (--default-issuer) does not exist: create it")]
    IssuerMissing { issuer: String },
    #[error("StepClusterIssuer {issuer} cannot sign: {cause}")]
    IssuerNotReady { issuer: String, cause: IssuerError },
    #[error("cannot make the serving key or its CSR: {0}")]
    Key(pki::Error),
    #[error("step-ca did not sign the serving certificate: {0}")]
    Sign(step::Error),
    #[error("step-ca returned an unusable serving certificate: {0}")]
    Unusable(pki::Error),
    #[error("step-ca returned no root certificate")]
    NoRoot,
}

impl IssueError {
    /// How soon a retry may succeed.
    pub fn failure(&self) -> Failure {
        let transient = match self {
            IssueError::IssuerRead { .. } | IssueError::Unusable(_) | IssueError::NoRoot => true,
            IssueError::IssuerMissing { .. } | IssueError::Key(_) => false,
            IssueError::IssuerNotReady { cause, .. } => cause.is_transient(),
            IssueError::Sign(e) => e.is_retryable(),
        };
        if transient {
            Failure::Transient
        } else {
            Failure::Refused
        }
    }
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

/// The webhook's serving certificate: where it comes from and what it is for.
pub struct ServingCert {
    access: Arc<IssuerAccess>,
    /// The StepClusterIssuer that signs it (`--default-issuer`).
    issuer: String,
    names: Vec<String>,
    lifetime: Duration,
    /// The MutatingWebhookConfiguration whose `caBundle` follows the root (empty: none).
    webhook_config: String,
}

impl ServingCert {
    pub fn new(access: Arc<IssuerAccess>, args: &WebhookArgs) -> Self {
        Self {
            access,
            issuer: args.default_issuer.clone(),
            names: serving_names(
                &args.service_name,
                &args.pod.pod_namespace,
                &args.cluster.cluster_domain,
                &args.tls_sans,
            ),
            lifetime: args.serving_cert_duration,
            webhook_config: args.webhook_config_name.clone(),
        }
    }

    /// Gets the first certificate, retrying until step-ca signs one; the pod stays unready
    /// meanwhile.
    pub async fn obtain(&self) -> Serving {
        let mut backoff = Backoff::new(RetryPolicy::default());
        loop {
            match self.issue().await {
                Ok(s) => {
                    tracing::info!(names = ?self.names, not_after = %s.not_after, "Obtained the serving certificate from step-ca");
                    self.sync_bundle(&s.root_pem).await;
                    return s;
                }
                Err(e) => {
                    let delay = backoff.next(e.failure());
                    tracing::warn!(error = %e, retry_in = %backoff::display(delay), "Cannot obtain the serving certificate yet");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Renews `current` before it expires, for good: each renewal is loaded into `tls`, a changed
    /// root is handed to `new_root` (what the injected agents must trust), and the `caBundle`
    /// follows it.
    pub async fn keep_fresh(
        self,
        tls: RustlsConfig,
        mut current: Serving,
        new_root: impl Fn(&str) + Send,
    ) {
        let mut backoff = Backoff::new(RetryPolicy::default());
        loop {
            self.wait_until_due(&current).await;
            let failure = match self.issue().await {
                Ok(next) => match tls
                    .reload_from_pem(
                        next.chain_pem.as_bytes().to_vec(),
                        next.key_pem.as_bytes().to_vec(),
                    )
                    .await
                {
                    Ok(()) => {
                        tracing::info!(not_after = %next.not_after, "Renewed the serving certificate");
                        if next.root_pem != current.root_pem {
                            new_root(&next.root_pem);
                        }
                        self.sync_bundle(&next.root_pem).await;
                        current = next;
                        backoff.reset();
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Failed to load the renewed serving certificate; keeping the old one");
                        Failure::Transient
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "Failed to renew the serving certificate");
                    e.failure()
                }
            };
            let delay = backoff.next(failure);
            tracing::info!(retry_in = %backoff::display(delay), "Retrying the serving certificate's renewal");
            tokio::time::sleep(delay).await;
        }
    }

    /// Sleeps until `current` is due for renewal, re-syncing the `caBundle` every
    /// [`BUNDLE_RESYNC`] meanwhile.
    async fn wait_until_due(&self, current: &Serving) {
        let renew_at =
            pki::chain::renew_at(current.not_before, current.not_after, rand::random::<f64>());
        loop {
            let now = chrono::Utc::now();
            if now >= renew_at {
                return;
            }
            let wait = (renew_at - now).to_std().unwrap_or_default();
            tokio::time::sleep(wait.min(BUNDLE_RESYNC)).await;
            self.sync_bundle(&current.root_pem).await;
        }
    }

    /// Obtains a serving certificate from step-ca through the StepClusterIssuer.
    async fn issue(&self) -> Result<Serving, IssueError> {
        let issuer = &self.issuer;
        let object = Api::<StepClusterIssuer>::all(self.access.client.clone())
            .get_opt(issuer)
            .await
            .map_err(|cause| IssueError::IssuerRead {
                issuer: issuer.clone(),
                cause,
            })?
            .ok_or_else(|| IssueError::IssuerMissing {
                issuer: issuer.clone(),
            })?;
        let (signer, _) =
            self.access
                .signer_for(&object)
                .await
                .map_err(|cause| IssueError::IssuerNotReady {
                    issuer: issuer.clone(),
                    cause,
                })?;
        let key = pki::keys::GeneratedKey::generate(pki::keys::KeyAlgorithm::EcdsaP256)
            .map_err(IssueError::Key)?;
        let cn = self.names.first().cloned().unwrap_or_default();
        let csr = key.csr_pem(&cn, &self.names).map_err(IssueError::Key)?;
        let response = signer
            .sign(&csr, &cn, &self.names, Some(to_go_seconds(self.lifetime)))
            .await
            .map_err(IssueError::Sign)?;
        let issued = pki::chain::verify_issued(
            &response.cert_chain,
            &key.public_key_der(),
            chrono::Utc::now(),
        )
        .map_err(IssueError::Unusable)?;
        let root_pem = signer
            .roots_pem()
            .first()
            .cloned()
            .ok_or(IssueError::NoRoot)?;
        Ok(Serving {
            chain_pem: issued.certificate_pem,
            key_pem: zeroize::Zeroizing::new(key.private_key_pem()),
            root_pem,
            not_before: issued.leaf.not_before,
            not_after: issued.not_after,
        })
    }

    async fn sync_bundle(&self, root: &str) {
        let config = &self.webhook_config;
        match sync_ca_bundle(&self.access.client, config, root).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(config = %config, "No MutatingWebhookConfiguration to update")
            }
            Err(e) => {
                tracing::warn!(config = %config, error = %e, "Failed to update the caBundle")
            }
        }
    }
}

/// Sets `caBundle` of every webhook in the named MutatingWebhookConfiguration to `root_pem`.
/// Returns Ok(false) when the configuration does not exist (yet).
pub async fn sync_ca_bundle(
    client: &kube::Client,
    config_name: &str,
    root_pem: &str,
) -> Result<bool, kube::Error> {
    if config_name.is_empty() {
        return Ok(false);
    }
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
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

    #[test]
    fn only_failures_that_may_pass_are_retried_quickly() {
        let missing = IssueError::IssuerMissing {
            issuer: "ca".into(),
        };
        assert_eq!(missing.failure(), Failure::Refused);
        let unreadable_password = IssueError::IssuerNotReady {
            issuer: "ca".into(),
            cause: IssuerError::SecretNotFound {
                namespace: "step".into(),
                name: "pw".into(),
            },
        };
        assert_eq!(unreadable_password.failure(), Failure::Refused);
        assert_eq!(IssueError::NoRoot.failure(), Failure::Transient);
    }
}
