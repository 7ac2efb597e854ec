//! The signer's API traffic for requests it refuses before any issuer or CA is involved, against
//! a mocked API server: the status patch the API accepts, then an Event on the request and one
//! on the pod. Signing itself runs against the real kubelet and step-ca (e2e `podcert_*`).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response};
use k8s_openapi::api::certificates::v1::{PodCertificateRequest, PodCertificateRequestSpec};
use kube::client::Body;
use kube::runtime::controller::Action;

use super::PodCertCtx;
use super::reconcile::reconcile;
use crate::controller::mock_tests::{Handle, body_json, mock_context, not_found};

fn request(signer: &str) -> PodCertificateRequest {
    let mut r = PodCertificateRequest {
        spec: PodCertificateRequestSpec {
            signer_name: signer.into(),
            pod_name: "web-0".into(),
            pod_uid: "pod-uid".into(),
            service_account_name: "web".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    r.metadata.name = Some("web-0-abcde".into());
    r.metadata.namespace = Some("team".into());
    r.metadata.uid = Some("pcr-uid".into());
    r
}

#[tokio::test]
async fn a_step_issuer_of_another_namespace_is_denied_and_both_objects_are_told() {
    let (ctx, mut handle) = mock_context();
    let c = Arc::new(PodCertCtx {
        ctx,
        memory: Default::default(),
    });
    let pcr = request("stepissuers.certmanager.step.sm/other.ca");
    let answer = serde_json::to_vec(&pcr).unwrap();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("the status patch");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/apis/certificates.k8s.io/v1/namespaces/team/podcertificaterequests/web-0-abcde/status"
        );
        let body = body_json(req).await;
        let conditions = body["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "{body}");
        assert_eq!(conditions[0]["type"], "Denied");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[0]["reason"], "SignerNotInNamespace");
        assert!(body["status"].get("certificateChain").is_none(), "{body}");
        send.send_response(Response::builder().body(Body::from(answer)).unwrap());
        for kind in ["PodCertificateRequest", "Pod"] {
            let (req, send) = handle.next_request().await.expect("an Event");
            assert_eq!(
                req.uri().path(),
                "/apis/events.k8s.io/v1/namespaces/team/events"
            );
            let body = body_json(req).await;
            assert_eq!(body["regarding"]["kind"], kind, "{body}");
            assert_eq!(body["reason"], "SignerNotInNamespace");
            assert_eq!(body["type"], "Warning");
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(pcr), c))
        .await
        .expect("the reconcile ended")
        .expect("the reconcile succeeded");
    assert_eq!(action, Action::await_change());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("every call came")
        .expect("the API server's side held");
}

#[tokio::test]
async fn another_signers_request_is_left_alone() {
    let (ctx, _handle) = mock_context();
    let c = Arc::new(PodCertCtx {
        ctx,
        memory: Default::default(),
    });
    // A call would wait for an answer that never comes, and time the reconcile out.
    let pcr = request("example.com/other-signer");
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(pcr), c))
        .await
        .expect("no call was made")
        .expect("the reconcile succeeded");
    assert_eq!(action, Action::await_change());
}

/// The API's side of a reconcile that waits for a missing issuer: the issuer read (404), then a
/// Warning Event on the request and one on the pod whose note starts with `note`, and no status
/// write.
async fn serve_missing_issuer(mut handle: Handle, note: String) {
    let (req, send) = handle.next_request().await.expect("the issuer read");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(
        req.uri().path(),
        "/apis/certmanager.step.sm/v1beta1/stepclusterissuers/absent"
    );
    send.send_response(not_found());
    for kind in ["PodCertificateRequest", "Pod"] {
        let (req, send) = handle.next_request().await.expect("an Event");
        assert_eq!(req.method(), Method::POST, "no status write while waiting");
        let body = body_json(req).await;
        assert_eq!(body["regarding"]["kind"], kind, "{body}");
        assert_eq!(body["reason"], "IssuerMissing");
        assert_eq!(body["type"], "Warning");
        let told = body["note"].as_str().unwrap_or_default();
        assert!(told.starts_with(&note), "{told}");
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }
}

/// Runs the reconcile against `serve_missing_issuer` and returns what it asked for.
async fn reconcile_waiting(
    pcr: PodCertificateRequest,
    c: Arc<PodCertCtx>,
    handle: Handle,
    note: &str,
) -> Action {
    let server = tokio::spawn(serve_missing_issuer(handle, note.to_string()));
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(pcr), c))
        .await
        .expect("the reconcile ended")
        .expect("the reconcile succeeded");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("every call came")
        .expect("the API server's side held");
    action
}

/// A missing issuer is waited for, not refused: no status write, a Warning Event on the request
/// and on the pod, and a requeue after the backoff.
#[tokio::test]
async fn a_missing_issuer_is_retried_with_events_and_no_status() {
    let (ctx, handle) = mock_context();
    let c = Arc::new(PodCertCtx {
        ctx,
        memory: Default::default(),
    });
    let pcr = request("stepclusterissuers.certmanager.step.sm/absent");
    let action =
        reconcile_waiting(pcr, c.clone(), handle, "Not signed yet, will retry in 1s").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    assert_eq!(c.memory.attempts("pcr-uid"), 1);
}

/// No retry budget for pod certificates: a request created a day ago, after many attempts, is
/// still waited for (the kubelet never asks again once a request is Failed), at the longest
/// backoff, with no status write.
#[tokio::test]
async fn an_old_request_is_still_retried_never_failed() {
    let (ctx, handle) = mock_context();
    let c = Arc::new(PodCertCtx {
        ctx,
        memory: Default::default(),
    });
    for _ in 0..10 {
        c.memory
            .record_failure("pcr-uid", std::time::Instant::now(), Duration::ZERO);
    }
    let mut pcr = request("stepclusterissuers.certmanager.step.sm/absent");
    pcr.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(24),
    ));
    let action =
        reconcile_waiting(pcr, c.clone(), handle, "Not signed yet, will retry in 60s").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(c.memory.attempts("pcr-uid"), 11);
}
