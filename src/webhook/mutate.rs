//! Pod mutation: the pure heart of `/mutate`.
//!
//! [`mutate`] turns a Pod that asks for a certificate (`autocert.step.sm/name`) into a JSON Patch
//! that adds:
//!
//! - the init container `autocert-bootstrapper` (args `["bootstrap"]`): first in `initContainers`
//!   with `autocert.step.sm/init-first: "true"`, otherwise after the pod's own init containers;
//! - right after it, unless `autocert.step.sm/bootstrapper-only: "true"`, the native sidecar
//!   `autocert-renewer` (an init container with `restartPolicy: Always`, args `["renew"]`), so it
//!   starts once the files exist and never blocks a Job from completing;
//! - the volumes `certs` (in-memory emptyDir) and `step-operator-token` (a projected
//!   ServiceAccount token for audience `step-operator`, refreshed by the kubelet);
//! - a read-only mount of `certs` at `/var/run/autocert.step.sm` in every app container
//!   (`spec.containers`; the pod's own init containers run before the files exist);
//! - a restricted securityContext and small resources on both injected containers;
//! - the annotation `autocert.step.sm/status: injected`.
//!
//! In `/var/run/autocert.step.sm/` the agents write `site.crt` (leaf and intermediates) and
//! `root.crt` with mode 0644, and `site.key` with `autocert.step.sm/mode` (default 0600), all owned
//! by `autocert.step.sm/owner` when given (the injected containers then run as that uid/gid).
//! Without an owner they run as uid 65532, so an app running as another non-root user must set
//! `owner` (or a mode such as 0640 together with a matching group) to read the key.
//!
//! Here are the checks (annotations, names, issuer policy, conflicts); the patch itself is built
//! in [`super::patch`]. [`review`] wraps [`mutate`] in the `admission.k8s.io/v1` AdmissionReview
//! protocol and returns a [`ReviewOutcome`], which the server renders as HTTP.

use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use kube::core::TypeMeta;
use kube::core::admission::AdmissionResponse;

pub use super::admission::ADMISSION_V1;
use super::admission::{self, ADMISSION_REVIEW};
use super::annotations::{self, STATUS, STATUS_INJECTED};
pub use super::config::{InjectConfig, TOKEN_EXPIRATION_SECONDS, default_resources};
use super::patch;
pub use super::patch::{BOOTSTRAPPER, CERTS_VOLUME, DEFAULT_UID, RENEWER, TOKEN_VOLUME};
use super::pod_names;
use super::pod_view::{PodView, SpecView};
pub use crate::pod_protocol::{CERTS_DIR, TOKEN_DIR, TOKEN_FILE, TOKEN_PATH};
use crate::pod_template::Identity;
use crate::policy::{InvalidPolicy, IssuerPolicy, Requester};

/// Largest AdmissionReview body [`review`] accepts. The apiserver refuses requests over 3 MiB,
/// and etcd objects over 1.5 MiB (protobuf); the JSON of such a Pod, grown by defaulting and
/// earlier webhooks and wrapped in the review, stays well under this. Reading it costs about
/// twice its size (body, then the few bytes per container [`PodView`] keeps).
pub const MAX_REVIEW_BYTES: usize = 6 * 1024 * 1024;
/// A pod that asks for a certificate gets one patch operation per container; more containers
/// than this (no real pod has that many) are refused so that the patch stays small.
pub const MAX_PATCHED_CONTAINERS: usize = 1000;

/// What to do with a Pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    /// Nothing: the pod does not ask for a certificate, or was already injected.
    Skip,
    /// Apply this patch.
    Patch(Patch),
}

/// Why a Pod is refused. The message starts with `autocert.step.sm: ` and says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    pub message: String,
}

impl Denial {
    fn new(reason: impl std::fmt::Display) -> Self {
        Self {
            message: format!("autocert.step.sm: {reason}"),
        }
    }
}

fn check_conflicts(spec: &SpecView) -> Result<(), Denial> {
    let containers = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .chain(&spec.ephemeral_containers);
    if let Some(name) = containers
        .filter_map(|c| c.name.0)
        .next()
        .map(|r| r.as_str())
    {
        return Err(Denial::new(format!(
            "the pod already has a container named {name:?} but no {STATUS}: {STATUS_INJECTED} \
             annotation: rename that container (step-operator injects its own {name:?})"
        )));
    }
    if let Some(name) = spec.volumes.reserved.0.map(|r| r.as_str()) {
        return Err(Denial::new(format!(
            "the pod already has a volume named {name:?} but no {STATUS}: {STATUS_INJECTED} \
             annotation: rename that volume (step-operator injects its own {name:?})"
        )));
    }
    let count = spec.containers.len() + spec.init_containers.len();
    if count > MAX_PATCHED_CONTAINERS {
        return Err(Denial::new(format!(
            "the pod has {count} containers and init containers; step-operator injects into pods \
             with at most {MAX_PATCHED_CONTAINERS}: split the pod or remove the annotations"
        )));
    }
    Ok(())
}

/// What admission knows of the StepClusterIssuers' `spec.policy` (the webhook's cache of them).
pub trait IssuerPolicies {
    /// `None`: the issuer is not known (yet). The webhook's own policy then applies at
    /// admission, and `/bootstrap` decides with the issuer's when the pod starts.
    fn policy_of(&self, issuer: &str) -> Option<Result<IssuerPolicy, InvalidPolicy>>;
}

/// No issuer is known: only the webhook's own policy applies.
pub struct NoIssuers;

impl IssuerPolicies for NoIssuers {
    fn policy_of(&self, _issuer: &str) -> Option<Result<IssuerPolicy, InvalidPolicy>> {
        None
    }
}

/// The same checks as `/bootstrap`'s, as far as admission knows the pod's issuer and names:
/// templates are expanded with stand-ins for the generated name and the IP
/// ([`pod_names::for_admission`]).
fn check_names(
    req: &annotations::PodRequest,
    pod: &PodView,
    (namespace, service_account): (&str, &str),
    cfg: &InjectConfig,
    issuers: &dyn IssuerPolicies,
) -> Result<(), Denial> {
    let issuer = req.issuer.as_deref().unwrap_or(&cfg.default_issuer);
    let requester = Requester::Pod {
        namespace,
        service_account,
    };
    let identity = Identity {
        pod_name: pod.metadata.name.as_deref(),
        namespace: Some(namespace),
        service_account: Some(service_account),
        pod_uid: None,
        pod_ip: None,
    };
    let expanded = pod_names::for_admission(req, &identity, pod.metadata.generate_name.as_deref())
        .map_err(|e| {
            Denial::new(format!(
                "{} or {}: {e}",
                annotations::NAME,
                annotations::SANS
            ))
        })?;
    let names = expanded.to_check();
    match issuers.policy_of(issuer) {
        None => {
            for name in names {
                cfg.policy.check_for(requester, name).map_err(Denial::new)?;
            }
            Ok(())
        }
        Some(Err(e)) => Err(Denial::new(format!(
            "StepClusterIssuer {issuer} has an unusable spec.policy ({e}); ask the cluster administrators to fix it"
        ))),
        Some(Ok(policy)) => {
            let wider = policy.name_policy(&cfg.policy);
            crate::policy::issuer::check(
                &format!("StepClusterIssuer {issuer}"),
                &policy,
                &wider,
                requester,
                names,
            )
            .map_err(Denial::new)
        }
    }
}

/// Decides what to do with `pod`, created in `namespace`. Pure: no I/O.
pub fn mutate(pod: &Pod, namespace: &str, cfg: &InjectConfig) -> Result<Mutation, Denial> {
    mutate_view(&PodView::of(pod), namespace, cfg, &NoIssuers)
}

/// [`mutate`] on the facts [`PodView`] keeps of the Pod, with the policies of the issuers the
/// webhook knows: a pod that names an issuer its namespace may not use, or a name that issuer
/// refuses, is denied at `kubectl apply` rather than when its bootstrapper runs.
pub fn mutate_view(
    pod: &PodView,
    namespace: &str,
    cfg: &InjectConfig,
    issuers: &dyn IssuerPolicies,
) -> Result<Mutation, Denial> {
    let ann = &pod.metadata.annotations.0;
    if ann.get(STATUS).map(String::as_str) == Some(STATUS_INJECTED) {
        return Ok(Mutation::Skip);
    }
    let Some(req) = annotations::parse(ann).map_err(Denial::new)? else {
        return Ok(Mutation::Skip);
    };
    // Built-in admission (the ServiceAccount plugin) has filled this in before webhooks run.
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    check_names(&req, pod, (namespace, service_account), cfg, issuers)?;
    let Some(spec) = pod.spec.as_ref() else {
        return Err(Denial::new("the pod has no spec"));
    };
    check_conflicts(spec)?;
    if req.reload.is_some() && spec.share_process_namespace != Some(true) {
        return Err(Denial::new(format!(
            "{} needs the renewer to see the app's processes: set spec.shareProcessNamespace: true on the pod (or remove {} and {})",
            annotations::RELOAD_SIGNAL,
            annotations::RELOAD_SIGNAL,
            annotations::RELOAD_PROCESS
        )));
    }
    let patch = patch::build(&req, spec, cfg).map_err(Denial::new)?;
    Ok(Mutation::Patch(patch))
}

/// What `/mutate` answers to one body, before it is encoded: the server renders it as HTTP
/// (`server::render`), so this module knows nothing of status codes.
#[derive(Debug)]
pub enum ReviewOutcome {
    /// An `admission.k8s.io/v1` AdmissionReview answer with the request's `uid`: allowed,
    /// allowed with a `JSONPatch`, or denied (`status.code` 403 and the [`Denial`] message).
    Answer(Box<AdmissionResponse>),
    /// No AdmissionReview can be answered; `message` says why and what to fix.
    BadRequest {
        problem: BadRequest,
        message: String,
    },
}

/// Why a body gets no AdmissionReview answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// Larger than [`MAX_REVIEW_BYTES`].
    TooLarge,
    /// Not JSON, truncated, not an `admission.k8s.io/v1` AdmissionReview, or no `request`.
    Malformed,
}

/// Handles one AdmissionReview body.
///
/// - Not JSON, truncated, too large, not an `admission.k8s.io/v1` AdmissionReview, or no
///   `request`: [`ReviewOutcome::BadRequest`].
/// - Not a Pod CREATE: allowed, no patch (the object is not even parsed).
/// - Otherwise [`mutate_view`]: allowed with a `JSONPatch`, allowed without one
///   ([`Mutation::Skip`]), or denied with `status.code` 403 and the [`Denial`] message.
///
/// Reading costs a small fraction of the body's size on top of it (see [`admission`] and
/// [`PodView`]). The request's uid, namespace and name are recorded in the current span.
pub fn review(body: &[u8], cfg: &InjectConfig) -> ReviewOutcome {
    review_with(body, cfg, &NoIssuers)
}

/// [`review`] with the issuers' policies (see [`mutate_view`]).
pub fn review_with(body: &[u8], cfg: &InjectConfig, issuers: &dyn IssuerPolicies) -> ReviewOutcome {
    if body.len() > MAX_REVIEW_BYTES {
        return ReviewOutcome::BadRequest {
            problem: BadRequest::TooLarge,
            message: format!("AdmissionReview body is larger than {MAX_REVIEW_BYTES} bytes"),
        };
    }
    let req = match admission::read(body) {
        Ok(r) => r,
        Err(e) => {
            return ReviewOutcome::BadRequest {
                problem: BadRequest::Malformed,
                message: e.0,
            };
        }
    };
    req.record_in(&tracing::Span::current());
    let mut response = AdmissionResponse::invalid("");
    response.types = TypeMeta {
        api_version: ADMISSION_V1.to_owned(),
        kind: ADMISSION_REVIEW.to_owned(),
    };
    response.uid = req.uid.clone();
    response.allowed = true;
    response.result = Default::default();
    if !req.is_pod_create() {
        return ReviewOutcome::Answer(Box::new(response));
    }
    let (decision, warnings) = mutate_request(&req, cfg, issuers);
    if !warnings.is_empty() {
        // The pod's author sees them at `kubectl apply`; the platform team sees them here, in the
        // review's span (namespace, pod), even for pods created by controllers.
        for warning in &warnings {
            tracing::info!(warning = %warning, "Pod admitted with a warning");
        }
        response.warnings = Some(warnings);
    }
    let answer = match decision {
        Ok(Mutation::Skip) => Ok(response.clone()),
        Ok(Mutation::Patch(patch)) => response
            .clone()
            .with_patch(patch)
            .map_err(|e| Denial::new(format!("internal error: {e}"))),
        Err(denial) => Err(denial),
    };
    ReviewOutcome::Answer(Box::new(answer.unwrap_or_else(|denial| {
        let mut denied = response.deny(denial.message);
        denied.result.code = 403;
        denied.result.reason = "Forbidden".to_owned();
        denied
    })))
}

/// What `kubectl apply` should print for a pod that is admitted all the same (see
/// [`annotations::warnings`]). A pod already injected gets none: it was warned at its creation.
pub fn warnings_view(pod: &PodView) -> Vec<String> {
    let ann = &pod.metadata.annotations.0;
    if ann.get(STATUS).map(String::as_str) == Some(STATUS_INJECTED) {
        return Vec::new();
    }
    let mut out = annotations::warnings(ann);
    if ann.contains_key(annotations::RELOAD_SIGNAL) && !ann.contains_key(annotations::OWNER) {
        out.push(format!(
            "{}: the renewer runs as uid {DEFAULT_UID} and can only signal processes of that uid: set {} to the app's uid:gid",
            annotations::RELOAD_SIGNAL,
            annotations::OWNER
        ));
    }
    out
}

/// [`mutate_view`] and [`warnings_view`] on the Pod a CREATE request carries, in the request's
/// namespace (or the Pod's own).
fn mutate_request(
    req: &admission::Request<'_>,
    cfg: &InjectConfig,
    issuers: &dyn IssuerPolicies,
) -> (Result<Mutation, Denial>, Vec<String>) {
    let Some(object) = req.object else {
        return (
            Err(Denial::new("the admission request carries no Pod")),
            Vec::new(),
        );
    };
    let pod: PodView = match serde_json::from_str(object.get()) {
        Ok(pod) => pod,
        Err(e) => {
            return (
                Err(Denial::new(format!("cannot read the Pod: {e}"))),
                Vec::new(),
            );
        }
    };
    let warnings = warnings_view(&pod);
    (decide_in_namespace(req, &pod, cfg, issuers), warnings)
}

fn decide_in_namespace(
    req: &admission::Request<'_>,
    pod: &PodView,
    cfg: &InjectConfig,
    issuers: &dyn IssuerPolicies,
) -> Result<Mutation, Denial> {
    let namespace = req
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    if namespace.is_empty() {
        return Err(Denial::new("the admission request has no namespace"));
    }
    mutate_view(pod, &namespace, cfg, issuers)
}

#[cfg(test)]
#[path = "mutate_tests.rs"]
mod tests;
