//! `--max-retry-duration` end to end: a request whose CA keeps failing is Pending, retried with
//! backoff, and Failed once the budget (counted from its creation) is spent, with a message that
//! names the flag and the last error.

use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process};
use e2e::tcp_proxy::{Mode, TcpProxy};
use e2e::{Env, TestNamespace, dump, wait_for};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;

const BUDGET_SECS: u64 = 20;

#[tokio::test]
async fn request_fails_once_the_retry_budget_is_spent() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let controller = Process::start(
        &env,
        "controller-retry-budget",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            CLUSTER_RESOURCE_NAMESPACE,
            "--max-retry-duration",
            &format!("{BUDGET_SECS}s"),
            "--ca-timeout",
            "2s",
        ],
        &[],
    )?;
    let log = controller.log.display().to_string();

    let (proxy, through) = TcpProxy::for_url(&env.step_ca_url).await?;
    let issuer = verified_cluster_issuer_with(&env, &client, "budget", &log, |spec| {
        spec["url"] = json!(through);
    })
    .await?
    .name_any();
    let issuers = cluster(&client, &step_cluster_issuers());
    // Ready may have been written by the previous test binary's controller, finishing its last
    // reconciles while it shuts down. This controller must hold the issuer's signer itself before
    // the CA goes away; otherwise its first connect meets the outage and the issuer turns Not
    // Ready, which parks the request (waiting for an issuer costs no retry budget).
    let via_proxy = format!("url=\"{}\"", through.trim_end_matches('/'));
    wait_for(
        "this controller to load the issuer's provisioner key through the proxy",
        Duration::from_secs(30),
        async || {
            let text = std::fs::read_to_string(&log)?;
            Ok(text
                .lines()
                .any(|l| l.contains("Loaded step-ca provisioner key") && l.contains(&via_proxy))
                .then_some(()))
        },
        async || controller.log_tail(),
    )
    .await?;

    // The issuer stays Ready (its next periodic check is minutes away) while every sign fails.
    proxy.set(Mode::Refuse);
    let ns = TestNamespace::create(&client, "budget").await?;
    let api = namespaced(&client, &ns.name, &certificate_requests());
    let cr = certificate_request(
        "spent",
        &csr(&format!("spent.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&issuer),
    )?;
    api.create(&PostParams::default(), &cr).await?;
    let pending = wait_ready_condition(
        &api,
        "spent",
        "False",
        Some("Pending"),
        Duration::from_secs(30),
        &log,
    )
    .await?;
    let message = condition(&pending, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("will retry") && message.contains("cannot reach step-ca"),
        "Pending names the retry and the cause: {}",
        dump(&pending)
    );

    let failed = wait_ready_condition(
        &api,
        "spent",
        "False",
        Some("Failed"),
        Duration::from_secs(BUDGET_SECS + 40),
        &log,
    )
    .await?;
    let ready = condition(&failed, "Ready").context("no Ready condition")?;
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("--max-retry-duration ({BUDGET_SECS}s)"))
            && message.contains("cannot reach step-ca"),
        "the message names the budget and the last error: {}",
        dump(&failed)
    );
    // Not before the budget was spent.
    let created: Timestamp = failed
        .metadata
        .creation_timestamp
        .as_ref()
        .context("no creationTimestamp")?
        .0;
    let failure_time: Timestamp = failed.data["status"]["failureTime"]
        .as_str()
        .context("no failureTime")?
        .parse()?;
    let waited = failure_time.duration_since(created).as_secs_f64();
    assert!(
        waited >= BUDGET_SECS as f64 - 1.0,
        "failed after {waited}s, before the {BUDGET_SECS}s budget: {}",
        dump(&failed)
    );
    assert!(
        failed.data["status"]["certificate"].is_null(),
        "{}",
        dump(&failed)
    );
    // A retry budget is a property of the request: the issuer is still Ready.
    let issuer_obj = issuers.get(&issuer).await?;
    assert_eq!(
        condition(&issuer_obj, "Ready").map(|c| c["status"].clone()),
        Some(json!("True")),
        "{}",
        dump(&issuer_obj)
    );
    ns.delete().await
}
