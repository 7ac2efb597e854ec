//! Per-pod names: `${POD_NAME}`, `${POD_NAMESPACE}`, `${SERVICE_ACCOUNT}`, `${POD_UID}` and
//! `${POD_IP}` in
//! `autocert.step.sm/name` and `autocert.step.sm/sans`, so that each replica of a Deployment gets
//! its own certificate (`${POD_NAME}.web.team.svc`).
//!
//! Who expands them, and with what:
//!
//! - `/bootstrap` (the only place whose result is signed) expands them from the pod the projected
//!   token is bound to: its name, namespace and UID from the TokenReview, its ServiceAccount and
//!   IP from the Pod read from the API. A pod can therefore only ever get its own name and IP.
//! - `/mutate` knows the namespace and the ServiceAccount, the name only when the pod has no
//!   `generateName`, and never the UID (the apiserver assigns it after mutating admission) nor
//!   the IP: it checks the template's shape and the policy with a sample
//!   value for what it does not know (see [`Identity::sample`]).
//! - The agents expand them from the downward-API environment the webhook injects, for their log
//!   lines only.
//!
//! Pure: no I/O. A `$` not followed by `{` is kept as it is (the name policy then judges it).

use std::fmt;

/// A variable a name may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    PodName,
    PodNamespace,
    ServiceAccount,
    PodUid,
    PodIp,
}

impl Var {
    /// Every variable, in the order the documentation lists them.
    pub const ALL: [Var; 5] = [
        Var::PodName,
        Var::PodNamespace,
        Var::ServiceAccount,
        Var::PodUid,
        Var::PodIp,
    ];

    /// The name between `${` and `}`.
    pub fn name(self) -> &'static str {
        match self {
            Var::PodName => "POD_NAME",
            Var::PodNamespace => "POD_NAMESPACE",
            Var::ServiceAccount => "SERVICE_ACCOUNT",
            Var::PodUid => "POD_UID",
            Var::PodIp => "POD_IP",
        }
    }

    fn parse(name: &str) -> Option<Var> {
        Var::ALL.into_iter().find(|v| v.name() == name)
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${{{}}}", self.name())
    }
}

/// The whole entry `${POD_IP}`: the pod's own address, which the policy allows without a pattern
/// once `/bootstrap` has read it from the pod itself.
pub const OWN_IP: &str = "${POD_IP}";

/// Why a template cannot be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "uses the unknown variable ${{{0}}}: use ${{POD_NAME}}, ${{POD_NAMESPACE}}, ${{SERVICE_ACCOUNT}}, ${{POD_UID}} or ${{POD_IP}}"
    )]
    Unknown(String),
    #[error("has a ${{ without its closing }}: write variables as ${{POD_NAME}}")]
    Unclosed,
    #[error("uses {0}, which is not known yet (retry once the pod has it)")]
    Missing(Var),
}

/// What is known of the pod; `None` for what is not (yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity<'a> {
    pub pod_name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub service_account: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
    pub pod_ip: Option<&'a str>,
}

impl<'a> Identity<'a> {
    fn get(&self, var: Var) -> Option<&'a str> {
        match var {
            Var::PodName => self.pod_name,
            Var::PodNamespace => self.namespace,
            Var::ServiceAccount => self.service_account,
            Var::PodUid => self.pod_uid,
            Var::PodIp => self.pod_ip,
        }
        .filter(|v| !v.is_empty())
    }

    /// This identity with stand-ins for what admission cannot know: a pod created with
    /// `generateName` gets its prefix followed by five letters (as the apiserver does), the UID
    /// the nil UUID's shape, and the IP a documentation address, so the policy judges a name of
    /// the right shape.
    pub fn sample(self, generate_name: Option<&'a str>) -> Identity<'a> {
        const SAMPLE_IP: &str = "192.0.2.1";
        const SAMPLE_UID: &str = "00000000-0000-0000-0000-000000000000";
        // With generateName the name is left unknown here: [`expand_sample`] makes it up.
        let fallback = generate_name.is_none().then_some("pod");
        Identity {
            pod_name: self.pod_name.filter(|n| !n.is_empty()).or(fallback),
            pod_uid: self.pod_uid.or(Some(SAMPLE_UID)),
            pod_ip: self.pod_ip.or(Some(SAMPLE_IP)),
            ..self
        }
    }
}

/// The variables `template` uses, in order; an error for an unknown or unclosed one.
pub fn variables(template: &str) -> Result<Vec<Var>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(TemplateError::Unclosed)?;
        let name = &after[..end];
        let var = Var::parse(name).ok_or_else(|| TemplateError::Unknown(clip(name)))?;
        out.push(var);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// `template` with each variable replaced by its value in `identity`.
pub fn expand(template: &str, identity: &Identity<'_>) -> Result<String, TemplateError> {
    expand_with(template, |var| identity.get(var).map(str::to_owned))
}

/// [`expand`] for admission: [`Identity::sample`] values, with a pod created by
/// `generate_name` named `<generate_name>xxxxx`.
pub fn expand_sample(
    template: &str,
    identity: &Identity<'_>,
    generate_name: Option<&str>,
) -> Result<String, TemplateError> {
    let sample = identity.sample(generate_name);
    expand_with(template, |var| match (var, sample.get(var)) {
        (Var::PodName, None) => generate_name.map(|prefix| format!("{prefix}xxxxx")),
        (_, value) => value.map(str::to_owned),
    })
}

fn expand_with(
    template: &str,
    value: impl Fn(Var) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(TemplateError::Unclosed)?;
        let name = &after[..end];
        let var = Var::parse(name).ok_or_else(|| TemplateError::Unknown(clip(name)))?;
        out.push_str(&value(var).ok_or(TemplateError::Missing(var))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A variable name quoted in an error, cut short: it comes from the pod.
fn clip(name: &str) -> String {
    name.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod<'a>(name: &'a str, ip: &'a str) -> Identity<'a> {
        Identity {
            pod_name: Some(name),
            namespace: Some("team"),
            service_account: Some("web-sa"),
            pod_uid: Some("9f1c2d3e-0000-4000-8000-00000000abcd"),
            pod_ip: Some(ip),
        }
    }

    #[test]
    fn expansions() {
        let id = pod("web-7d9f-abcde", "10.1.2.3");
        let cases = [
            ("api.team.svc", Ok("api.team.svc")),
            (
                "${POD_NAME}.web.${POD_NAMESPACE}.svc",
                Ok("web-7d9f-abcde.web.team.svc"),
            ),
            (
                "spiffe://cluster.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT}",
                Ok("spiffe://cluster.local/ns/team/sa/web-sa"),
            ),
            ("${POD_IP}", Ok("10.1.2.3")),
            ("a$b", Ok("a$b")),
            (
                "${POD_UID}.pods.team.svc",
                Ok("9f1c2d3e-0000-4000-8000-00000000abcd.pods.team.svc"),
            ),
            (
                "${POD_UUID}",
                Err(TemplateError::Unknown("POD_UUID".into())),
            ),
            (
                "${pod_name}",
                Err(TemplateError::Unknown("pod_name".into())),
            ),
            ("${POD_NAME", Err(TemplateError::Unclosed)),
        ];
        for (template, want) in cases {
            assert_eq!(expand(template, &id), want.map(str::to_owned), "{template}");
        }
        let no_ip = Identity { pod_ip: None, ..id };
        assert_eq!(
            expand("${POD_IP}", &no_ip),
            Err(TemplateError::Missing(Var::PodIp))
        );
        assert_eq!(
            variables("${POD_NAME}.${POD_NAMESPACE}"),
            Ok(vec![Var::PodName, Var::PodNamespace])
        );
        assert_eq!(variables("plain"), Ok(vec![]));
    }

    /// Three replicas of one Deployment, one template: three names.
    #[test]
    fn replicas_get_distinct_names() {
        let template = "${POD_NAME}.web.team.svc";
        let names: std::collections::BTreeSet<String> =
            ["web-1-aaaaa", "web-1-bbbbb", "web-1-ccccc"]
                .into_iter()
                .map(|n| expand(template, &pod(n, "10.0.0.1")).unwrap())
                .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn admission_samples() {
        let known = Identity {
            namespace: Some("team"),
            service_account: Some("sa"),
            ..Identity::default()
        };
        let t = "${POD_NAME}.web.${POD_NAMESPACE}.svc";
        assert_eq!(
            expand_sample(t, &known, Some("web-7d9f-")).unwrap(),
            "web-7d9f-xxxxx.web.team.svc"
        );
        assert_eq!(expand_sample(t, &known, None).unwrap(), "pod.web.team.svc");
        let named = Identity {
            pod_name: Some("db-0"),
            ..known
        };
        assert_eq!(
            expand_sample(t, &named, Some("ignored-")).unwrap(),
            "db-0.web.team.svc"
        );
        assert_eq!(
            expand_sample("${POD_IP}", &known, None).unwrap(),
            "192.0.2.1"
        );
        // The apiserver gives the pod its UID after admission: a UID-shaped stand-in.
        assert_eq!(
            expand_sample("${POD_UID}.pods.team.svc", &known, None).unwrap(),
            "00000000-0000-0000-0000-000000000000.pods.team.svc"
        );
    }
}
