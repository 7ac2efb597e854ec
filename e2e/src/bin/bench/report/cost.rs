//! What each issuance and each admitted pod cost the API, and the goals the report checks.

use serde::Serialize;

use super::{AdmissionRun, Report, get, ratio};
use crate::apimetrics::{ApiCounts, ByResource};
use crate::systems::System;
use crate::util::round;

/// API requests per unit of work (an issued certificate, an admitted pod), from the difference
/// of kube-apiserver's `apiserver_request_total` across the run.
#[derive(Debug, Clone, Serialize)]
pub struct ApiCost {
    /// What the counts are divided by: requests issued, or pods created.
    pub units: usize,
    /// Every client's requests per unit, by resource and verb (`patch` includes server-side
    /// apply).
    pub all: ByResource,
    /// The bench client's own requests per unit (counted by the bench: the same for every
    /// system).
    pub bench: ByResource,
    /// Creates, updates, patches and deletes per unit, every client.
    pub writes_all: f64,
    pub writes_bench: f64,
    /// `writes_all - writes_bench`: the system under test, plus whatever cm-lite and the control
    /// plane wrote meanwhile (the same for every system).
    pub writes_without_bench: f64,
}

impl ApiCost {
    pub fn of(measured: &ApiCounts, bench: &ApiCounts, units: usize) -> ApiCost {
        let per = |x: f64| round(x / units.max(1) as f64, 3);
        ApiCost {
            units,
            all: measured.per(units),
            bench: bench.per(units),
            writes_all: per(measured.writes()),
            writes_bench: per(bench.writes()),
            writes_without_bench: per((measured.writes() - bench.writes()).max(0.0)),
        }
    }
}

/// One goal: the measured value, the bound it is held to, and whether it holds (null when
/// either was not measured).
#[derive(Debug, Default, Serialize)]
pub struct Goal {
    pub value: Option<f64>,
    pub target: Option<f64>,
    pub met: Option<bool>,
}

impl Goal {
    fn below(value: Option<f64>, target: Option<f64>) -> Goal {
        Goal::check(value, target, |v, t| v < t)
    }

    fn at_least(value: Option<f64>, target: f64) -> Goal {
        Goal::check(value, Some(target), |v, t| v >= t)
    }

    fn at_most(value: Option<f64>, target: f64) -> Goal {
        Goal::check(value, Some(target), |v, t| v <= t)
    }

    fn check(value: Option<f64>, target: Option<f64>, ok: fn(f64, f64) -> bool) -> Goal {
        let (value, target) = (
            value.filter(|x| x.is_finite()),
            target.filter(|x| x.is_finite()),
        );
        Goal {
            value,
            target,
            met: value.zip(target).map(|(v, t)| ok(v, t)),
        }
    }
}

/// The goals step-operator is held to against step-issuer and the API ceiling.
#[derive(Debug, Default, Serialize)]
pub struct Goals {
    /// API writes per issuance, less the bench's own, below step-issuer's.
    pub api_writes_below_step_issuer: Goal,
    /// Issuance throughput at least 0.85 of the API ceiling.
    pub throughput_per_api_ceiling_at_least_0_85: Goal,
    /// Peak RSS during issuance at most a quarter of step-issuer's.
    pub peak_rss_at_most_a_quarter_of_step_issuer: Goal,
    /// Steady RSS at most a quarter of step-issuer's.
    pub steady_rss_at_most_a_quarter_of_step_issuer: Goal,
}

pub const THROUGHPUT_GOAL: f64 = 0.85;
pub const RSS_GOAL: f64 = 0.25;

impl Goals {
    pub fn of(r: &Report) -> Goals {
        let q = &r.ratios;
        let writes = &r.api_writes_per_issuance_without_bench;
        Goals {
            api_writes_below_step_issuer: Goal::below(
                get(writes, System::StepOperator),
                get(writes, System::StepIssuer),
            ),
            throughput_per_api_ceiling_at_least_0_85: Goal::at_least(
                q.throughput_step_operator_per_api_ceiling,
                THROUGHPUT_GOAL,
            ),
            peak_rss_at_most_a_quarter_of_step_issuer: Goal::at_most(
                q.peak_rss_step_operator_per_step_issuer,
                RSS_GOAL,
            ),
            steady_rss_at_most_a_quarter_of_step_issuer: Goal::at_most(
                q.steady_rss_step_operator_per_step_issuer,
                RSS_GOAL,
            ),
        }
    }
}

/// The controller's CPU milliseconds per issued request, from the burst's CPU seconds.
pub fn cpu_ms_per_issuance(r: &Report, system: System) -> Option<f64> {
    let stats = r.issuance.get(&system)?;
    let secs = stats.cpu_seconds.get(system.key())?;
    ratio(Some(secs * 1000.0), Some(stats.ready as f64)).map(|x| round(x, 2))
}

/// The summary numbers derived from the phases' details, filled in by [`Report::finish`].
pub fn summarise(r: &mut Report) {
    for system in System::ALL {
        let cost = r.issuance.get(&system).and_then(|s| s.api.as_ref());
        r.api_writes_per_issuance_all
            .insert(system, cost.map(|c| c.writes_all));
        r.api_writes_per_issuance_without_bench
            .insert(system, cost.map(|c| c.writes_without_bench));
        let cpu = cpu_ms_per_issuance(r, system);
        r.controller_cpu_ms_per_issuance.insert(system, cpu);
    }
    for run in [
        AdmissionRun::NoWebhook,
        AdmissionRun::StepOperator,
        AdmissionRun::Autocert,
    ] {
        let cost = r.admission.get(&run).and_then(|s| s.api.as_ref());
        r.admission_api_writes_per_pod_without_bench
            .insert(run, cost.map(|c| c.writes_without_bench));
    }
}
