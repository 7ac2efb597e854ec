//! autocert v0.20.6 on the e2e node, deployed from its own install manifests with the images
//! e2e/node/images.sh builds from its release: for the migration test and the node benchmark.
//!
//! Two deviations from its install, for a shared test cluster: its namespace is
//! `autocert-<random>` instead of `step`, and its webhook selects `autocert.step.sm=<label>`
//! instead of `enabled` (which other tests' namespaces carry). It uses the e2e provisioner
//! (PROVISIONER_NAME) and step-ca at the node's address.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use crate::chart::objects;
use crate::fixtures::base64;
use crate::node::{Node, describe_namespace, wait_deployment_available};
use crate::{Env, TestNamespace, wait_for};

pub const LABEL: &str = "autocert.step.sm";
pub const TOKEN_LABEL: &str = "autocert.step.sm/token";

pub fn autocert_tag() -> Result<String> {
    let versions = include_str!("../versions.env");
    versions
        .lines()
        .find_map(|l| l.strip_prefix("AUTOCERT_VERSION=v"))
        .map(str::to_string)
        .context("e2e/versions.env has no AUTOCERT_VERSION=v<version>: the autocert images are tagged with it")
}

/// What must be deleted once step-operator serves the namespaces (the README lists the same).
pub struct Autocert {
    pub ns: TestNamespace,
    pub objects: Vec<Value>,
    pub webhook: String,
}

/// autocert's config.yaml with our images and step-ca's address from a pod.
fn config_yaml(text: &str, ca_url: &str, tag: &str) -> Result<String> {
    let mut out = text.replace("https://ca.step.svc.cluster.local", ca_url);
    for part in ["renewer", "bootstrapper"] {
        let from = format!("cr.smallstep.com/smallstep/autocert-{part}:0.17.0");
        ensure!(
            out.contains(&from),
            "autocert's config.yaml no longer names {from}"
        );
        out = out.replace(&from, &format!("localhost/autocert-{part}:{tag}"));
    }
    Ok(out)
}

/// autocert's install manifests, adapted as the module comment says.
async fn autocert_objects(env: &Env, node: &Node, ns: &str, suffix: &str) -> Result<Vec<Value>> {
    let dir = env.bin.join("autocert/install");
    let mut yaml = String::new();
    for f in ["02-autocert.yaml", "03-rbac.yaml"] {
        yaml.push_str(
            &std::fs::read_to_string(dir.join(f))
                .with_context(|| format!("{f}: run e2e/build-infra.sh"))?,
        );
        yaml.push_str("\n---\n");
    }
    let tag = autocert_tag()?;
    let mut objs = objects(env, &yaml).await?;
    for o in &mut objs {
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        if o["metadata"]["namespace"] == "step" {
            o["metadata"]["namespace"] = json!(ns);
        }
        match kind.as_str() {
            "ConfigMap" => {
                let text = o["data"]["config.yaml"]
                    .as_str()
                    .context("autocert-config has no config.yaml")?;
                o["data"]["config.yaml"] = json!(config_yaml(text, &node.step_ca_url, &tag)?);
            }
            "Deployment" => {
                let c = &mut o["spec"]["template"]["spec"]["containers"][0];
                c["image"] = json!(format!("localhost/autocert-controller:{tag}"));
                c["env"][0] = json!({"name": "PROVISIONER_NAME", "value": env.step_provisioner});
            }
            "ClusterRole" | "ClusterRoleBinding" => {
                o["metadata"]["name"] = json!(format!("autocert-controller-{suffix}"));
                if kind == "ClusterRoleBinding" {
                    o["roleRef"]["name"] = json!(format!("autocert-controller-{suffix}"));
                    o["subjects"][0]["namespace"] = json!(ns);
                }
            }
            _ => {}
        }
    }
    // What step-certificates' chart provides to autocert: its step config, the root, the password.
    let root = env.root_pem()?;
    let fingerprint = root_fingerprint(env).await?;
    let defaults = json!({"ca-url": node.step_ca_url, "fingerprint": fingerprint, "root": "/home/step/certs/root_ca.crt"});
    objs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config", "namespace": ns},
        "data": {"defaults.json": defaults.to_string()}}));
    objs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "certs", "namespace": ns},
        "data": {"root_ca.crt": root}}));
    objs.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "autocert-password", "namespace": ns},
        "data": {"password": base64(env.provisioner_password()?.as_bytes())}}));
    Ok(objs)
}

async fn root_fingerprint(env: &Env) -> Result<String> {
    let out = crate::process::run(
        &env.tool("step")?,
        &[
            "certificate",
            "fingerprint",
            env.step_ca_root.to_str().context("utf-8")?,
        ],
        &[],
    )
    .await?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The webhook configuration autocert's README has you create, for `label`.
fn autocert_webhook(name: &str, ns: &str, label: &str, root: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app": "autocert"}},
        "webhooks": [{
            "name": "autocert.step.sm",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1beta1"],
            "clientConfig": {"service": {"name": "autocert", "namespace": ns, "path": "/mutate"}, "caBundle": base64(root.as_bytes())},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "failurePolicy": "Ignore",
            "namespaceSelector": {"matchLabels": {LABEL: label}},
        }],
    })
}

async fn api_of(client: &Client, obj: &Value) -> Result<Api<DynamicObject>> {
    let api_version = obj["apiVersion"].as_str().context("apiVersion")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().context("kind")?;
    // The apiserver's own name for the kind's resource: no guessed plural.
    let (ar, _) = kube::discovery::pinned_kind(
        client,
        &kube::api::GroupVersionKind::gvk(group, version, kind),
    )
    .await
    .with_context(|| format!("discovering {api_version} {kind}"))?;
    Ok(match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    })
}

async fn create_all(client: &Client, objs: &[Value]) -> Result<()> {
    for o in objs {
        let obj: DynamicObject = serde_json::from_value(o.clone())?;
        api_of(client, o)
            .await?
            .create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("creating {} {}", o["kind"], o["metadata"]["name"]))?;
    }
    Ok(())
}

pub async fn deploy_autocert(
    env: &Env,
    node: &Node,
    client: &Client,
    label: &str,
    suffix: &str,
) -> Result<Autocert> {
    let ns = TestNamespace::create(client, "autocert").await?;
    let objs = autocert_objects(env, node, &ns.name, suffix).await?;
    create_all(client, &objs).await?;
    wait_deployment_available(client, &ns.name, "autocert", Duration::from_secs(180)).await?;
    let webhook = format!("autocert-webhook-config-{suffix}");
    create_all(
        client,
        &[autocert_webhook(
            &webhook,
            &ns.name,
            label,
            &env.root_pem()?,
        )],
    )
    .await?;
    Ok(Autocert {
        ns,
        objects: objs,
        webhook,
    })
}

/// The image of the pod's first init container: who injected it.
pub fn bootstrapper_image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Waits until a dry-run create of an annotated pod comes back injected by the webhook whose
/// bootstrapper image starts with `image_prefix` (autocert's failurePolicy is Ignore: a pod admitted
/// without injection means "not yet").
pub async fn wait_injected_by(
    client: &Client,
    ns: &str,
    tools: &str,
    image_prefix: &str,
) -> Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probe", "annotations": {"autocert.step.sm/name": format!("probe.{ns}.svc")}},
        "spec": {"containers": [{"name": "app", "image": tools}]},
    }))?;
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for(
        &format!("pods in {ns} to be injected by {image_prefix}"),
        Duration::from_secs(120),
        async || {
            let p = pods.create(&dry_run, &pod).await.map_err(crate::retry)?;
            Ok(bootstrapper_image(&p)
                .starts_with(image_prefix)
                .then_some(()))
        },
        async || describe_namespace(client, ns).await,
    )
    .await
}

/// Deletes everything of autocert's, as the README's list says: its webhook configuration, its
/// namespace (Deployment, Service, ConfigMaps, password Secret), its ClusterRole and binding, and
/// the token Secrets it left in application namespaces.
pub async fn delete_autocert(client: &Client, autocert: Autocert, app_ns: &str) -> Result<()> {
    let hooks =
        Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
            client.clone(),
        );
    hooks.delete(&autocert.webhook, &Default::default()).await?;
    for o in autocert
        .objects
        .iter()
        .filter(|o| o["metadata"]["namespace"].is_null())
    {
        api_of(client, o)
            .await?
            .delete(
                o["metadata"]["name"].as_str().unwrap_or_default(),
                &Default::default(),
            )
            .await?;
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), app_ns);
    secrets
        .delete_collection(
            &Default::default(),
            &ListParams::default().labels(&format!("{TOKEN_LABEL}=true")),
        )
        .await?;
    autocert.ns.delete().await
}
