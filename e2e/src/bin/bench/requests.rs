//! CertificateRequests as the bench writes them, its approver, and the watch that times them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::fixtures::*;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::procs::Proc;

pub fn certificate_request(name: &str, csr: &str, issuer_ref: Value) -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64(csr.as_bytes()),
            "issuerRef": issuer_ref,
            "usages": ["digital signature", "key encipherment", "server auth"],
        }
    })
}

pub fn step_ref(issuer: &str) -> Value {
    json!({"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": issuer})
}

/// RFC 3339 UTC timestamp of now (seconds precision), for condition times.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Approves a CertificateRequest the way an approver does, by server-side apply of only the
/// `Approved` condition on the status subresource (`conditions` is a map list keyed by `type`, so
/// no other condition is touched, whoever wrote it).
pub async fn approve(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    let patch = json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "bench",
            "message": "approved by the step-operator benchmark", "lastTransitionTime": now_rfc3339(),
        }]}
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply("bench").force(),
        &kube::api::Patch::Apply(&patch),
    )
    .await
    .with_context(|| format!("approving {name}"))?;
    Ok(())
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
    let api = namespaced(&ctx.client, ns, &certificate_requests());
    let seen = Seen::default();
    let (init_tx, init_rx) = tokio::sync::oneshot::channel();
    let s = seen.clone();
    let task =
        tokio::spawn(async move {
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
                if is_true(&obj, "Approved") {
                    s.approved
                        .lock()
                        .unwrap()
                        .entry(obj.name_any())
                        .or_insert(now);
                }
                if let Some(c) = condition(&obj, "Ready") {
                    let name = obj.name_any();
                    if c["status"] == "True" {
                        s.ready.lock().unwrap().entry(name).or_insert(now);
                    } else if c["reason"] == "Failed" || c["reason"] == "Denied" {
                        s.failed.lock().unwrap().entry(name).or_insert_with(|| {
                            c["message"].as_str().unwrap_or_default().to_string()
                        });
                    }
                }
            }
        });
    tokio::time::timeout(Duration::from_secs(60), init_rx)
        .await
        .context("the CertificateRequest watch did not finish its initial list in 60 s")??;
    Ok((seen, task))
}

pub async fn wait_approved(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    e2e::wait_for(
        &format!("cm-lite to approve CertificateRequest {name}"),
        Duration::from_secs(60),
        async || {
            Ok(api
                .get_opt(name)
                .await?
                .filter(|o| is_true(o, "Approved"))
                .map(|_| ()))
        },
        async || e2e::dump(&api.get_opt(name).await.ok().flatten()),
    )
    .await
}

/// Polls until `name` was seen Ready (returning when), failing fast if the process died.
pub async fn wait_seen_ready(
    seen: &Seen,
    name: &str,
    p: &mut Proc,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = seen.ready.lock().unwrap().get(name) {
            return Ok(*t);
        }
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
        if Instant::now() > deadline {
            bail!(
                "{name} not Ready after {timeout:?}; {} log tail:\n{}",
                p.name,
                p.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
