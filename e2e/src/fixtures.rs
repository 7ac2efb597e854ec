//! Objects the tests create, written as users write them (JSON/YAML shapes, not Rust types).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use step_operator::cert_manager::CertificateRequest;
use step_operator::crd::{StepClusterIssuer, StepIssuer};

use crate::operator::CLUSTER_RESOURCE_NAMESPACE;
use crate::{Env, dump, random_suffix, wait_for};

pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn step_issuers() -> ApiResource {
    ApiResource::erase::<StepIssuer>(&())
}
pub fn step_cluster_issuers() -> ApiResource {
    ApiResource::erase::<StepClusterIssuer>(&())
}
/// cert-manager's Certificate: step-operator never reads it, so it has no Rust type to borrow.
pub fn certificates() -> ApiResource {
    resource("cert-manager.io", "v1", "Certificate", "certificates")
}
pub fn certificate_requests() -> ApiResource {
    ApiResource::erase::<CertificateRequest>(&())
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

/// Standard base64 with padding, as Kubernetes writes `[]byte` fields in JSON.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
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

/// A Ready StepClusterIssuer `<prefix>-<random>` with its own password Secret.
pub async fn ready_cluster_issuer(
    env: &Env,
    client: &Client,
    prefix: &str,
    log: &str,
) -> Result<String> {
    let name = format!("{prefix}-{}", random_suffix());
    ready_cluster_issuer_named(env, client, &name, log).await?;
    Ok(name)
}

/// A Ready StepClusterIssuer named exactly `name`, with its own password Secret.
pub async fn ready_cluster_issuer_named(
    env: &Env,
    client: &Client,
    name: &str,
    log: &str,
) -> Result<()> {
    verified_cluster_issuer_named(env, client, name, log, |_| {}).await?;
    Ok(())
}

/// The `Ready` message of an issuer that verified the e2e step-ca's provisioner.
pub fn verified_message(env: &Env) -> String {
    format!(
        "Signing with JWK provisioner {:?} (kid {}) at {}",
        env.step_provisioner,
        env.step_provisioner_kid,
        env.step_ca_url.trim_end_matches('/')
    )
}

/// The `Ready` condition's message, or "" (as text, not as JSON: quotes stay quotes).
pub fn ready_message(obj: &DynamicObject) -> String {
    condition(obj, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// What the tests check in an issued leaf certificate.
#[derive(Debug)]
pub struct Leaf {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub not_before: std::time::SystemTime,
    pub not_after: std::time::SystemTime,
}

impl Leaf {
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// Parses the first certificate of a PEM chain (the leaf).
pub fn leaf(chain_pem: &str) -> Result<Leaf> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the chain does not start with a PEM block: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("the leaf certificate does not parse: {e}"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("the SAN extension does not parse: {e}"))?
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ip_addresses.push(std::net::IpAddr::from(<[u8; 4]>::try_from(*b)?)),
                    16 => ip_addresses.push(std::net::IpAddr::from(<[u8; 16]>::try_from(*b)?)),
                    n => anyhow::bail!("an IP SAN of {n} bytes"),
                },
                _ => {}
            }
        }
    }
    let time = |t: x509_parser::time::ASN1Time| {
        std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok(Leaf {
        common_name,
        dns_names,
        ip_addresses,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
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
    let name = format!("{prefix}-{}", random_suffix());
    verified_cluster_issuer_named(env, client, &name, log, edit).await
}

/// [`verified_cluster_issuer_with`] under exactly `name`.
pub async fn verified_cluster_issuer_named(
    env: &Env,
    client: &Client,
    name: &str,
    log: &str,
    edit: impl FnOnce(&mut Value),
) -> Result<DynamicObject> {
    ensure_namespace(client, CLUSTER_RESOURCE_NAMESPACE).await?;
    password_secret(
        client,
        CLUSTER_RESOURCE_NAMESPACE,
        name,
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
        name,
        "True",
        Some("Verified"),
        Duration::from_secs(60),
        log,
    )
    .await
}

/// Approves a CertificateRequest as cert-manager's approver would, for apiservers where no
/// cert-manager runs (a server-side apply of the Approved condition).
pub async fn approve_as_cert_manager(requests: &Api<DynamicObject>, name: &str) -> Result<()> {
    let approve = json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "e2e",
            "message": "approved by the test", "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}
    });
    requests
        .patch_status(
            name,
            &kube::api::PatchParams::apply("e2e-approver").force(),
            &kube::api::Patch::Apply(approve),
        )
        .await?;
    Ok(())
}

/// `kubectl apply --server-side` of CRD `files` against `kubeconfig`, then waits until every
/// CRD there is Established.
pub async fn apply_crds(
    env: &Env,
    kubeconfig: &std::path::Path,
    files: &[std::path::PathBuf],
) -> Result<()> {
    use anyhow::Context as _;
    let kubectl = env.tool("kubectl")?;
    let kc = kubeconfig.to_str().context("utf-8")?;
    let mut args = vec!["--kubeconfig", kc, "apply", "--server-side"];
    for f in files {
        args.extend(["-f", f.to_str().context("utf-8")?]);
    }
    crate::process::run(&kubectl, &args, &[]).await?;
    let wait = [
        "--kubeconfig",
        kc,
        "wait",
        "--for",
        "condition=established",
        "--timeout=60s",
        "crd",
        "--all",
    ];
    crate::process::run(&kubectl, &wait, &[]).await?;
    Ok(())
}

/// The `.yaml` files of `dir`, sorted; an error when there are none.
pub fn yaml_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    use anyhow::Context as _;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no YAML files in {}", dir.display());
    Ok(files)
}

/// A second kube-apiserver on the cluster's etcd with no objects and no CRDs
/// (`cluster.sh empty-apiserver NAME`, stopped by `cluster.sh down`): its admin kubeconfig and a
/// client for it.
pub async fn empty_apiserver(name: &str) -> Result<(std::path::PathBuf, Client)> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster.sh");
    let out = crate::process::run(&script, &["empty-apiserver", name], &[]).await?;
    let kubeconfig = std::path::PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let kc = Kubeconfig::read_from(&kubeconfig)?;
    let client = Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?,
    )?;
    Ok((kubeconfig, client))
}

/// The Events with `reason` regarding the object `name` of namespace `ns`.
pub async fn events_for(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Result<Vec<k8s_openapi::api::events::v1::Event>> {
    Ok(
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect(),
    )
}

/// The first Event with `reason` regarding `name`, once there is one; on timeout, every Event of
/// the namespace and `log` (a log file's path, or empty).
pub async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
    log: &str,
) -> Result<k8s_openapi::api::events::v1::Event> {
    wait_for(
        &format!("a {reason} Event regarding {ns}/{name}"),
        timeout,
        async || {
            Ok(events_for(client, ns, name, reason)
                .await?
                .into_iter()
                .next())
        },
        async || {
            let all = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .ok();
            format!(
                "{}\n{}",
                dump(&all),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
    )
    .await
}

/// Waits until cert-manager shows Certificate `name` Ready at `status.revision`. Ready can come
/// before the revision is written, and a spec change seen in between makes cert-manager replace
/// the request instead of issuing the next revision.
pub async fn wait_certificate_revision(
    certs: &Api<DynamicObject>,
    name: &str,
    revision: i64,
    timeout: Duration,
    log: &str,
) -> Result<()> {
    wait_for(
        &format!("Certificate {name} to be Ready at revision {revision}"),
        timeout,
        async || {
            let c = certs.get(name).await?;
            Ok(
                (is_true(&c, "Ready") && c.data["status"]["revision"].as_i64() == Some(revision))
                    .then_some(()),
            )
        },
        async || {
            let c = certs.get_opt(name).await.ok().flatten();
            format!(
                "{}\n{}",
                dump(&c),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
    )
    .await
}
