//! The node (e2e/node.sh): a real kubelet with containerd and runc, so that tests run real pods.
//! Everything here fails with what was seen (pod status, events, logs) instead of timing out
//! silently, and fails, never skips, when the node or our image is missing.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};

use crate::process::run;
use crate::{Env, var, wait_for};

/// Where a pod built by [`podcert_pod_spec`] finds its pod certificate (`key.pem`, `chain.pem`).
pub const PODCERT_DIR: &str = "/var/run/podcert";
/// The chain of a pod built by [`podcert_pod_spec`] with a [`podcert_source`].
pub const PODCERT_CHAIN: &str = "/var/run/podcert/chain.pem";

/// A pod spec whose one container, `app`, runs `script` with the projected volume of `sources`
/// mounted read-only at [`PODCERT_DIR`].
pub fn podcert_pod_spec(
    node: &Node,
    script: &str,
    sources: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "app",
            "image": node.tools_image,
            "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "podcert", "mountPath": PODCERT_DIR, "readOnly": true}],
        }],
        "volumes": [{"name": "podcert", "projected": {"sources": sources}}],
    })
}

/// A `podCertificate` projected source for `signer`: an ECDSA P-256 key and its chain as
/// `key.pem` and `chain.pem`, with the fields of `extra` (an object) added.
pub fn podcert_source(signer: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut source = serde_json::json!({
        "signerName": signer,
        "keyType": "ECDSAP256",
        "keyPath": "key.pem",
        "certificateChainPath": "chain.pem",
    });
    if let (Some(to), Some(from)) = (source.as_object_mut(), extra.as_object()) {
        to.extend(from.clone());
    }
    serde_json::json!({"podCertificate": source})
}

/// What the tests know about the node.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// The node's IP inside the cluster's network namespace.
    pub ip: String,
    /// step-ca as pods reach it.
    pub step_ca_url: String,
    /// busybox + openssl (e2e/node/images.sh).
    pub tools_image: String,
    /// This machine's own addresses outside the namespace, which no pod may reach.
    pub host_addrs: Vec<String>,
}

impl Env {
    /// The node, or an error that says how to get one.
    pub fn node(&self) -> Result<Node> {
        if var("E2E_NODE")? != "1" {
            bail!(
                "this test needs the e2e node, and the cluster has none (started with E2E_NODE=0, \
                 or its kubelet is gone: see `e2e/cluster.sh status`). Run `e2e/cluster.sh down && \
                 e2e/cluster.sh up`"
            );
        }
        Ok(Node {
            name: var("E2E_NODE_NAME")?,
            ip: var("E2E_NODE_IP")?,
            step_ca_url: var("STEP_CA_NODE_URL")?,
            tools_image: var("E2E_TOOLS_IMAGE")?,
            host_addrs: var("E2E_HOST_ADDRS")?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Our image as the node knows it: built from the release binary by `image/build-oci.sh` and
/// imported by `e2e/cluster.sh image` (what `make e2e` does before the tests).
pub fn operator_image() -> Result<(String, String)> {
    let name = std::env::var("E2E_OPERATOR_IMAGE").map_err(|_| {
        anyhow::anyhow!(
            "E2E_OPERATOR_IMAGE is not set: build the image and import it into the node with \
             `make release && e2e/cluster.sh image target/release/step-operator`, then export \
             E2E_OPERATOR_IMAGE=<the name it printed> (make e2e does both)"
        )
    })?;
    let (repo, tag) = name
        .rsplit_once(':')
        .with_context(|| format!("E2E_OPERATOR_IMAGE={name} has no :tag"))?;
    Ok((repo.to_owned(), tag.to_owned()))
}

/// Pod phases, container states, restarts and the namespace's Events: what a timeout shows.
pub async fn describe_namespace(client: &Client, ns: &str) -> String {
    let mut out = String::new();
    match Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(pods) => {
            for p in pods {
                out.push_str(&format!(
                    "pod {}: phase {:?}, node {:?}\n",
                    p.name_any(),
                    p.status.as_ref().and_then(|s| s.phase.clone()),
                    p.spec.as_ref().and_then(|s| s.node_name.clone())
                ));
                for c in container_statuses(&p) {
                    out.push_str(&format!(
                        "  {}: ready {} restarts {} state {}\n",
                        c.name,
                        c.ready,
                        c.restart_count,
                        serde_json::to_string(&c.state).unwrap_or_default()
                    ));
                }
            }
        }
        Err(e) => out.push_str(&format!("listing pods: {e}\n")),
    }
    match Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(events) => {
            for e in events.items.iter().rev().take(25) {
                out.push_str(&format!(
                    "event {} {}/{}: {} {}\n",
                    e.type_.clone().unwrap_or_default(),
                    e.involved_object.kind.clone().unwrap_or_default(),
                    e.involved_object.name.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default()
                ));
            }
        }
        Err(e) => out.push_str(&format!("listing events: {e}\n")),
    }
    out
}

/// The logs of one container (the current instance, or the previous one).
pub async fn logs(client: &Client, ns: &str, pod: &str, container: &str, previous: bool) -> String {
    let params = LogParams {
        container: Some(container.to_owned()),
        previous,
        ..Default::default()
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .logs(pod, &params)
        .await
        .unwrap_or_else(|e| format!("<no logs of {pod}/{container}: {e}>"))
}

/// The statuses of the pod's init containers, then of its containers.
fn container_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let init = status.and_then(|s| s.init_container_statuses.as_ref());
    let main = status.and_then(|s| s.container_statuses.as_ref());
    init.into_iter().flatten().chain(main.into_iter().flatten())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the pod is Ready; fails at once when one of its containers fails to start.
pub async fn wait_pod_ready(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    wait_for(
        &format!("pod {ns}/{name} to be Ready"),
        timeout,
        async || {
            let Some(pod) = api.get_opt(name).await? else {
                return Ok(None);
            };
            fail_on_start_errors(&pod)?;
            Ok(is_ready(&pod).then_some(pod))
        },
        async || describe_namespace(client, ns).await,
    )
    .await
}

/// Waits until a pod with the label `app=<app>` is Ready and returns it.
pub async fn wait_app_pod_ready(
    client: &Client,
    ns: &str,
    app: &str,
    timeout: Duration,
) -> Result<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("app={app}"));
    wait_for(
        &format!("a Ready pod of app={app} in {ns}"),
        timeout,
        async || {
            for pod in api.list(&lp).await? {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                fail_on_start_errors(&pod)?;
                if is_ready(&pod) {
                    return Ok(Some(pod));
                }
            }
            Ok(None)
        },
        async || describe_namespace(client, ns).await,
    )
    .await
}

/// Errors no waiting cures: an image the node does not have, a container that cannot be created.
fn fail_on_start_errors(pod: &Pod) -> Result<()> {
    for c in container_statuses(pod) {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if matches!(
            reason,
            "ErrImagePull"
                | "ImagePullBackOff"
                | "ErrImageNeverPull"
                | "CreateContainerConfigError"
                | "CreateContainerError"
                | "InvalidImageName"
        ) {
            bail!(
                "container {} of pod {} cannot start: {reason}: {}",
                c.name,
                pod.name_any(),
                waiting.message.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Waits until the Job succeeded; fails at once when it failed.
pub async fn wait_job_complete(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<Job> {
    let api = Api::<Job>::namespaced(client.clone(), ns);
    wait_for(
        &format!("job {ns}/{name} to complete"),
        timeout,
        async || {
            let Some(job) = api.get_opt(name).await? else {
                return Ok(None);
            };
            let conditions = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if let Some(failed) = conditions
                .iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
            {
                bail!(
                    "job {name} failed: {} {}",
                    failed.reason.clone().unwrap_or_default(),
                    failed.message.clone().unwrap_or_default()
                );
            }
            let done = conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True");
            Ok(done.then_some(job))
        },
        async || describe_namespace(client, ns).await,
    )
    .await
}

/// Waits until the Deployment's rollout is finished and it is Available.
pub async fn wait_deployment_available(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<Deployment> {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    wait_for(
        &format!("deployment {ns}/{name} to be Available with every replica updated"),
        timeout,
        async || {
            let Some(d) = api.get_opt(name).await? else {
                return Ok(None);
            };
            let want = d.spec.replicas.unwrap_or(1);
            let s = d.status.clone().unwrap_or_default();
            let generation = d.metadata.generation.unwrap_or_default();
            let available = s.conditions.iter().flatten().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            });
            let rolled = s.observed_generation.unwrap_or_default() >= generation
                && s.updated_replicas.unwrap_or_default() == want
                && s.available_replicas.unwrap_or_default() == want
                && s.replicas.unwrap_or_default() == want;
            Ok((available && rolled).then_some(d))
        },
        async || describe_namespace(client, ns).await,
    )
    .await
}

/// `helm ARGS...` against the cluster.
pub async fn helm(env: &Env, args: &[&str]) -> Result<String> {
    let kubeconfig = env.kubeconfig.to_str().context("utf-8 path")?;
    let mut all = vec!["--kubeconfig", kubeconfig];
    all.extend_from_slice(args);
    let out = run(&env.tool("helm")?, &all, &[]).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until the webhook that serves namespace `ns` injects pods there: a server-side dry-run
/// create of an annotated pod comes back injected. A Deployment turns Available before kube-proxy
/// has programmed its Service, and the apiserver reaches webhooks through that Service.
pub async fn wait_webhook_injects(client: &Client, ns: &str, image: &str) -> Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "webhook-probe", "annotations": {"autocert.step.sm/name": format!("webhook-probe.{ns}.svc")}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }))?;
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for(
        &format!("the webhook to inject pods in {ns}"),
        Duration::from_secs(60),
        async || match pods.create(&dry_run, &pod).await {
            Ok(p) => {
                let injected = p
                    .annotations()
                    .get("autocert.step.sm/status")
                    .is_some_and(|s| s == "injected");
                if !injected {
                    bail!("a pod in {ns} was admitted without injection: is the namespace labelled for this webhook?");
                }
                Ok(Some(()))
            }
            // Refused by failurePolicy Fail while the Service does not lead to the webhook yet.
            Err(e) => Err(crate::retry(e)),
        },
        async || describe_namespace(client, ns).await,
    )
    .await
}

/// The chart's defaults plus only what the test cluster needs: our image, step-ca (its URL from a
/// pod, its root, the provisioner; the StepClusterIssuer and webhook default issuer are named
/// `label`) and `autocert.step.sm=<label>` as the webhook's namespace selector, so that a
/// release's failurePolicy=Fail webhook never sees the pods of tests running beside it.
pub fn chart_values(env: &Env, node: &Node, label: &str) -> Result<serde_json::Value> {
    let (repository, tag) = operator_image()?;
    Ok(serde_json::json!({
        "image": {"repository": repository, "tag": tag},
        "webhook": {"namespaceSelector": {"matchLabels": {"autocert.step.sm": label}}},
        "stepClusterIssuer": {
            "create": true,
            "name": label,
            "url": node.step_ca_url,
            "caBundle": crate::fixtures::base64(env.root_pem()?.as_bytes()),
            "provisioner": {"name": env.step_provisioner, "kid": env.step_provisioner_kid},
            "passwordSecret": {"create": true, "password": env.provisioner_password()?},
        },
    }))
}

/// `helm <verb> <release> charts/step-operator -n <ns> -f <values> <extra...>` (install, upgrade).
pub async fn helm_chart(
    env: &Env,
    verb: &str,
    release: &str,
    ns: &str,
    values: &serde_json::Value,
    extra: &[&str],
) -> Result<String> {
    let (_dir, file) =
        crate::chart::temp_file(&serde_json::to_string_pretty(values)?, "values.yaml")?;
    let chart = crate::chart::chart_dir();
    let mut args = vec![
        verb,
        release,
        chart.to_str().context("utf-8 path")?,
        "-n",
        ns,
        "-f",
        file.to_str().context("utf-8 path")?,
        // The shared cluster's CRDs come from `cluster.sh up` and outlive every test: no
        // release may own them (the migration tests install them with a release of their own).
        "--set",
        "crds.enabled=false",
    ];
    args.extend_from_slice(extra);
    helm(env, &args).await
}

/// `helm uninstall --wait`.
pub async fn helm_uninstall(env: &Env, release: &str, ns: &str, timeout: &str) -> Result<String> {
    helm(
        env,
        &[
            "uninstall",
            release,
            "-n",
            ns,
            "--wait",
            "--timeout",
            timeout,
        ],
    )
    .await
}

/// Creates the pods one after another, each once the previous one is Ready, and returns how long
/// each took from its create call to Ready. An app container starts only once its certificate is
/// in place (an init container or a projected volume), so this is pod start to certificate in
/// the app's hands. Sequential, so that the numbers are one pod's path, not a queue.
pub async fn pod_start_times(
    client: &Client,
    ns: &str,
    pods: impl IntoIterator<Item = Pod>,
    timeout: Duration,
) -> Result<Vec<Duration>> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let mut times = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let started = std::time::Instant::now();
        api.create(&Default::default(), &pod)
            .await
            .with_context(|| format!("creating pod {name}"))?;
        wait_pod_ready(client, ns, &name, timeout).await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// "median 1.23 s, p90 1.50 s, max 2.00 s over 20 pods".
pub fn summary(times: &[Duration]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort();
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
    };
    format!(
        "median {:.2} s, p90 {:.2} s, max {:.2} s over {} pods",
        at(0.5),
        at(0.9),
        at(1.0),
        sorted.len()
    )
}

/// The serials an app printed as `serial serial=HEX` lines (`openssl x509 -noout -serial`), in
/// order, each once. A line printed while the file was being replaced has no serial and is
/// skipped (it is not a renewal).
pub fn serials(log: &str) -> Vec<String> {
    let mut s: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix("serial serial="))
        .filter(|hex| !hex.is_empty())
        .map(str::to_owned)
        .collect();
    s.dedup();
    s
}
