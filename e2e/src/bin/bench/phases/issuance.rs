//! 2. Issuance throughput, 3. peak RSS and 5. start-up, per issuer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::fixtures::*;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, PostParams};

use crate::apimetrics::ApiCounts;
use crate::ctx::Ctx;
use crate::procs::{self, CpuSeconds, Memory, Proc, cluster_pids};
use crate::report::{ApiCost, IssuanceStats, Report};
use crate::requests::{
    Seen, approve, request, step_ref, wait_approved, wait_seen_ready, watch_ready,
};
use crate::systems::{Installed, System, Systems};
use crate::util::{AbortOnDrop, log, ms, percentile, round};

pub async fn run(ctx: &Ctx, systems: &Systems, report: &mut Report) {
    for s in systems.all() {
        let key = s.system.key();
        log(format!(
            "2./3./5. {key}: start-up, then {} CertificateRequests at once",
            ctx.opts.requests
        ));
        if let Err(e) = issuance(ctx, s, report).await {
            report.error(&format!("issuance {key}"), e);
        }
    }
}

/// Phases 5, then 2 and 3 for one issuer: its start-up with one approved request waiting, then a
/// burst of `--requests` requests, timed from create to Ready by a watch started before either.
async fn issuance(ctx: &Ctx, s: &Installed, report: &mut Report) -> Result<()> {
    let api = namespaced(&ctx.client, &s.ns, &certificate_requests());
    let (seen, watch) = watch_ready(ctx, &s.ns).await?;
    let _abort = AbortOnDrop(watch);
    let mut p = start_up(ctx, s, &api, &seen, report).await?;
    let idle_wait_ms = wait_idle(s, &p, report).await?;
    // Built before the clock starts.
    let objs = burst_requests(ctx, s)?;
    let mut watched = cluster_pids(&ctx.env);
    watched.push((s.system.key().to_string(), p.pid));
    watched.push(("bench".to_string(), std::process::id()));
    let api_before = ApiCounts::scrape(&ctx.client).await?;
    let cpu = procs::CpuSnapshot::take(&watched);
    let first_create = Instant::now();
    let sampler = RssSampler::start(p.pid);
    let created = create_burst(ctx, &api, objs).await;
    let creates_done = first_create.elapsed();
    let (created, bench_calls) = created?;
    wait_settled(&seen, &created, &mut p).await?;
    sampler.stop();
    let cpu = cpu.since();
    log(format!(
        "{}: CPU seconds during the burst: {cpu:?}",
        s.system.key()
    ));
    let api_cost = api_cost(ctx, s, &p, &api_before, &bench_calls, created.len()).await?;
    let mem = p.memory()?;
    let burst = Burst {
        times: BurstTimes::of(&seen, &created, first_create),
        n: created.len(),
        creates_done,
        idle_wait_ms,
        mem,
        rss_max_sampled_mib: sampler.peak(),
        cpu,
        api: api_cost,
        log: p.log.display().to_string(),
    };
    record(report, s.system, burst);
    p.stop();
    Ok(())
}

/// The API requests of the burst per issued request: the apiserver's counter from before the
/// first create to when the controller is idle again (so that what it writes after the last
/// Ready, such as Events, is counted), and the bench's own calls.
async fn api_cost(
    ctx: &Ctx,
    s: &Installed,
    p: &Proc,
    before: &ApiCounts,
    bench_calls: &ApiCounts,
    issued: usize,
) -> Result<ApiCost> {
    let (_, idle) = procs::wait_idle(p.pid, 0.05, Duration::from_secs(30)).await?;
    if !idle {
        log(format!(
            "{}: the controller was still busy 30 s after the last Ready; API requests counted until now",
            s.system.key()
        ));
    }
    let after = ApiCounts::scrape(&ctx.client).await?;
    let cost = ApiCost::of(&after.since(before), bench_calls, issued);
    log(format!(
        "{}: API writes per issuance {} (less the bench's own: {}); {:?}",
        s.system.key(),
        cost.writes_all,
        cost.writes_without_bench,
        cost.all
    ));
    Ok(cost)
}

/// Phase 5, start-up: a request that is already approved when the process starts; the clock
/// runs from the spawn to that request's Ready.
async fn start_up(
    ctx: &Ctx,
    s: &Installed,
    api: &Api<DynamicObject>,
    seen: &Seen,
    report: &mut Report,
) -> Result<Proc> {
    let (cn, csr) = ctx.csr()?;
    api.create(
        &PostParams::default(),
        &request("startup", csr, step_ref(&s.issuer))?,
    )
    .await
    .with_context(|| format!("creating the start-up probe ({cn})"))?;
    if ctx.opts.approve_by_bench() {
        approve(api, "startup").await?;
    }
    wait_approved(&ctx.client, &s.ns, "startup").await?;
    let (mut p, _) = s.start(ctx, &format!("{}-issuance", s.system.key()))?;
    let ready_at = wait_seen_ready(seen, "startup", &mut p, Duration::from_secs(120)).await?;
    let startup = ms(ready_at - p.started);
    log(format!(
        "{}: start-up to first Ready {startup:.0} ms",
        s.system.key()
    ));
    report.startup_ms.insert(s.system, Some(round(startup, 0)));
    Ok(p)
}

/// Whatever else the start-up does (other issuers, cache sync) must not overlap the burst: waits
/// until the controller uses less than 5 % of a core. Returns how long that took, in ms.
async fn wait_idle(s: &Installed, p: &Proc, report: &mut Report) -> Result<f64> {
    let (idle_after, idle) = procs::wait_idle(p.pid, 0.05, Duration::from_secs(60)).await?;
    if !idle {
        report.notes.push(format!(
            "{}: the controller still used more than 5 % CPU 60 s after start-up; the burst started anyway",
            s.system.key()
        ));
    }
    Ok(round(ms(idle_after), 0))
}

/// The burst's requests, each with a CSR of its own.
fn burst_requests(ctx: &Ctx, s: &Installed) -> Result<Vec<(String, DynamicObject)>> {
    (0..ctx.opts.requests)
        .map(|i| {
            let (_, csr) = ctx.csr()?;
            let name = format!("r{i:05}");
            let obj = request(&name, csr, step_ref(&s.issuer))?;
            Ok((name, obj))
        })
        .collect()
}

/// The controller's VmRSS, sampled every 250 ms during the burst; the maximum is kept.
struct RssSampler {
    peak: Arc<Mutex<f64>>,
    task: AbortOnDrop,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(Mutex::new(0f64));
        let max = peak.clone();
        // A sampling clock, not a wait: the peak is the largest of samples 250 ms apart.
        let mut every = tokio::time::interval(Duration::from_millis(250));
        let task = AbortOnDrop(tokio::spawn(async move {
            loop {
                every.tick().await;
                if let Ok(m) = procs::memory_of(pid) {
                    let mut g = max.lock().unwrap();
                    *g = g.max(m.rss_mib);
                }
            }
        }));
        RssSampler { peak, task }
    }

    /// Stops sampling; the peak so far stays readable.
    fn stop(&self) {
        self.task.0.abort();
    }

    fn peak(&self) -> f64 {
        *self.peak.lock().unwrap()
    }
}

/// Creates (and, with `--approver bench`, approves) every request, `--create-concurrency` at a
/// time; returns when each create was sent, and the API calls the bench made.
async fn create_burst(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    objs: Vec<(String, DynamicObject)>,
) -> Result<(HashMap<String, Instant>, ApiCounts)> {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (creates, approvals) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let errors: Vec<String> = futures::stream::iter(objs)
        .map(|(name, obj)| {
            let (api, created) = (api.clone(), created.clone());
            let by_bench = ctx.opts.approve_by_bench();
            let (creates, approvals) = (&creates, &approvals);
            async move {
                let t = Instant::now();
                creates.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = api.create(&PostParams::default(), &obj).await {
                    return Some(format!("{name}: {e}"));
                }
                created.lock().unwrap().insert(name.clone(), t);
                if by_bench {
                    approvals.fetch_add(1, Ordering::Relaxed);
                }
                if by_bench && let Err(e) = approve(&api, &name).await {
                    return Some(format!("{e:#}"));
                }
                None
            }
        })
        .buffer_unordered(ctx.opts.create_concurrency)
        .filter_map(|e| async move { e })
        .collect()
        .await;
    if !errors.is_empty() {
        bail!("{} creates failed, first: {}", errors.len(), errors[0]);
    }
    let created = std::mem::take(&mut *created.lock().unwrap());
    let mut calls = ApiCounts::default();
    calls.add("certificaterequests", "create", creates.into_inner() as f64);
    // The approval is a server-side apply on the status subresource: a patch.
    calls.add(
        "certificaterequests/status",
        "patch",
        approvals.into_inner() as f64,
    );
    Ok((created, calls))
}

/// Waits until every created request was seen Ready or Failed, failing fast if the controller
/// exits. The times come from the watch; this only decides when the burst is over.
async fn wait_settled(seen: &Seen, created: &HashMap<String, Instant>, p: &mut Proc) -> Result<()> {
    let n = created.len();
    let timeout = Duration::from_secs(120) + Duration::from_millis(300) * n as u32;
    let counts = || {
        let r = seen.ready.lock().unwrap();
        let f = seen.failed.lock().unwrap();
        (
            created.keys().filter(|n| r.contains_key(*n)).count(),
            created
                .keys()
                .filter(|n| f.contains_key(*n) && !r.contains_key(*n))
                .count(),
        )
    };
    let p = std::cell::RefCell::new(p);
    e2e::wait_for_every(
        &format!("all {n} requests to be Ready or Failed"),
        timeout,
        Duration::from_millis(20),
        async || {
            let (ready, failed) = counts();
            if ready + failed == n {
                return Ok(Some(()));
            }
            let p = &mut *p.borrow_mut();
            if !p.is_running() {
                bail!(
                    "{} exited during the run; log tail:\n{}",
                    p.name,
                    p.log_tail(40)
                );
            }
            Ok(None)
        },
        async || {
            let (ready, failed) = counts();
            let p = p.borrow();
            format!(
                "{ready} Ready, {failed} Failed, {} neither, of {n}; {} log tail:\n{}",
                n - ready - failed,
                p.name,
                p.log_tail(30)
            )
        },
    )
    .await
}

/// Per request: create→Approved and create→Ready (ms), the last Ready, and the failures.
struct BurstTimes {
    ready_ms: Vec<f64>,
    approved_ms: Vec<f64>,
    last_ready: Instant,
    first_create: Instant,
    failed: Vec<String>,
}

impl BurstTimes {
    fn of(seen: &Seen, created: &HashMap<String, Instant>, first_create: Instant) -> BurstTimes {
        let r = seen.ready.lock().unwrap();
        let a = seen.approved.lock().unwrap();
        let f = seen.failed.lock().unwrap();
        let mut times = BurstTimes {
            ready_ms: Vec::new(),
            approved_ms: Vec::new(),
            last_ready: first_create,
            first_create,
            failed: Vec::new(),
        };
        for (name, t0) in created {
            if let Some(t1) = a.get(name) {
                times
                    .approved_ms
                    .push(ms(t1.saturating_duration_since(*t0)));
            }
            if let Some(t1) = r.get(name) {
                times.ready_ms.push(ms(t1.saturating_duration_since(*t0)));
                times.last_ready = times.last_ready.max(*t1);
            }
        }
        times.failed = f
            .iter()
            .filter(|(k, _)| created.contains_key(*k))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        times
    }
}

/// What one burst measured, before it becomes the report's numbers.
struct Burst {
    times: BurstTimes,
    n: usize,
    creates_done: Duration,
    idle_wait_ms: f64,
    mem: Memory,
    rss_max_sampled_mib: f64,
    cpu: CpuSeconds,
    api: ApiCost,
    log: String,
}

/// Throughput (phase 2) = requests Ready / (last Ready - first create); peak RSS (phase 3) =
/// VmHWM.
fn record(report: &mut Report, system: System, b: Burst) {
    let Burst { mut times, n, .. } = b;
    let total = times
        .last_ready
        .saturating_duration_since(times.first_create)
        .as_secs_f64();
    let ok = times.ready_ms.len();
    let rate = ok as f64 / total;
    let p50 = percentile(&mut times.ready_ms, 50.0);
    let p99 = percentile(&mut times.ready_ms, 99.0);
    log(format!(
        "{}: {ok}/{n} Ready in {total:.2} s = {rate:.1}/s (creates took {:.2} s); p50 {:.0} ms, p99 {:.0} ms; peak RSS {:.1} MiB",
        system.key(),
        b.creates_done.as_secs_f64(),
        p50.unwrap_or(0.0),
        p99.unwrap_or(0.0),
        b.mem.hwm_mib
    ));
    report.throughput_per_s.insert(system, Some(round(rate, 1)));
    report.p50_ready_ms.insert(system, p50.map(|x| round(x, 0)));
    report.p99_ready_ms.insert(system, p99.map(|x| round(x, 0)));
    report
        .peak_rss_mib
        .insert(system, Some(round(b.mem.hwm_mib, 1)));
    let approved = &mut times.approved_ms;
    report.issuance.insert(
        system,
        IssuanceStats {
            ready: ok,
            failed: times.failed.len(),
            seconds: round(total, 3),
            creates_seconds: round(b.creates_done.as_secs_f64(), 3),
            rss_end_mib: round(b.mem.rss_mib, 1),
            idle_wait_ms: b.idle_wait_ms,
            create_to_approved_p50_ms: percentile(approved, 50.0).map(|x| round(x, 0)),
            create_to_approved_p99_ms: percentile(approved, 99.0).map(|x| round(x, 0)),
            rss_max_sampled_mib: round(b.rss_max_sampled_mib, 1),
            cpu_seconds: b.cpu,
            api: Some(b.api),
            log: b.log,
        },
    );
    if let Some(first) = times.failed.first() {
        report.notes.push(format!(
            "{}: {} requests Failed, first: {first}",
            system.key(),
            times.failed.len(),
        ));
    }
}
