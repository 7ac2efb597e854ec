//! Everything the run found, written as JSON (`latest.json`) and as a Markdown table
//! (`latest.md`) at the end.
//!
//! The JSON's keys are a contract: e2e/bench.sh reads `date`, and e2e/BENCHMARKS.md documents
//! the rest (`issuance.<system>.cpu_seconds`, `ratios.*`, ...). The fields below are laid out
//! to serialize to exactly those keys; `testdata/*.json` holds reports written before the report
//! was typed, and the tests compare against them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use serde::Serialize;

use crate::Opts;
use crate::procs::CpuSeconds;
use crate::systems::System;
use crate::util::{log, now_utc, round};

mod cost;
mod markdown;

pub use cost::{ApiCost, Goals};
pub use markdown::markdown;

/// An admission run: which webhook, if any, answered its pod creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionRun {
    /// The baseline: a namespace no webhook selects.
    NoWebhook,
    StepOperator,
    Autocert,
}

impl AdmissionRun {
    pub fn key(self) -> &'static str {
        match self {
            AdmissionRun::NoWebhook => "no_webhook",
            AdmissionRun::StepOperator => "step_operator",
            AdmissionRun::Autocert => "autocert",
        }
    }
}

/// One number per issuer; `None` (JSON null) when it was not measured.
pub type BySystem = BTreeMap<System, Option<f64>>;
/// One number per admission run.
pub type ByAdmissionRun = BTreeMap<AdmissionRun, Option<f64>>;

/// The report. A phase that fails leaves its fields unset; the documented summary keys are then
/// written as null (see [`Report::finish`]) and the error is listed in `errors`.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub counts: Counts,
    /// versions.env, the step-operator binary and the git revision.
    pub versions: BTreeMap<String, String>,
    pub ceiling_signs_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<CeilingStats>,
    pub api_ceiling_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_ceiling: Option<ApiCeilingStats>,
    pub startup_ms: BySystem,
    pub throughput_per_s: BySystem,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub p50_ready_ms: BySystem,
    pub p99_ready_ms: BySystem,
    pub peak_rss_mib: BySystem,
    /// API writes per issued certificate, every client (issuance.<system>.api).
    pub api_writes_per_issuance_all: BySystem,
    /// The same less the bench client's own creates and approvals.
    pub api_writes_per_issuance_without_bench: BySystem,
    /// The controller's CPU milliseconds per issued certificate, during the burst.
    pub controller_cpu_ms_per_issuance: BySystem,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub issuance: BTreeMap<System, IssuanceStats>,
    pub steady_rss_mib: BySystem,
    #[serde(skip_serializing_if = "Steady::is_empty")]
    pub steady: Steady,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub admission_p50_ms: ByAdmissionRun,
    pub admission_p99_ms: ByAdmissionRun,
    /// API writes per admitted pod less the bench's own pod create (admission.<run>.api).
    pub admission_api_writes_per_pod_without_bench: ByAdmissionRun,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub admission: BTreeMap<AdmissionRun, AdmissionStats>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub webhook_own_timing: BTreeMap<AdmissionRun, OwnTiming>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<crate::phases::selector::SelectorRun>,
    /// Phase 7: pod create → Ready on the e2e node, per way of getting a certificate.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_pod_ready: BTreeMap<String, crate::phases::node::PodTimes>,
    pub ratios: Ratios,
    pub goals: Goals,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
}

/// The run's arguments.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub requests: usize,
    pub pods: usize,
    pub steady_crs: usize,
    pub steady_secrets: usize,
    pub ceiling_secs: u64,
    pub concurrency: usize,
    pub create_concurrency: usize,
    pub admission_concurrency: usize,
    pub approver: &'static str,
}

impl Counts {
    pub fn of(opts: &Opts) -> Counts {
        Counts {
            requests: opts.requests,
            pods: opts.pods,
            steady_crs: opts.steady_crs,
            steady_secrets: opts.steady_secrets,
            ceiling_secs: opts.ceiling_secs,
            concurrency: opts.concurrency,
            create_concurrency: opts.create_concurrency,
            admission_concurrency: opts.admission_concurrency,
            approver: if opts.approve_by_bench() {
                "bench (server-side apply of the Approved condition right after each create)"
            } else {
                "cm-lite (cert-manager's approver)"
            },
        }
    }
}

/// Phase 1: direct `/1.0/sign` requests to step-ca.
#[derive(Debug, Serialize)]
pub struct CeilingStats {
    pub concurrency: usize,
    pub seconds: f64,
    pub signed: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Phase 1b: the control plane with an issuer that costs nothing.
#[derive(Debug, Serialize)]
pub struct ApiCeilingStats {
    pub requests: usize,
    pub seconds: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cpu_seconds: CpuSeconds,
    pub writes_per_request: &'static str,
    /// API requests per request; what is not the bench's is cm-lite's and the control plane's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiCost>,
}

/// Phase 2: one issuer's burst, beyond the summary numbers.
#[derive(Debug, Serialize)]
pub struct IssuanceStats {
    pub ready: usize,
    pub failed: usize,
    pub seconds: f64,
    pub creates_seconds: f64,
    pub rss_end_mib: f64,
    pub idle_wait_ms: f64,
    pub create_to_approved_p50_ms: Option<f64>,
    pub create_to_approved_p99_ms: Option<f64>,
    pub rss_max_sampled_mib: f64,
    pub cpu_seconds: CpuSeconds,
    /// API requests per issued certificate during the burst (until the controller is idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiCost>,
    pub log: String,
}

/// Phase 3, steady RSS: what the cluster held, and each issuer's samples.
#[derive(Debug, Default, Serialize)]
pub struct Steady {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_objects: Option<ClusterObjects>,
    #[serde(flatten)]
    pub systems: BTreeMap<System, SteadyStats>,
}

impl Steady {
    fn is_empty(&self) -> bool {
        self.cluster_objects.is_none() && self.systems.is_empty()
    }
}

#[derive(Debug, Serialize)]
pub struct ClusterObjects {
    pub certificaterequests: usize,
    pub secrets: usize,
}

#[derive(Debug, Serialize)]
pub struct SteadyStats {
    pub settled: bool,
    pub samples_mib: Vec<f64>,
    pub log: String,
}

/// Phase 4: one admission run. Fields are filled as the run gets that far.
#[derive(Debug, Default, Serialize)]
pub struct AdmissionStats {
    /// autocert only: whether the apiserver takes its `v1beta1` webhook configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v1beta1_config_accepted: Option<bool>,
    #[serde(flatten)]
    pub pods: Option<PodStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// API requests per pod created, during the timed creates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiCost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PodStats {
    pub created: usize,
    pub injected: usize,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// A webhook's own account of its handling time, where it keeps one.
#[derive(Debug, Serialize)]
pub struct OwnTiming {
    pub source: String,
    #[serde(flatten)]
    pub histogram: Option<HistogramTiming>,
}

/// From the difference of a Prometheus histogram across the run.
#[derive(Debug, Serialize)]
pub struct HistogramTiming {
    pub reviews: f64,
    pub mean_ms: Option<f64>,
    /// Bucket upper bounds, not interpolated.
    pub p50_le_ms: Option<f64>,
    pub p99_le_ms: Option<f64>,
}

/// step-operator against its peer and against the ceilings.
#[derive(Debug, Default, Serialize)]
pub struct Ratios {
    pub throughput_step_operator_per_api_ceiling: Option<f64>,
    pub throughput_step_issuer_per_api_ceiling: Option<f64>,
    pub throughput_step_operator_per_step_issuer: Option<f64>,
    pub throughput_step_operator_per_ceiling: Option<f64>,
    pub throughput_step_issuer_per_ceiling: Option<f64>,
    pub p99_ready_step_operator_per_step_issuer: Option<f64>,
    pub peak_rss_step_operator_per_step_issuer: Option<f64>,
    pub steady_rss_step_operator_per_step_issuer: Option<f64>,
    pub admission_p99_step_operator_per_autocert: Option<f64>,
    pub startup_step_operator_per_step_issuer: Option<f64>,
    pub api_writes_step_operator_per_step_issuer: Option<f64>,
    pub controller_cpu_step_operator_per_step_issuer: Option<f64>,
}

/// `a / b` to 3 places, when both were measured (null, NaN and infinity are not numbers in the
/// JSON) and `b` is positive.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a.filter(|x| x.is_finite()), b.filter(|x| x.is_finite())) {
        (Some(a), Some(b)) if b > 0.0 => Some(round(a / b, 3)),
        _ => None,
    }
}

/// The measured value for `key`, if any.
pub fn get<K: Ord>(map: &BTreeMap<K, Option<f64>>, key: K) -> Option<f64> {
    map.get(&key).copied().flatten()
}

impl Ratios {
    fn of(r: &Report) -> Ratios {
        use System::{StepIssuer as SI, StepOperator as SO};
        let (so_rate, si_rate) = (get(&r.throughput_per_s, SO), get(&r.throughput_per_s, SI));
        Ratios {
            throughput_step_operator_per_api_ceiling: ratio(so_rate, r.api_ceiling_per_s),
            throughput_step_issuer_per_api_ceiling: ratio(si_rate, r.api_ceiling_per_s),
            throughput_step_operator_per_step_issuer: ratio(so_rate, si_rate),
            throughput_step_operator_per_ceiling: ratio(so_rate, r.ceiling_signs_per_s),
            throughput_step_issuer_per_ceiling: ratio(si_rate, r.ceiling_signs_per_s),
            p99_ready_step_operator_per_step_issuer: ratio(
                get(&r.p99_ready_ms, SO),
                get(&r.p99_ready_ms, SI),
            ),
            peak_rss_step_operator_per_step_issuer: ratio(
                get(&r.peak_rss_mib, SO),
                get(&r.peak_rss_mib, SI),
            ),
            steady_rss_step_operator_per_step_issuer: ratio(
                get(&r.steady_rss_mib, SO),
                get(&r.steady_rss_mib, SI),
            ),
            admission_p99_step_operator_per_autocert: ratio(
                get(&r.admission_p99_ms, AdmissionRun::StepOperator),
                get(&r.admission_p99_ms, AdmissionRun::Autocert),
            ),
            startup_step_operator_per_step_issuer: ratio(
                get(&r.startup_ms, SO),
                get(&r.startup_ms, SI),
            ),
            api_writes_step_operator_per_step_issuer: ratio(
                get(&r.api_writes_per_issuance_without_bench, SO),
                get(&r.api_writes_per_issuance_without_bench, SI),
            ),
            controller_cpu_step_operator_per_step_issuer: ratio(
                get(&r.controller_cpu_ms_per_issuance, SO),
                get(&r.controller_cpu_ms_per_issuance, SI),
            ),
        }
    }
}

impl Report {
    /// A report of this run so far: when, how it was called, its counts and versions.
    pub fn begin(opts: &Opts, versions: BTreeMap<String, String>) -> Report {
        let mut report = Report {
            date: now_utc(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            counts: Counts::of(opts),
            versions,
            ..Report::default()
        };
        // e2e/bench.sh names what else was using the CPU when it started the bench.
        if let Ok(busy) = std::env::var("BENCH_BUSY")
            && !busy.trim().is_empty()
        {
            report.notes.push(format!(
                "other CPU-heavy processes were running at the start: {}",
                busy.trim()
            ));
        }
        report
    }

    /// Records a phase's failure; the run goes on with the next phase.
    pub fn error(&mut self, phase: &str, e: anyhow::Error) {
        let msg = format!("{phase}: {e:#}");
        log(format!("ERROR {msg}"));
        self.errors.push(msg);
    }

    /// Writes null for the documented summary numbers that were not measured (tools and
    /// BENCHMARKS.md rely on them being present), then computes the ratios.
    pub fn finish(&mut self) {
        for by_system in [
            &mut self.startup_ms,
            &mut self.throughput_per_s,
            &mut self.p99_ready_ms,
            &mut self.peak_rss_mib,
            &mut self.steady_rss_mib,
        ] {
            for system in System::ALL {
                by_system.entry(system).or_insert(None);
            }
        }
        for webhook in [AdmissionRun::StepOperator, AdmissionRun::Autocert] {
            self.admission_p99_ms.entry(webhook).or_insert(None);
        }
        cost::summarise(self);
        self.ratios = Ratios::of(self);
        self.goals = Goals::of(self);
    }

    /// Pretty JSON. Serialized through a `Value` so that keys come out sorted, as they always
    /// have, whatever the struct order: reports of different runs stay easy to diff.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&serde_json::to_value(self)?)
    }

    /// Writes `<stem>.json` and `<stem>.md` to `dir` (stem `latest`, or `node` for the node
    /// phase, which runs on a cluster of its own) and prints the table.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        let json_path = dir.join(format!("{stem}.json"));
        std::fs::write(&json_path, self.to_json()?)?;
        let md = markdown(self);
        std::fs::write(dir.join(format!("{stem}.md")), &md)?;
        println!("{md}");
        println!("JSON: {}", json_path.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
