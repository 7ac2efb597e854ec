//! `POST /bootstrap`: a pod proves who it is with its projected ServiceAccount token and gets a
//! one-time step-ca token for exactly the names its own annotations ask for.
//!
//! Nothing the caller says is trusted: the token is verified by a TokenReview (audience
//! `step-operator`), the bound Pod is read from the API by name and must have the same UID, and
//! the names come from that Pod's annotations. The pod's namespace must have opted in (its
//! labels), the issuer's `spec.policy` must allow the namespace, and every name must pass the
//! name policy, all before the issuer's password is read.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::crd::StepClusterIssuer;
use crate::issuer::IssuerAccess;
use crate::policy::issuer as issuer_policy;
use crate::policy::{NamePolicy, Requester};
use crate::webhook::annotations;

/// Lifetime of the one-time tokens handed to pods: long enough for a slow CA round trip, short
/// enough that a leaked token is soon useless (and step-ca accepts each only once).
pub const POD_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

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

/// The pod a verified token is bound to, from the TokenReview's user info (pure).
pub fn bound_pod(
    username: &str,
    extra: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<(String, String, String), Refusal> {
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
        (Some(name), Some(uid)) => Ok((namespace.to_string(), name, uid)),
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

pub async fn handle(
    ctx: &IssuerAccess,
    settings: &BootstrapSettings,
    token: &str,
) -> Result<BootstrapResponse, Refusal> {
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
    let (namespace, pod_name, pod_uid) = bound_pod(
        user.username.as_deref().unwrap_or(""),
        &user.extra.unwrap_or_default(),
    )?;

    let pod = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&pod_name)
        .await
        .map_err(|e| {
            refuse(
                503,
                "PodReadFailed",
                format!("could not read pod {namespace}/{pod_name}, retry: {e}"),
            )
        })?
        .ok_or_else(|| {
            refuse(
                403,
                "PodGone",
                format!("pod {namespace}/{pod_name} no longer exists"),
            )
        })?;
    if pod.uid().as_deref() != Some(pod_uid.as_str()) {
        return Err(refuse(
            403,
            "PodReplaced",
            format!("pod {namespace}/{pod_name} was replaced (its UID differs from the token's)"),
        ));
    }
    let request = annotations::parse(pod.annotations())
        .map_err(|e| refuse(400, "BadAnnotation", e.to_string()))?
        .ok_or_else(|| {
            refuse(
                403,
                "NotAnnotated",
                format!(
                    "pod {namespace}/{pod_name} has no {} annotation",
                    annotations::NAME
                ),
            )
        })?;
    // The token is bound to this pod, so the pod's ServiceAccount is the caller's.
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    // Admission only runs in namespaces that opted in; a hand-made pod elsewhere must not get
    // what admission would never have given it (security review M2).
    if !settings.namespace_labels.is_empty() {
        let ns = Api::<Namespace>::all(ctx.client.clone())
            .get(&namespace)
            .await
            .map_err(|e| {
                refuse(
                    503,
                    "NamespaceReadFailed",
                    format!("could not read namespace {namespace}, retry: {e}"),
                )
            })?;
        let labels = ns.labels();
        if !issuer_policy::namespace_opted_in(
            |k| labels.get(k).map(String::as_str),
            &settings.namespace_labels,
        ) {
            let wanted: Vec<String> = settings
                .namespace_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            return Err(refuse(
                403,
                "NamespaceNotEnabled",
                format!(
                    "namespace {namespace} has not opted in to pod certificates: ask its administrators to label it {}",
                    wanted.join(",")
                ),
            ));
        }
    }

    let issuer_name = request
        .issuer
        .clone()
        .unwrap_or_else(|| settings.default_issuer.clone());
    let issuer = Api::<StepClusterIssuer>::all(ctx.client.clone())
        .get_opt(&issuer_name)
        .await
        .map_err(|e| refuse(503, "IssuerReadFailed", format!("could not read StepClusterIssuer {issuer_name}, retry: {e}")))?
        .ok_or_else(|| refuse(403, "IssuerMissing", format!("StepClusterIssuer {issuer_name} does not exist: fix {} or ask the operator to create it", annotations::ISSUER)))?;
    // The issuer's policy is checked before its Secret is read: a pod that may not use it costs
    // no password read and no connection.
    let policy =
        issuer_policy::for_pods(issuer.spec.policy.as_ref().map(|p| p.input())).map_err(|e| {
            refuse(
                403,
                "IssuerPolicyInvalid",
                format!("StepClusterIssuer {issuer_name} has an unusable spec.policy: {e}"),
            )
        })?;
    let names = policy.name_policy(&settings.policy);
    issuer_policy::check(
        &format!("StepClusterIssuer {issuer_name}"),
        &policy,
        &names,
        Requester::Pod {
            namespace: &namespace,
            service_account,
        },
        std::iter::once(request.name.as_str()).chain(request.sans.iter().map(String::as_str)),
    )
    .map_err(|e| match e {
        issuer_policy::Refusal::Namespace { .. } => refuse(403, "IssuerNotAllowed", e.to_string()),
        issuer_policy::Refusal::Name { .. } => refuse(403, "NameNotAllowed", e.to_string()),
    })?;
    let (signer, _) = ctx.signer_for(&issuer).await.map_err(|e| {
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
    let token = signer
        .mint_token(&request.name, &request.sans, POD_TOKEN_LIFETIME)
        .map_err(|e| {
            refuse(
                500,
                "TokenFailed",
                format!("could not mint a token: {}", e.reason()),
            )
        })?;
    let root_pem = signer.roots_pem().first().cloned().unwrap_or_default();
    tracing::info!(pod = %pod_name, namespace = %namespace, name = %request.name, sans = request.sans.len(), issuer = %issuer_name, "Bootstrap token issued");
    Ok(BootstrapResponse {
        token,
        ca_url: signer.url().to_string(),
        root_pem,
        common_name: request.name,
        sans: request.sans,
        duration: request.duration.map(crate::duration::format_go_duration),
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
            ("team".into(), "p".into(), "u".into())
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
