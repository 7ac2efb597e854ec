//! step-ca stopped while requests wait: they stay Pending, never Failed, and are issued once it
//! is back; so does a pod certificate the kubelet asks for meanwhile (a Failed one would leave
//! the pod without a certificate for good). Its own test binary, because it stops the shared
//! step-ca.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::fixtures::*;
use e2e::node::{podcert_pod_spec, podcert_source, wait_pod_ready};
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, shared_controller_leading};
use e2e::{Env, TestNamespace, dump, random_suffix, wait_for};
use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

fn cluster_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster.sh")
}

async fn cluster_component(action: &str, component: &str) -> Result<()> {
    let out = tokio::process::Command::new(cluster_sh())
        .args([action, component])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "cluster.sh {action} {component} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[tokio::test]
async fn issuer_requests_stay_pending_while_step_ca_is_down() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    // This test stops step-ca: the controller that checks the issuer must be this binary's.
    let log = shared_controller_leading(&env).await?;
    let name = format!("outage-{}", random_suffix());
    password_secret(
        &client,
        CLUSTER_RESOURCE_NAMESPACE,
        &name,
        "password",
        &env.provisioner_password()?,
    )
    .await?;
    let issuers = cluster(&client, &step_cluster_issuers());
    apply(
        &issuers,
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
            "metadata": {"name": name},
            "spec": issuer_spec(&env, json!({"name": name, "key": "password", "namespace": CLUSTER_RESOURCE_NAMESPACE}))?,
        }),
    )
    .await?;
    wait_ready_condition(
        &issuers,
        &name,
        "True",
        Some("Verified"),
        Duration::from_secs(60),
        &log,
    )
    .await?;

    let node = env.node()?;
    cluster_component("stop", "step-ca").await?;
    let result = async {
        let ns = TestNamespace::create(&client, "issuer-outage").await?;
        let signer = format!("stepclusterissuers.certmanager.step.sm/{name}");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "podcert"},
            "spec": podcert_pod_spec(&node, "exec sleep 3600", json!([podcert_source(&signer, json!({}))])),
        }))?;
        Api::<Pod>::namespaced(client.clone(), &ns.name)
            .create(&PostParams::default(), &pod)
            .await?;
        let certs = namespaced(&client, &ns.name, &certificates());
        let requests = namespaced(&client, &ns.name, &certificate_requests());
        for i in 0..5 {
            certs
                .create(
                    &PostParams::default(),
                    &object(json!({
                        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                        "metadata": {"name": format!("c{i}")},
                        "spec": {"secretName": format!("c{i}-tls"), "dnsNames": [format!("c{i}.example.com")],
                                 "issuerRef": {"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": name}}
                    }))?,
                )
                .await?;
        }
        // Every request reaches Pending with a message that says the CA cannot be reached and
        // that it will be retried (not Pending for another reason, e.g. an issuer not Ready)...
        let on_the_ca = |r: &kube::api::DynamicObject| {
            let message = ready_message(r);
            condition(r, "Ready").is_some_and(|c| c["reason"] == "Pending")
                && message.contains("will retry")
                && message.contains("cannot reach step-ca")
        };
        wait_for(
            "all 5 requests to be Pending on the unreachable CA",
            Duration::from_secs(60),
            async || {
                let list = requests.list(&Default::default()).await?.items;
                if let Some(failed) = list
                    .iter()
                    .find(|r| condition(r, "Ready").is_some_and(|c| c["reason"] == "Failed"))
                {
                    bail!("a request failed while the CA is down: {}", dump(failed));
                }
                let pending = list.iter().filter(|r| on_the_ca(r)).count();
                Ok((list.len() == 5 && pending == 5).then_some(()))
            },
            async || dump(&requests.list(&Default::default()).await.ok().map(|l| l.items)),
        )
        .await?;
        // ...and none turns Failed while the CA stays down for 20 s.
        e2e::faults::assert_none_failed_for(&requests, Duration::from_secs(20))
            .await
            .context("during the CA outage")?;
        Ok::<_, anyhow::Error>((ns, requests))
    }
    .await;
    // Whatever happened, bring step-ca back for the other tests.
    cluster_component("start", "step-ca").await?;
    let (ns, requests) = result?;
    wait_for(
        "all requests to be Issued after step-ca is back",
        Duration::from_secs(90),
        async || {
            let list = requests.list(&Default::default()).await?.items;
            if let Some(failed) = list
                .iter()
                .find(|r| condition(r, "Ready").is_some_and(|c| c["reason"] == "Failed"))
            {
                bail!("a request failed after the outage: {}", dump(failed));
            }
            let issued = list
                .iter()
                .filter(|r| condition(r, "Ready").is_some_and(|c| c["reason"] == "Issued"))
                .count();
            Ok((issued == 5).then_some(()))
        },
        async || {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<_> = log_text.lines().rev().take(30).collect();
            format!(
                "{}\ncontroller log (newest first):\n{}",
                dump(
                    &requests
                        .list(&Default::default())
                        .await
                        .ok()
                        .map(|l| l.items)
                ),
                tail.join("\n")
            )
        },
    )
    .await
    .context("requests after the outage")?;
    // The pod certificate asked for during the outage: one request, Issued, never Failed.
    wait_pod_ready(&client, &ns.name, "podcert", Duration::from_secs(120)).await?;
    let pcrs = Api::<PodCertificateRequest>::namespaced(client.clone(), &ns.name)
        .list(&Default::default())
        .await?
        .items;
    let types: Vec<_> = pcrs
        .iter()
        .flat_map(|r| r.status.iter().flat_map(|s| s.conditions.iter().flatten()))
        .map(|c| c.type_.as_str())
        .collect();
    ensure!(
        pcrs.len() == 1 && types == ["Issued"],
        "one pod certificate request, Issued after the outage; seen {} with conditions {types:?}",
        pcrs.len()
    );
    ns.delete().await
}
