//! The typed report against reports the string-path report wrote (`testdata/`, made from the
//! same numbers before the report was typed): same JSON, same Markdown.
//!
//! One intended difference, edited into `full.json`: `admission.autocert.v1beta1_config_accepted`
//! (documented in BENCHMARKS.md) is kept when autocert's pods were measured too. The string-path
//! report lost it there, because recording the pod run replaced the whole `admission.autocert`
//! object.

use serde_json::Value;

use super::*;
use crate::apimetrics::ApiCounts;
use crate::systems::System::{StepIssuer as SI, StepOperator as SO};

fn golden(name: &str) -> (Value, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/bench/testdata");
    let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
    let md = std::fs::read_to_string(dir.join(format!("{name}.md"))).unwrap();
    (serde_json::from_str(&json).unwrap(), md)
}

fn check(name: &str, mut report: Report) {
    report.finish();
    // `BENCH_UPDATE_GOLDEN=1 cargo test -p e2e --bin bench` rewrites the samples; review the diff.
    if std::env::var_os("BENCH_UPDATE_GOLDEN").is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/bench/testdata");
        std::fs::write(
            dir.join(format!("{name}.json")),
            report.to_json().unwrap() + "\n",
        )
        .unwrap();
        std::fs::write(dir.join(format!("{name}.md")), markdown(&report)).unwrap();
    }
    let (json, md) = golden(name);
    let ours: Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(
        ours,
        json,
        "{name}: JSON differs:\n{}",
        report.to_json().unwrap()
    );
    assert_eq!(markdown(&report), md, "{name}: Markdown differs");
}

fn cpu(pairs: &[(&str, f64)]) -> CpuSeconds {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn head() -> Report {
    Report {
        date: "2026-11-22T20:01:46Z".into(),
        command: "target/release/bench --requests 1000".into(),
        counts: Counts {
            requests: 1000,
            pods: 1000,
            steady_crs: 5000,
            steady_secrets: 5000,
            ceiling_secs: 20,
            concurrency: 16,
            create_concurrency: 64,
            admission_concurrency: 8,
            approver: "bench (server-side apply of the Approved condition right after each create)",
        },
        versions: [
            ("git", "86afce5"),
            ("step_ca", "v0.28.4"),
            ("step_operator", "step-operator 0.1.0"),
            ("step_operator_binary", "/t/step-operator"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Report::default()
    }
}

fn issuance(r: &mut Report, system: System, k: f64) {
    r.startup_ms.insert(system, Some(321.0 * k));
    r.throughput_per_s.insert(system, Some(112.2 / k));
    r.p50_ready_ms.insert(system, Some(3775.0 * k));
    r.p99_ready_ms.insert(system, Some(8367.0 * k));
    r.peak_rss_mib.insert(system, Some(20.3 * k));
    r.issuance.insert(
        system,
        IssuanceStats {
            ready: 1000,
            failed: 1,
            seconds: 8.913,
            creates_seconds: 4.51,
            rss_end_mib: 18.2,
            idle_wait_ms: 1200.0,
            create_to_approved_p50_ms: Some(20.0),
            create_to_approved_p99_ms: None,
            rss_max_sampled_mib: 20.1,
            cpu_seconds: cpu(&[
                ("wall_seconds", 8.9),
                ("apiserver", 11.05),
                (system.key(), 1.58),
            ]),
            api: Some(burst_cost(k)),
            log: format!("/s/logs/{}.log", system.key()),
        },
    );
}

/// A burst of 1000 requests: the bench's create and approval of each, `k` status writes, `k`
/// Events and `k` reads by the controller, and a few lease renewals.
fn burst_cost(k: f64) -> ApiCost {
    let mut all = ApiCounts::default();
    let mut bench = ApiCounts::default();
    for (resource, verb, n) in [
        ("certificaterequests", "create", 1000.0),
        ("certificaterequests/status", "patch", 1000.0),
    ] {
        all.add(resource, verb, n);
        bench.add(resource, verb, n);
    }
    all.add("certificaterequests/status", "patch", 1000.0 * k);
    all.add("events", "create", 1000.0 * k);
    all.add("certificaterequests", "get", 1000.0 * k);
    all.add("leases", "update", 12.0);
    all.add("stepclusterissuers", "get", 3.0);
    ApiCost::of(&all, &bench, 1000)
}

/// 1000 pod creates, and `secrets` Secrets created by the webhook.
fn pod_cost(secrets: f64) -> Option<ApiCost> {
    let mut all = ApiCounts::default();
    let mut bench = ApiCounts::default();
    all.add("pods", "create", 1000.0);
    bench.add("pods", "create", 1000.0);
    if secrets > 0.0 {
        all.add("secrets", "create", secrets);
    }
    Some(ApiCost::of(&all, &bench, 1000))
}

fn ceilings(r: &mut Report) {
    r.ceiling_signs_per_s = Some(1234.1);
    r.ceiling = Some(CeilingStats {
        concurrency: 16,
        seconds: 20.01,
        signed: 24694,
        errors: 0,
        first_error: None,
        p50_ms: Some(12.3),
        p99_ms: Some(40.5),
    });
    r.api_ceiling_per_s = Some(166.0);
    r.api_ceiling = Some(ApiCeilingStats {
        requests: 1000,
        seconds: 6.021,
        p50_ms: Some(170.0),
        p99_ms: Some(410.0),
        cpu_seconds: cpu(&[("wall_seconds", 6.02), ("apiserver", 9.39), ("etcd", 0.91)]),
        writes_per_request: "create + approve (status apply) + Ready with certificate (status apply)",
        api: Some(ceiling_cost()),
    });
}

/// The API ceiling run of 1000 requests: the bench's create, approval and Ready of each, and
/// cm-lite's approver first on 200 of them.
fn ceiling_cost() -> ApiCost {
    let mut all = ApiCounts::default();
    let mut bench = ApiCounts::default();
    for c in [&mut all, &mut bench] {
        c.add("certificaterequests", "create", 1000.0);
        c.add("certificaterequests/status", "patch", 2000.0);
    }
    all.add("certificaterequests/status", "update", 200.0);
    ApiCost::of(&all, &bench, 1000)
}

fn steady(r: &mut Report) {
    r.steady.cluster_objects = Some(ClusterObjects {
        certificaterequests: 7002,
        secrets: 5003,
    });
    r.steady_rss_mib.insert(SO, Some(15.3));
    r.steady.systems.insert(
        SO,
        SteadyStats {
            settled: true,
            samples_mib: vec![15.1, 15.3],
            log: "/s/so-steady.log".into(),
        },
    );
    r.steady_rss_mib.insert(SI, Some(151.3));
    r.steady.systems.insert(
        SI,
        SteadyStats {
            settled: false,
            samples_mib: vec![150.0],
            log: "/s/si-steady.log".into(),
        },
    );
}

fn pods(created: usize, injected: usize, errors: usize, first: Option<&str>) -> Option<PodStats> {
    Some(PodStats {
        created,
        injected,
        errors,
        first_error: first.map(str::to_string),
    })
}

fn admission(r: &mut Report) {
    use AdmissionRun::*;
    for (w, p50, p99) in [
        (NoWebhook, 8.1, 13.2),
        (StepOperator, 16.0, 44.4),
        (Autocert, 20.5, 60.0),
    ] {
        r.admission_p50_ms.insert(w, Some(p50));
        r.admission_p99_ms.insert(w, Some(p99));
    }
    r.admission.insert(
        NoWebhook,
        AdmissionStats {
            pods: pods(1000, 0, 0, None),
            api: pod_cost(0.0),
            ..Default::default()
        },
    );
    r.admission.insert(
        StepOperator,
        AdmissionStats {
            pods: pods(1000, 1000, 0, None),
            rss_mib: Some(14.2),
            peak_rss_mib: Some(16.0),
            api: pod_cost(0.0),
            ..Default::default()
        },
    );
    r.admission.insert(
        Autocert,
        AdmissionStats {
            v1beta1_config_accepted: Some(true),
            pods: pods(998, 990, 2, Some("p00001: boom")),
            rss_mib: Some(30.5),
            peak_rss_mib: Some(31.0),
            api: pod_cost(990.0),
            log: Some("/s/autocert.log".into()),
        },
    );
    r.webhook_own_timing.insert(StepOperator, OwnTiming {
        source: "step_operator_admission_duration_seconds (Prometheus histogram; quantiles are bucket upper bounds)".into(),
        histogram: Some(HistogramTiming { reviews: 1000.0, mean_ms: Some(0.26), p50_le_ms: Some(0.4), p99_le_ms: Some(1.6) }),
    });
    r.webhook_own_timing.insert(
        Autocert,
        OwnTiming {
            source: "none: autocert has no metrics endpoint and logs no durations".into(),
            histogram: None,
        },
    );
}

#[test]
fn a_full_run_writes_what_the_string_path_report_wrote() {
    let mut r = head();
    ceilings(&mut r);
    issuance(&mut r, SO, 1.0);
    issuance(&mut r, SI, 2.0);
    r.notes
        .push("step_issuer: 1 requests Failed, first: r00001: boom".into());
    steady(&mut r);
    admission(&mut r);
    r.notes.push("admission autocert: only 990 of 1000 pods came back injected; its latency is not that of a full mutation".into());
    check("full", r);
}

#[test]
fn a_partial_run_leaves_out_what_was_not_reached() {
    let mut r = head();
    r.errors
        .push("ceiling: the warm-up sign request failed: 401".into());
    r.api_ceiling_per_s = Some(150.5);
    r.api_ceiling = Some(ApiCeilingStats {
        requests: 50,
        seconds: 0.332,
        p50_ms: None,
        p99_ms: None,
        cpu_seconds: cpu(&[("wall_seconds", 0.33)]),
        writes_per_request: "create + approve (status apply) + Ready with certificate (status apply)",
        api: None,
    });
    issuance(&mut r, SO, 1.0);
    r.startup_ms.insert(SI, Some(972.0));
    r.errors
        .push("issuance step_issuer: step-issuer exited\nlog tail:\npanic".into());
    r.steady.cluster_objects = Some(ClusterObjects {
        certificaterequests: 100,
        secrets: 50,
    });
    r.errors.push("steady step_operator: no sample".into());
    r.admission_p50_ms.insert(AdmissionRun::NoWebhook, None);
    r.admission_p99_ms.insert(AdmissionRun::NoWebhook, None);
    r.admission.insert(
        AdmissionRun::NoWebhook,
        AdmissionStats {
            pods: pods(0, 0, 5, Some("p00000: denied")),
            ..Default::default()
        },
    );
    r.errors
        .push("admission step_operator: no pod was injected".into());
    r.admission.insert(
        AdmissionRun::Autocert,
        AdmissionStats {
            v1beta1_config_accepted: Some(false),
            ..Default::default()
        },
    );
    r.errors.push(
        "admission autocert: kube-apiserver rejects admissionReviewVersions [v1beta1]".into(),
    );
    r.notes
        .push("other CPU-heavy processes were running at the start: rustc(pid 1, 99% CPU)".into());
    check("partial", r);
}

#[test]
fn a_run_that_measured_nothing_still_has_the_documented_keys() {
    check("empty", head());
    // The paths the string-path report always wrote, null when not measured.
    let mut r = head();
    r.finish();
    let json: Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    for path in [
        &["ceiling_signs_per_s"][..],
        &["api_ceiling_per_s"],
        &["throughput_per_s", "step_operator"],
        &["throughput_per_s", "step_issuer"],
        &["p99_ready_ms", "step_operator"],
        &["p99_ready_ms", "step_issuer"],
        &["peak_rss_mib", "step_operator"],
        &["peak_rss_mib", "step_issuer"],
        &["steady_rss_mib", "step_operator"],
        &["steady_rss_mib", "step_issuer"],
        &["admission_p99_ms", "step_operator"],
        &["admission_p99_ms", "autocert"],
        &["startup_ms", "step_operator"],
        &["startup_ms", "step_issuer"],
    ] {
        let mut v = &json;
        for key in path {
            v = v.get(key).unwrap_or_else(|| panic!("{path:?} is missing"));
        }
        assert!(v.is_null(), "{path:?}");
    }
}

#[test]
fn the_table_has_a_row_per_measurement() {
    let mut r = head();
    ceilings(&mut r);
    issuance(&mut r, SO, 1.0);
    issuance(&mut r, SI, 2.0);
    r.finish();
    let md = markdown(&r);
    for row in [
        "| ceiling: direct /1.0/sign (signs/s) | – | 1234.1 | step-ca alone | – | – |",
        "| issuance throughput (requests/s) | 112.2 | 56.1 | step-issuer | 2 | 0.091 |",
        "| create→Ready p99 (ms) | 8367 | 16734 | step-issuer | 0.5 | – |",
        "| steady RSS (MiB) | – | – | step-issuer | – | – |",
        "| admission create p99 (ms) | – | – | autocert | – | – |",
    ] {
        assert!(md.contains(row), "no row {row:?} in\n{md}");
    }
    // The main table: header and 16 rows; the goals: header and 4 rows; the API requests per
    // issuance: header, 6 resources in 3 runs, the bench's 2.
    assert_eq!(md.matches("\n| ").count(), 17 + 5 + 21, "\n{md}");
}

#[test]
fn the_node_phase_keeps_the_main_table_only_beside_another_phase() {
    let node = || {
        BTreeMap::from([(
            "pod certificates".to_string(),
            crate::phases::node::PodTimes::of(&[std::time::Duration::from_millis(800)]),
        )])
    };
    let header = "| measurement | step-operator | peer |";
    // The node phase alone: its own table, no empty main one.
    let mut alone = head();
    alone.node_pod_ready = node();
    alone.finish();
    let md = markdown(&alone);
    assert!(md.contains("| pod certificates | 1 | 800 |"), "\n{md}");
    assert!(!md.contains(header), "\n{md}");
    // Beside issuance (`--only issuance,node`): both tables.
    let mut both = head();
    issuance(&mut both, SO, 1.0);
    both.node_pod_ready = node();
    both.finish();
    let md = markdown(&both);
    assert!(md.contains("| pod certificates | 1 | 800 |"), "\n{md}");
    assert!(md.contains(header), "\n{md}");
    assert!(
        md.contains("| issuance throughput (requests/s) | 112.2 |"),
        "\n{md}"
    );
}

#[test]
fn goals_are_met_missed_or_not_measured() {
    let mut r = head();
    ceilings(&mut r);
    issuance(&mut r, SO, 1.0);
    issuance(&mut r, SI, 2.0);
    r.steady_rss_mib.insert(SO, Some(10.0));
    r.steady_rss_mib.insert(SI, Some(40.0));
    r.finish();
    let g = &r.goals;
    // Writes less the bench's: 2.012 against 4.012 per issuance.
    assert_eq!(get(&r.api_writes_per_issuance_all, SO), Some(4.012));
    assert_eq!(
        get(&r.api_writes_per_issuance_without_bench, SI),
        Some(4.012)
    );
    assert_eq!(g.api_writes_below_step_issuer.value, Some(2.012));
    assert_eq!(g.api_writes_below_step_issuer.met, Some(true));
    // 112.2 / 166 = 0.676.
    assert_eq!(g.throughput_per_api_ceiling_at_least_0_85.met, Some(false));
    // Peak 20.3 against 40.6 MiB: half, not a quarter; steady 10 against 40: exactly a quarter.
    assert_eq!(g.peak_rss_at_most_a_quarter_of_step_issuer.met, Some(false));
    assert_eq!(
        g.steady_rss_at_most_a_quarter_of_step_issuer.met,
        Some(true)
    );
    // 1.58 CPU-seconds over 1000 issued requests, for both.
    assert_eq!(get(&r.controller_cpu_ms_per_issuance, SO), Some(1.58));
    let md = markdown(&r);
    for row in [
        "| API writes per issuance, less the bench's own: fewer than step-issuer | 2.012 | < 4.012 (step-issuer's) | met |",
        "| issuance throughput / API ceiling | 0.676 | ≥ 0.85 | **missed** |",
        "| steady RSS / step-issuer's | 0.25 | ≤ 0.25 | met |",
        "| API writes per issuance, less the bench's own | 2.012 | 4.012 | step-issuer | 0.501 | – |",
        "| certificaterequests/status | the bench, in each issuer run | 0 | 0 | 1 | 0 | 0 | 0 | 0 |",
        "| certificaterequests/status | API ceiling run, no issuer | 0 | 0.2 | 2 | 0 | 0 | 0 | 0 |",
        "| other resources | step-issuer run | 0 | 0 | 0 | 0 | 0.003 | 0 | 0 |",
    ] {
        assert!(md.contains(row), "no row {row:?} in\n{md}");
    }

    let mut r = head();
    r.finish();
    assert_eq!(r.goals.api_writes_below_step_issuer.met, None);
    assert!(
        markdown(&r).contains("| issuance throughput / API ceiling | – | ≥ 0.85 | not measured |")
    );
}

#[test]
fn ratios_need_two_finite_numbers_and_a_positive_divisor() {
    assert_eq!(ratio(Some(1.0), Some(3.0)), Some(0.333));
    assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    assert_eq!(ratio(None, Some(1.0)), None);
    assert_eq!(ratio(Some(1.0), Some(f64::INFINITY)), None);
    assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
}
