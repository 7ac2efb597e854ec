//! The local control plane itself works: apiserver with RBAC, cert-manager's real controllers,
//! and step-ca with the step CLI. These tests do not involve step-operator.

use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::{Env, TestNamespace, dump, process::run, wait_for};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;

#[tokio::test]
async fn harness_apiserver_enforces_rbac() -> Result<()> {
    let env = Env::load()?;
    let admin = env.client().await?;
    let version = admin.apiserver_version().await?;
    assert_eq!(version.major, "1", "apiserver version: {version:?}");
    assert_eq!(version.minor, "37", "apiserver version: {version:?}");

    // The admin can list Secrets; e2e-user, with no bindings, is refused with 403.
    Api::<Secret>::namespaced(admin, "default")
        .list(&Default::default())
        .await
        .context("admin listing secrets")?;
    let user = env.user_client().await?;
    let err = Api::<Secret>::namespaced(user, "default")
        .list(&Default::default())
        .await
        .expect_err("e2e-user has no RBAC rights, listing secrets must be forbidden");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected a 403 from the apiserver, got {other:?}"),
    }
    Ok(())
}

fn cm_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", kind),
        plural,
    )
}

#[tokio::test]
async fn harness_selfsigned_certificate() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "harness-selfsigned").await?;

    let issuers = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns.name,
        &cm_resource("Issuer", "issuers"),
    );
    let issuer: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
        "metadata": {"name": "selfsigned"},
        "spec": {"selfSigned": {}}
    }))?;
    issuers.create(&PostParams::default(), &issuer).await?;

    let certs = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns.name,
        &cm_resource("Certificate", "certificates"),
    );
    let cert: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "demo"},
        "spec": {
            "secretName": "demo-tls",
            "dnsNames": ["demo.example.com"],
            "issuerRef": {"name": "selfsigned", "kind": "Issuer"}
        }
    }))?;
    certs.create(&PostParams::default(), &cert).await?;

    let ready = |c: &DynamicObject| {
        c.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    wait_for(
        "the SelfSigned Certificate to become Ready",
        Duration::from_secs(60),
        async || Ok(certs.get_opt("demo").await?.filter(ready)),
        async || dump(&certs.get_opt("demo").await.ok().flatten()),
    )
    .await?;

    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("demo-tls")
        .await?;
    let data = secret.data.unwrap_or_default();
    for key in ["tls.crt", "tls.key"] {
        let v = data.get(key).map(|b| b.0.clone()).unwrap_or_default();
        assert!(
            !v.is_empty(),
            "Secret demo-tls has no {key}; keys: {:?}",
            data.keys()
        );
    }
    let crt = String::from_utf8(data["tls.crt"].0.clone())?;
    assert!(
        crt.starts_with("-----BEGIN CERTIFICATE-----"),
        "tls.crt is not PEM"
    );
    ns.delete().await
}

#[tokio::test]
async fn harness_step_cli_certificate_verifies() -> Result<()> {
    let env = Env::load()?;
    let dir = tempfile::tempdir()?;
    let crt = dir.path().join("leaf.crt");
    let key = dir.path().join("leaf.key");
    let step = env.tool("step")?;
    let steppath = dir.path().join("steppath");
    std::fs::create_dir_all(&steppath)?;
    let envs = [("STEPPATH", steppath.to_str().context("utf-8 path")?)];
    run(
        &step,
        &[
            "ca",
            "certificate",
            "harness.example.com",
            crt.to_str().context("utf-8 path")?,
            key.to_str().context("utf-8 path")?,
            "--ca-url",
            &env.step_ca_url,
            "--root",
            env.step_ca_root.to_str().context("utf-8 path")?,
            "--provisioner",
            &env.step_provisioner,
            "--provisioner-password-file",
            env.step_provisioner_password_file
                .to_str()
                .context("utf-8 path")?,
            "--san",
            "harness.example.com",
            "--san",
            "10.1.2.3",
            "--force",
        ],
        &envs,
    )
    .await?;
    run(
        &step,
        &[
            "certificate",
            "verify",
            crt.to_str().context("utf-8 path")?,
            "--roots",
            env.step_ca_root.to_str().context("utf-8 path")?,
        ],
        &envs,
    )
    .await?;
    let inspect = run(
        &step,
        &[
            "certificate",
            "inspect",
            "--format",
            "json",
            crt.to_str().context("utf-8 path")?,
        ],
        &envs,
    )
    .await?;
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout)?;
    let sans = info["extensions"]["subject_alt_name"].to_string();
    assert!(sans.contains("harness.example.com"), "SANs: {sans}");
    assert!(sans.contains("10.1.2.3"), "SANs: {sans}");
    Ok(())
}
