//! The CertificateRequest watch asks the apiserver for our requests only where cert-manager's
//! CRDs make `spec.issuerRef.group` selectable (1.20 and later, as in the shared cluster), and
//! falls back to watching every request where they do not: here, a second, empty apiserver with
//! cert-manager's CRDs stripped of `selectableFields`, where the controller still issues.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process, shared_controller};
use e2e::{Env, dump, random_suffix, wait_for};
use kube::ResourceExt;
use kube::api::PostParams;

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// cert-manager's CRDs as before 1.20: the same files without their `selectableFields` lists.
fn crds_without_selectable_fields(src: &Path, dst: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(src)? {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let mut kept = Vec::new();
        let mut skipping: Option<usize> = None;
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            if let Some(at) = skipping {
                if line.trim_start().starts_with("- jsonPath") && indent >= at {
                    continue;
                }
                skipping = None;
            }
            if line.trim() == "selectableFields:" {
                skipping = Some(indent);
                continue;
            }
            kept.push(line);
        }
        let target = dst.join(path.file_name().context("file name")?);
        std::fs::write(&target, kept.join("\n") + "\n")?;
        out.push(target);
    }
    out.sort();
    anyhow::ensure!(!out.is_empty(), "no CRD files in {}", src.display());
    Ok(out)
}

#[tokio::test]
async fn select_requests_by_issuer_group_and_fall_back_on_old_crds() -> Result<()> {
    let env = Env::load()?;
    // The shared cluster has cert-manager 1.21's CRDs: the selector is served and used.
    let shared_log = shared_controller(&env)?;
    wait_for(
        "the shared controller to say which requests it watches",
        Duration::from_secs(30),
        async || {
            let log = std::fs::read_to_string(shared_log).unwrap_or_default();
            Ok(log
                .contains("Watching only our CertificateRequests")
                .then_some(()))
        },
        async || std::fs::read_to_string(shared_log).unwrap_or_default(),
    )
    .await?;

    let name = format!("oldcrds-{}", random_suffix());
    let (kubeconfig, client) = empty_apiserver(&name).await?;
    let stripped = tempfile::tempdir()?;
    let old = crds_without_selectable_fields(&env.bin.join("cert-manager-crds"), stripped.path())?;
    apply_crds(&env, &kubeconfig, &old).await?;
    let ours = yaml_files(&e2e_dir().join("../crds"))?;
    apply_crds(&env, &kubeconfig, &ours).await?;

    let kc_path = kubeconfig.to_str().context("utf-8")?;
    let controller = Process::start(
        &env,
        "controller-oldcrds",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            CLUSTER_RESOURCE_NAMESPACE,
        ],
        &[("KUBECONFIG", kc_path)],
    )?;
    wait_for(
        "the controller to fall back to watching every request",
        Duration::from_secs(30),
        async || {
            let logs = controller.logs();
            Ok(
                (logs.contains("Watching every CertificateRequest")
                    && logs.contains("before 1.20"))
                .then_some(()),
            )
        },
        async || controller.log_tail(),
    )
    .await?;

    // It still issues.
    let log = controller.log.display().to_string();
    let issuer = verified_cluster_issuer_with(&env, &client, "oldcrds", &log, |_| {})
        .await?
        .name_any();
    ensure_namespace(&client, "oldcrds").await?;
    let requests = namespaced(&client, "oldcrds", &certificate_requests());
    let cr = certificate_request(
        "old",
        &csr("old.oldcrds.svc")?,
        step_cluster_issuer_ref(&issuer),
    )?;
    requests.create(&PostParams::default(), &cr).await?;
    // No cert-manager runs against this apiserver: approve as its approver would.
    approve_as_cert_manager(&requests, "old").await?;
    let issued = wait_ready_condition(
        &requests,
        "old",
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
