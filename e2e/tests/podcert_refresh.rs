//! The kubelet refreshes a pod certificate before it expires, on the e2e node.
//!
//! The API makes this slow to watch: a pod certificate lives at least an hour, `beginRefreshAt`
//! is at least ten minutes after `notBefore`, and the kubelet adds up to five minutes of jitter
//! and looks once a minute or two. So this test runs in two phases around the rest of the e2e
//! suite (`make e2e` runs them in that order), and the wait overlaps the other tests:
//!
//! 1. `podcert_kubelet_refresh_1_pod_due_for_refresh` starts a pod whose volume asks for one hour
//!    and `podcert.step.sm/renew-before: 50m`, checks the first request's refresh hint (ten
//!    minutes in), and leaves the pod running in a namespace labelled for phase 2.
//! 2. `podcert_kubelet_refresh_2_happens_before_expiry` waits for the kubelet's second request and
//!    for the pod to see a new certificate, then checks that it came after the hint and before
//!    the first certificate's end, in the same running container.
//!
//! Any of our controllers may sign the second request: every test binary's shared controller
//! serves all pod certificates, in turn, and some tests stop step-ca meanwhile. A request the
//! kubelet makes then stays Pending and is signed when step-ca is back (a Failed one would end
//! the refresh for good: the kubelet never asks again).
//!
//! The target is `test = false` (e2e/Cargo.toml), so that a plain `cargo test` does not wait a
//! quarter of an hour: `make e2e` runs the phases by name, `--test podcert_refresh -- --exact`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::fixtures::*;
use e2e::node::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, shared_controller_leading};
use e2e::{Env, TestNamespace, wait_for};
use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The namespace label that hands the pod from phase 1 to phase 2.
const PHASE_LABEL: &str = "e2e.step.sm/podcert-refresh";
const ISSUER_ANNOTATION: &str = "e2e.step.sm/issuer";
const POD: &str = "refresh";
/// The kubelet's jitter (up to 5 min) and its refresh pass (every 1-2 min), with room to sign.
const KUBELET_SLACK: SignedDuration = SignedDuration::from_mins(10);

/// The pod: a one-hour pod certificate refreshed 50 minutes before its end, and an app that
/// prints the serial of the chain it sees each time it changes.
fn refresh_pod(node: &Node, signer: &str) -> Result<Pod> {
    let script = format!(
        "last=; while true; do s=$(openssl x509 -noout -serial -in {PODCERT_CHAIN}); \
         if [ -n \"$s\" ] && [ \"$s\" != \"$last\" ]; then echo \"serial $s\"; last=$s; fi; sleep 5; done"
    );
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD},
        "spec": podcert_pod_spec(
            node,
            &script,
            json!([podcert_source(
                signer,
                json!({
                    "maxExpirationSeconds": 3600,
                    "userAnnotations": {"podcert.step.sm/renew-before": "50m"},
                }),
            )]),
        ),
    }))?)
}

/// The pod's requests, oldest first, with their validity.
async fn requests(client: &Client, ns: &str) -> Result<Vec<PodCertificateRequest>> {
    let mut list = Api::<PodCertificateRequest>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    list.retain(|r| r.spec.pod_name == POD);
    list.sort_by_key(|r| r.creation_timestamp().map(|t| t.0));
    Ok(list)
}

/// `(notBefore, beginRefreshAt, notAfter)` of an issued request.
fn validity(r: &PodCertificateRequest) -> Result<(Timestamp, Timestamp, Timestamp)> {
    let s = r.status.clone().unwrap_or_default();
    match (&s.not_before, &s.begin_refresh_at, &s.not_after) {
        (Some(nb), Some(refresh), Some(na)) => Ok((nb.0, refresh.0, na.0)),
        _ => anyhow::bail!("{} is not issued: {}", r.name_any(), e2e::dump(&s)),
    }
}

#[tokio::test]
async fn podcert_kubelet_refresh_1_pod_due_for_refresh() -> Result<()> {
    let env = Env::load()?;
    let node = env.node()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let log = shared_controller_leading(&env).await?;
    let issuer = ready_cluster_issuer(&env, &client, "podcert-refresh", &log).await?;
    let labels = BTreeMap::from([(PHASE_LABEL.to_owned(), "pending".to_owned())]);
    let ns = TestNamespace::create_labelled(&client, "podcert-refresh", labels).await?;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ISSUER_ANNOTATION: issuer}}})),
        )
        .await?;
    let signer = format!("stepclusterissuers.certmanager.step.sm/{issuer}");
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &refresh_pod(&node, &signer)?)
        .await
        .context("creating the pod")?;
    wait_pod_ready(&client, &ns.name, POD, Duration::from_secs(120)).await?;
    let first = requests(&client, &ns.name).await?;
    ensure!(
        first.len() == 1,
        "one request at start: {}",
        e2e::dump(&first)
    );
    let (nb, refresh, na) = validity(&first[0])?;
    ensure!(
        na.duration_since(nb) == SignedDuration::from_hours(1),
        "the volume asks for one hour: {nb} .. {na}"
    );
    ensure!(
        refresh.duration_since(nb) == SignedDuration::from_mins(10),
        "renew-before 50m of a one-hour certificate is a refresh 10 minutes in: {nb}, {refresh}"
    );
    eprintln!(
        "podcert refresh: {}/{POD} issued at {nb}; the kubelet may refresh from {refresh}",
        ns.name
    );
    // The namespace stays for phase 2.
    Ok(())
}

#[tokio::test]
async fn podcert_kubelet_refresh_2_happens_before_expiry() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let pending = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{PHASE_LABEL}=pending")))
        .await?
        .items;
    let ns = match pending.as_slice() {
        [one] => one.name_any(),
        other => anyhow::bail!(
            "phase 1 (podcert_kubelet_refresh_1_pod_due_for_refresh) must run first and leave one namespace labelled {PHASE_LABEL}=pending; found {}",
            other.len()
        ),
    };
    // A controller to sign the kubelet's second request, if no earlier one has.
    shared_controller_leading(&env).await?;
    let first = requests(&client, &ns).await?;
    let first = first.first().context("phase 1's request is gone")?;
    let (_, refresh, first_end) = validity(first)?;
    let deadline = refresh.checked_add(KUBELET_SLACK)?;
    let timeout = Duration::try_from(deadline.duration_since(Timestamp::now()))
        .unwrap_or_default()
        .max(Duration::from_secs(180));
    eprintln!("podcert refresh: waiting up to {timeout:?} for the kubelet (hint {refresh})");
    let log = wait_for(
        "the kubelet to refresh the pod's certificate (a second serial in the app's log)",
        timeout,
        async || {
            let log = logs(&client, &ns, POD, "app", false).await;
            Ok((serials(&log).len() >= 2).then_some(log))
        },
        async || {
            format!(
                "app log:\n{}\nrequests:\n{}\n{}",
                logs(&client, &ns, POD, "app", false).await,
                requests(&client, &ns)
                    .await
                    .map(|r| e2e::dump(&r))
                    .unwrap_or_default(),
                describe_namespace(&client, &ns).await
            )
        },
    )
    .await?;
    let all = requests(&client, &ns).await?;
    ensure!(
        all.len() >= 2,
        "the kubelet made no second request: {}",
        e2e::dump(&all)
    );
    let second = &all[1];
    let asked = second.creation_timestamp().map(|t| t.0).unwrap_or_default();
    let (second_start, _, _) = validity(second)?;
    ensure!(
        asked >= refresh && second_start < first_end,
        "the refresh must come after the hint {refresh} and before the end {first_end}: asked at {asked}, issued from {second_start}"
    );
    let pod = Api::<Pod>::namespaced(client.clone(), &ns).get(POD).await?;
    let restarts: i32 = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    ensure!(
        restarts == 0,
        "the new certificate must reach the running container, not a restarted one ({restarts} restarts)"
    );
    eprintln!(
        "podcert refresh: hint {refresh}, kubelet asked at {asked}, serials {:?}",
        serials(&log)
    );
    Api::<Namespace>::all(client.clone())
        .delete(&ns, &Default::default())
        .await?;
    Ok(())
}
