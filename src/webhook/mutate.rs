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
//! [`review`] wraps [`mutate`] in the `admission.k8s.io/v1` AdmissionReview protocol.

use std::collections::BTreeMap;
use std::time::Duration;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::TypeMeta;
use kube::core::admission::AdmissionResponse;
use serde_json::{Value, json};

pub use super::admission::ADMISSION_V1;
use super::admission::{self, ADMISSION_REVIEW};
use super::annotations::{self, STATUS, STATUS_INJECTED};
use super::pod_view::{ContainerView, PodView, SpecView};
use crate::pod_protocol::env as ENV;
pub use crate::pod_protocol::{CERTS_DIR, TOKEN_DIR, TOKEN_FILE, TOKEN_PATH};
use crate::policy::{InvalidPolicy, IssuerPolicy, NamePolicy, Requester};

/// Name of the injected init container.
pub const BOOTSTRAPPER: &str = "autocert-bootstrapper";
/// Name of the injected native sidecar.
pub const RENEWER: &str = "autocert-renewer";
/// Name of the volume holding the certificate files.
pub const CERTS_VOLUME: &str = "certs";
/// Name of the projected ServiceAccount token volume.
pub const TOKEN_VOLUME: &str = "step-operator-token";
/// Default uid (and gid) of the injected containers when no owner is given (distroless `nonroot`).
pub const DEFAULT_UID: i64 = 65532;
/// Largest AdmissionReview body [`review`] accepts. The apiserver refuses requests over 3 MiB,
/// and etcd objects over 1.5 MiB (protobuf); the JSON of such a Pod, grown by defaulting and
/// earlier webhooks and wrapped in the review, stays well under this. Reading it costs about
/// twice its size (body, then the few bytes per container [`PodView`] keeps).
pub const MAX_REVIEW_BYTES: usize = 6 * 1024 * 1024;
/// A pod that asks for a certificate gets one patch operation per container; more containers
/// than this (no real pod has that many) are refused so that the patch stays small.
pub const MAX_PATCHED_CONTAINERS: usize = 1000;

/// Everything [`mutate`] needs besides the Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectConfig {
    /// Image of the injected containers (step-operator itself).
    pub image: String,
    /// `imagePullPolicy` of the injected containers (`None`: the Kubernetes default).
    pub image_pull_policy: Option<String>,
    /// Base URL of the webhook Service; the bootstrapper POSTs `<webhook_url>/bootstrap`.
    pub webhook_url: String,
    /// step-ca URL, passed as `STEP_CA_URL` when not empty so the renewer can reach the CA even
    /// when the webhook is down. The bootstrapper also gets it (and the root) from `/bootstrap`.
    pub ca_url: String,
    /// `StepClusterIssuer` used when the pod has no `autocert.step.sm/issuer`.
    pub default_issuer: String,
    /// Lifetime used when the pod has no `autocert.step.sm/duration` (`None`: the CA decides).
    pub default_duration: Option<Duration>,
    /// Audience of the projected ServiceAccount token (`step-operator`).
    pub token_audience: String,
    /// Lifetime of the projected token; Kubernetes requires at least 600.
    pub token_expiration_seconds: i64,
    /// Which names a pod may ask for (with the cluster DNS domain).
    pub policy: NamePolicy,
    /// Resources of each injected container.
    pub resources: ResourceRequirements,
    /// PEM root the injected agent trusts for the webhook's TLS (`STEP_OPERATOR_BOOTSTRAP_CA`).
    pub bootstrap_ca_pem: Option<String>,
}

/// Lifetime of the injected projected token: the shortest Kubernetes allows (the kubelet
/// refreshes it long before it expires).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;

impl InjectConfig {
    /// A configuration with the defaults, for tests and tools: audience `step-operator`, 600 s
    /// tokens, cluster domain `cluster.local` with the default name policy,
    /// [`default_resources`]. The webhook builds its own from its flags, in
    /// [`super::config::from_args`].
    pub fn new(image: &str, webhook_url: &str, ca_url: &str, default_issuer: &str) -> Self {
        Self {
            image: image.to_owned(),
            image_pull_policy: None,
            webhook_url: webhook_url.to_owned(),
            ca_url: ca_url.to_owned(),
            default_issuer: default_issuer.to_owned(),
            default_duration: None,
            token_audience: "step-operator".to_owned(),
            token_expiration_seconds: TOKEN_EXPIRATION_SECONDS,
            policy: NamePolicy::default(),
            resources: default_resources(),
            bootstrap_ca_pem: None,
        }
    }
}

/// Requests cpu 10m / memory 16Mi, limits memory 64Mi.
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("10m")),
            ("memory".to_owned(), q("16Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("64Mi"))])),
        ..ResourceRequirements::default()
    }
}

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

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: ptr(tokens),
        value,
    })
}

fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<Value, Denial> {
    serde_json::to_value(value)
        .map_err(|e| Denial::new(format!("internal error: cannot serialize the {what}: {e}")))
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn injected_env(req: &annotations::PodRequest, cfg: &InjectConfig) -> Vec<EnvVar> {
    // The base URL of the webhook; the agent POSTs `<it>/bootstrap`.
    let mut out = vec![env(
        ENV::BOOTSTRAP_URL,
        cfg.webhook_url.trim_end_matches('/').to_string(),
    )];
    if let Some(root) = &cfg.bootstrap_ca_pem {
        // The webhook's serving certificate comes from step-ca: the agent trusts this root.
        out.push(env(ENV::BOOTSTRAP_CA, root.clone()));
    }
    if !cfg.ca_url.is_empty() {
        out.push(env(ENV::CA_URL, cfg.ca_url.clone()));
    }
    out.push(env(ENV::NAME, req.name.clone()));
    out.push(env(ENV::SANS, req.sans.join(",")));
    if let Some(d) = req.duration.or(cfg.default_duration) {
        out.push(env(ENV::DURATION, crate::duration::format_go_duration(d)));
    }
    if let Some((uid, gid)) = req.owner {
        out.push(env(ENV::OWNER, format!("{uid}:{gid}")));
    }
    out.push(env(
        ENV::MODE,
        format!("{:04o}", req.mode.unwrap_or(annotations::DEFAULT_KEY_MODE)),
    ));
    out.push(env(
        ENV::ISSUER,
        req.issuer
            .clone()
            .unwrap_or_else(|| cfg.default_issuer.clone()),
    ));
    out.push(env(ENV::CERTS_DIR, CERTS_DIR));
    out.push(env(ENV::TOKEN_PATH, TOKEN_PATH));
    out.push(env_field("POD_NAME", "metadata.name"));
    out.push(env_field("POD_NAMESPACE", "metadata.namespace"));
    out.push(env_field("POD_UID", "metadata.uid"));
    out
}

fn security_context(owner: Option<(u32, u32)>) -> SecurityContext {
    let (uid, gid) = match owner {
        Some((uid, gid)) => (i64::from(uid), Some(i64::from(gid))),
        None => (DEFAULT_UID, None),
    };
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: gid,
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

fn injected_container(
    name: &str,
    arg: &str,
    sidecar: bool,
    req: &annotations::PodRequest,
    cfg: &InjectConfig,
) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(vec![arg.to_owned()]),
        env: Some(injected_env(req, cfg)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: CERTS_VOLUME.to_owned(),
                mount_path: CERTS_DIR.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: TOKEN_VOLUME.to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        restart_policy: sidecar.then(|| "Always".to_owned()),
        security_context: Some(security_context(req.owner)),
        resources: Some(cfg.resources.clone()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

fn injected_volumes(cfg: &InjectConfig) -> [Volume; 2] {
    [
        Volume {
            name: CERTS_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(cfg.token_audience.clone()),
                        expiration_seconds: Some(cfg.token_expiration_seconds),
                        path: TOKEN_FILE.to_owned(),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
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

/// The same checks as `/bootstrap`'s, as far as admission knows the pod's issuer.
fn check_names(
    req: &annotations::PodRequest,
    namespace: &str,
    service_account: &str,
    cfg: &InjectConfig,
    issuers: &dyn IssuerPolicies,
) -> Result<(), Denial> {
    let issuer = req.issuer.as_deref().unwrap_or(&cfg.default_issuer);
    let requester = Requester::Pod {
        namespace,
        service_account,
    };
    let names = std::iter::once(req.name.as_str()).chain(req.sans.iter().map(String::as_str));
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
    check_names(&req, namespace, service_account, cfg, issuers)?;
    let Some(spec) = pod.spec.as_ref() else {
        return Err(Denial::new("the pod has no spec"));
    };
    check_conflicts(spec)?;

    let mut ops = Vec::new();

    // Init containers: bootstrapper, then (unless bootstrapper-only) the renewer right after it.
    let mut injected = vec![to_json(
        "bootstrapper",
        &injected_container(BOOTSTRAPPER, "bootstrap", false, &req, cfg),
    )?];
    if !req.bootstrapper_only {
        injected.push(to_json(
            "renewer",
            &injected_container(RENEWER, "renew", true, &req, cfg),
        )?);
    }
    let has_init = !spec.init_containers.is_empty();
    if !has_init {
        ops.push(add(&["spec", "initContainers"], Value::Array(injected)));
    } else if req.init_first {
        for (i, c) in injected.into_iter().enumerate() {
            ops.push(add(&["spec", "initContainers", &i.to_string()], c));
        }
    } else {
        for c in injected {
            ops.push(add(&["spec", "initContainers", "-"], c));
        }
    }

    // Volumes.
    let volumes = injected_volumes(cfg)
        .iter()
        .map(|v| to_json("volume", v))
        .collect::<Result<Vec<_>, _>>()?;
    if spec.volumes.any {
        for v in volumes {
            ops.push(add(&["spec", "volumes", "-"], v));
        }
    } else {
        ops.push(add(&["spec", "volumes"], Value::Array(volumes)));
    }

    // Read-only mount in every app container that does not already use the path; with
    // init-first also in the pod's own init containers, which then run after the bootstrapper
    // and can use the files (as autocert does). They come after the injected ones by now.
    let mount = to_json(
        "volume mount",
        &VolumeMount {
            name: CERTS_VOLUME.to_owned(),
            mount_path: CERTS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )?;
    mount_ops(&mut ops, "containers", &spec.containers, 0, &mount);
    if req.init_first {
        let injected_count = if req.bootstrapper_only { 1 } else { 2 };
        let own = &spec.init_containers;
        mount_ops(&mut ops, "initContainers", own, injected_count, &mount);
    }

    // Status annotation. The annotations map exists: the pod has the name annotation.
    ops.push(add(
        &["metadata", "annotations", STATUS],
        Value::String(STATUS_INJECTED.to_owned()),
    ));

    Ok(Mutation::Patch(Patch(ops)))
}

/// Adds `mount` to each of `containers` (at `spec.<field>[offset + i]`) that does not already
/// mount something at the certificates' path.
fn mount_ops(
    ops: &mut Vec<PatchOperation>,
    field: &str,
    containers: &[ContainerView],
    offset: usize,
    mount: &Value,
) {
    for (i, c) in containers.iter().enumerate() {
        if c.volume_mounts.at_certs_dir {
            continue;
        }
        let index = (offset + i).to_string();
        if !c.volume_mounts.any {
            ops.push(add(
                &["spec", field, &index, "volumeMounts"],
                Value::Array(vec![mount.clone()]),
            ));
        } else {
            ops.push(add(
                &["spec", field, &index, "volumeMounts", "-"],
                mount.clone(),
            ));
        }
    }
}

fn error_body(code: u16, reason: &str, message: &str) -> (u16, Vec<u8>) {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    });
    (code, serde_json::to_vec(&body).unwrap_or_default())
}

fn bad_request(message: &str) -> (u16, Vec<u8>) {
    error_body(400, "BadRequest", message)
}

/// Serializes the answer. kube serializes `response.patch` (a `Vec<u8>`) as an array of numbers;
/// the canonical form (what Go's `[]byte` produces) is a base64 string, so it is rewritten here.
fn respond(response: AdmissionResponse) -> (u16, Vec<u8>) {
    use base64::Engine as _;
    let patch = response
        .patch
        .as_deref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let mut review = match serde_json::to_value(response.into_review()) {
        Ok(v) => v,
        Err(e) => {
            return error_body(
                500,
                "InternalError",
                &format!("cannot serialize the AdmissionReview response: {e}"),
            );
        }
    };
    if let (Some(patch), Some(resp)) = (
        patch,
        review.get_mut("response").and_then(Value::as_object_mut),
    ) {
        resp.insert("patch".to_owned(), Value::String(patch));
    }
    match serde_json::to_vec(&review) {
        Ok(body) => (200, body),
        Err(e) => error_body(
            500,
            "InternalError",
            &format!("cannot serialize the AdmissionReview response: {e}"),
        ),
    }
}

/// Handles one AdmissionReview body: returns the HTTP status and the JSON body to send.
///
/// - Not JSON, truncated, too large, not an `admission.k8s.io/v1` AdmissionReview, or no
///   `request`: HTTP 400 (413 when too large) with a `Status`-shaped JSON error.
/// - Not a Pod CREATE: allowed, no patch (the object is not even parsed).
/// - Otherwise [`mutate_view`]: allowed with a `JSONPatch`, allowed without one
///   ([`Mutation::Skip`]), or denied with `status.code` 403 and the [`Denial`] message.
///
/// The response is an `admission.k8s.io/v1` AdmissionReview with the request's `uid`. Reading
/// costs a small fraction of the body's size on top of it (see [`admission`] and [`PodView`]).
pub fn review(body: &[u8], cfg: &InjectConfig) -> (u16, Vec<u8>) {
    review_with(body, cfg, &NoIssuers)
}

/// [`review`] with the issuers' policies (see [`mutate_view`]).
pub fn review_with(
    body: &[u8],
    cfg: &InjectConfig,
    issuers: &dyn IssuerPolicies,
) -> (u16, Vec<u8>) {
    if body.len() > MAX_REVIEW_BYTES {
        return error_body(
            413,
            "RequestEntityTooLarge",
            &format!("AdmissionReview body is larger than {MAX_REVIEW_BYTES} bytes"),
        );
    }
    let req = match admission::read(body) {
        Ok(r) => r,
        Err(e) => return bad_request(&e.0),
    };
    let mut response = AdmissionResponse::invalid("");
    response.types = TypeMeta {
        api_version: ADMISSION_V1.to_owned(),
        kind: ADMISSION_REVIEW.to_owned(),
    };
    response.uid = req.uid.clone();
    response.allowed = true;
    response.result = Default::default();
    if !req.is_pod_create() {
        return respond(response);
    }
    let deny = |response: AdmissionResponse, message: String| {
        let mut denied = response.deny(message);
        denied.result.code = 403;
        denied.result.reason = "Forbidden".to_owned();
        respond(denied)
    };
    let Some(object) = req.object else {
        return deny(
            response,
            Denial::new("the admission request carries no Pod").message,
        );
    };
    let pod: PodView = match serde_json::from_str(object.get()) {
        Ok(p) => p,
        Err(e) => {
            return deny(
                response,
                Denial::new(format!("cannot read the Pod: {e}")).message,
            );
        }
    };
    let namespace = req
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    if namespace.is_empty() {
        return deny(
            response,
            Denial::new("the admission request has no namespace").message,
        );
    }
    match mutate_view(&pod, &namespace, cfg, issuers) {
        Ok(Mutation::Skip) => respond(response),
        Ok(Mutation::Patch(patch)) => match response.clone().with_patch(patch) {
            Ok(patched) => respond(patched),
            Err(e) => deny(
                response,
                Denial::new(format!("internal error: {e}")).message,
            ),
        },
        Err(denial) => deny(response, denial.message),
    }
}

#[cfg(test)]
#[path = "mutate_tests.rs"]
mod tests;
