//! `make bench`: step-operator against step-ca's own ceiling, step-issuer and autocert, on the
//! local control plane of `e2e/cluster.sh`. Each system runs alone, one after the other, on the
//! same apiserver and the same step-ca. The method is described in `e2e/BENCHMARKS.md`.
//!
//! Usage (normally through `e2e/bench.sh`): `bench --help`, with the cluster's `env` exported.
//! Results: `$E2E_STATE/bench/latest.{json,md}`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicUsize;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use e2e::{Env, random_suffix};
use serde_json::{Value, json};

mod ctx;
mod jwt;
mod phases;
mod procs;
mod report;
mod requests;
mod systems;
mod util;

use ctx::{Ctx, generate_csrs, versions};
use phases::admission::admission;
use phases::ceiling::{api_ceiling, ceiling};
use phases::issuance::issuance;
use phases::steady::steady;
use report::{AC, Report, SI, SO, markdown, ratios};
use systems::System;
use util::{log, run_out};

/// The bench's arguments; defaults are the counts (e2e/BENCHMARKS.md).
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
