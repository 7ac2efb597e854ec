//! Everything the run found, written as JSON and Markdown at the end.

use serde_json::{Value, json};

use crate::util::{log, round};

pub const SO: &str = "step_operator";
pub const SI: &str = "step_issuer";
pub const AC: &str = "autocert";

/// Everything the run found, written as JSON at the end.
#[derive(Default)]
pub struct Report {
    pub values: serde_json::Map<String, Value>,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn set(&mut self, path: &[&str], v: Value) {
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
    pub fn get(&self, path: &[&str]) -> Option<f64> {
        let mut cur = self.values.get(path[0])?;
        for key in &path[1..] {
            cur = cur.get(key)?;
        }
        cur.as_f64()
    }
    pub fn error(&mut self, phase: &str, e: anyhow::Error) {
        let msg = format!("{phase}: {e:#}");
        log(format!("ERROR {msg}"));
        self.errors.push(msg);
    }
}

pub fn ratios(report: &mut Report) {
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

pub fn markdown(doc: &Value) -> String {
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
