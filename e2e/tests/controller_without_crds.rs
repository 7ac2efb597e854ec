//! The controller started before step-operator's CRDs exist: it says so in its log within
//! seconds, `/readyz` is false, and once the CRDs are applied it recovers by itself and issues.
//! It runs against a second, empty kube-apiserver on the cluster's etcd (`cluster.sh
//! empty-apiserver`), so the shared cluster keeps its CRDs for the other tests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process, http_get};
use e2e::{Env, dump, random_suffix, wait_for};
use kube::ResourceExt;
use kube::api::PostParams;

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn readyz(p: &Process) -> Option<u16> {
    http_get(&p.admin_url("/readyz")).await.ok().map(|(s, _)| s)
}

#[tokio::test]
async fn controller_started_before_its_crds_says_so_and_recovers() -> Result<()> {
    let env = Env::load()?;
    let name = format!("nocrds-{}", random_suffix());
    let (kubeconfig, client) = empty_apiserver(&name).await?;
    // cert-manager's CRDs exist (CertificateRequests can be listed); ours do not yet.
    apply_crds(
        &env,
        &kubeconfig,
        &yaml_files(&env.bin.join("cert-manager-crds"))?,
    )
    .await?;

    let kc_path = kubeconfig.to_str().context("utf-8")?;
    let controller = Process::start(
        &env,
        "controller-nocrds",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            CLUSTER_RESOURCE_NAMESPACE,
        ],
        &[("KUBECONFIG", kc_path)],
    )?;
    wait_for(
        "the controller to log that StepIssuers are not served",
        Duration::from_secs(15),
        async || {
            let logs = controller.logs();
            Ok(
                (logs.contains("WARN") && logs.contains("does not serve StepIssuers"))
                    .then_some(()),
            )
        },
        async || controller.log_tail(),
    )
    .await?;
    assert!(
        controller
            .logs()
            .contains("`step-operator crd | kubectl apply -f -`"),
        "the warning names the fix:\n{}",
        controller.log_tail()
    );
    assert_eq!(
        readyz(&controller).await,
        Some(503),
        "/readyz while the CRDs are missing"
    );
    // Logged once per cause, not once per retry.
    let warnings = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("does not serve StepClusterIssuers"))
            .count()
    };

    apply_crds(&env, &kubeconfig, &yaml_files(&e2e_dir().join("../crds"))?).await?;
    wait_for(
        "the controller to recover and turn ready",
        Duration::from_secs(60),
        async || Ok((readyz(&controller).await == Some(200)).then_some(())),
        async || controller.log_tail(),
    )
    .await?;
    assert!(
        controller.logs().contains("A watch recovered"),
        "{}",
        controller.log_tail()
    );
    // Two watches of StepClusterIssuers (issuer reconciler, request controller): one line each.
    assert!(
        warnings(&controller.logs()) <= 2,
        "the same cause was logged more than once per watch:\n{}",
        controller.log_tail()
    );

    // And it works: an issuer turns Ready and an approved request is issued.
    let log = controller.log.display().to_string();
    let issuer = verified_cluster_issuer_with(&env, &client, "late", &log, |_| {})
        .await?
        .name_any();
    ensure_namespace(&client, "late").await?;
    let requests = namespaced(&client, "late", &certificate_requests());
    let cr = certificate_request(
        "after-crds",
        &csr("after-crds.late.svc")?,
        step_cluster_issuer_ref(&issuer),
    )?;
    requests.create(&PostParams::default(), &cr).await?;
    // No cert-manager runs against this apiserver: approve as its approver would.
    approve_as_cert_manager(&requests, "after-crds").await?;
    let issued = wait_ready_condition(
        &requests,
        "after-crds",
        "True",
        Some("Issued"),
        Duration::from_secs(60),
        &log,
    )
    .await
    .with_context(|| format!("controller log:\n{}", controller.log_tail()))?;
    assert!(
        issued.data["status"]["certificate"].is_string(),
        "{}",
        dump(&issued)
    );
    Ok(())
}
