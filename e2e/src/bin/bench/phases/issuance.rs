//! 2. Issuance throughput, 3. peak RSS and 5. start-up, per issuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::fixtures::*;
use futures::StreamExt;
use kube::api::PostParams;

use crate::ctx::Ctx;
use crate::procs::{self, cluster_pids};
use crate::report::{IssuanceStats, Report};
use crate::requests::{approve, request, step_ref, wait_approved, wait_seen_ready, watch_ready};
use crate::systems::{Installed, Systems};
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

async fn issuance(ctx: &Ctx, s: &Installed, report: &mut Report) -> Result<()> {
    let api = namespaced(&ctx.client, &s.ns, &certificate_requests());
    let (seen, watch) = watch_ready(ctx, &s.ns).await?;
    let _abort = AbortOnDrop(watch);
    // 5. Start-up: a request that is already approved when the process starts.
    let (cn, csr) = ctx.csr()?;
    api.create(
        &PostParams::default(),
        &request("startup", csr, step_ref(&s.issuer))?,
    )
    .await
    .with_context(|| format!("creating the start-up probe ({cn})"))?;
    if ctx.opts.approve_by_bench() {
        approve(&api, "startup").await?;
    }
    wait_approved(&ctx.client, &s.ns, "startup").await?;
    let (mut p, _) = s.start(ctx, &format!("{}-issuance", s.system.key()))?;
    let ready_at = wait_seen_ready(&seen, "startup", &mut p, Duration::from_secs(120)).await?;
    let startup = ms(ready_at - p.started);
    log(format!(
        "{}: start-up to first Ready {startup:.0} ms",
        s.system.key()
    ));
    report.startup_ms.insert(s.system, Some(round(startup, 0)));
    // Whatever else the start-up does (other issuers, cache sync) must not overlap the burst.
    let (idle_after, idle) = procs::wait_idle(p.pid, 0.05, Duration::from_secs(60)).await?;
    let idle_wait_ms = round(ms(idle_after), 0);
    if !idle {
        report.notes.push(format!(
            "{}: the controller still used more than 5 % CPU 60 s after start-up; the burst started anyway",
            s.system.key()
        ));
    }

    // 2. Throughput.
    let n = ctx.opts.requests;
    let mut objs = Vec::with_capacity(n);
    for i in 0..n {
        let (_, csr) = ctx.csr()?;
        objs.push((
            format!("r{i:05}"),
            request(&format!("r{i:05}"), csr, step_ref(&s.issuer))?,
        ));
    }
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut watched = cluster_pids(&ctx.env);
    watched.push((s.system.key().to_string(), p.pid));
    watched.push(("bench".to_string(), std::process::id()));
    let cpu = procs::CpuSnapshot::take(&watched);
    let first_create = Instant::now();
    let mem_peak_sampled = Arc::new(Mutex::new(0f64));
    let pid = p.pid;
    let sampler = {
        let peak = mem_peak_sampled.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                if let Ok(m) = procs::memory_of(pid) {
                    let mut g = peak.lock().unwrap();
                    *g = g.max(m.rss_mib);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }))
    };
    let errors: Vec<String> = futures::stream::iter(objs)
        .map(|(name, obj)| {
            let (api, created) = (api.clone(), created.clone());
            let by_bench = ctx.opts.approve_by_bench();
            async move {
                let t = Instant::now();
                if let Err(e) = api.create(&PostParams::default(), &obj).await {
                    return Some(format!("{name}: {e}"));
                }
                created.lock().unwrap().insert(name.clone(), t);
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
    let creates_done = first_create.elapsed();
    if !errors.is_empty() {
        bail!("{} creates failed, first: {}", errors.len(), errors[0]);
    }
    let timeout = Duration::from_secs(120) + Duration::from_millis(300) * n as u32;
    let deadline = Instant::now() + timeout;
    let names: Vec<String> = created.lock().unwrap().keys().cloned().collect();
    loop {
        let (ready, failed) = {
            let r = seen.ready.lock().unwrap();
            let f = seen.failed.lock().unwrap();
            (
                names.iter().filter(|n| r.contains_key(*n)).count(),
                names
                    .iter()
                    .filter(|n| f.contains_key(*n) && !r.contains_key(*n))
                    .count(),
            )
        };
        if ready + failed == n {
            break;
        }
        if !p.is_running() {
            bail!(
                "{} exited during the run; log tail:\n{}",
                p.name,
                p.log_tail(40)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "after {timeout:?}: {ready} Ready, {failed} Failed, {} neither, of {n}; {} log tail:\n{}",
                n - ready - failed,
                p.name,
                p.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(sampler);
    let cpu = cpu.since();
    log(format!(
        "{}: CPU seconds during the burst: {cpu:?}",
        s.system.key()
    ));
    let mem = p.memory()?;
    let (mut lat, mut approve_lat, last_ready, failed) = {
        let r = seen.ready.lock().unwrap();
        let a = seen.approved.lock().unwrap();
        let c = created.lock().unwrap();
        let f = seen.failed.lock().unwrap();
        let mut lat = Vec::new();
        let mut approve_lat = Vec::new();
        let mut last = first_create;
        for (name, t0) in c.iter() {
            if let Some(t1) = a.get(name) {
                approve_lat.push(ms(t1.saturating_duration_since(*t0)));
            }
            if let Some(t1) = r.get(name) {
                lat.push(ms(t1.saturating_duration_since(*t0)));
                last = last.max(*t1);
            }
        }
        let failed: Vec<String> = f
            .iter()
            .filter(|(k, _)| c.contains_key(*k))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        (lat, approve_lat, last, failed)
    };
    let total = last_ready
        .saturating_duration_since(first_create)
        .as_secs_f64();
    let ok = lat.len();
    let rate = ok as f64 / total;
    let (p50, p99) = (percentile(&mut lat, 50.0), percentile(&mut lat, 99.0));
    log(format!(
        "{}: {ok}/{n} Ready in {total:.2} s = {rate:.1}/s (creates took {:.2} s); p50 {:.0} ms, p99 {:.0} ms; peak RSS {:.1} MiB",
        s.system.key(),
        creates_done.as_secs_f64(),
        p50.unwrap_or(0.0),
        p99.unwrap_or(0.0),
        mem.hwm_mib
    ));
    report
        .throughput_per_s
        .insert(s.system, Some(round(rate, 1)));
    report
        .p50_ready_ms
        .insert(s.system, p50.map(|x| round(x, 0)));
    report
        .p99_ready_ms
        .insert(s.system, p99.map(|x| round(x, 0)));
    report
        .peak_rss_mib
        .insert(s.system, Some(round(mem.hwm_mib, 1)));
    report.issuance.insert(
        s.system,
        IssuanceStats {
            ready: ok,
            failed: failed.len(),
            seconds: round(total, 3),
            creates_seconds: round(creates_done.as_secs_f64(), 3),
            rss_end_mib: round(mem.rss_mib, 1),
            idle_wait_ms,
            create_to_approved_p50_ms: percentile(&mut approve_lat, 50.0).map(|x| round(x, 0)),
            create_to_approved_p99_ms: percentile(&mut approve_lat, 99.0).map(|x| round(x, 0)),
            rss_max_sampled_mib: round(*mem_peak_sampled.lock().unwrap(), 1),
            cpu_seconds: cpu,
            log: p.log.display().to_string(),
        },
    );
    if !failed.is_empty() {
        report.notes.push(format!(
            "{}: {} requests Failed, first: {}",
            s.system.key(),
            failed.len(),
            failed[0]
        ));
    }
    p.stop();
    Ok(())
}
