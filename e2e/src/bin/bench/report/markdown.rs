//! The table printed at the end and written to `latest.md` (BENCHMARKS.md quotes it).

use super::cost::{Goal, RSS_GOAL, THROUGHPUT_GOAL};
use super::*;
use crate::apimetrics::ByResource;

/// A table cell: the number as JSON would show it, or a dash when it was not measured.
fn cell(v: Option<f64>) -> String {
    match v.filter(|x| x.is_finite()) {
        Some(x) => format!("{x}"),
        None => "–".into(),
    }
}

/// One table row: step-operator's value, the peer's, who the peer is, and the two ratios.
struct Row {
    name: &'static str,
    ours: Option<f64>,
    peer: Option<f64>,
    peer_is: &'static str,
    per_peer: Option<f64>,
    per_ceiling: Option<f64>,
}

impl Row {
    fn new(name: &'static str, ours: Option<f64>, peer: Option<f64>, peer_is: &'static str) -> Row {
        Row {
            name,
            ours,
            peer,
            peer_is,
            per_peer: None,
            per_ceiling: None,
        }
    }

    fn per_peer(mut self, ratio: Option<f64>) -> Row {
        self.per_peer = ratio;
        self
    }

    fn per_ceiling(mut self, ratio: Option<f64>) -> Row {
        self.per_ceiling = ratio;
        self
    }

    fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            self.name,
            cell(self.ours),
            cell(self.peer),
            self.peer_is,
            cell(self.per_peer),
            cell(self.per_ceiling)
        )
    }
}

const STEP_ISSUER: &str = "step-issuer";

fn ceiling_rows(r: &Report) -> [Row; 3] {
    let q = &r.ratios;
    [
        Row::new(
            "ceiling: direct /1.0/sign (signs/s)",
            None,
            r.ceiling_signs_per_s,
            "step-ca alone",
        ),
        Row::new(
            "API ceiling: create + approve + one status write, no issuer (requests/s)",
            None,
            r.api_ceiling_per_s,
            "control plane alone",
        ),
        Row::new(
            "issuance throughput / API ceiling",
            q.throughput_step_operator_per_api_ceiling,
            q.throughput_step_issuer_per_api_ceiling,
            STEP_ISSUER,
        ),
    ]
}

fn issuer_rows(r: &Report) -> [Row; 9] {
    let q = &r.ratios;
    let pair = |m: &BySystem| (get(m, System::StepOperator), get(m, System::StepIssuer));
    let row = |name, m: &BySystem| {
        let (ours, peer) = pair(m);
        Row::new(name, ours, peer, STEP_ISSUER)
    };
    [
        row("issuance throughput (requests/s)", &r.throughput_per_s)
            .per_peer(q.throughput_step_operator_per_step_issuer)
            .per_ceiling(q.throughput_step_operator_per_ceiling),
        row("create→Ready p50 (ms)", &r.p50_ready_ms),
        row("create→Ready p99 (ms)", &r.p99_ready_ms)
            .per_peer(q.p99_ready_step_operator_per_step_issuer),
        row("peak RSS during issuance (MiB)", &r.peak_rss_mib)
            .per_peer(q.peak_rss_step_operator_per_step_issuer),
        row("steady RSS (MiB)", &r.steady_rss_mib)
            .per_peer(q.steady_rss_step_operator_per_step_issuer),
        row("start-up → first Ready (ms)", &r.startup_ms)
            .per_peer(q.startup_step_operator_per_step_issuer),
        row(
            "API writes per issuance, every client",
            &r.api_writes_per_issuance_all,
        ),
        row(
            "API writes per issuance, less the bench's own",
            &r.api_writes_per_issuance_without_bench,
        )
        .per_peer(q.api_writes_step_operator_per_step_issuer),
        row(
            "controller CPU per issuance (ms)",
            &r.controller_cpu_ms_per_issuance,
        )
        .per_peer(q.controller_cpu_step_operator_per_step_issuer),
    ]
}

fn admission_rows(r: &Report) -> [Row; 4] {
    let (p50, p99) = (&r.admission_p50_ms, &r.admission_p99_ms);
    let (so, ac) = (AdmissionRun::StepOperator, AdmissionRun::Autocert);
    [
        Row::new(
            "admission create p50 (ms)",
            get(p50, so),
            get(p50, ac),
            "autocert",
        ),
        Row::new(
            "admission create p99 (ms)",
            get(p99, so),
            get(p99, ac),
            "autocert",
        )
        .per_peer(r.ratios.admission_p99_step_operator_per_autocert),
        Row::new(
            "admission create p99, no webhook (ms)",
            None,
            get(p99, AdmissionRun::NoWebhook),
            "apiserver alone",
        ),
        Row::new(
            "API writes per pod, less the bench's pod create",
            get(&r.admission_api_writes_per_pod_without_bench, so),
            get(&r.admission_api_writes_per_pod_without_bench, ac),
            "autocert",
        ),
    ]
}

/// The lines under the table: the webhook's own timing and how many pods came back injected.
fn admission_lines(r: &Report) -> String {
    let mut s = String::new();
    if let Some(OwnTiming {
        histogram: Some(h), ..
    }) = r.webhook_own_timing.get(&AdmissionRun::StepOperator)
    {
        s.push_str(&format!(
            "\nstep-operator webhook's own timing ({} reviews): mean {} ms, p50 ≤ {} ms, p99 ≤ {} ms (histogram buckets); autocert has none.\n",
            // As JSON writes it (`1000.0`): the count is a float in the histogram.
            serde_json::Value::from(h.reviews),
            cell(h.mean_ms),
            cell(h.p50_le_ms),
            cell(h.p99_le_ms)
        ));
    }
    let injected: Vec<String> = [
        (AdmissionRun::StepOperator, "step-operator"),
        (AdmissionRun::Autocert, "autocert"),
    ]
    .iter()
    .filter_map(|(w, label)| {
        let pods = r.admission.get(w)?.pods.as_ref()?;
        Some(format!("{label} {} of {}", pods.injected, pods.created))
    })
    .collect();
    if !injected.is_empty() {
        s.push_str(&format!(
            "Pods returned injected: {}.\n",
            injected.join(", ")
        ));
    }
    let costs: Vec<String> = [
        (AdmissionRun::NoWebhook, "no webhook"),
        (AdmissionRun::StepOperator, "step-operator"),
        (AdmissionRun::Autocert, "autocert"),
    ]
    .iter()
    .filter_map(|(w, label)| {
        let api = r.admission.get(w)?.api.as_ref()?;
        Some(format!("{label}: {}", compact(&api.all)))
    })
    .collect();
    if !costs.is_empty() {
        s.push_str(&format!(
            "API requests per pod created, every client (`apiserver_request_total`): {}.\n",
            costs.join("; ")
        ));
    }
    s
}

/// `pods create 1, secrets create 1` (everything counted, in name order).
fn compact(by: &ByResource) -> String {
    let parts: Vec<String> = by
        .iter()
        .flat_map(|(r, verbs)| verbs.iter().map(move |(v, n)| format!("{r} {v} {n}")))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Notes and errors as Markdown lists, continuation lines indented under their item.
fn lists(r: &Report) -> String {
    let mut s = String::new();
    for (title, items) in [("Notes", &r.notes), ("Errors", &r.errors)] {
        if items.is_empty() {
            continue;
        }
        s.push_str(&format!("\n{title}:\n"));
        for i in items {
            s.push_str(&format!("- {}\n", i.replace('\n', "\n  ")));
        }
    }
    s
}

/// The table printed at the end and written to `latest.md` (BENCHMARKS.md quotes it).
pub fn markdown(r: &Report) -> String {
    let c = &r.counts;
    let mut s = format!(
        "## step-operator benchmark, {}\n\nCounts: {} requests, {} pods, {} steady CertificateRequests + {} Secrets, ceiling {} s at concurrency {}.\n\n",
        r.date, c.requests, c.pods, c.steady_crs, c.steady_secrets, c.ceiling_secs, c.concurrency
    );
    let rows: Vec<Row> = ceiling_rows(r)
        .into_iter()
        .chain(issuer_rows(r))
        .chain(admission_rows(r))
        .collect();
    // The node phase alone (e2e/bench.sh runs it on a cluster of its own) measures nothing of the
    // main table: its report has only its own. Beside another phase, the table is printed.
    let measured = rows
        .iter()
        .any(|row| row.ours.is_some() || row.peer.is_some());
    if r.node_pod_ready.is_empty() || measured {
        s.push_str("| measurement | step-operator | peer | peer is | step-operator/peer | step-operator/ceiling |\n|---|---|---|---|---|---|\n");
        for row in rows {
            s.push_str(&row.line());
        }
        s.push_str(&goal_lines(r));
        s.push_str(&api_cost_lines(r));
    }
    s.push_str(&admission_lines(r));
    s.push_str(&selector_lines(r));
    s.push_str(&crate::phases::node::markdown(&r.node_pod_ready));
    s.push_str(&lists(r));
    s
}

/// Phase 6: one line per run of the field-selector comparison.
fn selector_lines(r: &Report) -> String {
    if r.selector.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n| CertificateRequest watch | foreign requests | first sign (s) | controller CPU (s) | apiserver CPU (s) | etcd CPU (s) | steady: controller / apiserver CPU (s) | controller RSS (MiB) | window (s) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in &r.selector {
        let mode = if run.select_requests {
            "field-selected (`spec.issuerRef.group`)"
        } else {
            "every request"
        };
        s.push_str(&format!(
            "| {mode} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            run.foreign_crs,
            run.first_sign_s,
            run.controller_cpu_s,
            run.apiserver_cpu_s,
            run.etcd_cpu_s,
            run.steady_controller_cpu_s,
            run.steady_apiserver_cpu_s,
            run.rss_mib,
            run.wall_s
        ));
    }
    s
}

/// Met, missed, or not measured.
fn verdict(g: &Goal) -> &'static str {
    match g.met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The goals table: each goal met, missed or not measured.
fn goal_lines(r: &Report) -> String {
    let g = &r.goals;
    let writes_target = format!(
        "< {} (step-issuer's)",
        cell(g.api_writes_below_step_issuer.target)
    );
    let rows: [(&str, &Goal, String); 4] = [
        (
            "API writes per issuance, less the bench's own: fewer than step-issuer",
            &g.api_writes_below_step_issuer,
            writes_target,
        ),
        (
            "issuance throughput / API ceiling",
            &g.throughput_per_api_ceiling_at_least_0_85,
            format!("≥ {THROUGHPUT_GOAL}"),
        ),
        (
            "peak RSS during issuance / step-issuer's",
            &g.peak_rss_at_most_a_quarter_of_step_issuer,
            format!("≤ {RSS_GOAL}"),
        ),
        (
            "steady RSS / step-issuer's",
            &g.steady_rss_at_most_a_quarter_of_step_issuer,
            format!("≤ {RSS_GOAL}"),
        ),
    ];
    let mut s = String::from("\n| goal | step-operator | target | result |\n|---|---|---|---|\n");
    for (name, goal, target) in rows {
        s.push_str(&format!(
            "| {name} | {} | {target} | {} |\n",
            cell(goal.value),
            verdict(goal)
        ));
    }
    s
}

/// The resources the per-issuance table always shows; the rest are summed as "other".
const COST_RESOURCES: [&str; 5] = [
    "certificaterequests",
    "certificaterequests/status",
    "events",
    "secrets",
    "leases",
];
const COST_VERBS: [&str; 7] = [
    "create", "update", "patch", "delete", "get", "list", "watch",
];

/// `by[resource][verb]`, or for "other resources" the sum over every resource not listed.
fn cost_cell(by: &ByResource, resource: &str, verb: &str) -> f64 {
    let of = |r: &str| by.get(r).and_then(|v| v.get(verb)).copied().unwrap_or(0.0);
    if COST_RESOURCES.contains(&resource) {
        return of(resource);
    }
    let others: f64 = by
        .keys()
        .filter(|r| !COST_RESOURCES.contains(&r.as_str()))
        .map(|r| of(r))
        .fold(0.0, |a, b| a + b);
    round(others, 3)
}

/// API requests per issued certificate, by resource and verb, for each system and for the bench.
fn api_cost_lines(r: &Report) -> String {
    let costs: Vec<(&str, &ApiCost)> = [
        (System::StepOperator, "step-operator run"),
        (System::StepIssuer, "step-issuer run"),
    ]
    .iter()
    .filter_map(|(sys, label)| Some((*label, r.issuance.get(sys)?.api.as_ref()?)))
    .chain(
        r.api_ceiling
            .as_ref()
            .and_then(|c| c.api.as_ref())
            .map(|c| ("API ceiling run, no issuer", c)),
    )
    .collect();
    if costs.is_empty() {
        return String::new();
    }
    // The bench's own calls in the issuer runs (the same in both).
    let bench = [System::StepOperator, System::StepIssuer]
        .iter()
        .find_map(|sys| Some(&r.issuance.get(sys)?.api.as_ref()?.bench));
    let mut s = format!(
        "\nAPI requests per issued certificate during the burst, from kube-apiserver's `apiserver_request_total` (every client; patch includes server-side apply; \"the bench\" is the bench client's own creates and approvals; in the API ceiling run the bench also writes each Ready status, so what is not the bench's there is cm-lite's and the control plane's):\n\n| resource | requests in | {} |\n|---|---|{}\n",
        COST_VERBS.join(" | "),
        "---|".repeat(COST_VERBS.len())
    );
    for resource in COST_RESOURCES.iter().copied().chain(["other resources"]) {
        let mut lines: Vec<(&str, &ByResource)> =
            costs.iter().map(|(label, c)| (*label, &c.all)).collect();
        if let Some(bench) = bench
            && COST_VERBS
                .iter()
                .any(|v| cost_cell(bench, resource, v) > 0.0)
        {
            lines.push(("the bench, in each issuer run", bench));
        }
        for (label, by) in lines {
            let cells: Vec<String> = COST_VERBS
                .iter()
                .map(|v| format!("{}", cost_cell(by, resource, v)))
                .collect();
            s.push_str(&format!(
                "| {resource} | {label} | {} |\n",
                cells.join(" | ")
            ));
        }
    }
    s
}
