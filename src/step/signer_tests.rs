//! The signer's newer paths against the fake CA: a key given directly, CA facts, CSR-bound
//! tokens, request ids, revocation and the audience override.

use super::*;
use crate::step::fake_ca::{FakeCa, token_claims};
use crate::step::key_material::provisioner_key_from_material;
use crate::step::provisioner::tests::{KeyKind, generate_private_jwk};
use serde_json::json;

/// A real CSR: its PEM and DER.
fn real_csr(name: &str) -> (String, Vec<u8>) {
    let csr = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .serialize_request(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    (csr.pem().unwrap(), csr.der().to_vec())
}

async fn by_kid(ca: &FakeCa) -> Signer {
    Signer::connect_with_client(ca.client(), "admin", Some(&ca.kid), FakeCa::PASSWORD)
        .await
        .unwrap()
}

fn admin_key(ca: &FakeCa) -> ProvisionerKey {
    provisioner_key_from_material(ca.jwe.as_bytes(), Some(FakeCa::PASSWORD)).unwrap()
}

fn fake_claims() -> ProvisionerClaims {
    ProvisionerClaims {
        min_tls_cert_duration: Some(Duration::from_secs(300)),
        max_tls_cert_duration: Some(Duration::from_secs(2160 * 3600)),
        default_tls_cert_duration: Some(Duration::from_secs(24 * 3600)),
        disable_renewal: Some(false),
    }
}

#[tokio::test]
async fn a_given_key_is_checked_against_the_list_and_the_encrypted_key_never_fetched() {
    let ca = FakeCa::start().await;
    let signer = Signer::connect_with_key(ca.client(), "admin", admin_key(&ca))
        .await
        .unwrap();
    assert_eq!(signer.kid(), ca.kid);
    assert_eq!(signer.facts().claims, Some(fake_claims()));
    let (csr, _) = real_csr("web.example");
    let sans = vec!["web.example".to_owned()];
    signer.sign(&csr, "web.example", &sans, None).await.unwrap();
    assert!(ca.last_sign_token_verified());
    let reqs = ca.requests();
    assert!(
        !reqs.iter().any(|r| r.contains("encrypted-key")),
        "{reqs:?}"
    );
    for wanted in ["GET /health", "GET /1.0/roots", "GET /version"] {
        assert!(reqs.iter().any(|r| r == wanted), "{wanted}: {reqs:?}");
    }
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /1.0/provisioners?")),
        "{reqs:?}"
    );
}

#[tokio::test]
async fn a_given_key_that_is_not_the_provisioners_is_refused() {
    let ca = FakeCa::start().await;
    let stranger = generate_private_jwk(KeyKind::P256);
    let stranger_kid = stranger.key_id().unwrap().to_owned();
    let stranger = provisioner_key_from_material(stranger.to_string().as_bytes(), None).unwrap();
    let err = Signer::connect_with_key(ca.client(), "admin", stranger.clone())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ProvisionerKeyMismatch", "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&stranger_kid)
            && text.contains(&ca.kid)
            && text.contains(&ca.other_kid)
            && text.contains("\"admin\""),
        "{text}"
    );
    let tenant = err.message_for(crate::step::Audience::Tenant);
    assert!(!tenant.contains(&ca.kid), "{tenant}");

    let err = Signer::connect_with_key(ca.client(), "nobody", stranger.clone())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ProvisionerNotFound", "{err}");
    let err = Signer::connect_with_key(ca.client(), "acme", stranger)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "NotJWKProvisioner", "{err}");
    // The key of the first "admin" (another password) is one the CA lists too.
    assert!(
        !ca.requests().iter().any(|r| r.contains("encrypted-key")),
        "{:?}",
        ca.requests()
    );
}

#[tokio::test]
async fn facts_are_read_at_connect_and_the_intermediate_at_each_sign() {
    let ca = FakeCa::start().await;
    let signer = by_kid(&ca).await;
    let root_not_after = crate::step::facts::cert_not_after(&ca.certs.root_pem).unwrap();
    assert_eq!(
        signer.facts(),
        CaFacts {
            version: Some("0.30.2".into()),
            token_binding: true,
            claims: Some(fake_claims()),
            roots_not_after: vec![root_not_after],
            intermediate_not_after: None,
        }
    );
    // The placeholder chain has nothing to parse: still unknown.
    signer.sign("CSR", "a.example", &[], None).await.unwrap();
    assert_eq!(signer.intermediate_not_after(), None);
    // The fake CA's chain is [leaf, root]: the root stands in for the intermediate.
    let (csr, _) = real_csr("a.example");
    signer.sign(&csr, "a.example", &[], None).await.unwrap();
    assert_eq!(signer.intermediate_not_after(), Some(root_not_after));
    assert_eq!(signer.facts().intermediate_not_after, Some(root_not_after));
    // Clones share what was seen.
    assert_eq!(
        signer.clone().intermediate_not_after(),
        Some(root_not_after)
    );
}

#[tokio::test]
async fn a_ca_without_version_or_list_still_connects_unbound() {
    let ca = FakeCa::start().await;
    ca.set_version(None);
    let signer = by_kid(&ca).await;
    let facts = signer.facts();
    assert_eq!(facts.version, None);
    assert!(!facts.token_binding);
    let (csr, _) = real_csr("a.example");
    signer.sign(&csr, "a.example", &[], None).await.unwrap();
    assert!(ca.last_sign_claims().unwrap().get("cnf").is_none());

    ca.set_version(Some("0.26.1"));
    let old = by_kid(&ca).await;
    assert_eq!(old.facts().version.as_deref(), Some("0.26.1"));
    assert!(!old.facts().token_binding);
    old.sign(&csr, "a.example", &[], None).await.unwrap();
    assert!(ca.last_sign_claims().unwrap().get("cnf").is_none());
}

#[tokio::test]
async fn sign_tokens_are_bound_to_the_csr_when_the_ca_checks_it() {
    let ca = FakeCa::start().await;
    let signer = by_kid(&ca).await;
    let (csr, der) = real_csr("a.example");
    let sans = vec!["a.example".to_owned()];
    signer.sign(&csr, "a.example", &sans, None).await.unwrap();
    let claims = ca.last_sign_claims().unwrap();
    assert_eq!(
        claims["cnf"],
        json!({"x5rt#S256": crate::step::token::csr_fingerprint(&der)})
    );
    assert!(ca.last_sign_token_verified());

    // A token bound to another CSR is refused, as step-ca refuses it.
    let (_, other_der) = real_csr("b.example");
    let options = SignOptions {
        csr_der: Some(other_der),
        ..SignOptions::default()
    };
    let err = signer
        .sign_with_options(&csr, "a.example", &sans, &options)
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), Some(403));
    assert!(
        err.to_string()
            .contains("certificate request fingerprint does not match"),
        "{err}"
    );

    // Tokens for others (pods make their own key) stay unbound.
    let unbound = signer
        .mint_token("a.example", &sans, Duration::from_secs(60))
        .unwrap();
    assert!(token_claims(&unbound).get("cnf").is_none());
}

#[tokio::test]
async fn the_request_id_and_validity_go_to_the_ca() {
    let ca = FakeCa::start().await;
    let signer = by_kid(&ca).await;
    let uid = "3f1c2b9e-7a4d-4e1b-9c2a-0d5e6f7a8b9c";
    let options = SignOptions {
        request_id: Some(uid.into()),
        not_before: Some("2030-01-01T00:00:00Z".into()),
        not_after: Some("2030-01-02T00:00:00Z".into()),
        csr_der: None,
    };
    signer
        .sign_with_options("CSR", "a.example", &[], &options)
        .await
        .unwrap();
    let body = ca.last_sign_body().unwrap();
    assert_eq!(body["notBefore"], "2030-01-01T00:00:00Z");
    assert_eq!(body["notAfter"], "2030-01-02T00:00:00Z");
    let sent = ca.requests_with_header();
    let (line, id) = sent.last().unwrap();
    assert_eq!((line.as_str(), id.as_str()), ("POST /1.0/sign", uid));
    // An id that cannot go in a header as is is replaced, not sent or refused.
    let options = SignOptions {
        request_id: Some("bad id\n".into()),
        ..SignOptions::default()
    };
    signer
        .sign_with_options("CSR", "a.example", &[], &options)
        .await
        .unwrap();
    let sent = ca.requests_with_header();
    let (_, id) = sent.last().unwrap();
    assert_eq!(id.len(), 32, "{id}");
    assert!(format!("{options:?}").contains("bad id"));
}

#[tokio::test]
async fn revocation_sends_the_decimal_serial_in_body_and_token() {
    let ca = FakeCa::start().await;
    let signer = by_kid(&ca).await;
    let serial = SerialNumber::Hex("0a:1b:2c".into());
    signer
        .revoke(
            &serial,
            RevocationReason::Superseded,
            "replaced",
            Some("uid-1"),
        )
        .await
        .unwrap();
    let body = ca.last_revoke_body().unwrap();
    assert_eq!(body["serial"], "662316");
    assert_eq!(body["passive"], true);
    assert_eq!(body["reasonCode"], 4);
    assert_eq!(body["reason"], "replaced");
    let claims = token_claims(body["ott"].as_str().unwrap());
    assert_eq!(claims["sub"], "662316");
    assert_eq!(claims["aud"], format!("{}/1.0/revoke", ca.url));
    assert_eq!(claims["iss"], "admin");
    assert!(claims.get("sans").is_none(), "{claims}");
    assert!(claims.get("cnf").is_none(), "{claims}");
    let sent = ca.requests_with_header();
    let (line, id) = sent.last().unwrap();
    assert_eq!((line.as_str(), id.as_str()), ("POST /1.0/revoke", "uid-1"));

    // Again: already revoked, which callers may take as done.
    let err = signer
        .revoke(
            &SerialNumber::Decimal("662316".into()),
            RevocationReason::Unspecified,
            "",
            None,
        )
        .await
        .unwrap_err();
    assert!(err.is_already_revoked(), "{err}");
    assert!(!err.is_not_implemented());

    // A CA without a database.
    ca.answer_revokes_with(501);
    let err = signer
        .revoke(
            &SerialNumber::Hex("ff".into()),
            RevocationReason::KeyCompromise,
            "",
            None,
        )
        .await
        .unwrap_err();
    assert!(err.is_not_implemented(), "{err}");
    assert!(!err.is_already_revoked());

    let err = signer
        .revoke(
            &SerialNumber::Hex("xyz".into()),
            RevocationReason::Unspecified,
            "",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "InvalidSerial");
}

#[tokio::test]
async fn the_audience_override_names_the_host_step_ca_knows() {
    let ca = FakeCa::start().await;
    let client = ca.client().with_audience("step-ca.step.svc:9000").unwrap();
    assert_eq!(client.url(), ca.url, "requests still go to the URL");
    let signer = Signer::connect_with_client(client, "admin", Some(&ca.kid), FakeCa::PASSWORD)
        .await
        .unwrap();
    signer.sign("CSR", "a.example", &[], None).await.unwrap();
    assert_eq!(
        ca.last_sign_claims().unwrap()["aud"],
        "https://step-ca.step.svc:9000/1.0/sign"
    );
    signer
        .revoke(
            &SerialNumber::Decimal("7".into()),
            RevocationReason::Unspecified,
            "",
            None,
        )
        .await
        .unwrap();
    let body = ca.last_revoke_body().unwrap();
    assert_eq!(
        token_claims(body["ott"].as_str().unwrap())["aud"],
        "https://step-ca.step.svc:9000/1.0/revoke"
    );
    let err = ca.client().with_audience("http://x").unwrap_err();
    assert_eq!(err.reason(), "InvalidAudience");
    assert!(format!("{:?}", ca.client().with_audience("https://h:1").unwrap()).contains("h:1"));
}
