//! `POST /bootstrap`: a pod proves who it is with its projected ServiceAccount token and gets a
//! one-time step-ca token for exactly the names its own annotations ask for.
//!
//! Nothing the caller says is trusted. [`handle`] goes through three steps:
//!
//! 1. `verify_token`: a TokenReview (audience `--token-audience`) names the pod the token is
//!    bound to;
//! 2. `load_request`: that Pod is read from the API by name and must have the same UID; the names
//!    come from its annotations, their variables (`${POD_NAME}`, ...) expanded from this pod
//!    alone (so no pod can name itself after another), and its namespace must have opted in;
//! 3. `mint`: the issuer, read fresh, must allow the namespace in its `spec.policy` and every
//!    name must pass the name policy, all before the issuer's password is read; then its cached
//!    signer (the password re-read at most every [`PASSWORD_RECHECK`]) mints the token.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::crd::StepClusterIssuer;
use crate::issuer::IssuerAccess;
use crate::pod_template::{Identity, TemplateError};
use crate::policy::issuer as issuer_policy;
use crate::policy::{NamePolicy, Requester};
use crate::webhook::{annotations, pod_names};

/// Lifetime of the one-time tokens handed to pods: long enough for a slow CA round trip, short
/// enough that a leaked token is soon useless (and step-ca accepts each only once).
pub const POD_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// How long a cached signer serves `/bootstrap` before its password Secret is read again. The
/// controller notices a changed password at its issuer re-check (every 5 minutes by default) or
/// when step-ca refuses a token; the webhook never sees step-ca's answer to the pods, so it
/// re-reads sooner. Between re-reads a warm `/bootstrap` reads no Secret.
pub const PASSWORD_RECHECK: Duration = Duration::from_secs(60);

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// The answer to a pod; the type is shared with the agent that reads it.
pub use crate::pod_protocol::BootstrapResponse;

/// A refusal: HTTP status, a stable reason for metrics, and a message for the pod's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

fn refuse(status: u16, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason,
        message: message.into(),
    }
}

/// Extracts the bearer token from an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, Refusal> {
    let missing = || {
        refuse(
            401,
            "MissingToken",
            "missing `Authorization: Bearer <token>`: send the projected ServiceAccount token with audience step-operator",
        )
    };
    let value = header.ok_or_else(missing)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(missing)?;
    Ok(token)
}

/// The pod a verified token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The pod a verified token is bound to, from the TokenReview's user info (pure).
pub fn bound_pod(
    username: &str,
    extra: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<BoundPod, Refusal> {
    let namespace = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split(':').next())
        .filter(|ns| !ns.is_empty())
        .ok_or_else(|| refuse(403, "NotAServiceAccount", format!("token of {username:?} is not a ServiceAccount token: use the projected token the webhook injects")))?;
    let first = |key: &str| {
        extra
            .get(key)
            .and_then(|v| v.first())
            .filter(|s| !s.is_empty())
            .cloned()
    };
    match (first(EXTRA_POD_NAME), first(EXTRA_POD_UID)) {
        (Some(name), Some(uid)) => Ok(BoundPod {
            namespace: namespace.to_string(),
            name,
            uid,
        }),
        _ => Err(refuse(
            403,
            "NotBoundToPod",
            "token is not bound to a pod: use the projected ServiceAccount token the webhook injects (audience step-operator)",
        )),
    }
}

#[derive(Clone, Debug)]
pub struct BootstrapSettings {
    pub audience: String,
    pub default_issuer: String,
    pub policy: NamePolicy,
    /// Labels the pod's namespace must carry (`--namespace-label`).
    pub namespace_labels: Vec<(String, String)>,
}

/// What a bound pod asks for, from its own annotations, in a namespace that opted in.
struct PodRequest {
    pod: BoundPod,
    service_account: String,
    request: annotations::PodRequest,
    /// The annotations' names expanded for this pod ([`pod_names::for_pod`]).
    names: pod_names::Names,
}

/// The names of `request` for the pod the token is bound to: its name, namespace and UID from the
/// TokenReview, its ServiceAccount and IP from the Pod read from the API (pure).
fn names_for(
    request: &annotations::PodRequest,
    bound: &BoundPod,
    service_account: &str,
    pod_ip: Option<&str>,
) -> Result<pod_names::Names, Refusal> {
    let identity = Identity {
        pod_name: Some(&bound.name),
        namespace: Some(&bound.namespace),
        service_account: Some(service_account),
        pod_uid: Some(&bound.uid),
        pod_ip,
    };
    pod_names::for_pod(request, &identity).map_err(|e| match e {
        TemplateError::Missing(_) => refuse(
            503,
            "PodIpUnknown",
            format!(
                "pod {}/{} has no IP in the API yet, which its names use: retry",
                bound.namespace, bound.name
            ),
        ),
        other => refuse(400, "BadAnnotation", other.to_string()),
    })
}

/// Answers one `/bootstrap`: who calls (the token), what its pod asks for (its annotations),
/// then a one-time token if the issuer allows it. Runs in the caller's `bootstrap` span, whose
/// `namespace`, `pod`, `uid` and `issuer` fields it fills as they become known.
pub async fn handle(
    ctx: &IssuerAccess,
    settings: &BootstrapSettings,
    token: &str,
) -> Result<BootstrapResponse, Refusal> {
    let pod = verify_token(ctx, settings, token).await?;
    let span = tracing::Span::current();
    span.record("namespace", pod.namespace.as_str());
    span.record("pod", pod.name.as_str());
    span.record("uid", pod.uid.as_str());
    let request = load_request(ctx, settings, pod).await?;
    mint(ctx, settings, request).await
}

/// Has the apiserver verify the token (a TokenReview for our audience) and returns the pod it
/// is bound to.
async fn verify_token(
    ctx: &IssuerAccess,
    settings: &BootstrapSettings,
    token: &str,
) -> Result<BoundPod, Refusal> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![settings.audience.clone()]),
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(ctx.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            refuse(
                503,
                "TokenReviewFailed",
                format!("could not verify the token with the Kubernetes API, retry: {e}"),
            )
        })?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        // The apiserver's error may quote the token's claims but never the token itself.
        return Err(refuse(
            401,
            "TokenRejected",
            format!(
                "token rejected: {}: send a current projected ServiceAccount token with audience {}",
                status.error.unwrap_or_else(|| "not authenticated".into()),
                settings.audience
            ),
        ));
    }
    if !status
        .audiences
        .unwrap_or_default()
        .contains(&settings.audience)
    {
        return Err(refuse(
            401,
            "WrongAudience",
            format!("token is not for audience {}", settings.audience),
        ));
    }
    let user = status.user.unwrap_or_default();
    bound_pod(
        user.username.as_deref().unwrap_or(""),
        &user.extra.unwrap_or_default(),
    )
}

/// Reads the bound pod (it must still be the same pod: same UID) and what its annotations ask
/// for, in a namespace that opted in.
async fn load_request(
    ctx: &IssuerAccess,
    settings: &BootstrapSettings,
    bound: BoundPod,
) -> Result<PodRequest, Refusal> {
    let BoundPod {
        namespace,
        name,
        uid,
    } = &bound;
    let pod = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| {
            refuse(
                503,
                "PodReadFailed",
                format!("could not read pod {namespace}/{name}, retry: {e}"),
            )
        })?
        .ok_or_else(|| {
            refuse(
                403,
                "PodGone",
                format!("pod {namespace}/{name} no longer exists"),
            )
        })?;
    if pod.uid().as_deref() != Some(uid.as_str()) {
        return Err(refuse(
            403,
            "PodReplaced",
            format!("pod {namespace}/{name} was replaced (its UID differs from the token's)"),
        ));
    }
    let request = annotations::parse(pod.annotations())
        .map_err(|e| refuse(400, "BadAnnotation", e.to_string()))?
        .ok_or_else(|| {
            refuse(
                403,
                "NotAnnotated",
                format!(
                    "pod {namespace}/{name} has no {} annotation",
                    annotations::NAME
                ),
            )
        })?;
    // The token is bound to this pod, so the pod's ServiceAccount is the caller's.
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
    let names = names_for(&request, &bound, &service_account, pod_ip)?;
    check_namespace_opted_in(ctx, settings, namespace).await?;
    Ok(PodRequest {
        pod: bound,
        service_account,
        request,
        names,
    })
}

/// Admission only runs in namespaces that opted in; a hand-made pod elsewhere must not get what
/// admission would never have given it (security review M2).
async fn check_namespace_opted_in(
    ctx: &IssuerAccess,
    settings: &BootstrapSettings,
    namespace: &str,
) -> Result<(), Refusal> {
    if settings.namespace_labels.is_empty() {
        return Ok(());
    }
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get(namespace)
        .await
        .map_err(|e| {
            refuse(
                503,
                "NamespaceReadFailed",
                format!("could not read namespace {namespace}, retry: {e}"),
            )
        })?;
    let labels = ns.labels();
    if issuer_policy::namespace_opted_in(
        |k| labels.get(k).map(String::as_str),
        &settings.namespace_labels,
    ) {
        return Ok(());
    }
    let wanted: Vec<String> = settings
        .namespace_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Err(refuse(
        403,
        "NamespaceNotEnabled",
        format!(
            "namespace {namespace} has not opted in to pod certificates: ask its administrators to label it {}",
            wanted.join(",")
        ),
    ))
}

/// Checks the request against its issuer's policy, then mints the one-time token for exactly
/// the names asked for.
async fn mint(
    ctx: &IssuerAccess,
    settings: &BootstrapSettings,
    req: PodRequest,
) -> Result<BootstrapResponse, Refusal> {
    let issuer_name = req
        .request
        .issuer
        .clone()
        .unwrap_or_else(|| settings.default_issuer.clone());
    tracing::Span::current().record("issuer", issuer_name.as_str());
    let issuer = read_issuer(ctx, &issuer_name).await?;
    // The issuer's policy is checked before its Secret is read: a pod that may not use it costs
    // no password read and no connection.
    check_issuer_policy(settings, &issuer, &req)?;
    let (signer, _) = ctx
        .signer_with_recheck(&issuer, PASSWORD_RECHECK)
        .await
        .map_err(|e| {
            let status = if e.is_transient() { 503 } else { 500 };
            refuse(
                status,
                "IssuerNotReady",
                format!(
                    "StepClusterIssuer {issuer_name} cannot sign right now, retry later: {}",
                    e.reason()
                ),
            )
        })?;
    let PodRequest { request, names, .. } = req;
    let token = signer
        .mint_token(&names.name, &names.sans, POD_TOKEN_LIFETIME)
        .map_err(|e| {
            refuse(
                500,
                "TokenFailed",
                format!("could not mint a token: {}", e.reason()),
            )
        })?;
    let root_pem = signer.roots_pem().first().cloned().unwrap_or_default();
    tracing::info!(name = %names.name, sans = names.sans.len(), "Bootstrap token issued");
    Ok(BootstrapResponse {
        token,
        ca_url: signer.url().to_string(),
        root_pem,
        common_name: names.name,
        sans: names.sans,
        duration: request.duration.map(crate::duration::format_go_duration),
    })
}

/// The StepClusterIssuer as the API holds it now: `/bootstrap` decides with its current policy.
async fn read_issuer(ctx: &IssuerAccess, name: &str) -> Result<StepClusterIssuer, Refusal> {
    Api::<StepClusterIssuer>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .map_err(|e| refuse(503, "IssuerReadFailed", format!("could not read StepClusterIssuer {name}, retry: {e}")))?
        .ok_or_else(|| refuse(403, "IssuerMissing", format!("StepClusterIssuer {name} does not exist: fix {} or ask the operator to create it", annotations::ISSUER)))
}

/// The issuer's `spec.policy` (which namespaces, which names) applied to the pod's request.
fn check_issuer_policy(
    settings: &BootstrapSettings,
    issuer: &StepClusterIssuer,
    req: &PodRequest,
) -> Result<(), Refusal> {
    let issuer_name = issuer.name_any();
    let policy =
        issuer_policy::for_pods(issuer.spec.policy.as_ref().map(|p| p.input())).map_err(|e| {
            refuse(
                403,
                "IssuerPolicyInvalid",
                format!("StepClusterIssuer {issuer_name} has an unusable spec.policy: {e}"),
            )
        })?;
    let name_policy = policy.name_policy(&settings.policy);
    issuer_policy::check(
        &format!("StepClusterIssuer {issuer_name}"),
        &policy,
        &name_policy,
        Requester::Pod {
            namespace: &req.pod.namespace,
            service_account: &req.service_account,
        },
        req.names.to_check(),
    )
    .map_err(|e| match e {
        issuer_policy::Refusal::Namespace { .. } => refuse(403, "IssuerNotAllowed", e.to_string()),
        issuer_policy::Refusal::Name { .. } => refuse(403, "NameNotAllowed", e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        for bad in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Basic abc"),
            Some("abc"),
        ] {
            let e = bearer(bad).unwrap_err();
            assert_eq!(e.status, 401, "{bad:?}");
            assert!(e.message.contains("Authorization"), "{e:?}");
        }
    }

    /// The names come from the pod the token is bound to, whatever its annotations say.
    #[test]
    fn names_are_the_bound_pods() {
        let ann = BTreeMap::from([
            (
                annotations::NAME.to_owned(),
                "${POD_NAME}.web.team.svc".to_owned(),
            ),
            (
                annotations::SANS.to_owned(),
                "${POD_NAME}.web.team.svc,${POD_IP},${POD_UID}.pods.team.svc".to_owned(),
            ),
        ]);
        let request = annotations::parse(&ann).unwrap().unwrap();
        let bound = |name: &str| BoundPod {
            namespace: "team".into(),
            name: name.into(),
            uid: format!("{name}-uid"),
        };
        let mut seen = std::collections::BTreeSet::new();
        for replica in ["web-5d8-aaaaa", "web-5d8-bbbbb", "web-5d8-ccccc"] {
            let names = names_for(&request, &bound(replica), "sa", Some("10.0.0.9")).unwrap();
            assert_eq!(names.name, format!("{replica}.web.team.svc"));
            assert_eq!(
                names.sans,
                [
                    names.name.clone(),
                    "10.0.0.9".to_owned(),
                    format!("{replica}-uid.pods.team.svc")
                ]
            );
            seen.insert(names.name);
        }
        assert_eq!(seen.len(), 3);
        let e = names_for(&request, &bound("p"), "sa", None).unwrap_err();
        assert_eq!((e.status, e.reason), (503, "PodIpUnknown"));
    }

    #[test]
    fn bound_pods() {
        let extra = |name: Option<&str>, uid: Option<&str>| {
            let mut m = BTreeMap::new();
            if let Some(n) = name {
                m.insert(EXTRA_POD_NAME.to_string(), vec![n.to_string()]);
            }
            if let Some(u) = uid {
                m.insert(EXTRA_POD_UID.to_string(), vec![u.to_string()]);
            }
            m
        };
        assert_eq!(
            bound_pod(
                "system:serviceaccount:team:app",
                &extra(Some("p"), Some("u"))
            )
            .unwrap(),
            BoundPod {
                namespace: "team".into(),
                name: "p".into(),
                uid: "u".into()
            }
        );
        let cases = [
            (
                "system:serviceaccount:team:app",
                extra(None, Some("u")),
                "NotBoundToPod",
            ),
            (
                "system:serviceaccount:team:app",
                extra(Some("p"), None),
                "NotBoundToPod",
            ),
            (
                "system:serviceaccount:team:app",
                extra(Some(""), Some("u")),
                "NotBoundToPod",
            ),
            ("alice", extra(Some("p"), Some("u")), "NotAServiceAccount"),
            (
                "system:serviceaccount::app",
                extra(Some("p"), Some("u")),
                "NotAServiceAccount",
            ),
        ];
        for (user, extra, reason) in cases {
            assert_eq!(
                bound_pod(user, &extra).unwrap_err().reason,
                reason,
                "{user}"
            );
        }
    }
}
