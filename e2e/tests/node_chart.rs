//! step-operator installed for real: `helm install` of charts/step-operator on the e2e node, from
//! the image built from the release binary. The controller and the webhook run in pods through
//! their probes; cert-manager Certificates are issued by the in-cluster controller; the webhook
//! injects pods that the kubelet really starts, and two of them talk mTLS through a Service with
//! the injected certificates; `helm upgrade` rolls the pods; the webhook down refuses pods
//! (failurePolicy Fail) and a pod admitted before still bootstraps once it is back; `helm
//! uninstall` leaves the CRDs and the issued Secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::fixtures::*;
use e2e::node::*;
use e2e::{Env, TestNamespace, random_suffix, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node as KubeNode, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const LABEL: &str = "autocert.step.sm";
const CERTS: &str = "/var/run/autocert.step.sm";

async fn deployment_names(client: &Client, ns: &str) -> Result<Vec<String>> {
    let list = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/name=step-operator"))
        .await?;
    Ok(list.items.iter().map(|d| d.name_any()).collect())
}

async fn wait_release_available(client: &Client, ns: &str) -> Result<()> {
    let names = deployment_names(client, ns).await?;
    ensure!(
        names.len() == 2,
        "the chart should run a controller and a webhook Deployment, found {names:?}"
    );
    for name in names {
        wait_deployment_available(client, ns, &name, Duration::from_secs(180)).await?;
    }
    Ok(())
}

/// A namespace whose pods this release's webhook injects.
async fn app_namespace(client: &Client, suffix: &str) -> Result<TestNamespace> {
    let labels = BTreeMap::from([(LABEL.to_owned(), format!("node-{suffix}"))]);
    TestNamespace::create_labelled(client, "node-app", labels).await
}

async fn issue_certificate(client: &Client, ns: &str, issuer: &str, name: &str) -> Result<Secret> {
    let certs = namespaced(client, ns, &certificates());
    apply(
        &certs,
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "secretName": name,
                "dnsNames": [format!("{name}.{ns}.svc.cluster.local")],
                "issuerRef": step_cluster_issuer_ref(issuer),
            },
        }),
    )
    .await?;
    // The controller runs in a pod: its log is `kubectl logs`, not a file.
    wait_ready_condition(&certs, name, "True", None, Duration::from_secs(90), "").await?;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    let crt = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .context("the issued Secret has no tls.crt")?;
    let leaf = leaf(std::str::from_utf8(&crt.0)?)?;
    ensure!(
        leaf.dns_names
            .contains(&format!("{name}.{ns}.svc.cluster.local")),
        "issued certificate names {:?}",
        leaf.dns_names
    );
    Ok(secret)
}

/// The injected mTLS server: openssl serving with the webhook-injected files, requiring a client
/// certificate from the same CA.
fn server_deployment(image: &str, ns: &str) -> Value {
    let script = format!(
        "exec openssl s_server -accept 8443 -cert {CERTS}/site.crt -cert_chain {CERTS}/site.crt -key {CERTS}/site.key \
         -CAfile {CERTS}/root.crt -Verify 1 -verify_return_error -www"
    );
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "mtls-server", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "mtls-server"}},
            "template": {
                "metadata": {
                    "labels": {"app": "mtls-server"},
                    "annotations": {"autocert.step.sm/name": format!("mtls-server.{ns}.svc.cluster.local")},
                },
                "spec": {
                    "containers": [{
                        "name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", script],
                        "ports": [{"containerPort": 8443}],
                        "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
                    }],
                },
            },
        },
    })
}

/// The injected client, as a Job: it must verify the server's name and present its own
/// certificate; and it completes although the renewer sidecar runs beside it.
fn client_job(image: &str, ns: &str) -> Value {
    let server = format!("mtls-server.{ns}.svc.cluster.local");
    let script = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client -connect {server}:8443 \
         -cert {CERTS}/site.crt -cert_chain {CERTS}/site.crt -key {CERTS}/site.key -CAfile {CERTS}/root.crt \
         -verify_hostname {server} -verify_return_error -quiet > /tmp/out 2>&1; rc=$?; cat /tmp/out; \
         grep -q 'Client certificate' /tmp/out || {{ echo 'no client certificate in the reply'; exit 1; }}; exit $rc"
    );
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "mtls-client", "namespace": ns},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "labels": {"app": "mtls-client"},
                    "annotations": {"autocert.step.sm/name": format!("mtls-client.{ns}.svc.cluster.local")},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "app", "image": image, "command": ["sh", "-c", script]}],
                },
            },
        },
    })
}

async fn create(client: &Client, ns: &str, v: Value) -> Result<()> {
    let what = format!("creating {} {}", v["kind"], v["metadata"]["name"]);
    let pp = PostParams::default();
    match v["kind"].as_str() {
        Some("Deployment") => {
            let d: Deployment = serde_json::from_value(v)?;
            Api::<Deployment>::namespaced(client.clone(), ns)
                .create(&pp, &d)
                .await
                .context(what)?;
        }
        Some("Job") => {
            let j: k8s_openapi::api::batch::v1::Job = serde_json::from_value(v)?;
            Api::namespaced(client.clone(), ns)
                .create(&pp, &j)
                .await
                .context(what)?;
        }
        other => anyhow::bail!("create: unexpected kind {other:?}"),
    }
    Ok(())
}

async fn service(client: &Client, ns: &str) -> Result<()> {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "mtls-server", "namespace": ns},
        "spec": {"selector": {"app": "mtls-server"}, "ports": [{"port": 8443, "targetPort": 8443}]},
    }))?;
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await?;
    Ok(())
}

fn container_names(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let spec = pod.spec.clone().unwrap_or_default();
    (
        spec.init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect(),
        spec.containers.into_iter().map(|c| c.name).collect(),
    )
}

async fn pod_template_hashes(client: &Client, ns: &str) -> Result<Vec<String>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/name=step-operator"))
        .await?;
    let mut hashes: Vec<String> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.labels().get("pod-template-hash").cloned())
        .collect();
    hashes.sort();
    hashes.dedup();
    Ok(hashes)
}

#[tokio::test]
async fn node_helm_install_upgrade_uninstall() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let suffix = random_suffix();
    let release = format!("step-operator-{suffix}");
    let ns = TestNamespace::create(&client, "node-release").await?;
    let result = install_upgrade_uninstall(&env, &client, &suffix, &release, &ns).await;
    if result.is_err() {
        // Its controller would otherwise go on signing other test binaries' requests.
        let _ = helm_uninstall(&env, &release, &ns.name, "60s").await;
    }
    result?;
    ns.delete().await
}

async fn install_upgrade_uninstall(
    env: &Env,
    client: &Client,
    suffix: &str,
    release: &str,
    ns: &TestNamespace,
) -> Result<()> {
    let (env, client, suffix, release) = (
        env.clone(),
        client.clone(),
        suffix.to_owned(),
        release.to_owned(),
    );
    let node = env.node()?;
    let issuer = format!("node-{suffix}");
    let values = chart_values(&env, &node, &issuer)?;

    // helm install: the Deployments turn Available through their own probes.
    helm_chart(&env, "install", &release, &ns.name, &values, &[]).await?;
    wait_release_available(&client, &ns.name).await?;
    let issuers = cluster(&client, &step_cluster_issuers());
    let created =
        wait_ready_condition(&issuers, &issuer, "True", None, Duration::from_secs(60), "").await?;
    // The default install makes the safe choice: the issuer it creates restricts every namespace
    // to its own names (security review H3), and says so.
    let policy = condition(&created, "NamePolicy")
        .cloned()
        .unwrap_or_default();
    ensure!(
        policy["status"] == "True" && policy["reason"] == "Restricted",
        "the chart's StepClusterIssuer should be restricted by default: {policy}"
    );

    // A Certificate, issued by the controller that runs in a pod.
    let app = app_namespace(&client, &suffix).await?;
    wait_webhook_injects(&client, &app.name, &node.tools_image).await?;
    let before_upgrade = issue_certificate(&client, &app.name, &issuer, "first").await?;

    // The webhook injects real pods; they serve and check mTLS through a Service.
    service(&client, &app.name).await?;
    create(
        &client,
        &app.name,
        server_deployment(&node.tools_image, &app.name),
    )
    .await?;
    let server =
        wait_app_pod_ready(&client, &app.name, "mtls-server", Duration::from_secs(120)).await?;
    let (init, main) = container_names(&server);
    ensure!(
        init.len() == 2 && main == ["app"],
        "expected a bootstrapper and a renewer sidecar before the app, got init {init:?}, main {main:?}"
    );
    create(&client, &app.name, client_job(&node.tools_image, &app.name)).await?;
    wait_job_complete(&client, &app.name, "mtls-client", Duration::from_secs(120)).await?;
    let client_pod = Api::<Pod>::namespaced(client.clone(), &app.name)
        .list(&ListParams::default().labels("app=mtls-client"))
        .await?
        .items
        .into_iter()
        .next()
        .context("the client Job has no pod")?;
    let out = logs(&client, &app.name, &client_pod.name_any(), "app", false).await;
    ensure!(
        out.contains("Client certificate")
            || out.contains("CN=mtls-client")
            || out.contains("CN = mtls-client"),
        "the server's reply does not show the client's certificate:\n{out}"
    );
    let server_log = logs(&client, &app.name, &server.name_any(), "app", false).await;
    ensure!(
        !server_log.contains("verify error"),
        "the server refused a client certificate:\n{server_log}"
    );

    // helm upgrade with a changed value rolls the pods and keeps issuing.
    let old = pod_template_hashes(&client, &ns.name).await?;
    helm_chart(
        &env,
        "upgrade",
        &release,
        &ns.name,
        &values,
        &["--set", "controller.concurrency=8"],
    )
    .await?;
    wait_release_available(&client, &ns.name).await?;
    wait_for(
        "the upgraded controller's pods to replace the old ones",
        Duration::from_secs(120),
        async || {
            let now = pod_template_hashes(&client, &ns.name).await?;
            Ok((now.len() == 2 && now.iter().any(|h| !old.contains(h))).then_some(()))
        },
        async || {
            format!(
                "before: {old:?}\n{}",
                describe_namespace(&client, &ns.name).await
            )
        },
    )
    .await?;
    issue_certificate(&client, &app.name, &issuer, "second").await?;

    // The webhook down: failurePolicy Fail refuses pods; a pod admitted before it went down
    // bootstraps once it is back.
    let webhook = format!("{release}-webhook");
    let held = format!("hold-{suffix}");
    let mut waiting = server_deployment(&node.tools_image, &app.name);
    waiting["metadata"]["name"] = json!("admitted-before");
    waiting["spec"]["selector"]["matchLabels"]["app"] = json!("admitted-before");
    waiting["spec"]["template"]["metadata"]["labels"]["app"] = json!("admitted-before");
    // Not schedulable until the node gets this label: admitted now, started later.
    waiting["spec"]["template"]["spec"]["nodeSelector"] = json!({"e2e.step-operator/hold": held});
    create(&client, &app.name, waiting).await?;
    let admitted = wait_for(
        "the held pod to be admitted and injected",
        Duration::from_secs(60),
        async || {
            let pods = Api::<Pod>::namespaced(client.clone(), &app.name)
                .list(&ListParams::default().labels("app=admitted-before"))
                .await?;
            Ok(pods.items.into_iter().next())
        },
        async || describe_namespace(&client, &app.name).await,
    )
    .await?;
    ensure!(
        container_names(&admitted).0.len() == 2,
        "the held pod was not injected"
    );
    scale(&client, &ns.name, &webhook, 0).await?;
    let refused = wait_for(
        "pod creation to be refused while no webhook replica answers",
        Duration::from_secs(90),
        async || {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"generateName": "refused-", "namespace": app.name,
                             "annotations": {"autocert.step.sm/name": format!("refused.{}.svc", app.name)}},
                "spec": {"containers": [{"name": "app", "image": node.tools_image, "command": ["true"]}]},
            }))?;
            match Api::<Pod>::namespaced(client.clone(), &app.name)
                .create(&PostParams::default(), &pod)
                .await
            {
                // Endpoints may still list a terminating replica for a moment.
                Ok(p) => {
                    Api::<Pod>::namespaced(client.clone(), &app.name)
                        .delete(&p.name_any(), &Default::default())
                        .await?;
                    Ok(None)
                }
                Err(kube::Error::Api(e)) => Ok(Some(e.message)),
                Err(e) => Err(e.into()),
            }
        },
        async || describe_namespace(&client, &ns.name).await,
    )
    .await?;
    ensure!(
        refused.contains("failed calling webhook"),
        "the refusal should name the webhook call: {refused}"
    );
    label_node(&client, &node.name, &held, true).await?;
    let result = async {
        // It starts now; its bootstrapper cannot reach /bootstrap until the webhook is back.
        scale(&client, &ns.name, &webhook, 2).await?;
        wait_app_pod_ready(
            &client,
            &app.name,
            "admitted-before",
            Duration::from_secs(180),
        )
        .await
    }
    .await;
    label_node(&client, &node.name, &held, false).await?;
    result?;

    // helm uninstall removes what the chart made, and leaves the CRDs and the issued Secrets.
    helm_uninstall(&env, &release, &ns.name, "120s").await?;
    ensure!(
        deployment_names(&client, &ns.name).await?.is_empty(),
        "Deployments left after helm uninstall"
    );
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in [
        "stepissuers.certmanager.step.sm",
        "stepclusterissuers.certmanager.step.sm",
    ] {
        ensure!(
            crds.get_opt(crd).await?.is_some(),
            "helm uninstall removed the CRD {crd}"
        );
    }
    let kept = Api::<Secret>::namespaced(client.clone(), &app.name)
        .get("first")
        .await?;
    ensure!(
        kept.data == before_upgrade.data,
        "the Secret issued before the upgrade changed or vanished"
    );
    let hooks =
        Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
            client.clone(),
        );
    ensure!(
        hooks.get_opt(&release).await?.is_none(),
        "helm uninstall left the MutatingWebhookConfiguration {release}"
    );
    app.delete().await
}

async fn scale(client: &Client, ns: &str, name: &str, replicas: i32) -> Result<()> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .with_context(|| format!("scaling {ns}/{name} to {replicas}"))?;
    Ok(())
}

async fn label_node(client: &Client, node: &str, value: &str, on: bool) -> Result<()> {
    let label = if on { json!(value) } else { Value::Null };
    Api::<KubeNode>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"e2e.step-operator/hold": label}}})),
        )
        .await?;
    Ok(())
}

/// The image the node runs is the image the Dockerfile describes: both are built by
/// image/rootfs.sh, and the Dockerfile's final stage, user and entrypoint match the image's config
/// (image/check-dockerfile.sh compares them with the archive `e2e/cluster.sh image` built).
#[tokio::test]
async fn node_image_is_what_the_dockerfile_builds() -> Result<()> {
    let env = Env::load()?;
    env.node()?;
    let archive = env.state.join("node/images/step-operator.tar");
    ensure!(
        archive.exists(),
        "{} is missing: build it with `e2e/cluster.sh image target/release/step-operator`",
        archive.display()
    );
    let script = e2e::chart::repo_root().join("image/check-dockerfile.sh");
    e2e::process::run(&script, &[archive.to_str().context("utf-8 path")?], &[]).await?;
    Ok(())
}
