//! The autocert pod annotations, parsed and checked.
//!
//! A pod asks for a certificate with `autocert.step.sm/name`; the other annotations tune it. Every
//! key smallstep/autocert understood is accepted with the same meaning, with these differences:
//!
//! - `sans` entries are trimmed and empty entries dropped (autocert did neither); an annotation that
//!   is empty after trimming is treated as absent. Exact duplicates are removed (first one kept).
//! - `init-first` and `bootstrapper-only` must be `true` or `false` (any case); autocert silently
//!   treated anything other than `true` as false.
//! - `owner` must be numeric `uid:gid`, and the uid must not be 0: the injected containers run as
//!   that user and never as root.
//! - `mode` defaults to `0600` (autocert used 0644, a world-readable key) and must keep the owner's
//!   read bit, because the renewer reads the key back.
//! - `issuer` is new: the name of the `StepClusterIssuer` that signs (the webhook has a default).
//! - `name` and `sans` may use `${POD_NAME}`, `${POD_NAMESPACE}`, `${SERVICE_ACCOUNT}` and
//!   `${POD_IP}` ([`crate::pod_template`]); they are kept unexpanded here.
//!
//! Parsing is pure. Error messages name the annotation and say what to write instead.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::{GoDurationError, parse_positive};
use crate::pki::keys::KeyAlgorithm;
use crate::pod_protocol::{self, ModeError, Owner, OwnerError, Reader};

/// Required trigger: the certificate's common name (and its only SAN when `sans` is absent).
pub const NAME: &str = "autocert.step.sm/name";
/// Comma-separated SANs; replaces the SAN list (the name stays the common name).
pub const SANS: &str = "autocert.step.sm/sans";
/// Certificate lifetime as a Go duration (`24h`, `90m`, `1h30m`).
pub const DURATION: &str = "autocert.step.sm/duration";
/// `true`: the bootstrapper runs before the pod's own init containers.
pub const INIT_FIRST: &str = "autocert.step.sm/init-first";
/// `true`: no renewer sidecar (for Jobs and other short-lived pods).
pub const BOOTSTRAPPER_ONLY: &str = "autocert.step.sm/bootstrapper-only";
/// Numeric `uid:gid` owning the files; the injected containers run as this user.
pub const OWNER: &str = "autocert.step.sm/owner";
/// Octal mode of the private key (default `0600`); certificates are always `0644`.
pub const MODE: &str = "autocert.step.sm/mode";
/// Which `StepClusterIssuer` signs (new in step-operator).
pub const ISSUER: &str = "autocert.step.sm/issuer";
/// Algorithm of the key the agent generates in the pod: `EC-P256` (default), `EC-P384`,
/// `Ed25519`, `RSA-2048`, `RSA-3072` or `RSA-4096` (new in step-operator).
pub const KEY_TYPE: &str = "autocert.step.sm/key-type";
/// Signal the renewer sends the app after each renewal (`SIGHUP`, ...); needs
/// [`RELOAD_PROCESS`] and `shareProcessNamespace: true` (new in step-operator).
pub const RELOAD_SIGNAL: &str = "autocert.step.sm/reload-signal";
/// Name of the app's process that gets [`RELOAD_SIGNAL`].
pub const RELOAD_PROCESS: &str = "autocert.step.sm/reload-process";
/// Set by the webhook once it has injected; a pod carrying it is left alone.
pub const STATUS: &str = "autocert.step.sm/status";
/// Every annotation step-operator reads; `/mutate` skips all others unread.
pub const KEYS: [&str; 12] = [
    NAME,
    SANS,
    DURATION,
    INIT_FIRST,
    BOOTSTRAPPER_ONLY,
    OWNER,
    MODE,
    ISSUER,
    KEY_TYPE,
    RELOAD_SIGNAL,
    RELOAD_PROCESS,
    STATUS,
];
/// The values of [`KEY_TYPE`] and the algorithms they mean.
pub const KEY_TYPES: [(&str, KeyAlgorithm); 6] = [
    ("EC-P256", KeyAlgorithm::EcdsaP256),
    ("EC-P384", KeyAlgorithm::EcdsaP384),
    ("Ed25519", KeyAlgorithm::Ed25519),
    ("RSA-2048", KeyAlgorithm::Rsa2048),
    ("RSA-3072", KeyAlgorithm::Rsa3072),
    ("RSA-4096", KeyAlgorithm::Rsa4096),
];
/// The prefix of every autocert annotation; a key under it that is not in [`KEYS`] is a typo or
/// a feature step-operator lacks, and `/mutate` warns about it.
pub const PREFIX: &str = "autocert.step.sm/";
/// At most this many unknown keys under [`PREFIX`] are kept (without their values) to be warned
/// about: the pod comes from anyone who can reach the webhook.
pub const MAX_UNKNOWN_KEYS: usize = 8;
/// The value of [`STATUS`] after injection.
pub const STATUS_INJECTED: &str = "injected";

/// At most this many SANs per pod.
pub const MAX_SANS: usize = 100;
/// At most this many bytes per name (the DNS limit).
pub const MAX_NAME_LEN: usize = 253;
/// The default mode of the private key.
pub const DEFAULT_KEY_MODE: u32 = 0o600;

/// What a pod asks for, from its annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRequest {
    /// Common name (`autocert.step.sm/name`).
    pub name: String,
    /// Subject alternative names; `[name]` when `autocert.step.sm/sans` is absent.
    pub sans: Vec<String>,
    /// Requested lifetime; `None` lets the issuer (or the webhook default) decide.
    pub duration: Option<Duration>,
    /// Place the bootstrapper before the pod's own init containers.
    pub init_first: bool,
    /// Do not add the renewer sidecar.
    pub bootstrapper_only: bool,
    /// `(uid, gid)` owning the files.
    pub owner: Option<(u32, u32)>,
    /// Mode of the private key (`None`: [`DEFAULT_KEY_MODE`]).
    pub mode: Option<u32>,
    /// `StepClusterIssuer` name (`None`: the webhook default).
    pub issuer: Option<String>,
    /// Key algorithm (`None`: the agent's default, EC P-256).
    pub key_type: Option<KeyAlgorithm>,
    /// `(signal, process)` of the reload hook: the signal's canonical name (`SIGHUP`).
    pub reload: Option<(String, String)>,
}

/// An annotation that cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("{NAME} is empty: set it to the certificate's name, e.g. api.default.svc")]
    EmptyName,
    #[error(
        "{key} entry {value} {problem}: use DNS names, IP addresses, URIs or emails without {problem_fix}"
    )]
    InvalidName {
        key: &'static str,
        value: String,
        problem: &'static str,
        problem_fix: &'static str,
    },
    #[error("{key} entry {value} {problem}")]
    Template {
        key: &'static str,
        value: String,
        problem: String,
    },
    #[error("{key} entry {value} is {len} bytes long: names are at most {MAX_NAME_LEN} bytes")]
    NameTooLong {
        key: &'static str,
        value: String,
        len: usize,
    },
    #[error(
        "{SANS} lists {count} names: at most {MAX_SANS} are allowed, split the pod's identities"
    )]
    TooManySans { count: usize },
    #[error("{DURATION} {value} is not a Go duration: use e.g. 24h or 90m")]
    InvalidDuration { value: String },
    #[error("{DURATION} {value} must be positive: use e.g. 24h or 90m")]
    NonPositiveDuration { value: String },
    #[error("{DURATION} {value} is longer than 100 years: use e.g. 24h or 2160h")]
    DurationTooLong { value: String },
    #[error("{key} {value} is not a boolean: use \"true\" or \"false\"")]
    InvalidBool { key: &'static str, value: String },
    #[error("{OWNER} {value} is not \"uid:gid\": use numeric IDs, e.g. 1000:1000")]
    InvalidOwner { value: String },
    #[error(
        "{OWNER} {value} has uid 0: the injected containers never run as root, use the app's non-root uid, e.g. 1000:1000"
    )]
    RootOwner { value: String },
    #[error("{MODE} {value} is not an octal file mode: use e.g. 0600 or 0640 (at most 0777)")]
    InvalidMode { value: String },
    #[error(
        "{MODE} {value} does not let the owner read the key (0400), which the renewer needs: use e.g. 0600 or 0640"
    )]
    UnreadableMode { value: String },
    #[error(
        "{ISSUER} {value} is not a valid StepClusterIssuer name: use a lowercase DNS-1123 subdomain, e.g. step-ca"
    )]
    InvalidIssuer { value: String },
    #[error(
        "{KEY_TYPE} {value} is not a key type: use EC-P256 (the default), EC-P384, Ed25519, RSA-2048, RSA-3072 or RSA-4096"
    )]
    UnknownKeyType { value: String },
    #[error(
        "{RELOAD_SIGNAL} {value} is not a reload signal: use one of SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGQUIT"
    )]
    InvalidSignal { value: String },
    #[error(
        "{RELOAD_PROCESS} {value} is not a process name: use the app's executable name, e.g. nginx (no slashes or spaces, at most 64 characters)"
    )]
    InvalidProcess { value: String },
    #[error(
        "{present} is set without {missing}: set both (e.g. {RELOAD_SIGNAL}: SIGHUP and {RELOAD_PROCESS}: nginx) or neither"
    )]
    HalfReload {
        present: &'static str,
        missing: &'static str,
    },
    #[error(
        "{RELOAD_SIGNAL} needs the renewer, which {BOOTSTRAPPER_ONLY}: \"true\" removes: remove one of them"
    )]
    ReloadWithoutRenewer,
}

/// `Result` with [`AnnotationError`].
pub type Result<T, E = AnnotationError> = std::result::Result<T, E>;

pub(crate) use crate::policy::names::quote;

/// What `/mutate` keeps of one annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    /// A key step-operator reads: key and value.
    Value,
    /// An unknown key under [`PREFIX`], to warn about: the key only.
    KeyOnly,
    /// Anything else: nothing.
    Nothing,
}

/// What to keep of the annotation `key` when `unknown_kept` unknown keys are kept already.
pub fn retain(key: &str, unknown_kept: usize) -> Retain {
    if KEYS.contains(&key) {
        Retain::Value
    } else if key.starts_with(PREFIX) && unknown_kept < MAX_UNKNOWN_KEYS {
        Retain::KeyOnly
    } else {
        Retain::Nothing
    }
}

/// Problems that do not stop the pod from working but are likely mistakes, as admission
/// warnings (`kubectl apply` prints them): unknown keys under [`PREFIX`] (with the closest known
/// key), and settings on a pod that has no [`NAME`] and so gets no certificate.
pub fn warnings(annotations: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for key in annotations.keys().filter(|k| !KEYS.contains(&k.as_str())) {
        let Some(suffix) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let hint = match closest_key(suffix) {
            Some(known) => format!("did you mean {known}?"),
            None => format!("see the annotation table in step-operator's README (e.g. {NAME})"),
        };
        out.push(format!(
            "{PREFIX}: annotation {} is not one step-operator reads and is ignored: {hint}",
            quote(key)
        ));
    }
    if !annotations.contains_key(NAME) {
        let set: Vec<&str> = KEYS
            .iter()
            .copied()
            .filter(|k| *k != STATUS && annotations.contains_key(*k))
            .collect();
        if !set.is_empty() {
            out.push(format!(
                "{PREFIX}: {} set but {NAME} is not, so no certificate is injected: add {NAME}, e.g. api.<namespace>.svc",
                set.join(", ")
            ));
        }
    }
    out
}

/// The known key whose suffix is at most two edits from `suffix`, if any.
fn closest_key(suffix: &str) -> Option<&'static str> {
    KEYS.iter()
        .copied()
        .filter(|k| *k != STATUS)
        .map(|k| (edit_distance(suffix, &k[PREFIX.len()..]), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes, for the few short keys above (long inputs bail out early).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 2 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses a pod's annotations. `Ok(None)` when the pod does not ask for a certificate (no
/// `autocert.step.sm/name`).
pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Option<PodRequest>> {
    let Some(raw_name) = annotations.get(NAME) else {
        return Ok(None);
    };
    let name = raw_name.trim();
    if name.is_empty() {
        return Err(AnnotationError::EmptyName);
    }
    check_name(NAME, name)?;
    if name.contains(',') {
        return Err(AnnotationError::InvalidName {
            key: NAME,
            value: quote(name),
            problem: "contains a comma",
            problem_fix: "commas (list several names in autocert.step.sm/sans)",
        });
    }
    let name = name.to_owned();

    let sans = match annotations.get(SANS) {
        Some(raw) if !raw.trim().is_empty() => parse_sans(raw)?,
        _ => vec![name.clone()],
    };

    let duration = annotations
        .get(DURATION)
        .map(|raw| parse_duration_annotation(raw))
        .transpose()?;
    let init_first = parse_bool(annotations, INIT_FIRST)?;
    let bootstrapper_only = parse_bool(annotations, BOOTSTRAPPER_ONLY)?;
    let owner = annotations
        .get(OWNER)
        .map(|raw| parse_owner(raw))
        .transpose()?;
    let mode = annotations
        .get(MODE)
        .map(|raw| parse_mode(raw))
        .transpose()?;
    let issuer = annotations
        .get(ISSUER)
        .map(|raw| parse_issuer(raw))
        .transpose()?;
    let key_type = annotations
        .get(KEY_TYPE)
        .map(|raw| parse_key_type(raw))
        .transpose()?;
    let reload = parse_reload(annotations)?;
    if reload.is_some() && bootstrapper_only {
        return Err(AnnotationError::ReloadWithoutRenewer);
    }

    Ok(Some(PodRequest {
        name,
        sans,
        duration,
        init_first,
        bootstrapper_only,
        owner,
        mode,
        issuer,
        key_type,
        reload,
    }))
}

/// [`RELOAD_SIGNAL`] and [`RELOAD_PROCESS`], both or neither.
fn parse_reload(annotations: &BTreeMap<String, String>) -> Result<Option<(String, String)>> {
    let signal = annotations.get(RELOAD_SIGNAL).map(|s| s.trim());
    let process = annotations.get(RELOAD_PROCESS).map(|s| s.trim());
    let (signal, process) = match (signal, process) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(AnnotationError::HalfReload {
                present: RELOAD_SIGNAL,
                missing: RELOAD_PROCESS,
            });
        }
        (None, Some(_)) => {
            return Err(AnnotationError::HalfReload {
                present: RELOAD_PROCESS,
                missing: RELOAD_SIGNAL,
            });
        }
        (Some(s), Some(p)) => (s, p),
    };
    let signal = crate::pod_protocol::parse_reload_signal(signal).ok_or_else(|| {
        AnnotationError::InvalidSignal {
            value: quote(signal),
        }
    })?;
    let valid_process = !process.is_empty()
        && process.chars().count() <= 64
        && !process
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if !valid_process {
        return Err(AnnotationError::InvalidProcess {
            value: quote(process),
        });
    }
    Ok(Some((signal.to_owned(), process.to_owned())))
}

/// One of [`KEY_TYPES`], in any case. An RSA key's size is always named: there is no default
/// size to guess wrong.
fn parse_key_type(raw: &str) -> Result<KeyAlgorithm> {
    let value = raw.trim();
    KEY_TYPES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|(_, algorithm)| *algorithm)
        .ok_or_else(|| AnnotationError::UnknownKeyType {
            value: quote(value),
        })
}

fn check_name(key: &'static str, value: &str) -> Result<()> {
    if value.len() > MAX_NAME_LEN {
        return Err(AnnotationError::NameTooLong {
            key,
            value: quote(value),
            len: value.len(),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(AnnotationError::InvalidName {
            key,
            value: quote(value),
            problem: "contains a control character",
            problem_fix: "control characters",
        });
    }
    if value.chars().any(char::is_whitespace) {
        return Err(AnnotationError::InvalidName {
            key,
            value: quote(value),
            problem: "contains whitespace",
            problem_fix: "spaces",
        });
    }
    crate::pod_template::variables(value).map_err(|e| AnnotationError::Template {
        key,
        value: quote(value),
        problem: e.to_string(),
    })?;
    Ok(())
}

fn parse_sans(raw: &str) -> Result<Vec<String>> {
    // Count before checking each entry so a huge list fails fast with the right message.
    let count = raw.split(',').filter(|s| !s.trim().is_empty()).count();
    if count > MAX_SANS {
        return Err(AnnotationError::TooManySans { count });
    }
    let mut sans: Vec<String> = Vec::with_capacity(count);
    for entry in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        check_name(SANS, entry)?;
        if !sans.iter().any(|s| s == entry) {
            sans.push(entry.to_owned());
        }
    }
    Ok(sans)
}

fn parse_duration_annotation(raw: &str) -> Result<Duration> {
    let value = raw.trim();
    parse_positive(value).map_err(|e| match e {
        GoDurationError::Invalid => AnnotationError::InvalidDuration {
            value: quote(value),
        },
        GoDurationError::NotPositive => AnnotationError::NonPositiveDuration {
            value: quote(value),
        },
        GoDurationError::TooLong => AnnotationError::DurationTooLong {
            value: quote(value),
        },
    })
}

fn parse_bool(annotations: &BTreeMap<String, String>, key: &'static str) -> Result<bool> {
    match annotations.get(key) {
        None => Ok(false),
        Some(raw) => {
            let v = raw.trim();
            if v.eq_ignore_ascii_case("true") {
                Ok(true)
            } else if v.eq_ignore_ascii_case("false") {
                Ok(false)
            } else {
                Err(AnnotationError::InvalidBool {
                    key,
                    value: quote(raw),
                })
            }
        }
    }
}

fn parse_owner(raw: &str) -> Result<(u32, u32)> {
    let value = quote(raw.trim());
    match pod_protocol::parse_owner(raw, Reader::Annotation) {
        Ok(Owner { uid, gid }) => Ok((uid, gid)),
        Err(OwnerError::NotUidGid) => Err(AnnotationError::InvalidOwner { value }),
        Err(OwnerError::Root) => Err(AnnotationError::RootOwner { value }),
    }
}

fn parse_mode(raw: &str) -> Result<u32> {
    let value = quote(raw.trim());
    pod_protocol::parse_mode(raw, Reader::Annotation).map_err(|e| match e {
        ModeError::NotOctal => AnnotationError::InvalidMode { value },
        ModeError::Unreadable => AnnotationError::UnreadableMode { value },
    })
}

/// Whether `s` is a Kubernetes DNS-1123 subdomain (the rule for most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(first), Some(last)) => {
                    (first.is_ascii_lowercase() || first.is_ascii_digit())
                        && (last.is_ascii_lowercase() || last.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

fn parse_issuer(raw: &str) -> Result<String> {
    let value = raw.trim();
    if is_dns1123_subdomain(value) {
        Ok(value.to_owned())
    } else {
        Err(AnnotationError::InvalidIssuer {
            value: quote(value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn req(name: &str) -> PodRequest {
        PodRequest {
            name: name.to_owned(),
            sans: vec![name.to_owned()],
            duration: None,
            init_first: false,
            bootstrapper_only: false,
            owner: None,
            mode: None,
            issuer: None,
            key_type: None,
            reload: None,
        }
    }

    #[test]
    fn no_name_is_none() {
        assert_eq!(parse(&BTreeMap::new()), Ok(None));
        assert_eq!(parse(&ann(&[(SANS, "a,b"), ("other", "x")])), Ok(None));
    }

    #[test]
    fn valid_annotations() {
        let cases: Vec<(Vec<(&str, &str)>, PodRequest)> = vec![
            (vec![(NAME, "api")], req("api")),
            (vec![(NAME, " api.default.svc ")], req("api.default.svc")),
            (
                vec![(NAME, "api"), (SANS, " a , b,,a, c ,")],
                PodRequest {
                    sans: vec!["a".into(), "b".into(), "c".into()],
                    ..req("api")
                },
            ),
            (vec![(NAME, "api"), (SANS, "  ")], req("api")),
            (
                vec![(NAME, "api"), (DURATION, "1h30m")],
                PodRequest {
                    duration: Some(Duration::from_secs(5400)),
                    ..req("api")
                },
            ),
            (
                vec![
                    (NAME, "api"),
                    (INIT_FIRST, "TRUE"),
                    (BOOTSTRAPPER_ONLY, "False"),
                ],
                PodRequest {
                    init_first: true,
                    ..req("api")
                },
            ),
            (
                vec![(NAME, "api"), (BOOTSTRAPPER_ONLY, "true")],
                PodRequest {
                    bootstrapper_only: true,
                    ..req("api")
                },
            ),
            (
                vec![(NAME, "api"), (OWNER, "1000:2000"), (MODE, "0640")],
                PodRequest {
                    owner: Some((1000, 2000)),
                    mode: Some(0o640),
                    ..req("api")
                },
            ),
            (
                vec![(NAME, "api"), (MODE, "600")],
                PodRequest {
                    mode: Some(0o600),
                    ..req("api")
                },
            ),
            (
                vec![(NAME, "${POD_NAME}.web.team.svc"), (SANS, "${POD_IP}")],
                PodRequest {
                    sans: vec!["${POD_IP}".into()],
                    ..req("${POD_NAME}.web.team.svc")
                },
            ),
            (
                vec![(NAME, "api"), (KEY_TYPE, " ed25519 ")],
                PodRequest {
                    key_type: Some(KeyAlgorithm::Ed25519),
                    ..req("api")
                },
            ),
            (
                vec![
                    (NAME, "api"),
                    (RELOAD_SIGNAL, "hup"),
                    (RELOAD_PROCESS, "nginx"),
                ],
                PodRequest {
                    reload: Some(("SIGHUP".into(), "nginx".into())),
                    ..req("api")
                },
            ),
            (
                vec![(NAME, "api"), (KEY_TYPE, "EC-P384")],
                PodRequest {
                    key_type: Some(KeyAlgorithm::EcdsaP384),
                    ..req("api")
                },
            ),
            (
                vec![(NAME, "api"), (KEY_TYPE, "rsa-3072")],
                PodRequest {
                    key_type: Some(KeyAlgorithm::Rsa3072),
                    ..req("api")
                },
            ),
            (
                vec![(NAME, "api"), (ISSUER, "step-ca.internal")],
                PodRequest {
                    issuer: Some("step-ca.internal".into()),
                    ..req("api")
                },
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(parse(&ann(&pairs)), Ok(Some(want)), "{pairs:?}");
        }
    }

    #[test]
    fn invalid_annotations() {
        let many = vec!["a"; 10_000].join(",");
        let long = "a".repeat(254);
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![(NAME, "")], "autocert.step.sm/name is empty"),
            (vec![(NAME, "a b")], "contains whitespace"),
            (vec![(NAME, "a,b")], "contains a comma"),
            (vec![(NAME, &long)], "254 bytes long"),
            (
                vec![(NAME, "api"), (SANS, "ok,bad\u{7}")],
                "control character",
            ),
            (vec![(NAME, "api"), (SANS, "ok,a\tb")], "control character"),
            (
                vec![(NAME, "api"), (SANS, &many)],
                "lists 10000 names: at most 100",
            ),
            (
                vec![(NAME, "api"), (DURATION, "1d")],
                "autocert.step.sm/duration \"1d\" is not a Go duration: use e.g. 24h or 90m",
            ),
            (vec![(NAME, "api"), (DURATION, "-1h")], "must be positive"),
            (vec![(NAME, "api"), (DURATION, "0")], "must be positive"),
            (vec![(NAME, "api"), (DURATION, "876001h")], "100 years"),
            (
                vec![(NAME, "api"), (BOOTSTRAPPER_ONLY, "maybe")],
                "autocert.step.sm/bootstrapper-only \"maybe\" is not a boolean",
            ),
            (vec![(NAME, "api"), (INIT_FIRST, "1")], "is not a boolean"),
            (
                vec![(NAME, "api"), (OWNER, "garbage")],
                "is not \"uid:gid\"",
            ),
            (vec![(NAME, "api"), (OWNER, "root:root")], "numeric IDs"),
            (vec![(NAME, "api"), (OWNER, "+1:2")], "numeric IDs"),
            (vec![(NAME, "api"), (OWNER, "1:2:3")], "numeric IDs"),
            (vec![(NAME, "api"), (OWNER, "99999999999:1")], "numeric IDs"),
            (vec![(NAME, "api"), (OWNER, "0:0")], "has uid 0"),
            (
                vec![(NAME, "api"), (MODE, "0999")],
                "is not an octal file mode",
            ),
            (vec![(NAME, "api"), (MODE, "1777")], "at most 0777"),
            (
                vec![(NAME, "api"), (MODE, "rw")],
                "is not an octal file mode",
            ),
            (vec![(NAME, "api"), (MODE, "0044")], "owner read the key"),
            (
                vec![(NAME, "${POD_ID}.web.default.svc")],
                "autocert.step.sm/name entry \"${POD_ID}.web.default.svc\" uses the unknown variable ${POD_ID}: use ${POD_NAME}, ${POD_NAMESPACE}, ${SERVICE_ACCOUNT}, ${POD_UID} or ${POD_IP}",
            ),
            (
                vec![(NAME, "api"), (SANS, "a,${POD_NAME.web")],
                "has a ${ without its closing }",
            ),
            (
                vec![(NAME, "api"), (ISSUER, "Step_CA")],
                "DNS-1123 subdomain",
            ),
            (vec![(NAME, "api"), (ISSUER, "")], "DNS-1123 subdomain"),
            (
                vec![(NAME, "api"), (RELOAD_SIGNAL, "SIGHUP")],
                "autocert.step.sm/reload-signal is set without autocert.step.sm/reload-process: set both",
            ),
            (
                vec![(NAME, "api"), (RELOAD_PROCESS, "nginx")],
                "autocert.step.sm/reload-process is set without autocert.step.sm/reload-signal",
            ),
            (
                vec![
                    (NAME, "api"),
                    (RELOAD_SIGNAL, "SIGKILL"),
                    (RELOAD_PROCESS, "nginx"),
                ],
                "is not a reload signal: use one of SIGHUP",
            ),
            (
                vec![
                    (NAME, "api"),
                    (RELOAD_SIGNAL, "HUP"),
                    (RELOAD_PROCESS, "/usr/sbin/nginx"),
                ],
                "is not a process name: use the app's executable name",
            ),
            (
                vec![
                    (NAME, "api"),
                    (RELOAD_SIGNAL, "HUP"),
                    (RELOAD_PROCESS, "nginx"),
                    (BOOTSTRAPPER_ONLY, "true"),
                ],
                "needs the renewer, which autocert.step.sm/bootstrapper-only: \"true\" removes",
            ),
            (
                vec![(NAME, "api"), (KEY_TYPE, "RSA")],
                "autocert.step.sm/key-type \"RSA\" is not a key type: use EC-P256 (the default), EC-P384, Ed25519, RSA-2048, RSA-3072 or RSA-4096",
            ),
            (
                vec![(NAME, "api"), (KEY_TYPE, "RSA-1024")],
                "is not a key type",
            ),
            (
                vec![(NAME, "api"), (KEY_TYPE, "P-521")],
                "autocert.step.sm/key-type \"P-521\" is not a key type: use EC-P256 (the default), EC-P384, Ed25519, RSA-2048, RSA-3072 or RSA-4096",
            ),
        ];
        for (pairs, want) in cases {
            let err = match parse(&ann(&pairs)) {
                Err(e) => e.to_string(),
                Ok(ok) => panic!("{pairs:?} parsed as {ok:?}"),
            };
            assert!(err.contains(want), "{err:?} does not contain {want:?}");
            assert!(err.len() < 300, "message too long: {err}");
        }
    }

    #[test]
    fn warnings_name_the_cause_and_the_fix() {
        type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (vec![(NAME, "api")], vec![]),
            (vec![(NAME, "api"), ("other.io/x", "1")], vec![]),
            (vec![(STATUS, "injected")], vec![]),
            (
                vec![(NAME, "api"), ("autocert.step.sm/durations", "1h")],
                vec![
                    "annotation \"autocert.step.sm/durations\" is not one step-operator reads and is ignored: did you mean autocert.step.sm/duration?",
                ],
            ),
            (
                vec![(NAME, "api"), ("autocert.step.sm/san", "a")],
                vec!["did you mean autocert.step.sm/sans?"],
            ),
            (
                vec![(NAME, "api"), ("autocert.step.sm/secret", "x")],
                vec!["see the annotation table"],
            ),
            (
                vec![(SANS, "a"), (DURATION, "1h")],
                vec![
                    "autocert.step.sm/sans, autocert.step.sm/duration set but autocert.step.sm/name is not, so no certificate is injected: add autocert.step.sm/name",
                ],
            ),
            (
                vec![("autocert.step.sm/nmae", "api")],
                vec!["did you mean autocert.step.sm/name?"],
            ),
        ];
        for (pairs, want) in cases {
            let got = warnings(&ann(&pairs));
            assert_eq!(got.len(), want.len(), "{pairs:?}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.contains(w), "{g:?} lacks {w:?}");
                assert!(g.starts_with(PREFIX), "{g}");
                assert!(g.len() < 256, "too long: {g}");
            }
        }
    }

    #[test]
    fn what_is_retained() {
        assert_eq!(retain(NAME, MAX_UNKNOWN_KEYS), Retain::Value);
        assert_eq!(retain("autocert.step.sm/x", 0), Retain::KeyOnly);
        assert_eq!(
            retain("autocert.step.sm/x", MAX_UNKNOWN_KEYS),
            Retain::Nothing
        );
        assert_eq!(retain("other/x", 0), Retain::Nothing);
        assert_eq!(edit_distance("sans", "san"), 1);
        assert_eq!(edit_distance("abc", "abcdefgh"), usize::MAX);
    }

    #[test]
    fn dns1123() {
        for ok in ["a", "step-ca", "a.b-c.d", "0a"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a.", "a_b", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(
            pairs in proptest::collection::btree_map(
                prop_oneof![
                    Just(NAME.to_owned()), Just(SANS.to_owned()), Just(DURATION.to_owned()),
                    Just(INIT_FIRST.to_owned()), Just(BOOTSTRAPPER_ONLY.to_owned()),
                    Just(OWNER.to_owned()), Just(MODE.to_owned()), Just(ISSUER.to_owned()),
                    Just(KEY_TYPE.to_owned()),
                    ".*",
                ],
                ".*",
                0..10,
            )
        ) {
            let _ = parse(&pairs);
        }

    }
}
