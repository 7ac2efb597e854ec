//! The name and issuer policy on CertificateRequests (security review H3), against the real
//! apiserver, cert-manager's approver and step-ca: through a StepClusterIssuer a namespace gets
//! its own names and what `spec.policy` adds, nothing else, and a namespace the policy does not
//! list gets nothing. Refused requests fail before any token is minted: no certificate.

use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::shared_controller_leading;
use e2e::{Env, TestNamespace, dump, wait_for};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

/// A PEM P-256 CSR with common name `cn` and these SANs (DNS names, IPs, or URIs with `://`).
fn csr_for(cn: &str, sans: &[&str]) -> Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    for san in sans {
        params.subject_alt_names.push(if san.contains("://") {
            rcgen::SanType::URI(san.to_string().try_into()?)
        } else if let Ok(ip) = san.parse() {
            rcgen::SanType::IpAddress(ip)
        } else {
            rcgen::SanType::DnsName(san.to_string().try_into()?)
        });
    }
    Ok(params.serialize_request(&key)?.pem()?)
}

/// Creates CertificateRequest `name` in `ns` for `issuer` and waits for its final Ready
/// condition (True, or False with reason Failed/Denied).
async fn request(
    api: &Api<DynamicObject>,
    name: &str,
    csr_pem: &str,
    issuer: &str,
    log: &str,
) -> Result<DynamicObject> {
    api.create(
        &PostParams::default(),
        &certificate_request(name, csr_pem, step_cluster_issuer_ref(issuer))?,
    )
    .await
    .with_context(|| format!("creating CertificateRequest {name}"))?;
    wait_for(
        &format!("CertificateRequest {name} to finish"),
        Duration::from_secs(60),
        async || {
            let cr = api.get(name).await?;
            let done = condition(&cr, "Ready").is_some_and(|c| {
                c["status"] == "True" || c["reason"] == "Failed" || c["reason"] == "Denied"
            });
            Ok(done.then_some(cr))
        },
        async || {
            let cr = api.get_opt(name).await.ok().flatten();
            let tail: Vec<String> = std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .map(str::to_string)
                .collect();
            format!("{}\ncontroller log:\n{}", dump(&cr), tail.join("\n"))
        },
    )
    .await
}

fn message(cr: &DynamicObject) -> String {
    condition(cr, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn has_certificate(cr: &DynamicObject) -> bool {
    cr.data["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
}

#[tokio::test]
async fn policy_cluster_issuer_signs_only_what_the_policy_allows() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let log = shared_controller_leading(&env).await?;
    let team = TestNamespace::create(&client, "policy-team").await?;
    let other = TestNamespace::create(&client, "policy-other").await?;
    let team_name = team.name.clone();
    let issuer = verified_cluster_issuer_with(&env, &client, "policy", &log, |spec| {
        spec["policy"] = json!({"namespaces": [team_name], "names": ["*.policy.example"]});
    })
    .await?;
    let issuer_name = kube::ResourceExt::name_any(&issuer);
    let policy = condition(&issuer, "NamePolicy")
        .cloned()
        .unwrap_or_default();
    assert_eq!(policy["status"], "True", "{policy}");
    assert_eq!(policy["reason"], "Restricted", "{policy}");
    assert!(
        policy["message"]
            .as_str()
            .is_some_and(|m| m.contains(&team.name) && m.contains("*.policy.example")),
        "{policy}"
    );

    let requests = namespaced(&client, &team.name, &certificate_requests());
    let t = &team.name;
    // Its own names, and what the policy adds: issued.
    let own = format!("api.{t}.svc");
    let spiffe = format!("spiffe://cluster.local/ns/{t}/sa/app");
    for (name, cn, sans) in [
        ("own", own.as_str(), vec![own.as_str(), spiffe.as_str()]),
        ("added", "a.policy.example", vec!["a.policy.example"]),
    ] {
        let cr = request(&requests, name, &csr_for(cn, &sans)?, &issuer_name, &log).await?;
        assert!(
            condition(&cr, "Ready").is_some_and(|c| c["status"] == "True") && has_certificate(&cr),
            "{name} was not issued: {}",
            dump(&cr)
        );
    }
    // Everything else: Failed with the rule and the fix, and no certificate.
    let cases: [(&str, &str, Vec<&str>, &str); 6] = [
        (
            "other-ns",
            "api.other.svc",
            vec!["api.other.svc"],
            "is not allowed in namespace",
        ),
        (
            "ip",
            own.as_str(),
            vec![own.as_str(), "10.0.0.1"],
            "IP address",
        ),
        (
            "spiffe",
            own.as_str(),
            vec![own.as_str(), "spiffe://cluster.local/ns/kube-system/sa/x"],
            "URI",
        ),
        (
            "wildcard",
            "*.example.com",
            vec!["*.example.com"],
            "is not allowed in namespace",
        ),
        ("short", "db", vec!["db"], "single-label name"),
        (
            "webhook",
            "step-operator-webhook.step-operator.svc",
            vec!["step-operator-webhook.step-operator.svc"],
            "is not allowed in namespace",
        ),
    ];
    for (name, cn, sans, why) in cases {
        let cr = request(&requests, name, &csr_for(cn, &sans)?, &issuer_name, &log).await?;
        let ready = condition(&cr, "Ready").cloned().unwrap_or_default();
        assert_eq!(ready["reason"], "Failed", "{name}: {}", dump(&cr));
        let text = message(&cr);
        assert!(
            text.contains("Refused by the name policy")
                && text.contains(&format!("StepClusterIssuer {issuer_name}"))
                && text.contains(why),
            "{name}: {text}"
        );
        assert!(
            !has_certificate(&cr),
            "{name} got a certificate: {}",
            dump(&cr)
        );
    }

    // A namespace the policy does not list gets nothing, not even its own names.
    let other_requests = namespaced(&client, &other.name, &certificate_requests());
    let own_other = format!("api.{}.svc", other.name);
    let cr = request(
        &other_requests,
        "own",
        &csr_for(&own_other, &[&own_other])?,
        &issuer_name,
        &log,
    )
    .await?;
    assert_eq!(
        condition(&cr, "Ready").map(|c| c["reason"].clone()),
        Some(json!("Failed")),
        "{}",
        dump(&cr)
    );
    assert!(
        message(&cr).contains(&format!(
            "may not be used from namespace \"{}\"",
            other.name
        )),
        "{}",
        message(&cr)
    );
    assert!(!has_certificate(&cr));
    team.delete().await?;
    other.delete().await
}

/// A StepClusterIssuer without `spec.policy` says what that means (the e2e controller runs with
/// the binary's default, step-issuer's `allow-any-name`); a StepIssuer with a namespace list is
/// told that it has one namespace.
#[tokio::test]
async fn policy_issuers_say_which_policy_applies() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let log = shared_controller_leading(&env).await?;
    let open = verified_cluster_issuer_with(&env, &client, "policy-none", &log, |_| {}).await?;
    let policy = condition(&open, "NamePolicy").cloned().unwrap_or_default();
    assert_eq!(policy["status"], "False", "{policy}");
    assert_eq!(policy["reason"], "NoPolicy", "{policy}");
    assert!(
        policy["message"].as_str().is_some_and(|m| m
            .contains("any namespace may get a certificate for any name")
            && m.contains("Set spec.policy")),
        "{policy}"
    );

    let ns = TestNamespace::create(&client, "policy-local").await?;
    password_secret(
        &client,
        &ns.name,
        "local",
        "password",
        &env.provisioner_password()?,
    )
    .await?;
    let mut spec = issuer_spec(&env, json!({"name": "local", "key": "password"}))?;
    spec["policy"] = json!({"namespaces": ["elsewhere"]});
    let issuers = namespaced(&client, &ns.name, &step_issuers());
    apply(
        &issuers,
        json!({
            "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepIssuer",
            "metadata": {"name": "local"}, "spec": spec,
        }),
    )
    .await?;
    let refused = wait_ready_condition(
        &issuers,
        "local",
        "False",
        Some("InvalidSpec"),
        Duration::from_secs(30),
        &log,
    )
    .await?;
    assert!(
        ready_message(&refused).contains("spec.policy.namespaces is for StepClusterIssuers"),
        "{}",
        ready_message(&refused)
    );
    ns.delete().await
}
