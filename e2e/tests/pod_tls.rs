//! Pod TLS injection at the API level: the mutating webhook registered in the real apiserver, and
//! the identity-bound `/bootstrap` called the way the injected containers call it. The webhook
//! runs as a process of the test here, so a test can kill it, read its log and call `/bootstrap`
//! with forged or foreign tokens. What the kubelet does with an injected pod (the projected token,
//! the init container and native sidecar, the files, renewal) is proven on the node:
//! tests/node_pods.rs and tests/node_chart.rs.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process, free_port};
use e2e::process::run;
use e2e::{Env, TestNamespace, dump, random_letters, random_suffix, record_secret, wait_for};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const ISSUER: &str = "pod-tls-e2e";
const WEBHOOK_CONFIG: &str = "step-operator-e2e";
const LABEL: &str = "autocert.step.sm";

struct Webhook {
    port: u16,
    log: String,
}

/// One webhook per test binary, registered as MutatingWebhookConfiguration `step-operator-e2e`
/// for namespaces labelled `autocert.step.sm=enabled`.
async fn webhook(env: &Env, client: &Client) -> Result<&'static Webhook> {
    static SHARED: OnceLock<(Webhook, std::sync::Mutex<Process>)> = OnceLock::new();
    static INIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = INIT.lock().await;
    if let Some((w, _)) = SHARED.get() {
        return Ok(w);
    }
    ensure_namespace(client, CLUSTER_RESOURCE_NAMESPACE).await?;
    password_secret(
        client,
        CLUSTER_RESOURCE_NAMESPACE,
        ISSUER,
        "password",
        &env.provisioner_password()?,
    )
    .await?;
    apply(
        &cluster(client, &step_cluster_issuers()),
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
            "metadata": {"name": ISSUER},
            "spec": issuer_spec(env, json!({"name": ISSUER, "key": "password", "namespace": CLUSTER_RESOURCE_NAMESPACE}))?,
        }),
    )
    .await?;
    let port = free_port()?;
    let p = start_webhook(env, client, WEBHOOK_CONFIG, "enabled", port).await?;
    let log = p.log.display().to_string();
    let _ = SHARED.set((Webhook { port, log }, std::sync::Mutex::new(p)));
    SHARED.get().map(|(w, _)| w).context("webhook slot")
}

/// Registers MutatingWebhookConfiguration `config` for namespaces labelled
/// `autocert.step.sm=<label_value>` (without a caBundle), starts a webhook on `port`, and waits
/// until it is ready and has set the caBundle to the step-ca root.
async fn start_webhook(
    env: &Env,
    client: &Client,
    config: &str,
    label_value: &str,
    port: u16,
) -> Result<Process> {
    start_webhook_with(env, client, config, label_value, port, &[]).await
}

/// [`start_webhook`] with extra webhook arguments.
async fn start_webhook_with(
    env: &Env,
    client: &Client,
    config: &str,
    label_value: &str,
    port: u16,
    extra_args: &[&str],
) -> Result<Process> {
    // Registered before the webhook starts and without a caBundle: the webhook fills it in.
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": config},
        "webhooks": [{
            "name": "autocert.step.sm",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {LABEL: label_value}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "reinvocationPolicy": "IfNeeded",
        }]
    }))?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            config,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&mwc),
        )
        .await?;
    let listen = format!("127.0.0.1:{port}");
    let bootstrap_url = format!("https://127.0.0.1:{port}");
    // /bootstrap serves the namespaces this configuration selects, as the chart configures it.
    let namespace_label = format!("{LABEL}={label_value}");
    let mut args = vec![
        "webhook",
        "--listen-addr",
        &listen,
        "--namespace-label",
        &namespace_label,
        "--default-issuer",
        ISSUER,
        "--tls-san",
        "127.0.0.1",
        "--bootstrap-url",
        &bootstrap_url,
        "--webhook-config-name",
        config,
        "--cluster-resource-namespace",
        CLUSTER_RESOURCE_NAMESPACE,
        "--image",
        "step-operator:e2e",
    ];
    args.extend_from_slice(extra_args);
    let mut p = Process::start(
        env,
        "webhook",
        &args,
        &[("POD_NAMESPACE", "step-operator-e2e")],
    )?;
    p.wait_ready(Duration::from_secs(60)).await?;
    // The webhook puts the step-ca root into its own configuration's caBundle.
    let root = env.root_pem()?;
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    wait_for(
        "the webhook to set its caBundle",
        Duration::from_secs(30),
        async || {
            let m = api.get(config).await?;
            let bundle = m
                .webhooks
                .unwrap_or_default()
                .first()
                .and_then(|w| w.client_config.ca_bundle.clone());
            Ok(bundle
                .filter(|b| String::from_utf8_lossy(&b.0).trim() == root.trim())
                .map(|_| ()))
        },
        async || p.log_tail(),
    )
    .await?;
    Ok(p)
}

/// The last `n` lines of a log file, newest first, for failure reports.
fn newest_lines(path: &str, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().rev().take(n).collect::<Vec<_>>().join("\n")
}

/// A namespace the webhook serves, with the ServiceAccount `app` the test pods run as (the
/// ServiceAccount admission plugin refuses pods whose account does not exist).
async fn labelled_namespace(client: &Client, prefix: &str) -> Result<TestNamespace> {
    let ns = TestNamespace::create_labelled(
        client,
        prefix,
        BTreeMap::from([(LABEL.to_string(), "enabled".to_string())]),
    )
    .await?;
    service_account(client, &ns.name).await?;
    Ok(ns)
}

fn pod(name: &str, annotations: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "nginx"}]}
    }))?)
}

/// Creates a pod, retrying briefly while the apiserver's webhook informer catches up.
async fn create_pod(client: &Client, ns: &str, pod: &Pod) -> Result<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    wait_for(
        "the pod create to pass admission",
        Duration::from_secs(20),
        async || match api.create(&PostParams::default(), pod).await {
            Ok(p) => Ok(Some(p)),
            Err(kube::Error::Api(s)) if s.message.contains("failed calling webhook") => Ok(None),
            Err(e) => Err(e.into()),
        },
        async || "webhook not reachable from the apiserver".into(),
    )
    .await
}

/// Pod `name`, admitted asking for its own name `<name>.<ns>.svc`, whose annotations then change
/// to `annotations` (admission runs on create only): what `/bootstrap` must check again.
async fn admitted_then_annotated(
    client: &Client,
    ns: &str,
    name: &str,
    annotations: serde_json::Value,
) -> Result<Pod> {
    let own = json!({"autocert.step.sm/name": format!("{name}.{ns}.svc")});
    let created = create_pod(client, ns, &pod(name, own)?).await?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await?;
    Ok(created)
}

async fn service_account(client: &Client, ns: &str) -> Result<()> {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("app".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What the kubelet would mount at the projected token path for this pod. Recorded for
/// `e2e/check-secrets.sh`.
async fn pod_token(env: &Env, client: &Client, pod: &Pod, audience: &str) -> Result<String> {
    let ns = pod.namespace().unwrap_or_default();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_string()]),
            expiration_seconds: Some(600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_subresource("token", "app", &PostParams::default(), &request)
        .await?;
    let token = answer
        .status
        .and_then(|s| s.token)
        .context("no token in the TokenRequest answer")?;
    record_secret(env, &token)?;
    Ok(token)
}

fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    pod.spec
        .as_ref()?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// The injected container's environment, with the downward-API fields resolved as the kubelet
/// would, and the paths moved into `dir`.
fn injected_env(pod: &Pod, dir: &Path, token: &Path) -> Result<Vec<(String, String)>> {
    let c = container(pod, "autocert-bootstrapper").context("no bootstrapper injected")?;
    let mut out = Vec::new();
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.clone().unwrap_or_default()
    {
        let value = match (
            value,
            value_from.and_then(|v| v.field_ref).map(|f| f.field_path),
        ) {
            (Some(v), _) => v,
            (None, Some(path)) if path == "metadata.name" => pod.name_any(),
            (None, Some(path)) if path == "metadata.namespace" => {
                pod.namespace().unwrap_or_default()
            }
            (None, Some(path)) if path == "metadata.uid" => pod.uid().unwrap_or_default(),
            (None, other) => bail!("unexpected env source for {name}: {other:?}"),
        };
        let value = match name.as_str() {
            "AUTOCERT_CERTS_DIR" => dir.display().to_string(),
            "STEP_OPERATOR_TOKEN_PATH" => token.display().to_string(),
            _ => value,
        };
        out.push((name, value));
    }
    Ok(out)
}

async fn step_inspect(env: &Env, file: &Path) -> Result<serde_json::Value> {
    let step = env.tool("step")?;
    let dir = tempfile::tempdir()?;
    let sp = dir.path().to_str().context("utf-8")?;
    let f = file.to_str().context("utf-8")?;
    let root = env.step_ca_root.to_str().context("utf-8")?;
    run(
        &step,
        &["certificate", "verify", f, "--roots", root],
        &[("STEPPATH", sp)],
    )
    .await?;
    let out = run(
        &step,
        &["certificate", "inspect", "--format", "json", f],
        &[("STEPPATH", sp)],
    )
    .await?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn bootstrap_call(
    env: &Env,
    w: &Webhook,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value)> {
    let url = format!("https://127.0.0.1:{}/bootstrap", w.port);
    let root = env.step_ca_root.to_str().context("utf-8")?;
    let mut args = vec![
        "-sS",
        "-X",
        "POST",
        "--cacert",
        root,
        "-d",
        "{}",
        "-w",
        "\n%{http_code}",
        &url,
    ];
    let header;
    if let Some(t) = token {
        header = format!("Authorization: Bearer {t}");
        args.extend(["-H", header.as_str()]);
    }
    let out = run(Path::new("curl"), &args, &[]).await?;
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').context("curl output")?;
    Ok((
        code.trim().parse()?,
        serde_json::from_str(body).unwrap_or(json!({"raw": body})),
    ))
}

#[tokio::test]
async fn pod_tls_injects_annotated_pods() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    webhook(&env, &client).await?;
    let ns = labelled_namespace(&client, "pod-tls-inject").await?;
    let name = format!("web.{}.svc", ns.name);
    let created = create_pod(
        &client,
        &ns.name,
        &pod("web", json!({"autocert.step.sm/name": name, "autocert.step.sm/sans": format!("{name}, web.{}", ns.name), "autocert.step.sm/duration": "1h"}))?,
    )
    .await?;
    let stored = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .get("web")
        .await?;
    assert_eq!(
        stored
            .annotations()
            .get("autocert.step.sm/status")
            .map(String::as_str),
        Some("injected"),
        "{}",
        dump(&created)
    );
    let spec = stored.spec.clone().context("spec")?;
    let inits: Vec<_> = spec.init_containers.clone().unwrap_or_default();
    let names: Vec<_> = inits.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["autocert-bootstrapper", "autocert-renewer"],
        "{}",
        dump(&spec)
    );
    assert_eq!(inits[0].args.clone().unwrap_or_default(), ["bootstrap"]);
    assert_eq!(inits[1].args.clone().unwrap_or_default(), ["renew"]);
    assert_eq!(
        inits[1].restart_policy.as_deref(),
        Some("Always"),
        "the renewer must be a native sidecar"
    );
    for c in &inits {
        let sc = c.security_context.clone().context("no securityContext")?;
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
    }
    let app = &spec.containers[0];
    let mount = app
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.mount_path == "/var/run/autocert.step.sm")
        .context("app has no certs mount")?;
    assert_eq!(mount.read_only, Some(true));
    let volumes: Vec<_> = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert!(
        volumes.contains(&"certs".to_string())
            && volumes.contains(&"step-operator-token".to_string()),
        "{volumes:?}"
    );
    ns.delete().await
}

#[tokio::test]
async fn pod_tls_leaves_unlabelled_namespaces_and_plain_pods_alone() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    webhook(&env, &client).await?;
    let plain_ns = TestNamespace::create(&client, "pod-tls-plain").await?;
    service_account(&client, &plain_ns.name).await?;
    let name = format!("web.{}.svc", plain_ns.name);
    let p = Api::<Pod>::namespaced(client.clone(), &plain_ns.name)
        .create(
            &PostParams::default(),
            &pod("web", json!({"autocert.step.sm/name": name}))?,
        )
        .await?;
    assert!(
        p.spec.and_then(|s| s.init_containers).is_none(),
        "a pod in an unlabelled namespace was mutated"
    );
    let labelled = labelled_namespace(&client, "pod-tls-noannot").await?;
    let p = create_pod(&client, &labelled.name, &pod("plain", json!({}))?).await?;
    assert!(
        p.spec.and_then(|s| s.init_containers).is_none(),
        "a pod without the annotation was mutated"
    );
    plain_ns.delete().await?;
    labelled.delete().await
}

#[tokio::test]
async fn pod_tls_denies_bad_annotations_with_a_fix() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let w = webhook(&env, &client).await?;
    let ns = labelled_namespace(&client, "pod-tls-deny").await?;
    let own = format!("web.{}.svc", ns.name);
    let cases = [
        (
            "baddur",
            json!({"autocert.step.sm/name": own, "autocert.step.sm/duration": "1d"}),
            "duration",
        ),
        (
            "foreign",
            json!({"autocert.step.sm/name": "api.kube-system.svc"}),
            "api.kube-system.svc",
        ),
        (
            "owner",
            json!({"autocert.step.sm/name": own, "autocert.step.sm/owner": "root"}),
            "owner",
        ),
    ];
    let api = Api::<Pod>::namespaced(client.clone(), &ns.name);
    for (name, annotations, needle) in cases {
        // Wait until the webhook answers at all, then expect the denial. An admitted pod, or
        // any refusal other than our webhook's denial, ends the wait at once.
        let err = wait_for(
            &format!("pod {name} to be denied"),
            Duration::from_secs(20),
            async || match api
                .create(&PostParams::default(), &pod(name, annotations.clone())?)
                .await
            {
                Ok(p) => bail!("pod {name} was admitted: {}", dump(&p)),
                Err(kube::Error::Api(s)) if s.message.contains("failed calling webhook") => {
                    Ok(None)
                }
                Err(kube::Error::Api(s))
                    if s.message
                        .contains(r#"admission webhook "autocert.step.sm" denied the request"#) =>
                {
                    Ok(Some(s))
                }
                Err(e) => Err(anyhow::Error::new(e).context(format!(
                    "pod {name} was refused, but not by the webhook's denial"
                ))),
            },
            async || format!("webhook log (newest first):\n{}", newest_lines(&w.log, 20)),
        )
        .await?;
        assert!(
            err.message.contains("autocert.step.sm") && err.message.contains(needle),
            "{name}: {}",
            err.message
        );
    }
    ns.delete().await
}

/// The full flow: admission, TokenRequest, bootstrap, renew. Also checks the file modes.
/// A refusal from /bootstrap: the status, the stable reason, and no token anywhere in the body.
fn assert_refused(
    what: &str,
    (code, body): &(u16, serde_json::Value),
    codes: &[u16],
    reason: Option<&str>,
    token: Option<&str>,
) {
    assert!(
        codes.contains(code),
        "{what}: got {code}, want one of {codes:?}: {body}"
    );
    if let Some(reason) = reason {
        assert_eq!(body["reason"].as_str(), Some(reason), "{what}: {body}");
    }
    assert!(
        body["token"].is_null(),
        "{what}: a refusal must carry no token: {body}"
    );
    if let Some(token) = token {
        assert!(
            !body.to_string().contains(token),
            "{what}: the refusal echoes the presented token"
        );
    }
}

#[tokio::test]
async fn pod_tls_bootstrap_refusals() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let w = webhook(&env, &client).await?;
    // Every token this test presents or receives; none may reach the webhook's log.
    let mut tokens: Vec<(&str, String)> = Vec::new();

    // No token at all.
    let refused = bootstrap_call(&env, w, None).await?;
    assert_refused("no token", &refused, &[401], Some("MissingToken"), None);

    // A namespace that never opted in (security review M2): a hand-made pod there, with a
    // projected token of the right audience and its own names, gets nothing.
    let stray_ns =
        TestNamespace::create(&client, &format!("pod-tls-stray-{}", random_suffix())).await?;
    service_account(&client, &stray_ns.name).await?;
    let stray = Api::<Pod>::namespaced(client.clone(), &stray_ns.name)
        .create(
            &PostParams::default(),
            &pod(
                "stray",
                json!({"autocert.step.sm/name": format!("stray.{}.svc", stray_ns.name)}),
            )?,
        )
        .await?;
    let stray_token = pod_token(&env, &client, &stray, "step-operator").await?;
    let refused = bootstrap_call(&env, w, Some(&stray_token)).await?;
    assert_refused(
        "a pod in a namespace without the webhook's label",
        &refused,
        &[403],
        Some("NamespaceNotEnabled"),
        Some(&stray_token),
    );
    tokens.push(("the stray pod's token", stray_token));

    let ns = labelled_namespace(&client, "pod-tls-refuse").await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let good = create_pod(
        &client,
        &ns.name,
        &pod(
            "good",
            json!({"autocert.step.sm/name": format!("good.{}.svc", ns.name)}),
        )?,
    )
    .await?;
    // Admission refuses a forbidden name, so the pod asks for its own and then changes its
    // annotation: /bootstrap reads the live annotations and must refuse.
    let evil = admitted_then_annotated(
        &client,
        &ns.name,
        "evil",
        json!({"autocert.step.sm/name": "api.kube-system.svc"}),
    )
    .await?;

    let evil_token = pod_token(&env, &client, &evil, "step-operator").await?;
    let refused = bootstrap_call(&env, w, Some(&evil_token)).await?;
    assert_refused(
        "a pod asking for a name outside its namespace",
        &refused,
        &[403],
        Some("NameNotAllowed"),
        Some(&evil_token),
    );
    tokens.push(("the evil pod's token", evil_token));

    // An issuer this namespace may not use (its spec.policy.namespaces): refused before its
    // password is read; its Secret does not even exist, so reading it would answer
    // IssuerNotReady instead.
    let restricted = format!("pod-tls-restricted-{}", random_suffix());
    let mut spec = issuer_spec(
        &env,
        json!({"name": "no-such-secret", "key": "password", "namespace": CLUSTER_RESOURCE_NAMESPACE}),
    )?;
    spec["policy"] = json!({"namespaces": ["nobody-*"]});
    let cluster_issuers = cluster(&client, &step_cluster_issuers());
    apply(
        &cluster_issuers,
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
            "metadata": {"name": restricted},
            "spec": spec,
        }),
    )
    .await?;
    // Admission knows the issuer's policy (the webhook caches the issuers) and denies at once.
    let annotated = json!({"autocert.step.sm/name": format!("other.{}.svc", ns.name), "autocert.step.sm/issuer": restricted});
    let denied = wait_for(
        "admission to deny a pod naming an issuer its namespace may not use",
        Duration::from_secs(30),
        async || match pods
            .create(&PostParams::default(), &pod("denied", annotated.clone())?)
            .await
        {
            Err(kube::Error::Api(e)) if e.message.contains("may not be used from namespace") => {
                Ok(Some(e.message))
            }
            // The webhook has not seen the issuer yet: it admitted the pod with its own policy.
            Ok(_) => {
                pods.delete("denied", &DeleteParams::default().grace_period(0))
                    .await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
        async || newest_lines(&w.log, 20),
    )
    .await?;
    assert!(
        denied.contains(&format!("StepClusterIssuer {restricted} may not be used")),
        "{denied}"
    );
    // A pod that switches to that issuer after admission: /bootstrap refuses it.
    let other = admitted_then_annotated(
        &client,
        &ns.name,
        "other",
        json!({"autocert.step.sm/issuer": restricted}),
    )
    .await?;
    let other_token = pod_token(&env, &client, &other, "step-operator").await?;
    let refused = bootstrap_call(&env, w, Some(&other_token)).await?;
    assert_refused(
        "a pod naming an issuer its namespace may not use",
        &refused,
        &[403],
        Some("IssuerNotAllowed"),
        Some(&other_token),
    );
    tokens.push(("the other pod's token", other_token));
    cluster_issuers
        .delete(&restricted, &DeleteParams::default())
        .await?;

    let other_audience = pod_token(&env, &client, &good, "some-other-audience").await?;
    let refused = bootstrap_call(&env, w, Some(&other_audience)).await?;
    assert_refused(
        "a token for another audience",
        &refused,
        &[401],
        None,
        Some(&other_audience),
    );
    tokens.push(("the wrong-audience token", other_audience));

    let good_token = pod_token(&env, &client, &good, "step-operator").await?;
    let (code, body) = bootstrap_call(&env, w, Some(&good_token)).await?;
    assert_eq!(code, 200, "{body}");
    let one_time = body["token"].as_str().context("no token in the answer")?;
    record_secret(&env, one_time)?;
    assert!(body["rootPem"].is_string(), "{body}");
    tokens.push(("the good pod's token", good_token));
    tokens.push((
        "the one-time token /bootstrap answered",
        one_time.to_string(),
    ));

    // A token issued before the pod was deleted: the apiserver or we refuse it.
    let replay = pod_token(&env, &client, &good, "step-operator").await?;
    pods.delete("good", &DeleteParams::default().grace_period(0))
        .await?;
    wait_for(
        "the pod to be gone",
        Duration::from_secs(30),
        async || Ok(pods.get_opt("good").await?.is_none().then_some(())),
        async || dump(&pods.get_opt("good").await.ok().flatten()),
    )
    .await?;
    let refused = bootstrap_call(&env, w, Some(&replay)).await?;
    assert_refused(
        "a token of a deleted pod",
        &refused,
        &[401, 403],
        None,
        Some(&replay),
    );
    tokens.push(("the deleted pod's token", replay));

    let log = std::fs::read_to_string(&w.log)?;
    // The evil pod's refusal is logged with its reason: this is the log that saw these calls.
    assert!(
        log.contains("NameNotAllowed"),
        "the webhook log {} does not show the NameNotAllowed refusal: is it the right file?",
        w.log
    );
    for (what, token) in &tokens {
        assert!(!log.contains(token.as_str()), "the webhook logged {what}");
    }
    stray_ns.delete().await?;
    ns.delete().await
}

/// POSTs `body` to the webhook's /mutate with curl; returns the HTTP status and the body.
async fn mutate_call(env: &Env, w: &Webhook, body: &[u8]) -> Result<(u16, String)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("body");
    std::fs::write(&file, body)?;
    let url = format!("https://127.0.0.1:{}/mutate", w.port);
    let data = format!("@{}", file.display());
    let root = env.step_ca_root.to_str().context("utf-8")?;
    let args = [
        "-sS",
        "-X",
        "POST",
        "--cacert",
        root,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &data,
        "-w",
        "\n%{http_code}",
        &url,
    ];
    let out = run(Path::new("curl"), &args, &[]).await?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').context("curl output")?;
    Ok((code.trim().parse()?, body.to_string()))
}

#[tokio::test]
async fn hostile_admission_reviews_get_clear_errors() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let w = webhook(&env, &client).await?;
    let valid = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "team", "operation": "CREATE", "userInfo": {},
                    "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"autocert.step.sm/name": "p.team.svc"}},
                               "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    })
    .to_string();
    let mut v1beta1: serde_json::Value = serde_json::from_str(&valid)?;
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let huge_sans = (0..10_000)
        .map(|i| format!("n{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut many: serde_json::Value = serde_json::from_str(&valid)?;
    many["request"]["object"]["metadata"]["annotations"]["autocert.step.sm/sans"] =
        json!(huge_sans);
    let mut control: serde_json::Value = serde_json::from_str(&valid)?;
    control["request"]["object"]["metadata"]["annotations"]["autocert.step.sm/name"] =
        json!("p.team.svc\u{7}");
    // The needle is a distinctive part of the message that names the problem
    // (src/webhook/mutate.rs, src/webhook/annotations.rs). None only for the oversized body: the
    // HTTP layer refuses it before the handler runs (its 413 text is the framework's), or resets
    // the stream; only the status is checked there.
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        (
            "malformed",
            b"{not json".to_vec(),
            400,
            Some("request body is not valid JSON"),
        ),
        (
            "truncated",
            valid.as_bytes()[..valid.len() / 2].to_vec(),
            400,
            Some("request body is not valid JSON"),
        ),
        (
            "empty",
            Vec::new(),
            400,
            Some("request body is not valid JSON"),
        ),
        (
            "v1beta1",
            v1beta1.to_string().into_bytes(),
            400,
            Some("only admission.k8s.io/v1 is supported"),
        ),
        ("oversized", vec![b' '; 9 * 1024 * 1024], 413, None),
        (
            "10000 sans",
            many.to_string().into_bytes(),
            200,
            Some("autocert.step.sm/sans lists 10000 names: at most"),
        ),
        (
            "control character",
            control.to_string().into_bytes(),
            200,
            Some(
                "contains a control character: use DNS names, IP addresses, URIs or emails without control characters",
            ),
        ),
    ];
    for (name, body, want, needle) in cases {
        let (code, text) = match mutate_call(&env, w, &body).await {
            // HTTP/2 servers may reset the stream of a body they refuse to read (curl: 92).
            Err(e) if want == 413 && e.to_string().contains("exit status: 92") => {
                (413, String::new())
            }
            other => other?,
        };
        assert_eq!(code, want, "{name}: {text}");
        if let Some(needle) = needle {
            assert!(
                text.contains(needle),
                "{name}: the answer must name the problem ({needle}): {text}"
            );
        }
        if want == 200 {
            let review: serde_json::Value = serde_json::from_str(&text)?;
            assert_eq!(
                review["response"]["allowed"], false,
                "{name} must be denied: {text}"
            );
            assert_eq!(review["response"]["uid"], "u1");
        }
    }
    // Still healthy and serving after all of it.
    let (code, text) = mutate_call(&env, w, valid.as_bytes()).await?;
    assert_eq!(code, 200, "{text}");
    let review: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(review["response"]["allowed"], true, "{text}");
    assert_eq!(review["response"]["patchType"], "JSONPatch", "{text}");
    Ok(())
}

#[tokio::test]
async fn hostile_bootstrap_tokens_are_refused() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let w = webhook(&env, &client).await?;
    // A well-formed JWT signed by nobody the apiserver trusts, and junk long enough that an echo
    // of it could not be a coincidence. "Bearer <junk>" ends up as `Bearer Bearer <junk>`.
    let forged = "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJhdWQiOlsic3RlcC1vcGVyYXRvciJdLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphcHAifQ.c2lnbmF0dXJl";
    // A big body is refused before the token is looked at (security review H4): 413, and no
    // TokenReview for it (the forged token would be refused with 401 otherwise).
    let dir = tempfile::tempdir()?;
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024)))?;
    let out = run(
        Path::new("curl"),
        &[
            "-sS",
            // HTTP/1.1 and 100-continue: the server answers 413 from the Content-Length alone,
            // and curl sends no body, so it never writes into a connection the server has
            // closed (which fails the upload with "Broken pipe" instead of showing the 413).
            "--http1.1",
            "-H",
            "Expect: 100-continue",
            "-X",
            "POST",
            "--cacert",
            env.step_ca_root.to_str().context("utf-8")?,
            "-H",
            &format!("Authorization: Bearer {forged}"),
            "--data-binary",
            &format!("@{}", big.display()),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://127.0.0.1:{}/bootstrap", w.port),
        ],
        &[],
    )
    .await?;
    assert_eq!(
        String::from_utf8(out.stdout)?,
        "413",
        "a 64 KiB /bootstrap body"
    );
    let garbage = format!("garbage{}", random_letters(24));
    let junk = random_letters(24);
    let doubled = format!("Bearer {junk}");
    for (token, secret) in [
        (forged, forged),
        (garbage.as_str(), garbage.as_str()),
        (doubled.as_str(), junk.as_str()),
    ] {
        record_secret(&env, secret)?;
        let refused = bootstrap_call(&env, w, Some(token)).await?;
        assert_refused(
            &format!("token {secret:.12}…"),
            &refused,
            &[401],
            None,
            Some(secret),
        );
        assert!(
            refused.1["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("token rejected: ")),
            "the refusal must say the token was rejected: {}",
            refused.1
        );
    }
    let log = std::fs::read_to_string(&w.log)?;
    for secret in [forged, garbage.as_str(), junk.as_str()] {
        assert!(
            !log.contains(secret),
            "the webhook logged a presented token ({secret:.12}…)"
        );
    }
    Ok(())
}

/// The webhook killed while pods are created: with `failurePolicy: Fail` (the chart's default)
/// creates are refused while it is down, and a bootstrapper that starts meanwhile retries until
/// the webhook is back, then gets its certificate.
#[tokio::test]
async fn fault_webhook_killed_while_pods_are_created() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    webhook(&env, &client).await?; // the issuer objects
    let label = format!("fault-{}", random_suffix());
    let config = format!("step-operator-e2e-{label}");
    let port = free_port()?;
    let mut first = start_webhook(&env, &client, &config, &label, port).await?;
    let ns = TestNamespace::create_labelled(
        &client,
        "fault-webhook",
        BTreeMap::from([(LABEL.to_string(), label.clone())]),
    )
    .await?;
    service_account(&client, &ns.name).await?;
    let name = format!("api.{}.svc", ns.name);
    let admitted = create_pod(
        &client,
        &ns.name,
        &pod("api", json!({"autocert.step.sm/name": name}))?,
    )
    .await?;

    first.stop();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let refused = pods
        .create(
            &PostParams::default(),
            &pod(
                "while-down",
                json!({"autocert.step.sm/name": format!("b.{}.svc", ns.name)}),
            )?,
        )
        .await;
    match refused {
        Err(kube::Error::Api(s)) => assert!(
            s.message.contains("failed calling webhook"),
            "{}",
            s.message
        ),
        other => bail!(
            "with failurePolicy Fail and the webhook down, the create must be refused: {other:?}"
        ),
    }

    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        pod_token(&env, &client, &admitted, "step-operator").await?,
    )?;
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    let vars = injected_env(&admitted, &certs, &token_file)?;
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut agent = Process::start(&env, "bootstrap-retry", &["bootstrap"], &refs)?;
    let agent_log = agent.log.clone();
    wait_for(
        "the bootstrapper to report the webhook unreachable and retry",
        Duration::from_secs(30),
        async || {
            Ok(std::fs::read_to_string(&agent_log)?
                .contains("retrying")
                .then_some(()))
        },
        async || std::fs::read_to_string(&agent_log).unwrap_or_default(),
    )
    .await?;
    assert!(agent.is_running(), "the bootstrapper must keep retrying");

    // The webhook comes back on the same address.
    let second = start_webhook(&env, &client, &config, &label, port).await?;
    wait_for(
        "the bootstrapper to finish once the webhook is back",
        Duration::from_secs(90),
        async || Ok((!agent.is_running()).then_some(())),
        async || {
            format!(
                "{}\nwebhook:\n{}",
                std::fs::read_to_string(&agent_log).unwrap_or_default(),
                second.log_tail()
            )
        },
    )
    .await?;
    step_inspect(&env, &certs.join("site.crt")).await?;
    create_pod(
        &client,
        &ns.name,
        &pod(
            "after",
            json!({"autocert.step.sm/name": format!("c.{}.svc", ns.name)}),
        )?,
    )
    .await?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(&config, &DeleteParams::default())
        .await?;
    ns.delete().await
}

/// The audience of the projected token injected into `pod`: what the kubelet would request.
fn injected_token_audience(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .find_map(|s| s.service_account_token.as_ref()?.audience.clone())
}

/// `--token-audience` reaches the injected token: a webhook run with a non-default audience
/// injects a projected token for that audience, and refuses a token for the default one.
#[tokio::test]
async fn pod_tls_custom_token_audience_end_to_end() -> Result<()> {
    const AUDIENCE: &str = "pods.step-operator.e2e";
    let env = Env::load()?;
    let client = env.client().await?;
    // The shared webhook creates the default issuer; this one uses it too.
    webhook(&env, &client).await?;
    let port = free_port()?;
    let mut w = start_webhook_with(
        &env,
        &client,
        "step-operator-e2e-audience",
        "audience",
        port,
        &["--token-audience", AUDIENCE],
    )
    .await?;
    let ns = TestNamespace::create_labelled(
        &client,
        "pod-tls-aud",
        BTreeMap::from([(LABEL.to_string(), "audience".to_string())]),
    )
    .await?;
    service_account(&client, &ns.name).await?;
    let name = format!("aud.{}.svc", ns.name);
    let created = create_pod(
        &client,
        &ns.name,
        &pod("aud", json!({"autocert.step.sm/name": name}))?,
    )
    .await?;
    let audience = injected_token_audience(&created)
        .with_context(|| format!("no projected token injected: {}", dump(&created)))?;
    assert_eq!(audience, AUDIENCE, "{}", dump(&created));
    // A pod bootstrapping with the token the kubelet mounts for that audience: tests/node_pods.rs
    // (its release uses a custom audience).

    // A token for the default audience is refused by this webhook.
    let other = Webhook {
        port,
        log: w.log.display().to_string(),
    };
    let (code, body) = bootstrap_call(
        &env,
        &other,
        Some(&pod_token(&env, &client, &created, "step-operator").await?),
    )
    .await?;
    assert_eq!(code, 401, "a token for another audience: {body}");
    assert!(body["token"].is_null(), "{body}");
    w.stop();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete("step-operator-e2e-audience", &DeleteParams::default())
        .await?;
    ns.delete().await
}

/// A caller that trickles its body holds neither a connection nor a buffer for long (security
/// review H4): it gets 408 once 30 s have passed, not after the 100 s its body would take.
#[tokio::test]
async fn hostile_bootstrap_trickled_body_is_cut_off() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let w = webhook(&env, &client).await?;
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http1.1", "-X", "POST", "--cacert"])
        .arg(&env.step_ca_root)
        .args([
            "--limit-rate",
            "1",
            "--max-time",
            "90",
            "-d",
            &"x".repeat(100),
        ])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{}/bootstrap", w.port))
        .output()
        .await?;
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    let took = started.elapsed();
    assert_eq!(
        code,
        "408",
        "a trickled body: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(45),
        "cut off only after {took:?}"
    );
    Ok(())
}

/// `prefix`, then `element,` repeated up to about `size` bytes, then `suffix`.
fn filled(prefix: &str, element: &str, suffix: &str, size: usize) -> Vec<u8> {
    let mut out = prefix.as_bytes().to_vec();
    while out.len() + element.len() + 1 + suffix.len() < size {
        out.extend_from_slice(element.as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(element.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    out
}

/// Security review H4: a flood of the largest hostile AdmissionReviews (arrays of zeros, pods of
/// tiny containers, oversized bodies) leaves the webhook's memory far under its 256 Mi limit, and
/// a real annotated pod is admitted and injected during the flood.
#[tokio::test]
async fn hostile_mutate_flood_keeps_memory_bounded() -> Result<()> {
    const MIB: usize = 1024 * 1024;
    const CONFIG: &str = "step-operator-e2e-flood";
    let env = Env::load()?;
    let client = env.client().await?;
    // The shared webhook creates the default issuer; this one uses it too, and is alone in its
    // process so that its memory is the flood's.
    webhook(&env, &client).await?;
    let port = free_port()?;
    let mut p = start_webhook(&env, &client, CONFIG, "flood", port).await?;
    let w = Webhook {
        port,
        log: p.log.display().to_string(),
    };
    let ns = TestNamespace::create_labelled(
        &client,
        "pod-tls-flood",
        BTreeMap::from([(LABEL.to_string(), "flood".to_string())]),
    )
    .await?;
    service_account(&client, &ns.name).await?;
    let before = p.peak_rss_kib()?;

    let under = 6 * MIB - 4096;
    let head = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"team","userInfo":{},"object":{"spec":{"containers":["#;
    let zeros = filled("[", "0", "]", under);
    let tiny_containers = filled(head, r#"{"name":"a"}"#, "]}}}}", under);
    let oversized = filled(r#"{"a":["#, "0", "]}", 8 * MIB);
    // (what, body, the answers it may get: 503 when the byte budget is spent, or a reset stream)
    let kinds: [(&str, &[u8], &[u16]); 3] = [
        ("[0,0,…]", &zeros, &[400, 503]),
        ("a pod of tiny containers", &tiny_containers, &[200, 503]),
        ("8 MiB {\"a\":[0,0,…]}", &oversized, &[413, 503]),
    ];
    let (w, env_ref) = (&w, &env);
    let flood = futures::future::join_all(kinds.iter().flat_map(|&(what, body, allowed)| {
        (0..8).map(move |_| {
            let env = env_ref;
            async move {
                let (code, text) = match mutate_call(env, w, body).await {
                    // Refused before its body was read (413, or 503 when the budget is spent):
                    // the HTTP/2 stream is reset once the answer is sent (curl: 92).
                    Err(e) if e.to_string().contains("exit status: 92") => (503, e.to_string()),
                    other => other?,
                };
                anyhow::ensure!(
                    allowed.contains(&code),
                    "{what}: HTTP {code} (wanted one of {allowed:?}): {}",
                    text.chars().take(300).collect::<String>()
                );
                Ok(code)
            }
        })
    }));
    let name = format!("flood.{}.svc", ns.name);
    let normal = pod("flood", json!({"autocert.step.sm/name": name}))?;
    let admitted = create_pod(&client, &ns.name, &normal);
    let (answers, admitted) = tokio::join!(flood, admitted);
    let answers = answers.into_iter().collect::<Result<Vec<u16>>>()?;
    let admitted = admitted?;
    assert!(
        container(&admitted, "autocert-bootstrapper").is_some(),
        "the pod admitted during the flood was not injected: {}",
        dump(&admitted)
    );
    let after = p.peak_rss_kib()?;
    eprintln!(
        "flood answers {answers:?}; webhook peak RSS {} MiB before, {} MiB after",
        before / 1024,
        after / 1024
    );
    assert!(
        after < 160 * 1024,
        "the webhook's peak RSS reached {} MiB (limit 256 Mi)\n{}",
        after / 1024,
        p.log_tail()
    );
    p.wait_ready(Duration::from_secs(10)).await?;
    p.stop();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(CONFIG, &DeleteParams::default())
        .await?;
    ns.delete().await
}
