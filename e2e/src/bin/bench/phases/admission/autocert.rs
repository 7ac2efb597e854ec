//! autocert as its docs describe it: a webhook behind Service `autocert` (ExternalName to
//! localhost here) in namespace `$NAMESPACE`, serving a step-ca certificate for
//! `autocert.<NAMESPACE>.svc`, `admissionReviewVersions: [v1beta1]`, `failurePolicy: Ignore`, and
//! a ServiceAccount that may create and delete Secrets. Its Kubernetes client reads only the
//! in-cluster files, so it runs in a private mount namespace whose /run holds them.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use e2e::fixtures::*;
use e2e::operator::free_port;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

use super::{WEBHOOK_LABEL, create_pods, labelled_ns, record_pods, warm_up};
use crate::ctx::Ctx;
use crate::procs::Proc;
use crate::report::{AdmissionRun, OwnTiming, Report};
use crate::util::round;

pub fn mwc_name(ctx: &Ctx) -> String {
    format!("bench-autocert-{}", ctx.suffix)
}

/// `--pods` creates through autocert, if its binary was built; whether the apiserver takes its
/// `v1beta1` registration is checked either way.
pub async fn measure(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    probe_v1beta1(ctx, report).await?;
    let autocert = match ctx.env.tool("autocert-controller") {
        Ok(p) => p,
        Err(e) => {
            report.notes.push(format!(
                "autocert: not measured, its binary is missing ({e:#}). The apiserver does accept its v1beta1 webhook configuration (dry run)."
            ));
            return Ok(());
        }
    };
    let home_ns = labelled_ns(ctx, "bench-autocert", None).await?;
    let port = free_port()?;
    let token = service_account_token(ctx, &home_ns).await?;
    let files = write_files(ctx, port, &token)?;
    register(ctx, &home_ns, port).await?;
    let mut p = spawn(ctx, &autocert, &files, &home_ns)?;
    let ns = labelled_ns(
        ctx,
        "bench-adm-ac",
        Some(&format!("autocert-{}", ctx.suffix)),
    )
    .await?;
    if let Err(e) = warm_up(ctx, &ns, "autocert", &mut p).await {
        // Measure what can be measured: the creates still go through the apiserver, which calls
        // the webhook and (failurePolicy Ignore) admits unmutated pods on any webhook failure.
        report.notes.push(warm_up_failure(ctx, &e));
    }
    let run = create_pods(ctx, &ns, "p", n).await?;
    record_pods(report, AdmissionRun::Autocert, run, n);
    report.webhook_own_timing.insert(
        AdmissionRun::Autocert,
        OwnTiming {
            source: "none: autocert has no metrics endpoint and logs no durations".into(),
            histogram: None,
        },
    );
    let stats = report.admission.entry(AdmissionRun::Autocert).or_default();
    if p.is_running() {
        let mem = p.memory()?;
        stats.rss_mib = Some(round(mem.rss_mib, 1));
        stats.peak_rss_mib = Some(round(mem.hwm_mib, 1));
    }
    stats.log = Some(p.log.display().to_string());
    p.stop();
    Ok(())
}

/// Whether kube-apiserver still takes autocert's documented registration at all (a dry run).
async fn probe_v1beta1(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let probe: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": format!("bench-v1beta1-probe-{}", ctx.suffix)},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"service": {"name": "autocert", "namespace": "step", "path": "/mutate"},
                             "caBundle": base64(ctx.env.root_pem()?.as_bytes())},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"autocert.step.sm": "enabled"}},
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1beta1"],
        }]
    }))?;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let accepted = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone())
        .create(&dry, &probe)
        .await;
    report
        .admission
        .entry(AdmissionRun::Autocert)
        .or_default()
        .v1beta1_config_accepted = Some(accepted.is_ok());
    if let Err(e) = accepted {
        bail!(
            "kube-apiserver rejects admissionReviewVersions [v1beta1], which autocert requires: {e}"
        );
    }
    Ok(())
}

/// ServiceAccount `autocert` with the rights install/03-rbac.yaml grants, and a token for it.
async fn service_account_token(ctx: &Ctx, home_ns: &str) -> Result<String> {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("autocert".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), home_ns);
    accounts.create(&PostParams::default(), &sa).await?;
    let rbac_name = format!("bench-autocert-{}", ctx.suffix);
    let role = resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
    );
    let binding = resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    );
    apply(&cluster(&ctx.client, &role), json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": rbac_name},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]}],
    })).await?;
    apply(&cluster(&ctx.client, &binding), json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": rbac_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac_name},
        "subjects": [{"kind": "ServiceAccount", "name": "autocert", "namespace": home_ns}],
    })).await?;
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(7200),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tr: TokenRequest = accounts
        .create_subresource("token", "autocert", &PostParams::default(), &tr)
        .await?;
    tr.status
        .context("TokenRequest has no status")?
        .token
        .context("TokenRequest has no token")
}

/// What autocert reads from disk, and where the apiserver is.
struct Files {
    /// Holds `token` and `ca.crt` (copied into the in-cluster path) and `step/` (`$STEPPATH`).
    dir: PathBuf,
    config: PathBuf,
    api_host: String,
    api_port: String,
}

/// autocert's config (YAML, written as JSON, which is YAML too) and its in-cluster files.
fn write_files(ctx: &Ctx, port: u16, token: &str) -> Result<Files> {
    let env = &ctx.env;
    let dir = env.state.join(format!("bench-autocert-{}", ctx.suffix));
    std::fs::create_dir_all(dir.join("step"))?;
    std::fs::write(dir.join("token"), token)?;
    let cluster_ca = env.state.join("pki/ca.crt");
    std::fs::copy(&cluster_ca, dir.join("ca.crt"))
        .with_context(|| format!("copying {}", cluster_ca.display()))?;
    let (api_host, api_port) = apiserver_address(&env.kubeconfig)?;
    let config = json!({
        "address": format!("127.0.0.1:{port}"),
        "service": "autocert",
        "logFormat": "text",
        "caUrl": env.step_ca_url,
        "certLifetime": "24h",
        "clusterDomain": "cluster.local",
        "rootCAPath": env.step_ca_root.display().to_string(),
        "provisionerPasswordPath": env.step_provisioner_password_file.display().to_string(),
        "bootstrapper": {"name": "autocert-bootstrapper", "image": "smallstep/autocert-bootstrapper:0.20.6",
            "volumeMounts": [{"name": "certs", "mountPath": "/var/run/autocert.step.sm"}]},
        "renewer": {"name": "autocert-renewer", "image": "smallstep/autocert-renewer:0.20.6",
            "volumeMounts": [{"name": "certs", "mountPath": "/var/run/autocert.step.sm"}]},
        "certsVolume": {"name": "certs", "emptyDir": {}},
    });
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    Ok(Files {
        dir,
        config: config_path,
        api_host,
        api_port,
    })
}

/// Host and port of the first cluster's server in `kubeconfig` (`KUBERNETES_SERVICE_HOST/PORT`).
fn apiserver_address(kubeconfig: &Path) -> Result<(String, String)> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let server = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .context("kubeconfig has no server")?;
    let host_port = server.trim_start_matches("https://").trim_end_matches('/');
    let (host, port) = host_port
        .rsplit_once(':')
        .context("server URL without a port")?;
    Ok((host.to_string(), port.to_string()))
}

/// The Service and the webhook configuration, as autocert's install docs write them.
async fn register(ctx: &Ctx, home_ns: &str, port: u16) -> Result<()> {
    // The Service the webhook configuration names: ExternalName to localhost (e2e-infra.md §7.6).
    let services = resource("", "v1", "Service", "services");
    apply(&namespaced(&ctx.client, home_ns, &services), json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "autocert", "namespace": home_ns},
        "spec": {"type": "ExternalName", "externalName": "localhost"},
    })).await?;
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mwc_name(ctx)},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"service": {"name": "autocert", "namespace": home_ns, "port": port, "path": "/mutate"},
                             "caBundle": base64(ctx.env.root_pem()?.as_bytes())},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {WEBHOOK_LABEL: format!("autocert-{}", ctx.suffix)}},
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1beta1"],
        }]
    }))?;
    Api::<MutatingWebhookConfiguration>::all(ctx.client.clone())
        .create(&PostParams::default(), &mwc)
        .await
        .context(
            "the apiserver rejected autocert's webhook configuration (admissionReviewVersions v1beta1)",
        )?;
    Ok(())
}

/// autocert in a private mount namespace whose /run holds the ServiceAccount files.
fn spawn(ctx: &Ctx, autocert: &Path, files: &Files, home_ns: &str) -> Result<Proc> {
    let env = &ctx.env;
    let sa_dir = "/run/secrets/kubernetes.io/serviceaccount";
    let inner = format!(
        r#"mount -t tmpfs tmpfs /run && mkdir -p {sa_dir} && cp "$BENCH_SA_DIR/token" "$BENCH_SA_DIR/ca.crt" {sa_dir}/ && exec "$@""#
    );
    let dir = files.dir.to_str().context("utf-8")?;
    let steppath = files.dir.join("step");
    Proc::spawn(
        env,
        "autocert",
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            &inner,
            "autocert-wrap",
        ],
        autocert,
        &[files.config.to_str().context("utf-8")?],
        &[
            ("PROVISIONER_NAME", &env.step_provisioner),
            ("PROVISIONER_KID", &env.step_provisioner_kid),
            ("NAMESPACE", home_ns),
            ("STEPPATH", steppath.to_str().context("utf-8")?),
            ("KUBERNETES_SERVICE_HOST", &files.api_host),
            ("KUBERNETES_SERVICE_PORT", &files.api_port),
            ("BENCH_SA_DIR", dir),
        ],
    )
}

/// The note for a warm-up that never saw an injected pod, with what the apiserver logged.
fn warm_up_failure(ctx: &Ctx, e: &anyhow::Error) -> String {
    let apiserver_log =
        std::fs::read_to_string(ctx.env.state.join("apiserver.log")).unwrap_or_default();
    let hints: Vec<&str> = apiserver_log
        .lines()
        .filter(|l| l.contains("autocert"))
        .rev()
        .take(5)
        .collect();
    format!(
        "autocert never injected a pod during warm-up: {e:#}\napiserver log lines naming autocert (newest first):\n{}",
        hints.join("\n")
    )
}
