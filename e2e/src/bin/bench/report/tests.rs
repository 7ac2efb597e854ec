//! The typed report against reports the string-path report wrote (`testdata/`, made from the
//! same numbers before the report was typed): same JSON, same Markdown.
//!
//! One intended difference, edited into `full.json`: `admission.autocert.v1beta1_config_accepted`
//! (documented in BENCHMARKS.md) is kept when autocert's pods were measured too. The string-path
//! report lost it there, because recording the pod run replaced the whole `admission.autocert`
//! object.

use serde_json::Value;

use super::*;
use crate::systems::System::{StepIssuer as SI, StepOperator as SO};

fn golden(name: &str) -> (Value, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/bench/testdata");
    let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
    let md = std::fs::read_to_string(dir.join(format!("{name}.md"))).unwrap();
    (serde_json::from_str(&json).unwrap(), md)
}

fn check(name: &str, mut report: Report) {
    report.finish();
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
            log: format!("/s/logs/{}.log", system.key()),
        },
    );
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
    });
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
            ..Default::default()
        },
    );
    r.admission.insert(
        StepOperator,
        AdmissionStats {
            pods: pods(1000, 1000, 0, None),
            rss_mib: Some(14.2),
            peak_rss_mib: Some(16.0),
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
    assert_eq!(md.matches("\n| ").count(), 13, "header and 12 rows:\n{md}");
}

#[test]
fn ratios_need_two_finite_numbers_and_a_positive_divisor() {
    assert_eq!(ratio(Some(1.0), Some(3.0)), Some(0.333));
    assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    assert_eq!(ratio(None, Some(1.0)), None);
    assert_eq!(ratio(Some(1.0), Some(f64::INFINITY)), None);
    assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
}
