//! Live migration from autocert v0.20.6 on the e2e node: autocert deployed from its own install
//! manifests (`install/02-autocert.yaml`, `03-rbac.yaml`, images built from its release by
//! e2e/node/images.sh) injects a pod; step-operator's chart is installed and autocert's webhook
//! configuration removed; then everything of autocert's is deleted. The pod autocert injected keeps
//! renewing until it is restarted, new and restarted pods get step-operator's injection, and the
//! namespace label and pod annotations stay as they were.
//! How autocert is deployed, and where it deviates from its install: e2e/src/autocert.rs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::autocert::*;
use e2e::node::*;
use e2e::{Env, TestNamespace, dump, random_suffix, wait_for};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const CERTS: &str = "/var/run/autocert.step.sm";

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

#[tokio::test]
async fn migrate_from_autocert_on_the_node() -> Result<()> {
    let env = Env::load()?;
    let node = env.node()?;
    let client = env.client().await?;
    let suffix = random_suffix();
    let label = format!("migrate-{suffix}");
    let tag = autocert_tag()?;

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
    let token_secrets = async || -> Result<Vec<String>> {
        let list = Api::<Secret>::namespaced(client.clone(), &app_ns)
            .list(&ListParams::default().labels(&format!("{TOKEN_LABEL}=true")))
            .await?;
        Ok(list.items.iter().map(|s| s.name_any()).collect())
    };
    // autocert's way: a token Secret per injected pod, which the migration removes.
    let autocert_tokens = token_secrets().await?;
    ensure!(
        !autocert_tokens.is_empty(),
        "autocert injected pod old but left no token Secret: is it autocert?"
    );
    delete_autocert(&client, autocert, &app_ns).await?;
    wait_injected_by(&client, &app_ns, &node.tools_image, &ours).await?;

    // 3. The pod autocert injected still renews, with nothing of autocert's left: a renewal
    // after the deletion.
    let before = serials(&logs(&client, &app_ns, "old", "app", false).await);
    ensure!(
        !before.is_empty() && before[0] == first[0],
        "{before:?} {first:?}"
    );
    let after = wait_serials(&client, &app_ns, "old", before.len() + 1).await?;
    eprintln!(
        "autocert-injected pod: serials {first:?} at first, {before:?} once autocert was deleted, then {after:?}"
    );

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
    // Two pods injected by us since: no token Secret of autocert's kind came back.
    let tokens = token_secrets().await?;
    ensure!(
        tokens.is_empty(),
        "token Secrets after the migration: {tokens:?}"
    );
    // The namespace label was never touched.
    let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get(&app_ns)
        .await?;
    ensure!(ns.labels().get(LABEL) == Some(&label), "{}", dump(&ns));

    helm_uninstall(&env, &release, &release_ns.name, "120s").await?;
    app.delete().await?;
    release_ns.delete().await
}
