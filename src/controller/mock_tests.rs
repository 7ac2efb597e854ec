//! Mocked-API tests (tower-test) of the traffic the controller's helpers send: the issuer status,
//! Events and issuer reads, with method, URI (field manager, force) and body. The request
//! reconciler's whole traffic is driven in `request/scenario_tests.rs`.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};

use crate::cert_manager::{CertificateRequest, CertificateRequestSpec, IssuerRef};
use crate::controller::context::{Context, Settings};

pub(super) type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub(super) fn mock_context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "step-operator-controller".into(),
                instance: None,
            },
        ),
        watch_client: client.clone(),
        issuers: crate::issuer::IssuerAccess {
            client: client.clone(),
            metrics: Default::default(),
            signers: Default::default(),
            cluster_resource_namespace: "step-operator".into(),
            ca_timeout: Duration::from_secs(5),
            forbidden_ca_cidrs: Default::default(),
        },
        client,
        metrics: Default::default(),
        settings: Settings {
            cluster_resource_namespace: "step-operator".into(),
            retry_budget: crate::controller::decision::RetryBudget::new(Duration::from_secs(300)),
            issuer_recheck_interval: Duration::from_secs(300),
            streaming_lists: false,
            select_requests: true,
            max_signs_per_issuer: 4,
            names: Default::default(),
            without_policy: Default::default(),
            watch_secrets: false,
            trust_bundles: false,
        },
    };
    (Arc::new(ctx), handle)
}

pub(super) fn request() -> CertificateRequest {
    let mut cr = CertificateRequest::new(
        "web-1",
        CertificateRequestSpec {
            issuer_ref: IssuerRef {
                name: "ca".into(),
                kind: Some("StepClusterIssuer".into()),
                group: Some("certmanager.step.sm".into()),
            },
            ..Default::default()
        },
    );
    cr.metadata.namespace = Some("team".into());
    cr
}

pub(super) async fn body_json(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The API server's answer for an object that does not exist.
pub(super) fn not_found() -> Response<Body> {
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "not found", "reason": "NotFound", "code": 404});
    Response::builder()
        .status(404)
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn issuer_status_is_applied_with_our_field_manager() {
    use crate::crd::condition;
    use crate::crd::{IssuerStatus, StepClusterIssuer, StepClusterIssuerSpec};
    let (ctx, mut handle) = mock_context();
    let issuer = StepClusterIssuer::new(
        "ca",
        StepClusterIssuerSpec {
            url: "https://ca".into(),
            ca_bundle: None,
            provisioner: Default::default(),
            policy: None,
            ..Default::default()
        },
    );
    let returned = serde_json::to_vec(&issuer).unwrap();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(req.method(), Method::PATCH);
        let uri = req.uri().to_string();
        assert!(
            uri.starts_with("/apis/certmanager.step.sm/v1beta1/stepclusterissuers/ca/status?"),
            "{uri}"
        );
        assert!(
            uri.contains("fieldManager=step-operator") && uri.contains("force=true"),
            "{uri}"
        );
        let body = body_json(req).await;
        assert_eq!(body["kind"], "StepClusterIssuer");
        assert_eq!(body["status"]["conditions"][0]["reason"], "WrongPassword");
        assert_eq!(body["status"]["conditions"][0]["observedGeneration"], 3);
        send.send_response(Response::builder().body(Body::from(returned)).unwrap());
    });
    let cond = condition::build(
        condition::READY,
        &[],
        false,
        "WrongPassword",
        "fix the Secret",
        Some(3),
        k8s_openapi::jiff::Timestamp::now(),
    );
    ctx.apply_issuer_status(
        &issuer,
        &IssuerStatus {
            conditions: vec![cond],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn events_go_to_events_k8s_io_with_our_reporter() {
    let (ctx, mut handle) = mock_context();
    let cr = request();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().path(),
            "/apis/events.k8s.io/v1/namespaces/team/events"
        );
        let body = body_json(req).await;
        assert_eq!(body["reason"], "Denied");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["action"], "Deny");
        assert_eq!(body["reportingController"], "step-operator-controller");
        assert_eq!(body["regarding"]["name"], "web-1");
        assert_eq!(body["regarding"]["kind"], "CertificateRequest");
        assert_eq!(body["note"], "denied by policy");
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    });
    ctx.event(
        &cr,
        kube::runtime::events::EventType::Warning,
        "Denied",
        "denied by policy".into(),
        "Deny",
    )
    .await;
    server.await.unwrap();
}

/// Security review M3: the request path caches issuers without `caBundle`, so a signer it
/// builds must come from the API's copy of the issuer, never from the cached one (which would
/// trust the system roots). The API's copy here has a bundle that is no certificate: the error
/// proves that this copy, not the cached one, was validated.
#[tokio::test]
async fn a_signer_for_a_slimmed_issuer_is_built_from_the_apis_copy() {
    use crate::crd::{PasswordRef, Provisioner, StepIssuer, StepIssuerSpec};
    let (ctx, mut handle) = mock_context();
    let spec = StepIssuerSpec {
        url: "https://ca.example".into(),
        ca_bundle: None,
        provisioner: Provisioner {
            name: "jwk".into(),
            password_ref: Some(PasswordRef {
                name: "pw".into(),
                key: Some("password".into()),
                namespace: None,
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut slim = StepIssuer::new("ca", spec.clone());
    slim.metadata.namespace = Some("team".into());
    let mut full = slim.clone();
    full.spec.ca_bundle = Some(k8s_openapi::ByteString(b"not a certificate".to_vec()));
    let returned = serde_json::to_vec(&full).unwrap();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/apis/certmanager.step.sm/v1beta1/namespaces/team/stepissuers/ca"
        );
        send.send_response(Response::builder().body(Body::from(returned)).unwrap());
    });
    let Err(err) = ctx.issuers.signer_for_latest(&slim).await else {
        panic!("the API's copy has an invalid caBundle");
    };
    server.await.unwrap();
    assert_eq!(err.reason(), "InvalidSpec", "{err}");
    assert!(err.to_string().contains("spec.caBundle"), "{err}");
}

/// An issuer the API no longer has is a transient read failure (the request is retried), with
/// no request sent for its Secret.
#[tokio::test]
async fn a_slimmed_issuer_that_is_gone_from_the_api_is_retried() {
    use crate::crd::{StepClusterIssuer, StepClusterIssuerSpec};
    let (ctx, mut handle) = mock_context();
    let slim = StepClusterIssuer::new(
        "gone",
        StepClusterIssuerSpec {
            url: "https://ca.example".into(),
            ca_bundle: None,
            provisioner: Default::default(),
            policy: None,
            ..Default::default()
        },
    );
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(
            req.uri().path(),
            "/apis/certmanager.step.sm/v1beta1/stepclusterissuers/gone"
        );
        send.send_response(not_found());
    });
    let Err(err) = ctx.issuers.signer_for_latest(&slim).await else {
        panic!("no issuer, no signer");
    };
    server.await.unwrap();
    assert_eq!(err.reason(), "IssuerReadFailed", "{err}");
    assert!(err.is_transient());
}
