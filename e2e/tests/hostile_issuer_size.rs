//! Security review M3: the apiserver itself refuses issuers whose tenant strings are oversized,
//! so the controller never caches or parses them. Needs only the apiserver and the CRDs (no
//! controller, no node).

use anyhow::{Context as _, Result, bail, ensure};
use e2e::fixtures::*;
use e2e::{Env, TestNamespace};
use kube::api::{DynamicObject, PostParams};
use serde_json::{Value, json};

fn issuer(name: &str, url: &str, ca_bundle: &[u8]) -> Value {
    json!({
        "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepIssuer",
        "metadata": {"name": name},
        "spec": {"url": url, "caBundle": base64(ca_bundle),
                 "provisioner": {"name": "e2e", "passwordRef": {"name": "pw", "key": "password"}}},
    })
}

/// The apiserver's answer to a create: Ok, or its error message.
async fn create(
    api: &kube::Api<DynamicObject>,
    v: Value,
) -> Result<std::result::Result<(), String>> {
    match api.create(&PostParams::default(), &object(v)?).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(s)) => Ok(Err(format!("{} ({}): {}", s.reason, s.code, s.message))),
        Err(e) => Err(e).context("creating a StepIssuer"),
    }
}

#[tokio::test]
async fn hostile_issuer_oversized_fields_are_refused_by_the_apiserver() -> Result<()> {
    let env = Env::load()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "hostile-size").await?;
    let api = namespaced(&client, &ns.name, &step_issuers());
    let url = "https://step-ca.example";

    // 100 KiB of caBundle: refused, and the message names the field and the limit.
    let refused = create(&api, issuer("big-bundle", url, &vec![b'A'; 100 * 1024])).await?;
    let Err(message) = refused else {
        bail!("a StepIssuer with a 100 KiB caBundle was accepted");
    };
    ensure!(
        message.contains("spec.caBundle") && message.contains("87384"),
        "the refusal should name spec.caBundle and its limit: {message}"
    );

    // 64 KiB, the documented limit, is still accepted (the controller reports what is wrong
    // with it; the apiserver only bounds the size).
    let at_limit = create(&api, issuer("limit-bundle", url, &vec![b'A'; 64 * 1024])).await?;
    ensure!(
        at_limit.is_ok(),
        "a 64 KiB caBundle was refused: {at_limit:?}"
    );

    // A 3 KiB URL and a 300-character provisioner name are refused too.
    let long_url = format!("{url}/{}", "a".repeat(3 * 1024));
    let Err(message) = create(&api, issuer("long-url", &long_url, b"x")).await? else {
        bail!("a StepIssuer with a 3 KiB url was accepted");
    };
    ensure!(message.contains("spec.url"), "{message}");
    let mut long_name = issuer("long-name", url, b"x");
    long_name["spec"]["provisioner"]["name"] = json!("p".repeat(300));
    let Err(message) = create(&api, long_name).await? else {
        bail!("a StepIssuer with a 300-character provisioner name was accepted");
    };
    ensure!(message.contains("spec.provisioner.name"), "{message}");
    ns.delete().await
}
