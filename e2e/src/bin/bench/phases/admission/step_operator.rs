//! step-operator's webhook, run as in `tests/pod_tls.rs`: URL mode, `failurePolicy: Fail`. Its
//! own handling time comes from its admission-duration histogram.

use anyhow::{Context as _, Result, bail};
use e2e::operator::{free_port, http_get};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{WEBHOOK_LABEL, create_pods, labelled_ns, record_pods, warm_up};
use crate::ctx::Ctx;
use crate::procs::Proc;
use crate::report::{AdmissionRun, HistogramTiming, OwnTiming, Report};
use crate::systems::Installed;
use crate::util::round;

/// The webhook's histogram of its own handling time, in seconds.
const METRIC: &str = "step_operator_admission_duration_seconds";

pub fn mwc_name(ctx: &Ctx) -> String {
    format!("bench-step-operator-{}", ctx.suffix)
}

/// `--pods` creates through step-operator's webhook, which signs with the step-operator
/// system's StepClusterIssuer.
pub async fn measure(ctx: &Ctx, so: &Installed, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    let port = free_port()?;
    register(ctx, port).await?;
    let admin_port = free_port()?;
    let mut p = spawn(ctx, so, port, admin_port)?;
    let ns = labelled_ns(
        ctx,
        "bench-adm-so",
        Some(&format!("step-operator-{}", ctx.suffix)),
    )
    .await?;
    warm_up(ctx, &ns, "step-operator's webhook", &mut p).await?;
    let before = Histogram::scrape(admin_port, METRIC).await?;
    let run = create_pods(ctx, &ns, "p", n).await?;
    let after = Histogram::scrape(admin_port, METRIC).await?;
    record_pods(report, AdmissionRun::StepOperator, run, n);
    report
        .webhook_own_timing
        .insert(AdmissionRun::StepOperator, own_timing(&before, &after));
    let mem = p.memory()?;
    let stats = report
        .admission
        .entry(AdmissionRun::StepOperator)
        .or_default();
    stats.rss_mib = Some(round(mem.rss_mib, 1));
    stats.peak_rss_mib = Some(round(mem.hwm_mib, 1));
    p.stop();
    Ok(())
}

/// The webhook configuration, for the namespaces labelled for this run only.
async fn register(ctx: &Ctx, port: u16) -> Result<()> {
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mwc_name(ctx)},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {WEBHOOK_LABEL: format!("step-operator-{}", ctx.suffix)}},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10, "reinvocationPolicy": "IfNeeded",
        }]
    }))?;
    Api::<MutatingWebhookConfiguration>::all(ctx.client.clone())
        .create(&PostParams::default(), &mwc)
        .await?;
    Ok(())
}

/// `step-operator webhook` on `port`, with its metrics on `admin_port`.
fn spawn(ctx: &Ctx, so: &Installed, port: u16, admin_port: u16) -> Result<Proc> {
    let (listen, admin, bootstrap) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{admin_port}"),
        format!("https://127.0.0.1:{port}"),
    );
    let kubeconfig = ctx.env.kubeconfig.to_str().context("utf-8")?;
    let mwc_name = mwc_name(ctx);
    Proc::spawn(
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
    )
}

/// A Prometheus histogram as `/metrics` shows it: cumulative buckets `(le, count)`, sum, count.
#[derive(Debug, Default, PartialEq)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    async fn scrape(port: u16, name: &str) -> Result<Histogram> {
        let (status, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Histogram::parse(&body, name)
    }

    fn parse(body: &str, name: &str) -> Result<Histogram> {
        let mut h = Histogram::default();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
                if let Some((le, v)) = rest.split_once("\"} ") {
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse()?
                    };
                    h.buckets.push((le, v.trim().parse()?));
                }
            } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
                h.sum = v.trim().parse()?;
            } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
                h.count = v.trim().parse()?;
            }
        }
        Ok(h)
    }
}

/// The reviews between `before` and `after`: their count, mean, and the upper bounds of the
/// buckets holding the median and the 99th percentile (not interpolated).
fn own_timing(before: &Histogram, after: &Histogram) -> OwnTiming {
    let count = after.count - before.count;
    let mean_ms = if count > 0.0 {
        (after.sum - before.sum) / count * 1000.0
    } else {
        f64::NAN
    };
    let quantile = |q: f64| -> Option<f64> {
        let target = q * count;
        after
            .buckets
            .iter()
            .zip(before.buckets.iter())
            .find(|((_, a), (_, b))| a - b >= target)
            .map(|((le, _), _)| le * 1000.0)
    };
    OwnTiming {
        source: format!("{METRIC} (Prometheus histogram; quantiles are bucket upper bounds)"),
        histogram: Some(HistogramTiming {
            reviews: count,
            mean_ms: mean_ms.is_finite().then(|| round(mean_ms, 2)),
            p50_le_ms: quantile(0.5),
            p99_le_ms: quantile(0.99),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(buckets: [u32; 4], sum: f64) -> String {
        let count = buckets[3];
        format!(
            "# HELP {METRIC} Time to answer an AdmissionReview.\n\
             # TYPE {METRIC} histogram\n\
             {METRIC}_sum {sum}\n\
             {METRIC}_count {count}\n\
             {METRIC}_bucket{{le=\"0.0005\"}} {}\n\
             {METRIC}_bucket{{le=\"0.001\"}} {}\n\
             {METRIC}_bucket{{le=\"0.005\"}} {}\n\
             {METRIC}_bucket{{le=\"+Inf\"}} {}\n\
             other_metric_count 7\n",
            buckets[0], buckets[1], buckets[2], buckets[3]
        )
    }

    #[test]
    fn own_timing_is_the_difference_across_the_run() {
        // 2 warm-up reviews before; 100 more during the run: 60 under 0.5 ms, 39 more under 1 ms,
        // 1 under 5 ms.
        let before = Histogram::parse(&scrape([1, 2, 2, 2], 0.0015), METRIC).unwrap();
        let after = Histogram::parse(&scrape([61, 101, 102, 102], 0.0515), METRIC).unwrap();
        assert_eq!(before.buckets.len(), 4);
        assert_eq!(after.buckets[3], (f64::INFINITY, 102.0));
        let t = own_timing(&before, &after);
        let h = t.histogram.unwrap();
        assert_eq!(h.reviews, 100.0);
        assert_eq!(h.mean_ms, Some(0.5));
        assert_eq!(h.p50_le_ms, Some(0.5));
        assert_eq!(h.p99_le_ms, Some(1.0));
        assert!(t.source.starts_with(METRIC));
    }

    #[test]
    fn no_reviews_means_no_mean() {
        let h = Histogram::parse(&scrape([1, 2, 2, 2], 0.0015), METRIC).unwrap();
        let t = own_timing(&h, &h).histogram.unwrap();
        assert_eq!((t.reviews, t.mean_ms), (0.0, None));
    }
}
