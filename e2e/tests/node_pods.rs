//! Pod behaviour only a kubelet shows, on the e2e node, with step-operator installed by its chart
//! (one release shared by the tests of this file): bootstrapper-only pods have no renewer;
//! init-first lets the pod's own init containers use the files; an app running as another uid
//! reads the key through `owner`; the renewer replaces a short-lived certificate in a running pod
//! and the app sees the new file; a restarted container finds a valid certificate; and no pod can
//! send a packet off the machine.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::fixtures::{cluster, object, step_cluster_issuers};
use e2e::node::*;
use e2e::{Env, TestNamespace, random_suffix, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const LABEL: &str = "autocert.step.sm";
const CERTS: &str = "/var/run/autocert.step.sm";
const AUDIENCE: &str = "pods.step-operator.e2e";

/// The release shared by this file's tests: the namespace label its webhook serves.
struct Release {
    label: String,
    tools_image: String,
}

static RELEASE: OnceCell<Release> = OnceCell::const_new();

async fn release(env: &Env, client: &Client) -> Result<&'static Release> {
    RELEASE
        .get_or_try_init(async || {
            let node = env.node()?;
            let suffix = random_suffix();
            let label = format!("node-pods-{suffix}");
            let ns = TestNamespace::create(client, "node-pods-release").await?;
            let mut values = chart_values(env, &node, &label)?;
            // No controller: these tests need only the webhook, and this release outlives them
            // (until `cluster.sh down`); a controller would sign the requests and write the
            // issuer statuses of the test binaries that run after this one.
            values["controller"] = json!({"enabled": false});
            // A non-default token audience: every pod here bootstraps with the token the kubelet
            // projects for it.
            values["webhook"]["replicas"] = json!(1);
            values["webhook"]["tokenAudience"] = json!(AUDIENCE);
            // These pods are named like autocert's examples (`bonly`): single labels, which a
            // default install refuses (security review L1; `policy_short_names_need_the_switch`).
            values["webhook"]["allowShortNames"] = json!(true);
            let release = format!("step-operator-{suffix}");
            helm_chart(env, "install", &release, &ns.name, &values, &[]).await?;
            wait_deployment_available(
                client,
                &ns.name,
                &format!("step-operator-{suffix}-webhook"),
                Duration::from_secs(180),
            )
            .await?;
            Ok(Release {
                label,
                tools_image: node.tools_image,
            })
        })
        .await
}

/// What a test of this file starts with: the cluster, the shared release, and a fresh namespace
/// `<prefix>-<random>` that its webhook serves.
async fn app(prefix: &str) -> Result<(Env, Node, Client, TestNamespace)> {
    let env = Env::load()?;
    let node = env.node()?;
    let client = env.client().await?;
    let release = release(&env, &client).await?;
    let ns = app_namespace(&client, release, prefix).await?;
    Ok((env, node, client, ns))
}

async fn app_namespace(client: &Client, release: &Release, prefix: &str) -> Result<TestNamespace> {
    let labels = BTreeMap::from([(LABEL.to_owned(), release.label.clone())]);
    let ns = TestNamespace::create_labelled(client, prefix, labels).await?;
    wait_webhook_injects(client, &ns.name, &release.tools_image).await?;
    Ok(ns)
}

/// A pod of the tools image running `script` in its container `app`.
fn tools_pod(node: &Node, name: &str, annotations: Value, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": node.tools_image, "command": ["sh", "-c", script]}],
        },
    })
}

async fn create_pod(client: &Client, ns: &str, pod: Value) -> Result<Pod> {
    let pod: Pod = serde_json::from_value(pod)?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {}", pod.name_any()))
}

fn init_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|c| c.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

/// Waits until the container's log holds `needle`, and returns the log.
async fn wait_log(
    client: &Client,
    ns: &str,
    pod: &str,
    container: &str,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    wait_for(
        &format!("{needle:?} in the log of {pod}/{container}"),
        timeout,
        async || {
            let log = logs(client, ns, pod, container, false).await;
            Ok(log.contains(needle).then_some(log))
        },
        async || {
            format!(
                "log:\n{}\n{}",
                logs(client, ns, pod, container, false).await,
                describe_namespace(client, ns).await
            )
        },
    )
    .await
}

#[tokio::test]
async fn node_bootstrapper_only_pod_has_no_renewer() -> Result<()> {
    let (_env, node, client, ns) = app("node-bonly").await?;
    let script = format!("openssl x509 -noout -subject -in {CERTS}/site.crt && exec sleep 3600");
    let pod = tools_pod(
        &node,
        "bonly",
        json!({"autocert.step.sm/name": "bonly", "autocert.step.sm/bootstrapper-only": "true"}),
        &script,
    );
    create_pod(&client, &ns.name, pod).await?;
    let pod = wait_pod_ready(&client, &ns.name, "bonly", Duration::from_secs(120)).await?;
    ensure!(
        init_names(&pod) == ["autocert-bootstrapper"],
        "a bootstrapper-only pod should have only the bootstrapper, got {:?}",
        init_names(&pod)
    );
    let audience = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .find_map(|s| s.service_account_token.as_ref()?.audience.clone());
    ensure!(
        audience.as_deref() == Some(AUDIENCE),
        "injected token audience {audience:?}"
    );
    let log = wait_log(
        &client,
        &ns.name,
        "bonly",
        "app",
        "CN",
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        log.contains("bonly"),
        "the app did not read its certificate: {log}"
    );
    ns.delete().await
}

#[tokio::test]
async fn node_init_first_lets_own_init_containers_use_the_files() -> Result<()> {
    let (_env, node, client, ns) = app("node-first").await?;
    let mut pod = tools_pod(
        &node,
        "first",
        json!({"autocert.step.sm/name": "first", "autocert.step.sm/init-first": "true"}),
        "exec sleep 3600",
    );
    pod["spec"]["initContainers"] = json!([{
        "name": "setup", "image": node.tools_image,
        "command": ["sh", "-c", format!("openssl x509 -noout -subject -in {CERTS}/site.crt")],
    }]);
    create_pod(&client, &ns.name, pod).await?;
    let pod = wait_pod_ready(&client, &ns.name, "first", Duration::from_secs(120)).await?;
    ensure!(
        init_names(&pod) == ["autocert-bootstrapper", "autocert-renewer", "setup"],
        "init containers: {:?}",
        init_names(&pod)
    );
    let log = logs(&client, &ns.name, "first", "setup", false).await;
    ensure!(
        log.contains("first"),
        "the pod's own init container could not read the certificate: {log}"
    );
    ns.delete().await
}

#[tokio::test]
async fn node_app_as_another_uid_reads_the_key_through_owner() -> Result<()> {
    let (_env, node, client, ns) = app("node-owner").await?;
    let script = format!(
        "id -u; stat -c 'key %u:%g %a' {CERTS}/site.key; \
         if openssl pkey -in {CERTS}/site.key -noout; then echo KEY-READ; else echo KEY-UNREADABLE; fi; exec sleep 3600"
    );
    let mut pod = tools_pod(
        &node,
        "owner",
        json!({"autocert.step.sm/name": "owner", "autocert.step.sm/owner": "1000:1000"}),
        &script,
    );
    pod["spec"]["securityContext"] =
        json!({"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true});
    create_pod(&client, &ns.name, pod).await?;
    wait_pod_ready(&client, &ns.name, "owner", Duration::from_secs(120)).await?;
    let log = wait_log(
        &client,
        &ns.name,
        "owner",
        "app",
        // The last line the app prints either way: the lines before it are in the log too.
        "KEY-",
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        log.contains("key 1000:1000 600"),
        "the key is not the app user's with mode 0600: {log}"
    );
    ensure!(
        log.contains("KEY-READ"),
        "the app (uid 1000) could not read its key: {log}"
    );
    ns.delete().await
}

#[tokio::test]
async fn node_renewer_replaces_a_short_lived_certificate_in_a_running_pod() -> Result<()> {
    let (env, node, client, ns) = app("node-renew").await?;
    // The app shows its names, mode and root once, then the serial of the file it sees, every
    // second.
    let script = format!(
        "openssl x509 -noout -ext subjectAltName -in {CERTS}/site.crt; stat -c 'key mode %a' {CERTS}/site.key; \
         echo ROOT; cat {CERTS}/root.crt; echo END-ROOT; \
         while true; do echo \"serial $(openssl x509 -noout -serial -in {CERTS}/site.crt)\"; sleep 1; done"
    );
    let name = format!("renew.{}.svc", ns.name);
    let long = format!("renew.{}.svc.cluster.local", ns.name);
    let pod = tools_pod(
        &node,
        "renew",
        json!({"autocert.step.sm/name": name, "autocert.step.sm/sans": format!("{name},{long}"), "autocert.step.sm/duration": "1m"}),
        &script,
    );
    create_pod(&client, &ns.name, pod).await?;
    wait_pod_ready(&client, &ns.name, "renew", Duration::from_secs(120)).await?;
    // Renewal is due at 2/3 of the one-minute lifetime.
    let log = wait_for(
        "the app to see a renewed certificate",
        Duration::from_secs(150),
        async || {
            let log = logs(&client, &ns.name, "renew", "app", false).await;
            Ok((serials(&log).len() >= 2).then_some(log))
        },
        async || {
            format!(
                "app log:\n{}\nrenewer log:\n{}\n{}",
                logs(&client, &ns.name, "renew", "app", false).await,
                logs(&client, &ns.name, "renew", "autocert-renewer", false).await,
                describe_namespace(&client, &ns.name).await
            )
        },
    )
    .await?;
    let sans = log.lines().find(|l| l.contains("DNS:")).unwrap_or_default();
    let mut got: Vec<&str> = sans
        .split(',')
        .map(|s| s.trim().trim_start_matches("DNS:"))
        .collect();
    got.sort_unstable();
    let mut want = vec![name.as_str(), long.as_str()];
    want.sort_unstable();
    ensure!(
        got == want,
        "the certificate must carry exactly the annotated names: {sans}"
    );
    ensure!(
        log.contains("key mode 600"),
        "site.key must not be readable by others:\n{log}"
    );
    let root = log
        .split_once("ROOT\n")
        .and_then(|(_, r)| r.split_once("END-ROOT"))
        .map(|(r, _)| r.trim().to_owned())
        .unwrap_or_default();
    ensure!(
        root == env.root_pem()?.trim(),
        "root.crt is not step-ca's root:\n{root}"
    );
    let seen = serials(&log);
    ensure!(
        !seen
            .iter()
            .any(|s| s.contains("unable") || s.contains("error")),
        "the app read a broken file during renewal: {seen:?}"
    );
    ns.delete().await
}

#[tokio::test]
async fn node_restarted_container_finds_a_valid_certificate() -> Result<()> {
    let (_env, node, client, ns) = app("node-restart").await?;
    // The first run exits (the container is killed and restarted by the kubelet); the next checks
    // the files: the chain verifies, and the key belongs to the certificate.
    let script = format!(
        "if [ ! -f /work/ran ]; then touch /work/ran; echo FIRST-RUN; exit 1; fi; \
         openssl verify -CAfile {CERTS}/root.crt -untrusted {CERTS}/site.crt {CERTS}/site.crt || exit 1; \
         a=$(openssl x509 -noout -pubkey -in {CERTS}/site.crt); b=$(openssl pkey -pubout -in {CERTS}/site.key); \
         [ \"$a\" = \"$b\" ] && echo VALID-AFTER-RESTART; exec sleep 3600"
    );
    let mut pod = tools_pod(
        &node,
        "restart",
        json!({"autocert.step.sm/name": "restart"}),
        &script,
    );
    pod["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
    pod["spec"]["volumes"] = json!([{"name": "work", "emptyDir": {}}]);
    create_pod(&client, &ns.name, pod).await?;
    // Ready is no proof here: the first run is Ready until it exits. Its successor's verdict is.
    let log = wait_log(
        &client,
        &ns.name,
        "restart",
        "app",
        "VALID-AFTER-RESTART",
        Duration::from_secs(150),
    )
    .await?;
    ensure!(!log.contains("error"), "{log}");
    let pod = wait_pod_ready(&client, &ns.name, "restart", Duration::from_secs(30)).await?;
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == "app"))
        .map(|c| c.restart_count)
        .unwrap_or_default();
    ensure!(restarts >= 1, "the app container never restarted");
    let first = logs(&client, &ns.name, "restart", "app", true).await;
    ensure!(
        first.contains("FIRST-RUN"),
        "the previous instance is not the first run: {first}"
    );
    ns.delete().await
}

/// No pod can send a packet off the machine: the cluster's namespace has no route out, so a
/// connection to this machine's own address or to any other fails at once, and names outside the
/// cluster do not resolve; inside, the node and cluster DNS answer.
#[tokio::test]
async fn node_network_is_sealed() -> Result<()> {
    let env = Env::load()?;
    let node = env.node()?;
    let client = env.client().await?;

    // Where the tests run (the cluster's namespace): no default route, and outside addresses are
    // unreachable at once.
    let routes = std::process::Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()?;
    ensure!(routes.status.success(), "ip route failed: {routes:?}");
    ensure!(
        String::from_utf8_lossy(&routes.stdout).trim().is_empty(),
        "the cluster's namespace has a default route: {}",
        String::from_utf8_lossy(&routes.stdout)
    );
    let mut outside = node.host_addrs.clone();
    // TEST-NET-1: never routed anywhere, so even a broken seal sends nothing that arrives.
    outside.push("192.0.2.1".to_owned());
    for addr in &outside {
        let started = std::time::Instant::now();
        let err = tokio::net::TcpStream::connect((addr.as_str(), 443))
            .await
            .err()
            .with_context(|| {
                format!("a connection from the cluster's namespace to {addr} succeeded")
            })?;
        ensure!(
            err.kind() == std::io::ErrorKind::NetworkUnreachable
                && started.elapsed() < Duration::from_secs(1),
            "connecting to {addr}: {err} after {:?} (expected \"Network is unreachable\" at once)",
            started.elapsed()
        );
    }

    // From a pod on the pod network.
    let ns = TestNamespace::create(&client, "node-sealed").await?;
    let mut script = String::new();
    for addr in &outside {
        script.push_str(&format!(
            "s=$(date +%s); nc -w 5 {addr} 443 </dev/null >/tmp/o 2>&1; rc=$?; e=$(date +%s); echo \"out {addr} rc=$rc secs=$((e-s)) $(cat /tmp/o)\"; "
        ));
    }
    script.push_str(&format!(
        "openssl s_client -connect {ip}:10250 </dev/null >/dev/null 2>&1 && echo 'in node ok'; \
         openssl s_client -connect kubernetes.default.svc.cluster.local:443 </dev/null >/dev/null 2>&1 && echo 'in service ok'; \
         nslookup kubernetes.default.svc.cluster.local >/dev/null 2>&1 && echo 'in dns ok'; \
         nslookup one.example >/dev/null 2>&1; echo \"dns outside rc=$?\"; echo DONE; exec sleep 3600",
        ip = node.ip
    ));
    create_pod(
        &client,
        &ns.name,
        tools_pod(&node, "probe", json!({}), &script),
    )
    .await?;
    let log = wait_log(
        &client,
        &ns.name,
        "probe",
        "app",
        "DONE",
        Duration::from_secs(120),
    )
    .await?;
    for addr in &outside {
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("out {addr} ")))
            .with_context(|| format!("no result for {addr}:\n{log}"))?;
        ensure!(
            !line.contains("rc=0")
                && (line.contains("unreachable") || line.contains("No route to host")),
            "a pod's connection to {addr} did not fail for want of a route: {line}"
        );
        // Refused for want of a route, not after nc's 5 s timeout: seconds are whole (and the
        // machine may be busy), so anything well under the timeout counts as at once.
        let secs: u64 = line
            .split("secs=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no duration in {line}"))?;
        ensure!(secs <= 3, "not at once ({secs} s, nc waits 5 s): {line}");
    }
    ensure!(
        log.contains("in node ok"),
        "the pod could not reach the node (the control of this test):\n{log}"
    );
    ensure!(
        log.contains("in dns ok"),
        "cluster DNS did not answer the pod:\n{log}"
    );
    ensure!(
        log.contains("in service ok"),
        "the pod could not reach the apiserver through its Service:\n{log}"
    );
    ensure!(
        !log.contains("dns outside rc=0"),
        "a name outside the cluster resolved:\n{log}"
    );
    ns.delete().await
}

/// A pod may have its own SPIFFE ID and no other (security review L2): asking for another
/// ServiceAccount's is refused at `kubectl apply` with the ID it may use; its own is issued.
#[tokio::test]
async fn policy_a_pod_gets_only_its_own_spiffe_id() -> Result<()> {
    let (_env, node, client, ns) = app("policy-spiffe").await?;
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "app"}}))?;
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await?;
    let own = format!("spiffe://cluster.local/ns/{}/sa/app", ns.name);
    let other = format!("spiffe://cluster.local/ns/{}/sa/admin", ns.name);
    let script =
        format!("openssl x509 -noout -ext subjectAltName -in {CERTS}/site.crt; exec sleep 3600");
    let with_sans = |name: &str, uri: &str| {
        let mut pod = tools_pod(
            &node,
            name,
            json!({"autocert.step.sm/name": name, "autocert.step.sm/sans": format!("{name},{uri}")}),
            &script,
        );
        pod["spec"]["serviceAccountName"] = json!("app");
        pod
    };
    let refused = create_pod(&client, &ns.name, with_sans("other", &other))
        .await
        .err()
        .context("a pod of ServiceAccount app was admitted with admin's SPIFFE ID")?;
    let text = format!("{refused:#}");
    ensure!(
        text.contains(&format!("ServiceAccount {}/app: use {own}", ns.name)),
        "the refusal must name the ID the pod may use: {text}"
    );
    create_pod(&client, &ns.name, with_sans("own", &own)).await?;
    wait_pod_ready(&client, &ns.name, "own", Duration::from_secs(120)).await?;
    let log = wait_log(
        &client,
        &ns.name,
        "own",
        "app",
        "URI:",
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        log.contains(&format!("URI:{own}")),
        "the certificate lacks its SPIFFE ID: {log}"
    );
    ns.delete().await
}

/// Twenty annotated pods in a row each start with a certificate; the time from each create call
/// to the pod being Ready is printed (against `podcert_twenty_*`), never asserted.
#[tokio::test]
async fn pod_tls_twenty_pods_each_start_with_a_certificate() -> Result<()> {
    let (_env, node, client, ns) = app("node-twenty").await?;
    let script = format!("cat {CERTS}/site.crt && exec sleep 3600");
    let pods = (0..20)
        .map(|i| {
            let name = format!("p{i}");
            let dns = format!("p{i}.{}.svc", ns.name);
            serde_json::from_value::<Pod>(tools_pod(
                &node,
                &name,
                json!({"autocert.step.sm/name": dns}),
                &script,
            ))
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
        "autocert path: pod create to Ready with its certificate: {}",
        summary(&times)
    );
    ns.delete().await
}

/// `${POD_NAME}` and `${POD_UID}` in `autocert.step.sm/name` and `sans`: one Deployment, three
/// replicas, three sets of names, each the pod's own (the webhook checks the shape at admission;
/// `/bootstrap` expands the names from the pod its token is bound to).
#[tokio::test]
async fn pod_tls_replicas_get_their_own_names() -> Result<()> {
    let (_env, node, client, ns) = app("node-replicas").await?;
    let script = format!(
        "openssl x509 -noout -subject -ext subjectAltName -in {CERTS}/site.crt && exec sleep 3600"
    );
    let mut template = tools_pod(
        &node,
        "web",
        json!({
            "autocert.step.sm/name": format!("${{POD_NAME}}.web.{}.svc", ns.name),
            "autocert.step.sm/sans": format!("${{POD_NAME}}.web.{0}.svc,${{POD_UID}}.pods.{0}.svc", ns.name),
        }),
        &script,
    );
    // A pod template: no kind, no name.
    if let Some(t) = template.as_object_mut() {
        t.retain(|k, _| k == "metadata" || k == "spec");
    }
    if let Some(m) = template["metadata"].as_object_mut() {
        m.remove("name");
    }
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template},
    }))?;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &deployment)
        .await?;
    wait_deployment_available(&client, &ns.name, "web", Duration::from_secs(180)).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&kube::api::ListParams::default().labels("app=web"))
        .await?;
    ensure!(
        pods.items.len() == 3,
        "3 replicas, got {}",
        pods.items.len()
    );
    for pod in &pods.items {
        let name = pod.name_any();
        let own = format!("{name}.web.{}.svc", ns.name);
        let log = wait_log(
            &client,
            &ns.name,
            &name,
            "app",
            "DNS:",
            Duration::from_secs(30),
        )
        .await?;
        ensure!(
            log.contains(&own),
            "{name} lacks its own name {own}:\n{log}"
        );
        let uid = pod.uid().unwrap_or_default();
        let own_uid = format!("{uid}.pods.{}.svc", ns.name);
        ensure!(
            !uid.is_empty() && log.contains(&own_uid),
            "{name} lacks the name of its own UID {own_uid}:\n{log}"
        );
        for other in pods.items.iter().filter(|p| p.name_any() != name) {
            ensure!(
                !log.contains(&format!("{}.web", other.name_any())),
                "{name} carries another replica's name:\n{log}"
            );
        }
    }
    ns.delete().await
}

/// `autocert.step.sm/key-type` picks the key the bootstrapper makes: an EC and an RSA one.
#[tokio::test]
async fn pod_tls_key_type_per_pod() -> Result<()> {
    let (_env, node, client, ns) = app("node-keytype").await?;
    let script = format!("openssl x509 -noout -text -in {CERTS}/site.crt && exec sleep 3600");
    let cases = [
        ("p384", "EC-P384", ["384 bit", "secp384r1"]),
        ("rsa3072", "RSA-3072", ["3072 bit", "rsaEncryption"]),
    ];
    for (name, key_type, _) in cases {
        let pod = tools_pod(
            &node,
            name,
            json!({
                "autocert.step.sm/name": format!("{name}.{}.svc", ns.name),
                "autocert.step.sm/key-type": key_type,
            }),
            &script,
        );
        create_pod(&client, &ns.name, pod).await?;
    }
    for (name, key_type, wants) in cases {
        wait_pod_ready(&client, &ns.name, name, Duration::from_secs(120)).await?;
        let log = wait_log(
            &client,
            &ns.name,
            name,
            "app",
            "Public-Key",
            Duration::from_secs(30),
        )
        .await?;
        for want in wants {
            ensure!(log.contains(want), "{key_type}: no {want:?} in:\n{log}");
        }
    }
    ns.delete().await
}

/// A provisioner with renewal disabled: step-ca refuses the renewer's renewal, and the renewer
/// bootstraps a new certificate and key through the webhook instead of retrying for ever. The app
/// sees a new serial and a new key.
#[tokio::test]
async fn pod_tls_renewal_refused_rebootstraps() -> Result<()> {
    let (env, node, client, ns) = app("node-norenew").await?;
    let release = release(&env, &client).await?;
    let issuer = norenew_issuer(&client, &release.label).await?;
    let script = format!(
        "while true; do echo \"serial $(openssl x509 -noout -serial -in {CERTS}/site.crt)\"; \
         echo \"key $(openssl pkey -pubout -in {CERTS}/site.key | sha256sum | cut -c1-16)\"; sleep 2; done"
    );
    let mut pod = tools_pod(
        &node,
        "norenew",
        json!({
            "autocert.step.sm/name": format!("norenew.{}.svc", ns.name),
            "autocert.step.sm/duration": "1m",
            "autocert.step.sm/issuer": issuer,
        }),
        &script,
    );
    // The key is read by the app: run it as root like the agents (the default owner).
    pod["spec"]["securityContext"] = json!({"runAsUser": 0});
    create_pod(&client, &ns.name, pod).await?;
    wait_pod_ready(&client, &ns.name, "norenew", Duration::from_secs(120)).await?;
    // The renewal is due at 2/3 of the one-minute lifetime; step-ca refuses it.
    let log = wait_for(
        "the app to see a certificate the renewer bootstrapped after the refused renewal",
        Duration::from_secs(150),
        async || {
            let log = logs(&client, &ns.name, "norenew", "app", false).await;
            // The app prints a serial, then its key: wait for the second key too.
            Ok((serials(&log).len() >= 2 && keys_seen(&log).len() >= 2).then_some(log))
        },
        async || {
            format!(
                "app log:\n{}\nrenewer log:\n{}\n{}",
                logs(&client, &ns.name, "norenew", "app", false).await,
                logs(&client, &ns.name, "norenew", "autocert-renewer", false).await,
                describe_namespace(&client, &ns.name).await
            )
        },
    )
    .await?;
    let renewer = logs(&client, &ns.name, "norenew", "autocert-renewer", false).await;
    ensure!(
        renewer.contains("step-ca refused the renewal; bootstrapping a new certificate and key"),
        "the renewer did not say why it bootstrapped again:\n{renewer}"
    );
    let keys = keys_seen(&log);
    ensure!(
        keys.len() >= 2,
        "a re-bootstrap makes a new key, the app saw {keys:?}:\n{log}"
    );
    ns.delete().await?;
    cluster(&client, &step_cluster_issuers())
        .delete(&issuer, &Default::default())
        .await?;
    Ok(())
}

/// A StepClusterIssuer like the release's, for the provisioner `e2e-norenew` (renewal disabled).
/// The webhook reads it at `/bootstrap`; no controller needs to have checked it.
async fn norenew_issuer(client: &Client, release_issuer: &str) -> Result<String> {
    let issuers = cluster(client, &step_cluster_issuers());
    let mut spec = issuers
        .get(release_issuer)
        .await
        .with_context(|| format!("reading the release's StepClusterIssuer {release_issuer}"))?
        .data["spec"]
        .clone();
    spec["provisioner"] =
        json!({"name": "e2e-norenew", "passwordRef": spec["provisioner"]["passwordRef"]});
    let name = format!("norenew-{}", random_suffix());
    issuers
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
                "metadata": {"name": name}, "spec": spec,
            }))?,
        )
        .await
        .context("creating the e2e-norenew StepClusterIssuer")?;
    Ok(name)
}

/// `autocert.step.sm/reload-signal`: after the renewer replaces a short-lived certificate, the
/// app (a shell that traps SIGHUP, in a pod sharing its process namespace, running as the
/// `owner` the agents run as) receives the signal.
#[tokio::test]
async fn pod_tls_reload_signal_reaches_the_app_after_renewal() -> Result<()> {
    let (_env, node, client, ns) = app("node-reload").await?;
    let script = format!(
        "trap 'echo \"RELOADED $(openssl x509 -noout -serial -in {CERTS}/site.crt)\"' HUP; \
         echo \"STARTED $(openssl x509 -noout -serial -in {CERTS}/site.crt)\"; \
         while true; do sleep 1; done"
    );
    let mut pod = tools_pod(
        &node,
        "reload",
        json!({
            "autocert.step.sm/name": format!("reload.{}.svc", ns.name),
            "autocert.step.sm/duration": "1m",
            "autocert.step.sm/owner": "1000:1000",
            "autocert.step.sm/reload-signal": "SIGHUP",
            "autocert.step.sm/reload-process": "sh",
        }),
        &script,
    );
    pod["spec"]["shareProcessNamespace"] = json!(true);
    pod["spec"]["securityContext"] =
        json!({"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true});
    create_pod(&client, &ns.name, pod).await?;
    wait_pod_ready(&client, &ns.name, "reload", Duration::from_secs(120)).await?;
    // Renewal is due at 2/3 of the one-minute lifetime.
    let log = wait_log(
        &client,
        &ns.name,
        "reload",
        "app",
        "RELOADED",
        Duration::from_secs(150),
    )
    .await?;
    let serial = |prefix: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_default()
            .to_owned()
    };
    let (before, after) = (serial("STARTED "), serial("RELOADED "));
    ensure!(
        !before.is_empty() && before != after,
        "the signal came before the new certificate was in place (started with {before}, reloaded with {after}):\n{log}"
    );
    ns.delete().await
}

/// The public keys' digests the app printed; that of no input at all is a read during the
/// replacement.
fn keys_seen(log: &str) -> BTreeSet<&str> {
    log.lines()
        .filter_map(|l| l.strip_prefix("key "))
        .filter(|k| !k.is_empty() && *k != "e3b0c44298fc1c14")
        .collect()
}
