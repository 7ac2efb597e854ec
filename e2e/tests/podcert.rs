//! Pod certificates (`certificates.k8s.io/v1` PodCertificateRequests, GA in 1.37) on the e2e
//! node: the kubelet makes the key and the request for a `podCertificate` projected volume, the
//! controller signs it through the real step-ca, and the kubelet writes the chain into the pod.
//! Every replica gets its own certificate with its own names; a name the issuer's policy refuses
//! ends the request `Denied` with the reason, on the request and in the pod's events.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::fixtures::*;
use e2e::node::*;
use e2e::operator::{
    CLUSTER_RESOURCE_NAMESPACE, metric_value, shared_controller_leading, shared_controller_metrics,
};
use e2e::{Env, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::certificates::v1::{ClusterTrustBundle, PodCertificateRequest};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// A pod template whose container prints its certificate chain (never its key) and waits.
fn template(node: &Node, app: &str, signer: &str, dns_names: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": podcert_pod_spec(
            node,
            &format!("cat {PODCERT_CHAIN}; echo END-OF-CHAIN; exec sleep 3600"),
            json!([podcert_source(
                signer,
                json!({"userAnnotations": {"podcert.step.sm/dns-names": dns_names}}),
            )]),
        ),
    })
}

async fn setup(prefix: &str) -> Result<(Env, Node, Client, TestNamespace, String)> {
    let env = Env::load()?;
    let node = env.node()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let log = shared_controller_leading(&env).await?;
    let issuer = ready_cluster_issuer(&env, &client, prefix, &log).await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    Ok((env, node, client, ns, issuer))
}

#[tokio::test]
async fn podcert_replicas_get_distinct_certificates_with_their_identity() -> Result<()> {
    let (_env, node, client, ns, issuer) = setup("podcert").await?;
    let signer = format!("stepclusterissuers.certmanager.step.sm/{issuer}");
    let dns = "${POD_NAME}.web.${POD_NAMESPACE}.svc";
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(&node, "web", &signer, dns),
        },
    }))?;
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &deployment)
        .await
        .context("creating the Deployment")?;
    wait_deployment_available(&client, &ns.name, "web", Duration::from_secs(180)).await?;

    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels("app=web"))
        .await?;
    ensure!(
        pods.items.len() == 3,
        "3 replicas, got {}",
        pods.items.len()
    );
    let mut serials = BTreeSet::new();
    for pod in &pods.items {
        let name = pod.name_any();
        let log = wait_for(
            &format!("the certificate chain in the log of {name}"),
            Duration::from_secs(60),
            async || {
                let log = logs(&client, &ns.name, &name, "app", false).await;
                Ok(log.contains("END-OF-CHAIN").then_some(log))
            },
            async || describe_namespace(&client, &ns.name).await,
        )
        .await?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(log.as_bytes())
            .map_err(|e| anyhow::anyhow!("{name}'s chain does not start with a PEM block: {e}"))?;
        let cert = pem.parse_x509().context("the leaf parses")?;
        serials.insert(cert.raw_serial().to_vec());
        let sans = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|e| format!("{:?}", e.value.general_names))
            .unwrap_or_default();
        let spiffe = format!("spiffe://cluster.local/ns/{}/sa/default", ns.name);
        let own = format!("{name}.web.{}.svc", ns.name);
        ensure!(sans.contains(&spiffe), "{name}: {sans} lacks {spiffe}");
        ensure!(
            sans.contains(&own),
            "{name}: {sans} lacks its own name {own}"
        );
        for other in pods.items.iter().filter(|p| p.name_any() != name) {
            ensure!(
                !sans.contains(&format!("{}.web", other.name_any())),
                "{name} carries another replica's name: {sans}"
            );
        }
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        ensure!(
            life == 86_400,
            "{name}: lifetime {life}s, want the kubelet's default 86400s"
        );
    }
    ensure!(
        serials.len() == 3,
        "3 distinct certificates, got {}",
        serials.len()
    );

    // The requests show the kubelet's refresh hint inside the validity.
    let requests = Api::<PodCertificateRequest>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await?;
    for r in &requests.items {
        let s = r.status.clone().unwrap_or_default();
        let (Some(nb), Some(refresh), Some(na)) = (
            s.not_before.clone(),
            s.begin_refresh_at.clone(),
            s.not_after.clone(),
        ) else {
            anyhow::bail!("{} has no validity in its status: {s:?}", r.name_any());
        };
        ensure!(
            nb.0 < refresh.0 && refresh.0 < na.0,
            "{}: {s:?}",
            r.name_any()
        );
    }
    ns.delete().await
}

#[tokio::test]
async fn podcert_a_name_the_policy_refuses_is_denied_with_the_reason() -> Result<()> {
    let (_env, node, client, ns, issuer) = setup("podcert-deny").await?;
    let signer = format!("stepclusterissuers.certmanager.step.sm/{issuer}");
    let mut pod = template(&node, "greedy", &signer, "api.kube-system.svc");
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["name"] = json!("greedy");
    let pod: Pod = serde_json::from_value(pod)?;
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &pod)
        .await?;

    let requests = Api::<PodCertificateRequest>::namespaced(client.clone(), &ns.name);
    let denied = wait_for(
        "the pod's PodCertificateRequest to be Denied",
        Duration::from_secs(120),
        async || {
            let list = requests.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find_map(|r| {
                r.status
                    .and_then(|s| s.conditions)
                    .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Denied"))
            }))
        },
        async || describe_namespace(&client, &ns.name).await,
    )
    .await?;
    ensure!(denied.reason == "PolicyDenied", "{denied:?}");
    ensure!(denied.message.contains("api.kube-system.svc"), "{denied:?}");

    // The pod's events say so too: that is where `kubectl describe pod` looks.
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    wait_for(
        "a PolicyDenied Event regarding the pod",
        Duration::from_secs(30),
        async || {
            let list = events.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("PolicyDenied")
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Pod")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("greedy")
            }))
        },
        async || describe_namespace(&client, &ns.name).await,
    )
    .await?;
    ns.delete().await
}

/// A pod whose projected volume holds its pod certificate and the issuer's roots from the
/// ClusterTrustBundle the controller publishes, running `script`.
fn mtls_pod(node: &Node, name: &str, signer: &str, script: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": podcert_pod_spec(
            node,
            script,
            json!([
                podcert_source(signer, json!({})),
                {"clusterTrustBundle": {"signerName": signer, "labelSelector": {}, "path": "ca.pem"}},
            ]),
        ),
    }))?)
}

#[tokio::test]
async fn podcert_pods_speak_mtls_trusting_the_cluster_trust_bundle() -> Result<()> {
    let (_env, node, client, ns, issuer) = setup("podcert-mtls").await?;
    let signer = format!("stepclusterissuers.certmanager.step.sm/{issuer}");
    let bundles = Api::<ClusterTrustBundle>::all(client.clone());
    let bundle_name = format!("stepclusterissuers.certmanager.step.sm:{issuer}:roots");
    let bundle = wait_for(
        &format!("ClusterTrustBundle {bundle_name}"),
        Duration::from_secs(60),
        async || Ok(bundles.get_opt(&bundle_name).await?),
        async || String::new(),
    )
    .await?;
    ensure!(
        bundle.spec.signer_name.as_deref() == Some(signer.as_str()),
        "{bundle:?}"
    );
    ensure!(
        bundle.spec.trust_bundle.contains("BEGIN CERTIFICATE"),
        "{bundle:?}"
    );

    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let d = "/var/run/podcert";
    let server = format!(
        "exec openssl s_server -accept 8443 -cert {d}/chain.pem -cert_chain {d}/chain.pem -key {d}/key.pem -CAfile {d}/ca.pem -Verify 2 -verify_return_error -www"
    );
    pods.create(
        &PostParams::default(),
        &mtls_pod(&node, "server", &signer, &server)?,
    )
    .await?;
    let ready = wait_pod_ready(&client, &ns.name, "server", Duration::from_secs(120)).await?;
    let ip = ready
        .status
        .and_then(|s| s.pod_ip)
        .context("the server pod has an IP")?;
    // The client verifies the server with the bundle's roots and presents its own certificate,
    // which the server verifies the same way (-Verify: a client certificate is required).
    let client_script = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client -connect {ip}:8443 -cert {d}/chain.pem -cert_chain {d}/chain.pem -key {d}/key.pem -CAfile {d}/ca.pem -verify_return_error -brief 2>&1; echo \"exit=$?\"; exec sleep 3600"
    );
    pods.create(
        &PostParams::default(),
        &mtls_pod(&node, "client", &signer, &client_script)?,
    )
    .await?;
    let log = wait_for(
        "the client's TLS handshake to end",
        Duration::from_secs(120),
        async || {
            let log = logs(&client, &ns.name, "client", "app", false).await;
            Ok(log.contains("exit=").then_some(log))
        },
        async || describe_namespace(&client, &ns.name).await,
    )
    .await?;
    ensure!(log.contains("exit=0"), "the mTLS exchange failed:\n{log}");
    ensure!(
        log.contains("Verification: OK"),
        "the server was not verified:\n{log}"
    );
    let server_log = logs(&client, &ns.name, "server", "app", false).await;
    ensure!(
        !server_log.contains("verify error"),
        "the server refused the client's certificate:\n{server_log}"
    );
    ns.delete().await
}

/// Twenty pods in a row each start with a certificate; the time from each create call to the pod
/// being Ready is printed (the number quoted against the annotation path, `pod_tls_twenty_*`),
/// never asserted: timings belong to `make bench`.
#[tokio::test]
async fn podcert_twenty_pods_each_start_with_a_certificate() -> Result<()> {
    let (_env, node, client, ns, issuer) = setup("podcert-twenty").await?;
    let signer = format!("stepclusterissuers.certmanager.step.sm/{issuer}");
    let pods = (0..20)
        .map(|i| {
            let mut pod = template(&node, "twenty", &signer, "");
            pod["apiVersion"] = json!("v1");
            pod["kind"] = json!("Pod");
            pod["metadata"]["name"] = json!(format!("p{i}"));
            serde_json::from_value::<Pod>(pod)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let times = pod_start_times(&client, &ns.name, pods, Duration::from_secs(120)).await?;
    for i in 0..20 {
        let log = logs(&client, &ns.name, &format!("p{i}"), "app", false).await;
        ensure!(
            log.contains("BEGIN CERTIFICATE"),
            "p{i} has no certificate:\n{log}"
        );
    }
    eprintln!(
        "pod certificates: pod create to Ready with its certificate: {}",
        summary(&times)
    );
    // The controller measures its share of each start: the request's creation to its certificate.
    let text = shared_controller_metrics().await?;
    let series = "step_operator_pod_certificate_issuance_duration_seconds_count";
    let count =
        metric_value(&text, series)?.with_context(|| format!("no series {series} in:\n{text}"))?;
    ensure!(
        count >= 20.0,
        "the controller that signed these 20 pods' requests counted {count} in its histogram:\n{text}"
    );
    ns.delete().await
}
