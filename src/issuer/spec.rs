//! Validation of an issuer's spec and the rules for where its password may come from (pure).

use std::path::PathBuf;

use crate::crd::issuer::IssuerSpecView;

/// Where to read a provisioner password.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PasswordSource {
    Secret {
        namespace: String,
        name: String,
        key: String,
    },
    Env(String),
    File(PathBuf),
}

/// A spec that passed validation, ready to connect with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidIssuer {
    pub url: String,
    /// PEM roots for step-ca's TLS, or None for the system roots.
    pub ca_bundle_pem: Option<Vec<u8>>,
    pub provisioner_name: String,
    pub kid: Option<String>,
    /// `None` only with a plain key in `key`.
    pub password: Option<PasswordSource>,
    /// The Secret holding the provisioner's key (`keyRef`); without it the CA serves it.
    pub key: Option<KeySource>,
    /// `spec.maxDuration`.
    pub max_duration: Option<std::time::Duration>,
    /// `spec.audienceHost`, as given.
    pub audience_host: Option<String>,
}

/// The Secret key a provisioner's private key is read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeySource {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// Checks a spec. `issuer_namespace` is Some for a StepIssuer and None for a StepClusterIssuer.
pub fn validate(
    spec: &IssuerSpecView<'_>,
    issuer_namespace: Option<&str>,
    cluster_resource_namespace: &str,
) -> Result<ValidIssuer, InvalidSpec> {
    let url = valid_url(spec.url)?;
    if let Some(policy) = spec.policy {
        crate::policy::IssuerPolicy::parse(policy.input(), issuer_namespace.is_none())
            .map_err(|e| InvalidSpec(e.0))?;
    }
    let p = spec.provisioner;
    if p.name.trim().is_empty() {
        return Err(InvalidSpec(
            "spec.provisioner.name is empty: set it to the JWK provisioner's name (step ca provisioner list)".into(),
        ));
    }
    let kid = p.kid.as_deref().map(str::trim).filter(|k| !k.is_empty());
    let ca_bundle_pem = match spec.ca_bundle {
        None => None,
        Some([]) => None,
        Some(b) => Some(ca_bundle_to_pem(b)?),
    };
    let key = key_source(p, issuer_namespace, cluster_resource_namespace)?;
    let password = match password_source(p, issuer_namespace, cluster_resource_namespace) {
        Ok(source) => Some(source),
        // A plain key needs no password; whether the Secret holds one is seen when it is read.
        Err(NoPassword) if key.is_some() => None,
        Err(NoPassword) => return Err(InvalidSpec(NO_PASSWORD.into())),
        Err(Invalid(e)) => return Err(e),
    };
    Ok(ValidIssuer {
        url: url.trim_end_matches('/').to_string(),
        ca_bundle_pem,
        provisioner_name: p.name.trim().to_string(),
        kid: kid.map(str::to_string),
        password,
        key,
        max_duration: max_duration(spec.max_duration)?,
        audience_host: spec
            .audience_host
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_string),
    })
}

const NO_PASSWORD: &str = "one of spec.provisioner.passwordRef, passwordEnv or passwordFile must be set: point passwordRef at the Secret holding the provisioner password";

/// Why no password source was taken.
enum PasswordError {
    NoPassword,
    Invalid(InvalidSpec),
}
use PasswordError::{Invalid, NoPassword};

impl From<InvalidSpec> for PasswordError {
    fn from(e: InvalidSpec) -> Self {
        Invalid(e)
    }
}

fn max_duration(value: Option<&str>) -> Result<Option<std::time::Duration>, InvalidSpec> {
    let Some(text) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match crate::duration::parse_go_duration(text) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        Ok(_) => Err(InvalidSpec(format!(
            "spec.maxDuration {text:?} is zero: set a positive Go duration such as 720h, or remove it"
        ))),
        Err(e) => Err(InvalidSpec(format!(
            "spec.maxDuration {text:?} is not a Go duration ({e}): write it like 720h or 90m"
        ))),
    }
}

/// `keyRef` is read where the password Secret is: a StepIssuer's own namespace, or a
/// StepClusterIssuer's `passwordRef.namespace` or `--cluster-resource-namespace`.
fn key_source(
    p: &crate::crd::Provisioner,
    issuer_namespace: Option<&str>,
    cluster_resource_namespace: &str,
) -> Result<Option<KeySource>, InvalidSpec> {
    let Some(r) = p.key_ref.as_ref() else {
        return Ok(None);
    };
    if r.name.trim().is_empty() || r.key.trim().is_empty() {
        return Err(InvalidSpec(
            "spec.provisioner.keyRef needs both name and key: the Secret and its key that hold the provisioner's private key".into(),
        ));
    }
    let namespace = match issuer_namespace {
        Some(own) => own.to_string(),
        None => p
            .password_ref
            .as_ref()
            .and_then(|r| r.namespace.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or(cluster_resource_namespace)
            .to_string(),
    };
    Ok(Some(KeySource {
        namespace,
        name: r.name.clone(),
        key: r.key.clone(),
    }))
}

fn valid_url(url: &str) -> Result<&str, InvalidSpec> {
    let url = url.trim();
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some() => Ok(url),
        Ok(u) => Err(InvalidSpec(format!(
            "spec.url {url:?} must be an https:// URL with a host (scheme is {:?})",
            u.scheme()
        ))),
        Err(e) => Err(InvalidSpec(format!(
            "spec.url {url:?} is not a URL ({e}): set it to step-ca's address, e.g. https://step-ca.step.svc"
        ))),
    }
}

/// Exactly one of passwordRef, passwordEnv and passwordFile; the last two only on a
/// StepClusterIssuer, since they expose the controller's own credentials.
fn password_source(
    p: &crate::crd::Provisioner,
    issuer_namespace: Option<&str>,
    cluster_resource_namespace: &str,
) -> Result<PasswordSource, PasswordError> {
    let invalid = |m: &str| Err(Invalid(InvalidSpec(m.to_string())));
    let by_ref = p.password_ref.as_ref().filter(|r| !r.name.is_empty());
    let env = p.password_env.as_deref().filter(|s| !s.is_empty());
    let file = p.password_file.as_deref().filter(|s| !s.is_empty());
    let set = [by_ref.is_some(), env.is_some(), file.is_some()]
        .iter()
        .filter(|s| **s)
        .count();
    if set == 0 {
        return Err(NoPassword);
    }
    if set > 1 {
        return invalid(
            "only one of spec.provisioner.passwordRef, passwordEnv or passwordFile may be set: remove the others",
        );
    }
    match (by_ref, env, file) {
        (Some(r), _, _) => Ok(secret_source(
            r,
            issuer_namespace,
            cluster_resource_namespace,
        )?),
        _ if issuer_namespace.is_some() => invalid(
            "spec.provisioner.passwordEnv and passwordFile are allowed only on a StepClusterIssuer, because they expose the controller's own credentials: use passwordRef with a Secret in this namespace",
        ),
        (None, Some(e), _) => Ok(PasswordSource::Env(e.to_string())),
        (None, None, Some(f)) => Ok(PasswordSource::File(PathBuf::from(f))),
        (None, None, None) => {
            invalid("one of spec.provisioner.passwordRef, passwordEnv or passwordFile must be set")
        }
    }
}

/// A StepIssuer reads only its own namespace; a StepClusterIssuer reads `passwordRef.namespace`,
/// or `--cluster-resource-namespace`.
fn secret_source(
    r: &crate::crd::PasswordRef,
    issuer_namespace: Option<&str>,
    cluster_resource_namespace: &str,
) -> Result<PasswordSource, InvalidSpec> {
    let Some(key) = r.key.as_deref().filter(|k| !k.is_empty()) else {
        return Err(InvalidSpec(format!(
            "spec.provisioner.passwordRef.key is empty: name the key of Secret {:?} that holds the password",
            r.name
        )));
    };
    let namespace = match (
        issuer_namespace,
        r.namespace.as_deref().filter(|n| !n.is_empty()),
    ) {
        (Some(own), Some(other)) if other != own => {
            return Err(InvalidSpec(format!(
                "spec.provisioner.passwordRef.namespace {other:?} differs from the StepIssuer's namespace {own:?}: a StepIssuer reads only Secrets in its own namespace; remove the field or use a StepClusterIssuer"
            )));
        }
        (Some(own), _) => own.to_string(),
        (None, Some(n)) => n.to_string(),
        (None, None) => cluster_resource_namespace.to_string(),
    };
    Ok(PasswordSource::Secret {
        namespace,
        name: r.name.clone(),
        key: key.to_string(),
    })
}

/// step-issuer accepts a PEM bundle or a single DER certificate; so do we.
pub fn ca_bundle_to_pem(bytes: &[u8]) -> Result<Vec<u8>, InvalidSpec> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("-----BEGIN") {
        let blocks = pem::parse_many(bytes).map_err(|e| {
            InvalidSpec(format!(
                "spec.caBundle is not valid PEM ({e}): set it to base64 of step-ca's root_ca.crt"
            ))
        })?;
        if blocks.is_empty() || blocks.iter().any(|b| b.tag() != "CERTIFICATE") {
            return Err(InvalidSpec(
                "spec.caBundle must hold only CERTIFICATE PEM blocks: set it to base64 of step-ca's root_ca.crt".into(),
            ));
        }
        for b in &blocks {
            x509_parser::parse_x509_certificate(b.contents()).map_err(|e| {
                InvalidSpec(format!("spec.caBundle holds a certificate that does not parse ({e}): set it to base64 of step-ca's root_ca.crt"))
            })?;
        }
        return Ok(bytes.to_vec());
    }
    match x509_parser::parse_x509_certificate(bytes) {
        Ok(([], _)) => {
            Ok(pem::encode(&pem::Pem::new("CERTIFICATE", bytes.to_vec())).into_bytes())
        }
        _ => Err(InvalidSpec(
            "spec.caBundle is neither PEM certificates nor a DER certificate: set it to base64 of step-ca's root_ca.crt (base64 -w0 root_ca.crt)".into(),
        )),
    }
}

/// `step` trims trailing whitespace from password files and variables; so do we. Secret values
/// are used verbatim, as step-issuer does.
pub fn trim_trailing_whitespace(raw: &[u8]) -> &[u8] {
    match std::str::from_utf8(raw) {
        Ok(s) => s.trim_end().as_bytes(),
        Err(_) => {
            let end = raw
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(0, |i| i + 1);
            &raw[..end]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PasswordRef, Provisioner};

    fn view<'a>(url: &'a str, bundle: Option<&'a [u8]>, p: &'a Provisioner) -> IssuerSpecView<'a> {
        IssuerSpecView {
            url,
            ca_bundle: bundle,
            provisioner: p,
            policy: None,
            max_duration: None,
            audience_host: None,
            revocation: None,
        }
    }

    fn prov(r: Option<PasswordRef>, env: Option<&str>, file: Option<&str>) -> Provisioner {
        Provisioner {
            name: "e2e".into(),
            kid: Some("kid1".into()),
            password_ref: r,
            password_env: env.map(Into::into),
            password_file: file.map(Into::into),
            key_ref: None,
        }
    }

    fn pref(name: &str, key: Option<&str>, ns: Option<&str>) -> Option<PasswordRef> {
        Some(PasswordRef {
            name: name.into(),
            key: key.map(Into::into),
            namespace: ns.map(Into::into),
        })
    }

    #[test]
    fn password_sources() {
        let secret = |ns: &str| PasswordSource::Secret {
            namespace: ns.into(),
            name: "pw".into(),
            key: "password".into(),
        };
        type Case = (
            Provisioner,
            Option<&'static str>,
            Result<PasswordSource, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                prov(pref("pw", Some("password"), None), None, None),
                Some("team"),
                Ok(secret("team")),
            ),
            (
                prov(pref("pw", Some("password"), Some("team")), None, None),
                Some("team"),
                Ok(secret("team")),
            ),
            (
                prov(pref("pw", Some("password"), Some("other")), None, None),
                Some("team"),
                Err("differs from the StepIssuer's namespace"),
            ),
            (
                prov(pref("pw", Some("password"), Some("other")), None, None),
                None,
                Ok(secret("other")),
            ),
            (
                prov(pref("pw", Some("password"), None), None, None),
                None,
                Ok(secret("step-operator")),
            ),
            (
                prov(pref("pw", None, None), None, None),
                None,
                Err("passwordRef.key is empty"),
            ),
            (
                prov(None, Some("PW"), None),
                None,
                Ok(PasswordSource::Env("PW".into())),
            ),
            (
                prov(None, None, Some("/pw")),
                None,
                Ok(PasswordSource::File("/pw".into())),
            ),
            (
                prov(None, Some("PW"), None),
                Some("team"),
                Err("only on a StepClusterIssuer"),
            ),
            (
                prov(None, None, Some("/pw")),
                Some("team"),
                Err("only on a StepClusterIssuer"),
            ),
            (prov(None, None, None), None, Err("must be set")),
            (
                prov(pref("", None, None), None, None),
                None,
                Err("must be set"),
            ),
            (
                prov(pref("pw", Some("k"), None), Some("PW"), Some("/f")),
                None,
                Err("only one of"),
            ),
        ];
        for (p, ns, want) in cases {
            let got = validate(&view("https://ca.example", None, &p), ns, "step-operator");
            match (got, want) {
                (Ok(v), Ok(w)) => assert_eq!(v.password, Some(w), "{p:?}"),
                (Err(e), Err(w)) => assert!(e.0.contains(w), "{p:?}: {e}"),
                (got, want) => panic!("{p:?} in {ns:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn urls_and_names() {
        let p = prov(pref("pw", Some("k"), None), None, None);
        let ok = validate(&view("https://ca.example:9000/", None, &p), None, "x").unwrap();
        assert_eq!(ok.url, "https://ca.example:9000");
        assert_eq!(ok.kid.as_deref(), Some("kid1"));
        for bad in ["", "ca.example", "http://ca.example", "https://", "::"] {
            let e = validate(&view(bad, None, &p), None, "x").unwrap_err();
            assert!(e.0.contains("spec.url"), "{bad}: {e}");
        }
        let mut unnamed = p.clone();
        unnamed.name = " ".into();
        let e = validate(&view("https://ca", None, &unnamed), None, "x").unwrap_err();
        assert!(e.0.contains("provisioner.name"), "{e}");
        let mut no_kid = p.clone();
        no_kid.kid = Some(String::new());
        let v = validate(&view("https://ca", None, &no_kid), None, "x").unwrap();
        assert_eq!(v.kid, None);
    }

    #[test]
    fn ca_bundles() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["root".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = cert.pem();
        assert_eq!(ca_bundle_to_pem(pem.as_bytes()).unwrap(), pem.as_bytes());
        let from_der = ca_bundle_to_pem(cert.der()).unwrap();
        assert!(
            String::from_utf8(from_der)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        for bad in [
            &b"garbage"[..],
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let e = ca_bundle_to_pem(bad).unwrap_err();
            assert!(e.0.contains("spec.caBundle"), "{e}");
        }
    }

    #[test]
    fn trims_like_step() {
        assert_eq!(trim_trailing_whitespace(b"pass\r\n"), b"pass");
        assert_eq!(trim_trailing_whitespace(b"pa ss \t"), b"pa ss");
        assert_eq!(trim_trailing_whitespace(b" pass"), b" pass");
        assert_eq!(trim_trailing_whitespace(b"\xffpw\n"), b"\xffpw");
    }
}
