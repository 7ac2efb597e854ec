//! Phase 6, the field-selected watch: step-operator started in a cluster that holds `--selector-crs`
//! CertificateRequests of another issuer, once with `--select-requests=true` (the apiserver
//! sends only `spec.issuerRef.group=certmanager.step.sm`) and once with `=false` (every request
//! is listed and filtered by us). Measured for each, from the controller's start: the time to its
//! first signed request (the initial list included), the controller's and the apiserver's CPU
//! seconds until then plus a 30 s steady window, and the controller's RSS at the end.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::fixtures::*;
use futures::StreamExt;
use kube::api::PostParams;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::procs::{CpuSnapshot, cluster_pids};
use crate::report::Report;
use crate::requests::{
    approve, issuer_ref, request, step_ref, wait_approved, wait_seen_ready, watch_ready,
};
use crate::systems::Installed;
use crate::util::{AbortOnDrop, log, round};

/// One start of step-operator with the selector on or off.
#[derive(Debug, Clone, Serialize)]
pub struct SelectorRun {
    pub select_requests: bool,
    pub foreign_crs: usize,
    pub first_sign_s: f64,
    pub controller_cpu_s: f64,
    pub apiserver_cpu_s: f64,
    pub etcd_cpu_s: f64,
    /// The controller's and the apiserver's CPU seconds in the steady window alone.
    pub steady_controller_cpu_s: f64,
    pub steady_apiserver_cpu_s: f64,
    pub rss_mib: f64,
    pub wall_s: f64,
}

pub async fn run(ctx: &Ctx, step_operator: &Installed, report: &mut Report) {
    log(format!(
        "6. the field-selected watch with {} CertificateRequests of another issuer",
        ctx.opts.selector_crs
    ));
    if let Err(e) = selector(ctx, step_operator, report).await {
        report.error("selector", e);
    }
}

async fn selector(ctx: &Ctx, s: &Installed, report: &mut Report) -> Result<()> {
    let ns = format!("bench-selector-{}", ctx.suffix);
    ensure_namespace(&ctx.client, &ns).await?;
    let t = Instant::now();
    fill(ctx, &ns, ctx.opts.selector_crs).await?;
    log(format!(
        "{} foreign requests created in {:.1} s",
        ctx.opts.selector_crs,
        t.elapsed().as_secs_f64()
    ));
    // cm-lite approves every request, foreign ones included: wait until that traffic is over,
    // so that it does not count against either run.
    crate::phases::steady::wait_for_approvals(ctx, &ns, ctx.opts.selector_crs).await?;
    for (i, select) in [true, false].into_iter().enumerate() {
        let run = one(ctx, s, select, i).await?;
        log(format!("selector {select}: {run:?}"));
        report.selector.push(run);
    }
    Ok(())
}

async fn fill(ctx: &Ctx, ns: &str, n: usize) -> Result<()> {
    let requests = namespaced(&ctx.client, ns, &certificate_requests());
    let foreign = issuer_ref("bench.example.com", "NoSuchIssuer", "none");
    let csr = ctx.csrs.last().context("no CSRs")?.1.clone();
    let errs: Vec<String> = futures::stream::iter(0..n)
        .map(|i| {
            let (requests, foreign, csr) = (requests.clone(), foreign.clone(), csr.clone());
            async move {
                let name = format!("f{i:06}");
                let o = match request(&name, &csr, foreign) {
                    Ok(o) => o,
                    Err(e) => return Some(format!("{name}: {e:#}")),
                };
                requests
                    .create(&PostParams::default(), &o)
                    .await
                    .err()
                    .map(|e| format!("{name}: {e}"))
            }
        })
        .buffer_unordered(ctx.opts.create_concurrency)
        .filter_map(|e| async move { e })
        .collect()
        .await;
    if !errs.is_empty() {
        bail!("{} creates failed, first: {}", errs.len(), errs[0]);
    }
    Ok(())
}

async fn one(ctx: &Ctx, s: &Installed, select: bool, i: usize) -> Result<SelectorRun> {
    let api = namespaced(&ctx.client, &s.ns, &certificate_requests());
    let (seen, watch) = watch_ready(ctx, &s.ns).await?;
    let _abort = AbortOnDrop(watch);
    let probe = format!("selector-probe-{i}");
    let (_, csr) = ctx.csr()?;
    api.create(
        &PostParams::default(),
        &request(&probe, csr, step_ref(&s.issuer))?,
    )
    .await?;
    if ctx.opts.approve_by_bench() {
        approve(&api, &probe).await?;
    }
    wait_approved(&ctx.client, &s.ns, &probe).await?;

    let flag = format!("--select-requests={select}");
    let started = Instant::now();
    let (mut p, _) = s.start_with(ctx, &format!("step-operator-selector-{select}"), &[&flag])?;
    let mut pids = cluster_pids(&ctx.env);
    pids.push(("controller".into(), p.pid));
    let cpu = CpuSnapshot::take(&pids);
    wait_seen_ready(&seen, &probe, &mut p, Duration::from_secs(300)).await?;
    let first_sign_s = started.elapsed().as_secs_f64();
    let steady = CpuSnapshot::take(&pids);
    // A steady window: the watch is open, nothing changes; sampled on a clock, not slept through.
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut rss = 0.0;
    for _ in 0..30 {
        every.tick().await;
        rss = p.memory()?.rss_mib;
    }
    let used = cpu.since();
    let steady_used = steady.since();
    p.stop();
    let get = |k: &str| round(used.get(k).copied().unwrap_or_default(), 2);
    let steady_get = |k: &str| round(steady_used.get(k).copied().unwrap_or_default(), 2);
    Ok(SelectorRun {
        select_requests: select,
        foreign_crs: ctx.opts.selector_crs,
        first_sign_s: round(first_sign_s, 2),
        controller_cpu_s: get("controller"),
        apiserver_cpu_s: get("apiserver"),
        etcd_cpu_s: get("etcd"),
        steady_controller_cpu_s: steady_get("controller"),
        steady_apiserver_cpu_s: steady_get("apiserver"),
        rss_mib: round(rss, 1),
        wall_s: get("wall_seconds"),
    })
}
