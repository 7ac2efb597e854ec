//! The JSON Patch `/mutate` applies to a pod that asks for a certificate and passed every check
//! (see [`super::mutate`] for what is injected and why). Pure: the pod's facts and the
//! configuration in, patch operations out.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector,
    ProjectedVolumeSource, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use serde_json::Value;

use super::annotations::{DEFAULT_KEY_MODE, PodRequest, STATUS, STATUS_INJECTED};
use super::config::InjectConfig;
use super::pod_view::{ContainerView, SpecView};
use crate::pod_protocol::env as ENV;
use crate::pod_protocol::{CERTS_DIR, TOKEN_DIR, TOKEN_FILE, TOKEN_PATH};

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

/// A part of the patch could not be serialized (a bug, not the pod's fault).
#[derive(Debug, thiserror::Error)]
#[error("internal error: cannot serialize the {what}: {cause}")]
pub struct SerializeError {
    what: &'static str,
    cause: serde_json::Error,
}

/// The patch for a pod whose request `req` passed every check: the agents, their volumes, the
/// mounts of the certificates and the status annotation.
pub fn build(
    req: &PodRequest,
    spec: &SpecView,
    cfg: &InjectConfig,
) -> Result<Patch, SerializeError> {
    let mut ops = init_container_ops(req, spec, cfg)?;
    ops.extend(volume_ops(spec, cfg)?);
    ops.extend(certs_mount_ops(req, spec)?);
    // The annotations map exists: the pod has the name annotation.
    ops.push(add(
        &["metadata", "annotations", STATUS],
        Value::String(STATUS_INJECTED.to_owned()),
    ));
    Ok(Patch(ops))
}

/// The bootstrapper, then (unless bootstrapper-only) the renewer right after it: first among
/// the init containers with `init-first`, after the pod's own otherwise.
fn init_container_ops(
    req: &PodRequest,
    spec: &SpecView,
    cfg: &InjectConfig,
) -> Result<Vec<PatchOperation>, SerializeError> {
    let mut injected = vec![to_json(
        "bootstrapper",
        &injected_container(BOOTSTRAPPER, "bootstrap", false, req, cfg),
    )?];
    if !req.bootstrapper_only {
        injected.push(to_json(
            "renewer",
            &injected_container(RENEWER, "renew", true, req, cfg),
        )?);
    }
    let ops = if spec.init_containers.is_empty() {
        vec![add(&["spec", "initContainers"], Value::Array(injected))]
    } else if req.init_first {
        injected
            .into_iter()
            .enumerate()
            .map(|(i, c)| add(&["spec", "initContainers", &i.to_string()], c))
            .collect()
    } else {
        injected
            .into_iter()
            .map(|c| add(&["spec", "initContainers", "-"], c))
            .collect()
    };
    Ok(ops)
}

fn volume_ops(spec: &SpecView, cfg: &InjectConfig) -> Result<Vec<PatchOperation>, SerializeError> {
    let volumes = injected_volumes(cfg)
        .iter()
        .map(|v| to_json("volume", v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if spec.volumes.any {
        volumes
            .into_iter()
            .map(|v| add(&["spec", "volumes", "-"], v))
            .collect()
    } else {
        vec![add(&["spec", "volumes"], Value::Array(volumes))]
    })
}

/// A read-only mount of the certificates in every app container that does not already use the
/// path; with init-first also in the pod's own init containers, which then run after the
/// bootstrapper and can use the files (as autocert does). They come after the injected ones by
/// now.
fn certs_mount_ops(
    req: &PodRequest,
    spec: &SpecView,
) -> Result<Vec<PatchOperation>, SerializeError> {
    let mount = to_json(
        "volume mount",
        &VolumeMount {
            name: CERTS_VOLUME.to_owned(),
            mount_path: CERTS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )?;
    let mut ops = Vec::new();
    mount_ops(&mut ops, "containers", &spec.containers, 0, &mount);
    if req.init_first {
        let injected_count = if req.bootstrapper_only { 1 } else { 2 };
        let own = &spec.init_containers;
        mount_ops(&mut ops, "initContainers", own, injected_count, &mount);
    }
    Ok(ops)
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

fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Value, SerializeError> {
    serde_json::to_value(value).map_err(|cause| SerializeError { what, cause })
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

fn injected_env(req: &PodRequest, cfg: &InjectConfig) -> Vec<EnvVar> {
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
        format!("{:04o}", req.mode.unwrap_or(DEFAULT_KEY_MODE)),
    ));
    out.push(env(
        ENV::ISSUER,
        req.issuer
            .clone()
            .unwrap_or_else(|| cfg.default_issuer.clone()),
    ));
    if let Some((signal, process)) = &req.reload {
        out.push(env(ENV::RELOAD_SIGNAL, signal.clone()));
        out.push(env(ENV::RELOAD_PROCESS, process.clone()));
    }
    if let Some(algorithm) = req.key_type {
        out.push(env(ENV::KEY_ALGORITHM, algorithm.to_string()));
    }
    out.push(env(ENV::CERTS_DIR, CERTS_DIR));
    out.push(env(ENV::TOKEN_PATH, TOKEN_PATH));
    out.push(env_field(ENV::POD_NAME, "metadata.name"));
    out.push(env_field(ENV::POD_NAMESPACE, "metadata.namespace"));
    out.push(env_field(ENV::POD_UID, "metadata.uid"));
    if super::pod_names::is_templated(req) {
        // What the agents need to expand the templates for their log lines (the webhook
        // expands them itself, from the pod it verified, for what is signed).
        out.push(env_field(ENV::POD_IP, "status.podIP"));
        out.push(env_field(
            ENV::POD_SERVICE_ACCOUNT,
            "spec.serviceAccountName",
        ));
    }
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
    req: &PodRequest,
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
