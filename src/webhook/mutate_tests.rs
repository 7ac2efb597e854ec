//! Tests of [`super::mutate`] and [`super::review`].
//!
//! Golden patches live in `src/webhook/testdata/*.patch.json`; regenerate them with
//! `UPDATE_GOLDEN=1 cargo test --lib webhook::` and review the diff.

use super::*;
use crate::policy::{Pattern, PolicyInput};
use crate::webhook::annotations::{
    BOOTSTRAPPER_ONLY, DURATION, INIT_FIRST, ISSUER, KEY_TYPE, MODE, NAME, OWNER, RELOAD_PROCESS,
    RELOAD_SIGNAL, SANS,
};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Container, Volume};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const NS: &str = "default";

/// [`super::review`] as the server answers it: the HTTP status and the body.
fn review(body: &[u8], cfg: &InjectConfig) -> (u16, Vec<u8>) {
    let (status, body) = crate::webhook::server::render(super::review(body, cfg));
    (status.as_u16(), body)
}

/// These tests are about what is injected, and name their pods `api`: short names are allowed
/// here. The default (refused) is `short_names_are_refused_by_default`.
fn cfg() -> InjectConfig {
    let mut c = InjectConfig::new(
        "ghcr.io/example/step-operator:test",
        "https://step-operator-webhook.step-operator.svc:443/",
        "https://step-ca.step.svc:9000",
        "step-ca",
    );
    c.policy.short_names = true;
    c
}

fn annotations(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect(),
    )
}

/// A pod with one app container and the given annotations.
fn simple_pod(pairs: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "api", "namespace": NS, "annotations": annotations(pairs)},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}
    })
}

/// A pod with two init containers, two app containers (one with mounts), and a volume.
fn busy_pod(pairs: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "api", "namespace": NS, "annotations": annotations(pairs)},
        "spec": {
            "initContainers": [
                {"name": "migrate", "image": "migrate"},
                {"name": "seed", "image": "seed"}
            ],
            "containers": [
                {"name": "app", "image": "nginx",
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "metrics", "image": "exporter"}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    })
}

fn to_pod(v: &Value) -> Pod {
    match serde_json::from_value(v.clone()) {
        Ok(p) => p,
        Err(e) => panic!("not a Pod: {e}"),
    }
}

fn patch_of(pod: &Value) -> Patch {
    match mutate(&to_pod(pod), NS, &cfg()) {
        Ok(Mutation::Patch(p)) => p,
        other => panic!("expected a patch, got {other:?}"),
    }
}

fn apply(pod: &Value, patch: &Patch) -> Value {
    let mut doc = pod.clone();
    if let Err(e) = json_patch::patch(&mut doc, patch) {
        panic!("patch does not apply: {e}\n{patch}");
    }
    doc
}

fn golden(name: &str, patch: &Patch) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/webhook/testdata")
        .join(format!("{name}.patch.json"));
    let got = serde_json::to_value(patch).unwrap_or_default();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&got).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(&path, text) {
            panic!("cannot write {}: {e}", path.display());
        }
        return;
    }
    let want: Value = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => panic!(
            "cannot read golden {}: {e} (run UPDATE_GOLDEN=1 cargo test)",
            path.display()
        ),
    };
    assert_eq!(
        got,
        want,
        "patch differs from {} (run UPDATE_GOLDEN=1 cargo test and review the diff):\n{}",
        path.display(),
        serde_json::to_string_pretty(&got).unwrap_or_default()
    );
}

fn names(containers: &Option<Vec<Container>>) -> Vec<String> {
    containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

fn env_of(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(src)) => format!(
                    "fieldRef:{}",
                    src.field_ref
                        .as_ref()
                        .map(|f| f.field_path.clone())
                        .unwrap_or_default()
                ),
                (None, None) => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect()
}

fn find<'a>(containers: &'a Option<Vec<Container>>, name: &str) -> &'a Container {
    match containers.iter().flatten().find(|c| c.name == name) {
        Some(c) => c,
        None => panic!("no container {name}"),
    }
}

/// Checks the invariants of every injected pod and returns it typed.
fn check_injected(patched: &Value, renewer: bool, owner: Option<(i64, i64)>) -> Pod {
    let pod = to_pod(patched);
    let spec = pod.spec.clone().unwrap_or_default();
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get(STATUS).map(String::as_str), Some(STATUS_INJECTED));

    // Renewer right after the bootstrapper.
    let init = names(&spec.init_containers);
    let b = init.iter().position(|n| n == BOOTSTRAPPER);
    let r = init.iter().position(|n| n == RENEWER);
    match (b, r, renewer) {
        (Some(b), Some(r), true) => assert_eq!(r, b + 1, "{init:?}"),
        (Some(_), None, false) => {}
        other => panic!("bad init containers {init:?}: {other:?}"),
    }

    let mut injected = vec![find(&spec.init_containers, BOOTSTRAPPER)];
    if renewer {
        injected.push(find(&spec.init_containers, RENEWER));
    }
    for c in &injected {
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(owner.map_or(DEFAULT_UID, |o| o.0)));
        assert_eq!(sc.run_as_group, owner.map(|o| o.1));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".to_owned())
        );
        assert_eq!(c.resources, Some(default_resources()));
        let mounts: Vec<(String, String, Option<bool>)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            vec![
                (CERTS_VOLUME.into(), CERTS_DIR.into(), None),
                (TOKEN_VOLUME.into(), TOKEN_DIR.into(), Some(true)),
            ]
        );
        let env = env_of(c);
        assert_eq!(
            env.get("STEP_OPERATOR_BOOTSTRAP_URL").map(String::as_str),
            Some("https://step-operator-webhook.step-operator.svc:443")
        );
        assert_eq!(
            env.get("POD_UID").map(String::as_str),
            Some("fieldRef:metadata.uid")
        );
    }
    assert_eq!(injected[0].restart_policy, None);
    assert_eq!(injected[0].args, Some(vec!["bootstrap".to_owned()]));
    if renewer {
        assert_eq!(injected[1].restart_policy.as_deref(), Some("Always"));
        assert_eq!(injected[1].args, Some(vec!["renew".to_owned()]));
        assert_eq!(injected[0].env, injected[1].env);
    }

    // Every app container mounts the certificates read-only, exactly once.
    for c in &spec.containers {
        let certs: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.mount_path == CERTS_DIR)
            .collect();
        assert_eq!(certs.len(), 1, "{}", c.name);
        assert_eq!(certs[0].read_only, Some(true), "{}", c.name);
    }
    // The pod's own init containers are untouched, except that those running after the
    // bootstrapper (init-first) mount the certificates read-only, as app containers do.
    let mut after_bootstrapper = false;
    for c in spec.init_containers.iter().flatten() {
        if c.name == BOOTSTRAPPER {
            after_bootstrapper = true;
        } else if c.name != RENEWER {
            if after_bootstrapper {
                let mounts = c.volume_mounts.clone().unwrap_or_default();
                assert_eq!(mounts.len(), 1, "{}", c.name);
                assert_eq!(mounts[0].mount_path, CERTS_DIR, "{}", c.name);
                assert_eq!(mounts[0].read_only, Some(true), "{}", c.name);
            } else {
                assert!(c.volume_mounts.is_none(), "{}", c.name);
            }
        }
    }

    let volumes: Vec<&Volume> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name == CERTS_VOLUME || v.name == TOKEN_VOLUME)
        .collect();
    assert_eq!(volumes.len(), 2);
    assert_eq!(
        volumes[0]
            .empty_dir
            .as_ref()
            .and_then(|e| e.medium.as_deref()),
        Some("Memory")
    );
    let token = volumes[1]
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s.first())
        .and_then(|s| s.service_account_token.clone())
        .unwrap_or_default();
    assert_eq!(token.audience.as_deref(), Some("step-operator"));
    assert_eq!(token.expiration_seconds, Some(600));
    assert_eq!(token.path, "token");

    // Idempotent: the patched pod is skipped.
    assert_eq!(mutate(&pod, NS, &cfg()), Ok(Mutation::Skip));
    pod
}

#[test]
fn golden_minimal() {
    let pod = simple_pod(&[(NAME, "api.default.svc")]);
    let patch = patch_of(&pod);
    golden("minimal", &patch);
    let patched = check_injected(&apply(&pod, &patch), true, None);
    let spec = patched.spec.unwrap_or_default();
    assert_eq!(
        names(&spec.init_containers),
        vec![BOOTSTRAPPER.to_owned(), RENEWER.to_owned()]
    );
    let env = env_of(find(&spec.init_containers, BOOTSTRAPPER));
    let want: BTreeMap<String, String> = [
        (
            "STEP_OPERATOR_BOOTSTRAP_URL",
            "https://step-operator-webhook.step-operator.svc:443",
        ),
        ("STEP_CA_URL", "https://step-ca.step.svc:9000"),
        ("AUTOCERT_NAME", "api.default.svc"),
        ("AUTOCERT_SANS", "api.default.svc"),
        ("AUTOCERT_MODE", "0600"),
        ("AUTOCERT_ISSUER", "step-ca"),
        ("AUTOCERT_CERTS_DIR", "/var/run/autocert.step.sm"),
        (
            "STEP_OPERATOR_TOKEN_PATH",
            "/var/run/secrets/step-operator/token",
        ),
        ("POD_NAME", "fieldRef:metadata.name"),
        ("POD_NAMESPACE", "fieldRef:metadata.namespace"),
        ("POD_UID", "fieldRef:metadata.uid"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env, want);
}

/// Every variable injected for the agents is one `AgentArgs` reads: the contract has no value
/// that one side writes and the other ignores. The downward-API `POD_*` variables are the
/// exception: they describe the pod to whatever runs in it, and the agents need none of them
/// (the projected token tells the webhook which pod calls).
#[test]
fn the_agents_read_every_injected_variable() {
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    struct Agent {
        #[command(flatten)]
        args: crate::agent::AgentArgs,
    }
    let read: Vec<String> = Agent::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let pod = simple_pod(&[(NAME, "api"), (DURATION, "1h"), (OWNER, "1:1")]);
    let patched = check_injected(&apply(&pod, &patch_of(&pod)), true, Some((1, 1)));
    let spec = patched.spec.unwrap_or_default();
    for injected in [BOOTSTRAPPER, RENEWER] {
        for name in env_of(find(&spec.init_containers, injected)).keys() {
            if !name.starts_with("POD_") {
                assert!(
                    read.contains(name),
                    "{injected}: {name} is injected but not read"
                );
            }
        }
    }
}

#[test]
fn golden_cases() {
    struct Case {
        golden: &'static str,
        pod: Value,
        renewer: bool,
        owner: Option<(i64, i64)>,
        init_order: &'static [&'static str],
        env: &'static [(&'static str, Option<&'static str>)],
    }
    let cases = vec![
        Case {
            golden: "sans",
            pod: simple_pod(&[
                (NAME, "api.default.svc"),
                (
                    SANS,
                    " api.default.svc, api ,, api.default.svc.cluster.local ",
                ),
            ]),
            renewer: true,
            owner: None,
            init_order: &[BOOTSTRAPPER, RENEWER],
            env: &[
                (
                    "AUTOCERT_SANS",
                    Some("api.default.svc,api,api.default.svc.cluster.local"),
                ),
                ("AUTOCERT_NAME", Some("api.default.svc")),
            ],
        },
        Case {
            golden: "duration",
            pod: simple_pod(&[(NAME, "api"), (DURATION, "90m")]),
            renewer: true,
            owner: None,
            init_order: &[BOOTSTRAPPER, RENEWER],
            env: &[("AUTOCERT_DURATION", Some("1h30m"))],
        },
        Case {
            golden: "init_first",
            pod: busy_pod(&[(NAME, "api"), (INIT_FIRST, "true")]),
            renewer: true,
            owner: None,
            init_order: &[BOOTSTRAPPER, RENEWER, "migrate", "seed"],
            env: &[("AUTOCERT_DURATION", None)],
        },
        Case {
            golden: "init_last",
            pod: busy_pod(&[(NAME, "api")]),
            renewer: true,
            owner: None,
            init_order: &["migrate", "seed", BOOTSTRAPPER, RENEWER],
            env: &[],
        },
        Case {
            golden: "bootstrapper_only",
            pod: busy_pod(&[(NAME, "api"), (BOOTSTRAPPER_ONLY, "true")]),
            renewer: false,
            owner: None,
            init_order: &["migrate", "seed", BOOTSTRAPPER],
            env: &[],
        },
        Case {
            golden: "owner_mode",
            pod: simple_pod(&[(NAME, "api"), (OWNER, "1000:2000"), (MODE, "640")]),
            renewer: true,
            owner: Some((1000, 2000)),
            init_order: &[BOOTSTRAPPER, RENEWER],
            env: &[
                ("AUTOCERT_OWNER", Some("1000:2000")),
                ("AUTOCERT_MODE", Some("0640")),
            ],
        },
        Case {
            golden: "templated",
            pod: json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "web-7d9f-", "namespace": NS, "annotations": annotations(&[
                    (NAME, "${POD_NAME}.web.default.svc"),
                    (SANS, "${POD_NAME}.web.default.svc,web.default.svc,${POD_IP}"),
                ])},
                "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "nginx"}]}
            }),
            renewer: true,
            owner: None,
            init_order: &[BOOTSTRAPPER, RENEWER],
            env: &[
                ("AUTOCERT_NAME", Some("${POD_NAME}.web.default.svc")),
                ("POD_IP", Some("fieldRef:status.podIP")),
                (
                    "POD_SERVICE_ACCOUNT",
                    Some("fieldRef:spec.serviceAccountName"),
                ),
            ],
        },
        Case {
            golden: "reload",
            pod: json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "api", "namespace": NS, "annotations": annotations(&[
                    (NAME, "api"), (OWNER, "101:101"),
                    (RELOAD_SIGNAL, "SIGHUP"), (RELOAD_PROCESS, "nginx"),
                ])},
                "spec": {"shareProcessNamespace": true, "containers": [{"name": "app", "image": "nginx"}]}
            }),
            renewer: true,
            owner: Some((101, 101)),
            init_order: &[BOOTSTRAPPER, RENEWER],
            env: &[
                ("AUTOCERT_RELOAD_SIGNAL", Some("SIGHUP")),
                ("AUTOCERT_RELOAD_PROCESS", Some("nginx")),
            ],
        },
        Case {
            golden: "key_type",
            pod: simple_pod(&[(NAME, "api"), (KEY_TYPE, "EC-P384")]),
            renewer: true,
            owner: None,
            init_order: &[BOOTSTRAPPER, RENEWER],
            env: &[("AUTOCERT_KEY_ALGORITHM", Some("ecdsa-p384"))],
        },
        Case {
            golden: "issuer",
            pod: simple_pod(&[(NAME, "api"), (ISSUER, "internal-ca")]),
            renewer: true,
            owner: None,
            init_order: &[BOOTSTRAPPER, RENEWER],
            env: &[("AUTOCERT_ISSUER", Some("internal-ca"))],
        },
    ];
    for case in cases {
        let patch = patch_of(&case.pod);
        golden(case.golden, &patch);
        let patched = check_injected(&apply(&case.pod, &patch), case.renewer, case.owner);
        let spec = patched.spec.unwrap_or_default();
        assert_eq!(
            names(&spec.init_containers),
            case.init_order.to_vec(),
            "{}",
            case.golden
        );
        let env = env_of(find(&spec.init_containers, BOOTSTRAPPER));
        for (k, v) in case.env {
            assert_eq!(env.get(*k).map(String::as_str), *v, "{} {k}", case.golden);
        }
    }
}

#[test]
fn appends_use_dash_and_escape_annotation_key() {
    let patch = patch_of(&busy_pod(&[(NAME, "api")]));
    let paths: Vec<String> = patch.iter().map(|op| op.path().to_string()).collect();
    assert_eq!(
        paths,
        vec![
            "/spec/initContainers/-",
            "/spec/initContainers/-",
            "/spec/volumes/-",
            "/spec/volumes/-",
            "/spec/containers/0/volumeMounts/-",
            "/spec/containers/1/volumeMounts",
            "/metadata/annotations/autocert.step.sm~1status",
        ]
    );
}

#[test]
fn default_duration_and_existing_mount() {
    let mut c = cfg();
    c.default_duration = Some(Duration::from_secs(86_400));
    c.ca_url = String::new();
    let pod = json!({
        "metadata": {"name": "api", "annotations": {NAME: "api"}},
        "spec": {"containers": [
            {"name": "a", "image": "a",
             "volumeMounts": [{"name": "mine", "mountPath": "/var/run/autocert.step.sm/"}]},
            {"name": "b", "image": "b"}
        ], "volumes": [{"name": "mine", "emptyDir": {}}]}
    });
    let patch = match mutate(&to_pod(&pod), NS, &c) {
        Ok(Mutation::Patch(p)) => p,
        other => panic!("{other:?}"),
    };
    let paths: Vec<String> = patch.iter().map(|op| op.path().to_string()).collect();
    assert!(!paths.iter().any(|p| p.starts_with("/spec/containers/0")));
    assert!(paths.contains(&"/spec/containers/1/volumeMounts".to_owned()));
    let patched = to_pod(&apply(&pod, &patch));
    let spec = patched.spec.unwrap_or_default();
    let env = env_of(find(&spec.init_containers, BOOTSTRAPPER));
    assert_eq!(
        env.get("AUTOCERT_DURATION").map(String::as_str),
        Some("24h")
    );
    assert!(!env.contains_key("STEP_CA_URL"));
}

#[test]
fn skips() {
    let cases = vec![
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}),
        simple_pod(&[]),
        simple_pod(&[("other", "x")]),
        simple_pod(&[(NAME, "api"), (STATUS, "injected")]),
        // Already injected: even bad annotations are not re-checked.
        simple_pod(&[(NAME, "api.other.svc"), (STATUS, "injected")]),
    ];
    for pod in cases {
        assert_eq!(
            mutate(&to_pod(&pod), NS, &cfg()),
            Ok(Mutation::Skip),
            "{pod}"
        );
    }
}

#[test]
fn status_annotation_key_is_escaped() {
    let patch = patch_of(&simple_pod(&[(NAME, "api"), (STATUS, "pending")]));
    let last = patch.last().map(|op| op.path().to_string());
    assert_eq!(
        last.as_deref(),
        Some("/metadata/annotations/autocert.step.sm~1status")
    );
    // An existing status other than "injected" is overwritten.
    let pod = simple_pod(&[(NAME, "api"), (STATUS, "pending")]);
    let patched = apply(&pod, &patch);
    assert_eq!(patched["metadata"]["annotations"][STATUS], STATUS_INJECTED);
}

#[test]
fn denials() {
    let many = vec!["api"; 10_000].join(",");
    let cases: Vec<(Value, &str)> = vec![
        (
            simple_pod(&[(NAME, "api"), (DURATION, "1d")]),
            "autocert.step.sm/duration \"1d\" is not a Go duration: use e.g. 24h or 90m",
        ),
        (
            simple_pod(&[(NAME, "api"), (DURATION, "-5m")]),
            "autocert.step.sm/duration \"-5m\" must be positive",
        ),
        (
            simple_pod(&[(NAME, "api"), (OWNER, "nobody")]),
            "autocert.step.sm/owner \"nobody\" is not \"uid:gid\": use numeric IDs",
        ),
        (
            simple_pod(&[(NAME, "api"), (MODE, "0999")]),
            "autocert.step.sm/mode \"0999\" is not an octal file mode",
        ),
        (
            simple_pod(&[(NAME, "api"), (SANS, &many)]),
            "lists 10000 names: at most 100",
        ),
        (
            simple_pod(&[(NAME, "api"), (SANS, "api,bad\u{1b}[31m")]),
            "contains a control character",
        ),
        (
            simple_pod(&[(NAME, "api.other.svc")]),
            "name \"api.other.svc\" is not allowed in namespace \"default\": use <svc>.default.svc",
        ),
        (
            simple_pod(&[(NAME, "api"), (SANS, "api,www.google.com")]),
            "name \"www.google.com\" is not allowed in namespace \"default\"",
        ),
        (
            simple_pod(&[(NAME, "api"), (SANS, "api,10.0.0.1")]),
            "IP address \"10.0.0.1\" is not allowed",
        ),
        (
            simple_pod(&[(NAME, "${POD_NAME}.web.other.svc")]),
            "name \"api.web.other.svc\" is not allowed in namespace \"default\"",
        ),
        (
            simple_pod(&[(NAME, "api"), (SANS, "${POD_NAMESPACE}.example.com")]),
            "name \"default.example.com\" is not allowed",
        ),
        (
            simple_pod(&[(NAME, "${POD_ID}.web.default.svc")]),
            "uses the unknown variable ${POD_ID}: use ${POD_NAME}",
        ),
        (
            simple_pod(&[
                (NAME, "api"),
                (RELOAD_SIGNAL, "SIGHUP"),
                (RELOAD_PROCESS, "nginx"),
            ]),
            "autocert.step.sm/reload-signal needs the renewer to see the app's processes: set spec.shareProcessNamespace: true on the pod",
        ),
        (
            simple_pod(&[(NAME, "api"), (RELOAD_SIGNAL, "SIGHUP")]),
            "is set without autocert.step.sm/reload-process",
        ),
        (
            simple_pod(&[(NAME, "api"), (KEY_TYPE, "RSA-1024")]),
            "autocert.step.sm/key-type \"RSA-1024\" is not a key type: use EC-P256 (the default), EC-P384, Ed25519, RSA-2048, RSA-3072 or RSA-4096",
        ),
        (
            simple_pod(&[(NAME, "api"), (KEY_TYPE, "dsa")]),
            "is not a key type: use EC-P256 (the default), EC-P384, Ed25519, RSA-2048",
        ),
        (
            simple_pod(&[(NAME, "api"), (BOOTSTRAPPER_ONLY, "maybe")]),
            "autocert.step.sm/bootstrapper-only \"maybe\" is not a boolean: use \"true\" or \"false\"",
        ),
        (
            simple_pod(&[(NAME, "api"), (ISSUER, "Bad Issuer")]),
            "is not a valid StepClusterIssuer name",
        ),
        (
            json!({"metadata": {"name": "p", "annotations": {NAME: "api"}},
                   "spec": {"containers": [{"name": "autocert-renewer"}]}}),
            "already has a container named \"autocert-renewer\"",
        ),
        (
            json!({"metadata": {"name": "p", "annotations": {NAME: "api"}},
                   "spec": {"initContainers": [{"name": "autocert-bootstrapper"}],
                            "containers": [{"name": "a"}]}}),
            "already has a container named \"autocert-bootstrapper\"",
        ),
        (
            json!({"metadata": {"name": "p", "annotations": {NAME: "api"}},
                   "spec": {"containers": [{"name": "a"}],
                            "volumes": [{"name": "certs", "emptyDir": {}}]}}),
            "already has a volume named \"certs\" but no autocert.step.sm/status: injected annotation: rename that volume",
        ),
        (
            json!({"metadata": {"name": "p", "annotations": {NAME: "api"}},
                   "spec": {"containers": [{"name": "a"}],
                            "volumes": [{"name": "step-operator-token", "emptyDir": {}}]}}),
            "already has a volume named \"step-operator-token\"",
        ),
        (
            json!({"metadata": {"name": "p", "annotations": {NAME: "api"}}}),
            "the pod has no spec",
        ),
    ];
    for (pod, want) in cases {
        match mutate(&to_pod(&pod), NS, &cfg()) {
            Err(Denial { message }) => {
                assert!(message.starts_with("autocert.step.sm: "), "{message}");
                assert!(message.contains(want), "{message:?} lacks {want:?}");
                assert!(message.len() < 400, "too long: {message}");
            }
            other => panic!("expected a denial for {pod}, got {other:?}"),
        }
    }
}

/// Security review L1: `db` from one namespace would be trusted as `db` in every other.
#[test]
fn short_names_are_refused_by_default() {
    let strict = InjectConfig::new("img", "https://w/", "https://ca", "step-ca");
    for name in ["api", "localhost"] {
        let pod = simple_pod(&[(NAME, name)]);
        match mutate(&to_pod(&pod), NS, &strict) {
            Err(Denial { message }) => assert!(
                message.contains("single-label name") && message.contains("--allow-short-names"),
                "{message}"
            ),
            other => panic!("{name} was not refused: {other:?}"),
        }
    }
    let own = simple_pod(&[(NAME, "api.default.svc")]);
    assert!(matches!(
        mutate(&to_pod(&own), NS, &strict),
        Ok(Mutation::Patch(_))
    ));
}

/// Issuers the webhook knows, by name.
struct Issuers(Vec<(&'static str, Result<IssuerPolicy, InvalidPolicy>)>);

impl IssuerPolicies for Issuers {
    fn policy_of(&self, issuer: &str) -> Option<Result<IssuerPolicy, InvalidPolicy>> {
        self.0
            .iter()
            .find(|(n, _)| *n == issuer)
            .map(|(_, p)| p.clone())
    }
}

/// Admission applies the pod's issuer's policy when the webhook knows it (the same one
/// /bootstrap applies): its names widen the pod's, its namespaces bound who may use it.
#[test]
fn the_issuers_policy_applies_at_admission() {
    let names = vec!["*.example.com".to_string()];
    let others = vec!["other".to_string()];
    let parse = |namespaces: Option<&[String]>| {
        IssuerPolicy::parse(
            PolicyInput {
                namespaces,
                names: &names,
                ..Default::default()
            },
            true,
        )
    };
    let issuers = Issuers(vec![
        ("step-ca", parse(None)),
        ("restricted", parse(Some(&others))),
        ("broken", Err(InvalidPolicy("bad pattern".into()))),
    ]);
    let strict = InjectConfig::new("img", "https://w/", "https://ca", "step-ca");
    let run = |annotations: &[(&str, &str)]| {
        mutate_view(
            &PodView::of(&to_pod(&simple_pod(annotations))),
            NS,
            &strict,
            &issuers,
        )
    };
    // Widened by the default issuer's names; without the issuer it is refused.
    assert!(matches!(
        run(&[(NAME, "api.example.com")]),
        Ok(Mutation::Patch(_))
    ));
    assert!(
        mutate(
            &to_pod(&simple_pod(&[(NAME, "api.example.com")])),
            NS,
            &strict
        )
        .is_err()
    );
    let denied = |annotations: &[(&str, &str)], want: &str| match run(annotations) {
        Err(Denial { message }) => assert!(message.contains(want), "{message}"),
        other => panic!("{annotations:?} was not denied: {other:?}"),
    };
    denied(&[(NAME, "api.other.svc")], "is not allowed in namespace");
    denied(
        &[(NAME, "api.default.svc"), (ISSUER, "restricted")],
        "StepClusterIssuer restricted may not be used from namespace \"default\"",
    );
    denied(
        &[(NAME, "api.default.svc"), (ISSUER, "broken")],
        "StepClusterIssuer broken has an unusable spec.policy (bad pattern)",
    );
    // An issuer the webhook does not know (yet): the webhook's own policy, /bootstrap decides.
    assert!(matches!(
        run(&[(NAME, "api.default.svc"), (ISSUER, "unknown")]),
        Ok(Mutation::Patch(_))
    ));
}

#[test]
fn policy_patterns_allow_external_names() {
    let mut c = cfg();
    c.policy.allowed = vec![
        "*.example.com"
            .parse::<Pattern>()
            .unwrap_or(Pattern::Exact(String::new())),
    ];
    let pod = simple_pod(&[(NAME, "api.example.com"), (SANS, "api.example.com,api")]);
    assert!(matches!(
        mutate(&to_pod(&pod), NS, &c),
        Ok(Mutation::Patch(_))
    ));
}

// ---- review() ----

fn admission_review(api_version: &str, kind: &str, operation: &str, object: &Value) -> Vec<u8> {
    let (group, version, resource) = if kind == "Pod" {
        ("", "v1", "pods")
    } else {
        ("apps", "v1", "deployments")
    };
    serde_json::to_vec(&json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "namespace": NS,
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "dryRun": false
        }
    }))
    .unwrap_or_default()
}

fn parse_body(body: &[u8]) -> Value {
    match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => panic!("body is not JSON: {e}: {}", String::from_utf8_lossy(body)),
    }
}

#[test]
fn review_round_trip() {
    let pod = simple_pod(&[(NAME, "api.default.svc")]);
    let (status, body) = review(
        &admission_review(ADMISSION_V1, "Pod", "CREATE", &pod),
        &cfg(),
    );
    assert_eq!(status, 200);
    let v = parse_body(&body);
    assert_eq!(v["apiVersion"], ADMISSION_V1);
    assert_eq!(v["kind"], "AdmissionReview");
    let resp = &v["response"];
    assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp["patchType"], "JSONPatch");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let patch: Patch = match serde_json::from_slice(&raw) {
        Ok(p) => p,
        Err(e) => panic!("patch is not a JSON Patch: {e}"),
    };
    assert_eq!(patch, patch_of(&pod));
    check_injected(&apply(&pod, &patch), true, None);
}

#[test]
fn review_answers() {
    let pod = simple_pod(&[(NAME, "api.default.svc")]);
    /// (body, HTTP status, allowed (None: not an AdmissionReview), has patch, text in the body)
    type Case = (Vec<u8>, u16, Option<bool>, bool, &'static str);
    let cases: Vec<Case> = vec![
        (
            admission_review("admission.k8s.io/v1beta1", "Pod", "CREATE", &pod),
            400,
            None,
            false,
            "only admission.k8s.io/v1 is supported",
        ),
        (b"garbage".to_vec(), 400, None, false, "not valid JSON"),
        (Vec::new(), 400, None, false, "not valid JSON"),
        (
            {
                let full = admission_review(ADMISSION_V1, "Pod", "CREATE", &pod);
                full[..full.len() / 2].to_vec()
            },
            400,
            None,
            false,
            "not valid JSON",
        ),
        (
            serde_json::to_vec(&json!({"apiVersion": ADMISSION_V1, "kind": "AdmissionReview"}))
                .unwrap_or_default(),
            400,
            None,
            false,
            "no request",
        ),
        (
            serde_json::to_vec(
                &json!({"apiVersion": ADMISSION_V1, "kind": "AdmissionReview",
                                        "request": {"uid": 5}}),
            )
            .unwrap_or_default(),
            400,
            None,
            false,
            "malformed AdmissionReview",
        ),
        (
            admission_review(
                ADMISSION_V1,
                "Deployment",
                "CREATE",
                &json!({"metadata": {"name": "d"}}),
            ),
            200,
            Some(true),
            false,
            "705ab4f5",
        ),
        (
            admission_review(ADMISSION_V1, "Pod", "UPDATE", &pod),
            200,
            Some(true),
            false,
            "705ab4f5",
        ),
        (
            admission_review(ADMISSION_V1, "Pod", "CREATE", &simple_pod(&[])),
            200,
            Some(true),
            false,
            "705ab4f5",
        ),
        (
            admission_review(
                ADMISSION_V1,
                "Pod",
                "CREATE",
                &simple_pod(&[(NAME, "api.other.svc")]),
            ),
            200,
            Some(false),
            false,
            "autocert.step.sm: name \\\"api.other.svc\\\" is not allowed",
        ),
        (
            admission_review(ADMISSION_V1, "Pod", "CREATE", &json!({"spec": 5})),
            200,
            Some(false),
            false,
            "cannot read the Pod",
        ),
    ];
    for (body, want_status, allowed, has_patch, text) in cases {
        let (status, out) = review(&body, &cfg());
        let shown = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(status, want_status, "{shown}");
        assert!(shown.contains(text), "{shown} lacks {text}");
        let v = parse_body(&out);
        match allowed {
            None => {
                assert_eq!(v["kind"], "Status");
                assert_eq!(v["code"], want_status);
            }
            Some(allowed) => {
                assert_eq!(v["apiVersion"], ADMISSION_V1);
                assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
                assert_eq!(v["response"]["allowed"], allowed, "{shown}");
                assert_eq!(v["response"].get("patch").is_some(), has_patch, "{shown}");
                if !allowed {
                    assert_eq!(v["response"]["status"]["code"], 403, "{shown}");
                    let msg = v["response"]["status"]["message"].as_str().unwrap_or("");
                    assert!(msg.starts_with("autocert.step.sm: "), "{msg}");
                }
            }
        }
    }
}

/// With init-first the pod's own init containers run after the bootstrapper, so they get the
/// files too (as with autocert); without it they run before the files exist and get nothing.
#[test]
fn own_init_containers_mount_the_files_only_with_init_first() {
    let certs_mounts = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["mountPath"] == CERTS_DIR).count())
            .unwrap_or(0)
    };
    for (first, only, want) in [
        ("true", "false", 1),
        ("true", "true", 1),
        ("false", "false", 0),
    ] {
        let pod = busy_pod(&[
            (NAME, "api"),
            (INIT_FIRST, first),
            (BOOTSTRAPPER_ONLY, only),
        ]);
        let doc = apply(&pod, &patch_of(&pod));
        let inits = doc["spec"]["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for own in ["migrate", "seed"] {
            let c = inits
                .iter()
                .find(|c| c["name"] == own)
                .unwrap_or(&Value::Null);
            assert_eq!(
                certs_mounts(c),
                want,
                "{own} with init-first={first}, bootstrapper-only={only}: {c}"
            );
        }
        for injected in inits
            .iter()
            .filter(|c| c["name"] == BOOTSTRAPPER || c["name"] == RENEWER)
        {
            assert!(
                injected["volumeMounts"].as_array().is_some_and(|m| m
                    .iter()
                    .any(|m| m["mountPath"] == CERTS_DIR && m["readOnly"] != true)),
                "the injected container lost its writable mount: {injected}"
            );
        }
    }
}

/// The pure outcome, before the server renders it: what kind of answer, not which status code.
#[test]
fn review_outcomes() {
    let too_large = super::review(&vec![b' '; MAX_REVIEW_BYTES + 1], &cfg());
    assert!(
        matches!(
            too_large,
            ReviewOutcome::BadRequest {
                problem: BadRequest::TooLarge,
                ..
            }
        ),
        "{too_large:?}"
    );
    let garbage = super::review(b"garbage", &cfg());
    assert!(
        matches!(&garbage, ReviewOutcome::BadRequest { problem: BadRequest::Malformed, message } if message.contains("not valid JSON")),
        "{garbage:?}"
    );
    let pod = simple_pod(&[(NAME, "api"), (OWNER, "0:0")]);
    let denied = super::review(
        &admission_review(ADMISSION_V1, "Pod", "CREATE", &pod),
        &cfg(),
    );
    let ReviewOutcome::Answer(answer) = denied else {
        panic!("a denial is an answer: {denied:?}")
    };
    assert!(!answer.allowed);
    assert_eq!(answer.result.code, 403);
    assert!(answer.result.message.contains("has uid 0"), "{answer:?}");
}

#[test]
fn review_too_large() {
    let (status, _) = review(&vec![b' '; MAX_REVIEW_BYTES + 1], &cfg());
    assert_eq!(status, 413);
}

proptest! {
    #[test]
    fn review_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (status, out) = review(&body, &cfg());
        prop_assert!(status == 200 || status == 400);
        prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
    }

    #[test]
    fn review_never_panics_on_annotations(
        pairs in proptest::collection::btree_map(
            prop_oneof![
                Just(NAME.to_owned()), Just(SANS.to_owned()), Just(DURATION.to_owned()),
                Just(INIT_FIRST.to_owned()), Just(BOOTSTRAPPER_ONLY.to_owned()),
                Just(OWNER.to_owned()), Just(MODE.to_owned()), Just(ISSUER.to_owned()),
                Just(STATUS.to_owned()), "[a-z./]{1,20}",
            ],
            prop_oneof![
                Just("api".to_owned()), Just("true".to_owned()), Just("1h".to_owned()),
                Just("1000:1000".to_owned()), Just("0600".to_owned()), ".{0,40}",
            ],
            0..8,
        ),
        busy in any::<bool>(),
    ) {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let pod = if busy { busy_pod(&pairs) } else { simple_pod(&pairs) };
        let (status, out) = review(&admission_review(ADMISSION_V1, "Pod", "CREATE", &pod), &cfg());
        prop_assert_eq!(status, 200);
        // A malformed answer fails the case; it must never pass as "no patch".
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| TestCaseError::fail(format!("the answer is not JSON ({e}): {}", String::from_utf8_lossy(&out))))?;
        let response = &v["response"];
        prop_assert!(response.is_object(), "no response object: {}", v);
        prop_assert_eq!(&response["uid"], &json!("705ab4f5-6393-11e8-b7cc-42010a800002"), "{}", v);
        match response["allowed"].as_bool() {
            Some(true) => {}
            // Denied: a message, no patch.
            Some(false) => {
                prop_assert!(response["status"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", v);
                prop_assert!(response["patch"].is_null(), "{}", v);
            }
            None => prop_assert!(false, "allowed is not a boolean: {}", v),
        }
        match &response["patch"] {
            Value::Null => {}
            Value::String(p) => {
                prop_assert_eq!(response["patchType"].as_str(), Some("JSONPatch"), "{}", v);
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .map_err(|e| TestCaseError::fail(format!("the patch is not base64 ({e}): {v}")))?;
                let patch: Patch = serde_json::from_slice(&raw)
                    .map_err(|e| TestCaseError::fail(format!("the patch is not a JSON patch ({e}): {v}")))?;
                let mut doc = pod.clone();
                prop_assert!(json_patch::patch(&mut doc, &patch).is_ok());
                prop_assert_eq!(mutate(&to_pod(&doc), NS, &cfg()), Ok(Mutation::Skip));
            }
            other => prop_assert!(false, "the patch is not a base64 string: {}", other),
        }
    }
}

/// Problems that leave the pod working are admission warnings, printed by `kubectl apply`.
#[test]
fn warnings_reach_the_answer() {
    let cases: Vec<(Value, bool, Vec<&str>)> = vec![
        (simple_pod(&[(NAME, "api")]), true, vec![]),
        (
            simple_pod(&[(NAME, "api"), ("autocert.step.sm/durattion", "1h")]),
            true,
            vec!["did you mean autocert.step.sm/duration?"],
        ),
        (
            simple_pod(&[(SANS, "api")]),
            true,
            vec!["autocert.step.sm/name is not, so no certificate is injected"],
        ),
        // A denied pod still hears about its typos.
        (
            simple_pod(&[
                (NAME, "api"),
                (OWNER, "0:0"),
                ("autocert.step.sm/mod", "0600"),
            ]),
            false,
            vec!["did you mean autocert.step.sm/mode?"],
        ),
        (
            json!({"metadata": {"name": "api", "annotations": annotations(&[
                (NAME, "api"), (RELOAD_SIGNAL, "SIGHUP"), (RELOAD_PROCESS, "nginx")])},
                   "spec": {"shareProcessNamespace": true, "containers": [{"name": "a"}]}}),
            true,
            vec!["can only signal processes of that uid: set autocert.step.sm/owner"],
        ),
        // Already injected: warned at creation, not again.
        (
            simple_pod(&[
                (NAME, "api"),
                (STATUS, STATUS_INJECTED),
                ("autocert.step.sm/x", ""),
            ]),
            true,
            vec![],
        ),
    ];
    for (pod, allowed, want) in cases {
        let log = CapturedLog::default();
        let outcome = tracing::subscriber::with_default(log.subscriber(), || {
            super::review(
                &admission_review(ADMISSION_V1, "Pod", "CREATE", &pod),
                &cfg(),
            )
        });
        let ReviewOutcome::Answer(answer) = outcome else {
            panic!("{pod}: {outcome:?}")
        };
        assert_eq!(answer.allowed, allowed, "{pod}: {answer:?}");
        let got = answer.warnings.clone().unwrap_or_default();
        assert_eq!(got.len(), want.len(), "{pod}: {got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.contains(w), "{g:?} lacks {w:?}");
        }
        // Each warning is also in the webhook's log, for the platform team.
        let logged = log.text();
        assert_eq!(
            logged.matches("Pod admitted with a warning").count(),
            want.len(),
            "{logged}"
        );
        for w in &want {
            assert!(logged.contains(w), "{w:?} not logged: {logged}");
        }
        let (_, body) = crate::webhook::server::render(ReviewOutcome::Answer(answer));
        let body = parse_body(&body);
        assert_eq!(
            body["response"]["warnings"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0),
            want.len(),
            "{body}"
        );
    }
}

/// What a test's code logs, as text.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish()
    }

    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
