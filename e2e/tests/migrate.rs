//! Live migration from step-issuer v0.12.0, on an apiserver of its own (`cluster.sh
//! empty-apiserver`) with cert-manager's own controllers for it: step-issuer's CRDs as its chart
//! installs them, step-issuer running and issuing, then stopped; step-operator installed by its
//! chart over those CRDs (`--take-ownership`, the documented path), then started under the chart's
//! ServiceAccount with the chart's arguments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::chart::{container_args, objects, of_kind, service_account_kubeconfig_on};
use e2e::fixtures::*;
use e2e::operator::Process;
use e2e::process::run;
use e2e::{Env, dump, random_suffix, wait_for};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
const APP: &str = "apps";
const SYSTEM: &str = "step-issuer-system";
const RELEASE: &str = "step-operator";

/// An apiserver of its own, with cert-manager's CRDs and controllers and step-issuer's CRDs.
struct World {
    env: Env,
    kubeconfig: PathBuf,
    client: Client,
    _cert_manager: Process,
}

impl World {
    async fn start(name: &str) -> Result<World> {
        let env = Env::load()?;
        let (kubeconfig, client) = empty_apiserver(name).await?;
        apply_crds(
            &env,
            &kubeconfig,
            &yaml_files(&env.bin.join("cert-manager-crds"))?,
        )
        .await?;
        // What step-issuer's chart installs from its crds/ folder: no Helm ownership.
        apply_crds(
            &env,
            &kubeconfig,
            &yaml_files(&env.bin.join("step-issuer-crds"))?,
        )
        .await?;
        let kc = kubeconfig.to_str().context("utf-8")?.to_string();
        let cert_manager = Process::start_program(
            &env,
            &format!("cert-manager-{name}"),
            &env.tool("cert-manager-controller")?,
            &[
                "--kubeconfig",
                &kc,
                "--cluster-resource-namespace",
                "kube-system",
            ],
            &[("KUBECONFIG", &kc)],
        )?;
        wait_for(
            "cert-manager's controllers to run",
            TIMEOUT,
            async || {
                Ok(cert_manager
                    .logs()
                    .contains("cert-manager-controller: running")
                    .then_some(()))
            },
            async || cert_manager.log_tail(),
        )
        .await?;
        Ok(World {
            env,
            kubeconfig,
            client,
            _cert_manager: cert_manager,
        })
    }

    fn kc(&self) -> Result<&str> {
        self.kubeconfig.to_str().context("utf-8")
    }

    fn step_issuer(&self, name: &str) -> Result<Process> {
        let kc = self.kc()?;
        Process::start_program(
            &self.env,
            name,
            &self.env.tool("step-issuer")?,
            &["--kubeconfig", kc],
            &[("KUBECONFIG", kc)],
        )
    }

    async fn helm(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["--kubeconfig", self.kc()?];
        all.extend_from_slice(args);
        let out = run(&self.env.tool("helm")?, &all, &[]).await?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Two issuers as step-issuer's README writes them, with their password Secrets (the value
/// without a trailing newline: step-issuer uses it verbatim).
async fn step_issuer_objects(w: &World) -> Result<()> {
    for ns in [APP, SYSTEM] {
        ensure_namespace(&w.client, ns).await?;
    }
    let password = w.env.provisioner_password()?;
    password_secret(&w.client, SYSTEM, "cluster-password", "password", &password).await?;
    password_secret(&w.client, APP, "local-password", "password", &password).await?;
    let cluster_spec = issuer_spec(
        &w.env,
        json!({"name": "cluster-password", "namespace": SYSTEM, "key": "password"}),
    )?;
    apply(
        &cluster(&w.client, &step_cluster_issuers()),
        json!({"apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
               "metadata": {"name": "cluster"}, "spec": cluster_spec}),
    )
    .await?;
    let local_spec = issuer_spec(&w.env, json!({"name": "local-password", "key": "password"}))?;
    apply(
        &namespaced(&w.client, APP, &step_issuers()),
        json!({"apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepIssuer",
               "metadata": {"name": "local"}, "spec": local_spec}),
    )
    .await?;
    Ok(())
}

fn certificate(name: &str, kind: &str, issuer: &str) -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": name},
        "spec": {"secretName": format!("{name}-tls"), "dnsNames": [format!("{name}.{APP}.svc")],
                 "issuerRef": {"group": "certmanager.step.sm", "kind": kind, "name": issuer}},
    })
}

/// What step-issuer finished: request name → (resourceVersion, certificate).
async fn finished_requests(w: &World) -> Result<Vec<(String, String, String)>> {
    let requests = namespaced(&w.client, APP, &certificate_requests());
    let mut out = Vec::new();
    for r in requests.list(&Default::default()).await?.items {
        let cert = r.data["status"]["certificate"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ensure!(
            !cert.is_empty(),
            "step-issuer left {} unfinished: {}",
            r.name_any(),
            dump(&r)
        );
        out.push((r.name_any(), r.resource_version().unwrap_or_default(), cert));
    }
    Ok(out)
}

/// `helm install` over step-issuer's CRDs, as the README says; returns the rendered objects.
async fn install_chart(w: &World) -> Result<Vec<Value>> {
    let values = json!({"clusterResourceNamespace": SYSTEM});
    let (_d, file) = e2e::chart::temp_file(&values.to_string(), "values.yaml")?;
    let chart = e2e::chart::chart_dir();
    let args = [
        "install",
        RELEASE,
        chart.to_str().context("utf-8")?,
        "-n",
        RELEASE,
        "--create-namespace",
        "--take-ownership",
        "-f",
        file.to_str().context("utf-8")?,
    ];
    w.helm(&args).await?;
    let manifest = w.helm(&["get", "manifest", RELEASE, "-n", RELEASE]).await?;
    objects(&w.env, &manifest).await
}

/// The CRDs are step-operator's now, owned by the release and kept on uninstall.
async fn assert_crds_upgraded(w: &World) -> Result<()> {
    let crds = Api::<CustomResourceDefinition>::all(w.client.clone());
    for name in [
        "stepissuers.certmanager.step.sm",
        "stepclusterissuers.certmanager.step.sm",
    ] {
        let crd = crds.get(name).await?;
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(&version.schema)?;
        let required = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["provisioner"]
            ["required"];
        ensure!(
            !required
                .as_array()
                .is_some_and(|r| r.iter().any(|k| k == "kid")),
            "{name} still requires kid (step-issuer's schema): {required}"
        );
        ensure!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| !c.is_empty()),
            "{name} has no printer columns: it was not upgraded"
        );
        ensure!(
            crd.annotations()
                .get("meta.helm.sh/release-name")
                .map(String::as_str)
                == Some(RELEASE)
                && crd
                    .annotations()
                    .get("helm.sh/resource-policy")
                    .map(String::as_str)
                    == Some("keep"),
            "{name} is not the release's, kept on uninstall: {:?}",
            crd.annotations()
        );
    }
    Ok(())
}

/// Step 2b: step-operator run over step-issuer's CRDs (the CRDs not upgraded): their status
/// schema allows no condition but Ready, so the apiserver refuses the issuers' status, and each
/// issuer gets an `OutdatedCRD` Warning that names the fix. Nothing is open to sign yet.
async fn outdated_crds_are_told(w: &World) -> Result<()> {
    let controller = Process::start(
        &w.env,
        "controller-outdated-crds",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            SYSTEM,
        ],
        &[("KUBECONFIG", w.kc()?)],
    )?;
    for (ns, issuer) in [("default", "cluster"), (APP, "local")] {
        let told = wait_for(
            &format!("an OutdatedCRD Event on issuer {issuer}"),
            TIMEOUT,
            async || {
                Ok(events_for(&w.client, ns, issuer, "OutdatedCRD")
                    .await?
                    .into_iter()
                    .next())
            },
            async || controller.log_tail(),
        )
        .await?;
        let note = told.note.clone().unwrap_or_default();
        ensure!(
            note.contains("its CRD is older than step-operator's")
                && note.contains("crds.enabled=true")
                && note.contains("kubectl apply --server-side -f crds/"),
            "the Warning names the cause and the fix: {note}"
        );
    }
    Ok(())
}

async fn start_controller(w: &World, objs: &[Value], dir: &Path) -> Result<Process> {
    let deployment = of_kind(objs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "controller")
        .context("the chart installed no controller Deployment")?;
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .context("the controller Deployment names no ServiceAccount")?;
    let kubeconfig =
        service_account_kubeconfig_on(&w.env, &w.kubeconfig, &w.client, RELEASE, sa, dir).await?;
    let args = container_args(deployment, &["--admin-addr"])?;
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Process::start(
        &w.env,
        "controller-migrated",
        &refs,
        &[
            ("KUBECONFIG", kubeconfig.to_str().context("utf-8")?),
            ("POD_NAMESPACE", RELEASE),
            ("POD_NAME", "step-operator-controller-migrated"),
        ],
    )?;
    p.wait_ready(TIMEOUT).await?;
    Ok(p)
}

/// Both issuers Ready with step-operator's own conditions: step-issuer's replaced, not merged
/// (its Ready condition has reason Verified too, so the message and the NamePolicy condition
/// tell whose it is).
async fn assert_issuers_ours(w: &World, log: &str) -> Result<()> {
    let issuers = [
        (cluster(&w.client, &step_cluster_issuers()), "cluster"),
        (namespaced(&w.client, APP, &step_issuers()), "local"),
    ];
    for (api, name) in &issuers {
        wait_for(
            &format!("{name} to carry step-operator's conditions"),
            TIMEOUT,
            async || {
                let i = api.get(name).await?;
                let ours = is_true(&i, "Ready")
                    && ready_message(&i) == verified_message(&w.env)
                    && condition(&i, "Ready")
                        .is_some_and(|c| c["observedGeneration"].as_i64().is_some())
                    && condition(&i, "NamePolicy").is_some();
                Ok(ours.then_some(()))
            },
            async || {
                format!(
                    "{}\n{}",
                    dump(&api.get_opt(name).await.ok().flatten()),
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            },
        )
        .await?;
    }
    Ok(())
}

/// cert-manager's manual renewal (what `cmctl renew` does): the Issuing condition set to True.
async fn trigger_renewal(w: &World, name: &str) -> Result<()> {
    let certs = namespaced(&w.client, APP, &certificates());
    let now = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)?
        .to_string();
    let patch = json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "status": {"conditions": [{"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
            "message": "Certificate re-issuance manually triggered", "lastTransitionTime": now}]}});
    certs
        .patch_status(
            name,
            &PatchParams::apply("e2e-renew").force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn migrate_from_step_issuer_in_place() -> Result<()> {
    let name = format!("migrate-si-{}", random_suffix());
    let w = World::start(&name).await?;
    step_issuer_objects(&w).await?;
    let certs = namespaced(&w.client, APP, &certificates());

    // 1. step-issuer runs and issues.
    let mut si = w.step_issuer("step-issuer-before")?;
    let si_log = si.log.display().to_string();
    for (api, issuer) in [
        (cluster(&w.client, &step_cluster_issuers()), "cluster"),
        (namespaced(&w.client, APP, &step_issuers()), "local"),
    ] {
        wait_ready_condition(&api, issuer, "True", None, TIMEOUT, &si_log).await?;
    }
    apply(&certs, certificate("web", "StepClusterIssuer", "cluster")).await?;
    apply(&certs, certificate("api", "StepIssuer", "local")).await?;
    for c in ["web", "api"] {
        wait_certificate_revision(&certs, c, 1, TIMEOUT, &si_log).await?;
    }
    let finished = finished_requests(&w).await?;
    ensure!(finished.len() == 2, "{finished:?}");

    // 2. It stops; a request is created while nothing signs.
    si.stop();
    outdated_crds_are_told(&w).await?;
    let requests = namespaced(&w.client, APP, &certificate_requests());
    let pending = certificate_request(
        "while-down",
        &csr(&format!("while-down.{APP}.svc"))?,
        step_cluster_issuer_ref("cluster"),
    )?;
    requests.create(&PostParams::default(), &pending).await?;

    // 3. step-operator's chart over step-issuer's CRDs, then its controller.
    let objs = install_chart(&w).await?;
    assert_crds_upgraded(&w).await?;
    let dir = tempfile::tempdir()?;
    let controller = start_controller(&w, &objs, dir.path()).await?;
    let log = controller.log.display().to_string();
    assert_issuers_ours(&w, &log).await?;

    // 4. The request made while nothing ran is signed, once; step-issuer's are never touched.
    wait_ready_condition(
        &requests,
        "while-down",
        "True",
        Some("Issued"),
        TIMEOUT,
        &log,
    )
    .await?;
    for (name, rv, cert) in &finished {
        let now = requests.get(name).await?;
        ensure!(
            now.resource_version().as_deref() == Some(rv.as_str())
                && now.data["status"]["certificate"].as_str() == Some(cert.as_str()),
            "step-operator touched {name}, which step-issuer had finished: {}",
            dump(&now)
        );
    }

    // 5. Renewals continue, now signed by step-operator.
    trigger_renewal(&w, "web").await?;
    wait_certificate_revision(&certs, "web", 2, TIMEOUT, &log).await?;
    let issued = events_for(&w.client, APP, "web-2", "Issued").await?;
    ensure!(issued.len() == 1, "web-2: {}", dump(&issued));
    let once = events_for(&w.client, APP, "while-down", "Issued").await?;
    ensure!(once.len() == 1, "while-down: {}", dump(&once));

    both_controllers_at_once(&w, &log).await?;

    // 7. helm uninstall keeps the CRDs, and with them the issuers.
    w.helm(&[
        "uninstall",
        RELEASE,
        "-n",
        RELEASE,
        "--wait",
        "--timeout",
        "60s",
    ])
    .await?;
    ensure!(
        cluster(&w.client, &step_cluster_issuers())
            .get_opt("cluster")
            .await?
            .is_some(),
        "helm uninstall deleted the StepClusterIssuer (its CRD was not kept)"
    );
    let forbidden: Vec<String> = controller
        .logs()
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .map(str::to_string)
        .collect();
    ensure!(
        forbidden.is_empty(),
        "the chart's RBAC refused the controller: {forbidden:?}"
    );
    Ok(())
}

/// Step 6: step-issuer started again next to step-operator. step-operator tells (an Event on the
/// issuers whose status step-issuer rewrites), the requests made meanwhile are signed once, and
/// once step-issuer is gone the issuers' status is step-operator's again.
async fn both_controllers_at_once(w: &World, log: &str) -> Result<()> {
    let si = w.step_issuer("step-issuer-again")?;
    let told = wait_for(
        "an AnotherController Event on the StepClusterIssuer",
        TIMEOUT,
        async || {
            let found = events_for(&w.client, "default", "cluster", "AnotherController").await?;
            Ok(found.into_iter().next())
        },
        async || {
            format!(
                "{}\n{}",
                si.log_tail(),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
    )
    .await?;
    let note = told.note.clone().unwrap_or_default();
    ensure!(
        note.contains("step-issuer") && note.contains("stop"),
        "{note}"
    );
    let requests = namespaced(&w.client, APP, &certificate_requests());
    let during = certificate_request(
        "during-both",
        &csr(&format!("during-both.{APP}.svc"))?,
        step_cluster_issuer_ref("cluster"),
    )?;
    requests.create(&PostParams::default(), &during).await?;
    let done = wait_ready_condition(
        &requests,
        "during-both",
        "True",
        Some("Issued"),
        TIMEOUT,
        log,
    )
    .await?;
    ensure!(
        done.data["status"]["certificate"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{}",
        dump(&done)
    );
    drop(si);
    // The yield lasts 60 s after step-issuer's last write; then step-operator writes again.
    let issuers = cluster(&w.client, &step_cluster_issuers());
    wait_for(
        "the StepClusterIssuer's status to be step-operator's again",
        Duration::from_secs(150),
        async || {
            let i = issuers.get("cluster").await?;
            Ok((ready_message(&i) == verified_message(&w.env)
                && condition(&i, "NamePolicy").is_some())
            .then_some(()))
        },
        async || {
            format!(
                "{}\n{}",
                dump(&issuers.get_opt("cluster").await.ok().flatten()),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
    )
    .await?;
    Ok(())
}
