//! The contract between the webhook and the agents it injects (the bootstrapper and the renewer):
//! where the files and the token are, the environment the webhook sets and the agents read, how
//! the files' owner and mode are written, and the `/bootstrap` protocol. Both sides import it
//! from here, so they cannot drift apart.
//!
//! `POST <webhook>/bootstrap` with `Authorization: Bearer <projected ServiceAccount token>` and
//! the JSON body [`BootstrapRequest`] (`{}`). The webhook answers 200 with a
//! [`BootstrapResponse`] (camelCase JSON), or any other status with an [`ErrorResponse`]
//! (`{"message": "..."}`).
//!
//! Client-side handling of statuses (see [`crate::agent::bootstrap`]):
//! - 4xx other than 408 and 429: refused; the message is logged and the request is retried
//!   slowly (at most [`crate::backoff::REFUSED_MAX`] apart), since the operator may fix
//!   the pod's policy or the issuer meanwhile;
//! - 5xx, 408, 429 and transport errors: retried with backoff from 1 s doubling to 30 s.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The path served by the webhook.
pub const BOOTSTRAP_PATH: &str = "/bootstrap";

/// Where the agents write `site.crt`, `site.key` and `root.crt` (autocert's path).
pub const CERTS_DIR: &str = "/var/run/autocert.step.sm";
/// Where the projected ServiceAccount token is mounted in the agents.
pub const TOKEN_DIR: &str = "/var/run/secrets/step-operator";
/// The token's file name in [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "token";
/// [`TOKEN_DIR`]/[`TOKEN_FILE`].
pub const TOKEN_PATH: &str = "/var/run/secrets/step-operator/token";

/// The environment the webhook sets in the injected containers, each read by an `AgentArgs`
/// field. `AUTOCERT_NAME`, `_SANS`, `_ISSUER` and `_DURATION` only label the agents' logs: what
/// is signed is what `/bootstrap` answers, decided by the webhook from the pod's annotations.
pub mod env {
    pub const BOOTSTRAP_URL: &str = "STEP_OPERATOR_BOOTSTRAP_URL";
    pub const BOOTSTRAP_CA: &str = "STEP_OPERATOR_BOOTSTRAP_CA";
    pub const TOKEN_PATH: &str = "STEP_OPERATOR_TOKEN_PATH";
    pub const CA_URL: &str = "STEP_CA_URL";
    pub const NAME: &str = "AUTOCERT_NAME";
    pub const SANS: &str = "AUTOCERT_SANS";
    pub const DURATION: &str = "AUTOCERT_DURATION";
    pub const OWNER: &str = "AUTOCERT_OWNER";
    pub const MODE: &str = "AUTOCERT_MODE";
    pub const ISSUER: &str = "AUTOCERT_ISSUER";
    pub const CERTS_DIR: &str = "AUTOCERT_CERTS_DIR";
    /// The reload hook (see `agent::reload`): a signal name of [`super::RELOAD_SIGNALS`] and a
    /// process name; both absent when the pod has none.
    pub const RELOAD_SIGNAL: &str = "AUTOCERT_RELOAD_SIGNAL";
    pub const RELOAD_PROCESS: &str = "AUTOCERT_RELOAD_PROCESS";
    /// The key algorithm, as `KeyAlgorithm` displays it (`ecdsa-p384`); absent: the default.
    pub const KEY_ALGORITHM: &str = "AUTOCERT_KEY_ALGORITHM";
    /// Downward API, always injected: the pod's name, namespace and UID.
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    pub const POD_UID: &str = "POD_UID";
    /// Downward API, injected when the names use variables ([`crate::pod_template`]).
    pub const POD_IP: &str = "POD_IP";
    pub const POD_SERVICE_ACCOUNT: &str = "POD_SERVICE_ACCOUNT";
}

/// The signals the renewer may send the app after a renewal.
pub const RELOAD_SIGNALS: [&str; 6] = [
    "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGQUIT",
];

/// One of [`RELOAD_SIGNALS`], in any case, with or without `SIG`.
pub fn parse_reload_signal(raw: &str) -> Option<&'static str> {
    let upper = raw.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    RELOAD_SIGNALS.iter().copied().find(|s| &s[3..] == name)
}

/// The numeric owner of the files: `uid:gid` in `autocert.step.sm/owner` and `AUTOCERT_OWNER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Who reads an owner or a mode. Both ends share one grammar (decimal IDs, octal modes up to
/// 0777 that let the owner read the key, which the renewer reads back) and differ on purpose in
/// what else they accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// A pod's annotations, read by the webhook. The injected containers run as the owner, so
    /// uid 0 is refused (they never run as root); modes are octal digits (`0640`, `640`), as
    /// autocert wrote them.
    Annotation,
    /// The agent's flags and environment. The webhook writes `uid:gid` and four octal digits
    /// there, but the agent may also be run by hand outside a pod, as root (`0:0`) and with a
    /// Rust- or Python-style mode (`0o640`).
    Agent,
}

/// Why an owner is refused; the text follows the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("is not \"uid:gid\": use numeric IDs, e.g. 1000:1000")]
    NotUidGid,
    #[error(
        "has uid 0: the injected containers never run as root, use the app's non-root uid, e.g. 1000:1000"
    )]
    Root,
}

/// Why a mode is refused; the text follows the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    #[error("is not an octal file mode: use e.g. 0600 or 0640 (at most 0777)")]
    NotOctal,
    #[error(
        "does not let the owner read the key (0400), which the renewer needs: use e.g. 0600 or 0640"
    )]
    Unreadable,
}

/// Parses `uid:gid` (decimal digits only: no sign, no names).
pub fn parse_owner(raw: &str, reader: Reader) -> Result<Owner, OwnerError> {
    let id = |s: &str| {
        Some(s)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or(OwnerError::NotUidGid)
    };
    let (uid, gid) = raw.trim().split_once(':').ok_or(OwnerError::NotUidGid)?;
    let owner = Owner {
        uid: id(uid)?,
        gid: id(gid)?,
    };
    if owner.uid == 0 && reader == Reader::Annotation {
        return Err(OwnerError::Root);
    }
    Ok(owner)
}

/// Parses an octal mode of one to four digits (`0600`, `640`; the agent also takes `0o640`).
pub fn parse_mode(raw: &str, reader: Reader) -> Result<u32, ModeError> {
    let value = raw.trim();
    let digits = match reader {
        Reader::Agent => value.strip_prefix("0o").unwrap_or(value),
        Reader::Annotation => value,
    };
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(ModeError::NotOctal);
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| ModeError::NotOctal)?;
    if mode > 0o777 {
        return Err(ModeError::NotOctal);
    }
    if mode & 0o400 == 0 {
        return Err(ModeError::Unreadable);
    }
    Ok(mode)
}

/// Body of `POST /bootstrap`: an empty object today. The pod is identified by its projected
/// ServiceAccount token alone; unknown fields are ignored, so fields can be added later.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapRequest {}

/// 200 answer of `POST /bootstrap`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapResponse {
    /// A one-time step-ca token (JWT) for exactly `common_name` and `sans`. Secret; single use.
    pub token: String,
    /// The step-ca URL, `https://host[:port]`.
    pub ca_url: String,
    /// The step-ca root certificate(s), PEM; trusted for the CA connection and written to
    /// `root.crt`.
    pub root_pem: String,
    /// Subject common name of the certificate.
    pub common_name: String,
    /// Subject alternative names; the bootstrapper puts exactly these in its CSR (or
    /// `[common_name]` when empty).
    #[serde(default)]
    pub sans: Vec<String>,
    /// Requested lifetime as a Go duration (`"24h"`), sent to step-ca as `notAfter`; absent or
    /// null lets the CA decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

impl fmt::Debug for BootstrapResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapResponse")
            .field("token", &"<redacted>")
            .field("ca_url", &self.ca_url)
            .field("root_pem", &format_args!("<{} bytes>", self.root_pem.len()))
            .field("common_name", &self.common_name)
            .field("sans", &self.sans)
            .field("duration", &self.duration)
            .finish()
    }
}

/// Body of every non-200 answer of `POST /bootstrap`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong and, where possible, how to fix it. Never contains a token.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_path_is_its_dir_and_file() {
        assert_eq!(TOKEN_PATH, format!("{TOKEN_DIR}/{TOKEN_FILE}"));
    }

    /// One grammar, two acceptance sets: the agent also takes root and `0o`.
    #[test]
    fn owners_for_each_reader() {
        use OwnerError::*;
        let owner = |uid, gid| Ok(Owner { uid, gid });
        type Parsed = Result<Owner, OwnerError>;
        let cases: &[(&str, Parsed, Parsed)] = &[
            // (value, annotation, agent)
            ("1000:2000", owner(1000, 2000), owner(1000, 2000)),
            (" 1:0 ", owner(1, 0), owner(1, 0)),
            ("0:0", Err(Root), owner(0, 0)),
            ("0:1000", Err(Root), owner(0, 1000)),
            ("", Err(NotUidGid), Err(NotUidGid)),
            ("1000", Err(NotUidGid), Err(NotUidGid)),
            ("a:b", Err(NotUidGid), Err(NotUidGid)),
            ("root:root", Err(NotUidGid), Err(NotUidGid)),
            ("1000:", Err(NotUidGid), Err(NotUidGid)),
            ("-1:0", Err(NotUidGid), Err(NotUidGid)),
            ("+1:2", Err(NotUidGid), Err(NotUidGid)),
            ("1:2:3", Err(NotUidGid), Err(NotUidGid)),
            ("99999999999:1", Err(NotUidGid), Err(NotUidGid)),
        ];
        for (value, annotation, agent) in cases {
            assert_eq!(
                parse_owner(value, Reader::Annotation),
                *annotation,
                "{value:?}"
            );
            assert_eq!(parse_owner(value, Reader::Agent), *agent, "{value:?}");
        }
    }

    #[test]
    fn modes_for_each_reader() {
        use ModeError::*;
        type Parsed = Result<u32, ModeError>;
        let cases: &[(&str, Parsed, Parsed)] = &[
            // (value, annotation, agent)
            ("0600", Ok(0o600), Ok(0o600)),
            ("600", Ok(0o600), Ok(0o600)),
            (" 0640 ", Ok(0o640), Ok(0o640)),
            ("0777", Ok(0o777), Ok(0o777)),
            ("0400", Ok(0o400), Ok(0o400)),
            ("0o640", Err(NotOctal), Ok(0o640)),
            ("0o", Err(NotOctal), Err(NotOctal)),
            ("1777", Err(NotOctal), Err(NotOctal)),
            ("00600", Err(NotOctal), Err(NotOctal)),
            ("0800", Err(NotOctal), Err(NotOctal)),
            ("0999", Err(NotOctal), Err(NotOctal)),
            ("+600", Err(NotOctal), Err(NotOctal)),
            ("", Err(NotOctal), Err(NotOctal)),
            ("rw", Err(NotOctal), Err(NotOctal)),
            ("0044", Err(Unreadable), Err(Unreadable)),
            ("0200", Err(Unreadable), Err(Unreadable)),
            ("0o200", Err(NotOctal), Err(Unreadable)),
        ];
        for (value, annotation, agent) in cases {
            assert_eq!(
                parse_mode(value, Reader::Annotation),
                *annotation,
                "{value:?}"
            );
            assert_eq!(parse_mode(value, Reader::Agent), *agent, "{value:?}");
        }
    }
    use serde_json::json;

    fn sample() -> BootstrapResponse {
        BootstrapResponse {
            token: "eyJhbGciOiJFUzI1NiJ9.secret.sig".into(),
            ca_url: "https://step-ca.step:9000".into(),
            root_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
            common_name: "app.default.svc".into(),
            sans: vec!["app.default.svc".into(), "app".into()],
            duration: Some("24h".into()),
        }
    }

    #[test]
    fn wire_format_is_camel_case() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v,
            json!({
                "token": "eyJhbGciOiJFUzI1NiJ9.secret.sig",
                "caUrl": "https://step-ca.step:9000",
                "rootPem": "-----BEGIN CERTIFICATE-----\n...",
                "commonName": "app.default.svc",
                "sans": ["app.default.svc", "app"],
                "duration": "24h",
            })
        );
        let back: BootstrapResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
        assert_eq!(serde_json::to_string(&BootstrapRequest {}).unwrap(), "{}");
    }

    #[test]
    fn duration_and_sans_are_optional() {
        for extra in [json!({}), json!({"duration": null})] {
            let mut v =
                json!({"token": "t", "caUrl": "https://ca", "rootPem": "r", "commonName": "cn"});
            if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            let r: BootstrapResponse = serde_json::from_value(v).unwrap();
            assert_eq!(r.duration, None);
            assert!(r.sans.is_empty());
        }
        let mut none = sample();
        none.duration = None;
        assert!(
            serde_json::to_value(none)
                .unwrap()
                .get("duration")
                .is_none()
        );
    }

    #[test]
    fn debug_redacts_the_token() {
        let dbg = format!("{:?}", sample());
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        let e: ErrorResponse = serde_json::from_str(r#"{"message":"no"}"#).unwrap();
        assert_eq!(e.message, "no");
    }
}
