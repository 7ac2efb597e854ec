//! Security review H4: `/mutate` answers hostile AdmissionReviews without allocating much more
//! than the body it was sent. Measured with a counting global allocator, which is why this is a
//! test binary of its own with a single test (the counter is process-wide).

use peak_alloc::PeakAlloc;
use step_operator::webhook::mutate::{InjectConfig, MAX_REVIEW_BYTES, review};
use step_operator::webhook::server::render;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

const MIB: usize = 1024 * 1024;
/// The bound the review asks for: an 8 MiB body must not cost 32 MiB, body included. Each case
/// must also stay under three times its body (a `serde_json::Value` of `[0,0,…]` took 72 times:
/// 432 MiB for 6 MiB).
const PEAK_LIMIT: usize = 32 * MIB;
/// Bodies "at the limit" leave room for the AdmissionReview around the object.
const UNDER: usize = MAX_REVIEW_BYTES - 1024;

/// `prefix`, then `element,` repeated and a last `element`, then `suffix`: about `size` bytes.
fn filled(prefix: &str, element: &str, suffix: &str, size: usize) -> String {
    let mut out = String::with_capacity(size);
    out.push_str(prefix);
    while out.len() + 2 * element.len() + 1 + suffix.len() <= size {
        out.push_str(element);
        out.push(',');
    }
    out.push_str(element);
    out.push_str(suffix);
    out
}

/// An AdmissionReview of a CREATE of `object`, a `kind` of the core group.
fn review_of(kind: &str, object: &str) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u1","kind":{{"group":"","version":"v1","kind":"{kind}"}},"operation":"CREATE","namespace":"default","userInfo":{{"username":"x"}},"object":{object}}}}}"#
    )
}

fn distinct_annotations(size: usize) -> String {
    let mut object = String::from(r#"{"metadata":{"annotations":{"z":"""#);
    let mut i = 0u64;
    while object.len() < size - 64 {
        object.push_str(&format!(r#","{i:x}":"""#));
        i += 1;
    }
    object.push_str(r#"}},"spec":{"containers":[]}}"#);
    object
}

type Body = fn() -> String;

/// (what, body, wanted HTTP status, text the answer must contain)
const CASES: &[(&str, Body, u16, &str)] = &[
    (
        "8 MiB {\"a\":[0,0,…]}",
        || filled(r#"{"a":["#, "0", "]}", 8 * MIB),
        413,
        "larger than",
    ),
    (
        "8 MiB [0,0,…]",
        || filled("[", "0", "]", 8 * MIB),
        413,
        "larger than",
    ),
    (
        "{\"a\":[0,0,…]} at the limit",
        || filled(r#"{"a":["#, "0", "]}", UNDER),
        400,
        "expected an AdmissionReview",
    ),
    (
        "[0,0,…] at the limit",
        || filled("[", "0", "]", UNDER),
        400,
        "expected an AdmissionReview",
    ),
    (
        "[[[…]]] at the limit",
        || {
            let depth = UNDER / 2 - 64;
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","x":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        },
        400,
        "no request",
    ),
    (
        "a Deployment of [0,0,…]",
        || review_of("Deployment", &filled("[", "0", "]", UNDER)),
        200,
        r#""allowed":true"#,
    ),
    (
        "a Pod with an unknown field",
        || {
            review_of(
                "Pod",
                &filled(r#"{"spec":{"containers":[],"x":["#, "0", "]}}", UNDER),
            )
        },
        200,
        r#""allowed":true"#,
    ),
    (
        "a Pod with tiny containers",
        || {
            review_of(
                "Pod",
                &filled(
                    r#"{"spec":{"containers":["#,
                    r#"{"name":"a"}"#,
                    "]}}",
                    UNDER,
                ),
            )
        },
        200,
        r#""allowed":true"#,
    ),
    (
        "a Pod with tiny mounts",
        || {
            review_of(
                "Pod",
                &filled(
                    r#"{"spec":{"containers":[{"name":"a","volumeMounts":["#,
                    r#"{"mountPath":"/"}"#,
                    "]}]}}",
                    UNDER,
                ),
            )
        },
        200,
        r#""allowed":true"#,
    ),
    (
        "a Pod with tiny volumes",
        || {
            review_of(
                "Pod",
                &filled(
                    r#"{"spec":{"containers":[],"volumes":["#,
                    r#"{"name":"a"}"#,
                    "]}}",
                    UNDER,
                ),
            )
        },
        200,
        r#""allowed":true"#,
    ),
    (
        "a Pod with distinct annotations",
        || review_of("Pod", &distinct_annotations(UNDER)),
        200,
        r#""allowed":true"#,
    ),
    (
        "an annotated Pod with tiny containers",
        || {
            review_of(
                "Pod",
                &filled(
                    r#"{"metadata":{"annotations":{"autocert.step.sm/name":"api.default.svc"}},"spec":{"containers":["#,
                    r#"{"name":"a"}"#,
                    "]}}",
                    UNDER,
                ),
            )
        },
        200,
        "at most 1000",
    ),
];

#[test]
fn hostile_reviews_cost_little_memory() {
    let cfg = InjectConfig::new("image", "https://webhook", "https://ca", "issuer");
    let mut report = Vec::new();
    for (what, body, want_status, want_text) in CASES {
        let body = body().into_bytes();
        ALLOCATOR.reset_peak_usage();
        let before = ALLOCATOR.current_usage();
        // Rendered too: the answer's encoding is part of what a review costs.
        let (status, answer) = render(review(&body, &cfg));
        // The body counts too: the server holds it while `review` reads it.
        let peak = body.len() + (ALLOCATOR.peak_usage() - before);
        let shown = String::from_utf8_lossy(&answer[..answer.len().min(400)]).into_owned();
        report.push(format!(
            "{what}: {} KiB body, HTTP {status}, peak {} KiB",
            body.len() / 1024,
            peak / 1024,
        ));
        assert_eq!(status, *want_status, "{what}: {shown}");
        assert!(
            shown.contains(want_text),
            "{what}: {shown} lacks {want_text}"
        );
        assert!(
            peak < PEAK_LIMIT,
            "{what}: peak {peak} bytes\n{}",
            report.join("\n")
        );
    }
    println!("{}", report.join("\n"));
}
