//! Reads an `admission.k8s.io/v1` AdmissionReview into just the fields `/mutate` uses, and
//! encodes the answer.
//!
//! The body comes from anyone who can reach the webhook, so it is read into typed structs that
//! skip every other field without building it (a `serde_json::Value` of `[0,0,…]` costs about
//! 64 bytes per 2 bytes of input). The object under review is kept as the raw JSON text it
//! borrows from the body, and only parsed when the request is a Pod CREATE.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::error::Category;
use serde_json::value::RawValue;

use kube::core::admission::AdmissionResponse;
pub use kube::core::admission::Operation;

/// The only AdmissionReview version served.
pub const ADMISSION_V1: &str = "admission.k8s.io/v1";
/// The AdmissionReview kind.
pub const ADMISSION_REVIEW: &str = "AdmissionReview";

/// The parts of `request` that `/mutate` decides on.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an AdmissionRequest object", rename_all = "camelCase")]
pub struct Request<'a> {
    pub uid: String,
    pub kind: Kind,
    pub operation: Operation,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object's name; empty for a Pod created with `generateName`.
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    /// The object as sent, unparsed.
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
}

/// The kind of the object under review.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a GroupVersionKind object")]
pub struct Kind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
}

/// Longest value of a log field taken from the body: the longest Kubernetes name. The body comes
/// from anyone who can reach the webhook, and a field of megabytes would be copied into every
/// log line of the review.
const MAX_LOGGED: usize = 253;

fn clip(s: &str) -> &str {
    let mut end = s.len().min(MAX_LOGGED);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Request<'_> {
    /// Names the object under review in `span` (its `uid`, `namespace` and `pod` fields).
    pub fn record_in(&self, span: &tracing::Span) {
        span.record("uid", clip(&self.uid));
        span.record("namespace", clip(self.namespace.as_deref().unwrap_or("")));
        span.record("pod", clip(self.name.as_deref().unwrap_or("")));
    }

    /// A Pod being created (not one of its subresources).
    pub fn is_pod_create(&self) -> bool {
        self.kind.group.is_empty()
            && self.kind.kind == "Pod"
            && self.operation == Operation::Create
            && self.sub_resource.as_deref().is_none_or(str::is_empty)
    }
}

#[derive(Deserialize)]
#[serde(expecting = "an AdmissionReview object", rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
}

/// Why a body is not an AdmissionReview `/mutate` can answer; the text says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

fn wrong_kind(kind: &str, api_version: &str) -> BadReview {
    BadReview(format!(
        "expected an AdmissionReview of apiVersion {ADMISSION_V1}, got kind {kind:?} apiVersion \
         {api_version:?}: only {ADMISSION_V1} is supported; set admissionReviewVersions: [\"v1\"] \
         on the webhook"
    ))
}

fn starts_an_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The AdmissionReview that carries `response`, as JSON. kube serializes `response.patch` (a
/// `Vec<u8>`) as an array of numbers; the canonical form (what Go's `[]byte` produces) is a
/// base64 string, so it is rewritten here.
pub fn encode(response: AdmissionResponse) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine as _;
    let patch = response
        .patch
        .as_deref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let mut review = serde_json::to_value(response.into_review())?;
    if let (Some(patch), Some(resp)) = (
        patch,
        review
            .get_mut("response")
            .and_then(serde_json::Value::as_object_mut),
    ) {
        resp.insert("patch".to_owned(), serde_json::Value::String(patch));
    }
    serde_json::to_vec(&review)
}

/// Reads `body` as an `admission.k8s.io/v1` AdmissionReview and returns its request.
pub fn read(body: &[u8]) -> Result<Request<'_>, BadReview> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) if matches!(e.classify(), Category::Syntax | Category::Eof) => {
            return Err(BadReview(format!("request body is not valid JSON: {e}")));
        }
        // A JSON array or scalar: it fails on its first element, without reading further.
        Err(_) if !starts_an_object(body) => return Err(wrong_kind("", "")),
        Err(e) => return Err(BadReview(format!("malformed AdmissionReview: {e}"))),
    };
    let kind = envelope.kind.as_deref().unwrap_or("");
    let api_version = envelope.api_version.as_deref().unwrap_or("");
    if kind != ADMISSION_REVIEW || api_version != ADMISSION_V1 {
        return Err(wrong_kind(kind, api_version));
    }
    let Some(request) = envelope.request else {
        return Err(BadReview("AdmissionReview has no request".to_owned()));
    };
    serde_json::from_str(request.get())
        .map_err(|e| BadReview(format!("malformed AdmissionReview: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_request() {
        let body = br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","extra":[1,{"a":null}],
            "request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
            "namespace":"ns","userInfo":{"username":"x"},"object":{"metadata":{"name":"p"}}}}"#;
        let req = match read(body) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(req.uid, "u1");
        assert!(req.is_pod_create());
        assert_eq!(req.namespace.as_deref(), Some("ns"));
        assert_eq!(
            req.object.map(RawValue::get),
            Some(r#"{"metadata":{"name":"p"}}"#)
        );
    }

    /// Log fields from the body are cut to a name's length, on a character boundary.
    #[test]
    fn logged_fields_are_bounded() {
        assert_eq!(clip("pod-1"), "pod-1");
        let long = "é".repeat(200);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_LOGGED && clipped.len() >= MAX_LOGGED - 1);
        assert!(long.starts_with(clipped));
    }

    #[test]
    fn pod_create_only() {
        let request = |group: &str, kind: &str, op: &str, sub: &str| {
            format!(
                r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"u",
                "kind":{{"group":"{group}","kind":"{kind}"}},"operation":"{op}","subResource":"{sub}"}}}}"#
            )
        };
        for (group, kind, op, sub, want) in [
            ("", "Pod", "CREATE", "", true),
            ("", "Pod", "UPDATE", "", false),
            ("", "Pod", "CREATE", "binding", false),
            ("apps", "Pod", "CREATE", "", false),
            ("", "Service", "CREATE", "", false),
        ] {
            let body = request(group, kind, op, sub);
            match read(body.as_bytes()) {
                Ok(r) => assert_eq!(r.is_pod_create(), want, "{body}"),
                Err(e) => panic!("{body}: {e}"),
            }
        }
    }

    #[test]
    fn bad_bodies_say_why() {
        for (body, text) in [
            (&b"garbage"[..], "not valid JSON"),
            (b"", "not valid JSON"),
            (b"{\"kind\":", "not valid JSON"),
            (b"[0,0,0]", "expected an AdmissionReview"),
            (b"  5", "expected an AdmissionReview"),
            (b"{}", "expected an AdmissionReview"),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1"}"#,
                "set admissionReviewVersions",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
                "no request",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":5}}"#,
                "malformed AdmissionReview",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":5}"#,
                "malformed AdmissionReview",
            ),
        ] {
            match read(body) {
                Ok(r) => panic!("{} was read as {r:?}", String::from_utf8_lossy(body)),
                Err(e) => assert!(
                    e.0.contains(text),
                    "{}: {e} lacks {text}",
                    String::from_utf8_lossy(body)
                ),
            }
        }
    }
}
