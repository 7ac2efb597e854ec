//! Helpers for the fault-injection tests: bursts of CertificateRequests, stopping and starting
//! cluster components, and the evidence (step-ca's log, a watch of every certificate written).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::fixtures::*;
use crate::{Env, dump, retry, wait_for};

fn cluster_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster.sh")
}

/// `e2e/cluster.sh stop|start <component>`.
pub async fn component(action: &str, name: &str) -> Result<()> {
    let out = tokio::process::Command::new(cluster_sh())
        .args([action, name])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "cluster.sh {action} {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Creates `n` CertificateRequests named `<prefix>-<i>` with subject `<prefix>-<i>.<ns>.example`.
pub async fn burst(client: &Client, ns: &str, issuer: &str, prefix: &str, n: usize) -> Result<()> {
    let api = namespaced(client, ns, &certificate_requests());
    let mut creates = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let cn = format!("{name}.{ns}.example");
        let obj = certificate_request(&name, &csr(&cn)?, step_cluster_issuer_ref(issuer))?;
        let api = api.clone();
        creates.push(async move { api.create(&PostParams::default(), &obj).await });
    }
    // Created 20 at a time: a burst, without overrunning the client.
    let results: Vec<_> = futures::stream::iter(creates)
        .buffer_unordered(20)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

fn ready_reason(obj: &DynamicObject) -> Option<String> {
    condition(obj, "Ready").and_then(|c| c["reason"].as_str().map(str::to_string))
}

/// Counts requests by their Ready reason.
pub async fn reasons(api: &Api<DynamicObject>) -> Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for r in api.list(&Default::default()).await?.items {
        *out.entry(ready_reason(&r).unwrap_or_else(|| "<none>".into()))
            .or_default() += 1;
    }
    Ok(out)
}

/// Fails as soon as any CertificateRequest of `api` turns Failed within `period`. It watches
/// rather than polls, so even a Failed status that is replaced at once is seen.
pub async fn assert_none_failed_for(api: &Api<DynamicObject>, period: Duration) -> Result<()> {
    let mut changes = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let deadline = tokio::time::Instant::now() + period;
    loop {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Err(_) => return Ok(()),
            Ok(None) => bail!("the CertificateRequest watch ended while watching for failures"),
            // The backoff retries the watch; an error here is only reported.
            Ok(Some(Err(e))) => eprintln!("watching for failed requests: {e}"),
            Ok(Some(Ok(r))) if ready_reason(&r).as_deref() == Some("Failed") => {
                bail!("a request failed: {}", dump(&r))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Waits until all `n` requests are Issued; fails at once if one turns Failed, or if listing the
/// requests fails.
pub async fn wait_all_issued(
    api: &Api<DynamicObject>,
    n: usize,
    timeout: Duration,
    log: &str,
) -> Result<()> {
    wait_issued(api, n, timeout, log, false).await
}

/// [`wait_all_issued`] for a wait that spans a kube-apiserver restart: a failed LIST is retried
/// (the test's own client loses its connections too), a Failed request still fails at once.
pub async fn wait_all_issued_across_apiserver_restart(
    api: &Api<DynamicObject>,
    n: usize,
    timeout: Duration,
    log: &str,
) -> Result<()> {
    wait_issued(api, n, timeout, log, true).await
}

async fn wait_issued(
    api: &Api<DynamicObject>,
    n: usize,
    timeout: Duration,
    log: &str,
    retry_list_errors: bool,
) -> Result<()> {
    wait_for(
        &format!("all {n} requests to be Issued"),
        timeout,
        async || {
            let items = match api.list(&Default::default()).await {
                Ok(list) => list.items,
                Err(e) if retry_list_errors => return Err(retry(e)),
                Err(e) => return Err(e.into()),
            };
            if let Some(failed) = items
                .iter()
                .find(|r| ready_reason(r).as_deref() == Some("Failed"))
            {
                bail!("a request failed: {}", dump(failed));
            }
            let issued = items
                .iter()
                .filter(|r| ready_reason(r).as_deref() == Some("Issued"))
                .count();
            Ok((issued == n).then_some(()))
        },
        async || {
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<_> = log_text.lines().rev().take(25).collect();
            format!(
                "reasons: {:?}\ncontroller log (newest first):\n{}",
                reasons(api).await.ok(),
                tail.join("\n")
            )
        },
    )
    .await
}

/// How many certificates step-ca signed for each subject starting with `prefix` (from its log).
pub fn signs_by_subject(env: &Env, prefix: &str) -> Result<HashMap<String, usize>> {
    let log =
        std::fs::read_to_string(env.state.join("step-ca.log")).context("reading step-ca.log")?;
    let mut out = HashMap::new();
    for line in log
        .lines()
        .filter(|l| l.contains("path=/1.0/sign") && l.contains("status=201"))
    {
        if let Some(subject) = line
            .split(" subject=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            && subject.starts_with(prefix)
        {
            *out.entry(subject.to_string()).or_default() += 1;
        }
    }
    Ok(out)
}

/// Asserts that step-ca signed at least one certificate for each of the `n` requests, and at most
/// `max_repeats` of them a second time (signs that were in flight when a process died: step-ca
/// has no idempotency key, so such a sign can only be repeated). Returns the number of repeats.
pub fn assert_signed_once_except_in_flight(
    env: &Env,
    ns: &str,
    prefix: &str,
    n: usize,
    max_repeats: usize,
) -> Result<usize> {
    let signs = signs_by_subject(env, prefix)?;
    let suffix = format!(".{ns}.example");
    let ours: Vec<_> = signs.iter().filter(|(s, _)| s.ends_with(&suffix)).collect();
    if ours.len() != n {
        bail!("step-ca signed for {} of {n} requests", ours.len());
    }
    if let Some((s, c)) = ours.iter().find(|(_, c)| **c > 2) {
        bail!("{s} was signed {c} times");
    }
    let repeats = ours.iter().filter(|(_, c)| **c == 2).count();
    if repeats > max_repeats {
        bail!("{repeats} requests signed twice, more than the {max_repeats} that can be in flight");
    }
    Ok(repeats)
}

/// Asserts that step-ca signed exactly one certificate for each of the `n` requests.
pub fn assert_signed_once(env: &Env, ns: &str, prefix: &str, n: usize) -> Result<()> {
    let signs = signs_by_subject(env, prefix)?;
    let twice: Vec<_> = signs.iter().filter(|(_, c)| **c > 1).collect();
    if !twice.is_empty() {
        bail!("signed more than once: {twice:?}");
    }
    let ours = signs
        .keys()
        .filter(|s| s.ends_with(&format!(".{ns}.example")))
        .count();
    if ours != n {
        bail!("step-ca signed {ours} certificates for {n} requests");
    }
    Ok(())
}

/// What the ledger's watch saw.
#[derive(Default)]
struct Ledger {
    /// Every distinct `status.certificate` per request, in the order seen.
    seen: HashMap<String, Vec<String>>,
    /// Watch errors. The backoff retries the watch; after an error that is not a 410 it resumes
    /// from the last resourceVersion, so no change is missed.
    errors: Vec<String>,
    /// Full re-lists after the first one (after a 410 Gone). Changes between the last event and
    /// the re-list are not seen, so a rewrite could hide in that gap.
    relists: usize,
    /// The watch stream ended: nothing after that was recorded.
    ended: bool,
}

/// Records every distinct `status.certificate` each request shows, to prove none is rewritten.
pub struct CertificateLedger {
    state: Arc<Mutex<Ledger>>,
    task: tokio::task::JoinHandle<()>,
}

impl CertificateLedger {
    pub fn start(client: &Client, ns: &str) -> CertificateLedger {
        let api = namespaced(client, ns, &certificate_requests());
        let state: Arc<Mutex<Ledger>> = Default::default();
        let sink = state.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut listed = false;
            while let Some(event) = events.next().await {
                let mut ledger = sink.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Ok(watcher::Event::Init) => {
                        if listed {
                            ledger.relists += 1;
                        }
                        listed = true;
                    }
                    Ok(watcher::Event::InitApply(obj) | watcher::Event::Apply(obj)) => {
                        if let Some(cert) = obj.data["status"]["certificate"].as_str() {
                            let list = ledger.seen.entry(obj.name_any()).or_default();
                            if !list.iter().any(|c| c == cert) {
                                list.push(cert.to_string());
                            }
                        }
                    }
                    Ok(watcher::Event::InitDone | watcher::Event::Delete(_)) => {}
                    Err(e) => ledger.errors.push(e.to_string()),
                }
            }
            sink.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
        });
        CertificateLedger { state, task }
    }

    /// Fails if any request showed more than one certificate over its life, or if the record
    /// has a gap (the watch ended, or re-listed after a 410). Returns how many requests showed
    /// a certificate. Watch errors that were resumed without a gap are reported on stderr.
    pub fn assert_written_once(&self) -> Result<usize> {
        let ledger = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let errors = || {
            format!(
                "{} watch errors: {:?}",
                ledger.errors.len(),
                ledger.errors.iter().take(5).collect::<Vec<_>>()
            )
        };
        if ledger.ended {
            bail!(
                "the certificate ledger's watch ended, later writes were not recorded; {}",
                errors()
            );
        }
        if ledger.relists > 0 {
            bail!(
                "the certificate ledger's watch re-listed {} times, so writes in between were not recorded; {}",
                ledger.relists,
                errors()
            );
        }
        let rewritten: Vec<_> = ledger
            .seen
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, _)| k.clone())
            .collect();
        if !rewritten.is_empty() {
            bail!("certificates rewritten for {rewritten:?}");
        }
        if !ledger.errors.is_empty() {
            eprintln!(
                "certificate ledger: the watch resumed after {} (no re-list, nothing missed)",
                errors()
            );
        }
        Ok(ledger.seen.len())
    }
}

impl Drop for CertificateLedger {
    fn drop(&mut self) {
        self.task.abort();
    }
}
