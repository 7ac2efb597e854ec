//! 3. Steady RSS: each controller in a cluster full of objects it caches but never signs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::fixtures::*;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use step_operator::cert_manager::CertificateRequest;

use crate::ctx::Ctx;
use crate::report::{ClusterObjects, Report, SteadyStats};
use crate::requests::{
    approve, approved_count, issuer_ref, request, step_ref, wait_approved, wait_seen_ready,
    watch_ready,
};
use crate::systems::{Installed, Systems};
use crate::util::{AbortOnDrop, log, round};

pub async fn run(ctx: &Ctx, systems: &Systems, report: &mut Report) {
    log(format!(
        "3. steady RSS with {} CertificateRequests and {} Secrets of 1 KiB",
        ctx.opts.steady_crs, ctx.opts.steady_secrets
    ));
    if let Err(e) = steady(ctx, systems, report).await {
        report.error("steady", e);
    }
}

async fn steady(ctx: &Ctx, systems: &Systems, report: &mut Report) -> Result<()> {
    let ns = format!("bench-steady-{}", ctx.suffix);
    ensure_namespace(&ctx.client, &ns).await?;
    let t = Instant::now();
    fill(ctx, &ns).await?;
    log(format!(
        "steady objects created in {:.1} s; waiting for cm-lite to approve them",
        t.elapsed().as_secs_f64()
    ));
    // Approvals are updates: let them finish before any controller starts.
    if let Err(e) = wait_for_approvals(ctx, &ns, ctx.opts.steady_crs).await {
        report.notes.push(format!("steady: {e:#}; measured anyway"));
    }
    let counts = cluster_counts(ctx).await?;
    log(format!(
        "cluster now holds {} CertificateRequests and {} Secrets",
        counts.certificaterequests, counts.secrets
    ));
    report.steady.cluster_objects = Some(counts);
    for s in systems.all() {
        if let Err(e) = steady_one(ctx, s, report).await {
            report.error(&format!("steady {}", s.system.key()), e);
        }
    }
    Ok(())
}

/// Creates `--steady-secrets` Secrets of 1 KiB random data and `--steady-crs` requests for an
/// issuer that neither controller serves (both cache them, neither signs them) in `ns`.
async fn fill(ctx: &Ctx, ns: &str) -> Result<()> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let requests = namespaced(&ctx.client, ns, &certificate_requests());
    let foreign = issuer_ref("bench.example.com", "NoSuchIssuer", "none");
    let csr = ctx.csrs.last().context("no CSRs")?.1.clone();
    let errs: Vec<String> =
        futures::stream::iter(0..ctx.opts.steady_secrets.max(ctx.opts.steady_crs))
            .map(|i| {
                let (secrets, requests, foreign, csr) = (
                    secrets.clone(),
                    requests.clone(),
                    foreign.clone(),
                    csr.clone(),
                );
                let opts = ctx.opts.clone();
                async move {
                    if i < opts.steady_secrets {
                        let s = random_secret(&format!("s{i:05}"));
                        if let Err(e) = secrets.create(&PostParams::default(), &s).await {
                            return Some(format!("Secret s{i:05}: {e}"));
                        }
                    }
                    if i < opts.steady_crs {
                        let o = match request(&format!("q{i:05}"), &csr, foreign) {
                            Ok(o) => o,
                            Err(e) => return Some(format!("CertificateRequest q{i:05}: {e:#}")),
                        };
                        if let Err(e) = requests.create(&PostParams::default(), &o).await {
                            return Some(format!("CertificateRequest q{i:05}: {e}"));
                        }
                    }
                    None
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

/// An Opaque Secret of 1 KiB random data (incompressible, so etcd and caches hold it all).
fn random_secret(name: &str) -> Secret {
    use rand::RngCore;
    let mut data = vec![0u8; 1024];
    rand::rng().fill_bytes(&mut data);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("data".to_string(), ByteString(data))])),
        ..Default::default()
    }
}

/// Waits until cm-lite has approved every steady request in `ns`.
pub async fn wait_for_approvals(ctx: &Ctx, ns: &str, n: usize) -> Result<usize> {
    let typed = Api::<CertificateRequest>::namespaced(ctx.client.clone(), ns);
    e2e::wait_for(
        "cm-lite to approve the steady CertificateRequests",
        Duration::from_secs(120) + Duration::from_millis(100) * n as u32,
        async || {
            let l = typed.list(&ListParams::default()).await?;
            let a = approved_count(&l.items);
            Ok((a == n).then_some(a))
        },
        async || {
            let l = typed
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            format!("{} of {n} approved", approved_count(&l))
        },
    )
    .await
}

async fn cluster_counts(ctx: &Ctx) -> Result<ClusterObjects> {
    let crs = cluster(&ctx.client, &certificate_requests())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    let secrets = Api::<Secret>::all(ctx.client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    Ok(ClusterObjects {
        certificaterequests: crs,
        secrets,
    })
}

async fn steady_one(ctx: &Ctx, s: &Installed, report: &mut Report) -> Result<()> {
    let api = namespaced(&ctx.client, &s.ns, &certificate_requests());
    let (seen, watch) = watch_ready(ctx, &s.ns).await?;
    let _abort = AbortOnDrop(watch);
    let (_, csr) = ctx.csr()?;
    api.create(
        &PostParams::default(),
        &request("steady-probe", csr, step_ref(&s.issuer))?,
    )
    .await?;
    if ctx.opts.approve_by_bench() {
        approve(&api, "steady-probe").await?;
    }
    wait_approved(&ctx.client, &s.ns, "steady-probe").await?;
    let (mut p, _) = s.start(ctx, &format!("{}-steady", s.system.key()))?;
    // A signed probe proves the caches are synced and the controller is working.
    wait_seen_ready(&seen, "steady-probe", &mut p, Duration::from_secs(180)).await?;
    // Then sample VmRSS once a second until five consecutive samples stay within 2 % of their
    // mean (or 60 s pass), and take the last one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples: Vec<f64> = Vec::new();
    // A sampling clock, one sample a second: "settled" is a property of the samples.
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let settled = loop {
        every.tick().await;
        samples.push(p.memory()?.rss_mib);
        let tail = &samples[samples.len().saturating_sub(5)..];
        if tail.len() == 5 {
            let mean = tail.iter().sum::<f64>() / 5.0;
            if tail.iter().all(|x| (x - mean).abs() <= 0.02 * mean) {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let rss = *samples.last().context("no sample")?;
    log(format!(
        "{}: steady RSS {rss:.1} MiB ({} samples, settled: {settled})",
        s.system.key(),
        samples.len()
    ));
    report.steady_rss_mib.insert(s.system, Some(round(rss, 1)));
    report.steady.systems.insert(
        s.system,
        SteadyStats {
            settled,
            samples_mib: samples.iter().map(|x| round(*x, 1)).collect(),
            log: p.log.display().to_string(),
        },
    );
    if !settled {
        report.notes.push(format!(
            "steady {}: RSS did not settle within 60 s; last sample used",
            s.system.key()
        ));
    }
    p.stop();
    Ok(())
}
