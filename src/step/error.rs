//! Errors of the step-ca client.
//!
//! Every variant is named after the action that failed and its message names the cause and,
//! where one exists, the fix, because these messages end up verbatim in `Ready` conditions and
//! Events that cluster operators read. No variant ever carries a password, a decrypted key or a
//! token.

use std::time::Duration;

/// Everything that can go wrong while talking to step-ca or handling provisioner keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured CA URL cannot be used.
    #[error(
        "invalid step-ca URL {url:?}: {detail}; use the CA's https URL without a path, e.g. https://step-ca.step.svc:9000"
    )]
    InvalidUrl { url: String, detail: String },

    /// The configured caBundle is not a PEM certificate bundle.
    #[error(
        "invalid caBundle: {detail}; caBundle must be PEM certificates (-----BEGIN CERTIFICATE-----), e.g. the output of `step ca root`"
    )]
    InvalidCaBundle { detail: String },

    /// The HTTP client could not be built (TLS setup).
    #[error("failed to build the HTTP client for step-ca: {source}")]
    BuildClient {
        #[source]
        source: reqwest::Error,
    },

    /// A transport failure: DNS, TCP, TLS handshake, connection reset. Retryable.
    #[error(
        "failed to {action} at {url}: cannot reach step-ca ({}); check the URL, DNS, network policies and that caBundle holds the CA's root",
        root_causes(source)
    )]
    Connect {
        action: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The CA did not answer within the per-request timeout. Retryable.
    #[error("failed to {action} at {url}: step-ca did not answer within {}", humantime::format_duration(*timeout))]
    Timeout {
        action: &'static str,
        url: String,
        timeout: Duration,
    },

    /// The CA answered with a non-success HTTP status; `message` is step-ca's own message.
    #[error("failed to {action}: step-ca answered HTTP {status}: {message}{}", status_hint(*status))]
    Status {
        status: u16,
        message: String,
        action: &'static str,
    },

    /// The CA answered 2xx but the body was not what the protocol says.
    #[error("failed to {action}: unexpected response from step-ca: {detail}")]
    Decode {
        action: &'static str,
        detail: String,
    },

    /// The CA answered 2xx, but with something else than step-ca sends. `detail` quotes the
    /// answer, so it is shown only to [`Audience::Admin`].
    #[error("failed to {action}: unexpected response from step-ca: {detail}")]
    UnexpectedAnswer {
        action: &'static str,
        status: u16,
        detail: String,
    },

    /// The answer was larger than any step-ca answer to this call can be. Not retried: a server
    /// that does this is not step-ca, or not working.
    #[error(
        "failed to {action}: the answer from {url} is larger than {} KiB, which no step-ca answer to this call is; check that spec.url points at step-ca",
        limit / 1024
    )]
    ResponseTooLarge {
        action: &'static str,
        url: String,
        limit: usize,
    },

    /// The server answered with a redirect. step-ca never redirects, and following one would
    /// let whoever controls the URL send this controller's requests anywhere.
    #[error(
        "failed to {action}: {url} answered with a redirect (HTTP {status}), which step-ca never sends and step-operator does not follow; set spec.url to step-ca itself"
    )]
    Redirected {
        action: &'static str,
        url: String,
        status: u16,
    },

    /// The provisioner list is longer than anything step-operator reads.
    #[error(
        "failed to list the step-ca provisioners: too many pages/provisioners ({pages} pages, {listed} provisioners read; at most {} pages and {} provisioners are read); set spec.provisioner.kid so that the list is not needed",
        super::client::MAX_PROVISIONER_PAGES,
        super::client::MAX_LISTED_PROVISIONERS
    )]
    TooManyProvisioners { pages: usize, listed: usize },

    /// More JWK provisioners share the name than are tried, and no kid says which one to use.
    #[error(
        "provisioner name {name:?} is ambiguous: step-ca lists more than {limit} provisioners with that name and step-operator tries at most {limit}; set spec.provisioner.kid to the kid of the one to use (see `step ca provisioner list`)"
    )]
    AmbiguousProvisioner { name: String, limit: usize },

    /// Connecting (health, provisioner lookup, key decryption, roots) took longer than its
    /// overall deadline, although each request kept within the per-request timeout.
    #[error(
        "failed to connect to step-ca at {url}: the health check, provisioner lookup, key decryption and roots fetch took longer than {} in all (twice the per-request timeout, plus {} for key decryption); check that spec.url points at step-ca and that it answers promptly",
        humantime::format_duration(*deadline),
        humantime::format_duration(*decrypt_budget)
    )]
    ConnectDeadline {
        url: String,
        deadline: Duration,
        decrypt_budget: Duration,
    },

    /// The CA URL leads to an address that `--forbidden-ca-cidrs` rules out.
    #[error(
        "refusing to connect to {url}: it leads to {address}, which is in the range {range} that the controller's --forbidden-ca-cidrs forbids for StepIssuers; point spec.url at step-ca, or ask the cluster admin for a StepClusterIssuer"
    )]
    ForbiddenAddress {
        url: String,
        address: std::net::IpAddr,
        range: String,
    },

    /// No provisioner with that name (and kid) exists on the CA.
    #[error(
        "failed to find provisioner {name:?}{} on step-ca; check spec.provisioner.name and kid against `step ca provisioner list`",
        kid.as_deref().map(|k| format!(" with kid {k:?}")).unwrap_or_default()
    )]
    ProvisionerNotFound { name: String, kid: Option<String> },

    /// The named provisioner exists but is not of type JWK.
    #[error(
        "failed to use provisioner {name:?}: it is of type {actual_type:?}, but only JWK provisioners are supported; create one with `step ca provisioner add <name> --type JWK --create`"
    )]
    NotJwkProvisioner { name: String, actual_type: String },

    /// The JWK provisioner has no encryptedKey, so its private key cannot be obtained from the CA.
    #[error(
        "failed to fetch the encrypted key of provisioner {name:?}: the CA holds no encryptedKey for it; re-create the provisioner with `--create` so step-ca stores the encrypted private key"
    )]
    NoEncryptedKey { name: String },

    /// AES key unwrap integrity failure: the password is wrong.
    #[error(
        "failed to decrypt the key of provisioner {}: wrong password; check the provisioner password Secret (it is used verbatim, a trailing newline counts)",
        display_provisioner(provisioner)
    )]
    WrongPassword { provisioner: String },

    /// The decrypted JWK is of a type or algorithm this client cannot sign with.
    #[error(
        "failed to load the provisioner key: unsupported key ({detail}); use an EC P-256/P-384/P-521, Ed25519 or RSA (2048 to 4096 bit) JWK provisioner"
    )]
    UnsupportedKey { detail: String },

    /// The encryptedKey is not a JWE this client accepts.
    #[error("failed to decrypt the provisioner key: invalid encryptedKey: {detail}")]
    InvalidEncryptedKey { detail: String },

    /// The decrypted key's RFC 7638 thumbprint differs from the expected kid.
    #[error(
        "failed to load the provisioner key: key id mismatch, expected kid {expected:?} but the decrypted key has thumbprint {actual:?}; check spec.provisioner.kid"
    )]
    KidMismatch { expected: String, actual: String },

    /// A one-time token could not be built or signed.
    #[error("failed to create a one-time token: {detail}")]
    Token { detail: String },

    /// The client certificate/key given for mTLS renewal is unusable.
    #[error(
        "failed to load the client identity for renewal: {detail}; the identity must be a PEM private key plus its PEM certificate chain"
    )]
    InvalidIdentity { detail: String },

    /// The provisioner key given in a Secret is in no form this client reads. `detail` names
    /// the form seen and the fix, never the material.
    #[error("the provisioner key Secret cannot be used: {detail}")]
    InvalidKeyMaterial { detail: String },

    /// The key given in a Secret is not a key step-ca lists for the provisioner: tokens signed
    /// with it would be refused (401) at every sign.
    #[error(
        "the provisioner key from the Secret (kid {kid:?}) is not the key of provisioner {name:?} on step-ca, which lists {}; store the private key of that provisioner, or name the provisioner this key belongs to",
        listed_kids(listed)
    )]
    ProvisionerKeyMismatch {
        name: String,
        kid: String,
        listed: Vec<String>,
    },

    /// A certificate serial number that is not one.
    #[error("invalid certificate serial number: {detail}")]
    InvalidSerial { detail: String },

    /// The token audience override is not a host or host:port.
    #[error(
        "invalid token audience {value:?}: {detail}; give a host[:port] that is one of step-ca's dnsNames, e.g. step-ca.step.svc:9000, or https://step-ca.example.com"
    )]
    InvalidAudience { value: String, detail: String },
}

fn listed_kids(kids: &[String]) -> String {
    match kids {
        [] => "no key id".to_owned(),
        [one] => format!("kid {one:?}"),
        many => format!("kids {many:?}"),
    }
}

/// Adds a hint for the statuses where the generic step-ca message hides the real reason.
fn status_hint(status: u16) -> &'static str {
    match status {
        401 => {
            " (token rejected: check the provisioner name and kid, the CA URL host against the CA's dnsNames, and clock skew; the reason is in the step-ca log)"
        }
        404 => " (not found: check the CA URL and the provisioner kid)",
        429 | 500..=599 => " (CA-side failure; will retry)",
        _ => "",
    }
}

/// The causes below a transport error, e.g. "client error (Connect): invalid peer certificate:
/// UnknownIssuer". reqwest's own top-level message ("error sending request for url") says
/// nothing an operator can act on, so the condition message shows what lies beneath.
fn root_causes(err: &(dyn std::error::Error + 'static)) -> String {
    crate::error_chain::below(err)
}

fn display_provisioner(name: &str) -> String {
    if name.is_empty() {
        "(unnamed)".to_owned()
    } else {
        format!("{name:?}")
    }
}

impl Error {
    /// Stable PascalCase identifier, used as condition reason, Event reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidUrl { .. } => "InvalidURL",
            Error::InvalidCaBundle { .. } => "InvalidCABundle",
            Error::BuildClient { .. } => "ClientSetupFailed",
            Error::Connect { .. } => "CAUnreachable",
            Error::Timeout { .. } => "CATimeout",
            Error::Status { status, .. } => match status {
                401 => "CAUnauthorized",
                429 | 500..=599 => "CAUnavailable",
                _ => "CARejected",
            },
            Error::Decode { .. } | Error::UnexpectedAnswer { .. } => "CAInvalidResponse",
            Error::ResponseTooLarge { .. } => "CAResponseTooLarge",
            Error::Redirected { .. } => "CARedirected",
            Error::TooManyProvisioners { .. } => "TooManyProvisioners",
            Error::AmbiguousProvisioner { .. } => "AmbiguousProvisioner",
            Error::ConnectDeadline { .. } => "CAConnectTooSlow",
            Error::ForbiddenAddress { .. } => "CAAddressForbidden",
            Error::ProvisionerNotFound { .. } => "ProvisionerNotFound",
            Error::NotJwkProvisioner { .. } => "NotJWKProvisioner",
            Error::NoEncryptedKey { .. } => "NoEncryptedKey",
            Error::WrongPassword { .. } => "WrongPassword",
            Error::UnsupportedKey { .. } => "UnsupportedKey",
            Error::InvalidEncryptedKey { .. } => "InvalidEncryptedKey",
            Error::KidMismatch { .. } => "KidMismatch",
            Error::Token { .. } => "TokenFailed",
            Error::InvalidIdentity { .. } => "InvalidClientIdentity",
            Error::InvalidKeyMaterial { .. } => "InvalidProvisionerKey",
            Error::ProvisionerKeyMismatch { .. } => "ProvisionerKeyMismatch",
            Error::InvalidAudience { .. } => "InvalidAudience",
            Error::InvalidSerial { .. } => "InvalidSerial",
        }
    }

    /// Whether retrying the same operation later (with a fresh token) may succeed: transport
    /// failures, timeouts, 5xx, 408 and 429. Configuration and 4xx errors need a human.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } => true,
            Error::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    /// Whether step-ca rejected the token (HTTP 401), which usually means a wrong provisioner
    /// name/kid, an audience not matching the CA's dnsNames, or clock skew.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Error::Status { status: 401, .. })
    }

    /// The HTTP status step-ca answered with, if this is a status error.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether step-ca answered 501: the CA has no database, so it cannot revoke (or store)
    /// certificates. Not retryable: the CA's configuration must change.
    pub fn is_not_implemented(&self) -> bool {
        matches!(self, Error::Status { status: 501, .. })
    }

    /// Whether step-ca refused a revocation because the certificate is already revoked (400
    /// "certificate with serial number '…' is already revoked"): the goal is reached.
    pub fn is_already_revoked(&self) -> bool {
        matches!(self, Error::Status { status: 400, message, .. } if message.contains("is already revoked"))
    }

    /// Fills in the provisioner name on errors produced where it was not known.
    pub(crate) fn for_provisioner(self, name: &str) -> Self {
        match self {
            Error::WrongPassword { provisioner } if provisioner.is_empty() => {
                Error::WrongPassword {
                    provisioner: name.to_owned(),
                }
            }
            other => other,
        }
    }
}

/// Who reads an error's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The cluster's admin, who set the URL (StepClusterIssuer): the full message, with
    /// step-ca's own words.
    Admin,
    /// A tenant, who may point the URL at any service in the cluster (StepIssuer): the HTTP
    /// status and a generic reason, never text from the answer, which may come from a service
    /// that is not step-ca and that the tenant could not reach itself.
    Tenant,
}

impl Error {
    /// The message for `audience`: for a tenant, without anything quoted from the answer.
    pub fn message_for(&self, audience: Audience) -> String {
        if audience == Audience::Admin {
            return self.to_string();
        }
        match self {
            Error::Status { status, action, .. } => format!(
                "failed to {action}: the server answered HTTP {status}{}{}; what it said is not shown on a StepIssuer, the step-ca log has the reason",
                reason_phrase(*status),
                status_hint(*status)
            ),
            Error::UnexpectedAnswer { action, status, .. } => format!(
                "failed to {action}: the HTTP {status}{} answer is not what step-ca sends (it is not shown on a StepIssuer); check that spec.url points at step-ca",
                reason_phrase(*status)
            ),
            Error::NotJwkProvisioner { name, .. } => format!(
                "failed to use provisioner {name:?}: it is not of type JWK, and only JWK provisioners are supported; create one with `step ca provisioner add <name> --type JWK --create`"
            ),
            Error::InvalidEncryptedKey { .. } => "failed to decrypt the provisioner key: the encryptedKey from step-ca is not a JWE step-operator accepts (PBES2-HS256+A128KW, A128GCM or A256GCM, at most 1,000,000 iterations)".to_owned(),
            Error::UnsupportedKey { .. } => "failed to load the provisioner key: unsupported key; use an EC P-256/P-384/P-521, Ed25519 or RSA (2048 to 4096 bit) JWK provisioner".to_owned(),
            Error::ProvisionerKeyMismatch { name, kid, .. } => format!(
                "the provisioner key from the Secret (kid {kid:?}) is not the key step-ca lists for provisioner {name:?}; store the private key of that provisioner, or name the provisioner this key belongs to"
            ),
            other => other.to_string(),
        }
    }
}

/// Maximum length of a CA-supplied message we keep; longer messages are cut.
const MAX_MESSAGE_CHARS: usize = 512;
/// Maximum length of an excerpt of a non-JSON body.
const MAX_EXCERPT_CHARS: usize = 160;

/// Extracts a human-readable message from a step-ca error body.
///
/// step-ca always answers errors with `{"status":..,"message":".."}`, but proxies and load
/// balancers in front of it answer with HTML or plain text; for those the message says so and
/// carries a short excerpt with markup and control characters removed, so that a condition
/// message never contains a whole HTML page.
pub(crate) fn decode_error_body(status: u16, body: &[u8]) -> String {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return format!(
            "empty response body (HTTP {status}{})",
            reason_phrase(status)
        );
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(serde_json::Value::String(message)) = map.get("message") {
            let message = sanitise(message, MAX_MESSAGE_CHARS);
            if !message.is_empty() {
                return message;
            }
        }
        let excerpt = sanitise(&String::from_utf8_lossy(body), MAX_EXCERPT_CHARS);
        return format!("JSON error without a message: {excerpt}");
    }
    let text = String::from_utf8_lossy(body);
    let looks_html = text.trim_start().starts_with('<');
    let stripped = if looks_html {
        strip_tags(&text)
    } else {
        text.into_owned()
    };
    let excerpt = sanitise(&stripped, MAX_EXCERPT_CHARS);
    let kind = if looks_html { "HTML" } else { "non-JSON" };
    if excerpt.is_empty() {
        format!(
            "{kind} response (HTTP {status}{}); is a proxy in front of step-ca?",
            reason_phrase(status)
        )
    } else {
        format!(
            "{kind} response (HTTP {status}{}): {excerpt:?}; is a proxy in front of step-ca?",
            reason_phrase(status)
        )
    }
}

fn reason_phrase(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

/// Drops everything between `<` and `>`; crude, but enough to turn an error page into words.
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Collapses whitespace, replaces control characters and cuts to `max` characters.
fn sanitise(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_whitespace() || c.is_control() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        if count == max {
            out.push('…');
            return out.trim_end().to_owned();
        }
        out.push(c);
        count += 1;
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_body_keeps_step_ca_message() {
        let body = br#"{"status":403,"message":"The request was forbidden by the certificate authority: certificate request does not contain the valid DNS names - got [a], want [b]."}"#;
        let msg = decode_error_body(403, body);
        assert_eq!(
            msg,
            "The request was forbidden by the certificate authority: certificate request does not contain the valid DNS names - got [a], want [b]."
        );
        let err = Error::Status {
            status: 403,
            message: msg,
            action: "sign the certificate request",
        };
        assert_eq!(err.reason(), "CARejected");
        assert!(!err.is_retryable());
        assert!(!err.is_auth_failure());
        assert!(err.to_string().contains("HTTP 403"));
    }

    #[test]
    fn html_body_gives_status_and_short_excerpt() {
        let mut body = String::from(
            "<html><head><title>502 Bad Gateway</title></head><body>\n<h1>502 Bad Gateway</h1>\n<hr><center>nginx</center>",
        );
        body.push_str(&"x".repeat(5000));
        body.push_str("</body></html>");
        let msg = decode_error_body(502, body.as_bytes());
        assert!(
            msg.starts_with("HTML response (HTTP 502 Bad Gateway)"),
            "{msg}"
        );
        assert!(
            msg.contains("502 Bad Gateway 502 Bad Gateway nginx"),
            "{msg}"
        );
        assert!(!msg.contains('<'), "{msg}");
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn plain_text_body() {
        let msg = decode_error_body(404, b"404 page not found\n");
        assert_eq!(
            msg,
            "non-JSON response (HTTP 404 Not Found): \"404 page not found\"; is a proxy in front of step-ca?"
        );
    }

    #[test]
    fn empty_body() {
        assert_eq!(
            decode_error_body(500, b""),
            "empty response body (HTTP 500 Internal Server Error)"
        );
        assert_eq!(
            decode_error_body(599, b"  \n"),
            "empty response body (HTTP 599)"
        );
    }

    #[test]
    fn json_without_message() {
        let msg = decode_error_body(400, br#"{"error":"nope"}"#);
        assert!(msg.starts_with("JSON error without a message"), "{msg}");
    }

    #[test]
    fn control_characters_are_removed() {
        let msg = decode_error_body(400, b"{\"message\":\"a\\u001b[31mb\\n\\nc\"}");
        assert_eq!(msg, "a [31mb c");
    }

    #[test]
    fn classification() {
        let status = |s| Error::Status {
            status: s,
            message: String::new(),
            action: "sign the certificate request",
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(status(401).is_auth_failure());
        assert_eq!(status(401).reason(), "CAUnauthorized");
        assert_eq!(status(500).reason(), "CAUnavailable");
        assert_eq!(status(400).reason(), "CARejected");
        let t = Error::Timeout {
            action: "check health",
            url: "https://ca".into(),
            timeout: Duration::from_secs(10),
        };
        assert!(t.is_retryable());
        assert!(t.to_string().contains("10s"));
        let wp = Error::WrongPassword {
            provisioner: String::new(),
        }
        .for_provisioner("admin");
        assert_eq!(wp.reason(), "WrongPassword");
        assert!(wp.to_string().contains("wrong password"));
        assert!(wp.to_string().contains("\"admin\""));
        let bundle = Error::InvalidCaBundle {
            detail: "no PEM".into(),
        };
        assert!(
            bundle
                .to_string()
                .contains("caBundle must be PEM certificates")
        );
    }

    #[test]
    fn a_tenant_never_sees_text_taken_from_the_answer() {
        let marker = "SECRET-MARKER";
        let errors = [
            Error::Status {
                status: 403,
                message: marker.into(),
                action: "sign the certificate request",
            },
            Error::UnexpectedAnswer {
                action: "check step-ca health",
                status: 200,
                detail: marker.into(),
            },
            Error::NotJwkProvisioner {
                name: "admin".into(),
                actual_type: marker.into(),
            },
            Error::InvalidEncryptedKey {
                detail: marker.into(),
            },
            Error::UnsupportedKey {
                detail: marker.into(),
            },
        ];
        for e in errors {
            let tenant = e.message_for(Audience::Tenant);
            assert!(!tenant.contains(marker), "{tenant}");
            assert!(tenant.starts_with("failed to"), "{tenant}");
            assert!(e.message_for(Audience::Admin).contains(marker), "{e}");
        }
        // Our own words are kept for both.
        let e = Error::WrongPassword {
            provisioner: "admin".into(),
        };
        assert_eq!(e.message_for(Audience::Tenant), e.to_string());
    }

    proptest! {
        #[test]
        fn error_body_decoder_never_panics(status in 0u16..1000, body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let msg = decode_error_body(status, &body);
            prop_assert!(msg.chars().count() < MAX_MESSAGE_CHARS + 200);
        }

        #[test]
        fn error_body_decoder_never_panics_on_text(status in 0u16..1000, body in ".{0,600}") {
            let _ = decode_error_body(status, body.as_bytes());
        }
    }
}
