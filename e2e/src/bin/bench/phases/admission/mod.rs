//! 4. Admission: annotated pod creates through each webhook, and through none.

mod autocert;
mod step_operator;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;

use crate::apimetrics::ApiCounts;
use crate::ctx::Ctx;
use crate::procs::Proc;
use crate::report::{AdmissionRun, ApiCost, PodStats, Report};
use crate::systems::Installed;
use crate::util::{log, ms, percentile, round};

/// The namespace label each webhook configuration selects on.
pub const WEBHOOK_LABEL: &str = "bench.step.sm/webhook";

/// A pod annotated for a certificate, as a user writes it.
fn bench_pod(name: &str, cn: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"autocert.step.sm/name": cn}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "nginx"}]}
    }))?)
}

/// A namespace `<prefix>-<run>`, selected by the webhook labelled `webhook` if any.
pub async fn labelled_ns(ctx: &Ctx, prefix: &str, webhook: Option<&str>) -> Result<String> {
    let name = format!("{prefix}-{}", ctx.suffix);
    let mut labels = BTreeMap::new();
    if let Some(w) = webhook {
        labels.insert(WEBHOOK_LABEL.to_string(), w.to_string());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(ctx.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name)
}

/// What the pod creates of one run saw.
pub struct PodRun {
    latencies_ms: Vec<f64>,
    injected: usize,
    errors: Vec<String>,
    /// API requests per pod while the pods were created (the webhook's own included).
    api: ApiCost,
}

/// Creates `n` annotated pods, `--admission-concurrency` at a time, timing each create, and
/// counts the API requests made meanwhile (kube-apiserver's counter before and after).
pub async fn create_pods(ctx: &Ctx, ns: &str, prefix: &str, n: usize) -> Result<PodRun> {
    let before = ApiCounts::scrape(&ctx.client).await?;
    let mut run = timed_creates(ctx, ns, prefix, n).await;
    let after = ApiCounts::scrape(&ctx.client).await?;
    let mut bench = ApiCounts::default();
    bench.add("pods", "create", n as f64);
    run.api = ApiCost::of(&after.since(&before), &bench, n);
    Ok(run)
}

async fn timed_creates(ctx: &Ctx, ns: &str, prefix: &str, n: usize) -> PodRun {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let results: Vec<Result<(f64, bool), String>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}{i:05}");
            let cn = format!("{name}.{ns}.svc");
            async move {
                let pod = bench_pod(&name, &cn).map_err(|e| e.to_string())?;
                let t = Instant::now();
                let created = api
                    .create(&PostParams::default(), &pod)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let injected = is_injected(&created);
                Ok((ms(t.elapsed()), injected))
            }
        })
        .buffer_unordered(ctx.opts.admission_concurrency)
        .collect()
        .await;
    let mut run = PodRun {
        latencies_ms: vec![],
        injected: 0,
        errors: vec![],
        api: ApiCost::of(&ApiCounts::default(), &ApiCounts::default(), 0),
    };
    for r in results {
        match r {
            Ok((l, inj)) => {
                run.latencies_ms.push(l);
                run.injected += usize::from(inj);
            }
            Err(e) => run.errors.push(e),
        }
    }
    run
}

/// Creates warm-up pods until one comes back injected (the apiserver's webhook informer has
/// caught up and the webhook answers).
pub async fn warm_up(ctx: &Ctx, ns: &str, what: &str, p: &mut Proc) -> Result<()> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let tries = std::cell::Cell::new(0usize);
    let last = std::cell::RefCell::new(String::new());
    let p = std::cell::RefCell::new(p);
    e2e::wait_for_every(
        &format!("a warm-up pod injected by {what}"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        async || {
            let name = format!("warmup{:03}", tries.replace(tries.get() + 1));
            let pod = bench_pod(&name, &format!("{name}.{ns}.svc"))?;
            *last.borrow_mut() = match api.create(&PostParams::default(), &pod).await {
                Ok(created) if is_injected(&created) => return Ok(Some(())),
                Ok(_) => "created but not injected".to_string(),
                Err(e) => e.to_string(),
            };
            let p = &mut *p.borrow_mut();
            if !p.is_running() {
                bail!("{what} exited; log tail:\n{}", p.log_tail(40));
            }
            Ok(None)
        },
        async || {
            format!(
                "last: {}\n{what} log tail:\n{}",
                last.borrow(),
                p.borrow().log_tail(30)
            )
        },
    )
    .await
}

/// Whether the webhook mutated the pod (it says so in an annotation).
fn is_injected(pod: &Pod) -> bool {
    pod.annotations()
        .get("autocert.step.sm/status")
        .map(String::as_str)
        == Some("injected")
}

/// Create latency p50/p99 and how many pods came back injected.
pub fn record_pods(report: &mut Report, webhook: AdmissionRun, mut run: PodRun, n: usize) {
    let key = webhook.key();
    let p50 = percentile(&mut run.latencies_ms, 50.0);
    let p99 = percentile(&mut run.latencies_ms, 99.0);
    log(format!(
        "admission {key}: {} created ({} injected, {} errors); p50 {:.1} ms, p99 {:.1} ms; API writes per pod {} (less the bench's create: {}); {:?}",
        run.latencies_ms.len(),
        run.injected,
        run.errors.len(),
        p50.unwrap_or(0.0),
        p99.unwrap_or(0.0),
        run.api.writes_all,
        run.api.writes_without_bench,
        run.api.all
    ));
    report
        .admission_p50_ms
        .insert(webhook, p50.map(|x| round(x, 1)));
    report
        .admission_p99_ms
        .insert(webhook, p99.map(|x| round(x, 1)));
    let stats = report.admission.entry(webhook).or_default();
    stats.pods = Some(PodStats {
        created: run.latencies_ms.len(),
        injected: run.injected,
        errors: run.errors.len(),
        first_error: run.errors.first().cloned(),
    });
    stats.api = Some(run.api);
    if webhook != AdmissionRun::NoWebhook && run.injected < n {
        report.notes.push(format!(
            "admission {key}: only {} of {n} pods came back injected; its latency is not that of a full mutation",
            run.injected
        ));
    }
}

pub async fn run(ctx: &Ctx, so: &Installed, report: &mut Report) {
    log(format!(
        "4. admission: {} annotated pod creates per webhook",
        ctx.opts.pods
    ));
    if let Err(e) = admission(ctx, so, report).await {
        report.error("admission", e);
    }
}

/// The baseline, then each webhook in turn.
async fn admission(ctx: &Ctx, so: &Installed, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    // Baseline: the same creates in a namespace no webhook selects.
    let ns = labelled_ns(ctx, "bench-adm-none", None).await?;
    let run = create_pods(ctx, &ns, "p", n).await?;
    record_pods(report, AdmissionRun::NoWebhook, run, n);
    // Each webhook configuration is deleted right after its run, whatever happened: a stale one
    // with failurePolicy Fail would block pod creates in its namespaces.
    let mwcs = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    if let Err(e) = step_operator::measure(ctx, so, report).await {
        report.error("admission step_operator", e);
    }
    delete_mwc(&mwcs, &step_operator::mwc_name(ctx)).await;
    if let Err(e) = autocert::measure(ctx, report).await {
        report.error("admission autocert", e);
    }
    delete_mwc(&mwcs, &autocert::mwc_name(ctx)).await;
    Ok(())
}

async fn delete_mwc(api: &Api<MutatingWebhookConfiguration>, name: &str) {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => log(format!(
            "could not delete MutatingWebhookConfiguration {name}: {e}"
        )),
    }
}
