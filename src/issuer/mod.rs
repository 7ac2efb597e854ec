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

    /// The issuer's `signerName` in Kubernetes' own signing APIs (PodCertificateRequests, and
    /// CertificateSigningRequests): `stepclusterissuers.certmanager.step.sm/<name>`, or
    /// `stepissuers.certmanager.step.sm/<namespace>.<name>`, the form cert-manager uses for its
    /// own issuers.
    pub fn signer_name(&self) -> String {
        match self {
            IssuerKey::Cluster { name } => format!("{CLUSTER_SIGNER_DOMAIN}/{name}"),
            IssuerKey::Namespaced { namespace, name } => {
                format!("{NAMESPACED_SIGNER_DOMAIN}/{namespace}.{name}")
            }
        }
    }

    /// The issuer a `signerName` names, if it is one of ours. A namespace is a DNS label (no
    /// dot), so the first dot of a StepIssuer's signer name ends it.
    pub fn from_signer_name(signer: &str) -> Option<IssuerKey> {
        let (domain, rest) = signer.split_once('/')?;
        if rest.is_empty() || rest.contains('/') {
            return None;
        }
        match domain {
            CLUSTER_SIGNER_DOMAIN => Some(IssuerKey::Cluster {
                name: rest.to_string(),
            }),
            NAMESPACED_SIGNER_DOMAIN => {
                let (namespace, name) = rest.split_once('.')?;
                (!namespace.is_empty() && !name.is_empty()).then(|| IssuerKey::Namespaced {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// The `signerName` domain of StepClusterIssuers.
pub const CLUSTER_SIGNER_DOMAIN: &str = "stepclusterissuers.certmanager.step.sm";
/// The `signerName` domain of StepIssuers.
pub const NAMESPACED_SIGNER_DOMAIN: &str = "stepissuers.certmanager.step.sm";

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
        let password = match &valid.password {
            Some(source) => Some(password::read_password(&self.client, source).await?),
            None => None,
        };
        let key = match &valid.key {
            Some(source) => Some((source, password::read_key(&self.client, source).await?)),
            None => None,
        };
        let version = SignerVersion {
            uid: issuer.uid().unwrap_or_default(),
            generation: issuer.meta().generation.unwrap_or_default(),
            password_version: [
                password.as_ref().map(|p| p.version.as_str()),
                key.as_ref().map(|(_, k)| k.version.as_str()),
            ]
            .iter()
            .flatten()
            .copied()
            .collect::<Vec<_>>()
            .join(";key:"),
        };
        let timeout = self.ca_timeout;
        // The deny-list guards against tenants' URLs; the admin's StepClusterIssuers may point
        // anywhere, a step-ca on the node or behind a link-local address included.
        let forbidden = match K::AUDIENCE {
            Audience::Tenant => self.forbidden_ca_cidrs.clone(),
            Audience::Admin => ForbiddenRanges::default(),
        };
        let password = password.as_ref().map(|p| p.bytes.as_slice());
        self.signers
            .get_or_connect(&issuer.key(), version, || async {
                let started = Instant::now();
                let result = connect(&valid, key.as_ref(), password, timeout, &forbidden).await;
                self.metrics
                    .observe_ca("connect", result.is_ok(), started.elapsed().as_secs_f64());
                result
            })
            .await
    }

    /// The signer for `issuer`, read from the API just now, for a role that has no issuer
    /// reconciler re-checking its password (the webhook's `/bootstrap`). A warm call reads
    /// nothing: the cached signer serves while the issuer's uid and generation are unchanged and
    /// its password was read less than `password_max_age` ago. After that, [`Self::signer_for`]
    /// reads the password again, as the controller's periodic re-check does, and connects anew
    /// if it changed; so a new password Secret is in use within `password_max_age`.
    pub async fn signer_with_recheck<K: IssuerObject>(
        &self,
        issuer: &K,
        password_max_age: Duration,
    ) -> Result<(Signer, bool), IssuerError> {
        let cached = self.signers.current_confirmed_within(
            &issuer.key(),
            &issuer.uid().unwrap_or_default(),
            issuer.meta().generation.unwrap_or_default(),
            password_max_age,
        );
        match cached {
            Some(signer) => Ok((signer, false)),
            None => self.signer_for(issuer).await,
        }
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

/// Connects a signer for a validated spec: with the key from `keyRef` when there is one (the
/// CA's encrypted-key endpoint is then never used), else with the key step-ca serves.
async fn connect(
    valid: &spec::ValidIssuer,
    key: Option<&(&spec::KeySource, password::Password)>,
    password: Option<&[u8]>,
    timeout: Duration,
    forbidden: &ForbiddenRanges,
) -> Result<Signer, IssuerError> {
    let mut client = StepClient::with_forbidden(
        &valid.url,
        valid.ca_bundle_pem.as_deref(),
        timeout,
        forbidden,
    )?;
    if let Some(host) = &valid.audience_host {
        client = client
            .with_audience(host)
            .map_err(|e| IssuerError::InvalidSpec(format!("spec.audienceHost: {e}")))?;
    }
    let Some((source, material)) = key else {
        let password = password.unwrap_or_default();
        return Ok(Signer::connect_with_client(
            client,
            &valid.provisioner_name,
            valid.kid.as_deref(),
            password,
        )
        .await?);
    };
    let key = crate::step::key_material::provisioner_key_from_material(&material.bytes, password)
        .map_err(|e| IssuerError::InvalidKey {
        namespace: source.namespace.clone(),
        name: source.name.clone(),
        detail: e.to_string(),
    })?;
    Ok(Signer::connect_with_key(client, &valid.provisioner_name, key).await?)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Request, Response};
    use k8s_openapi::api::core::v1::Secret;
    use kube::client::Body;

    use super::*;
    use crate::crd::{PasswordRef, Provisioner, StepClusterIssuerSpec};
    use crate::step::fake_ca::FakeCa;

    const HOUR: Duration = Duration::from_secs(3600);

    fn issuer(ca: &FakeCa) -> StepClusterIssuer {
        let mut issuer = StepClusterIssuer::new(
            "ca",
            StepClusterIssuerSpec {
                url: ca.url.clone(),
                ca_bundle: Some(k8s_openapi::ByteString(ca.certs.root_pem.clone().into())),
                provisioner: Provisioner {
                    name: "admin".into(),
                    kid: Some(ca.kid.clone()),
                    password_ref: Some(PasswordRef {
                        name: "pw".into(),
                        key: Some("password".into()),
                        namespace: None,
                    }),
                    ..Default::default()
                },
                policy: None,
                ..Default::default()
            },
        );
        issuer.metadata.uid = Some("uid-1".into());
        issuer.metadata.generation = Some(1);
        issuer
    }

    /// An apiserver that serves the password Secret at `version` and counts the reads.
    fn api(
        version: Arc<std::sync::Mutex<&'static str>>,
        reads: Arc<AtomicUsize>,
    ) -> (Client, tokio::task::JoinHandle<()>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                assert_eq!(
                    req.uri().path(),
                    "/api/v1/namespaces/step-operator/secrets/pw"
                );
                reads.fetch_add(1, Ordering::SeqCst);
                let mut secret = Secret::default();
                secret.metadata.name = Some("pw".into());
                secret.metadata.resource_version = Some((*version.lock().unwrap()).to_owned());
                secret.data = Some(
                    [(
                        "password".to_owned(),
                        k8s_openapi::ByteString(FakeCa::PASSWORD.to_vec()),
                    )]
                    .into(),
                );
                let body = serde_json::to_vec(&secret).unwrap();
                send.send_response(Response::builder().body(Body::from(body)).unwrap());
            }
        });
        (Client::new(service, "default"), server)
    }

    /// A warm `/bootstrap` reads no Secret while the issuer's uid and generation are unchanged
    /// and its password was read recently; once the password is due, it is read again, and a
    /// changed Secret brings a new signer, as the controller's re-check does.
    #[tokio::test]
    async fn a_warm_signer_reads_the_password_only_when_it_is_due() {
        let ca = FakeCa::start().await;
        let version = Arc::new(std::sync::Mutex::new("1"));
        let reads = Arc::new(AtomicUsize::new(0));
        let (client, server) = api(version.clone(), reads.clone());
        let access = IssuerAccess {
            client,
            metrics: Default::default(),
            signers: Default::default(),
            cluster_resource_namespace: "step-operator".into(),
            ca_timeout: Duration::from_secs(5),
            forbidden_ca_cidrs: Default::default(),
        };
        let mut issuer = issuer(&ca);
        let call = async |issuer: &StepClusterIssuer, max_age| {
            let (_, fresh) = access.signer_with_recheck(issuer, max_age).await.unwrap();
            (reads.load(Ordering::SeqCst), fresh)
        };
        // (password read so far, connected anew)
        assert_eq!(
            call(&issuer, HOUR).await,
            (1, true),
            "cold: read and connect"
        );
        assert_eq!(call(&issuer, HOUR).await, (1, false), "warm: nothing read");
        assert_eq!(
            call(&issuer, Duration::ZERO).await,
            (2, false),
            "due: read, unchanged"
        );
        *version.lock().unwrap() = "2";
        assert_eq!(
            call(&issuer, HOUR).await,
            (2, false),
            "not due yet: old signer"
        );
        assert_eq!(
            call(&issuer, Duration::ZERO).await,
            (3, true),
            "due: new password"
        );
        assert_eq!(call(&issuer, HOUR).await, (3, false), "warm again");
        issuer.metadata.generation = Some(2);
        assert_eq!(
            call(&issuer, HOUR).await,
            (4, true),
            "a new spec is never cached"
        );
        drop(access);
        server.await.unwrap();
    }
}

#[cfg(test)]
mod signer_name_tests {
    use super::*;

    #[test]
    fn signer_names_round_trip_and_refuse_what_is_not_ours() {
        let cluster = IssuerKey::Cluster { name: "ca".into() };
        let team = IssuerKey::Namespaced {
            namespace: "team".into(),
            name: "ca.v2".into(),
        };
        assert_eq!(
            cluster.signer_name(),
            "stepclusterissuers.certmanager.step.sm/ca"
        );
        assert_eq!(
            team.signer_name(),
            "stepissuers.certmanager.step.sm/team.ca.v2"
        );
        for key in [&cluster, &team] {
            assert_eq!(
                IssuerKey::from_signer_name(&key.signer_name()).as_ref(),
                Some(key)
            );
        }
        for other in [
            "kubernetes.io/kube-apiserver-client-pod",
            "stepclusterissuers.certmanager.step.sm/",
            "stepclusterissuers.certmanager.step.sm/a/b",
            "stepissuers.certmanager.step.sm/no-dot",
            "stepissuers.certmanager.step.sm/.ca",
            "stepissuers.certmanager.step.sm/team.",
            "clusterissuers.cert-manager.io/ca",
            "stepclusterissuers.certmanager.step.sm",
        ] {
            assert_eq!(IssuerKey::from_signer_name(other), None, "{other}");
        }
    }
}
