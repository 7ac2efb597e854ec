//! `reconcile` driven end to end against a mocked API server (tower-test) and the in-process fake
//! step-ca: each scenario states the API traffic a reconcile must send, in order, and fails on a
//! call that is missing, extra or different. What the real apiserver and cert-manager make of
//! that traffic is the e2e tier's job.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response};
use k8s_openapi::ByteString;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::Value;

use super::*;
use crate::cert_manager::{CONDITION_APPROVED, CertificateRequestStatus, RequestCondition};
use crate::controller::mock_tests::{Handle, body_json, mock_context, request};
use crate::crd::{IssuerStatus, StepClusterIssuerSpec, condition};
use crate::issuer::signers::SignerVersion;
use crate::step::Signer;
use crate::step::fake_ca::FakeCa;

const STATUS_PATH: &str =
    "/apis/cert-manager.io/v1/namespaces/team/certificaterequests/web-1/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/team/events";

/// The API server's side of one scenario: each call must come, in order, as stated.
struct ApiServer(Handle);

impl ApiServer {
    /// The next call must be `method path`; answers it with `answer` and returns its body.
    async fn expect(&mut self, method: Method, path: &str, answer: Value) -> Value {
        self.expect_answer(method, path, http::StatusCode::OK, answer)
            .await
    }

    /// [`ApiServer::expect`], answered with the HTTP status `code`.
    async fn expect_answer(
        &mut self,
        method: Method,
        path: &str,
        code: http::StatusCode,
        answer: Value,
    ) -> Value {
        let (req, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {method} {path}, but the client went away"));
        assert_eq!(
            (req.method(), req.uri().path()),
            (&method, path),
            "{}",
            req.uri()
        );
        if method == Method::PATCH {
            let uri = req.uri().to_string();
            assert!(
                uri.contains("fieldManager=step-operator") && uri.contains("force=true"),
                "{uri}"
            );
            assert_eq!(
                req.headers().get("content-type").map(|v| v.as_bytes()),
                Some(&b"application/apply-patch+yaml"[..])
            );
        }
        let body = if method == Method::GET {
            Value::Null
        } else {
            body_json(req).await
        };
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        body
    }

    /// The Event the reconcile publishes: its type, reason and note.
    async fn expect_event(&mut self) -> (String, String, String) {
        let body = self.expect(Method::POST, EVENTS_PATH, Value::Null).await;
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
        assert_eq!(body["regarding"]["name"], "web-1", "{body}");
        (text("type"), text("reason"), text("note"))
    }
}

/// Runs `reconcile` while `server` plays the API's side; both must end within 10 s.
async fn drive<F>(c: &Arc<RequestCtx>, cr: CertificateRequest, server: F) -> Action
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let server = tokio::spawn(server);
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(cr), c.clone()))
        .await
        .expect("the reconcile ended")
        .expect("the reconcile succeeded");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("every expected call came")
        .expect("the API server's side held");
    action
}

fn approved(mut cr: CertificateRequest, csr: Vec<u8>) -> CertificateRequest {
    cr.metadata.uid = Some("uid-web-1".into());
    cr.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    cr.spec.request = ByteString(csr);
    cr.status = Some(CertificateRequestStatus {
        conditions: vec![RequestCondition {
            type_: CONDITION_APPROVED.into(),
            status: "True".into(),
            reason: Some("cert-manager.io".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    cr
}

fn csr_for(name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

/// A request controller whose StepClusterIssuer `ca` is Ready, with a signer for `ca` cached.
async fn controller_with(ca: Option<&FakeCa>) -> (Arc<RequestCtx>, ApiServer) {
    let (ctx, handle) = mock_context();
    let mut issuer = StepClusterIssuer::new(
        "ca",
        StepClusterIssuerSpec {
            url: ca.map(|c| c.url.clone()).unwrap_or_default(),
            ca_bundle: None,
            provisioner: Default::default(),
            policy: None,
            ..Default::default()
        },
    );
    issuer.metadata.uid = Some("issuer-uid".into());
    issuer.metadata.generation = Some(1);
    issuer.status = Some(IssuerStatus {
        conditions: vec![condition::build(
            condition::READY,
            &[],
            true,
            "Verified",
            "ready",
            Some(1),
            Timestamp::now(),
        )],
        ..Default::default()
    });
    if let Some(ca) = ca {
        let signer = Signer::connect(
            &ca.url,
            Some(ca.certs.root_pem.as_bytes()),
            "admin",
            Some(&ca.kid),
            FakeCa::PASSWORD,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let version = SignerVersion {
            uid: "issuer-uid".into(),
            generation: 1,
            password_version: "1".into(),
        };
        ctx.issuers
            .signers
            .get_or_connect(&issuer.key(), version, || async {
                Ok::<_, std::convert::Infallible>(signer)
            })
            .await
            .unwrap();
    }
    let (cluster, mut writer) = reflector::store::<StepClusterIssuer>();
    writer.apply_watcher_event(&watcher::Event::Apply(issuer));
    let (namespaced, _) = reflector::store::<StepIssuer>();
    let c = RequestCtx {
        in_flight: InFlight::new(ctx.settings.max_signs_per_issuer),
        ctx,
        issuers: IssuerStores {
            namespaced,
            cluster,
        },
        memory: Default::default(),
    };
    (Arc::new(c), ApiServer(handle))
}

/// The sign calls the fake step-ca received.
fn signs(ca: &FakeCa) -> usize {
    ca.requests()
        .iter()
        .filter(|r| r.starts_with("POST /1.0/sign"))
        .count()
}

fn ready_condition(patch: &Value) -> &Value {
    let conditions = patch["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions[0]["type"], "Ready", "{patch}");
    &conditions[0]
}

#[tokio::test]
async fn an_approved_request_is_signed_written_and_told_once() {
    let ca = FakeCa::start().await;
    let (c, mut api) = controller_with(Some(&ca)).await;
    let cr = approved(request(), csr_for("web.team.svc"));
    let fresh = serde_json::to_value(&cr).unwrap();
    let root = ca.certs.root_pem.clone();
    let action = drive(&c, cr.clone(), async move {
        // The status is read fresh before signing: the cache may lag our own writes.
        api.expect(Method::GET, STATUS_PATH, fresh.clone()).await;
        let patch = api.expect(Method::PATCH, STATUS_PATH, fresh).await;
        let ready = ready_condition(&patch);
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&"True".into(), &"Issued".into())
        );
        use base64::Engine as _;
        let decode = |v: &Value| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            String::from_utf8(bytes).unwrap()
        };
        assert!(decode(&patch["status"]["certificate"]).starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(decode(&patch["status"]["ca"]), root);
        assert!(patch["status"].get("failureTime").is_none(), "{patch}");
        let (type_, reason, note) = api.expect_event().await;
        assert_eq!((type_.as_str(), reason.as_str()), ("Normal", "Issued"));
        assert!(note.contains("StepClusterIssuer ca"), "{note}");
    })
    .await;
    assert_eq!(action, Action::await_change());
    let sent: Vec<(String, String)> = ca
        .requests_with_header()
        .into_iter()
        .filter(|(r, _)| r.starts_with("POST /1.0/sign"))
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1, "uid-web-1",
        "the request's UID is the X-Request-Id"
    );
    let claims = ca.last_sign_claims().unwrap();
    assert!(claims["cnf"]["x5rt#S256"].is_string(), "{claims}");

    // The cache still shows the request open: it is never signed again, and no call is made
    // (a call would wait for an answer that never comes, and time the reconcile out).
    let again = drive(&c, cr, async {}).await;
    assert_eq!(again, Action::await_change());
    assert_eq!(signs(&ca), 1);
}

#[tokio::test]
async fn a_failing_ca_leaves_the_request_pending_with_a_backoff() {
    let ca = FakeCa::start().await;
    ca.answer_signs_with(503);
    let (c, mut api) = controller_with(Some(&ca)).await;
    let cr = approved(request(), csr_for("web.team.svc"));
    let fresh = serde_json::to_value(&cr).unwrap();
    let action = drive(&c, cr.clone(), async move {
        api.expect(Method::GET, STATUS_PATH, fresh.clone()).await;
        let patch = api.expect(Method::PATCH, STATUS_PATH, fresh).await;
        let ready = ready_condition(&patch);
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&"False".into(), &"Pending".into())
        );
        let message = ready["message"].as_str().unwrap();
        assert!(
            message.starts_with("Failed to sign, will retry in 1s:"),
            "{message}"
        );
        assert!(patch["status"].get("failureTime").is_none(), "{patch}");
        let (type_, reason, _) = api.expect_event().await;
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Warning", "RetryableError")
        );
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));

    // Our own Pending write re-triggers the request at once: the backoff holds, with no call.
    let Action { .. } = drive(&c, cr, async {}).await;
    assert_eq!(c.memory.attempts("uid-web-1"), 1);
    assert_eq!(signs(&ca), 1);
}

#[tokio::test]
async fn an_unusable_csr_fails_the_request_without_a_token() {
    let ca = FakeCa::start().await;
    let (c, mut api) = controller_with(Some(&ca)).await;
    let cr = approved(request(), b"not a CSR".to_vec());
    let fresh = serde_json::to_value(&cr).unwrap();
    let action = drive(&c, cr, async move {
        api.expect(Method::GET, STATUS_PATH, fresh.clone()).await;
        let patch = api.expect(Method::PATCH, STATUS_PATH, fresh).await;
        let ready = ready_condition(&patch);
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&"False".into(), &"Failed".into())
        );
        assert_eq!(patch["status"]["conditions"][1]["type"], "InvalidRequest");
        assert!(patch["status"]["failureTime"].is_string(), "{patch}");
        let (type_, reason, note) = api.expect_event().await;
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Warning", "PermanentError")
        );
        assert!(note.starts_with("The CSR is not acceptable"), "{note}");
    })
    .await;
    assert_eq!(action, Action::await_change());
    assert!(c.memory.is_finished("uid-web-1"));
    assert!(
        !ca.requests()
            .iter()
            .any(|r| r.starts_with("POST /1.0/sign"))
    );
}

#[tokio::test]
async fn a_denied_request_is_failed_and_told_without_reading_or_signing() {
    let (c, mut api) = controller_with(None).await;
    let mut cr = request();
    cr.metadata.uid = Some("uid-web-1".into());
    cr.status = Some(CertificateRequestStatus {
        conditions: vec![RequestCondition {
            type_: "Denied".into(),
            status: "True".into(),
            reason: Some("policy".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let answer = serde_json::to_value(&cr).unwrap();
    let action = drive(&c, cr, async move {
        let patch = api.expect(Method::PATCH, STATUS_PATH, answer).await;
        assert_eq!(patch["apiVersion"], "cert-manager.io/v1");
        assert_eq!(patch["kind"], "CertificateRequest");
        // Only our Ready condition: the approver's conditions are not ours to send.
        let conditions = patch["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "{patch}");
        assert_eq!(conditions[0]["reason"], "Denied");
        assert!(conditions[0].get("observedGeneration").is_none(), "{patch}");
        assert!(patch["status"]["failureTime"].is_string(), "{patch}");
        let (type_, reason, _) = api.expect_event().await;
        assert_eq!((type_.as_str(), reason.as_str()), ("Warning", "Denied"));
    })
    .await;
    assert_eq!(action, Action::await_change());
    assert!(c.memory.is_finished("uid-web-1"));
}

#[tokio::test]
async fn a_request_for_a_missing_issuer_waits_and_says_so_once() {
    let (c, mut api) = controller_with(None).await;
    let mut cr = approved(request(), csr_for("web.team.svc"));
    cr.spec.issuer_ref.name = "absent".into();
    let answer = serde_json::to_value(&cr).unwrap();
    let action = drive(&c, cr.clone(), async move {
        let patch = api.expect(Method::PATCH, STATUS_PATH, answer).await;
        let message = ready_condition(&patch)["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            "StepClusterIssuer absent does not exist. Waiting for it to be created."
        );
        let (type_, reason, _) = api.expect_event().await;
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Normal", "WaitingForIssuerExist")
        );
    })
    .await;
    assert_eq!(action, Action::await_change());

    // Once the status shows that message, the same reconcile sends nothing.
    let mut waiting = cr;
    if let Some(s) = waiting.status.as_mut() {
        s.conditions.push(RequestCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("Pending".into()),
            message: Some(
                "StepClusterIssuer absent does not exist. Waiting for it to be created.".into(),
            ),
            ..Default::default()
        });
    }
    assert_eq!(drive(&c, waiting, async {}).await, Action::await_change());
}

/// The API's answer to a status write conditional on a resourceVersion that is no longer current.
fn conflict() -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
        "code": 409,
        "message": "Operation cannot be fulfilled on certificaterequests.cert-manager.io \"web-1\": the object has been modified",
    })
}

/// `cr` as another writer finished it meanwhile: Ready and a certificate, written by `manager`.
fn finished_by(cr: &CertificateRequest, manager: &str) -> Value {
    let mut done = serde_json::to_value(cr).unwrap();
    done["metadata"]["resourceVersion"] = "8".into();
    done["metadata"]["managedFields"] = serde_json::json!([{
        "manager": manager, "operation": "Update", "subresource": "status",
        "apiVersion": "cert-manager.io/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:certificate": {}, "f:conditions": {}}},
    }]);
    done["status"]["certificate"] = "Y2VydA==".into();
    done["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "Ready", "status": "True", "reason": "Issued", "message": "signed elsewhere"}));
    done
}

/// Signs `cr` while `finisher` finishes it: our conditional write is refused (409) and the
/// request read again, then the Event `told` (its type, reason and note), if given, is published.
/// Returns the reconcile's action; fails on any other call.
async fn signed_while_finished_by(
    finisher: &str,
    told: Option<(&'static str, &'static str)>,
) -> (Action, Option<String>) {
    let ca = FakeCa::start().await;
    let (c, mut api) = controller_with(Some(&ca)).await;
    let mut cr = approved(request(), csr_for("web.team.svc"));
    cr.metadata.resource_version = Some("7".into());
    let fresh = serde_json::to_value(&cr).unwrap();
    let done = finished_by(&cr, finisher);
    // The server's side hands its end back, to show that nothing else was sent.
    let (back, returned) = tokio::sync::oneshot::channel();
    let action = drive(&c, cr, async move {
        api.expect(Method::GET, STATUS_PATH, fresh).await;
        let patch = api
            .expect_answer(
                Method::PATCH,
                STATUS_PATH,
                http::StatusCode::CONFLICT,
                conflict(),
            )
            .await;
        assert_eq!(
            patch["metadata"]["resourceVersion"], "7",
            "the write is conditional on what was read: {patch}"
        );
        api.expect(Method::GET, STATUS_PATH, done).await;
        let note = match told {
            Some(want) => {
                let (type_, reason, note) = api.expect_event().await;
                assert_eq!((type_.as_str(), reason.as_str()), want);
                Some(note)
            }
            None => None,
        };
        back.send((api, note)).ok();
    })
    .await;
    let (mut api, note) = returned.await.unwrap();
    // With the client gone, a call the script did not expect would still be queued here.
    drop(c);
    assert!(api.0.next_request().await.is_none(), "no other call");
    assert_eq!(signs(&ca), 1, "signed once");
    (action, note)
}

#[tokio::test]
async fn a_request_another_controller_finished_while_we_signed_is_told_at_once() {
    let told = Some(("Warning", "SignedByAnotherController"));
    let (action, note) = signed_while_finished_by("step-issuer", told).await;
    assert_eq!(action, Action::await_change(), "nothing left to retry");
    let note = note.unwrap_or_default();
    assert!(
        note.contains("step-issuer"),
        "names the other writer: {note}"
    );
}

#[tokio::test]
async fn a_request_our_other_replica_finished_while_we_signed_is_left_quietly() {
    let (action, _) = signed_while_finished_by("step-operator", None).await;
    assert_eq!(action, Action::await_change(), "nothing left to retry");
}
