//! The namespace-scoped install (`controller.namespaces`, `controller.clusterIssuers=false`),
//! proven on the real apiserver: the chart's RBAC for two namespaces is applied, the controller
//! runs as that ServiceAccount (Roles only, no ClusterRole bound), and it signs in its namespaces
//! while a third namespace's issuer and request stay untouched.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::Process;
use e2e::process::run;
use e2e::{Env, TestNamespace, dump, record_secret};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
const SERVICE_ACCOUNT: &str = "step-operator-controller";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chart's controller RBAC for `namespaces`, applied with the release in `release_ns`.
async fn apply_scoped_rbac(
    env: &Env,
    release_ns: &str,
    namespaces: &[&str],
    dir: &std::path::Path,
) -> Result<()> {
    let helm = env.tool("helm")?;
    let chart = repo().join("charts/step-operator");
    let list = format!("controller.namespaces={{{}}}", namespaces.join(","));
    let out = run(
        &helm,
        &[
            "template",
            "step-operator",
            chart.to_str().context("utf-8")?,
            "-n",
            release_ns,
            "--set",
            &list,
            "--set",
            "controller.clusterIssuers=false",
            "--set",
            "controller.leaderElection.enabled=false",
            "--set",
            "controller.replicas=1",
            "--show-only",
            "templates/controller-rbac.yaml",
        ],
        &[],
    )
    .await?;
    let rbac = dir.join("rbac.yaml");
    std::fs::write(&rbac, &out.stdout)?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("kind: ClusterRole"),
        "no ClusterRole without StepClusterIssuers:\n{text}"
    );
    run(
        &env.tool("kubectl")?,
        &["apply", "-f", rbac.to_str().context("utf-8")?],
        &[],
    )
    .await?;
    Ok(())
}

/// A kubeconfig for the controller's ServiceAccount: the cluster of the admin kubeconfig, and a
/// token the apiserver issued for the ServiceAccount.
async fn service_account_kubeconfig(
    env: &Env,
    release_ns: &str,
    dir: &std::path::Path,
) -> Result<PathBuf> {
    let out = run(
        &env.tool("kubectl")?,
        &[
            "create",
            "token",
            SERVICE_ACCOUNT,
            "-n",
            release_ns,
            "--duration",
            "1h",
        ],
        &[],
    )
    .await?;
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    record_secret(env, &token)?;
    let admin =
        Kubeconfig::read_from(std::env::var("KUBECONFIG").context("KUBECONFIG is not set")?)?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("no cluster in the admin kubeconfig")?;
    let server = cluster.server.context("no server")?;
    let ca = cluster
        .certificate_authority
        .context("no certificate-authority")?;
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: e2e, cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}}}]\nusers: [{{name: sa, user: {{token: \"{token}\"}}}}]\ncontexts: [{{name: e2e, context: {{cluster: e2e, user: sa}}}}]\ncurrent-context: e2e\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A StepIssuer with its password Secret in `ns`.
async fn step_issuer(env: &Env, client: &kube::Client, ns: &str) -> Result<()> {
    password_secret(
        client,
        ns,
        "step-pw",
        "password",
        &env.provisioner_password()?,
    )
    .await?;
    let spec = issuer_spec(env, json!({"name": "step-pw", "key": "password"}))?;
    apply(
        &namespaced(client, ns, &step_issuers()),
        json!({"apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepIssuer",
            "metadata": {"name": "ca"}, "spec": spec}),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn scoped_controller_with_roles_only_signs_in_its_namespaces() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let release = TestNamespace::create(&client, "scoped-op").await?;
    let a = TestNamespace::create(&client, "scoped-a").await?;
    let b = TestNamespace::create(&client, "scoped-b").await?;
    let other = TestNamespace::create(&client, "scoped-other").await?;
    let dir = tempfile::tempdir()?;
    apply_scoped_rbac(&env, &release.name, &[&a.name, &b.name], dir.path()).await?;

    // Roles only: nothing cluster-wide is bound to the ServiceAccount.
    let bindings = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&Default::default())
        .await?;
    let bound: Vec<_> = bindings
        .items
        .iter()
        .filter(|b| {
            b.subjects.iter().flatten().any(|s| {
                s.name == SERVICE_ACCOUNT && s.namespace.as_deref() == Some(release.name.as_str())
            })
        })
        .map(|b| b.metadata.name.clone())
        .collect();
    assert!(
        bound.is_empty(),
        "ClusterRoleBindings for the scoped ServiceAccount: {bound:?}"
    );

    let kubeconfig = service_account_kubeconfig(&env, &release.name, dir.path()).await?;
    let namespaces = format!("{},{}", a.name, b.name);
    let controller = Process::start(
        &env,
        "controller-scoped",
        &[
            "controller",
            "--leader-elect=false",
            "--namespaces",
            &namespaces,
            "--cluster-issuers=false",
            "--cluster-resource-namespace",
            &release.name,
        ],
        &[("KUBECONFIG", kubeconfig.to_str().context("utf-8")?)],
    )?;
    let log = controller.log.display().to_string();

    for ns in [&a.name, &b.name, &other.name] {
        step_issuer(&env, &client, ns).await?;
    }
    for ns in [&a.name, &b.name] {
        wait_ready_condition(
            &namespaced(&client, ns, &step_issuers()),
            "ca",
            "True",
            Some("Verified"),
            TIMEOUT,
            &log,
        )
        .await
        .with_context(|| controller.log_tail())?;
    }
    let issuer_ref = json!({"group": "certmanager.step.sm", "kind": "StepIssuer", "name": "ca"});
    for ns in [&other.name, &a.name] {
        let cr = certificate_request("web", &csr(&format!("web.{ns}.svc"))?, issuer_ref.clone())?;
        namespaced(&client, ns, &certificate_requests())
            .create(&PostParams::default(), &cr)
            .await?;
    }
    let issued = wait_ready_condition(
        &namespaced(&client, &a.name, &certificate_requests()),
        "web",
        "True",
        Some("Issued"),
        TIMEOUT,
        &log,
    )
    .await
    .with_context(|| controller.log_tail())?;
    assert!(
        issued.data["status"]["certificate"].is_string(),
        "{}",
        dump(&issued)
    );

    // The namespace it does not watch: its issuer was never checked, its request (created
    // before the watched one was issued) never touched by us.
    let untouched_issuer = namespaced(&client, &other.name, &step_issuers())
        .get("ca")
        .await?;
    assert!(
        condition(&untouched_issuer, "Ready").is_none(),
        "{}",
        dump(&untouched_issuer)
    );
    let untouched = namespaced(&client, &other.name, &certificate_requests())
        .get("web")
        .await?;
    assert!(
        untouched.data["status"]["certificate"].is_null(),
        "{}",
        dump(&untouched)
    );
    assert!(
        !controller.logs().contains("forbidden"),
        "every call the scoped controller made was allowed:\n{}",
        controller.log_tail()
    );
    for ns in [other, b, a, release] {
        ns.delete().await?;
    }
    Ok(())
}
