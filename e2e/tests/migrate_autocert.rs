//! Live migration from autocert v0.20.6 on the e2e node: autocert deployed from its own install
//! manifests (`install/02-autocert.yaml`, `03-rbac.yaml`, images built from its release by
//! e2e/node/images.sh) injects a pod; step-operator's chart is installed and autocert's webhook
//! configuration removed; then everything of autocert's is deleted. The pod autocert injected keeps
//! renewing until it is restarted, new and restarted pods get step-operator's injection, and the
//! namespace label and pod annotations stay as they were.
//!
//! Two deviations from autocert's install, for a shared test cluster: its namespace is
//! `autocert-<random>` instead of `step`, and both webhooks select `autocert.step.sm=<random>`
//! instead of `enabled` (which pod_tls's namespaces carry), so that no other test's pods meet
//! them. autocert uses the e2e provisioner (PROVISIONER_NAME) and step-ca at the node's address.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::chart::objects;
use e2e::fixtures::base64;
use e2e::node::*;
use e2e::{Env, TestNamespace, dump, random_suffix, wait_for};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const LABEL: &str = "autocert.step.sm";
const CERTS: &str = "/var/run/autocert.step.sm";
const TOKEN_LABEL: &str = "autocert.step.sm/token";

fn autocert_tag() -> String {
    let versions = include_str!("../versions.env");
    versions
        .lines()
        .find_map(|l| l.strip_prefix("AUTOCERT_VERSION=v"))
        .unwrap_or("0.20.6")
        .to_string()
}

/// What must be deleted once step-operator serves the namespaces (the README lists the same).
struct Autocert {
    ns: TestNamespace,
    objects: Vec<Value>,
    webhook: String,
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
    let tag = autocert_tag();
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
    let out = e2e::process::run(
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

fn api_of(client: &Client, obj: &Value) -> Result<Api<DynamicObject>> {
    let (group, version) = match obj["apiVersion"]
        .as_str()
        .context("apiVersion")?
        .split_once('/')
    {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap_or_default().to_string(),
        ),
    };
    let kind = obj["kind"].as_str().context("kind")?;
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let ar = ApiResource {
        group: group.clone(),
        version: version.clone(),
        api_version: obj["apiVersion"].as_str().unwrap_or_default().to_string(),
        kind: kind.to_string(),
        plural,
    };
    Ok(match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    })
}

async fn create_all(client: &Client, objs: &[Value]) -> Result<()> {
    for o in objs {
        let obj: DynamicObject = serde_json::from_value(o.clone())?;
        api_of(client, o)?
            .create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("creating {} {}", o["kind"], o["metadata"]["name"]))?;
    }
    Ok(())
}

async fn deploy_autocert(
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
fn bootstrapper_image(pod: &Pod) -> String {
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
async fn wait_injected_by(
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
            let p = pods.create(&dry_run, &pod).await.map_err(e2e::retry)?;
            Ok(bootstrapper_image(&p)
                .starts_with(image_prefix)
                .then_some(()))
        },
        async || describe_namespace(client, ns).await,
    )
    .await
}

fn app_pod(tools: &str, name: &str, ns: &str) -> Result<Pod> {
    let script = format!(
        "while true; do echo \"serial $(openssl x509 -noout -serial -in {CERTS}/site.crt)\"; sleep 1; done"
    );
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {
            "autocert.step.sm/name": format!("{name}.{ns}.svc"), "autocert.step.sm/duration": "1m"}},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": tools, "command": ["sh", "-c", script]}]},
    }))?)
}

fn serials(log: &str) -> Vec<String> {
    let mut s: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix("serial "))
        .map(str::to_owned)
        .collect();
    s.dedup();
    s
}

/// Waits until the pod's app has seen `n` different certificates.
async fn wait_serials(client: &Client, ns: &str, pod: &str, n: usize) -> Result<Vec<String>> {
    wait_for(
        &format!("{pod} to have seen {n} certificate(s)"),
        Duration::from_secs(150),
        async || {
            let s = serials(&logs(client, ns, pod, "app", false).await);
            Ok((s.len() >= n).then_some(s))
        },
        async || {
            format!(
                "app:\n{}\nrenewer:\n{}\n{}",
                logs(client, ns, pod, "app", false).await,
                logs(client, ns, pod, "autocert-renewer", false).await,
                describe_namespace(client, ns).await
            )
        },
    )
    .await
}

async fn start_pod(client: &Client, ns: &str, pod: Pod) -> Result<Pod> {
    let name = pod.name_any();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await?;
    wait_pod_ready(client, ns, &name, Duration::from_secs(180)).await
}

/// Deletes everything of autocert's, as the README's list says: its webhook configuration, its
/// namespace (Deployment, Service, ConfigMaps, password Secret), its ClusterRole and binding, and
/// the token Secrets it left in application namespaces.
async fn delete_autocert(client: &Client, autocert: Autocert, app_ns: &str) -> Result<()> {
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
        api_of(client, o)?
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

#[tokio::test]
async fn migrate_from_autocert_on_the_node() -> Result<()> {
    let env = Env::load()?;
    let node = env.node()?;
    let client = env.client().await?;
    let suffix = random_suffix();
    let label = format!("migrate-{suffix}");
    let tag = autocert_tag();

    // 1. autocert serves the namespace and injects a pod.
    let autocert = deploy_autocert(&env, &node, &client, &label, &suffix).await?;
    let app = TestNamespace::create_labelled(
        &client,
        "migrate-app",
        BTreeMap::from([(LABEL.to_owned(), label.clone())]),
    )
    .await?;
    wait_injected_by(
        &client,
        &app.name,
        &node.tools_image,
        "localhost/autocert-bootstrapper",
    )
    .await?;
    let old = start_pod(
        &client,
        &app.name,
        app_pod(&node.tools_image, "old", &app.name)?,
    )
    .await?;
    ensure!(
        bootstrapper_image(&old) == format!("localhost/autocert-bootstrapper:{tag}"),
        "{}",
        dump(&old)
    );
    let first = wait_serials(&client, &app.name, "old", 1).await?;

    // 2. step-operator's webhook for the same label; autocert's configuration removed.
    let release_ns = TestNamespace::create(&client, "migrate-so").await?;
    let mut values = chart_values(&env, &node, &label)?;
    values["controller"] = json!({"enabled": false});
    values["webhook"]["replicas"] = json!(1);
    let release = format!("migrate-{suffix}");
    helm_chart(&env, "install", &release, &release_ns.name, &values, &[]).await?;
    wait_deployment_available(
        &client,
        &release_ns.name,
        &format!("{release}-step-operator-webhook"),
        Duration::from_secs(180),
    )
    .await?;
    let (ours, _) = operator_image()?;
    let app_ns = app.name.clone();
    delete_autocert(&client, autocert, &app_ns).await?;
    wait_injected_by(&client, &app_ns, &node.tools_image, &ours).await?;

    // 3. The pod autocert injected still renews, with nothing of autocert's left: a renewal
    // after the deletion.
    let before = serials(&logs(&client, &app_ns, "old", "app", false).await);
    ensure!(
        !before.is_empty() && before[0] == first[0],
        "{before:?} {first:?}"
    );
    wait_serials(&client, &app_ns, "old", before.len() + 1).await?;

    // 4. New and restarted pods get step-operator's injection; no token Secret any more.
    let new = start_pod(
        &client,
        &app_ns,
        app_pod(&node.tools_image, "new", &app_ns)?,
    )
    .await?;
    ensure!(
        bootstrapper_image(&new).starts_with(&ours),
        "{}",
        dump(&new)
    );
    wait_serials(&client, &app_ns, "new", 1).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &app_ns);
    pods.delete("old", &Default::default()).await?;
    wait_for(
        "the old pod to be gone",
        Duration::from_secs(60),
        async || Ok(pods.get_opt("old").await?.is_none().then_some(())),
        async || describe_namespace(&client, &app_ns).await,
    )
    .await?;
    let restarted = start_pod(
        &client,
        &app_ns,
        app_pod(&node.tools_image, "old", &app_ns)?,
    )
    .await?;
    ensure!(
        bootstrapper_image(&restarted).starts_with(&ours),
        "{}",
        dump(&restarted)
    );
    wait_serials(&client, &app_ns, "old", 1).await?;
    let tokens = Api::<Secret>::namespaced(client.clone(), &app_ns)
        .list(&ListParams::default().labels(&format!("{TOKEN_LABEL}=true")))
        .await?;
    if !tokens.items.is_empty() {
        bail!(
            "token Secrets after the migration: {:?}",
            tokens
                .items
                .iter()
                .map(|s| s.name_any())
                .collect::<Vec<_>>()
        );
    }
    // The namespace label was never touched.
    let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get(&app_ns)
        .await?;
    ensure!(ns.labels().get(LABEL) == Some(&label), "{}", dump(&ns));

    helm_uninstall(&env, &release, &release_ns.name, "120s").await?;
    app.delete().await?;
    release_ns.delete().await
}
