//! Objects the tests create, written as users write them (JSON/YAML shapes, not Rust types).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::operator::CLUSTER_RESOURCE_NAMESPACE;
use crate::{Env, dump, random_suffix, wait_for};

pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn step_issuers() -> ApiResource {
    resource(
        "certmanager.step.sm",
        "v1beta1",
        "StepIssuer",
        "stepissuers",
    )
}
pub fn step_cluster_issuers() -> ApiResource {
    resource(
        "certmanager.step.sm",
        "v1beta1",
        "StepClusterIssuer",
        "stepclusterissuers",
    )
}
pub fn certificates() -> ApiResource {
    resource("cert-manager.io", "v1", "Certificate", "certificates")
}
pub fn certificate_requests() -> ApiResource {
    resource(
        "cert-manager.io",
        "v1",
        "CertificateRequest",
        "certificaterequests",
    )
}

pub fn namespaced(client: &Client, ns: &str, ar: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, ar)
}

pub fn cluster(client: &Client, ar: &ApiResource) -> Api<DynamicObject> {
    Api::all_with(client.clone(), ar)
}

pub fn object(v: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(v)?)
}

/// Creates or updates an object by server-side apply.
pub async fn apply(api: &Api<DynamicObject>, v: Value) -> Result<DynamicObject> {
    let obj = object(v)?;
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("applying {name}"))
}

/// Ensures a namespace exists (idempotent; shared namespaces are created by whichever test runs first).
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a password Secret (value used verbatim, no newline).
pub async fn password_secret(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    password: &str,
) -> Result<()> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    api.patch(
        name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&secret),
    )
    .await
    .with_context(|| format!("writing Secret {ns}/{name}"))?;
    Ok(())
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `spec` of an issuer pointing at the e2e step-ca, as step-issuer's README writes it.
pub fn issuer_spec(env: &Env, password_ref: Value) -> Result<Value> {
    Ok(json!({
        "url": env.step_ca_url,
        "caBundle": base64(env.root_pem()?.as_bytes()),
        "provisioner": {
            "name": env.step_provisioner,
            "kid": env.step_provisioner_kid,
            "passwordRef": password_ref,
        }
    }))
}

pub fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub fn is_true(obj: &DynamicObject, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == "True")
}

/// Waits until `name` has `Ready` with the given status (and reason, if given).
pub async fn wait_ready_condition(
    api: &Api<DynamicObject>,
    name: &str,
    status: &str,
    reason: Option<&str>,
    timeout: Duration,
    controller_log: &str,
) -> Result<DynamicObject> {
    let what = format!("{name} to have Ready={status} reason={reason:?}");
    wait_for(
        &what,
        timeout,
        async || {
            let obj = api.get_opt(name).await?;
            Ok(obj.filter(|o| {
                condition(o, "Ready").is_some_and(|c| {
                    c["status"] == status && reason.is_none_or(|r| c["reason"] == r)
                })
            }))
        },
        async || {
            let obj = api.get_opt(name).await.ok().flatten();
            let log = std::fs::read_to_string(controller_log).unwrap_or_default();
            let tail: Vec<_> = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("{}\ncontroller log tail:\n{}", dump(&obj), tail.join("\n"))
        },
    )
    .await
}

/// A PEM P-256 CSR for `cn`.
pub fn csr(cn: &str) -> Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![cn.to_string()])?;
    let mut params = params;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    Ok(params.serialize_request(&key)?.pem()?)
}

/// A Ready StepClusterIssuer with its own password Secret.
pub async fn ready_cluster_issuer(
    env: &Env,
    client: &Client,
    prefix: &str,
    log: &str,
) -> Result<String> {
    ensure_namespace(client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let name = format!("{prefix}-{}", random_suffix());
    password_secret(
        client,
        CLUSTER_RESOURCE_NAMESPACE,
        &name,
        "password",
        &env.provisioner_password()?,
    )
    .await?;
    let api = cluster(client, &step_cluster_issuers());
    apply(
        &api,
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
            "metadata": {"name": name},
            "spec": issuer_spec(env, json!({"name": name, "key": "password", "namespace": CLUSTER_RESOURCE_NAMESPACE}))?,
        }),
    )
    .await?;
    wait_ready_condition(
        &api,
        &name,
        "True",
        Some("Verified"),
        Duration::from_secs(60),
        log,
    )
    .await?;
    Ok(name)
}

/// `issuerRef` of a StepClusterIssuer.
pub fn step_cluster_issuer_ref(name: &str) -> Value {
    json!({"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": name})
}

/// A CertificateRequest as a user writes it.
pub fn certificate_request(name: &str, csr_pem: &str, issuer_ref: Value) -> Result<DynamicObject> {
    object(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name},
        "spec": {"request": base64(csr_pem.as_bytes()), "issuerRef": issuer_ref}
    }))
}

/// A StepClusterIssuer `<prefix>-<random>` with its own password Secret, its spec first changed
/// by `edit` (a CA URL through a proxy, a provisioner found by name, ...), once it is Ready with
/// reason Verified.
pub async fn verified_cluster_issuer_with(
    env: &Env,
    client: &Client,
    prefix: &str,
    log: &str,
    edit: impl FnOnce(&mut Value),
) -> Result<DynamicObject> {
    ensure_namespace(client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let name = format!("{prefix}-{}", random_suffix());
    password_secret(
        client,
        CLUSTER_RESOURCE_NAMESPACE,
        &name,
        "password",
        &env.provisioner_password()?,
    )
    .await?;
    let mut spec = issuer_spec(
        env,
        json!({"name": name, "key": "password", "namespace": CLUSTER_RESOURCE_NAMESPACE}),
    )?;
    edit(&mut spec);
    let api = cluster(client, &step_cluster_issuers());
    apply(
        &api,
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
            "metadata": {"name": name}, "spec": spec,
        }),
    )
    .await?;
    wait_ready_condition(
        &api,
        &name,
        "True",
        Some("Verified"),
        Duration::from_secs(60),
        log,
    )
    .await
}
