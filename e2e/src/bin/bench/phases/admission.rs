//! 4. Admission: annotated pod creates through each webhook, and through none.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::fixtures::*;
use e2e::operator::{free_port, http_get};
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::procs::Proc;
use crate::report::{AdmissionRun, HistogramTiming, OwnTiming, PodStats, Report};
use crate::systems::Installed;
use crate::util::{log, ms, percentile, round};

const WEBHOOK_LABEL: &str = "bench.step.sm/webhook";

fn bench_pod(name: &str, cn: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"autocert.step.sm/name": cn}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "nginx"}]}
    }))?)
}

async fn labelled_ns(ctx: &Ctx, prefix: &str, webhook: Option<&str>) -> Result<String> {
    let name = format!("{prefix}-{}", ctx.suffix);
    let mut labels = BTreeMap::new();
    if let Some(w) = webhook {
        labels.insert(WEBHOOK_LABEL.to_string(), w.to_string());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(ctx.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name)
}

struct PodRun {
    latencies_ms: Vec<f64>,
    injected: usize,
    errors: Vec<String>,
}

async fn create_pods(ctx: &Ctx, ns: &str, prefix: &str, n: usize) -> Result<PodRun> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let results: Vec<Result<(f64, bool), String>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}{i:05}");
            let cn = format!("{name}.{ns}.svc");
            async move {
                let pod = bench_pod(&name, &cn).map_err(|e| e.to_string())?;
                let t = Instant::now();
                let created = api
                    .create(&PostParams::default(), &pod)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let injected = created
                    .annotations()
                    .get("autocert.step.sm/status")
                    .map(String::as_str)
                    == Some("injected");
                Ok((ms(t.elapsed()), injected))
            }
        })
        .buffer_unordered(ctx.opts.admission_concurrency)
        .collect()
        .await;
    let mut run = PodRun {
        latencies_ms: vec![],
        injected: 0,
        errors: vec![],
    };
    for r in results {
        match r {
            Ok((l, inj)) => {
                run.latencies_ms.push(l);
                run.injected += usize::from(inj);
            }
            Err(e) => run.errors.push(e),
        }
    }
    Ok(run)
}

/// Creates warm-up pods until one comes back injected (the apiserver's webhook informer has
/// caught up and the webhook answers).
async fn warm_up(ctx: &Ctx, ns: &str, what: &str, p: &mut Proc) -> Result<()> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last;
    for i in 0.. {
        let name = format!("warmup{i:03}");
        let pod = bench_pod(&name, &format!("{name}.{ns}.svc"))?;
        match api.create(&PostParams::default(), &pod).await {
            Ok(created)
                if created
                    .annotations()
                    .get("autocert.step.sm/status")
                    .map(String::as_str)
                    == Some("injected") =>
            {
                return Ok(());
            }
            Ok(_) => last = "created but not injected".into(),
            Err(e) => last = e.to_string(),
        }
        if !p.is_running() {
            bail!("{what} exited; log tail:\n{}", p.log_tail(40));
        }
        if Instant::now() > deadline {
            bail!(
                "no pod was injected by {what} within 60 s; last: {last}\n{what} log tail:\n{}",
                p.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    unreachable!()
}

fn record_pods(report: &mut Report, webhook: AdmissionRun, mut run: PodRun, n: usize) {
    let key = webhook.key();
    let p50 = percentile(&mut run.latencies_ms, 50.0);
    let p99 = percentile(&mut run.latencies_ms, 99.0);
    log(format!(
        "admission {key}: {} created ({} injected, {} errors); p50 {:.1} ms, p99 {:.1} ms",
        run.latencies_ms.len(),
        run.injected,
        run.errors.len(),
        p50.unwrap_or(0.0),
        p99.unwrap_or(0.0)
    ));
    report
        .admission_p50_ms
        .insert(webhook, p50.map(|x| round(x, 1)));
    report
        .admission_p99_ms
        .insert(webhook, p99.map(|x| round(x, 1)));
    report.admission.entry(webhook).or_default().pods = Some(PodStats {
        created: run.latencies_ms.len(),
        injected: run.injected,
        errors: run.errors.len(),
        first_error: run.errors.first().cloned(),
    });
    if webhook != AdmissionRun::NoWebhook && run.injected < n {
        report.notes.push(format!(
            "admission {key}: only {} of {n} pods came back injected; its latency is not that of a full mutation",
            run.injected
        ));
    }
}

pub async fn run(ctx: &Ctx, so: &Installed, report: &mut Report) {
    log(format!(
        "4. admission: {} annotated pod creates per webhook",
        ctx.opts.pods
    ));
    if let Err(e) = admission(ctx, so, report).await {
        report.error("admission", e);
    }
}

async fn admission(ctx: &Ctx, so: &Installed, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    // Baseline: the same creates in a namespace no webhook selects.
    let ns = labelled_ns(ctx, "bench-adm-none", None).await?;
    let run = create_pods(ctx, &ns, "p", n).await?;
    record_pods(report, AdmissionRun::NoWebhook, run, n);
    // Each webhook configuration is deleted right after its run, whatever happened: a stale one
    // with failurePolicy Fail would block pod creates in its namespaces.
    let mwcs = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    if let Err(e) = admission_step_operator(ctx, so, report).await {
        report.error("admission step_operator", e);
    }
    delete_mwc(&mwcs, &format!("bench-step-operator-{}", ctx.suffix)).await;
    if let Err(e) = admission_autocert(ctx, report).await {
        report.error("admission autocert", e);
    }
    delete_mwc(&mwcs, &format!("bench-autocert-{}", ctx.suffix)).await;
    Ok(())
}

async fn delete_mwc(api: &Api<MutatingWebhookConfiguration>, name: &str) {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => log(format!(
            "could not delete MutatingWebhookConfiguration {name}: {e}"
        )),
    }
}

async fn metric_histogram(port: u16, name: &str) -> Result<(Vec<(f64, f64)>, f64, f64)> {
    let (status, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let (mut buckets, mut sum, mut count) = (vec![], 0.0, 0.0);
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            if let Some((le, v)) = rest.split_once("\"} ") {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse()?
                };
                buckets.push((le, v.trim().parse()?));
            }
        } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
            sum = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
            count = v.trim().parse()?;
        }
    }
    Ok((buckets, sum, count))
}

async fn admission_step_operator(ctx: &Ctx, so: &Installed, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    let mwc_name = format!("bench-step-operator-{}", ctx.suffix);
    let port = free_port()?;
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mwc_name},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {WEBHOOK_LABEL: format!("step-operator-{}", ctx.suffix)}},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10, "reinvocationPolicy": "IfNeeded",
        }]
    }))?;
    let mwcs = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    mwcs.create(&PostParams::default(), &mwc).await?;
    let admin_port = free_port()?;
    let (listen, admin, bootstrap) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{admin_port}"),
        format!("https://127.0.0.1:{port}"),
    );
    let kubeconfig = ctx.env.kubeconfig.to_str().context("utf-8")?;
    let mut p = Proc::spawn(
        &ctx.env,
        "step-operator-webhook",
        &[],
        &e2e::operator::binary()?,
        &[
            "webhook",
            "--listen-addr",
            &listen,
            "--default-issuer",
            &so.issuer,
            "--tls-san",
            "127.0.0.1",
            "--bootstrap-url",
            &bootstrap,
            "--webhook-config-name",
            &mwc_name,
            "--cluster-resource-namespace",
            &so.ns,
            "--image",
            "step-operator:bench",
        ],
        &[
            ("KUBECONFIG", kubeconfig),
            ("STEP_OPERATOR_ADMIN_ADDR", &admin),
            ("POD_NAMESPACE", &so.ns),
            ("RUST_LOG", "info,kube=warn"),
        ],
    )?;
    let ns = labelled_ns(
        ctx,
        "bench-adm-so",
        Some(&format!("step-operator-{}", ctx.suffix)),
    )
    .await?;
    warm_up(ctx, &ns, "step-operator's webhook", &mut p).await?;
    let metric = "step_operator_admission_duration_seconds";
    let before = metric_histogram(admin_port, metric).await?;
    let run = create_pods(ctx, &ns, "p", n).await?;
    let after = metric_histogram(admin_port, metric).await?;
    record_pods(report, AdmissionRun::StepOperator, run, n);
    // The webhook's own timing, from its histogram (difference across the measured creates).
    let count = after.2 - before.2;
    let mean_ms = if count > 0.0 {
        (after.1 - before.1) / count * 1000.0
    } else {
        f64::NAN
    };
    let quantile = |q: f64| -> Option<f64> {
        let target = q * count;
        after
            .0
            .iter()
            .zip(before.0.iter())
            .find(|((_, a), (_, b))| a - b >= target)
            .map(|((le, _), _)| le * 1000.0)
    };
    report.webhook_own_timing.insert(
        AdmissionRun::StepOperator,
        OwnTiming {
            source: format!("{metric} (Prometheus histogram; quantiles are bucket upper bounds)"),
            histogram: Some(HistogramTiming {
                reviews: count,
                mean_ms: mean_ms.is_finite().then(|| round(mean_ms, 2)),
                p50_le_ms: quantile(0.5),
                p99_le_ms: quantile(0.99),
            }),
        },
    );
    let mem = p.memory()?;
    let stats = report
        .admission
        .entry(AdmissionRun::StepOperator)
        .or_default();
    stats.rss_mib = Some(round(mem.rss_mib, 1));
    stats.peak_rss_mib = Some(round(mem.hwm_mib, 1));
    p.stop();
    Ok(())
}

/// autocert as its docs describe it: a webhook behind Service `autocert` (ExternalName to
/// localhost here) in namespace `$NAMESPACE`, serving a step-ca certificate for
/// `autocert.<NAMESPACE>.svc`, `admissionReviewVersions: [v1beta1]`, `failurePolicy: Ignore`, and
/// a ServiceAccount that may create and delete Secrets. Its Kubernetes client reads only the
/// in-cluster files, so it runs in a private mount namespace whose /run holds them.
async fn admission_autocert(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let n = ctx.opts.pods;
    let env = &ctx.env;
    // Whether kube-apiserver still takes autocert's documented registration at all.
    let probe: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": format!("bench-v1beta1-probe-{}", ctx.suffix)},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"service": {"name": "autocert", "namespace": "step", "path": "/mutate"},
                             "caBundle": base64(env.root_pem()?.as_bytes())},
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
    let autocert = match env.tool("autocert-controller") {
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
    // RBAC and a token for its ServiceAccount, as install/03-rbac.yaml grants.
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("autocert".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), &home_ns)
        .create(&PostParams::default(), &sa)
        .await?;
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
    let tr: TokenRequest = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &home_ns)
        .create_subresource("token", "autocert", &PostParams::default(), &tr)
        .await?;
    let token = tr
        .status
        .context("TokenRequest has no status")?
        .token
        .context("TokenRequest has no token")?;
    let dir = env.state.join(format!("bench-autocert-{}", ctx.suffix));
    std::fs::create_dir_all(dir.join("step"))?;
    std::fs::write(dir.join("token"), token)?;
    let cluster_ca = env.state.join("pki/ca.crt");
    std::fs::copy(&cluster_ca, dir.join("ca.crt"))
        .with_context(|| format!("copying {}", cluster_ca.display()))?;
    let kc: Value = serde_json::to_value(kube::config::Kubeconfig::read_from(&env.kubeconfig)?)?;
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .context("kubeconfig has no server")?
        .to_string();
    let host_port = server.trim_start_matches("https://").trim_end_matches('/');
    let (api_host, api_port) = host_port
        .rsplit_once(':')
        .context("server URL without a port")?;
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
    // YAML is a superset of JSON.
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    // The Service the webhook configuration names: ExternalName to localhost (e2e-infra.md §7.6).
    let services = resource("", "v1", "Service", "services");
    apply(&namespaced(&ctx.client, &home_ns, &services), json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "autocert", "namespace": home_ns},
        "spec": {"type": "ExternalName", "externalName": "localhost"},
    })).await?;
    let mwc_name = format!("bench-autocert-{}", ctx.suffix);
    let mwcs = Api::<MutatingWebhookConfiguration>::all(ctx.client.clone());
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mwc_name},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"service": {"name": "autocert", "namespace": home_ns, "port": port, "path": "/mutate"},
                             "caBundle": base64(env.root_pem()?.as_bytes())},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {WEBHOOK_LABEL: format!("autocert-{}", ctx.suffix)}},
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1beta1"],
        }]
    }))?;
    mwcs.create(&PostParams::default(), &mwc).await.context(
        "the apiserver rejected autocert's webhook configuration (admissionReviewVersions v1beta1)",
    )?;

    let sa_dir = "/run/secrets/kubernetes.io/serviceaccount";
    let inner = format!(
        r#"mount -t tmpfs tmpfs /run && mkdir -p {sa_dir} && cp "$BENCH_SA_DIR/token" "$BENCH_SA_DIR/ca.crt" {sa_dir}/ && exec "$@""#
    );
    let dir_s = dir.to_str().context("utf-8")?.to_string();
    let steppath = dir.join("step");
    let mut p = Proc::spawn(
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
        &autocert,
        &[config_path.to_str().context("utf-8")?],
        &[
            ("PROVISIONER_NAME", &env.step_provisioner),
            ("PROVISIONER_KID", &env.step_provisioner_kid),
            ("NAMESPACE", &home_ns),
            ("STEPPATH", steppath.to_str().context("utf-8")?),
            ("KUBERNETES_SERVICE_HOST", api_host),
            ("KUBERNETES_SERVICE_PORT", api_port),
            ("BENCH_SA_DIR", &dir_s),
        ],
    )?;
    let ns = labelled_ns(
        ctx,
        "bench-adm-ac",
        Some(&format!("autocert-{}", ctx.suffix)),
    )
    .await?;
    let warm = warm_up(ctx, &ns, "autocert", &mut p).await;
    if let Err(e) = &warm {
        // Measure what can be measured: the creates still go through the apiserver, which calls
        // the webhook and (failurePolicy Ignore) admits unmutated pods on any webhook failure.
        let apiserver_log =
            std::fs::read_to_string(env.state.join("apiserver.log")).unwrap_or_default();
        let hints: Vec<&str> = apiserver_log
            .lines()
            .filter(|l| l.contains("autocert"))
            .rev()
            .take(5)
            .collect();
        report.notes.push(format!(
            "autocert never injected a pod during warm-up: {e:#}\napiserver log lines naming autocert (newest first):\n{}",
            hints.join("\n")
        ));
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
