//! Prometheus metrics, prefix `step_operator_`. Labels carry stable reason strings and kinds,
//! never object names, so cardinality stays bounded.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub result: String,
    /// `StepIssuer` or `StepClusterIssuer`.
    pub issuer_kind: String,
}

/// One CA certificate of one issuer. The only series labelled with object names: issuers are
/// few and made by administrators, and a date of expiry is useless without knowing whose.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaCertificateLabels {
    pub issuer_kind: String,
    /// `<namespace>/<name>` of a StepIssuer, `<name>` of a StepClusterIssuer.
    pub issuer: String,
    /// `root` or `intermediate`.
    pub certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaRequestLabels {
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    pub outcome: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    /// Creation of a CertificateRequest to its certificate being written.
    pub issuance_duration: Histogram,
    /// Outcomes of CertificateRequest reconciles that changed something, by reason and issuer
    /// kind.
    pub requests: Family<RequestLabels, Counter>,
    /// When each issuer's root and issuing intermediate expire (Unix seconds).
    pub ca_certificate_expiry: Family<CaCertificateLabels, Gauge>,
    /// Issuers whose Ready condition is True, by kind.
    pub issuers_ready: Family<KindLabels, Gauge>,
    /// Latency of calls to step-ca by operation (`sign`, `connect`, `health`) and outcome.
    pub ca_request_duration: Family<CaRequestLabels, Histogram>,
    /// Admission reviews answered by the webhook.
    pub admission_duration: Histogram,
    /// `/bootstrap` answers by result reason.
    pub bootstrap_results: Family<ResultLabels, Counter>,
    /// CertificateRequests put back in the queue because their issuer was at its limit of
    /// signs in flight (not a failure: nothing is written to them).
    pub requests_deferred: Counter,
    /// Every reconcile a controller ran or failed to run, by controller (the kind) and outcome
    /// (`ok`, `error`, `object_gone`, `queue_error`, `runner_error`).
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// PodCertificateRequest outcomes by result (`Issued`, or the reason of a refusal or retry).
    pub pod_certificates: Family<ResultLabels, Counter>,
    /// Creation of a PodCertificateRequest (by the kubelet, as the pod starts or refreshes) to its
    /// certificate being written: the part of a pod's start that waits on us and step-ca. From
    /// `creationTimestamp`, which has whole seconds: a value reads up to 1 s high.
    pub pod_certificate_duration: Histogram,
}

/// Registers `metric` under `name` and returns it: the returned handle shares its state.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Records in `histogram` the seconds since `created` (an object's `creationTimestamp`, which has
/// whole seconds: the value reads up to 1 s high). Nothing without a creation time.
pub fn observe_since(histogram: &Histogram, created: Option<k8s_openapi::jiff::Timestamp>) {
    if let Some(created) = created {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(created);
        histogram.observe(age.as_secs_f64().max(0.0));
    }
}

/// Latency buckets from `start` seconds, doubling 16 times.
fn latency(start: f64) -> Histogram {
    Histogram::new(exponential_buckets(start, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("step_operator");
        Metrics {
            issuance_duration: registered(
                &mut r,
                "issuance_duration_seconds",
                "Seconds from a CertificateRequest's creation to its certificate being written",
                latency(0.01),
            ),
            requests: registered(
                &mut r,
                "certificate_requests",
                "CertificateRequest outcomes by result reason and issuer kind",
                Family::default(),
            ),
            ca_certificate_expiry: registered(
                &mut r,
                "ca_certificate_expiry_timestamp_seconds",
                "When each issuer's step-ca root and issuing intermediate certificates expire",
                Family::default(),
            ),
            issuers_ready: registered(
                &mut r,
                "issuers_ready",
                "Issuers whose Ready condition is True",
                Family::default(),
            ),
            ca_request_duration: registered(
                &mut r,
                "ca_request_duration_seconds",
                "Latency of step-ca calls by operation and outcome",
                Family::new_with_constructor(|| latency(0.001)),
            ),
            admission_duration: registered(
                &mut r,
                "admission_duration_seconds",
                "Time to answer an AdmissionReview",
                latency(0.0001),
            ),
            bootstrap_results: registered(
                &mut r,
                "bootstrap_results",
                "Pod bootstrap answers by result reason",
                Family::default(),
            ),
            requests_deferred: registered(
                &mut r,
                "certificate_requests_deferred",
                "CertificateRequests put back in the queue because their issuer had --max-signs-per-issuer signs in flight",
                Counter::default(),
            ),
            reconciles: registered(
                &mut r,
                "reconciles",
                "Reconciles by controller and outcome",
                Family::default(),
            ),
            pod_certificates: registered(
                &mut r,
                "pod_certificate_requests",
                "PodCertificateRequest outcomes by result reason",
                Family::default(),
            ),
            pod_certificate_duration: registered(
                &mut r,
                "pod_certificate_issuance_duration_seconds",
                "Seconds from a PodCertificateRequest's creation to its certificate being written",
                latency(0.01),
            ),
            // Last: the fields above register into it.
            registry: Mutex::new(r),
        }
    }
}

impl Metrics {
    pub fn count_reconcile(&self, controller: &str, outcome: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        encode(&mut out, &registry)?;
        Ok(out)
    }

    pub fn count_request(&self, result: &str, issuer_kind: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                result: result.to_string(),
                issuer_kind: issuer_kind.to_string(),
            })
            .inc();
    }

    /// Records when an issuer's CA certificates expire; `None` removes a series no longer known.
    pub fn set_ca_expiry(
        &self,
        issuer_kind: &str,
        issuer: &str,
        root: Option<i64>,
        intermediate: Option<i64>,
    ) {
        for (certificate, at) in [("root", root), ("intermediate", intermediate)] {
            let labels = CaCertificateLabels {
                issuer_kind: issuer_kind.to_string(),
                issuer: issuer.to_string(),
                certificate: certificate.to_string(),
            };
            match at {
                Some(t) => {
                    self.ca_certificate_expiry.get_or_create(&labels).set(t);
                }
                None => {
                    self.ca_certificate_expiry.remove(&labels);
                }
            }
        }
    }

    pub fn count_pod_certificate(&self, result: &str) {
        self.pod_certificates
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn count_bootstrap(&self, result: &str) {
        self.bootstrap_results
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn observe_ca(&self, operation: &str, ok: bool, seconds: f64) {
        self.ca_request_duration
            .get_or_create(&CaRequestLabels {
                operation: operation.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_outcomes_are_exported_by_controller_and_outcome() {
        let m = Metrics::default();
        m.count_reconcile("CertificateRequest", "ok");
        m.count_reconcile("CertificateRequest", "ok");
        m.count_reconcile("StepIssuer", "error");
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                r#"step_operator_reconciles_total{controller="CertificateRequest",outcome="ok"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"step_operator_reconciles_total{controller="StepIssuer",outcome="error"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn every_metric_the_readme_lists_is_exported_and_every_exported_one_is_listed() {
        let readme = include_str!("../README.md");
        let listed: std::collections::BTreeSet<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `step_operator_"))
            .filter_map(|l| l.split('`').next())
            // Counters are exported as `<name>_total`, their family as `<name>`.
            .map(|name| name.strip_suffix("_total").unwrap_or(name))
            .collect();
        // A family is exported once it has a series: give each one.
        let m = Metrics::default();
        m.count_request("Issued", "StepIssuer");
        m.set_ca_expiry("StepClusterIssuer", "ca", Some(1), Some(1));
        m.issuers_ready
            .get_or_create(&KindLabels {
                kind: "StepIssuer".into(),
            })
            .set(1);
        m.ca_request_duration
            .get_or_create(&CaRequestLabels {
                operation: "sign".into(),
                outcome: "ok".into(),
            })
            .observe(0.1);
        m.bootstrap_results
            .get_or_create(&ResultLabels {
                result: "Issued".into(),
            })
            .inc();
        m.count_reconcile("StepIssuer", "ok");
        m.count_pod_certificate("Issued");
        let text = m.encode().unwrap();
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE step_operator_"))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(!listed.is_empty(), "the README has a metrics table");
        assert_eq!(
            listed, exported,
            "README metrics table vs /metrics:\n{text}"
        );
    }
}
