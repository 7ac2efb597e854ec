//! 1. Ceiling: step-ca alone, and 1b. the API ceiling: the control plane alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::Env;
use e2e::fixtures::*;
use futures::StreamExt;
use k8s_openapi::ByteString;
use kube::Client;
use kube::api::PostParams;
use serde_json::json;
use step_operator::cert_manager::{CONDITION_READY, CertificateRequestStatus, reason};

use crate::apimetrics::ApiCounts;
use crate::ctx::Ctx;
use crate::jwt;
use crate::procs::{self, cluster_pids};
use crate::report::{ApiCeilingStats, ApiCost, CeilingStats, Report};
use crate::requests::{apply_status, approve, issuer_ref, request, true_condition};
use crate::util::{log, ms, percentile, round};

pub async fn run(ctx: &Ctx, report: &mut Report) {
    log(format!(
        "1. ceiling: POST /1.0/sign at concurrency {} for {} s",
        ctx.opts.concurrency, ctx.opts.ceiling_secs
    ));
    if let Err(e) = ceiling(ctx, report).await {
        report.error("ceiling", e);
    }
    log(format!(
        "1b. API ceiling: {} CertificateRequests created, approved and written Ready by the bench itself, no issuer running",
        ctx.opts.requests
    ));
    if let Err(e) = api_ceiling(ctx, report).await {
        report.error("api ceiling", e);
    }
}

/// Phase 1: `POST /1.0/sign` straight to step-ca from `--concurrency` workers for
/// `--ceiling-secs`, each request with a fresh token and one of the pre-generated CSRs.
async fn ceiling(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let (ca, minter) = step_ca(&ctx.env)?;
    // Reuse the CSRs after the ones the controllers need (a CSR can be signed more than once;
    // every token is fresh).
    let pool: Arc<Vec<(String, String)>> = Arc::new(ctx.csrs.clone());
    // One warm-up request proves the token format before the clock starts.
    sign(&ca, &minter, &pool[0])
        .await
        .context("the warm-up sign request failed")?;
    let duration = Duration::from_secs(ctx.opts.ceiling_secs);
    let mut run = sign_for(duration, ctx.opts.concurrency, &ca, &minter, &pool).await?;
    let (ok, err, elapsed) = (run.ok, run.err, run.elapsed);
    let rate = ok as f64 / elapsed;
    log(format!(
        "ceiling: {ok} signed, {err} errors in {elapsed:.1} s = {rate:.1}/s"
    ));
    report.ceiling_signs_per_s = Some(round(rate, 1));
    report.ceiling = Some(CeilingStats {
        concurrency: ctx.opts.concurrency,
        seconds: round(elapsed, 2),
        signed: ok,
        errors: err,
        first_error: run.first_error.clone(),
        p50_ms: percentile(&mut run.latencies_ms, 50.0).map(|x| round(x, 1)),
        p99_ms: percentile(&mut run.latencies_ms, 99.0).map(|x| round(x, 1)),
    });
    if err > 0 {
        report.notes.push(format!(
            "ceiling: {err} sign requests failed; first: {:?}",
            run.first_error
        ));
    }
    Ok(())
}

/// A client for step-ca's API (trusting its root) and a token minter for its provisioner.
fn step_ca(env: &Env) -> Result<(Client, Arc<jwt::Minter>)> {
    let ca_json = std::env::var("STEP_CA_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| env.state.join("step/config/ca.json"));
    let root_pem = env.root_pem()?;
    let minter = Arc::new(jwt::Minter::new(
        &ca_json,
        &env.step_provisioner_password_file,
        &root_pem,
        &env.step_provisioner,
        &env.step_ca_url,
    )?);
    let mut config = kube::Config::new(env.step_ca_url.parse()?);
    let (_, root) = x509_parser::pem::parse_x509_pem(root_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the CA root is not PEM: {e}"))?;
    config.root_cert = Some(vec![root.contents]);
    config.read_timeout = Some(Duration::from_secs(30));
    Ok((Client::try_from(config)?, minter))
}

/// What the sign workers did, together.
#[derive(Default)]
struct SignRun {
    ok: usize,
    err: usize,
    first_error: Option<String>,
    latencies_ms: Vec<f64>,
    elapsed: f64,
}

/// Signs from `concurrency` workers until `duration` has passed, each worker one request at a
/// time on its own keep-alive connection, taking the CSRs of `pool` in turn.
async fn sign_for(
    duration: Duration,
    concurrency: usize,
    ca: &Client,
    minter: &Arc<jwt::Minter>,
    pool: &Arc<Vec<(String, String)>>,
) -> Result<SignRun> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..concurrency).map(|_| {
        let (ca, minter, pool, next) = (ca.clone(), minter.clone(), pool.clone(), next.clone());
        tokio::spawn(async move {
            let mut run = SignRun::default();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) % pool.len();
                let t = Instant::now();
                match sign(&ca, &minter, &pool[i]).await {
                    Ok(()) => {
                        run.ok += 1;
                        run.latencies_ms.push(ms(t.elapsed()));
                    }
                    Err(e) => {
                        run.err += 1;
                        run.first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            run
        })
    });
    let results = futures::future::join_all(workers).await;
    let mut all = SignRun {
        elapsed: started.elapsed().as_secs_f64(),
        ..SignRun::default()
    };
    for r in results {
        let r = r?;
        all.ok += r.ok;
        all.err += r.err;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
        all.latencies_ms.extend(r.latencies_ms);
    }
    Ok(all)
}

/// The most an issuer could reach through this control plane: the bench does the work of the
/// test client (create, approve) and of an ideal issuer that costs nothing and writes one status
/// (Ready=True with a certificate-sized chain) per request, as soon as it is approved, at the
/// same concurrency as the issuance runs. No step-ca, no watch round trip, no Event.
async fn api_ceiling(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let ns = format!("bench-api-{}", ctx.suffix);
    ensure_namespace(&ctx.client, &ns).await?;
    let api = namespaced(&ctx.client, &ns, &certificate_requests());
    let root = std::fs::read_to_string(&ctx.env.step_ca_root)?;
    // Leaf + intermediate: about two certificates' worth of PEM.
    let chain = ByteString(format!("{root}{root}").into_bytes());
    let ca = ByteString(root.into_bytes());
    // Nobody's issuer: neither controller nor cm-lite acts on these.
    let nobody = issuer_ref("bench.invalid", "NobodysIssuer", "none");
    let n = ctx.opts.requests;
    let mut objs = Vec::with_capacity(n);
    for i in 0..n {
        // The CSR is only payload here: reuse one so the signing systems keep unique ones.
        let csr = &ctx.csrs[0].1;
        objs.push((
            format!("a{i:05}"),
            request(&format!("a{i:05}"), csr, nobody.clone())?,
        ));
    }
    let watched = cluster_pids(&ctx.env);
    let api_before = ApiCounts::scrape(&ctx.client).await?;
    let cpu = procs::CpuSnapshot::take(&watched);
    let start = Instant::now();
    let done: Vec<Result<f64>> = futures::stream::iter(objs)
        .map(|(name, obj)| {
            let api = api.clone();
            let (chain, ca) = (chain.clone(), ca.clone());
            async move {
                let t = Instant::now();
                api.create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| format!("creating {name}"))?;
                approve(&api, &name).await?;
                let status = CertificateRequestStatus {
                    conditions: vec![true_condition(
                        CONDITION_READY,
                        reason::ISSUED,
                        "Certificate fetched from issuer successfully",
                    )],
                    certificate: Some(chain),
                    ca: Some(ca),
                    failure_time: None,
                };
                apply_status(&api, &name, "bench-ideal-issuer", &status)
                    .await
                    .with_context(|| format!("writing the status of {name}"))?;
                Ok(ms(t.elapsed()))
            }
        })
        .buffer_unordered(ctx.opts.create_concurrency)
        .collect()
        .await;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.since();
    let api_after = ApiCounts::scrape(&ctx.client).await?;
    // The bench's own: each request's create, approval and Ready status (both server-side apply).
    let mut bench = ApiCounts::default();
    bench.add("certificaterequests", "create", n as f64);
    bench.add("certificaterequests/status", "patch", 2.0 * n as f64);
    let api_cost = ApiCost::of(&api_after.since(&api_before), &bench, n);
    let mut lat = Vec::with_capacity(n);
    for r in done {
        lat.push(r?);
    }
    let rate = n as f64 / secs;
    log(format!(
        "API ceiling: {n} requests in {secs:.2} s = {rate:.1}/s; CPU seconds: {cpu:?}"
    ));
    report.api_ceiling_per_s = Some(round(rate, 1));
    report.api_ceiling = Some(ApiCeilingStats {
        requests: n,
        seconds: round(secs, 3),
        p50_ms: percentile(&mut lat, 50.0).map(|x| round(x, 0)),
        p99_ms: percentile(&mut lat, 99.0).map(|x| round(x, 0)),
        cpu_seconds: cpu,
        writes_per_request: "create + approve (status apply) + Ready with certificate (status apply)",
        api: Some(api_cost),
    });
    Ok(())
}

async fn sign(ca: &Client, minter: &jwt::Minter, (cn, csr): &(String, String)) -> Result<()> {
    let token = minter.token(cn, &[cn])?;
    let body = serde_json::to_vec(&json!({"csr": csr, "ott": token}))?;
    let req = kube::core::Request::new("/1.0/sign").create(&PostParams::default(), body)?;
    let text = ca.request_text(req).await?;
    if !text.contains("BEGIN CERTIFICATE") {
        bail!("unexpected /1.0/sign answer: {text}");
    }
    Ok(())
}
