//! State shared by the reconcilers: API clients, Events, settings, and the issuers' status writes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use crate::controller::issuer_policy;
use crate::crd::IssuerStatus;
use crate::issuer::{IssuerAccess, IssuerObject};
use crate::metrics::Metrics;
use crate::policy::{IssuerPolicy, NamePolicy, WithoutPolicy};

/// Field manager of every write step-operator's controller makes.
pub const FIELD_MANAGER: &str = "step-operator";

#[derive(Clone, Debug)]
pub struct Settings {
    pub cluster_resource_namespace: String,
    /// `--max-retry-duration`, and when this controller began to act.
    pub retry_budget: crate::controller::decision::RetryBudget,
    pub issuer_recheck_interval: Duration,
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
    /// Whether each StepClusterIssuer's roots are published as a ClusterTrustBundle.
    pub trust_bundles: bool,
    /// Whether CertificateRequests are watched with the `spec.issuerRef.group` field selector
    /// where the apiserver serves it (`--select-requests`).
    pub select_requests: bool,
}

pub struct Context {
    /// For calls: each read times out (`--kube-timeout`).
    pub client: Client,
    /// For watches: no read timeout (see [`crate::kube_client`]).
    pub watch_client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Signers of the issuers, and how to connect them.
    pub issuers: IssuerAccess,
    pub settings: Settings,
}

impl Context {
    /// Publishes an Event; failures are logged, never fatal (Events are best effort).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        self.event_for(&obj.object_ref(&()), type_, reason, note, action)
            .await;
    }

    /// Publishes an Event about an object given by reference (a pod named in a request).
    pub async fn event_for(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(crate::crd::condition::bounded_message(&note)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
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
        apply_status(&api, &issuer.name_any(), status).await
    }
}

/// Server-side applies `status` on an object's `/status` with our field manager, forcing our
/// fields: the one status writer of every controller.
pub async fn apply_status<K>(
    api: &kube::Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    apply_status_if(api, name, None, status).await
}

/// [`apply_status`], refused with 409 Conflict when the object is no longer at
/// `resource_version` (when given): for a write decided on a fresh read, which nothing else may
/// have overtaken (another controller's certificate must never be overwritten by ours).
pub async fn apply_status_if<K>(
    api: &kube::Api<K>,
    name: &str,
    resource_version: Option<&str>,
    status: &impl serde::Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(rv) = resource_version {
        patch["metadata"] = serde_json::json!({"resourceVersion": rv});
    }
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
