//! step-operator as a cert-manager external issuer, against the real apiserver, cert-manager's
//! controllers and step-ca. These tests share one controller process and run in parallel; tests
//! that disrupt shared components live in their own test binaries.

use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, shared_controller};
use e2e::process::run;
use e2e::{Env, TestNamespace, dump, random_letters, random_suffix, record_secret, wait_for};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

struct Setup {
    env: Env,
    client: Client,
    log: String,
}

async fn setup() -> Result<Setup> {
    let env = Env::load()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let log = shared_controller(&env)?.to_string();
    Ok(Setup { env, client, log })
}

/// A Ready StepClusterIssuer with its own password Secret.
async fn cluster_issuer(s: &Setup, prefix: &str) -> Result<String> {
    ready_cluster_issuer(&s.env, &s.client, prefix, &s.log).await
}

fn certificate(
    name: &str,
    issuer_kind: &str,
    issuer: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut spec = json!({
        "secretName": format!("{name}-tls"),
        "issuerRef": {"group": "certmanager.step.sm", "kind": issuer_kind, "name": issuer},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": name}, "spec": spec})
}

async fn wait_certificate_ready(s: &Setup, ns: &str, name: &str) -> Result<Secret> {
    let certs = namespaced(&s.client, ns, &certificates());
    let requests = namespaced(&s.client, ns, &certificate_requests());
    wait_for(
        &format!("Certificate {ns}/{name} to become Ready"),
        READY_TIMEOUT,
        async || {
            Ok(certs
                .get_opt(name)
                .await?
                .filter(|c| is_true(c, "Ready"))
                .map(|_| ()))
        },
        async || {
            let c = certs.get_opt(name).await.ok().flatten();
            let r = requests
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let log = std::fs::read_to_string(&s.log).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(20).collect();
            format!(
                "certificate: {}\nrequests: {}\ncontroller log (newest first):\n{}",
                dump(&c),
                dump(&r),
                tail.join("\n")
            )
        },
    )
    .await?;
    Ok(Api::<Secret>::namespaced(s.client.clone(), ns)
        .get(&format!("{name}-tls"))
        .await?)
}

fn secret_text(secret: &Secret, key: &str) -> Result<String> {
    let data = secret.data.as_ref().context("Secret has no data")?;
    let v = data
        .get(key)
        .with_context(|| format!("Secret has no {key}; keys: {:?}", data.keys()))?;
    Ok(String::from_utf8(v.0.clone())?)
}

/// Verifies a PEM chain against the step-ca root with the step CLI and returns its JSON inspection.
async fn verify_chain(env: &Env, chain_pem: &str) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("chain.crt");
    std::fs::write(&path, chain_pem)?;
    let step = env.tool("step")?;
    let p = path.to_str().context("utf-8")?;
    let root = env.step_ca_root.to_str().context("utf-8")?;
    let steppath = dir.path().to_str().context("utf-8")?;
    run(
        &step,
        &["certificate", "verify", p, "--roots", root],
        &[("STEPPATH", steppath)],
    )
    .await?;
    let out = run(
        &step,
        &["certificate", "inspect", "--format", "json", p],
        &[("STEPPATH", steppath)],
    )
    .await?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test]
async fn issuer_cluster_issuer_becomes_ready() -> Result<()> {
    let s = setup().await?;
    let name = cluster_issuer(&s, "ready").await?;
    let api = cluster(&s.client, &step_cluster_issuers());
    let obj = api.get(&name).await?;
    let ready = condition(&obj, "Ready").context("no Ready condition")?;
    assert_eq!(ready["reason"], "Verified", "{}", dump(&obj));
    assert_eq!(
        ready["message"].as_str(),
        Some(verified_message(&s.env).as_str()),
        "{}",
        dump(&obj)
    );
    assert_eq!(
        ready["observedGeneration"],
        obj.metadata.generation.unwrap_or_default(),
        "{}",
        dump(&obj)
    );

    // kubectl shows the printer columns.
    let out = run(
        &s.env.tool("kubectl")?,
        &[
            "--kubeconfig",
            s.env.kubeconfig.to_str().context("utf-8")?,
            "get",
            "stepclusterissuers",
            &name,
        ],
        &[],
    )
    .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    for column in ["READY", "REASON", "MESSAGE", "AGE", "True", "Verified"] {
        assert!(
            text.contains(column),
            "kubectl get output lacks {column}:\n{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn issuer_certificate_with_every_san_type() -> Result<()> {
    let s = setup().await?;
    let issuer = cluster_issuer(&s, "sans").await?;
    let ns = TestNamespace::create(&s.client, "issuer-sans").await?;
    let certs = namespaced(&s.client, &ns.name, &certificates());
    certs
        .create(
            &PostParams::default(),
            &object(certificate(
                "web",
                "StepClusterIssuer",
                &issuer,
                json!({
                    "commonName": "web.example.com",
                    "dnsNames": ["web.example.com", "www.example.com"],
                    "ipAddresses": ["10.9.8.7"],
                    "uris": ["spiffe://cluster.local/ns/app/sa/web"],
                    "emailAddresses": ["ops@example.com"],
                }),
            ))?,
        )
        .await?;
    let secret = wait_certificate_ready(&s, &ns.name, "web").await?;
    let chain = secret_text(&secret, "tls.crt")?;
    assert!(
        chain.matches("BEGIN CERTIFICATE").count() >= 2,
        "tls.crt must hold the leaf and the intermediate:\n{chain}"
    );
    let info = verify_chain(&s.env, &chain).await?;
    let sans = info["extensions"]["subject_alt_name"].to_string();
    for want in [
        "web.example.com",
        "www.example.com",
        "10.9.8.7",
        "spiffe://cluster.local/ns/app/sa/web",
        "ops@example.com",
    ] {
        assert!(sans.contains(want), "certificate lacks SAN {want}: {sans}");
    }
    let ca = secret_text(&secret, "ca.crt")?;
    assert_eq!(
        ca.trim(),
        s.env.root_pem()?.trim(),
        "ca.crt must be the step-ca root"
    );
    assert!(!secret_text(&secret, "tls.key")?.is_empty());
    ns.delete().await
}

#[tokio::test]
async fn issuer_namespaced_step_issuer_with_password_ref() -> Result<()> {
    let s = setup().await?;
    let ns = TestNamespace::create(&s.client, "issuer-ns").await?;
    password_secret(
        &s.client,
        &ns.name,
        "step-pass",
        "password",
        &s.env.provisioner_password()?,
    )
    .await?;
    let issuers = namespaced(&s.client, &ns.name, &step_issuers());
    apply(
        &issuers,
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepIssuer",
            "metadata": {"name": "team-ca"},
            "spec": issuer_spec(&s.env, json!({"name": "step-pass", "key": "password"}))?,
        }),
    )
    .await?;
    wait_ready_condition(
        &issuers,
        "team-ca",
        "True",
        Some("Verified"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;
    let certs = namespaced(&s.client, &ns.name, &certificates());
    certs
        .create(
            &PostParams::default(),
            &object(certificate(
                "app",
                "StepIssuer",
                "team-ca",
                json!({"dnsNames": ["app.team.svc"]}),
            ))?,
        )
        .await?;
    let secret = wait_certificate_ready(&s, &ns.name, "app").await?;
    verify_chain(&s.env, &secret_text(&secret, "tls.crt")?).await?;

    // A StepIssuer may not read another namespace's Secret, nor the controller's env or files.
    apply(
        &issuers,
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepIssuer",
            "metadata": {"name": "escape"},
            "spec": issuer_spec(&s.env, json!({"name": "x", "key": "password", "namespace": CLUSTER_RESOURCE_NAMESPACE}))?,
        }),
    )
    .await?;
    let obj = wait_ready_condition(
        &issuers,
        "escape",
        "False",
        Some("InvalidSpec"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;
    let message = ready_message(&obj);
    let cause = format!(
        "differs from the StepIssuer's namespace {:?}: a StepIssuer reads only Secrets in its own namespace",
        ns.name
    );
    assert!(message.contains(&cause), "want {cause}: {message}");
    ns.delete().await
}

#[tokio::test]
async fn issuer_wrong_password_then_fixed_secret() -> Result<()> {
    let s = setup().await?;
    let ns = TestNamespace::create(&s.client, "issuer-pw").await?;
    // Random, so that check-secrets.sh can look for it after the run.
    let wrong = format!("not-the-password-{}", random_letters(20));
    record_secret(&s.env, &wrong)?;
    password_secret(&s.client, &ns.name, "pw", "password", &wrong).await?;
    let issuers = namespaced(&s.client, &ns.name, &step_issuers());
    apply(
        &issuers,
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepIssuer",
            "metadata": {"name": "ca"},
            "spec": issuer_spec(&s.env, json!({"name": "pw", "key": "password"}))?,
        }),
    )
    .await?;
    let obj = wait_ready_condition(
        &issuers,
        "ca",
        "False",
        Some("WrongPassword"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;
    let message = ready_message(&obj);
    let cause = format!(
        "failed to decrypt the key of provisioner {:?}: wrong password; check the provisioner password Secret",
        s.env.step_provisioner
    );
    assert!(
        message.contains(&cause),
        "the message must name the cause and the fix ({cause}): {message}"
    );
    assert!(
        !message.contains(&wrong),
        "the password leaked into the status: {message}"
    );
    let generation = obj.metadata.generation;

    // Fixing the Secret alone (the issuer is not touched) makes it Ready within 10 s.
    password_secret(
        &s.client,
        &ns.name,
        "pw",
        "password",
        &s.env.provisioner_password()?,
    )
    .await?;
    let obj = wait_ready_condition(
        &issuers,
        "ca",
        "True",
        Some("Verified"),
        Duration::from_secs(10),
        &s.log,
    )
    .await?;
    assert_eq!(
        obj.metadata.generation, generation,
        "the issuer spec must not have changed"
    );
    ns.delete().await
}

#[tokio::test]
async fn issuer_denied_request_is_never_signed() -> Result<()> {
    let s = setup().await?;
    let ns = TestNamespace::create(&s.client, "issuer-deny").await?;
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    // The issuer does not exist yet, so the request cannot be signed before the denial lands,
    // whatever the approver does meanwhile.
    let missing = format!("later-{}", random_suffix());
    let denied_subject = format!("denied.{}.example", ns.name);
    requests
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                "metadata": {"name": "denied"},
                "spec": {
                    "request": base64(csr(&denied_subject)?.as_bytes()),
                    "issuerRef": {"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": missing},
                }
            }))?,
        )
        .await?;
    let status = json!({"status": {"conditions": [{
        "type": "Denied", "status": "True", "reason": "e2e", "message": "denied by the test",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    requests
        .patch_status("denied", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let obj = wait_ready_condition(
        &requests,
        "denied",
        "False",
        Some("Denied"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;
    assert!(
        obj.data["status"]["failureTime"].is_string(),
        "failureTime must be set: {}",
        dump(&obj)
    );
    // A second request for the same missing issuer, not denied: the barrier. Once it is Issued,
    // the controller has seen the issuer turn Ready and re-examined the requests waiting for it.
    let barrier_subject = format!("barrier.{}.example", ns.name);
    requests
        .create(
            &PostParams::default(),
            &certificate_request(
                "barrier",
                &csr(&barrier_subject)?,
                step_cluster_issuer_ref(&missing),
            )?,
        )
        .await?;
    // Now the issuer exists and turns Ready.
    ready_cluster_issuer_named(&s.env, &s.client, &missing, &s.log).await?;
    wait_ready_condition(
        &requests,
        "barrier",
        "True",
        Some("Issued"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;
    // The denied request stays Denied and unsigned, and step-ca never saw it.
    let obj = requests.get("denied").await?;
    assert!(
        obj.data["status"]["certificate"].is_null(),
        "a denied request was signed: {}",
        dump(&obj)
    );
    assert_eq!(
        condition(&obj, "Ready").map(|c| (c["status"].clone(), c["reason"].clone())),
        Some((json!("False"), json!("Denied"))),
        "{}",
        dump(&obj)
    );
    // step-ca logs a sign just after answering it: wait for the barrier's line (which also
    // shows the log is read right), then look for the denied one.
    wait_for(
        "step-ca's log to show the barrier's sign",
        Duration::from_secs(10),
        async || {
            let signs = e2e::faults::signs_by_subject(&s.env, &barrier_subject)?;
            match signs.get(&barrier_subject) {
                None => Ok(None),
                Some(1) => Ok(Some(())),
                Some(n) => anyhow::bail!("the barrier was signed {n} times"),
            }
        },
        async || {
            format!(
                "{:?}",
                e2e::faults::signs_by_subject(&s.env, "barrier.").ok()
            )
        },
    )
    .await?;
    let signs = e2e::faults::signs_by_subject(&s.env, &denied_subject)?;
    assert!(
        signs.is_empty(),
        "step-ca signed for the denied request: {signs:?}"
    );
    ns.delete().await
}

#[tokio::test]
async fn issuer_duration_over_the_provisioner_limit_fails() -> Result<()> {
    let s = setup().await?;
    let issuer = cluster_issuer(&s, "limit").await?;
    let ns = TestNamespace::create(&s.client, "issuer-limit").await?;
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    requests
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                "metadata": {"name": "too-long"},
                "spec": {
                    "request": base64(csr("long.example.com")?.as_bytes()),
                    "duration": "8760h",
                    "issuerRef": {"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": issuer},
                }
            }))?,
        )
        .await?;
    let obj = wait_ready_condition(
        &requests,
        "too-long",
        "False",
        Some("Failed"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;
    let message = condition(&obj, "Ready")
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    assert!(
        message.contains("2160h"),
        "the message must name the provisioner's limit: {message}"
    );
    assert!(
        obj.data["status"]["failureTime"].is_string(),
        "{}",
        dump(&obj)
    );
    ns.delete().await
}

#[tokio::test]
async fn issuer_key_types() -> Result<()> {
    let s = setup().await?;
    let issuer = cluster_issuer(&s, "keys").await?;
    let ns = TestNamespace::create(&s.client, "issuer-keys").await?;
    let certs = namespaced(&s.client, &ns.name, &certificates());
    let cases = [
        ("rsa2048", json!({"algorithm": "RSA", "size": 2048}), "RSA"),
        ("rsa4096", json!({"algorithm": "RSA", "size": 4096}), "RSA"),
        ("p256", json!({"algorithm": "ECDSA", "size": 256}), "ECDSA"),
        ("p384", json!({"algorithm": "ECDSA", "size": 384}), "ECDSA"),
        ("ed25519", json!({"algorithm": "Ed25519"}), "Ed25519"),
    ];
    for (name, key, _) in &cases {
        certs
            .create(
                &PostParams::default(),
                &object(certificate(
                    name,
                    "StepClusterIssuer",
                    &issuer,
                    json!({"dnsNames": [format!("{name}.example.com")], "privateKey": key}),
                ))?,
            )
            .await?;
    }
    for (name, _, algorithm) in &cases {
        let secret = wait_certificate_ready(&s, &ns.name, name).await?;
        let info = verify_chain(&s.env, &secret_text(&secret, "tls.crt")?).await?;
        let key = info["subject_key_info"]["key_algorithm"]["name"].to_string();
        assert!(key.contains(algorithm), "{name}: key algorithm {key}");
    }
    ns.delete().await
}

#[tokio::test]
async fn issuer_ignores_requests_for_other_issuers() -> Result<()> {
    let s = setup().await?;
    let issuer = cluster_issuer(&s, "foreign").await?;
    let ns = TestNamespace::create(&s.client, "issuer-foreign").await?;
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    let refs = [
        (
            "empty-group",
            json!({"kind": "StepClusterIssuer", "name": issuer}),
        ),
        (
            "blank-group",
            json!({"group": "", "kind": "StepClusterIssuer", "name": issuer}),
        ),
        (
            "other-group",
            json!({"group": "example.com", "kind": "StepClusterIssuer", "name": issuer}),
        ),
        (
            "other-kind",
            json!({"group": "certmanager.step.sm", "kind": "ClusterIssuer", "name": issuer}),
        ),
    ];
    for (name, issuer_ref) in &refs {
        requests
            .create(
                &PostParams::default(),
                &certificate_request(name, &csr("foreign.example.com")?, issuer_ref.clone())?,
            )
            .await?;
    }
    // A request of ours created after them is finished first: by then the controller has seen
    // the others too (one watch, in order).
    requests
        .create(
            &PostParams::default(),
            &certificate_request(
                "ours",
                &csr("ours.example.com")?,
                step_cluster_issuer_ref(&issuer),
            )?,
        )
        .await?;
    wait_ready_condition(
        &requests,
        "ours",
        "True",
        Some("Issued"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &ns.name)
        .list(&Default::default())
        .await?;
    for (name, _) in &refs {
        let obj = requests.get(name).await?;
        let ready = condition(&obj, "Ready");
        assert!(
            ready.is_none(),
            "{name} is not ours but got a Ready condition: {}",
            dump(&obj)
        );
        assert!(
            obj.data["status"]["certificate"].is_null(),
            "{name} is not ours but was signed"
        );
        let ours = events.items.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(*name)
                && e.reporting_controller.as_deref() == Some("step-operator-controller")
        });
        assert!(
            !ours,
            "{name} is not ours but step-operator emitted an Event about it"
        );
    }
    ns.delete().await
}

#[tokio::test]
async fn issuer_step_issuer_manifests_work_unchanged() -> Result<()> {
    let s = setup().await?;
    let ns = TestNamespace::create(&s.client, "issuer-compat").await?;
    password_secret(
        &s.client,
        &ns.name,
        "step-issuer-provisioner-password",
        "password",
        &s.env.provisioner_password()?,
    )
    .await?;
    password_secret(
        &s.client,
        CLUSTER_RESOURCE_NAMESPACE,
        "step-cluster-issuer-provisioner-password",
        "password",
        &s.env.provisioner_password()?,
    )
    .await?;
    let root_b64 = base64(s.env.root_pem()?.as_bytes());
    // Exactly the shape of step-issuer's README and config/samples (YAML, as users apply it).
    let cluster_name = format!("step-cluster-issuer-{}", random_suffix());
    let manifest = format!(
        r#"apiVersion: certmanager.step.sm/v1beta1
kind: StepIssuer
metadata:
  name: step-issuer
  namespace: {ns}
spec:
  url: {url}
  caBundle: {root_b64}
  provisioner:
    name: {prov}
    kid: {kid}
    passwordRef:
      name: step-issuer-provisioner-password
      key: password
---
apiVersion: certmanager.step.sm/v1beta1
kind: StepClusterIssuer
metadata:
  name: {cluster_name}
spec:
  url: {url}
  caBundle: {root_b64}
  provisioner:
    name: {prov}
    kid: {kid}
    passwordRef:
      name: step-cluster-issuer-provisioner-password
      namespace: {cns}
      key: password
"#,
        ns = ns.name,
        url = s.env.step_ca_url,
        prov = s.env.step_provisioner,
        kid = s.env.step_provisioner_kid,
        cns = CLUSTER_RESOURCE_NAMESPACE,
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("issuers.yaml");
    std::fs::write(&file, manifest)?;
    run(
        &s.env.tool("kubectl")?,
        &[
            "--kubeconfig",
            s.env.kubeconfig.to_str().context("utf-8")?,
            "apply",
            "-f",
            file.to_str().context("utf-8")?,
        ],
        &[],
    )
    .await?;
    let issuers = namespaced(&s.client, &ns.name, &step_issuers());
    wait_ready_condition(
        &issuers,
        "step-issuer",
        "True",
        Some("Verified"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;
    let clusters = cluster(&s.client, &step_cluster_issuers());
    wait_ready_condition(
        &clusters,
        &cluster_name,
        "True",
        Some("Verified"),
        READY_TIMEOUT,
        &s.log,
    )
    .await?;

    // step-issuer's sample Certificate.
    let certs = namespaced(&s.client, &ns.name, &certificates());
    let cert = json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "backend"},
        "spec": {
            "secretName": "backend-tls",
            "commonName": "backend.default.svc.cluster.local",
            "dnsNames": ["backend.default.svc.cluster.local"],
            "ipAddresses": ["127.0.0.1"],
            "duration": "24h",
            "renewBefore": "8h",
            "issuerRef": {"group": "certmanager.step.sm", "kind": "StepIssuer", "name": "step-issuer"}
        }
    });
    certs.create(&PostParams::default(), &object(cert)?).await?;
    let secret = wait_certificate_ready(&s, &ns.name, "backend").await?;
    let chain = secret_text(&secret, "tls.crt")?;
    // Verifies against the step-ca root.
    verify_chain(&s.env, &chain).await?;
    assert_eq!(
        secret_text(&secret, "ca.crt")?.trim(),
        s.env.root_pem()?.trim(),
        "ca.crt must be the step-ca root"
    );
    assert!(
        secret_text(&secret, "tls.key")?.contains("PRIVATE KEY-----"),
        "tls.key must hold the private key"
    );
    let leaf = leaf(&chain)?;
    assert_eq!(
        leaf.common_name.as_deref(),
        Some("backend.default.svc.cluster.local"),
        "{leaf:?}"
    );
    assert_eq!(
        leaf.dns_names,
        ["backend.default.svc.cluster.local"],
        "{leaf:?}"
    );
    assert_eq!(
        leaf.ip_addresses,
        [std::net::IpAddr::from([127, 0, 0, 1])],
        "{leaf:?}"
    );
    // duration: 24h. step-ca may backdate notBefore by a minute or so.
    let day = Duration::from_secs(24 * 3600);
    let lifetime = leaf.lifetime();
    assert!(
        lifetime >= day && lifetime <= day + Duration::from_secs(300),
        "the certificate must live 24h, it lives {lifetime:?}: {leaf:?}"
    );
    let left = leaf
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > day - Duration::from_secs(600) && left <= day + Duration::from_secs(60),
        "the certificate must expire about 24h from now, {left:?} left: {leaf:?}"
    );
    ns.delete().await
}

#[tokio::test]
async fn issuer_renews_short_lived_certificates() -> Result<()> {
    let s = setup().await?;
    let issuer = cluster_issuer(&s, "renew").await?;
    let ns = TestNamespace::create(&s.client, "issuer-renew").await?;
    let certs = namespaced(&s.client, &ns.name, &certificates());
    certs
        .create(
            &PostParams::default(),
            &object(certificate(
                "short",
                "StepClusterIssuer",
                &issuer,
                json!({"dnsNames": ["short.example.com"], "duration": "2m", "renewBefore": "110s"}),
            ))?,
        )
        .await?;
    let first = wait_certificate_ready(&s, &ns.name, "short").await?;
    let first_crt = secret_text(&first, "tls.crt")?;
    // cert-manager renews 110 s before expiry of a 2-minute certificate: about 10 s later.
    let secrets = Api::<Secret>::namespaced(s.client.clone(), &ns.name);
    let renewed: Secret = wait_for(
        "cert-manager to renew the certificate through step-operator",
        Duration::from_secs(90),
        async || {
            let sec = secrets.get("short-tls").await?;
            Ok(secret_text(&sec, "tls.crt")
                .ok()
                .filter(|c| *c != first_crt)
                .map(|_| sec))
        },
        async || dump(&certs.get_opt("short").await.ok().flatten()),
    )
    .await?;
    verify_chain(&s.env, &secret_text(&renewed, "tls.crt")?).await?;
    let cert: DynamicObject = certs.get("short").await?;
    assert!(
        cert.data["status"]["revision"].as_i64().unwrap_or(0) >= 2,
        "{}",
        dump(&cert)
    );
    ns.delete().await
}
