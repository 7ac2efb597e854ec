//! `make bench`: step-operator against step-ca's own ceiling, step-issuer and autocert, on the
//! local control plane of `e2e/cluster.sh`. Each system runs alone, one after the other, on the
//! same apiserver and the same step-ca. The method is described in `e2e/BENCHMARKS.md`.
//!
//! Usage (normally through `e2e/bench.sh`): `bench --help`, with the cluster's `env` exported.
//! Results: `$E2E_STATE/bench/latest.{json,md}`.

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use e2e::Env;

mod apimetrics;
mod ctx;
mod jwt;
mod phases;
mod procs;
mod report;
mod requests;
mod systems;
mod util;

use ctx::{Ctx, versions};
use report::Report;
use systems::Systems;

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
    /// CertificateRequests of a foreign issuer in the cluster for the field-selector phase.
    #[arg(long, default_value_t = 50_000)]
    selector_crs: usize,
    /// Pods per way of getting a certificate in the node phase (plus one warm-up pod each).
    #[arg(long, default_value_t = 50)]
    node_pods: usize,
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
    /// step-ca's signing ceiling and the control plane's (1, 1b).
    Ceiling,
    /// Each issuer's start-up, burst throughput and peak RSS (5, 2, 3).
    Issuance,
    /// Each issuer's RSS in a cluster full of objects it caches (3).
    Steady,
    /// Pod creates through each webhook and through none (4).
    Admission,
    /// step-operator with and without the CertificateRequest field selector (6).
    Selector,
    /// Pod create → Ready on the e2e node: autocert, our webhook, pod certificates (7). Needs a
    /// cluster started with the node; only when asked for (e2e/bench.sh runs it on its own).
    Node,
}

impl Opts {
    fn wants(&self, phase: Phase) -> bool {
        match self.only.is_empty() {
            true => phase != Phase::Node,
            false => self.only.contains(&phase),
        }
    }

    /// The node phase runs on a cluster of its own: its report gets its own files.
    fn node_only(&self) -> bool {
        self.only == [Phase::Node]
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
    let out_dir = env.state.join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let mut report = Report::begin(&opts, versions().await);
    let ctx = Ctx::new(env, opts).await?;

    // The ceilings run before the issuers' namespaces and StepClusterIssuers exist; those are
    // created whichever phases run.
    if ctx.opts.wants(Phase::Ceiling) {
        phases::ceiling::run(&ctx, &mut report).await;
    }
    let systems = Systems::create(&ctx).await?;
    for phase in [
        Phase::Issuance,
        Phase::Steady,
        Phase::Admission,
        Phase::Selector,
        Phase::Node,
    ] {
        if ctx.opts.wants(phase) {
            phases::run(phase, &ctx, &systems, &mut report).await;
        }
    }

    report.finish();
    report.write(
        &out_dir,
        if ctx.opts.node_only() {
            "node"
        } else {
            "latest"
        },
    )?;
    if !report.errors.is_empty() {
        bail!(
            "{} phase(s) failed; see errors in the JSON",
            report.errors.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
