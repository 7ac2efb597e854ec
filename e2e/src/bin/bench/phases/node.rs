//! Phase 7, on the e2e node (`--only node`, run by e2e/bench.sh on a cluster started with the
//! node): pod create → Ready for `--node-pods` pods per way of getting a certificate, one pod
//! after another (each number is one pod's path, not a queue). An app container starts only once
//! its certificate is on disk (an init container, or the kubelet's projected volume), so Ready is
//! "the app holds its certificate":
//! - autocert v0.20.6 (its webhook, token Secret, bootstrapper; e2e::autocert);
//! - step-operator's webhook (the annotation path, installed by its chart);
//! - pod certificates (a `podCertificate` projected volume, signed by step-operator's controller).
//!
//! Each system gets one warm-up pod first (not counted): the first start of an image is not what
//! is compared.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::autocert::{LABEL, delete_autocert, deploy_autocert, wait_injected_by};
use e2e::node::{
    Node, chart_values, helm_chart, helm_uninstall, operator_image, pod_start_times,
    wait_deployment_available,
};
use e2e::operator::Process;
use e2e::{Env, TestNamespace, random_suffix};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde::Serialize;
use serde_json::json;

use crate::util::{log, percentile};

/// One system's pod start times, in milliseconds, in creation order (warm-up excluded).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PodTimes {
    pub pods: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub times_ms: Vec<f64>,
}

impl PodTimes {
    /// The same nearest-rank percentiles as the rest of the report ([`percentile`]).
    pub fn of(times: &[Duration]) -> PodTimes {
        let ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
        let mut sorted = ms.clone();
        let mut at = |p: f64| percentile(&mut sorted, p).unwrap_or_default();
        PodTimes {
            pods: ms.len(),
            p50_ms: at(50.0),
            p99_ms: at(99.0),
            max_ms: at(100.0),
            times_ms: ms,
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(180);

fn annotated_pod(tools: &str, name: &str, ns: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"autocert.step.sm/name": format!("{name}.{ns}.svc")}},
        "spec": {"terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "app", "image": tools, "command": ["sleep", "3600"]}]},
    }))?)
}

fn podcert_pod(tools: &str, name: &str, signer: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": tools, "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "podcert", "mountPath": "/var/run/podcert", "readOnly": true}]}],
            "volumes": [{"name": "podcert", "projected": {"sources": [{"podCertificate": {
                "signerName": signer, "keyType": "ECDSAP256",
                "keyPath": "key.pem", "certificateChainPath": "chain.pem"}}]}}],
        },
    }))?)
}

/// Warm-up pod, then `n` measured pods, in a namespace `make` builds names in.
async fn time_pods(
    client: &Client,
    ns: &str,
    n: usize,
    make: impl Fn(&str) -> Result<Pod>,
) -> Result<PodTimes> {
    pod_start_times(client, ns, [make("warmup")?], TIMEOUT).await?;
    let pods = (0..n)
        .map(|i| make(&format!("p{i}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(PodTimes::of(
        &pod_start_times(client, ns, pods, TIMEOUT).await?,
    ))
}

/// Deletes the measured namespace and waits until it is gone: while the kubelet tears its 51
/// pods down, the next system's pods would wait behind it (one pod in 50 then took ~14 s).
async fn delete_and_wait(client: &Client, ns: TestNamespace) -> Result<()> {
    let name = ns.name.clone();
    ns.delete().await?;
    let namespaces = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    e2e::wait_for(
        &format!("namespace {name} to be gone"),
        Duration::from_secs(300),
        async || Ok(namespaces.get_opt(&name).await?.is_none().then_some(())),
        async || e2e::node::describe_namespace(client, &name).await,
    )
    .await
}

async fn labelled_namespace(client: &Client, prefix: &str, label: &str) -> Result<TestNamespace> {
    TestNamespace::create_labelled(
        client,
        prefix,
        BTreeMap::from([(LABEL.to_owned(), label.to_owned())]),
    )
    .await
}

async fn autocert(env: &Env, node: &Node, client: &Client, n: usize) -> Result<PodTimes> {
    let suffix = random_suffix();
    let label = format!("bench-autocert-{suffix}");
    let deployed = deploy_autocert(env, node, client, &label, &suffix).await?;
    let ns = labelled_namespace(client, "bench-node-autocert", &label).await?;
    wait_injected_by(
        client,
        &ns.name,
        &node.tools_image,
        "localhost/autocert-bootstrapper",
    )
    .await?;
    let times = time_pods(client, &ns.name, n, |p| {
        annotated_pod(&node.tools_image, p, &ns.name)
    })
    .await;
    let name = ns.name.clone();
    delete_and_wait(client, ns).await?;
    delete_autocert(client, deployed, &name).await?;
    times
}

async fn annotation_path(env: &Env, node: &Node, client: &Client, n: usize) -> Result<PodTimes> {
    let suffix = random_suffix();
    let label = format!("bench-so-{suffix}");
    let release_ns = TestNamespace::create(client, "bench-node-so").await?;
    let mut values = chart_values(env, node, &label)?;
    values["controller"] = json!({"enabled": false});
    values["webhook"]["replicas"] = json!(1);
    let release = format!("bench-{suffix}");
    helm_chart(env, "install", &release, &release_ns.name, &values, &[]).await?;
    let webhook = format!("{release}-step-operator-webhook");
    wait_deployment_available(client, &release_ns.name, &webhook, TIMEOUT).await?;
    let ns = labelled_namespace(client, "bench-node-annotated", &label).await?;
    let (ours, _) = operator_image()?;
    wait_injected_by(client, &ns.name, &node.tools_image, &ours).await?;
    let times = time_pods(client, &ns.name, n, |p| {
        annotated_pod(&node.tools_image, p, &ns.name)
    })
    .await;
    delete_and_wait(client, ns).await?;
    helm_uninstall(env, &release, &release_ns.name, "120s").await?;
    release_ns.delete().await?;
    times
}

async fn pod_certificates(env: &Env, node: &Node, client: &Client, n: usize) -> Result<PodTimes> {
    let controller = Process::start(
        env,
        "bench-node-controller",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            "default",
        ],
        &[("POD_NAMESPACE", "default")],
    )?;
    let log = controller.log.display().to_string();
    let issuer = e2e::fixtures::ready_cluster_issuer(env, client, "bench-node", &log)
        .await
        .context("a StepClusterIssuer for the pod certificates")?;
    let signer = format!("stepclusterissuers.certmanager.step.sm/{issuer}");
    let ns = TestNamespace::create(client, "bench-node-podcert").await?;
    let times = time_pods(client, &ns.name, n, |p| {
        podcert_pod(&node.tools_image, p, &signer)
    })
    .await;
    delete_and_wait(client, ns).await?;
    drop(controller);
    times
}

/// Every system in turn; one that fails is recorded with its error and the others still run.
pub async fn measure(
    env: &Env,
    client: &Client,
    n: usize,
) -> BTreeMap<String, Result<PodTimes, String>> {
    let mut out = BTreeMap::new();
    let node = match env.node() {
        Ok(n) => n,
        Err(e) => {
            out.insert("node".to_string(), Err(format!("{e:#}")));
            return out;
        }
    };
    log(format!("node: {n} pods through autocert"));
    out.insert(
        "autocert".into(),
        autocert(env, &node, client, n)
            .await
            .map_err(|e| format!("{e:#}")),
    );
    log(format!("node: {n} pods through step-operator's webhook"));
    out.insert(
        "step-operator annotation".into(),
        annotation_path(env, &node, client, n)
            .await
            .map_err(|e| format!("{e:#}")),
    );
    log(format!("node: {n} pods with pod certificates"));
    out.insert(
        "step-operator pod certificates".into(),
        pod_certificates(env, &node, client, n)
            .await
            .map_err(|e| format!("{e:#}")),
    );
    out
}

/// Phase 7 into the report: the systems measured, the errors of those that failed.
pub async fn run(ctx: &crate::ctx::Ctx, report: &mut crate::report::Report) {
    for (system, outcome) in measure(&ctx.env, &ctx.client, ctx.opts.node_pods).await {
        match outcome {
            Ok(times) => {
                report.node_pod_ready.insert(system, times);
            }
            Err(e) => report.errors.push(format!("node phase, {system}: {e}")),
        }
    }
}

/// The node phase's table, or nothing when it did not run.
pub fn markdown(results: &BTreeMap<String, PodTimes>) -> String {
    if results.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n### Pod create → Ready on the e2e node (the app starts with its certificate on disk)\n\n\
         | how the pod gets its certificate | pods | p50 (ms) | p99 (ms) | max (ms) |\n|---|---|---|---|---|\n",
    );
    for (system, t) in results {
        s.push_str(&format!(
            "| {system} | {} | {:.0} | {:.0} | {:.0} |\n",
            t.pods, t.p50_ms, t.p99_ms, t.max_ms
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_times_take_quantiles_of_the_measured_pods() {
        let t: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = PodTimes::of(&t);
        assert_eq!(
            (p.pods, p.p50_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(PodTimes::of(&[]).pods, 0);
        let table = markdown(&BTreeMap::from([("autocert".to_string(), p)]));
        assert!(
            table.contains("| autocert | 100 | 50 | 99 | 100 |"),
            "{table}"
        );
        assert!(markdown(&BTreeMap::new()).is_empty());
    }
}
