//! When an issuer is checked again: on a spec change, and periodically (a CA that goes away and
//! comes back, or a changed password Secret, is noticed without anyone touching the issuer). One
//! controller for this binary, with a short `--issuer-recheck-interval` and without
//! `--watch-secrets` (the chart's default).

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, Process};
use e2e::tcp_proxy::{Mode, TcpProxy};
use e2e::{Env, dump, random_letters, record_secret};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const RECHECK: &str = "3s";

/// This binary's controller (started once, stopped when the binary exits).
fn controller(env: &Env) -> Result<String> {
    static LOG: OnceLock<std::sync::Mutex<Option<Process>>> = OnceLock::new();
    let slot = LOG.get_or_init(|| std::sync::Mutex::new(None));
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(Process::start(
            env,
            "controller-rechecks",
            &[
                "controller",
                "--leader-elect=false",
                "--cluster-resource-namespace",
                CLUSTER_RESOURCE_NAMESPACE,
                "--issuer-recheck-interval",
                RECHECK,
                "--ca-timeout",
                "2s",
            ],
            &[],
        )?);
    }
    Ok(guard
        .as_ref()
        .map(|p| p.log.display().to_string())
        .unwrap_or_default())
}

fn ready(obj: &kube::api::DynamicObject) -> Value {
    condition(obj, "Ready").cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn issuer_rechecked_periodically_notices_an_outage_and_the_recovery() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let log = controller(&env)?;
    let (proxy, through) = TcpProxy::for_url(&env.step_ca_url).await?;
    let first = verified_cluster_issuer_with(&env, &client, "periodic", &log, |spec| {
        spec["url"] = json!(through);
    })
    .await?;
    let name = first.name_any();
    let api = cluster(&client, &step_cluster_issuers());
    let wait = |status: &'static str, reason: Option<&'static str>| {
        let (api, name, log) = (api.clone(), name.clone(), log.clone());
        async move {
            wait_ready_condition(&api, &name, status, reason, Duration::from_secs(30), &log).await
        }
    };
    let generation = first.metadata.generation;

    // Nobody touches the issuer: only the periodic check can notice that its CA went away.
    proxy.set(Mode::Refuse);
    let down = wait("False", None).await?;
    let reason = ready(&down)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ["CAUnreachable", "CATimeout", "CAUnavailable"].contains(&reason.as_str()),
        "a refused connection is reported as the CA being unreachable: {}",
        dump(&down)
    );
    assert!(
        ready(&down)["message"]
            .as_str()
            .is_some_and(|m| m.contains(&through.replace("https://", ""))),
        "the message names the CA address: {}",
        dump(&down)
    );
    assert_eq!(
        down.metadata.generation, generation,
        "the spec was not edited"
    );

    proxy.set(Mode::Forward);
    let back = wait("True", Some("Verified")).await?;
    assert_eq!(back.metadata.generation, generation);
    Ok(())
}

#[tokio::test]
async fn issuer_rechecked_on_spec_change() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let log = controller(&env)?;
    let ok = verified_cluster_issuer_with(&env, &client, "spec-change", &log, |_| {}).await?;
    let name = ok.name_any();
    let api = cluster(&client, &step_cluster_issuers());
    let g1 = ok.metadata.generation.unwrap_or_default();
    assert_eq!(ready(&ok)["observedGeneration"], json!(g1));

    // A provisioner name step-ca does not have.
    let patch =
        |provisioner: &str| json!({"spec": {"provisioner": {"name": provisioner, "kid": null}}});
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(patch("no-such-provisioner")),
    )
    .await?;
    let broken = wait_ready_condition(
        &api,
        &name,
        "False",
        Some("ProvisionerNotFound"),
        Duration::from_secs(30),
        &log,
    )
    .await?;
    assert_eq!(
        ready(&broken)["observedGeneration"],
        json!(g1 + 1),
        "{}",
        dump(&broken)
    );
    assert!(
        ready(&broken)["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-provisioner")),
        "{}",
        dump(&broken)
    );

    // Back to the real provisioner, this time found by name (no kid).
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(patch(&env.step_provisioner)),
    )
    .await?;
    let fixed = wait_ready_condition(
        &api,
        &name,
        "True",
        Some("Verified"),
        Duration::from_secs(30),
        &log,
    )
    .await?;
    assert_eq!(
        ready(&fixed)["observedGeneration"],
        json!(g1 + 2),
        "{}",
        dump(&fixed)
    );
    assert!(
        ready(&fixed)["message"]
            .as_str()
            .is_some_and(|m| m.contains(&env.step_provisioner_kid)),
        "the kid found by name is reported: {}",
        dump(&fixed)
    );
    api.delete(&fixed.name_any(), &Default::default()).await?;
    Ok(())
}

/// Security review M5: without the Secret watch (and so without list/watch on Secrets), a
/// password changed in its Secret is still noticed, at the next periodic re-check, which
/// re-reads the Secret. With the default 5-minute interval that is the delay users should expect.
#[tokio::test]
async fn issuer_without_secret_watch_notices_a_changed_password_at_the_recheck() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let log = controller(&env)?;
    let ok = verified_cluster_issuer_with(&env, &client, "pw-recheck", &log, |_| {}).await?;
    let name = ok.name_any();
    let api = cluster(&client, &step_cluster_issuers());
    let logs = std::fs::read_to_string(&log)?;
    assert!(
        logs.contains("Secrets are not watched") && !logs.contains("Secrets (metadata"),
        "this controller must run without the Secret watch:\n{logs}"
    );

    let wrong = format!("wrong-password-{}", random_letters(20));
    record_secret(&env, &wrong)?;
    let changed = std::time::Instant::now();
    password_secret(
        &client,
        CLUSTER_RESOURCE_NAMESPACE,
        &name,
        "password",
        &wrong,
    )
    .await?;
    let broken =
        wait_ready_condition(&api, &name, "False", None, Duration::from_secs(30), &log).await?;
    eprintln!(
        "a changed password was noticed {:?} after the Secret was written (re-check every {RECHECK})",
        changed.elapsed()
    );
    assert_eq!(
        broken.metadata.generation, ok.metadata.generation,
        "the spec was not edited"
    );

    password_secret(
        &client,
        CLUSTER_RESOURCE_NAMESPACE,
        &name,
        "password",
        &env.provisioner_password()?,
    )
    .await?;
    // A not-Ready issuer is re-checked at least as often as a Ready one, so the fixed password
    // is noticed within the interval too.
    let fixed = std::time::Instant::now();
    wait_ready_condition(
        &api,
        &name,
        "True",
        Some("Verified"),
        Duration::from_secs(30),
        &log,
    )
    .await?;
    eprintln!(
        "the fixed password was noticed {:?} after the Secret was written",
        fixed.elapsed()
    );
    api.delete(&name, &Default::default()).await?;
    Ok(())
}
