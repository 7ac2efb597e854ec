//! Issuance you can trust, against the real step-ca and cert-manager's Certificate flow: the
//! templates of docs/templates give exactly what a Certificate asks for (a CA included); with
//! step-ca's default template, what is weaker fails and what is dropped is told; durations are
//! capped by `spec.maxDuration` and checked against the provisioner's claims before step-ca is
//! asked; a provisioner key can come from a Secret; failures carry the X-Request-Id; the issuer's
//! status shows the CA's facts, refreshed at once by the recheck annotation.
//!
//! The e2e step-ca has the provisioners `e2e-fidelity` (leaf template, claims 1m..48h),
//! `e2e-ca` (CA template) and `e2e-nokey` (no encryptedKey; its JWE is `$STEP_NOKEY_JWE`); see
//! `add_fidelity_provisioners` in e2e/cluster.sh.

use std::time::Duration;

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::{CLUSTER_RESOURCE_NAMESPACE, shared_controller};
use e2e::{Env, TestNamespace, dump, wait_for};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use step_operator::pki;
use x509_parser::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(60);

struct Setup {
    env: Env,
    client: Client,
    log: String,
}

async fn setup() -> Result<Setup> {
    let env = Env::load()?;
    let client = env.client().await?;
    ensure_namespace(&client, CLUSTER_RESOURCE_NAMESPACE).await?;
    let log = shared_controller(&env)?.to_string();
    Ok(Setup { env, client, log })
}

/// A Verified StepClusterIssuer for the provisioner `provisioner` (found by name), with `extra`
/// merged into its spec.
async fn issuer(s: &Setup, prefix: &str, provisioner: &str, extra: Value) -> Result<String> {
    let provisioner = provisioner.to_string();
    let obj = verified_cluster_issuer_with(&s.env, &s.client, prefix, &s.log, |spec| {
        spec["provisioner"]["name"] = json!(provisioner);
        if let Some(p) = spec["provisioner"].as_object_mut() {
            p.remove("kid");
        }
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
    })
    .await?;
    Ok(obj.name_any())
}

fn certificate(name: &str, issuer: &str, spec: Value) -> Result<DynamicObject> {
    let mut full = json!({
        "secretName": format!("{name}-tls"),
        "issuerRef": {"group": "certmanager.step.sm", "kind": "StepClusterIssuer", "name": issuer},
    });
    if let (Some(full), Some(spec)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(spec.clone());
    }
    object(
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": name}, "spec": full}),
    )
}

/// The CertificateRequest cert-manager made for Certificate `name`, once our Ready condition has
/// `status`.
async fn request_of(s: &Setup, ns: &str, name: &str, status: &str) -> Result<DynamicObject> {
    let requests = namespaced(&s.client, ns, &certificate_requests());
    let certs = namespaced(&s.client, ns, &certificates());
    wait_for(
        &format!("the CertificateRequest of Certificate {ns}/{name} to have Ready={status}"),
        TIMEOUT,
        async || {
            let list = requests.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|r| {
                r.annotations()
                    .get("cert-manager.io/certificate-name")
                    .map(String::as_str)
                    == Some(name)
                    && condition(r, "Ready").is_some_and(|c| c["status"] == status)
            }))
        },
        async || {
            let c = certs.get_opt(name).await.ok().flatten();
            let r = requests
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .ok();
            let log = std::fs::read_to_string(&s.log).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(20).collect();
            format!(
                "certificate: {}\nrequests: {}\nlog (newest first):\n{}",
                dump(&c),
                dump(&r),
                tail.join("\n")
            )
        },
    )
    .await
}

fn ready_message(obj: &DynamicObject) -> String {
    condition(obj, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn issued_pem(cr: &DynamicObject) -> Result<String> {
    use base64::Engine as _;
    let b64 = cr.data["status"]["certificate"]
        .as_str()
        .with_context(|| format!("no certificate: {}", dump(cr)))?;
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(b64)?,
    )?)
}

fn first_der(pem_text: &str) -> Result<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| anyhow::anyhow!("no PEM certificate: {e}"))?;
    Ok(block.contents)
}

/// The request's CSR as our own parser reads it.
fn csr_of(cr: &DynamicObject) -> Result<pki::csr::Csr> {
    use base64::Engine as _;
    let b64 = cr.data["spec"]["request"]
        .as_str()
        .context("no spec.request")?;
    let pem_bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    pki::csr::parse_csr(&pem_bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Compares what was issued with what the request asked, with the controller's own rules.
fn fidelity(cr: &DynamicObject) -> Result<pki::fidelity::Fidelity> {
    let csr = csr_of(cr)?;
    let usages: Vec<String> = cr.data["spec"]["usages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let duration = cr.data["spec"]["duration"]
        .as_str()
        .map(step_operator::duration::parse_go_duration)
        .transpose()?;
    let der = first_der(&issued_pem(cr)?)?;
    pki::fidelity::compare(
        &pki::fidelity::Requested {
            csr: &csr,
            usages: &usages,
            is_ca: cr.data["spec"]["isCA"] == true,
            duration,
        },
        &der,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::test]
async fn fidelity_templates_give_exactly_what_the_certificate_asks() -> Result<()> {
    let s = setup().await?;
    let leaf_issuer = issuer(&s, "fidelity", "e2e-fidelity", json!({})).await?;
    let ca_issuer = issuer(&s, "fidelity-ca", "e2e-ca", json!({})).await?;
    let ns = TestNamespace::create(&s.client, "fidelity").await?;
    let certs = namespaced(&s.client, &ns.name, &certificates());
    let post = PostParams::default();

    let app = format!("app.{}.svc", ns.name);
    certs
        .create(&post, &certificate("app", &leaf_issuer, json!({
            "commonName": app, "dnsNames": [app],
            "subject": {"organizations": ["Acme"], "organizationalUnits": ["Payments"]},
            "usages": ["digital signature", "key encipherment", "server auth", "code signing"],
            "duration": "24h",
        }))?)
        .await?;
    certs
        .create(
            &post,
            &certificate(
                "sub-ca",
                &ca_issuer,
                json!({
                    "commonName": format!("Sub CA {}", ns.name), "isCA": true,
                    "usages": ["cert sign", "crl sign", "digital signature"],
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                }),
            )?,
        )
        .await?;
    let spiffe = format!("spiffe://cluster.local/ns/{}/sa/workload", ns.name);
    certs
        .create(
            &post,
            &certificate(
                "uri-only",
                &leaf_issuer,
                json!({
                    "uris": [spiffe], "privateKey": {"algorithm": "ECDSA", "size": 256},
                }),
            )?,
        )
        .await?;

    for name in ["app", "sub-ca", "uri-only"] {
        let cr = request_of(&s, &ns.name, name, "True").await?;
        let got = fidelity(&cr)?;
        assert!(got.is_exact(), "{name}: {got:?}\n{}", dump(&cr));
        let issued = wait_event(
            &s.client,
            &ns.name,
            &cr.name_any(),
            "Issued",
            TIMEOUT,
            &s.log,
        )
        .await?;
        assert!(issued.note.is_some(), "{issued:?}");
    }

    let app_cr = request_of(&s, &ns.name, "app", "True").await?;
    let der = first_der(&issued_pem(&app_cr)?)?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    let subject = cert.subject().to_string();
    assert!(
        subject.contains("O=Acme") && subject.contains("OU=Payments"),
        "{subject}"
    );
    let eku = cert
        .extended_key_usage()?
        .context("no extendedKeyUsage")?
        .value;
    assert!(
        eku.code_signing && eku.server_auth && !eku.client_auth,
        "{eku:?}"
    );

    let ca_cr = request_of(&s, &ns.name, "sub-ca", "True").await?;
    let der = first_der(&issued_pem(&ca_cr)?)?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    let bc = cert
        .basic_constraints()?
        .context("no basicConstraints")?
        .value;
    assert!(bc.ca, "an isCA Certificate is a CA: {bc:?}");
    let ku = cert.key_usage()?.context("no keyUsage")?.value;
    assert!(ku.key_cert_sign(), "{ku:?}");

    // cert-manager's conformance rule: no CN was asked and the only name is a URI, so the
    // certificate has no CN (step-ca's default template would put the URI there).
    let uri_cr = request_of(&s, &ns.name, "uri-only", "True").await?;
    let der = first_der(&issued_pem(&uri_cr)?)?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    assert_eq!(
        cert.subject().iter_common_name().count(),
        0,
        "{}",
        cert.subject()
    );
    ns.delete().await
}

#[tokio::test]
async fn fidelity_default_template_fails_what_is_weaker_and_warns_what_is_dropped() -> Result<()> {
    let s = setup().await?;
    let default = issuer(&s, "fidelity-default", &s.env.step_provisioner, json!({})).await?;
    let ns = TestNamespace::create(&s.client, "fidelity-default").await?;
    let certs = namespaced(&s.client, &ns.name, &certificates());
    let post = PostParams::default();
    let name = |n: &str| format!("{n}.{}.svc", ns.name);

    certs
        .create(
            &post,
            &certificate(
                "decorated",
                &default,
                json!({
                    "dnsNames": [name("decorated")], "subject": {"organizations": ["Acme"]},
                }),
            )?,
        )
        .await?;
    certs
        .create(
            &post,
            &certificate(
                "signer",
                &default,
                json!({
                    "dnsNames": [name("signer")], "usages": ["digital signature", "code signing"],
                }),
            )?,
        )
        .await?;

    let decorated = request_of(&s, &ns.name, "decorated", "True").await?;
    let warning = wait_event(
        &s.client,
        &ns.name,
        &decorated.name_any(),
        "IssuedWithChanges",
        TIMEOUT,
        &s.log,
    )
    .await?;
    let note = warning.note.clone().unwrap_or_default();
    for needle in ["Acme", "docs/step-ca-templates.md"] {
        assert!(note.contains(needle), "{needle:?} in {warning:?}");
    }
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    let refused = request_of(&s, &ns.name, "signer", "False").await?;
    let message = ready_message(&refused);
    for needle in [
        "does not give what was requested",
        "codeSigning",
        "docs/step-ca-templates.md",
    ] {
        assert!(message.contains(needle), "{needle:?} in {}", dump(&refused));
    }
    assert!(
        refused.data["status"]["certificate"].is_null(),
        "{}",
        dump(&refused)
    );
    assert!(
        refused.data["status"]["failureTime"].is_string(),
        "{}",
        dump(&refused)
    );
    ns.delete().await
}

#[tokio::test]
async fn fidelity_durations_are_capped_and_checked_before_step_ca() -> Result<()> {
    let s = setup().await?;
    let capped = issuer(
        &s,
        "fidelity-cap",
        "e2e-fidelity",
        json!({"maxDuration": "2h"}),
    )
    .await?;
    let limited = issuer(&s, "fidelity-claims", "e2e-fidelity", json!({})).await?;
    let ns = TestNamespace::create(&s.client, "fidelity-duration").await?;
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    let post = PostParams::default();

    let mut long = certificate_request(
        "long",
        &csr(&format!("long.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&capped),
    )?;
    long.data["spec"]["duration"] = json!("24h");
    requests.create(&post, &long).await?;
    let issued =
        wait_ready_condition(&requests, "long", "True", Some("Issued"), TIMEOUT, &s.log).await?;
    let lifetime = leaf(&issued_pem(&issued)?)?.lifetime();
    // step-ca backdates notBefore by a minute.
    assert!(
        lifetime <= Duration::from_secs(2 * 3600 + 90),
        "capped to 2h: {lifetime:?}"
    );
    let told = wait_event(
        &s.client,
        &ns.name,
        "long",
        "IssuedWithChanges",
        TIMEOUT,
        &s.log,
    )
    .await?;
    assert!(
        told.note
            .as_deref()
            .is_some_and(|n| n.contains("spec.maxDuration 2h")),
        "{told:?}"
    );

    let mut too_long = certificate_request(
        "too-long",
        &csr(&format!("too-long.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&limited),
    )?;
    too_long.data["spec"]["duration"] = json!("100h");
    requests.create(&post, &too_long).await?;
    let failed = wait_ready_condition(
        &requests,
        "too-long",
        "False",
        Some("Failed"),
        TIMEOUT,
        &s.log,
    )
    .await?;
    let message = ready_message(&failed);
    for needle in ["100h", "maxTLSCertDuration 48h", "spec.maxDuration"] {
        assert!(message.contains(needle), "{needle:?} in {}", dump(&failed));
    }
    // Our words, not step-ca's: the CA was never asked.
    assert!(!message.contains("X-Request-Id"), "{message}");

    // The issuer shows what it learned of the CA; the recheck annotation refreshes it at once,
    // with the intermediate seen by the signing above.
    let issuers = cluster(&s.client, &step_cluster_issuers());
    let patch = json!({"metadata": {"annotations": {"certmanager.step.sm/recheck": "1"}}});
    issuers
        .patch(&capped, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let rechecked = wait_for(
        "the recheck to be recorded in the issuer's status",
        TIMEOUT,
        async || {
            let obj = issuers.get(&capped).await?;
            Ok((obj.data["status"]["lastRecheck"] == "1").then_some(obj))
        },
        async || dump(&issuers.get_opt(&capped).await.ok().flatten()),
    )
    .await?;
    let ca = &rechecked.data["status"]["ca"];
    assert_eq!(ca["version"], "0.30.2", "{}", dump(&rechecked));
    assert_eq!(ca["tokensBoundToCsr"], true, "{}", dump(&rechecked));
    assert_eq!(
        ca["provisionerClaims"]["maxDuration"],
        "48h",
        "{}",
        dump(&rechecked)
    );
    assert!(ca["rootNotAfter"].is_string(), "{}", dump(&rechecked));
    assert!(
        ca["intermediateNotAfter"].is_string(),
        "{}",
        dump(&rechecked)
    );
    issuers.delete(&capped, &Default::default()).await?;
    issuers.delete(&limited, &Default::default()).await?;
    ns.delete().await
}

#[tokio::test]
async fn fidelity_failures_carry_the_request_id_step_ca_logged() -> Result<()> {
    let s = setup().await?;
    let default = issuer(&s, "fidelity-rid", &s.env.step_provisioner, json!({})).await?;
    let ns = TestNamespace::create(&s.client, "fidelity-rid").await?;
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    // The e2e CA's global claims allow at most 2160h; those are not visible to clients, so
    // step-ca itself refuses.
    let mut cr = certificate_request(
        "over",
        &csr(&format!("over.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&default),
    )?;
    cr.data["spec"]["duration"] = json!("3000h");
    let created = requests.create(&PostParams::default(), &cr).await?;
    let uid = created.uid().context("no uid")?;
    let failed =
        wait_ready_condition(&requests, "over", "False", Some("Failed"), TIMEOUT, &s.log).await?;
    let message = ready_message(&failed);
    assert!(
        message.contains(&format!("X-Request-Id {uid}")),
        "{}",
        dump(&failed)
    );
    let ca_log = std::fs::read_to_string(s.env.state.join("step-ca.log"))?;
    assert!(ca_log.contains(&uid), "step-ca logged the request id {uid}");
    ns.delete().await
}

#[tokio::test]
async fn fidelity_provisioner_key_from_a_secret() -> Result<()> {
    use base64::Engine as _;
    let s = setup().await?;
    let path = std::env::var("STEP_NOKEY_JWE")
        .context("STEP_NOKEY_JWE is not set: run under `make test`")?;
    let jwe = std::fs::read_to_string(path)?;
    let secrets = Api::<Secret>::namespaced(s.client.clone(), CLUSTER_RESOURCE_NAMESPACE);
    let ns = TestNamespace::create(&s.client, "fidelity-key").await?;
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    let issuers = cluster(&s.client, &step_cluster_issuers());
    let key_secret = async |form: &str, material: &str| -> Result<String> {
        let name = format!("nokey-{form}-{}", e2e::random_suffix());
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": {"jwk": material},
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
        Ok(name)
    };
    let with_key = |secret: String| {
        move |spec: &mut Value| {
            spec["provisioner"]["name"] = json!("e2e-nokey");
            if let Some(p) = spec["provisioner"].as_object_mut() {
                p.remove("kid");
            }
            spec["provisioner"]["keyRef"] = json!({"name": secret, "key": "jwk"});
        }
    };

    // The JSON JWE `step crypto jwk create` writes, and the same base64-wrapped: the CA has no
    // encryptedKey for this provisioner, so only the Secret's key can sign.
    let wrapped = base64::engine::general_purpose::STANDARD.encode(jwe.trim());
    for (form, material) in [("json", jwe.as_str()), ("wrapped", wrapped.as_str())] {
        let secret = key_secret(form, material).await?;
        let obj = verified_cluster_issuer_with(
            &s.env,
            &s.client,
            &format!("fidelity-key-{form}"),
            &s.log,
            with_key(secret),
        )
        .await?;
        let issuer = obj.name_any();
        let cr = certificate_request(
            form,
            &csr(&format!("{form}.{}.svc", ns.name))?,
            step_cluster_issuer_ref(&issuer),
        )?;
        requests.create(&PostParams::default(), &cr).await?;
        wait_ready_condition(&requests, form, "True", Some("Issued"), TIMEOUT, &s.log).await?;
        issuers.delete(&issuer, &Default::default()).await?;
    }

    // Garbage in the Secret: the issuer is not Ready, with a reason, and never quotes the value.
    let marker = "NOT-A-KEY-MARKER";
    let secret = key_secret(
        "garbage",
        &format!("{{\"kty\": \"EC\", \"junk\": \"{marker}\"}}"),
    )
    .await?;
    let name = format!("fidelity-key-garbage-{}", e2e::random_suffix());
    password_secret(
        &s.client,
        CLUSTER_RESOURCE_NAMESPACE,
        &name,
        "password",
        &s.env.provisioner_password()?,
    )
    .await?;
    let mut spec = issuer_spec(
        &s.env,
        json!({"name": name, "key": "password", "namespace": CLUSTER_RESOURCE_NAMESPACE}),
    )?;
    with_key(secret)(&mut spec);
    apply(
        &issuers,
        json!({"apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
        "metadata": {"name": name}, "spec": spec}),
    )
    .await?;
    let refused = wait_ready_condition(
        &issuers,
        &name,
        "False",
        Some("InvalidProvisionerKey"),
        TIMEOUT,
        &s.log,
    )
    .await?;
    let message = ready_message(&refused);
    assert!(
        message.contains("provisioner key in Secret"),
        "{}",
        dump(&refused)
    );
    assert!(
        !message.contains(marker),
        "the Secret's value is never shown: {message}"
    );
    issuers.delete(&name, &Default::default()).await?;
    ns.delete().await
}

/// Asks step-ca itself whether it has revoked `serial_hex`: a second revocation of a revoked
/// serial is refused as "already revoked". Uses the step CLI's own revoke token.
async fn step_ca_says_revoked(s: &Setup, serial_hex: &str) -> Result<bool> {
    let decimal = step_operator::step::SerialNumber::Hex(serial_hex.to_string())
        .to_decimal()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let step = s.env.tool("step")?;
    let root = std::env::var("STEP_CA_ROOT").context("STEP_CA_ROOT is not set")?;
    let pw = s
        .env
        .step_provisioner_password_file
        .to_string_lossy()
        .to_string();
    let steppath = s.env.state.join("step").to_string_lossy().to_string();
    let token = e2e::process::run(
        &step,
        &[
            "ca",
            "token",
            &decimal,
            "--revoke",
            "--provisioner",
            &s.env.step_provisioner,
            "--password-file",
            &pw,
            "--ca-url",
            &s.env.step_ca_url,
            "--root",
            &root,
        ],
        &[("STEPPATH", steppath.as_str())],
    )
    .await?;
    let token = String::from_utf8(token.stdout)?;
    let body = json!({"serial": decimal, "ott": token.trim(), "passive": true, "reasonCode": 0});
    // curl exits 0 on an HTTP error: the answer's body tells.
    let out = e2e::process::run(
        std::path::Path::new("curl"),
        &[
            "-sS",
            "--cacert",
            &root,
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            &format!("{}/1.0/revoke", s.env.step_ca_url),
        ],
        &[],
    )
    .await?;
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    if !answer.contains("already revoked") {
        println!("step-ca answered a second revocation of {serial_hex} with: {answer}");
    }
    Ok(answer.contains("already revoked"))
}

fn leaf_serial_hex(cr: &DynamicObject) -> Result<String> {
    let der = first_der(&issued_pem(cr)?)?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    Ok(hex_of(cert.raw_serial()))
}

fn hex_of(bytes: &[u8]) -> String {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

async fn wait_revoked(s: &Setup, ns: &str, name: &str) -> Result<DynamicObject> {
    let requests = namespaced(&s.client, ns, &certificate_requests());
    wait_for(
        &format!("CertificateRequest {ns}/{name} to be annotated certmanager.step.sm/revoked"),
        TIMEOUT,
        async || {
            let obj = requests.get(name).await?;
            Ok(obj
                .annotations()
                .contains_key("certmanager.step.sm/revoked")
                .then_some(obj))
        },
        async || {
            let events = Api::<Event>::namespaced(s.client.clone(), ns);
            let list = events
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .ok();
            format!(
                "{}\nevents: {}",
                dump(&requests.get_opt(name).await.ok().flatten()),
                dump(&list)
            )
        },
    )
    .await
}

#[tokio::test]
async fn fidelity_revocation_on_supersede_and_on_demand() -> Result<()> {
    let s = setup().await?;
    let revoking = issuer(
        &s,
        "fidelity-revoke",
        &s.env.step_provisioner,
        json!({"revocation": {"onSupersede": true}}),
    )
    .await?;
    let ns = TestNamespace::create(&s.client, "fidelity-revoke").await?;
    let certs = namespaced(&s.client, &ns.name, &certificates());
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    let post = PostParams::default();

    // A Certificate re-issued (its names change): the first revision's certificate is revoked.
    let first = format!("rotating.{}.svc", ns.name);
    certs
        .create(
            &post,
            // Old requests kept (cert-manager deletes them right after a new revision by
            // default), so that what happened to them can be read afterwards.
            &certificate(
                "rotating",
                &revoking,
                json!({"dnsNames": [first], "revisionHistoryLimit": 5}),
            )?,
        )
        .await?;
    let old = request_of(&s, &ns.name, "rotating", "True").await?;
    let old_serial = leaf_serial_hex(&old)?;
    // cert-manager re-issues on a spec change once the first issuance is complete (Ready at
    // revision 1); a change seen before makes it replace rotating-1 by another rotating-1 (same
    // revision, so nothing is superseded) instead of creating rotating-2.
    wait_certificate_revision(&certs, "rotating", 1, TIMEOUT, &s.log).await?;
    let second = format!("rotated.{}.svc", ns.name);
    let patch = json!({"spec": {"dnsNames": [first, second]}});
    certs
        .patch("rotating", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    // cert-manager deletes the old request soon after (revisionHistoryLimit), so the Event and
    // step-ca tell, not the request's annotation.
    let told = wait_event(
        &s.client,
        &ns.name,
        &old.name_any(),
        "Revoked",
        TIMEOUT,
        &s.log,
    )
    .await?;
    let note = told.note.clone().unwrap_or_default();
    assert!(
        note.contains(&old_serial) && note.contains("superseded by"),
        "{told:?}"
    );

    // On demand: a request labelled certmanager.step.sm/revoke=true, with a reason.
    let manual = certificate_request(
        "manual",
        &csr(&format!("manual.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&revoking),
    )?;
    requests.create(&post, &manual).await?;
    let issued =
        wait_ready_condition(&requests, "manual", "True", Some("Issued"), TIMEOUT, &s.log).await?;
    let serial = leaf_serial_hex(&issued)?;
    let ask = json!({"metadata": {
        "labels": {"certmanager.step.sm/revoke": "true"},
        "annotations": {"certmanager.step.sm/revoke-reason": "keyCompromise"},
    }});
    requests
        .patch("manual", &PatchParams::default(), &Patch::Merge(&ask))
        .await?;
    let revoked = wait_revoked(&s, &ns.name, "manual").await?;
    assert!(
        revoked.annotations()["certmanager.step.sm/revoked"].contains("keyCompromise"),
        "{}",
        dump(&revoked)
    );
    // step-ca itself holds both as revoked.
    assert!(
        step_ca_says_revoked(&s, &serial).await?,
        "step-ca has not revoked {serial}"
    );
    assert!(
        step_ca_says_revoked(&s, &old_serial).await?,
        "step-ca has not revoked {old_serial}"
    );
    cluster(&s.client, &step_cluster_issuers())
        .delete(&revoking, &Default::default())
        .await?;
    ns.delete().await
}

#[tokio::test]
async fn fidelity_audience_host_addresses_the_tokens() -> Result<()> {
    let s = setup().await?;
    let issuers = cluster(&s.client, &step_cluster_issuers());
    // A host step-ca does not know itself by: its tokens are refused...
    let name = issuer(
        &s,
        "fidelity-aud",
        &s.env.step_provisioner,
        json!({"audienceHost": "ca.elsewhere.example:9000"}),
    )
    .await?;
    let ns = TestNamespace::create(&s.client, "fidelity-aud").await?;
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    let cr = certificate_request(
        "aud",
        &csr(&format!("aud.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&name),
    )?;
    requests.create(&PostParams::default(), &cr).await?;
    let refused = wait_event(
        &s.client,
        &ns.name,
        "aud",
        "RetryableError",
        TIMEOUT,
        &s.log,
    )
    .await?;
    assert!(
        refused
            .note
            .as_deref()
            .is_some_and(|n| n.contains("step-ca refused the signing token")),
        "{refused:?}"
    );
    // ...and one of its dnsNames, given as the audience host, is accepted.
    let port = s
        .env
        .step_ca_url
        .rsplit(':')
        .next()
        .context("no port in STEP_CA_URL")?
        .to_string();
    let fix = json!({"spec": {"audienceHost": format!("localhost:{port}")}});
    issuers
        .patch(&name, &PatchParams::default(), &Patch::Merge(&fix))
        .await?;
    wait_ready_condition(&requests, "aud", "True", Some("Issued"), TIMEOUT, &s.log).await?;
    issuers.delete(&name, &Default::default()).await?;
    ns.delete().await
}

/// A step-ca without a database (no `db` in its ca.json) cannot revoke: a request asked to be
/// revoked gets a `RevocationUnsupported` Warning that names the fix, and is not marked revoked.
#[tokio::test]
async fn fidelity_revocation_without_a_database_is_told() -> Result<()> {
    let s = setup().await?;
    let dir = tempfile::tempdir()?;
    let steppath = dir.path().to_str().context("utf-8")?.to_string();
    let password = s
        .env
        .step_provisioner_password_file
        .to_str()
        .context("utf-8")?
        .to_string();
    let addr = format!("127.0.0.1:{}", e2e::operator::free_port()?);
    let init = [
        "ca",
        "init",
        "--name",
        "e2e CA without a database",
        "--dns",
        "127.0.0.1",
        "--address",
        &addr,
        "--provisioner",
        "nodb",
        "--password-file",
        &password,
        "--provisioner-password-file",
        &password,
        "--deployment-type",
        "standalone",
    ];
    e2e::process::run(&s.env.tool("step")?, &init, &[("STEPPATH", &steppath)]).await?;
    let ca_json = dir.path().join("config/ca.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&ca_json)?)?;
    config
        .as_object_mut()
        .context("ca.json is not an object")?
        .remove("db")
        .context("step ca init wrote no db to remove")?;
    std::fs::write(&ca_json, serde_json::to_vec_pretty(&config)?)?;
    let ca_path = ca_json.to_str().context("utf-8")?.to_string();
    let _ca = e2e::operator::Process::start_program(
        &s.env,
        "step-ca-nodb",
        &s.env.tool("step-ca")?,
        &[&ca_path, "--password-file", &password],
        &[("STEPPATH", &steppath)],
    )?;
    let root = std::fs::read_to_string(dir.path().join("certs/root_ca.crt"))?;
    let url = format!("https://{addr}");
    let issuer = verified_cluster_issuer_with(&s.env, &s.client, "fidelity-nodb", &s.log, |spec| {
        spec["url"] = json!(url);
        spec["caBundle"] = json!(base64(root.as_bytes()));
        spec["provisioner"]["name"] = json!("nodb");
        if let Some(p) = spec["provisioner"].as_object_mut() {
            p.remove("kid");
        }
    })
    .await?
    .name_any();

    let ns = TestNamespace::create(&s.client, "fidelity-nodb").await?;
    let requests = namespaced(&s.client, &ns.name, &certificate_requests());
    let cr = certificate_request(
        "nodb",
        &csr(&format!("nodb.{}.svc", ns.name))?,
        step_cluster_issuer_ref(&issuer),
    )?;
    requests.create(&PostParams::default(), &cr).await?;
    wait_ready_condition(&requests, "nodb", "True", Some("Issued"), TIMEOUT, &s.log).await?;
    let ask = json!({"metadata": {"labels": {"certmanager.step.sm/revoke": "true"}}});
    requests
        .patch("nodb", &PatchParams::default(), &Patch::Merge(&ask))
        .await?;
    let told = wait_event(
        &s.client,
        &ns.name,
        "nodb",
        "RevocationUnsupported",
        TIMEOUT,
        &s.log,
    )
    .await?;
    let note = told.note.clone().unwrap_or_default();
    assert!(
        note.contains("no database") && note.contains("\"db\" in ca.json"),
        "{told:?}"
    );
    let after = requests.get("nodb").await?;
    assert!(
        !after
            .annotations()
            .contains_key("certmanager.step.sm/revoked"),
        "{}",
        dump(&after)
    );
    cluster(&s.client, &step_cluster_issuers())
        .delete(&issuer, &Default::default())
        .await?;
    ns.delete().await
}
