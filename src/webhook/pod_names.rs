//! The names of one pod's certificate: its annotations' templates (see [`crate::pod_template`])
//! expanded for that pod, and which of them the name policy judges.
//!
//! `/bootstrap` expands with what it verified of the calling pod ([`for_pod`]); `/mutate` with
//! stand-ins for what it cannot know yet ([`for_admission`]), so that a template whose every
//! expansion the policy would refuse is denied at `kubectl apply`.

use super::annotations::PodRequest;
use crate::pod_template::{self, Identity, OWN_IP, TemplateError};

/// The expanded names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The common name.
    pub name: String,
    /// The SANs, without duplicates (first one kept).
    pub sans: Vec<String>,
    /// The pod's own IP when an entry is exactly `${POD_IP}`: the pod's own address, read from
    /// the pod itself, needs no pattern in the name policy.
    own_ip: Option<String>,
}

impl Names {
    /// The names the name policy must allow: all but the pod's own IP.
    pub fn to_check(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str())
            .chain(self.sans.iter().map(String::as_str))
            .filter(|n| Some(*n) != self.own_ip.as_deref())
    }
}

/// Whether the request uses any variable (then the agents need the downward-API variables that
/// describe the pod).
pub fn is_templated(req: &PodRequest) -> bool {
    std::iter::once(&req.name)
        .chain(&req.sans)
        .any(|n| n.contains("${"))
}

/// The names for the pod `identity` describes, as verified by `/bootstrap`.
pub fn for_pod(req: &PodRequest, identity: &Identity<'_>) -> Result<Names, TemplateError> {
    expand_all(req, |t| pod_template::expand(t, identity))
}

/// The names `/mutate` checks: the pod's known facts, stand-ins for its generated name and IP.
pub fn for_admission(
    req: &PodRequest,
    identity: &Identity<'_>,
    generate_name: Option<&str>,
) -> Result<Names, TemplateError> {
    expand_all(req, |t| {
        pod_template::expand_sample(t, identity, generate_name)
    })
}

fn expand_all(
    req: &PodRequest,
    expand: impl Fn(&str) -> Result<String, TemplateError>,
) -> Result<Names, TemplateError> {
    let mut own_ip = None;
    let mut one = |template: &str| {
        let value = expand(template)?;
        if template == OWN_IP {
            own_ip = Some(value.clone());
        }
        Ok::<_, TemplateError>(value)
    };
    let name = one(&req.name)?;
    let mut sans: Vec<String> = Vec::with_capacity(req.sans.len());
    for template in &req.sans {
        let value = one(template)?;
        if !sans.contains(&value) {
            sans.push(value);
        }
    }
    Ok(Names { name, sans, own_ip })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::annotations::{self, NAME, SANS};
    use std::collections::BTreeMap;

    fn req(name: &str, sans: Option<&str>) -> PodRequest {
        let mut ann = BTreeMap::from([(NAME.to_owned(), name.to_owned())]);
        if let Some(s) = sans {
            ann.insert(SANS.to_owned(), s.to_owned());
        }
        match annotations::parse(&ann) {
            Ok(Some(r)) => r,
            other => panic!("{name} {sans:?}: {other:?}"),
        }
    }

    fn pod(name: &str) -> Identity<'_> {
        Identity {
            pod_name: Some(name),
            namespace: Some("team"),
            service_account: Some("sa"),
            pod_uid: Some("0b8e4a52-6d0f-4c55-9a3e-1f2d3c4b5a69"),
            pod_ip: Some("10.0.0.7"),
        }
    }

    #[test]
    fn expands_and_deduplicates() {
        let r = req(
            "${POD_NAME}.web.team.svc",
            Some("${POD_NAME}.web.team.svc, web.team.svc, ${POD_IP}"),
        );
        assert!(is_templated(&r));
        let names = for_pod(&r, &pod("web-abcde")).unwrap();
        assert_eq!(names.name, "web-abcde.web.team.svc");
        assert_eq!(
            names.sans,
            ["web-abcde.web.team.svc", "web.team.svc", "10.0.0.7"]
        );
        // The own IP is not judged by the name policy; everything else is.
        assert_eq!(
            names.to_check().collect::<Vec<_>>(),
            [
                "web-abcde.web.team.svc",
                "web-abcde.web.team.svc",
                "web.team.svc"
            ]
        );
        // A literal IP is judged, even when it is the pod's.
        let literal = for_pod(&req("a.team.svc", Some("10.0.0.7")), &pod("p")).unwrap();
        assert_eq!(literal.to_check().last(), Some("10.0.0.7"));
        assert!(!is_templated(&req("a.team.svc", None)));
    }

    #[test]
    fn admission_uses_stand_ins() {
        let r = req("${POD_NAME}.web.${POD_NAMESPACE}.svc", Some("${POD_IP}"));
        let known = Identity {
            pod_name: None,
            pod_ip: None,
            ..pod("")
        };
        let names = for_admission(&r, &known, Some("web-7d9f-")).unwrap();
        assert_eq!(names.name, "web-7d9f-xxxxx.web.team.svc");
        assert_eq!(
            names.to_check().collect::<Vec<_>>(),
            ["web-7d9f-xxxxx.web.team.svc"]
        );
    }

    #[test]
    fn an_unknown_ip_is_an_error_at_bootstrap() {
        let r = req("a.team.svc", Some("${POD_IP}"));
        let no_ip = Identity {
            pod_ip: None,
            ..pod("p")
        };
        assert_eq!(
            for_pod(&r, &no_ip),
            Err(TemplateError::Missing(pod_template::Var::PodIp))
        );
    }
}
