//! CertificateRequests as the bench writes them, its approver, and the watch that times them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use step_operator::cert_manager::{
    CONDITION_APPROVED, CONDITION_READY, CertificateRequest, CertificateRequestSpec,
    CertificateRequestStatus, IssuerRef, RequestCondition, reason,
};
use step_operator::crd::{GROUP, StepClusterIssuer};

use crate::ctx::Ctx;
use crate::procs::Proc;

/// The usages cert-manager's Certificate controller writes for a TLS server certificate.
/// step-operator's type leaves the field out because it never reads it; the bench sends it so
/// that its requests look like the ones cert-manager creates.
const USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

#[derive(Serialize)]
struct SpecWithUsages<'a> {
    #[serde(flatten)]
    spec: &'a CertificateRequestSpec,
    usages: [&'static str; 3],
}

/// A CertificateRequest named `name` for the PEM `csr`, ready to create.
pub fn request(name: &str, csr: &str, issuer_ref: IssuerRef) -> Result<DynamicObject> {
    let spec = CertificateRequestSpec {
        request: ByteString(csr.as_bytes().to_vec()),
        issuer_ref,
        ..Default::default()
    };
    let mut obj = DynamicObject::new(name, &ApiResource::erase::<CertificateRequest>(&()));
    let spec = serde_json::to_value(SpecWithUsages {
        spec: &spec,
        usages: USAGES,
    })?;
    obj.data = json!({ "spec": spec });
    Ok(obj)
}

/// `issuerRef` of a StepClusterIssuer.
pub fn step_ref(issuer: &str) -> IssuerRef {
    issuer_ref(GROUP, &StepClusterIssuer::kind(&()), issuer)
}

pub fn issuer_ref(group: &str, kind: &str, name: &str) -> IssuerRef {
    IssuerRef {
        name: name.into(),
        kind: Some(kind.into()),
        group: Some(group.into()),
    }
}

/// A `True` condition, as of now.
pub fn true_condition(type_: &str, reason: &str, message: &str) -> RequestCondition {
    RequestCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(Timestamp::now())),
    }
}

/// Writes `status` by server-side apply on the status subresource, as `manager`. Only the
/// fields in `status` are claimed; `conditions` is a map list keyed by `type`, so conditions of
/// other types stay as they are, whoever wrote them.
pub async fn apply_status(
    api: &Api<DynamicObject>,
    name: &str,
    manager: &str,
    status: &CertificateRequestStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": CertificateRequest::api_version(&()),
        "kind": CertificateRequest::kind(&()),
        "status": serde_json::to_value(status)?,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Approves a CertificateRequest the way an approver does: only the `Approved` condition.
pub async fn approve(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    let status = CertificateRequestStatus {
        conditions: vec![true_condition(
            CONDITION_APPROVED,
            "bench",
            "approved by the step-operator benchmark",
        )],
        ..Default::default()
    };
    apply_status(api, name, "bench", &status)
        .await
        .with_context(|| format!("approving {name}"))
}

fn is_approved(cr: &CertificateRequest) -> bool {
    cr.status
        .as_ref()
        .is_some_and(|s| s.has_true(CONDITION_APPROVED))
}

/// How many of `requests` are approved.
pub fn approved_count(requests: &[CertificateRequest]) -> usize {
    requests.iter().filter(|cr| is_approved(cr)).count()
}

/// First time each CertificateRequest of a namespace was seen Ready=True (or Failed), from a
/// watch that is running before anything is created.
#[derive(Clone, Default)]
pub struct Seen {
    pub approved: Arc<Mutex<HashMap<String, Instant>>>,
    pub ready: Arc<Mutex<HashMap<String, Instant>>>,
    pub failed: Arc<Mutex<HashMap<String, String>>>,
}

pub async fn watch_ready(ctx: &Ctx, ns: &str) -> Result<(Seen, tokio::task::JoinHandle<()>)> {
    let api = Api::<CertificateRequest>::namespaced(ctx.client.clone(), ns);
    let seen = Seen::default();
    let (init_tx, init_rx) = tokio::sync::oneshot::channel();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        let mut init_tx = Some(init_tx);
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let obj = match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => o,
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = init_tx.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            let now = Instant::now();
            if is_approved(&obj) {
                s.approved
                    .lock()
                    .unwrap()
                    .entry(obj.name_any())
                    .or_insert(now);
            }
            let ready = obj
                .status
                .as_ref()
                .and_then(|s| s.condition(CONDITION_READY));
            if let Some(c) = ready {
                let name = obj.name_any();
                if c.status == "True" {
                    s.ready.lock().unwrap().entry(name).or_insert(now);
                } else if matches!(c.reason.as_deref(), Some(reason::FAILED | reason::DENIED)) {
                    s.failed
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(|| c.message.clone().unwrap_or_default());
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), init_rx)
        .await
        .context("the CertificateRequest watch did not finish its initial list in 60 s")??;
    Ok((seen, task))
}

/// Waits until `name` in `ns` is approved (by the bench or by cm-lite).
pub async fn wait_approved(client: &Client, ns: &str, name: &str) -> Result<()> {
    let api = Api::<CertificateRequest>::namespaced(client.clone(), ns);
    e2e::wait_for(
        &format!("cm-lite to approve CertificateRequest {name}"),
        Duration::from_secs(60),
        async || Ok(api.get_opt(name).await?.filter(is_approved).map(|_| ())),
        async || e2e::dump(&api.get_opt(name).await.ok().flatten()),
    )
    .await
}

/// Polls until `name` was seen Ready (returning when), failing fast if the process died. Looks
/// every 20 ms: when it returns bounds the measured time.
pub async fn wait_seen_ready(
    seen: &Seen,
    name: &str,
    p: &mut Proc,
    timeout: Duration,
) -> Result<Instant> {
    let p = std::cell::RefCell::new(p);
    e2e::wait_for_every(
        &format!("{name} to be Ready"),
        timeout,
        Duration::from_millis(20),
        async || {
            if let Some(t) = seen.ready.lock().unwrap().get(name) {
                return Ok(Some(*t));
            }
            let p = &mut *p.borrow_mut();
            if let Some(m) = seen.failed.lock().unwrap().get(name) {
                bail!(
                    "{name} failed: {m}\n{} log tail:\n{}",
                    p.name,
                    p.log_tail(30)
                );
            }
            if !p.is_running() {
                bail!("{} exited; log tail:\n{}", p.name, p.log_tail(40));
            }
            Ok(None)
        },
        async || {
            let p = p.borrow();
            format!("{} log tail:\n{}", p.name, p.log_tail(40))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objects the bench writes are the ones it wrote as hand-built JSON.
    #[test]
    fn requests_and_approvals_have_the_shape_the_bench_always_sent() {
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
        let obj = request("r00001", csr, step_ref("bench-so-abcdef")).unwrap();
        assert_eq!(
            serde_json::to_value(&obj).unwrap(),
            json!({
                "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                "metadata": {"name": "r00001"},
                "spec": {
                    "request": e2e::fixtures::base64(csr.as_bytes()),
                    "issuerRef": {"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": "bench-so-abcdef"},
                    "usages": ["digital signature", "key encipherment", "server auth"],
                }
            })
        );

        let c = serde_json::to_value(true_condition(CONDITION_APPROVED, "bench", "ok")).unwrap();
        let time = c["lastTransitionTime"].as_str().unwrap().to_string();
        assert_eq!(
            c,
            json!({"type": "Approved", "status": "True", "reason": "bench", "message": "ok", "lastTransitionTime": time})
        );
        // RFC 3339 in UTC to the second, as the hand-written formatter wrote it.
        assert_eq!(time.len(), "2026-11-22T20:01:46Z".len(), "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    }
}
