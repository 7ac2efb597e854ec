//! The Helm chart (charts/step-operator) and the kustomize tree (config/): they lint, render, pass
//! the apiserver's server-side dry run, and their RBAC is enough — and no more than enough — for
//! the binary: the controller and the webhook run here under the chart's own ServiceAccounts
//! (tokens from the TokenRequest API), so a missing verb fails a test.
//!
//! There is no kubelet: Deployments are created but never run; the tests start the processes
//! with the rendered container args instead.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::chart::*;
use e2e::fixtures::*;
use e2e::operator::{Process, free_port};
use e2e::process::run;
use e2e::{Env, TestNamespace, dump, random_letters, random_suffix, record_secret, wait_for};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const LABEL: &str = "autocert.step.sm";

/// Values for a live install: a StepClusterIssuer created by the chart (password Secret too) and
/// a namespace selector no other test's namespace carries, so the chart's failurePolicy=Fail
/// webhook can never intercept pods of other tests (pod_tls uses `autocert.step.sm=enabled`).
fn live_values(env: &Env, ns: &str, suffix: &str) -> Result<Value> {
    Ok(json!({
        "clusterResourceNamespace": ns,
        "webhook": {"namespaceSelector": {"matchLabels": {LABEL: format!("chart-{suffix}")}}},
        "approver": {"subjects": [{"kind": "ServiceAccount", "name": "approver", "namespace": ns}]},
        "stepClusterIssuer": {
            "create": true,
            "name": format!("chart-{suffix}"),
            "url": env.step_ca_url,
            "caBundle": base64(env.root_pem()?.as_bytes()),
            "provisioner": {"name": env.step_provisioner, "kid": env.step_provisioner_kid, "passwordRef": {"key": "password"}},
            "passwordSecret": {"create": true, "password": env.provisioner_password()?},
        },
    }))
}

fn deployment_by_component<'a>(objs: &'a [Value], component: &str) -> Result<&'a Value> {
    of_kind(objs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
        .with_context(|| format!("the chart rendered no {component} Deployment"))
}

fn fail_on_forbidden(what: &str, log: &str) -> Result<()> {
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains("\"code\":403") || l.contains("code: 403")
        })
        .take(5)
        .collect();
    ensure!(
        bad.is_empty(),
        "{what} was refused an API call under the chart's RBAC (a verb is missing):\n{}",
        bad.join("\n")
    );
    Ok(())
}

async fn cleanup(env: &Env, objs: &[Value]) {
    let refs: Vec<&Value> = objs.iter().collect();
    if let Err(e) = kubectl_objects(
        env,
        &["delete", "--ignore-not-found", "--wait=false"],
        &refs,
    )
    .await
    {
        eprintln!("cleanup failed (harmless: unique names): {e:#}");
    }
}

#[tokio::test]
async fn chart_lint() -> Result<()> {
    let env = Env::load()?;
    let chart = chart_dir();
    let chart = chart.to_str().context("utf-8")?;
    run(&env.tool("helm")?, &["lint", "--strict", chart], &[]).await?;
    let custom = json!({
        "controller": {"replicas": 3},
        "webhook": {"failurePolicy": "Ignore", "replicas": 3},
        "networkPolicy": {"enabled": true},
        "metrics": {"serviceMonitor": {"enabled": true}},
    });
    let (_d, values) = temp_file(&custom.to_string(), "values.yaml")?;
    run(
        &env.tool("helm")?,
        &[
            "lint",
            "--strict",
            chart,
            "-f",
            values.to_str().context("utf-8")?,
        ],
        &[],
    )
    .await?;
    // The schema refuses nonsense with a message naming the key.
    let bad = helm_template(
        &env,
        "so",
        "default",
        &json!({"webhook": {"failurePolicy": "Sometimes"}}),
        &[],
    )
    .await;
    let err = format!(
        "{:#}",
        bad.err().context("an invalid failurePolicy rendered")?
    );
    ensure!(err.contains("failurePolicy"), "{err}");
    // The webhook needs a default issuer.
    let bad = helm_template(
        &env,
        "so",
        "default",
        &json!({"webhook": {"defaultIssuer": ""}, "stepClusterIssuer": {"name": ""}}),
        &[],
    )
    .await;
    let err = format!(
        "{:#}",
        bad.err().context("rendered without a default issuer")?
    );
    ensure!(err.contains("webhook.defaultIssuer"), "{err}");
    Ok(())
}

/// Default and non-default values render and pass `kubectl apply --dry-run=server`, and the
/// default render has the documented shape.
#[tokio::test]
async fn chart_template_server_dry_run() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "chart-dry").await?;
    let release = format!("dry-{}", random_suffix());
    let kubeconfig = env.kubeconfig.to_str().context("utf-8")?.to_string();
    let kubectl = env.tool("kubectl")?;

    let default_yaml = helm_template_with_crds(&env, &release, &ns.name, &json!({})).await?;
    let custom = json!({
        "controller": {"replicas": 3, "extraArgs": ["--issuer-recheck-interval=10m"], "podDisruptionBudget": {"maxUnavailable": 2}},
        "webhook": {"replicas": 3, "failurePolicy": "Ignore", "timeoutSeconds": 5, "allowedNames": ["*.example.com"],
                    "secretNamespaces": ["default"], "service": {"port": 8443}},
        "metrics": {"serviceMonitor": {"enabled": false}},
        "networkPolicy": {"enabled": true, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        "stepClusterIssuer": {"create": true, "name": format!("{release}-issuer"), "url": env.step_ca_url,
            "provisioner": {"name": "e2e", "kid": "kid", "passwordRef": {"key": "password"}},
            "passwordSecret": {"create": true, "password": "not-a-real-password"}},
    });
    let custom_yaml = helm_template(&env, &release, &ns.name, &custom, &[]).await?;
    for (what, yaml) in [("default", &default_yaml), ("custom", &custom_yaml)] {
        let (_d, path) = temp_file(yaml, "rendered.yaml")?;
        run(
            &kubectl,
            &[
                "--kubeconfig",
                &kubeconfig,
                "apply",
                "--dry-run=server",
                "-f",
                path.to_str().context("utf-8")?,
            ],
            &[],
        )
        .await
        .with_context(|| format!("server dry-run of the {what} render"))?;
    }
    // The ServiceMonitor renders when asked, but its CRD (Prometheus Operator) is not installed
    // in the test cluster, so it is checked here without a dry run.
    let sm = helm_template(
        &env,
        &release,
        &ns.name,
        &json!({"metrics": {"serviceMonitor": {"enabled": true}}}),
        &[],
    )
    .await?;
    ensure!(
        sm.contains("kind: ServiceMonitor") && sm.contains("port: metrics"),
        "no ServiceMonitor rendered"
    );

    // The default render, object by object.
    let objs = objects(
        &env,
        &helm_template(&env, &release, &ns.name, &json!({}), &[]).await?,
    )
    .await?;
    let fullname = format!("{release}-step-operator");
    let mwc = find(&objs, "MutatingWebhookConfiguration", &fullname)?;
    let w = &mwc["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail", "{w}");
    assert_eq!(w["timeoutSeconds"], 10, "{w}");
    assert_eq!(w["sideEffects"], "None", "{w}");
    assert_eq!(w["admissionReviewVersions"], json!(["v1"]), "{w}");
    assert_eq!(w["reinvocationPolicy"], "IfNeeded", "{w}");
    assert!(w.get("objectSelector").is_none(), "{w}");
    assert_eq!(
        w["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(
        w["namespaceSelector"]["matchLabels"],
        json!({LABEL: "enabled"})
    );
    assert_eq!(
        w["namespaceSelector"]["matchExpressions"],
        json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [ns.name]}])
    );
    for component in ["controller", "webhook"] {
        let d = deployment_by_component(&objs, component)?;
        assert_eq!(d["spec"]["replicas"], 2, "{component}");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(pod["serviceAccountName"], format!("{fullname}-{component}"));
        let c = &pod["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{component}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{component}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{component}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        let env_names: Vec<&str> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(
            env_names.contains(&"POD_NAME") && env_names.contains(&"POD_NAMESPACE"),
            "{env_names:?}"
        );
        assert!(
            c["resources"]["requests"].is_object(),
            "{component} has no resource requests"
        );
    }
    assert_eq!(of_kind(&objs, "PodDisruptionBudget").len(), 2);
    let approver = find(&objs, "ClusterRoleBinding", &format!("{fullname}-approver"))?;
    assert_eq!(
        approver["subjects"],
        json!([{"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cert-manager"}])
    );
    ensure!(
        of_kind(&objs, "ServiceMonitor").is_empty() && of_kind(&objs, "NetworkPolicy").is_empty(),
        "ServiceMonitor and NetworkPolicy must be off by default"
    );
    ns.delete().await
}

/// The rendered chart installed as is: the webhook configuration points at the webhook Service
/// and the path the webhook serves, the Service at the container's https port; and the RBAC
/// boundaries hold (SubjectAccessReviews).
#[tokio::test]
async fn chart_installed_objects_match_and_rbac_is_bounded() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "chart-inst").await?;
    let suffix = random_suffix();
    let release = format!("inst-{suffix}");
    let fullname = format!("{release}-step-operator");
    // Defaults, except a namespace selector nobody matches (failurePolicy stays Fail).
    let values = json!({"webhook": {"namespaceSelector": {"matchLabels": {LABEL: format!("chart-{suffix}")}}}});
    let objs = objects(
        &env,
        &helm_template(&env, &release, &ns.name, &values, &[]).await?,
    )
    .await?;
    let refs: Vec<&Value> = objs.iter().collect();
    kubectl_objects(
        &env,
        &["apply", "--server-side", "--field-manager=helm"],
        &refs,
    )
    .await?;

    let result = async {
        let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get(&fullname)
            .await?;
        let hook = mwc
            .webhooks
            .clone()
            .unwrap_or_default()
            .into_iter()
            .next()
            .context("no webhook")?;
        let svc_ref = hook
            .client_config
            .service
            .clone()
            .context("clientConfig has no service")?;
        let svc = Api::<Service>::namespaced(client.clone(), &svc_ref.namespace)
            .get(&svc_ref.name)
            .await
            .with_context(|| {
                format!(
                    "the webhook configuration names Service {}/{}, which the chart did not create",
                    svc_ref.namespace, svc_ref.name
                )
            })?;
        assert_eq!(svc_ref.namespace, ns.name);
        assert_eq!(
            svc_ref.path.as_deref(),
            Some("/mutate"),
            "the webhook serves POST /mutate"
        );
        let port = svc
            .spec
            .clone()
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .into_iter()
            .find(|p| Some(p.port) == svc_ref.port)
            .with_context(|| {
                format!(
                    "Service {} has no port {:?}: {}",
                    svc_ref.name,
                    svc_ref.port,
                    dump(&svc)
                )
            })?;
        let target = port.target_port.clone().context("no targetPort")?;
        let target = serde_json::to_value(&target)?;
        let deployment = deployment_by_component(&objs, "webhook")?;
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let https = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == target || p["containerPort"] == target)
            .with_context(|| {
                format!(
                    "the Service's targetPort {target} is no port of the webhook container: {}",
                    container["ports"]
                )
            })?;
        let listen = container_args(deployment, &[])?
            .into_iter()
            .find_map(|a| a.strip_prefix("--listen-addr=").map(str::to_string))
            .context("no --listen-addr")?;
        assert_eq!(
            listen.rsplit(':').next().map(str::to_string),
            Some(https["containerPort"].to_string()),
            "the container port named https must be the port the webhook listens on"
        );
        // The serving certificate is for <--service-name>.<namespace>.svc: that must be this Service.
        let args = container_args(deployment, &[])?;
        ensure!(
            args.contains(&format!("--service-name={}", svc_ref.name)),
            "{args:?}"
        );
        ensure!(
            args.contains(&format!("--webhook-config-name={fullname}")),
            "{args:?}"
        );
        // The metrics Service reaches both components' admin ports by name.
        let metrics = Api::<Service>::namespaced(client.clone(), &ns.name)
            .get(&format!("{fullname}-metrics"))
            .await?;
        let mport = metrics.spec.and_then(|s| s.ports).unwrap_or_default();
        assert_eq!(
            serde_json::to_value(&mport[0].target_port)?,
            json!("metrics")
        );
        for component in ["controller", "webhook"] {
            let d = deployment_by_component(&objs, component)?;
            let ports = &d["spec"]["template"]["spec"]["containers"][0]["ports"];
            ensure!(
                ports
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "metrics"),
                "{component}: {ports}"
            );
        }

        // Approver: cert-manager/cert-manager may approve requests for any step issuer.
        for (plural, issuer) in [("stepclusterissuers", "x".to_string()), ("stepissuers", format!("{}.x", ns.name))] {
            ensure!(approver_may_approve(&client, "cert-manager", "cert-manager", plural, &issuer).await?,
                "cert-manager/cert-manager may not approve signers {plural}.certmanager.step.sm/{issuer}");
        }
        let controller_sa = format!("{fullname}-controller");
        let webhook_sa = format!("{fullname}-webhook");
        let denied = [
            // Security review M5: no Secret list/watch unless controller.watchSecrets is set.
            (
                controller_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "list",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "watch",
                    namespace: &ns.name,
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "create",
                    namespace: &ns.name,
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "delete",
                    namespace: &ns.name,
                    name: "x",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "update",
                    namespace: &ns.name,
                    name: "x",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "admissionregistration.k8s.io",
                    resource: "mutatingwebhookconfigurations",
                    verb: "patch",
                    name: "other",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "admissionregistration.k8s.io",
                    resource: "mutatingwebhookconfigurations",
                    verb: "patch",
                    name: &fullname,
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "cert-manager.io",
                    resource: "signers",
                    verb: "approve",
                    name: "stepclusterissuers.certmanager.step.sm/x",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "coordination.k8s.io",
                    resource: "leases",
                    verb: "patch",
                    namespace: &ns.name,
                    name: "someone-elses-lease",
                    ..Default::default()
                },
            ),
            (
                webhook_sa.as_str(),
                Access {
                    group: "admissionregistration.k8s.io",
                    resource: "mutatingwebhookconfigurations",
                    verb: "patch",
                    name: "other",
                    ..Default::default()
                },
            ),
            (
                webhook_sa.as_str(),
                Access {
                    group: "admissionregistration.k8s.io",
                    resource: "mutatingwebhookconfigurations",
                    verb: "create",
                    ..Default::default()
                },
            ),
            (
                webhook_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "get",
                    namespace: "default",
                    name: "x",
                    ..Default::default()
                },
            ),
            (
                webhook_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "list",
                    namespace: &ns.name,
                    ..Default::default()
                },
            ),
            (
                webhook_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "create",
                    namespace: &ns.name,
                    ..Default::default()
                },
            ),
            // Pod certificates: our signer names only.
            (
                controller_sa.as_str(),
                Access {
                    group: "certificates.k8s.io",
                    resource: "signers",
                    verb: "sign",
                    name: "kubernetes.io/kube-apiserver-client-pod",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "certificates.k8s.io",
                    resource: "signers",
                    verb: "attest",
                    name: "example.com/other",
                    ..Default::default()
                },
            ),
        ];
        for (sa, access) in &denied {
            ensure!(
                !service_account_can(&client, &ns.name, sa, access).await?,
                "{sa} may {} {}/{} {:?} in {:?}: the chart grants too much",
                access.verb,
                access.group,
                access.resource,
                access.name,
                access.namespace
            );
        }
        let allowed = [
            (
                controller_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "get",
                    namespace: "default",
                    name: "x",
                    ..Default::default()
                },
            ),
            (
                webhook_sa.as_str(),
                Access {
                    group: "admissionregistration.k8s.io",
                    resource: "mutatingwebhookconfigurations",
                    verb: "patch",
                    name: &fullname,
                    ..Default::default()
                },
            ),
            (
                webhook_sa.as_str(),
                Access {
                    group: "",
                    resource: "secrets",
                    verb: "get",
                    namespace: &ns.name,
                    name: "x",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "certificates.k8s.io",
                    resource: "signers",
                    verb: "sign",
                    // The apiserver asks for the signer name and for `<domain>/*`, literally:
                    // RBAC resource names do not glob.
                    name: "stepclusterissuers.certmanager.step.sm/*",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "certificates.k8s.io",
                    resource: "signers",
                    verb: "attest",
                    name: "stepclusterissuers.certmanager.step.sm/*",
                    ..Default::default()
                },
            ),
            (
                controller_sa.as_str(),
                Access {
                    group: "certificates.k8s.io",
                    resource: "podcertificaterequests",
                    subresource: "status",
                    verb: "patch",
                    namespace: "default",
                    name: "x",
                },
            ),
        ];
        for (sa, access) in &allowed {
            ensure!(
                service_account_can(&client, &ns.name, sa, access).await?,
                "{sa} may not {} {}/{} {:?}",
                access.verb,
                access.group,
                access.resource,
                access.name
            );
        }
        // The same question as an operator would ask it.
        let as_controller = format!("--as=system:serviceaccount:{}:{controller_sa}", ns.name);
        let (_, answer) = kubectl_answer(&env, &["auth", "can-i", "list", "secrets", "-A", &as_controller]).await?;
        ensure!(answer.trim() == "no", "kubectl auth can-i list secrets -A {as_controller}: {answer}");
        webhook_may_change_only_its_ca_bundle(&env, &client, &ns.name, &webhook_sa, &fullname, &suffix).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    cleanup(&env, &objs).await;
    result?;
    ns.delete().await
}

/// `step-operator controller` with the chart's controller ServiceAccount and its rendered args:
/// it wins the Lease, makes the chart's StepClusterIssuer Ready, issues a Certificate, reports
/// Events, and notices a password rotation through its Secret watch (`controller.watchSecrets`).
#[tokio::test]
async fn chart_controller_identity_issues_a_certificate() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "chart-ctl").await?;
    let app = TestNamespace::create(&client, "chart-ctl-app").await?;
    let suffix = random_suffix();
    let release = format!("ctl-{suffix}");
    let fullname = format!("{release}-step-operator");
    let mut values = live_values(&env, &ns.name, &suffix)?;
    // The opt-in Secret watch, and the RBAC it brings (list+watch), under test here.
    values["controller"] = json!({"watchSecrets": true});
    let objs = objects(
        &env,
        &helm_template(&env, &release, &ns.name, &values, &[]).await?,
    )
    .await?;
    let refs: Vec<&Value> = objs.iter().collect();
    kubectl_objects(
        &env,
        &["apply", "--server-side", "--field-manager=helm"],
        &refs,
    )
    .await?;

    let result = async {
        let dir = tempfile::tempdir()?;
        let kubeconfig = service_account_kubeconfig(&env, &client, &ns.name, &format!("{fullname}-controller"), dir.path()).await?;
        let deployment = deployment_by_component(&objs, "controller")?;
        let args = container_args(deployment, &["--admin-addr"])?;
        ensure!(args.iter().any(|a| a == "--leader-elect=true"), "{args:?}");
        ensure!(args.iter().any(|a| a == "--watch-secrets=true"), "{args:?}");
        let pod_name = format!("{fullname}-controller-{suffix}");
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Process::start(&env, "chart-controller", &refs, &[
            ("KUBECONFIG", kubeconfig.to_str().context("utf-8")?),
            ("POD_NAMESPACE", &ns.name),
            ("POD_NAME", &pod_name),
        ])?;
        p.wait_ready(Duration::from_secs(60)).await?;
        let log = p.log.display().to_string();

        let leases = Api::<Lease>::namespaced(client.clone(), &ns.name);
        wait_for("the controller to hold its Lease", Duration::from_secs(60),
            async || Ok(leases.get_opt("step-operator-controller").await?
                .filter(|l| l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(pod_name.as_str()))
                .map(|_| ())),
            async || format!("{}\n{}", dump(&leases.get_opt("step-operator-controller").await.ok().flatten()), p.log_tail()),
        ).await?;

        let issuer = format!("chart-{suffix}");
        let issuers = cluster(&client, &step_cluster_issuers());
        wait_ready_condition(&issuers, &issuer, "True", Some("Verified"), Duration::from_secs(60), &log).await?;

        // A Certificate issued by this process. Another step-operator controller running against
        // the shared cluster without leader election (issuer_ tests of another checkout) watches
        // every CertificateRequest too and may sign first; then this process rightly does
        // nothing, so try again with a new Certificate (in a `make test` run, binaries run one
        // after another and the first attempt is ours).
        let certs = namespaced(&client, &app.name, &certificates());
        let requests = namespaced(&client, &app.name, &certificate_requests());
        let events = Api::<Event>::namespaced(client.clone(), &app.name);
        let mut signed_by_us = false;
        let mut stolen = Vec::new();
        for attempt in 1..=5 {
            let name = format!("web-{attempt}");
            apply(&certs, json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": name},
                "spec": {"secretName": format!("{name}-tls"), "dnsNames": [format!("{name}.{}.svc", app.name)],
                         "issuerRef": {"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": issuer}},
            })).await?;
            wait_for(&format!("Certificate {name} to become Ready"), Duration::from_secs(90),
                async || Ok(certs.get_opt(&name).await?.filter(|c| is_true(c, "Ready")).map(|_| ())),
                async || format!("{}\nrequests: {}\n{}", dump(&certs.get_opt(&name).await.ok().flatten()),
                    dump(&requests.list(&Default::default()).await.map(|l| l.items).unwrap_or_default()), p.log_tail()),
            ).await?;
            // The Issued Event of this Certificate's request, and who reported it.
            let prefix = format!("{name}-");
            let reporters = wait_for(&format!("an Issued Event for Certificate {name}"), Duration::from_secs(30),
                async || {
                    let found: Vec<String> = events.list(&Default::default()).await?.items.into_iter()
                        .filter(|e| e.reason.as_deref() == Some("Issued")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()).is_some_and(|n| n.starts_with(&prefix)))
                        .filter_map(|e| e.reporting_instance)
                        .collect();
                    Ok((!found.is_empty()).then_some(found))
                },
                async || format!("{}\n{}", dump(&events.list(&Default::default()).await.ok().map(|l| l.items)), p.log_tail()),
            ).await?;
            if reporters.contains(&pod_name) {
                signed_by_us = true;
                break;
            }
            stolen.push(format!("{name}: {reporters:?}"));
        }
        ensure!(signed_by_us,
            "another step-operator controller signed every attempt first ({stolen:?}); stop other e2e runs against this cluster and retry");

        // Rotate the password to a wrong one: only the Secret watch (list+watch, granted by
        // controller.watchSecrets) can notice it before the 5-minute recheck.
        let wrong = format!("wrong-password-{}", random_letters(20));
        record_secret(&env, &wrong)?;
        password_secret(&client, &ns.name, &format!("{fullname}-provisioner-password"), "password", &wrong).await?;
        wait_ready_condition(&issuers, &issuer, "False", None, Duration::from_secs(60), &log).await?;

        // The configured approver subject (approver.subjects) may approve this issuer's
        // requests; a ServiceAccount the chart does not name may not.
        ensure!(approver_may_approve(&client, &ns.name, "approver", "stepclusterissuers", &issuer).await?,
            "the approver.subjects ServiceAccount may not approve {issuer}");
        ensure!(!approver_may_approve(&client, &ns.name, "nobody", "stepclusterissuers", &issuer).await?,
            "an unrelated ServiceAccount may approve {issuer}");

        fail_on_forbidden("the controller", &p.logs())?;
        ensure!(p.is_running(), "the controller exited: {}", p.log_tail());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    cleanup(&env, &objs).await;
    result?;
    app.delete().await?;
    ns.delete().await
}

/// `step-operator webhook` with the chart's webhook ServiceAccount and rendered args, reached by
/// the apiserver through the chart's MutatingWebhookConfiguration (Service mode): it obtains its
/// serving certificate, patches its own configuration's caBundle, admits an annotated pod, and
/// answers /bootstrap for it.
#[tokio::test]
async fn chart_webhook_identity_admits_and_bootstraps() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "chart-wh").await?;
    let suffix = random_suffix();
    let app = TestNamespace::create_labelled(
        &client,
        "chart-wh-app",
        BTreeMap::from([(LABEL.to_string(), format!("chart-{suffix}"))]),
    )
    .await?;
    let release = format!("wh-{suffix}");
    let fullname = format!("{release}-step-operator");
    let values = live_values(&env, &ns.name, &suffix)?;
    let objs = objects(
        &env,
        &helm_template(&env, &release, &ns.name, &values, &[]).await?,
    )
    .await?;
    let service_name = format!("{fullname}-webhook");
    let port = free_port()?;

    // Everything as rendered, except: the webhook Service becomes an ExternalName to localhost
    // (there is no kube-proxy; the apiserver resolves ExternalName to externalName:port), and
    // the configuration's port is the local listen port. Name, path, selectors, failurePolicy
    // and the caBundle the webhook maintains are the chart's.
    let mut rest: Vec<&Value> = objs
        .iter()
        .filter(|o| !(o["kind"] == "Service" && o["metadata"]["name"] == service_name.as_str()))
        .filter(|o| o["kind"] != "MutatingWebhookConfiguration")
        .collect();
    let mut mwc = find(&objs, "MutatingWebhookConfiguration", &fullname)?.clone();
    ensure!(
        mwc["webhooks"][0]["clientConfig"]["service"]["name"] == service_name.as_str(),
        "{mwc}"
    );
    mwc["webhooks"][0]["clientConfig"]["service"]["port"] = json!(port);
    let external = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name, "namespace": ns.name},
        "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"name": "https", "port": port}]},
    });
    rest.push(&mwc);
    rest.push(&external);
    kubectl_objects(
        &env,
        &["apply", "--server-side", "--field-manager=helm"],
        &rest,
    )
    .await?;

    let result = async {
        let dir = tempfile::tempdir()?;
        let kubeconfig = service_account_kubeconfig(&env, &client, &ns.name, &format!("{fullname}-webhook"), dir.path()).await?;
        let deployment = deployment_by_component(&objs, "webhook")?;
        let mut args = container_args(deployment, &["--admin-addr", "--listen-addr"])?;
        args.push(format!("--listen-addr=127.0.0.1:{port}"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Process::start(&env, "chart-webhook", &refs, &[
            ("KUBECONFIG", kubeconfig.to_str().context("utf-8")?),
            ("POD_NAMESPACE", &ns.name),
            ("POD_NAME", &format!("{fullname}-webhook-{suffix}")),
        ])?;
        p.wait_ready(Duration::from_secs(60)).await?;

        let root = env.root_pem()?;
        let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
        wait_for("the webhook to set its caBundle (get+patch on its own configuration)", Duration::from_secs(30),
            async || Ok(configs.get(&fullname).await?.webhooks.unwrap_or_default().first()
                .and_then(|w| w.client_config.ca_bundle.clone())
                .filter(|b| String::from_utf8_lossy(&b.0).trim() == root.trim())
                .map(|_| ())),
            async || p.log_tail(),
        ).await?;

        let sa = ServiceAccount { metadata: ObjectMeta { name: Some("app".into()), ..Default::default() }, ..Default::default() };
        Api::<ServiceAccount>::namespaced(client.clone(), &app.name).create(&PostParams::default(), &sa).await?;
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "annotations": {"autocert.step.sm/name": format!("web.{}.svc", app.name)}},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "nginx"}]},
        }))?;
        let pods = Api::<Pod>::namespaced(client.clone(), &app.name);
        let created = wait_for("the pod create to pass the chart's webhook", Duration::from_secs(30),
            async || match pods.create(&PostParams::default(), &pod).await {
                Ok(p) => Ok(Some(p)),
                Err(kube::Error::Api(s)) if s.message.contains("failed calling webhook") => Ok(None),
                Err(e) => Err(e.into()),
            },
            async || p.log_tail(),
        ).await?;
        assert_eq!(created.annotations().get("autocert.step.sm/status").map(String::as_str), Some("injected"),
            "the pod was not mutated: {}", dump(&created));

        // /bootstrap with the pod's projected token (TokenReview, pod get, issuer get, Secret get).
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["step-operator".into()]),
                expiration_seconds: Some(600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()), kind: Some("Pod".into()),
                    name: Some(created.name_any()), uid: created.uid(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), &app.name)
            .create_subresource("token", "app", &PostParams::default(), &request).await?;
        let token = answer.status.and_then(|s| s.token).context("no token")?;
        record_secret(&env, &token)?;
        let host = format!("{service_name}.{}.svc", ns.name);
        let resolve = format!("{host}:{port}:127.0.0.1");
        let url = format!("https://{host}:{port}/bootstrap");
        let auth = format!("Authorization: Bearer {token}");
        let out = run(std::path::Path::new("curl"), &[
            "-sS", "-X", "POST", "--resolve", &resolve, "--cacert", env.step_ca_root.to_str().context("utf-8")?,
            "-H", &auth, "-d", "{}", "-w", "\n%{http_code}", &url,
        ], &[]).await?;
        let text = String::from_utf8(out.stdout)?;
        let (body, code) = text.rsplit_once('\n').context("curl output")?;
        if code.trim() != "200" {
            bail!("/bootstrap answered {code}: {body}\nwebhook log:\n{}", p.log_tail());
        }
        let body: Value = serde_json::from_str(body)?;
        ensure!(body["token"].is_string() && body["rootPem"].is_string(), "{body}");
        if let Some(one_time) = body["token"].as_str() {
            record_secret(&env, one_time)?;
        }

        fail_on_forbidden("the webhook", &p.logs())?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // The configuration goes first: it must never outlive the test.
    let _ = configs_delete(&client, &fullname).await;
    let mut all = objs.clone();
    all.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service_name, "namespace": ns.name}}));
    cleanup(&env, &all).await;
    result?;
    app.delete().await?;
    ns.delete().await
}

/// `kubectl <args>` with the test's kubeconfig: whether it succeeded, and what it printed
/// (`kubectl auth can-i` says "no" with exit status 1, and a refused patch fails).
async fn kubectl_answer(env: &Env, args: &[&str]) -> Result<(bool, String)> {
    let out = tokio::process::Command::new(env.tool("kubectl")?)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Security review M5: RBAC lets the webhook's ServiceAccount patch its own configuration; the
/// chart's ValidatingAdmissionPolicy lets that patch change the caBundle and nothing else.
/// Checked as that ServiceAccount (impersonated) on the configuration the chart installed.
async fn webhook_may_change_only_its_ca_bundle(
    env: &Env,
    client: &Client,
    ns: &str,
    webhook_sa: &str,
    config: &str,
    suffix: &str,
) -> Result<()> {
    let as_webhook = format!("--as=system:serviceaccount:{ns}:{webhook_sa}");
    let patch = |ops: Value| {
        let ops = ops.to_string();
        let as_webhook = as_webhook.clone();
        async move {
            kubectl_answer(
                env,
                &[
                    "patch",
                    "mutatingwebhookconfiguration",
                    config,
                    "--type=json",
                    "-p",
                    &ops,
                    &as_webhook,
                ],
            )
            .await
        }
    };
    // The apiserver loads a new policy within a moment of its creation. Each attempt widens to
    // a selector of its own (that no namespace carries, so nothing is intercepted meanwhile): a
    // patch that repeated an earlier, accepted value would change nothing and pass the policy.
    let attempt = std::sync::atomic::AtomicU32::new(0);
    let refusal = wait_for(
        "the policy to refuse the webhook's ServiceAccount a namespaceSelector change",
        Duration::from_secs(30),
        async || {
            let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let value = format!("widened-{suffix}-{n}");
            let selector = json!({"matchLabels": {LABEL: value}});
            let (ok, out) = patch(json!([{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": selector}])).await?;
            Ok((!ok).then_some((out, value)))
        },
        async || "every patch of /webhooks/0/namespaceSelector was accepted".to_string(),
    )
    .await?;
    let (refusal, refused_value) = refusal;
    ensure!(
        refusal.contains("ValidatingAdmissionPolicy")
            && refusal.contains("may change only webhooks[*].clientConfig.caBundle"),
        "refused, but not by the chart's policy: {refusal}"
    );
    let (ok, out) = patch(json!([{"op": "add", "path": "/webhooks/0/objectSelector", "value": {}}, {"op": "replace", "path": "/webhooks/0/rules/0/resources", "value": ["*"]}])).await?;
    ensure!(
        !ok,
        "the webhook's ServiceAccount widened its rules and objectSelector: {out}"
    );
    let (ok, out) =
        patch(json!([{"op": "add", "path": "/metadata/labels/widened", "value": "yes"}])).await?;
    ensure!(
        !ok,
        "the webhook's ServiceAccount changed its configuration's labels: {out}"
    );

    // What the webhook itself does (src/webhook/tls.rs): set every caBundle.
    let bundle =
        base64(b"-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n");
    let (ok, out) =
        patch(json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]))
            .await?;
    ensure!(
        ok,
        "the webhook's ServiceAccount may not set its caBundle: {out}"
    );
    let now = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(config)
        .await?;
    let hook = now
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .next()
        .context("no webhook")?;
    ensure!(
        hook.client_config.ca_bundle.map(|b| base64(&b.0)) == Some(bundle),
        "the caBundle patch did not land"
    );
    let selector = hook
        .namespace_selector
        .and_then(|s| s.match_labels)
        .and_then(|l| l.get(LABEL).cloned());
    ensure!(
        selector.as_deref() != Some(refused_value.as_str()),
        "the namespaceSelector changed although the policy refused it: {selector:?}"
    );
    Ok(())
}

/// cert-manager's approval check (the webhook's SubjectAccessReviews): `approve` on `signers`
/// named `<plural>.<group>/*` or `<plural>.<group>/<[namespace.]name>`; RBAC matches
/// resourceNames literally, and the chart grants the `/*` form.
async fn approver_may_approve(
    client: &Client,
    ns: &str,
    sa: &str,
    plural: &str,
    issuer: &str,
) -> Result<bool> {
    for name in [
        format!("{plural}.certmanager.step.sm/*"),
        format!("{plural}.certmanager.step.sm/{issuer}"),
    ] {
        let access = Access {
            group: "cert-manager.io",
            resource: "signers",
            verb: "approve",
            name: &name,
            ..Default::default()
        };
        if service_account_can(client, ns, sa, &access).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `target` as a path relative to `from` (kustomize refuses absolute resource paths).
fn relative_to_root(from: &std::path::Path, target: &std::path::Path) -> String {
    let up = from.components().count().saturating_sub(1);
    let mut rel = "../".repeat(up);
    rel.push_str(target.to_string_lossy().trim_start_matches('/'));
    rel
}

async fn configs_delete(client: &Client, name: &str) -> Result<()> {
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(name, &Default::default())
        .await?;
    Ok(())
}

/// `kubectl kustomize config/default` renders, passes a server dry run, matches the chart's
/// default objects kind by kind, and its CRD copies equal crds/.
#[tokio::test]
async fn chart_kustomize_tree_renders() -> Result<()> {
    let env = Env::load()?;
    let root = repo_root();
    for entry in std::fs::read_dir(root.join("crds"))? {
        let path = entry?.path();
        let name = path.file_name().context("name")?;
        let copy = root.join("config/crd/bases").join(name);
        ensure!(
            std::fs::read_to_string(&copy).unwrap_or_default() == std::fs::read_to_string(&path)?,
            "{} differs from {}: run `make generate`",
            copy.display(),
            path.display()
        );
    }
    let kubeconfig = env.kubeconfig.to_str().context("utf-8")?.to_string();
    let kubectl = env.tool("kubectl")?;
    let dir = root.join("config/default");
    let out = run(
        &kubectl,
        &["kustomize", dir.to_str().context("utf-8")?],
        &[],
    )
    .await?;
    let yaml = String::from_utf8(out.stdout)?;
    let objs = objects(&env, &yaml).await?;
    ensure!(
        !of_kind(&objs, "CustomResourceDefinition").is_empty(),
        "config/default has no CRDs"
    );
    // A server dry run needs the namespace to exist: an overlay moves the tree into a fresh one
    // (and drops the Namespace object) instead of touching a shared `step-operator` namespace.
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "chart-kz").await?;
    let overlay = tempfile::tempdir()?;
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {}\nresources:\n  - {}\npatches:\n  - patch: |\n      $patch: delete\n      apiVersion: v1\n      kind: Namespace\n      metadata:\n        name: step-operator\n",
            ns.name,
            relative_to_root(overlay.path(), &dir.canonicalize()?)
        ),
    )?;
    let out = run(
        &kubectl,
        &["kustomize", overlay.path().to_str().context("utf-8")?],
        &[],
    )
    .await?;
    let (_d, path) = temp_file(&String::from_utf8(out.stdout)?, "kustomize.yaml")?;
    run(
        &kubectl,
        &[
            "--kubeconfig",
            &kubeconfig,
            "apply",
            "--dry-run=server",
            "-f",
            path.to_str().context("utf-8")?,
        ],
        &[],
    )
    .await?;
    ns.delete().await?;
    let chart = objects(
        &env,
        &helm_template_with_crds(&env, "step-operator", "step-operator", &json!({})).await?,
    )
    .await?;
    let kinds = |objs: &[Value]| {
        let mut k: Vec<String> = objs
            .iter()
            .filter(|o| o["kind"] != "Namespace")
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        kinds(&objs),
        kinds(&chart),
        "config/default and the chart's default install differ"
    );
    for d in of_kind(&objs, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        let c = find(&chart, "Deployment", name)?;
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["args"],
            c["spec"]["template"]["spec"]["containers"][0]["args"],
            "Deployment {name}: kustomize and chart args differ"
        );
    }
    Ok(())
}
