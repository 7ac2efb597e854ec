//! Prometheus metrics, prefix `step_operator_`. Labels carry stable reason strings and kinds,
//! never object names, so cardinality stays bounded.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("step_operator");
        let issuance_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "issuance_duration_seconds",
            "Seconds from a CertificateRequest's creation to its certificate being written",
            issuance_duration.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "certificate_requests",
            "CertificateRequest outcomes by result reason and issuer kind",
            requests.clone(),
        );
        let ca_certificate_expiry = Family::<CaCertificateLabels, Gauge>::default();
        registry.register(
            "ca_certificate_expiry_timestamp_seconds",
            "When each issuer's step-ca root and issuing intermediate certificates expire",
            ca_certificate_expiry.clone(),
        );
        let issuers_ready = Family::<KindLabels, Gauge>::default();
        registry.register(
            "issuers_ready",
            "Issuers whose Ready condition is True",
            issuers_ready.clone(),
        );
        let ca_request_duration =
            Family::<CaRequestLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            });
        registry.register(
            "ca_request_duration_seconds",
            "Latency of step-ca calls by operation and outcome",
            ca_request_duration.clone(),
        );
        let admission_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview",
            admission_duration.clone(),
        );
        let bootstrap_results = Family::<ResultLabels, Counter>::default();
        registry.register(
            "bootstrap_results",
            "Pod bootstrap answers by result reason",
            bootstrap_results.clone(),
        );
        let requests_deferred = Counter::default();
        registry.register(
            "certificate_requests_deferred",
            "CertificateRequests put back in the queue because their issuer had --max-signs-per-issuer signs in flight",
            requests_deferred.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and outcome",
            reconciles.clone(),
        );
        let pod_certificates = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pod_certificate_requests",
            "PodCertificateRequest outcomes by result reason",
            pod_certificates.clone(),
        );
        let pod_certificate_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "pod_certificate_issuance_duration_seconds",
            "Seconds from a PodCertificateRequest's creation to its certificate being written",
            pod_certificate_duration.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            pod_certificate_duration,
            reconciles,
            pod_certificates,
            requests_deferred,
            bootstrap_results,
            issuance_duration,
            requests,
            ca_certificate_expiry,
            issuers_ready,
            ca_request_duration,
            admission_duration,
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
}
