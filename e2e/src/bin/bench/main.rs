//! `make bench`: step-operator against step-ca's own ceiling, step-issuer and autocert, on the
//! local control plane of `e2e/cluster.sh`. Each system runs alone, one after the other, on the
//! same apiserver and the same step-ca. The method is described in `e2e/BENCHMARKS.md`.
//!
//! Usage (normally through `e2e/bench.sh`): `bench --help`, with the cluster's `env` exported.
//! Results: `$E2E_STATE/bench/latest.{json,md}`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use e2e::fixtures::*;
use e2e::operator::{free_port, http_get};
use e2e::{Env, random_suffix};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

mod jwt;
mod procs;

use procs::Proc;

const SO: &str = "step_operator";
const SI: &str = "step_issuer";
const AC: &str = "autocert";

/// The bench's arguments; defaults are the issue's counts (e2e/BENCHMARKS.md).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bench",
    about = "step-operator against step-ca's ceiling, step-issuer and autocert",
    after_help = "Run through e2e/bench.sh (the cluster's env exported); method: e2e/BENCHMARKS.md"
)]
struct Opts {
    /// CertificateRequests per system in the issuance burst, and in the API ceiling run.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Annotated pod creates per webhook.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// CertificateRequests of a foreign issuer in the cluster while steady RSS is measured.
    #[arg(long, default_value_t = 5000)]
    steady_crs: usize,
    /// Secrets of 1 KiB in the cluster while steady RSS is measured.
    #[arg(long, default_value_t = 5000)]
    steady_secrets: usize,
    /// How long the ceiling phase signs straight against step-ca.
    #[arg(long, default_value_t = 20)]
    ceiling_secs: u64,
    /// Parallel sign requests in the ceiling phase; also the controller's `--concurrency`.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Parallel creates by the bench client.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// Parallel pod creates in the admission phase.
    #[arg(long, default_value_t = 8)]
    admission_concurrency: usize,
    /// Who approves the requests the controllers sign.
    #[arg(long, value_enum, default_value_t = Approver::Bench)]
    approver: Approver,
    /// The phases to run, comma-separated; all when omitted.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Approver {
    /// The bench, right after each create (server-side apply of the Approved condition).
    Bench,
    /// cm-lite's approver (cert-manager's).
    CmLite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Ceiling,
    Issuance,
    Steady,
    Admission,
}

impl Opts {
    fn wants(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }

    /// Approve the controllers' requests right after each create (else: cm-lite's approver).
    fn approve_by_bench(&self) -> bool {
        self.approver == Approver::Bench
    }
}

fn log(msg: impl AsRef<str>) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 86400)
        .unwrap_or(0);
    eprintln!(
        "[bench {:02}:{:02}:{:02}] {}",
        t / 3600,
        t / 60 % 60,
        t % 60,
        msg.as_ref()
    );
}

/// Runs a program and returns its stdout (fails with its output on a non-zero exit).
pub async fn run_out(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<String> {
    let out = e2e::process::run(program, args, envs).await?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Nearest-rank percentile of `v` (sorted in place), in the unit of `v`.
fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Everything the run found, written as JSON at the end.
#[derive(Default)]
struct Report {
    values: serde_json::Map<String, Value>,
    errors: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    fn set(&mut self, path: &[&str], v: Value) {
        let mut cur = &mut self.values;
        for key in &path[..path.len() - 1] {
            cur = cur
                .entry(key.to_string())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("report paths are objects");
        }
        cur.insert(path[path.len() - 1].to_string(), v);
    }
    fn get(&self, path: &[&str]) -> Option<f64> {
        let mut cur = self.values.get(path[0])?;
        for key in &path[1..] {
            cur = cur.get(key)?;
        }
        cur.as_f64()
    }
    fn error(&mut self, phase: &str, e: anyhow::Error) {
        let msg = format!("{phase}: {e:#}");
        log(format!("ERROR {msg}"));
        self.errors.push(msg);
    }
}

struct Ctx {
    env: Env,
    client: Client,
    opts: Opts,
    suffix: String,
    csrs: Vec<(String, String)>,
    next_csr: AtomicUsize,
}

impl Ctx {
    /// A unique CSR (CN and the only DNS SAN are the same name).
    fn csr(&self) -> Result<&(String, String)> {
        let i = self.next_csr.fetch_add(1, Ordering::Relaxed);
        self.csrs
            .get(i)
            .context("ran out of pre-generated CSRs (bug in the count)")
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = Opts::parse();
    let env = Env::load()?;
    let client = env.client().await?;
    let out_dir = env.state.join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let suffix = random_suffix();
    let mut report = Report::default();
    let date = run_out(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"], &[]).await?;
    report.set(&["date"], json!(date.trim()));
    report.set(
        &["command"],
        json!(std::env::args().collect::<Vec<_>>().join(" ")),
    );
    report.set(
        &["counts"],
        json!({
            "requests": opts.requests, "pods": opts.pods, "steady_crs": opts.steady_crs,
            "steady_secrets": opts.steady_secrets, "ceiling_secs": opts.ceiling_secs,
            "concurrency": opts.concurrency, "create_concurrency": opts.create_concurrency,
            "admission_concurrency": opts.admission_concurrency,
            "approver": if opts.approve_by_bench() { "bench (server-side apply of the Approved condition right after each create)" } else { "cm-lite (cert-manager's approver)" },
        }),
    );
    report.set(&["versions"], versions().await);
    if let Ok(busy) = std::env::var("BENCH_BUSY")
        && !busy.trim().is_empty()
    {
        report.notes.push(format!(
            "other CPU-heavy processes were running at the start: {}",
            busy.trim()
        ));
    }

    // Unique CSRs for every CertificateRequest that a controller signs: per system the start-up
    // probe, the steady probe and the throughput batch.
    let n_csrs = 2 * (opts.requests + 2) + 4;
    log(format!("generating {n_csrs} ECDSA P-256 CSRs with openssl"));
    let csrs = generate_csrs(&suffix, n_csrs).await?;
    let ctx = Ctx {
        env,
        client,
        opts,
        suffix,
        csrs,
        next_csr: AtomicUsize::new(0),
    };

    if ctx.opts.wants(Phase::Ceiling) {
        log(format!(
            "1. ceiling: POST /1.0/sign at concurrency {} for {} s",
            ctx.opts.concurrency, ctx.opts.ceiling_secs
        ));
        if let Err(e) = ceiling(&ctx, &mut report).await {
            report.error("ceiling", e);
        }
    }

    if ctx.opts.wants(Phase::Ceiling) {
        log(format!(
            "1b. API ceiling: {} CertificateRequests created, approved and written Ready by the bench itself, no issuer running",
            ctx.opts.requests
        ));
        if let Err(e) = api_ceiling(&ctx, &mut report).await {
            report.error("api ceiling", e);
        }
    }

    let mut systems: BTreeMap<&str, System> = BTreeMap::new();
    for sys in [SO, SI] {
        systems.insert(sys, System::create(&ctx, sys).await?);
    }
    if ctx.opts.wants(Phase::Issuance) {
        for sys in [SO, SI] {
            log(format!(
                "2./3./5. {sys}: start-up, then {} CertificateRequests at once",
                ctx.opts.requests
            ));
            let s = &systems[sys];
            if let Err(e) = issuance(&ctx, s, &mut report).await {
                report.error(&format!("issuance {sys}"), e);
            }
        }
    }
    if ctx.opts.wants(Phase::Steady) {
        log(format!(
            "3. steady RSS with {} CertificateRequests and {} Secrets of 1 KiB",
            ctx.opts.steady_crs, ctx.opts.steady_secrets
        ));
        if let Err(e) = steady(&ctx, &systems, &mut report).await {
            report.error("steady", e);
        }
    }
    if ctx.opts.wants(Phase::Admission) {
        log(format!(
            "4. admission: {} annotated pod creates per webhook",
            ctx.opts.pods
        ));
        if let Err(e) = admission(&ctx, &systems[SO], &mut report).await {
            report.error("admission", e);
        }
    }

    // The documented keys are always present; null means "not measured" (see notes/errors).
    for path in [
        &["ceiling_signs_per_s"][..],
        &["api_ceiling_per_s"],
        &["throughput_per_s", SO],
        &["throughput_per_s", SI],
        &["p99_ready_ms", SO],
        &["p99_ready_ms", SI],
        &["peak_rss_mib", SO],
        &["peak_rss_mib", SI],
        &["steady_rss_mib", SO],
        &["steady_rss_mib", SI],
        &["admission_p99_ms", SO],
        &["admission_p99_ms", AC],
        &["startup_ms", SO],
        &["startup_ms", SI],
    ] {
        if report.get(path).is_none() {
            report.set(path, Value::Null);
        }
    }
    ratios(&mut report);
    let mut doc = Value::Object(report.values.clone());
    doc["errors"] = json!(report.errors);
    doc["notes"] = json!(report.notes);
    let text = serde_json::to_string_pretty(&doc)?;
    std::fs::write(out_dir.join("latest.json"), &text)?;
    let md = markdown(&doc);
    std::fs::write(out_dir.join("latest.md"), &md)?;
    println!("{md}");
    println!("JSON: {}", out_dir.join("latest.json").display());
    if !report.errors.is_empty() {
        bail!(
            "{} phase(s) failed; see errors in the JSON",
            report.errors.len()
        );
    }
    Ok(())
}

async fn versions() -> Value {
    let mut v = serde_json::Map::new();
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("versions.env");
    for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
        if let Some((k, val)) = line.split_once('=')
            && !k.starts_with('#')
        {
            let val = val.split_whitespace().next().unwrap_or_default();
            v.insert(k.trim().to_lowercase(), json!(val));
        }
    }
    if let Ok(bin) = e2e::operator::binary() {
        let ver = run_out(&bin, &["--version"], &[]).await.unwrap_or_default();
        v.insert("step_operator".into(), json!(ver.trim()));
        v.insert(
            "step_operator_binary".into(),
            json!(bin.display().to_string()),
        );
    }
    if let Ok(rev) = run_out(Path::new("git"), &["rev-parse", "--short", "HEAD"], &[]).await {
        v.insert("git".into(), json!(rev.trim()));
    }
    Value::Object(v)
}

async fn generate_csrs(suffix: &str, n: usize) -> Result<Vec<(String, String)>> {
    let results: Vec<Result<(String, String)>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let cn = format!("r{i}-{suffix}.bench.example");
            let out = run_out(
                Path::new("openssl"),
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    "/dev/null",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-addext",
                    &format!("subjectAltName=DNS:{cn}"),
                ],
                &[],
            )
            .await?;
            Ok((cn, out))
        })
        .buffer_unordered(2)
        .collect()
        .await;
    results.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Ceiling

async fn ceiling(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let env = &ctx.env;
    let ca_json = std::env::var("STEP_CA_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| env.state.join("step/config/ca.json"));
    let minter = Arc::new(
        jwt::Minter::new(
            &env.tool("step")?,
            &ca_json,
            &env.step_provisioner_password_file,
            &env.step_ca_root,
            &env.step_provisioner,
            &env.step_ca_url,
        )
        .await?,
    );
    let mut config = kube::Config::new(env.step_ca_url.parse()?);
    let pem = env.root_pem()?;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    config.root_cert = Some(vec![jwt::b64_decode(&b64)?]);
    config.read_timeout = Some(Duration::from_secs(30));
    let ca = Client::try_from(config)?;
    // Reuse the CSRs after the ones the controllers need (a CSR can be signed more than once;
    // every token is fresh).
    let pool: Arc<Vec<(String, String)>> = Arc::new(ctx.csrs.clone());
    // One warm-up request proves the token format before the clock starts.
    sign(&ca, &minter, &pool[0])
        .await
        .context("the warm-up sign request failed")?;
    let deadline = Instant::now() + Duration::from_secs(ctx.opts.ceiling_secs);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..ctx.opts.concurrency).map(|_| {
        let (ca, minter, pool, next) = (ca.clone(), minter.clone(), pool.clone(), next.clone());
        tokio::spawn(async move {
            let (mut ok, mut err, mut first_err, mut lat) = (0usize, 0usize, None, Vec::new());
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) % pool.len();
                let t = Instant::now();
                match sign(&ca, &minter, &pool[i]).await {
                    Ok(()) => {
                        ok += 1;
                        lat.push(ms(t.elapsed()));
                    }
                    Err(e) => {
                        err += 1;
                        first_err.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            (ok, err, first_err, lat)
        })
    });
    let results = futures::future::join_all(workers).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (mut ok, mut err, mut first, mut lat) = (0, 0, None, Vec::new());
    for r in results {
        let (o, e, f, l) = r?;
        ok += o;
        err += e;
        if first.is_none() {
            first = f;
        }
        lat.extend(l);
    }
    let rate = ok as f64 / elapsed;
    log(format!(
        "ceiling: {ok} signed, {err} errors in {elapsed:.1} s = {rate:.1}/s"
    ));
    report.set(&["ceiling_signs_per_s"], json!(round(rate, 1)));
    report.set(
        &["ceiling"],
        json!({
            "concurrency": ctx.opts.concurrency, "seconds": round(elapsed, 2), "signed": ok, "errors": err,
            "first_error": first, "p50_ms": percentile(&mut lat.clone(), 50.0).map(|x| round(x, 1)),
            "p99_ms": percentile(&mut lat, 99.0).map(|x| round(x, 1)),
        }),
    );
    if err > 0 {
        report.notes.push(format!(
            "ceiling: {err} sign requests failed; first: {first:?}"
        ));
    }
    Ok(())
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
    let chain = base64(format!("{root}{root}").as_bytes());
    let ca = base64(root.as_bytes());
    // Nobody's issuer: neither controller nor cm-lite acts on these.
    let nobody = json!({"group": "bench.invalid", "kind": "NobodysIssuer", "name": "none"});
    let n = ctx.opts.requests;
    let mut objs = Vec::with_capacity(n);
    for i in 0..n {
        // The CSR is only payload here: reuse one so the signing systems keep unique ones.
        let csr = &ctx.csrs[0].1;
        objs.push((
            format!("a{i:05}"),
            object(certificate_request(
                &format!("a{i:05}"),
                csr,
                nobody.clone(),
            ))?,
        ));
    }
    let watched = cluster_pids(&ctx.env);
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
                let status = json!({
                    "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True", "reason": "Issued",
                            "message": "Certificate fetched from issuer successfully",
                            "lastTransitionTime": now_rfc3339()}],
                        "certificate": chain, "ca": ca,
                    }
                });
                api.patch_status(
                    &name,
                    &kube::api::PatchParams::apply("bench-ideal-issuer").force(),
                    &kube::api::Patch::Apply(&status),
                )
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
    let mut lat = Vec::with_capacity(n);
    for r in done {
        lat.push(r?);
    }
    let rate = n as f64 / secs;
    log(format!(
        "API ceiling: {n} requests in {secs:.2} s = {rate:.1}/s; CPU seconds: {cpu}"
    ));
    report.set(&["api_ceiling_per_s"], json!(round(rate, 1)));
    report.set(
        &["api_ceiling"],
        json!({
            "requests": n, "seconds": round(secs, 3),
            "p50_ms": percentile(&mut lat, 50.0).map(|x| round(x, 0)),
            "p99_ms": percentile(&mut lat, 99.0).map(|x| round(x, 0)),
            "cpu_seconds": cpu,
            "writes_per_request": "create + approve (status apply) + Ready with certificate (status apply)",
        }),
    );
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

// ---------------------------------------------------------------------------------------------
// Systems: a namespace, a password Secret and a StepClusterIssuer each, never shared.

struct System {
    key: &'static str,
    ns: String,
    issuer: String,
}

impl System {
    async fn create(ctx: &Ctx, key: &'static str) -> Result<System> {
        let short = if key == SO { "so" } else { "si" };
        let ns = format!("bench-{short}-{}", ctx.suffix);
        let issuer = ns.clone();
        ensure_namespace(&ctx.client, &ns).await?;
        // Written without a trailing newline: step-issuer uses the value verbatim.
        password_secret(
            &ctx.client,
            &ns,
            "provisioner",
            "password",
            &ctx.env.provisioner_password()?,
        )
        .await?;
        apply(
            &cluster(&ctx.client, &step_cluster_issuers()),
            json!({
                "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
                "metadata": {"name": issuer},
                "spec": issuer_spec(&ctx.env, json!({"name": "provisioner", "key": "password", "namespace": ns}))?,
            }),
        )
        .await?;
        Ok(System { key, ns, issuer })
    }

    fn start(&self, ctx: &Ctx, name: &str) -> Result<(Proc, Option<u16>)> {
        let kubeconfig = ctx.env.kubeconfig.to_str().context("utf-8")?;
        if self.key == SO {
            let port = free_port()?;
            let admin = format!("127.0.0.1:{port}");
            let concurrency = ctx.opts.concurrency.to_string();
            let p = Proc::spawn(
                &ctx.env,
                name,
                &[],
                &e2e::operator::binary()?,
                &[
                    "controller",
                    "--leader-elect=false",
                    "--cluster-resource-namespace",
                    &self.ns,
                    "--concurrency",
                    &concurrency,
                ],
                &[
                    ("KUBECONFIG", kubeconfig),
                    ("STEP_OPERATOR_ADMIN_ADDR", &admin),
                    ("RUST_LOG", "info,kube=warn"),
                ],
            )?;
            Ok((p, Some(port)))
        } else {
            // Defaults: metrics off ("0"), leader election off, approval check on.
            let p = Proc::spawn(
                &ctx.env,
                name,
                &[],
                &ctx.env.tool("step-issuer")?,
                &["--kubeconfig", kubeconfig],
                &[("KUBECONFIG", kubeconfig)],
            )?;
            Ok((p, None))
        }
    }
}

fn certificate_request(name: &str, csr: &str, issuer_ref: Value) -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64(csr.as_bytes()),
            "issuerRef": issuer_ref,
            "usages": ["digital signature", "key encipherment", "server auth"],
        }
    })
}

fn step_ref(issuer: &str) -> Value {
    json!({"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": issuer})
}

/// RFC 3339 UTC timestamp of now (seconds precision), for condition times.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Approves a CertificateRequest the way an approver does, by server-side apply of only the
/// `Approved` condition on the status subresource (`conditions` is a map list keyed by `type`, so
/// no other condition is touched, whoever wrote it).
async fn approve(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    let patch = json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "bench",
            "message": "approved by the step-operator benchmark", "lastTransitionTime": now_rfc3339(),
        }]}
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply("bench").force(),
        &kube::api::Patch::Apply(&patch),
    )
    .await
    .with_context(|| format!("approving {name}"))?;
    Ok(())
}

/// First time each CertificateRequest of a namespace was seen Ready=True (or Failed), from a
/// watch that is running before anything is created.
#[derive(Clone, Default)]
struct Seen {
    approved: Arc<Mutex<HashMap<String, Instant>>>,
    ready: Arc<Mutex<HashMap<String, Instant>>>,
    failed: Arc<Mutex<HashMap<String, String>>>,
}

async fn watch_ready(ctx: &Ctx, ns: &str) -> Result<(Seen, tokio::task::JoinHandle<()>)> {
    let api = namespaced(&ctx.client, ns, &certificate_requests());
    let seen = Seen::default();
    let (init_tx, init_rx) = tokio::sync::oneshot::channel();
    let s = seen.clone();
    let task =
        tokio::spawn(async move {
            let mut init_tx = Some(init_tx);
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let obj = match ev {
                    Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => o,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = init_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let now = Instant::now();
                if is_true(&obj, "Approved") {
                    s.approved
                        .lock()
                        .unwrap()
                        .entry(obj.name_any())
                        .or_insert(now);
                }
                if let Some(c) = condition(&obj, "Ready") {
                    let name = obj.name_any();
                    if c["status"] == "True" {
                        s.ready.lock().unwrap().entry(name).or_insert(now);
                    } else if c["reason"] == "Failed" || c["reason"] == "Denied" {
                        s.failed.lock().unwrap().entry(name).or_insert_with(|| {
                            c["message"].as_str().unwrap_or_default().to_string()
                        });
                    }
                }
            }
        });
    tokio::time::timeout(Duration::from_secs(60), init_rx)
        .await
        .context("the CertificateRequest watch did not finish its initial list in 60 s")??;
    Ok((seen, task))
}

async fn wait_approved(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    e2e::wait_for(
        &format!("cm-lite to approve CertificateRequest {name}"),
        Duration::from_secs(60),
        async || {
            Ok(api
                .get_opt(name)
                .await?
                .filter(|o| is_true(o, "Approved"))
                .map(|_| ()))
        },
        async || e2e::dump(&api.get_opt(name).await.ok().flatten()),
    )
    .await
}

/// Polls until `name` was seen Ready (returning when), failing fast if the process died.
async fn wait_seen_ready(
    seen: &Seen,
    name: &str,
    p: &mut Proc,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = seen.ready.lock().unwrap().get(name) {
            return Ok(*t);
        }
        if let Some(m) = seen.failed.lock().unwrap().get(name) {
            bail!(
                "{name} failed: {m}\n{} log tail:\n{}",
                p.name,
                p.log_tail(30)
            );
        }
        if !p.is_running() {
            bail!("{} exited; log tail:\n{}", p.name, p.log_tail(40));
        }
        if Instant::now() > deadline {
            bail!(
                "{name} not Ready after {timeout:?}; {} log tail:\n{}",
                p.name,
                p.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Issuance throughput, 3. peak RSS, 5. start-up

async fn issuance(ctx: &Ctx, s: &System, report: &mut Report) -> Result<()> {
    let api = namespaced(&ctx.client, &s.ns, &certificate_requests());
    let (seen, watch) = watch_ready(ctx, &s.ns).await?;
    let _abort = AbortOnDrop(watch);
    // 5. Start-up: a request that is already approved when the process starts.
    let (cn, csr) = ctx.csr()?;
    api.create(
        &PostParams::default(),
        &object(certificate_request("startup", csr, step_ref(&s.issuer)))?,
    )
    .await
    .with_context(|| format!("creating the start-up probe ({cn})"))?;
    if ctx.opts.approve_by_bench() {
        approve(&api, "startup").await?;
    }
    wait_approved(&api, "startup").await?;
    let (mut p, _) = s.start(ctx, &format!("{}-issuance", s.key))?;
    let ready_at = wait_seen_ready(&seen, "startup", &mut p, Duration::from_secs(120)).await?;
    let startup = ms(ready_at - p.started);
    log(format!(
        "{}: start-up to first Ready {startup:.0} ms",
        s.key
    ));
    report.set(&["startup_ms", s.key], json!(round(startup, 0)));
    // Whatever else the start-up does (other issuers, cache sync) must not overlap the burst.
    let (idle_after, idle) = procs::wait_idle(p.pid, 0.05, Duration::from_secs(60)).await?;
    let idle_wait_ms = round(ms(idle_after), 0);
    if !idle {
        report.notes.push(format!(
            "{}: the controller still used more than 5 % CPU 60 s after start-up; the burst started anyway",
            s.key
        ));
    }

    // 2. Throughput.
    let n = ctx.opts.requests;
    let mut objs = Vec::with_capacity(n);
    for i in 0..n {
        let (_, csr) = ctx.csr()?;
        objs.push((
            format!("r{i:05}"),
            object(certificate_request(
                &format!("r{i:05}"),
                csr,
                step_ref(&s.issuer),
            ))?,
        ));
    }
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut watched = cluster_pids(&ctx.env);
    watched.push((s.key.to_string(), p.pid));
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
    log(format!("{}: CPU seconds during the burst: {cpu}", s.key));
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
        s.key,
        creates_done.as_secs_f64(),
        p50.unwrap_or(0.0),
        p99.unwrap_or(0.0),
        mem.hwm_mib
    ));
    report.set(&["throughput_per_s", s.key], json!(round(rate, 1)));
    report.set(&["p50_ready_ms", s.key], json!(p50.map(|x| round(x, 0))));
    report.set(&["p99_ready_ms", s.key], json!(p99.map(|x| round(x, 0))));
    report.set(&["peak_rss_mib", s.key], json!(round(mem.hwm_mib, 1)));
    report.set(
        &["issuance", s.key],
        json!({
            "ready": ok, "failed": failed.len(), "seconds": round(total, 3),
            "creates_seconds": round(creates_done.as_secs_f64(), 3),
            "rss_end_mib": round(mem.rss_mib, 1),
            "idle_wait_ms": idle_wait_ms,
            "create_to_approved_p50_ms": percentile(&mut approve_lat, 50.0).map(|x| round(x, 0)),
            "create_to_approved_p99_ms": percentile(&mut approve_lat, 99.0).map(|x| round(x, 0)),
            "rss_max_sampled_mib": round(*mem_peak_sampled.lock().unwrap(), 1),
            "cpu_seconds": cpu,
            "log": p.log.display().to_string(),
        }),
    );
    if !failed.is_empty() {
        report.notes.push(format!(
            "{}: {} requests Failed, first: {}",
            s.key,
            failed.len(),
            failed[0]
        ));
    }
    p.stop();
    Ok(())
}

/// The control plane's processes by name, from the PID files `e2e/cluster.sh` writes.
fn cluster_pids(env: &Env) -> Vec<(String, u32)> {
    ["etcd", "apiserver", "cert-manager", "step-ca"]
        .iter()
        .filter_map(|n| {
            let pid = std::fs::read_to_string(env.state.join(format!("{n}.pid"))).ok()?;
            Some((n.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Steady RSS

async fn steady(ctx: &Ctx, systems: &BTreeMap<&str, System>, report: &mut Report) -> Result<()> {
    let ns = format!("bench-steady-{}", ctx.suffix);
    ensure_namespace(&ctx.client, &ns).await?;
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    let requests = namespaced(&ctx.client, &ns, &certificate_requests());
    // Requests for an issuer that neither controller serves: both cache them, neither signs.
    let foreign = json!({"group": "bench.example.com", "kind": "NoSuchIssuer", "name": "none"});
    let csr = ctx.csrs.last().context("no CSRs")?.1.clone();
    let t = Instant::now();
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
                        use rand::RngCore;
                        let mut data = vec![0u8; 1024];
                        rand::rng().fill_bytes(&mut data);
                        let s = Secret {
                            metadata: ObjectMeta {
                                name: Some(format!("s{i:05}")),
                                ..Default::default()
                            },
                            data: Some(BTreeMap::from([("data".to_string(), ByteString(data))])),
                            ..Default::default()
                        };
                        if let Err(e) = secrets.create(&PostParams::default(), &s).await {
                            return Some(format!("Secret s{i:05}: {e}"));
                        }
                    }
                    if i < opts.steady_crs {
                        let o =
                            object(certificate_request(&format!("q{i:05}"), &csr, foreign)).ok()?;
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
    log(format!(
        "steady objects created in {:.1} s; waiting for cm-lite to approve them",
        t.elapsed().as_secs_f64()
    ));
    // Approvals are updates: let them finish before any controller starts.
    let n = ctx.opts.steady_crs;
    let approved = e2e::wait_for(
        "cm-lite to approve the steady CertificateRequests",
        Duration::from_secs(120) + Duration::from_millis(100) * n as u32,
        async || {
            let l = requests.list(&ListParams::default()).await?;
            let a = l.items.iter().filter(|o| is_true(o, "Approved")).count();
            Ok((a == n).then_some(a))
        },
        async || {
            let l = requests
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            format!(
                "{} of {n} approved",
                l.iter().filter(|o| is_true(o, "Approved")).count()
            )
        },
    )
    .await;
    if let Err(e) = approved {
        report.notes.push(format!("steady: {e:#}; measured anyway"));
    }
    let counts = cluster_counts(ctx).await?;
    report.set(&["steady", "cluster_objects"], counts.clone());
    log(format!("cluster now holds {counts}"));
    for sys in [SO, SI] {
        let s = &systems[sys];
        if let Err(e) = steady_one(ctx, s, report).await {
            report.error(&format!("steady {sys}"), e);
        }
    }
    Ok(())
}

async fn cluster_counts(ctx: &Ctx) -> Result<Value> {
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
    Ok(json!({"certificaterequests": crs, "secrets": secrets}))
}

async fn steady_one(ctx: &Ctx, s: &System, report: &mut Report) -> Result<()> {
    let api = namespaced(&ctx.client, &s.ns, &certificate_requests());
    let (seen, watch) = watch_ready(ctx, &s.ns).await?;
    let _abort = AbortOnDrop(watch);
    let (_, csr) = ctx.csr()?;
    api.create(
        &PostParams::default(),
        &object(certificate_request(
            "steady-probe",
            csr,
            step_ref(&s.issuer),
        ))?,
    )
    .await?;
    if ctx.opts.approve_by_bench() {
        approve(&api, "steady-probe").await?;
    }
    wait_approved(&api, "steady-probe").await?;
    let (mut p, _) = s.start(ctx, &format!("{}-steady", s.key))?;
    // A signed probe proves the caches are synced and the controller is working.
    wait_seen_ready(&seen, "steady-probe", &mut p, Duration::from_secs(180)).await?;
    // Then sample VmRSS once a second until five consecutive samples stay within 2 % of their
    // mean (or 60 s pass), and take the last one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples: Vec<f64> = Vec::new();
    let settled = loop {
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
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let rss = *samples.last().context("no sample")?;
    log(format!(
        "{}: steady RSS {rss:.1} MiB ({} samples, settled: {settled})",
        s.key,
        samples.len()
    ));
    report.set(&["steady_rss_mib", s.key], json!(round(rss, 1)));
    report.set(
        &["steady", s.key],
        json!({"settled": settled, "samples_mib": samples.iter().map(|x| round(*x, 1)).collect::<Vec<_>>(), "log": p.log.display().to_string()}),
    );
    if !settled {
        report.notes.push(format!(
            "steady {}: RSS did not settle within 60 s; last sample used",
            s.key
        ));
    }
    p.stop();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Admission

const WEBHOOK_LABEL: &str = "bench.step.sm/webhook";

fn bench_pod(name: &str, cn: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"autocert.step.sm/name": cn}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "nginx"}]}
    }))?)
}

async fn labelled_ns(ctx: &Ctx, prefix: &str, webhook: Option<&str>) -> Result<String> {
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

struct PodRun {
    latencies_ms: Vec<f64>,
    injected: usize,
    errors: Vec<String>,
}

async fn create_pods(ctx: &Ctx, ns: &str, prefix: &str, n: usize) -> Result<PodRun> {
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
                let injected = created
                    .annotations()
                    .get("autocert.step.sm/status")
                    .map(String::as_str)
                    == Some("injected");
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
    Ok(run)
}

/// Creates warm-up pods until one comes back injected (the apiserver's webhook informer has
/// caught up and the webhook answers).
async fn warm_up(ctx: &Ctx, ns: &str, what: &str, p: &mut Proc) -> Result<()> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last;
    for i in 0.. {
        let name = format!("warmup{i:03}");
        let pod = bench_pod(&name, &format!("{name}.{ns}.svc"))?;
        match api.create(&PostParams::default(), &pod).await {
            Ok(created)
                if created
                    .annotations()
                    .get("autocert.step.sm/status")
                    .map(String::as_str)
                    == Some("injected") =>
            {
                return Ok(());
            }
            Ok(_) => last = "created but not injected".into(),
            Err(e) => last = e.to_string(),
        }
        if !p.is_running() {
            bail!("{what} exited; log tail:\n{}", p.log_tail(40));
        }
        if Instant::now() > deadline {
            bail!(
                "no pod was injected by {what} within 60 s; last: {last}\n{what} log tail:\n{}",
                p.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    unreachable!()
}

fn record_pods(report: &mut Report, key: &str, mut run: PodRun, n: usize) {
    let p50 = percentile(&mut run.latencies_ms, 50.0);
    let p99 = percentile(&mut run.latencies_ms, 99.0);
    log(format!(
        "admission {key}: {} created ({} injected, {} errors); p50 {:.1} ms, p99 {:.1} ms",
        run.latencies_ms.len(),
        run.injected,
        run.errors.len(),
        p50.unwrap_or(0.0),
        p99.unwrap_or(0.0)
    ));
    report.set(&["admission_p50_ms", key], json!(p50.map(|x| round(x, 1))));
    report.set(&["admission_p99_ms", key], json!(p99.map(|x| round(x, 1))));
    report.set(
        &["admission", key],
        json!({"created": run.latencies_ms.len(), "injected": run.injected, "errors": run.errors.len(), "first_error": run.errors.first()}),
    );
    if key != "no_webhook" && run.injected < n {
        report.notes.push(format!(
            "admission {key}: only {} of {n} pods came back injected; its latency is not that of a full mutation",
            run.injected
        ));
    }
}

async fn admission(ctx: &Ctx, so: &System, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    // Baseline: the same creates in a namespace no webhook selects.
    let ns = labelled_ns(ctx, "bench-adm-none", None).await?;
    let run = create_pods(ctx, &ns, "p", n).await?;
    record_pods(report, "no_webhook", run, n);
    // Each webhook configuration is deleted right after its run, whatever happened: a stale one
    // with failurePolicy Fail would block pod creates in its namespaces.
    let mwcs = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    if let Err(e) = admission_step_operator(ctx, so, report).await {
        report.error("admission step_operator", e);
    }
    delete_mwc(&mwcs, &format!("bench-step-operator-{}", ctx.suffix)).await;
    if let Err(e) = admission_autocert(ctx, report).await {
        report.error("admission autocert", e);
    }
    delete_mwc(&mwcs, &format!("bench-autocert-{}", ctx.suffix)).await;
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

async fn metric_histogram(port: u16, name: &str) -> Result<(Vec<(f64, f64)>, f64, f64)> {
    let (status, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let (mut buckets, mut sum, mut count) = (vec![], 0.0, 0.0);
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            if let Some((le, v)) = rest.split_once("\"} ") {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse()?
                };
                buckets.push((le, v.trim().parse()?));
            }
        } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
            sum = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
            count = v.trim().parse()?;
        }
    }
    Ok((buckets, sum, count))
}

async fn admission_step_operator(ctx: &Ctx, so: &System, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    let mwc_name = format!("bench-step-operator-{}", ctx.suffix);
    let port = free_port()?;
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mwc_name},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {WEBHOOK_LABEL: format!("step-operator-{}", ctx.suffix)}},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10, "reinvocationPolicy": "IfNeeded",
        }]
    }))?;
    let mwcs = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    mwcs.create(&PostParams::default(), &mwc).await?;
    let admin_port = free_port()?;
    let (listen, admin, bootstrap) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{admin_port}"),
        format!("https://127.0.0.1:{port}"),
    );
    let kubeconfig = ctx.env.kubeconfig.to_str().context("utf-8")?;
    let mut p = Proc::spawn(
        &ctx.env,
        "step-operator-webhook",
        &[],
        &e2e::operator::binary()?,
        &[
            "webhook",
            "--listen-addr",
            &listen,
            "--default-issuer",
            &so.issuer,
            "--tls-san",
            "127.0.0.1",
            "--bootstrap-url",
            &bootstrap,
            "--webhook-config-name",
            &mwc_name,
            "--cluster-resource-namespace",
            &so.ns,
            "--image",
            "step-operator:bench",
        ],
        &[
            ("KUBECONFIG", kubeconfig),
            ("STEP_OPERATOR_ADMIN_ADDR", &admin),
            ("POD_NAMESPACE", &so.ns),
            ("RUST_LOG", "info,kube=warn"),
        ],
    )?;
    let ns = labelled_ns(
        ctx,
        "bench-adm-so",
        Some(&format!("step-operator-{}", ctx.suffix)),
    )
    .await?;
    warm_up(ctx, &ns, "step-operator's webhook", &mut p).await?;
    let metric = "step_operator_admission_duration_seconds";
    let before = metric_histogram(admin_port, metric).await?;
    let run = create_pods(ctx, &ns, "p", n).await?;
    let after = metric_histogram(admin_port, metric).await?;
    record_pods(report, SO, run, n);
    // The webhook's own timing, from its histogram (difference across the measured creates).
    let count = after.2 - before.2;
    let mean_ms = if count > 0.0 {
        (after.1 - before.1) / count * 1000.0
    } else {
        f64::NAN
    };
    let quantile = |q: f64| -> Option<f64> {
        let target = q * count;
        after
            .0
            .iter()
            .zip(before.0.iter())
            .find(|((_, a), (_, b))| a - b >= target)
            .map(|((le, _), _)| le * 1000.0)
    };
    report.set(
        &["webhook_own_timing", SO],
        json!({
            "source": format!("{metric} (Prometheus histogram; quantiles are bucket upper bounds)"),
            "reviews": count, "mean_ms": if mean_ms.is_finite() { json!(round(mean_ms, 2)) } else { Value::Null },
            "p50_le_ms": quantile(0.5), "p99_le_ms": quantile(0.99),
        }),
    );
    let mem = p.memory()?;
    report.set(&["admission", SO, "rss_mib"], json!(round(mem.rss_mib, 1)));
    report.set(
        &["admission", SO, "peak_rss_mib"],
        json!(round(mem.hwm_mib, 1)),
    );
    p.stop();
    Ok(())
}

/// autocert as its docs describe it: a webhook behind Service `autocert` (ExternalName to
/// localhost here) in namespace `$NAMESPACE`, serving a step-ca certificate for
/// `autocert.<NAMESPACE>.svc`, `admissionReviewVersions: [v1beta1]`, `failurePolicy: Ignore`, and
/// a ServiceAccount that may create and delete Secrets. Its Kubernetes client reads only the
/// in-cluster files, so it runs in a private mount namespace whose /run holds them.
async fn admission_autocert(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    let env = &ctx.env;
    // Whether kube-apiserver still takes autocert's documented registration at all.
    let probe: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": format!("bench-v1beta1-probe-{}", ctx.suffix)},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"service": {"name": "autocert", "namespace": "step", "path": "/mutate"},
                             "caBundle": base64(env.root_pem()?.as_bytes())},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"autocert.step.sm": "enabled"}},
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1beta1"],
        }]
    }))?;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let accepted = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone())
        .create(&dry, &probe)
        .await;
    report.set(
        &["admission", AC, "v1beta1_config_accepted"],
        json!(accepted.is_ok()),
    );
    if let Err(e) = accepted {
        bail!(
            "kube-apiserver rejects admissionReviewVersions [v1beta1], which autocert requires: {e}"
        );
    }
    let autocert = match env.tool("autocert-controller") {
        Ok(p) => p,
        Err(e) => {
            report.notes.push(format!(
                "autocert: not measured, its binary is missing ({e:#}). The apiserver does accept its v1beta1 webhook configuration (dry run)."
            ));
            return Ok(());
        }
    };
    let home_ns = labelled_ns(ctx, "bench-autocert", None).await?;
    let port = free_port()?;
    // RBAC and a token for its ServiceAccount, as install/03-rbac.yaml grants.
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("autocert".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), &home_ns)
        .create(&PostParams::default(), &sa)
        .await?;
    let rbac_name = format!("bench-autocert-{}", ctx.suffix);
    let role = resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
    );
    let binding = resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    );
    apply(&cluster(&ctx.client, &role), json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": rbac_name},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]}],
    })).await?;
    apply(&cluster(&ctx.client, &binding), json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": rbac_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac_name},
        "subjects": [{"kind": "ServiceAccount", "name": "autocert", "namespace": home_ns}],
    })).await?;
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(7200),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tr: TokenRequest = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &home_ns)
        .create_subresource("token", "autocert", &PostParams::default(), &tr)
        .await?;
    let token = tr
        .status
        .context("TokenRequest has no status")?
        .token
        .context("TokenRequest has no token")?;
    let dir = env.state.join(format!("bench-autocert-{}", ctx.suffix));
    std::fs::create_dir_all(dir.join("step"))?;
    std::fs::write(dir.join("token"), token)?;
    let cluster_ca = env.state.join("pki/ca.crt");
    std::fs::copy(&cluster_ca, dir.join("ca.crt"))
        .with_context(|| format!("copying {}", cluster_ca.display()))?;
    let kc: Value = serde_json::to_value(kube::config::Kubeconfig::read_from(&env.kubeconfig)?)?;
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .context("kubeconfig has no server")?
        .to_string();
    let host_port = server.trim_start_matches("https://").trim_end_matches('/');
    let (api_host, api_port) = host_port
        .rsplit_once(':')
        .context("server URL without a port")?;
    let config = json!({
        "address": format!("127.0.0.1:{port}"),
        "service": "autocert",
        "logFormat": "text",
        "caUrl": env.step_ca_url,
        "certLifetime": "24h",
        "clusterDomain": "cluster.local",
        "rootCAPath": env.step_ca_root.display().to_string(),
        "provisionerPasswordPath": env.step_provisioner_password_file.display().to_string(),
        "bootstrapper": {"name": "autocert-bootstrapper", "image": "smallstep/autocert-bootstrapper:0.20.6",
            "volumeMounts": [{"name": "certs", "mountPath": "/var/run/autocert.step.sm"}]},
        "renewer": {"name": "autocert-renewer", "image": "smallstep/autocert-renewer:0.20.6",
            "volumeMounts": [{"name": "certs", "mountPath": "/var/run/autocert.step.sm"}]},
        "certsVolume": {"name": "certs", "emptyDir": {}},
    });
    // YAML is a superset of JSON.
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    // The Service the webhook configuration names: ExternalName to localhost (e2e-infra.md §7.6).
    let services = resource("", "v1", "Service", "services");
    apply(&namespaced(&ctx.client, &home_ns, &services), json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "autocert", "namespace": home_ns},
        "spec": {"type": "ExternalName", "externalName": "localhost"},
    })).await?;
    let mwc_name = format!("bench-autocert-{}", ctx.suffix);
    let mwcs = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mwc_name},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"service": {"name": "autocert", "namespace": home_ns, "port": port, "path": "/mutate"},
                             "caBundle": base64(env.root_pem()?.as_bytes())},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {WEBHOOK_LABEL: format!("autocert-{}", ctx.suffix)}},
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1beta1"],
        }]
    }))?;
    mwcs.create(&PostParams::default(), &mwc).await.context(
        "the apiserver rejected autocert's webhook configuration (admissionReviewVersions v1beta1)",
    )?;

    let sa_dir = "/run/secrets/kubernetes.io/serviceaccount";
    let inner = format!(
        r#"mount -t tmpfs tmpfs /run && mkdir -p {sa_dir} && cp "$BENCH_SA_DIR/token" "$BENCH_SA_DIR/ca.crt" {sa_dir}/ && exec "$@""#
    );
    let dir_s = dir.to_str().context("utf-8")?.to_string();
    let steppath = dir.join("step");
    let mut p = Proc::spawn(
        env,
        "autocert",
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            &inner,
            "autocert-wrap",
        ],
        &autocert,
        &[config_path.to_str().context("utf-8")?],
        &[
            ("PROVISIONER_NAME", &env.step_provisioner),
            ("PROVISIONER_KID", &env.step_provisioner_kid),
            ("NAMESPACE", &home_ns),
            ("STEPPATH", steppath.to_str().context("utf-8")?),
            ("KUBERNETES_SERVICE_HOST", api_host),
            ("KUBERNETES_SERVICE_PORT", api_port),
            ("BENCH_SA_DIR", &dir_s),
        ],
    )?;
    let ns = labelled_ns(
        ctx,
        "bench-adm-ac",
        Some(&format!("autocert-{}", ctx.suffix)),
    )
    .await?;
    let warm = warm_up(ctx, &ns, "autocert", &mut p).await;
    if let Err(e) = &warm {
        // Measure what can be measured: the creates still go through the apiserver, which calls
        // the webhook and (failurePolicy Ignore) admits unmutated pods on any webhook failure.
        let apiserver_log =
            std::fs::read_to_string(env.state.join("apiserver.log")).unwrap_or_default();
        let hints: Vec<&str> = apiserver_log
            .lines()
            .filter(|l| l.contains("autocert"))
            .rev()
            .take(5)
            .collect();
        report.notes.push(format!(
            "autocert never injected a pod during warm-up: {e:#}\napiserver log lines naming autocert (newest first):\n{}",
            hints.join("\n")
        ));
    }
    let run = create_pods(ctx, &ns, "p", n).await?;
    record_pods(report, AC, run, n);
    report.set(
        &["webhook_own_timing", AC],
        json!({"source": "none: autocert has no metrics endpoint and logs no durations"}),
    );
    if p.is_running() {
        let mem = p.memory()?;
        report.set(&["admission", AC, "rss_mib"], json!(round(mem.rss_mib, 1)));
        report.set(
            &["admission", AC, "peak_rss_mib"],
            json!(round(mem.hwm_mib, 1)),
        );
    }
    report.set(
        &["admission", AC, "log"],
        json!(p.log.display().to_string()),
    );
    p.stop();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output

fn ratios(report: &mut Report) {
    let pairs: [(&str, &[&str], &[&str]); 10] = [
        (
            "throughput_step_operator_per_api_ceiling",
            &["throughput_per_s", SO],
            &["api_ceiling_per_s"],
        ),
        (
            "throughput_step_issuer_per_api_ceiling",
            &["throughput_per_s", SI],
            &["api_ceiling_per_s"],
        ),
        (
            "throughput_step_operator_per_step_issuer",
            &["throughput_per_s", SO],
            &["throughput_per_s", SI],
        ),
        (
            "throughput_step_operator_per_ceiling",
            &["throughput_per_s", SO],
            &["ceiling_signs_per_s"],
        ),
        (
            "throughput_step_issuer_per_ceiling",
            &["throughput_per_s", SI],
            &["ceiling_signs_per_s"],
        ),
        (
            "p99_ready_step_operator_per_step_issuer",
            &["p99_ready_ms", SO],
            &["p99_ready_ms", SI],
        ),
        (
            "peak_rss_step_operator_per_step_issuer",
            &["peak_rss_mib", SO],
            &["peak_rss_mib", SI],
        ),
        (
            "steady_rss_step_operator_per_step_issuer",
            &["steady_rss_mib", SO],
            &["steady_rss_mib", SI],
        ),
        (
            "admission_p99_step_operator_per_autocert",
            &["admission_p99_ms", SO],
            &["admission_p99_ms", AC],
        ),
        (
            "startup_step_operator_per_step_issuer",
            &["startup_ms", SO],
            &["startup_ms", SI],
        ),
    ];
    for (name, a, b) in pairs {
        let r = match (report.get(a), report.get(b)) {
            (Some(a), Some(b)) if b > 0.0 => json!(round(a / b, 3)),
            _ => Value::Null,
        };
        report.set(&["ratios", name], r);
    }
}

fn markdown(doc: &Value) -> String {
    let f = |v: &Value| -> String {
        match v.as_f64() {
            Some(x) => format!("{x}"),
            None => "–".into(),
        }
    };
    let r = &doc["ratios"];
    let c = &doc["counts"];
    let mut s = format!(
        "## step-operator benchmark, {}\n\nCounts: {} requests, {} pods, {} steady CertificateRequests + {} Secrets, ceiling {} s at concurrency {}.\n\n",
        doc["date"].as_str().unwrap_or("?"),
        c["requests"],
        c["pods"],
        c["steady_crs"],
        c["steady_secrets"],
        c["ceiling_secs"],
        c["concurrency"]
    );
    s.push_str("| measurement | step-operator | peer | peer is | step-operator/peer | step-operator/ceiling |\n|---|---|---|---|---|---|\n");
    let ceiling = doc["ceiling_signs_per_s"].clone();
    let rows: Vec<(&str, Value, Value, &str, Value, Value)> = vec![
        (
            "ceiling: direct /1.0/sign (signs/s)",
            Value::Null,
            ceiling.clone(),
            "step-ca alone",
            Value::Null,
            Value::Null,
        ),
        (
            "API ceiling: create + approve + one status write, no issuer (requests/s)",
            Value::Null,
            doc["api_ceiling_per_s"].clone(),
            "control plane alone",
            Value::Null,
            Value::Null,
        ),
        (
            "issuance throughput / API ceiling",
            r["throughput_step_operator_per_api_ceiling"].clone(),
            r["throughput_step_issuer_per_api_ceiling"].clone(),
            "step-issuer",
            Value::Null,
            Value::Null,
        ),
        (
            "issuance throughput (requests/s)",
            doc["throughput_per_s"][SO].clone(),
            doc["throughput_per_s"][SI].clone(),
            "step-issuer",
            r["throughput_step_operator_per_step_issuer"].clone(),
            r["throughput_step_operator_per_ceiling"].clone(),
        ),
        (
            "create→Ready p50 (ms)",
            doc["p50_ready_ms"][SO].clone(),
            doc["p50_ready_ms"][SI].clone(),
            "step-issuer",
            Value::Null,
            Value::Null,
        ),
        (
            "create→Ready p99 (ms)",
            doc["p99_ready_ms"][SO].clone(),
            doc["p99_ready_ms"][SI].clone(),
            "step-issuer",
            r["p99_ready_step_operator_per_step_issuer"].clone(),
            Value::Null,
        ),
        (
            "peak RSS during issuance (MiB)",
            doc["peak_rss_mib"][SO].clone(),
            doc["peak_rss_mib"][SI].clone(),
            "step-issuer",
            r["peak_rss_step_operator_per_step_issuer"].clone(),
            Value::Null,
        ),
        (
            "steady RSS (MiB)",
            doc["steady_rss_mib"][SO].clone(),
            doc["steady_rss_mib"][SI].clone(),
            "step-issuer",
            r["steady_rss_step_operator_per_step_issuer"].clone(),
            Value::Null,
        ),
        (
            "start-up → first Ready (ms)",
            doc["startup_ms"][SO].clone(),
            doc["startup_ms"][SI].clone(),
            "step-issuer",
            r["startup_step_operator_per_step_issuer"].clone(),
            Value::Null,
        ),
        (
            "admission create p50 (ms)",
            doc["admission_p50_ms"][SO].clone(),
            doc["admission_p50_ms"][AC].clone(),
            "autocert",
            Value::Null,
            Value::Null,
        ),
        (
            "admission create p99 (ms)",
            doc["admission_p99_ms"][SO].clone(),
            doc["admission_p99_ms"][AC].clone(),
            "autocert",
            r["admission_p99_step_operator_per_autocert"].clone(),
            Value::Null,
        ),
        (
            "admission create p99, no webhook (ms)",
            Value::Null,
            doc["admission_p99_ms"]["no_webhook"].clone(),
            "apiserver alone",
            Value::Null,
            Value::Null,
        ),
    ];
    for (name, a, b, peer, ratio, ceil) in rows {
        s.push_str(&format!(
            "| {name} | {} | {} | {peer} | {} | {} |\n",
            f(&a),
            f(&b),
            f(&ratio),
            f(&ceil)
        ));
    }
    let own = &doc["webhook_own_timing"][SO];
    if own.is_object() {
        s.push_str(&format!(
            "\nstep-operator webhook's own timing ({} reviews): mean {} ms, p50 ≤ {} ms, p99 ≤ {} ms (histogram buckets); autocert has none.\n",
            own["reviews"], f(&own["mean_ms"]), f(&own["p50_le_ms"]), f(&own["p99_le_ms"])
        ));
    }
    let injected: Vec<String> = [(SO, "step-operator"), (AC, "autocert")]
        .iter()
        .filter(|(k, _)| doc["admission"][k]["created"].is_number())
        .map(|(k, label)| {
            let a = &doc["admission"][k];
            format!("{label} {} of {}", a["injected"], a["created"])
        })
        .collect();
    if !injected.is_empty() {
        s.push_str(&format!(
            "Pods returned injected: {}.\n",
            injected.join(", ")
        ));
    }
    for (title, key) in [("Notes", "notes"), ("Errors", "errors")] {
        if let Some(items) = doc[key].as_array().filter(|a| !a.is_empty()) {
            s.push_str(&format!("\n{title}:\n"));
            for i in items {
                s.push_str(&format!(
                    "- {}\n",
                    i.as_str().unwrap_or_default().replace('\n', "\n  ")
                ));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn options_are_consistent() {
        Opts::command().debug_assert();
    }

    /// What e2e/bench.sh and BENCHMARKS.md pass, in both spellings the old parser took.
    #[test]
    fn takes_the_documented_arguments() {
        let o = Opts::try_parse_from(
            "bench --requests 50 --pods 50 --steady-crs 200 --steady-secrets 200 --ceiling-secs 5 --concurrency=4 --create-concurrency 32 --admission-concurrency=2 --approver cm-lite --only ceiling,issuance"
                .split(' '),
        )
        .unwrap();
        assert_eq!(
            (
                o.requests,
                o.pods,
                o.steady_crs,
                o.steady_secrets,
                o.ceiling_secs
            ),
            (50, 50, 200, 200, 5)
        );
        assert_eq!(
            (o.concurrency, o.create_concurrency, o.admission_concurrency),
            (4, 32, 2)
        );
        assert!(!o.approve_by_bench());
        assert!(o.wants(Phase::Ceiling) && o.wants(Phase::Issuance));
        assert!(!o.wants(Phase::Steady) && !o.wants(Phase::Admission));

        let d = Opts::try_parse_from(["bench"]).unwrap();
        assert_eq!(
            (
                d.requests,
                d.pods,
                d.steady_crs,
                d.steady_secrets,
                d.ceiling_secs
            ),
            (1000, 1000, 5000, 5000, 20)
        );
        assert_eq!(
            (d.concurrency, d.create_concurrency, d.admission_concurrency),
            (16, 64, 8)
        );
        assert!(d.approve_by_bench());
        assert!(d.wants(Phase::Admission));
        assert!(Opts::try_parse_from(["bench", "--approver", "nobody"]).is_err());
    }
}
