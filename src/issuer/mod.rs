//! Everything needed to reach and use an issuer, shared by the controller and the webhook (and,
//! later, the other signers): which issuer (its key), what both kinds offer, their spec's
//! validation, where the password comes from, and the cache of ready-to-use signers. It knows
//! nothing of CertificateRequests, pods or status writes: those belong to the roles.

pub mod error;
mod password;
pub mod signers;
pub mod spec;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::issuer::IssuerSpecView;
use crate::crd::{IssuerStatus, StepClusterIssuer, StepIssuer};
use crate::metrics::Metrics;
use crate::step::{Audience, Client as StepClient, ForbiddenRanges, Signer};

use self::error::IssuerError;
use self::signers::{SignerCache, SignerVersion};
use self::spec::validate;

/// Which of our issuers: the key of the signer cache, and what a CertificateRequest names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssuerKey {
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
}

impl IssuerKey {
    pub fn kind(&self) -> &'static str {
        match self {
            IssuerKey::Namespaced { .. } => "StepIssuer",
            IssuerKey::Cluster { .. } => "StepClusterIssuer",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            IssuerKey::Namespaced { name, .. } | IssuerKey::Cluster { name } => name,
        }
    }
}

impl std::fmt::Display for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IssuerKey::Namespaced { namespace, name } => write!(f, "StepIssuer {namespace}/{name}"),
            IssuerKey::Cluster { name } => write!(f, "StepClusterIssuer {name}"),
        }
    }
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

/// How a role reaches its issuers: the API client that reads their password Secrets, the signer
/// cache, and the settings every connect uses.
pub struct IssuerAccess {
    /// For calls: each read times out (`--kube-timeout`).
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub signers: SignerCache,
    /// Namespace of the password Secrets of StepClusterIssuers whose `passwordRef` names none.
    pub cluster_resource_namespace: String,
    /// Timeout of each request to step-ca (a whole connect gets twice this plus decryption).
    pub ca_timeout: Duration,
    /// Addresses a StepIssuer's URL may not lead to (see `--forbidden-ca-cidrs`).
    pub forbidden_ca_cidrs: ForbiddenRanges,
}

impl IssuerAccess {
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
            &self.cluster_resource_namespace,
        )
        .map_err(|e| IssuerError::InvalidSpec(e.0))?;
        let password = password::read_password(&self.client, &valid.password).await?;
        let version = SignerVersion {
            uid: issuer.uid().unwrap_or_default(),
            generation: issuer.meta().generation.unwrap_or_default(),
            password_version: password.version.clone(),
        };
        let timeout = self.ca_timeout;
        // The deny-list guards against tenants' URLs; the admin's StepClusterIssuers may point
        // anywhere, a step-ca on the node or behind a link-local address included.
        let forbidden = match K::AUDIENCE {
            Audience::Tenant => self.forbidden_ca_cidrs.clone(),
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
}
