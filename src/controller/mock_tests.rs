//! Mocked-API tests (tower-test) of the traffic the reconcilers send: the status patch of a
//! CertificateRequest and the issuer status, with method, URI (field manager, force) and body.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};

use crate::cert_manager::{CertificateRequest, CertificateRequestSpec, IssuerRef};
use crate::controller::context::{Context, Settings};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock_context() -> (Arc<Context>, Handle) {
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
        client,
        metrics: Default::default(),
        signers: Default::default(),
        settings: Settings {
            cluster_resource_namespace: "step-operator".into(),
            max_retry_duration: Duration::from_secs(300),
            issuer_recheck_interval: Duration::from_secs(300),
            ca_timeout: Duration::from_secs(5),
            streaming_lists: false,
            max_signs_per_issuer: 4,
        },
    };
    (Arc::new(ctx), handle)
}

fn request() -> CertificateRequest {
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

async fn body_json(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn request_status_is_server_side_applied_on_the_status_subresource() {
    let (ctx, mut handle) = mock_context();
    let cr = request();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("a request");
        assert_eq!(req.method(), Method::PATCH);
        let uri = req.uri().to_string();
        assert!(
            uri.starts_with(
                "/apis/cert-manager.io/v1/namespaces/team/certificaterequests/web-1/status?"
            ),
            "{uri}"
        );
        assert!(uri.contains("fieldManager=step-operator"), "{uri}");
        assert!(uri.contains("force=true"), "{uri}");
        assert_eq!(
            req.headers().get("content-type").unwrap(),
            "application/apply-patch+yaml"
        );
        let body = body_json(req).await;
        assert_eq!(body["apiVersion"], "cert-manager.io/v1");
        assert_eq!(body["kind"], "CertificateRequest");
        let conditions = body["status"]["conditions"].as_array().unwrap();
        // Only our Ready condition: the approver's conditions are not ours to send.
        assert_eq!(conditions.len(), 1, "{body}");
        assert_eq!(conditions[0]["type"], "Ready");
        assert_eq!(conditions[0]["reason"], "Denied");
        assert!(conditions[0].get("observedGeneration").is_none(), "{body}");
        assert!(body["status"]["failureTime"].is_string(), "{body}");
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&cr_json()).unwrap()))
                .unwrap(),
        );
    });
    super::request::test_write_denied(&ctx, &cr).await.unwrap();
    server.await.unwrap();
}

fn cr_json() -> serde_json::Value {
    serde_json::to_value(request()).unwrap()
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
    let cond = condition::ready(
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
