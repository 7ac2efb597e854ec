//! Another controller finishes a request while ours is signing it (step-issuer left running after
//! a migration, say): our status write is conditional on what we read, so the apiserver refuses
//! it (409) and the other controller's certificate stays; ours is dropped with its serial in the
//! log, and the request gets a `SignedByAnotherController` Warning that says what to stop.
//!
//! The test holds our controller inside its call to step-ca (a proxy that forwards nothing until
//! told), writes the request's status as another field manager, and lets the call finish. Its own
//! binary: its controller must be the only one acting on requests.

use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process};
use e2e::tcp_proxy::{Mode, TcpProxy};
use e2e::{Env, TestNamespace, dump, wait_for};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const RIVAL: &str = "rival-controller";

#[tokio::test]
async fn fault_another_controller_signs_first_our_write_is_refused_and_told() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let controller = Process::start(
        &env,
        "controller-rival-write",
        &[
            "controller",
            "--leader-elect=false",
            "--cluster-resource-namespace",
            CLUSTER_RESOURCE_NAMESPACE,
            // The held call must not time out before the test lets it finish.
            "--ca-timeout",
            "60s",
        ],
        &[],
    )?;
    let log = controller.log.display().to_string();
    let (proxy, through) = TcpProxy::for_url(&env.step_ca_url).await?;
    let issuer = verified_cluster_issuer_with(&env, &client, "rival", &log, |spec| {
        spec["url"] = json!(through);
    })
    .await?
    .name_any();

    let ns = TestNamespace::create(&client, "rival-write").await?;
    let requests = namespaced(&client, &ns.name, &certificate_requests());
    proxy.set(Mode::Blackhole);
    requests
        .create(
            &PostParams::default(),
            &certificate_request(
                "contested",
                &csr(&format!("contested.{}.svc", ns.name))?,
                step_cluster_issuer_ref(&issuer),
            )?,
        )
        .await?;
    let signing = format!("request=contested namespace=\"{}\"", ns.name);
    wait_for(
        "our controller to be inside its call to step-ca",
        Duration::from_secs(60),
        async || {
            Ok(controller
                .logs()
                .lines()
                .any(|l| l.contains(&signing) && l.contains(": Signing issuer="))
                .then_some(()))
        },
        async || controller.log_tail(),
    )
    .await?;

    // The other controller's certificate: any PEM will do, the root is at hand.
    let theirs = base64(env.root_pem()?.as_bytes());
    let now = Timestamp::now().to_string();
    requests
        .patch_status(
            "contested",
            &PatchParams {
                field_manager: Some(RIVAL.into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"status": {
                "certificate": theirs,
                "conditions": [
                    {"type": "Approved", "status": "True", "reason": "Approved", "message": "approved", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "reason": "Issued", "message": "signed by the other controller", "lastTransitionTime": now},
                ],
            }})),
        )
        .await?;
    proxy.set(Mode::Forward);

    let told = wait_event(
        &client,
        &ns.name,
        "contested",
        "SignedByAnotherController",
        Duration::from_secs(60),
        &log,
    )
    .await?;
    let note = told.note.clone().unwrap_or_default();
    ensure!(
        note.contains(RIVAL) && note.contains("stop the other one"),
        "the Warning names the other field manager and the fix: {note}"
    );
    // Our certificate was signed (the held call finished) and dropped, never written.
    wait_for(
        "the log to say that our certificate is not used",
        Duration::from_secs(30),
        async || {
            Ok(controller
                .logs()
                .lines()
                .any(|l| {
                    l.contains(&signing)
                        && l.contains("Another controller signed this request first")
                        && l.contains("serial=")
                })
                .then_some(()))
        },
        async || controller.log_tail(),
    )
    .await?;
    let after = requests.get_status("contested").await?;
    ensure!(
        after.data["status"]["certificate"].as_str() == Some(theirs.as_str()),
        "the other controller's certificate stays: {}",
        dump(&after)
    );
    ensure!(
        ready_message(&after) == "signed by the other controller",
        "{}",
        dump(&after)
    );
    ns.delete().await
}
