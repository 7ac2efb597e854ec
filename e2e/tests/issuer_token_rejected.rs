//! The issuer is checked again after step-ca refuses a signing token: the provisioner's key is
//! rotated at step-ca (same name, new key, same password) while the controller still holds the
//! old one. The next request gets step-ca's 401, the issuer is re-checked, finds the new key by
//! name, and the request is issued, with nobody touching the issuer.
//!
//! It restarts step-ca to load the changed configuration, so it has a test binary of its own.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process};
use e2e::process::run;
use e2e::{Env, TestNamespace, dump, random_suffix, wait_for};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

fn cluster_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster.sh")
}

fn ca_config() -> Result<String> {
    std::env::var("STEP_CA_CONFIG").context("STEP_CA_CONFIG is not set: run under `make test`")
}

/// Edits step-ca's configuration with `step ca provisioner ...` and restarts step-ca.
async fn step_provisioner(env: &Env, args: &[&str]) -> Result<()> {
    let step = env.tool("step")?;
    let cfg = ca_config()?;
    let steppath = env.state.join("step");
    let steppath = steppath.to_str().context("utf-8")?;
    let mut full = vec!["ca", "provisioner"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--ca-config", &cfg]);
    run(&step, &full, &[("STEPPATH", steppath)]).await?;
    Ok(())
}

/// Adds a JWK provisioner with a new key, encrypted with the e2e provisioner's password.
async fn add_jwk_provisioner(env: &Env, name: &str) -> Result<()> {
    let password_file = env
        .step_provisioner_password_file
        .to_str()
        .context("utf-8")?;
    step_provisioner(
        env,
        &[
            "add",
            name,
            "--type",
            "JWK",
            "--create",
            "--password-file",
            password_file,
        ],
    )
    .await
}

async fn restart_step_ca() -> Result<()> {
    run(&cluster_sh(), &["stop", "step-ca"], &[]).await?;
    run(&cluster_sh(), &["start", "step-ca"], &[]).await?;
    Ok(())
}

fn kid_of(name: &str) -> Result<String> {
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ca_config()?)?)?;
    cfg["authority"]["provisioners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["key"]["kid"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no provisioner {name} in the CA configuration"))
}

#[tokio::test]
async fn issuer_rechecked_after_step_ca_refuses_a_token() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let provisioner = format!("rotating-{}", random_suffix());
    add_jwk_provisioner(&env, &provisioner).await?;
    restart_step_ca().await?;
    let old_kid = kid_of(&provisioner)?;

    let controller = Process::start(
        &env,
        "controller-token-rejected",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            CLUSTER_RESOURCE_NAMESPACE,
        ],
        &[],
    )?;
    let log = controller.log.display().to_string();
    // Found by name: no kid in the spec, as step-issuer users who rotate keys write it.
    let ready = verified_cluster_issuer_with(&env, &client, "rotating", &log, |spec| {
        spec["provisioner"]["name"] = json!(provisioner);
        if let Some(p) = spec["provisioner"].as_object_mut() {
            p.remove("kid");
        }
    })
    .await?;
    let issuer = ready.name_any();
    let issuers = cluster(&client, &step_cluster_issuers());
    assert!(
        dump(&ready).contains(&old_kid),
        "Ready names the key in use: {}",
        dump(&ready)
    );
    let ns = TestNamespace::create(&client, "rotating").await?;
    let requests = namespaced(&client, &ns.name, &certificate_requests());
    let request = |name: &str| {
        certificate_request(
            name,
            &csr(&format!("{name}.{}.svc", ns.name))?,
            step_cluster_issuer_ref(&issuer),
        )
    };
    requests
        .create(&PostParams::default(), &request("before")?)
        .await?;
    wait_ready_condition(
        &requests,
        "before",
        "True",
        Some("Issued"),
        Duration::from_secs(60),
        &log,
    )
    .await?;

    // Rotate the key at step-ca; the controller still holds the old one.
    step_provisioner(&env, &["remove", &provisioner]).await?;
    add_jwk_provisioner(&env, &provisioner).await?;
    restart_step_ca().await?;
    let new_kid = kid_of(&provisioner)?;
    assert_ne!(old_kid, new_kid);

    requests
        .create(&PostParams::default(), &request("after")?)
        .await?;
    wait_ready_condition(
        &requests,
        "after",
        "True",
        Some("Issued"),
        Duration::from_secs(90),
        &log,
    )
    .await?;
    // It was refused once, said so, and the issuer now signs with the new key.
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    let refused = wait_for(
        "the Event that step-ca refused the token",
        Duration::from_secs(10),
        async || {
            let list = events.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("after")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("step-ca refused the signing token"))
            }))
        },
        async || controller.log_tail(),
    )
    .await?;
    assert_eq!(refused.reason.as_deref(), Some("RetryableError"));
    let issuer_now = issuers.get(&issuer).await?;
    let message = condition(&issuer_now, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&new_kid),
        "the issuer re-checked and found the new key {new_kid}: {}",
        dump(&issuer_now)
    );
    issuers.delete(&issuer, &Default::default()).await?;
    step_provisioner(&env, &["remove", &provisioner]).await?;
    restart_step_ca().await?;
    ns.delete().await
}
