//! The CertificateSigningRequest signer against the real apiserver and step-ca: a CSR created
//! for our signer name and approved with `kubectl certificate approve` is signed once; a denied
//! one is never touched; one for a name the issuer's policy refuses fails with the reason.

use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, shared_controller};
use e2e::process::run;
use e2e::{Env, dump, random_suffix, wait_for};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

struct Setup {
    env: Env,
    client: Client,
    log: String,
    issuer: String,
    /// Names under it are in the issuer's `spec.policy.names`.
    domain: String,
}

/// A StepClusterIssuer whose policy lists `*.<domain>`: the e2e's admin user is no
/// ServiceAccount, so only listed names can be signed for it.
async fn setup(prefix: &str) -> Result<Setup> {
    let env = Env::load()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let log = shared_controller(&env)?.to_string();
    let domain = format!("{}.csr.example", random_suffix());
    let wildcard = format!("*.{domain}");
    let issuer = verified_cluster_issuer_with(&env, &client, prefix, &log, |spec| {
        spec["policy"] = json!({"names": [wildcard]});
    })
    .await?
    .name_any();
    Ok(Setup {
        env,
        client,
        log,
        issuer,
        domain,
    })
}

async fn create(s: &Setup, name: &str, dns: &str) -> Result<()> {
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "request": base64(csr(dns)?.as_bytes()),
            "signerName": format!("stepclusterissuers.certmanager.step.sm/{}", s.issuer),
            "usages": ["digital signature", "server auth"],
            "expirationSeconds": 3600,
        }
    }))?;
    Api::<CertificateSigningRequest>::all(s.client.clone())
        .create(&PostParams::default(), &csr)
        .await?;
    Ok(())
}

async fn kubectl_certificate(s: &Setup, verb: &str, name: &str) -> Result<()> {
    run(&s.env.tool("kubectl")?, &["certificate", verb, name], &[]).await?;
    Ok(())
}

/// The CSR once `done` says so, printing it and the controller's log on timeout.
async fn wait_csr(
    s: &Setup,
    name: &str,
    what: &str,
    done: impl Fn(&CertificateSigningRequest) -> bool,
) -> Result<CertificateSigningRequest> {
    let api = Api::<CertificateSigningRequest>::all(s.client.clone());
    wait_for(
        &format!("CSR {name} {what}"),
        TIMEOUT,
        async || Ok(api.get_opt(name).await?.filter(|c| done(c))),
        async || {
            let log = std::fs::read_to_string(&s.log).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(20).collect();
            format!(
                "{}\nlog (newest first):\n{}",
                dump(&api.get_opt(name).await.ok().flatten()),
                tail.join("\n")
            )
        },
    )
    .await
}

fn signed(c: &CertificateSigningRequest) -> bool {
    c.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|b| !b.0.is_empty())
}

fn condition<'a>(
    c: &'a CertificateSigningRequest,
    type_: &str,
) -> Option<&'a k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition> {
    c.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|x| x.type_ == type_)
}

#[tokio::test]
async fn csr_approved_with_kubectl_is_signed_and_a_denied_one_is_untouched() -> Result<()> {
    let s = setup("csr").await?;
    let suffix = random_suffix();
    let (good, denied) = (format!("csr-good-{suffix}"), format!("csr-denied-{suffix}"));
    let name = format!("app.{}", s.domain);
    create(&s, &denied, &name).await?;
    create(&s, &good, &name).await?;
    kubectl_certificate(&s, "deny", &denied).await?;
    kubectl_certificate(&s, "approve", &good).await?;

    let issued = wait_csr(&s, &good, "to be signed", signed).await?;
    let pem = String::from_utf8(
        issued
            .status
            .as_ref()
            .and_then(|st| st.certificate.as_ref())
            .context("no certificate")?
            .0
            .clone(),
    )?;
    let leaf = leaf(&pem)?;
    assert_eq!(leaf.dns_names, std::slice::from_ref(&name), "{leaf:?}");
    let lifetime = leaf.lifetime();
    assert!(
        lifetime <= Duration::from_secs(3600 + 90) && lifetime >= Duration::from_secs(3500),
        "expirationSeconds 3600 gives an hour: {lifetime:?}"
    );
    assert!(condition(&issued, "Failed").is_none(), "{}", dump(&issued));

    // The denied one was listed first and never signed nor marked: once the approved one,
    // created after it, is signed, the controller has seen both.
    let api = Api::<CertificateSigningRequest>::all(s.client.clone());
    let untouched = api.get(&denied).await?;
    assert!(!signed(&untouched), "{}", dump(&untouched));
    assert!(
        condition(&untouched, "Failed").is_none(),
        "{}",
        dump(&untouched)
    );
    assert_eq!(
        condition(&untouched, "Denied").map(|c| c.status.as_str()),
        Some("True")
    );
    for n in [&good, &denied] {
        api.delete(n, &Default::default()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn csr_a_name_the_policy_refuses_fails_with_the_reason() -> Result<()> {
    let s = setup("csr-policy").await?;
    let name = format!("csr-refused-{}", random_suffix());
    create(&s, &name, "evil.elsewhere.example").await?;
    kubectl_certificate(&s, "approve", &name).await?;
    let failed = wait_csr(&s, &name, "to fail", |c| condition(c, "Failed").is_some()).await?;
    let cond = condition(&failed, "Failed").context("no Failed condition")?;
    assert_eq!(
        cond.reason.as_deref(),
        Some("PolicyDenied"),
        "{}",
        dump(&failed)
    );
    let message = cond.message.clone().unwrap_or_default();
    assert!(message.contains("evil.elsewhere.example"), "{message}");
    assert!(!signed(&failed), "{}", dump(&failed));
    Api::<CertificateSigningRequest>::all(s.client.clone())
        .delete(&name, &Default::default())
        .await?;
    Ok(())
}
