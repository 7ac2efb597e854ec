//! State shared by the reconcilers, and the one path from an issuer object to a signer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::controller::decision::IssuerKey;
use crate::controller::error::IssuerError;
use crate::controller::issuer_policy;
use crate::controller::issuer_spec::{PasswordSource, trim_trailing_whitespace, validate};
use crate::controller::signers::{SignerCache, SignerVersion};
use crate::crd::issuer::IssuerSpecView;
use crate::crd::{IssuerStatus, StepClusterIssuer, StepIssuer};
use crate::metrics::Metrics;
use crate::policy::{IssuerPolicy, NamePolicy, WithoutPolicy};
use crate::step::{Audience, Client as StepClient, ForbiddenRanges, Signer};

/// Field manager of every write step-operator's controller makes.
pub const FIELD_MANAGER: &str = "step-operator";

#[derive(Clone, Debug)]
pub struct Settings {
    pub cluster_resource_namespace: String,
    pub max_retry_duration: Duration,
    pub issuer_recheck_interval: Duration,
    pub ca_timeout: Duration,
    /// Streaming lists (watch with sendInitialEvents) rather than paged LISTs.
    pub streaming_lists: bool,
    /// Requests of one issuer signed at once (see `--max-signs-per-issuer`).
    pub max_signs_per_issuer: usize,
    /// The base of every issuer's name policy (the cluster domain).
    pub names: NamePolicy,
    /// What StepClusterIssuers without `spec.policy` sign (`--issuers-without-policy`).
    pub without_policy: WithoutPolicy,
    /// Whether issuers are re-checked on Secret events (`--watch-secrets`).
    pub watch_secrets: bool,
    /// Addresses a StepIssuer's URL may not lead to (see `--forbidden-ca-cidrs`).
    pub forbidden_ca_cidrs: ForbiddenRanges,
}

pub struct Context {
    /// For calls: each read times out (`--kube-timeout`).
    pub client: Client,
    /// For watches: no read timeout (see [`crate::kube_client`]).
    pub watch_client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub signers: SignerCache,
    pub settings: Settings,
}

/// What both issuer kinds offer the reconcilers.
pub trait IssuerObject:
    Resource<DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// The kind's plural, as watches report it (`StepIssuers`).
    const PLURAL: &'static str;
    /// The name under which the issuer reconciler's Secret watch reports.
    const SECRETS_WATCH: &'static str;
    /// Who reads this kind's status and Events, and so how much of a CA's answers they show.
    const AUDIENCE: Audience;
    fn spec_view(&self) -> IssuerSpecView<'_>;
    fn issuer_status(&self) -> Option<&IssuerStatus>;
    fn key(&self) -> IssuerKey;
    /// The namespace of a StepIssuer; None for a StepClusterIssuer.
    fn own_namespace(&self) -> Option<String>;
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
}

impl IssuerObject for StepIssuer {
    const KIND: &'static str = "StepIssuer";
    const PLURAL: &'static str = "StepIssuers";
    const SECRETS_WATCH: &'static str = "Secrets (metadata, for StepIssuers)";
    const AUDIENCE: Audience = Audience::Tenant;
    fn spec_view(&self) -> IssuerSpecView<'_> {
        self.spec.view()
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn key(&self) -> IssuerKey {
        IssuerKey::Namespaced {
            namespace: self.namespace().unwrap_or_default(),
            name: self.name_any(),
        }
    }
    fn own_namespace(&self) -> Option<String> {
        Some(self.namespace().unwrap_or_default())
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

impl IssuerObject for StepClusterIssuer {
    const KIND: &'static str = "StepClusterIssuer";
    const PLURAL: &'static str = "StepClusterIssuers";
    const SECRETS_WATCH: &'static str = "Secrets (metadata, for StepClusterIssuers)";
    const AUDIENCE: Audience = Audience::Admin;
    fn spec_view(&self) -> IssuerSpecView<'_> {
        self.spec.view()
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn key(&self) -> IssuerKey {
        IssuerKey::Cluster {
            name: self.name_any(),
        }
    }
    fn own_namespace(&self) -> Option<String> {
        None
    }
    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

/// A password and the version that identifies it in the signer cache (never the password).
struct Password {
    bytes: zeroize::Zeroizing<Vec<u8>>,
    version: String,
}

impl Context {
    /// The signer for an issuer, from the cache when its spec and password are unchanged,
    /// otherwise by validating the spec, reading the password and connecting to step-ca.
    /// Returns whether a new connection was made.
    pub async fn signer_for<K: IssuerObject>(
        &self,
        issuer: &K,
    ) -> Result<(Signer, bool), IssuerError> {
        let valid = validate(
            &issuer.spec_view(),
            issuer.own_namespace().as_deref(),
            &self.settings.cluster_resource_namespace,
        )
        .map_err(|e| IssuerError::InvalidSpec(e.0))?;
        let password = self.read_password(&valid.password).await?;
        let version = SignerVersion {
            uid: issuer.uid().unwrap_or_default(),
            generation: issuer.meta().generation.unwrap_or_default(),
            password_version: password.version.clone(),
        };
        let timeout = self.settings.ca_timeout;
        // The deny-list guards against tenants' URLs; the admin's StepClusterIssuers may point
        // anywhere, a step-ca on the node or behind a link-local address included.
        let forbidden = match K::AUDIENCE {
            Audience::Tenant => self.settings.forbidden_ca_cidrs.clone(),
            Audience::Admin => ForbiddenRanges::default(),
        };
        self.signers
            .get_or_connect(&issuer.key(), version, || async {
                let started = Instant::now();
                let result = match StepClient::with_forbidden(
                    &valid.url,
                    valid.ca_bundle_pem.as_deref(),
                    timeout,
                    &forbidden,
                ) {
                    Ok(client) => {
                        Signer::connect_with_client(
                            client,
                            &valid.provisioner_name,
                            valid.kid.as_deref(),
                            &password.bytes,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                self.metrics
                    .observe_ca("connect", result.is_ok(), started.elapsed().as_secs_f64());
                result.map_err(IssuerError::from)
            })
            .await
    }

    /// [`Self::signer_for`] the issuer as the API holds it now, for callers whose copy is slimmed
    /// (the request path caches issuers without `caBundle`): a signer built from such a copy
    /// would trust the system roots instead of the issuer's. Costs one GET, and only when no
    /// signer is cached for the issuer's generation.
    pub async fn signer_for_latest<K: IssuerObject>(
        &self,
        issuer: &K,
    ) -> Result<(Signer, bool), IssuerError> {
        let latest = K::api(self.client.clone(), issuer.namespace().as_deref())
            .get(&issuer.name_any())
            .await
            .map_err(|source| IssuerError::IssuerRead {
                key: issuer.key().to_string(),
                source,
            })?;
        self.signer_for(&latest).await
    }

    async fn read_password(&self, source: &PasswordSource) -> Result<Password, IssuerError> {
        match source {
            PasswordSource::Secret {
                namespace,
                name,
                key,
            } => {
                let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
                let secret = match api.get_opt(name).await {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        return Err(IssuerError::SecretNotFound {
                            namespace: namespace.clone(),
                            name: name.clone(),
                        });
                    }
                    Err(source) => {
                        return Err(IssuerError::SecretRead {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            source,
                        });
                    }
                };
                let value = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.clone())
                    .or_else(|| {
                        secret
                            .string_data
                            .as_ref()
                            .and_then(|d| d.get(key))
                            .map(|s| s.clone().into_bytes())
                    })
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| IssuerError::SecretKeyMissing {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        key: key.clone(),
                    })?;
                Ok(Password {
                    bytes: zeroize::Zeroizing::new(value),
                    version: format!("secret:{}", secret.resource_version().unwrap_or_default()),
                })
            }
            PasswordSource::Env(var) => {
                let value = std::env::var_os(var)
                    .map(|v| v.into_encoded_bytes())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| IssuerError::PasswordEnvMissing(var.clone()))?;
                Ok(digest_password(trim_trailing_whitespace(&value)))
            }
            PasswordSource::File(path) => {
                let value = tokio::fs::read(path).await.map_err(|e| {
                    IssuerError::PasswordFileUnreadable {
                        path: path.clone(),
                        detail: e.kind().to_string(),
                    }
                })?;
                Ok(digest_password(trim_trailing_whitespace(&value)))
            }
        }
    }

    /// Publishes an Event; failures are logged, never fatal (Events are best effort).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let reference = obj.object_ref(&());
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(crate::crd::condition::bounded_message(&note)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason, "Failed to publish an Event");
        }
    }

    /// The policy that CertificateRequests signed by `issuer` must pass.
    pub fn request_policy<K: IssuerObject>(
        &self,
        issuer: &K,
    ) -> Result<IssuerPolicy, crate::policy::InvalidPolicy> {
        crate::policy::issuer::for_requests(
            issuer.spec_view().policy.map(|p| p.input()),
            issuer.own_namespace().is_none(),
            self.settings.without_policy,
        )
    }

    /// The conditions an issuer's status holds: `ready`, and `NamePolicy` from its spec and our
    /// settings. Every status write sends both, so that neither removes the other.
    pub fn issuer_conditions<K: IssuerObject>(
        &self,
        issuer: &K,
        previous: &[Condition],
        ready: Condition,
    ) -> Vec<Condition> {
        let stance = issuer_policy::stance(
            issuer.spec_view().policy.map(|p| p.input()),
            issuer.own_namespace().is_none(),
            self.settings.without_policy,
            &self.settings.names.cluster_domain,
        );
        let policy = crate::crd::condition::build(
            issuer_policy::NAME_POLICY,
            previous,
            stance.restricted,
            stance.reason,
            &stance.message,
            issuer.meta().generation,
            Timestamp::now(),
        );
        vec![ready, policy]
    }

    /// Server-side applies an issuer's status with our field manager.
    pub async fn apply_issuer_status<K: IssuerObject>(
        &self,
        issuer: &K,
        status: &IssuerStatus,
    ) -> Result<(), kube::Error> {
        let api = K::api(self.client.clone(), issuer.namespace().as_deref());
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::KIND,
            "status": status,
        });
        api.patch_status(
            &issuer.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }
}

fn digest_password(value: &[u8]) -> Password {
    Password {
        bytes: zeroize::Zeroizing::new(value.to_vec()),
        version: format!("sha256:{}", hex::encode(Sha256::digest(value))),
    }
}
