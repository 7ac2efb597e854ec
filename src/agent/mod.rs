//! The in-pod agents injected by the webhook: `step-operator bootstrap` (the init container
//! `autocert-bootstrapper`) and `step-operator renew` (the native sidecar `autocert-renewer`).
//!
//! The bootstrapper asks the webhook for a one-time token (`POST /bootstrap`, [`crate::pod_protocol`]),
//! generates the key in the pod, has step-ca sign a CSR and writes `site.crt`, `site.key` and
//! `root.crt` into the shared emptyDir ([`files`]). The renewer renews the certificate over mTLS
//! before it expires and bootstraps again (new key) when renewal is impossible.
//!
//! Configuration comes from flags, each also an environment variable set by the webhook
//! (`src/webhook/mutate.rs`, `injected_env`); see [`AgentArgs`].

pub mod bootstrap;
#[cfg(test)]
mod fake;
pub mod files;
pub mod reload;
pub mod renew;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::backoff::RetryPolicy;
use crate::pki::keys::KeyAlgorithm;
use crate::pod_protocol::env as ENV;
use crate::pod_protocol::{Reader, parse_owner};
use files::Owner;

/// Default directory of the certificate files (the autocert path).
pub const DEFAULT_CERTS_DIR: &str = crate::pod_protocol::CERTS_DIR;
/// Default path of the projected ServiceAccount token.
pub const DEFAULT_TOKEN_PATH: &str = crate::pod_protocol::TOKEN_PATH;

/// Flags of `bootstrap` and `renew`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Directory the certificate files are written to.
    #[arg(long, env = ENV::CERTS_DIR, default_value = DEFAULT_CERTS_DIR)]
    pub certs_dir: PathBuf,

    /// The webhook's bootstrap endpoint: `https://<webhook>/bootstrap` (a URL without a path gets
    /// `/bootstrap` appended).
    #[arg(long, env = ENV::BOOTSTRAP_URL)]
    pub bootstrap_url: Option<String>,

    /// File holding the projected ServiceAccount token sent to the webhook (re-read at every
    /// attempt: the kubelet refreshes it).
    #[arg(long, env = ENV::TOKEN_PATH, default_value = DEFAULT_TOKEN_PATH)]
    pub token_path: PathBuf,

    /// PEM root(s) trusted for the webhook's serving certificate (normally the step-ca root),
    /// or the path of a file holding them. Without it, the system roots are used.
    #[arg(long, env = ENV::BOOTSTRAP_CA)]
    pub bootstrap_ca: Option<String>,

    /// step-ca URL for renewals (trusting `root.crt`); without it the renewer asks the webhook.
    #[arg(long, env = ENV::CA_URL)]
    pub ca_url: Option<String>,

    /// Key algorithm of the generated private key: ecdsa-p256, ecdsa-p384, ed25519, rsa2048,
    /// rsa3072 or rsa4096.
    #[arg(long, env = ENV::KEY_ALGORITHM, default_value = "ecdsa-p256", value_parser = parse_key_algorithm)]
    pub key_algorithm: KeyAlgorithm,

    /// Numeric `uid:gid` owning the written files (empty: unchanged).
    #[arg(long, env = ENV::OWNER)]
    pub owner: Option<String>,

    /// Octal mode of `site.key`, at most 0777 and readable by the owner (certificates are always
    /// 0644).
    #[arg(long, env = ENV::MODE, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,

    /// The certificate's name, for log lines only (the webhook decides the names).
    #[arg(long, env = ENV::NAME)]
    pub name: Option<String>,

    /// The certificate's SANs, comma-separated, for log lines only.
    #[arg(long, env = ENV::SANS)]
    pub sans: Option<String>,

    /// The StepClusterIssuer that signs, for log lines only (the webhook decides it).
    #[arg(long, env = ENV::ISSUER)]
    pub issuer: Option<String>,

    /// The requested lifetime (a Go duration), for log lines only: step-ca is sent the one in
    /// the webhook's `/bootstrap` answer.
    #[arg(long, env = ENV::DURATION)]
    pub duration: Option<String>,

    /// Signal sent to the app after the renewer replaced the files (`SIGHUP`, ...; see
    /// [`reload`]); needs `--reload-process`.
    #[arg(long, env = ENV::RELOAD_SIGNAL, requires = "reload_process")]
    pub reload_signal: Option<String>,

    /// Name of the app's process that gets `--reload-signal`.
    #[arg(long, env = ENV::RELOAD_PROCESS, requires = "reload_signal")]
    pub reload_process: Option<String>,

    /// The pod's name, namespace, ServiceAccount, UID and IP (downward API), to expand the variables
    /// of `AUTOCERT_NAME` and `AUTOCERT_SANS` in log lines.
    #[arg(long, env = ENV::POD_NAME, hide = true)]
    pub pod_name: Option<String>,
    #[arg(long, env = ENV::POD_NAMESPACE, hide = true)]
    pub pod_namespace: Option<String>,
    #[arg(long, env = ENV::POD_SERVICE_ACCOUNT, hide = true)]
    pub pod_service_account: Option<String>,
    #[arg(long, env = ENV::POD_UID, hide = true)]
    pub pod_uid: Option<String>,
    #[arg(long, env = ENV::POD_IP, hide = true)]
    pub pod_ip: Option<String>,

    /// Timeout of each request to the webhook and to step-ca.
    #[arg(long, env = "STEP_OPERATOR_AGENT_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse_flag)]
    pub timeout: Duration,
}

/// Validated configuration of the agents.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub certs_dir: PathBuf,
    /// The full bootstrap endpoint URL (`.../bootstrap`).
    pub bootstrap_url: Option<String>,
    pub token_path: PathBuf,
    /// PEM roots for the webhook connection; `None`: system roots.
    pub bootstrap_ca_pem: Option<String>,
    pub ca_url: Option<String>,
    pub key_algorithm: KeyAlgorithm,
    pub owner: Option<Owner>,
    /// Mode of `site.key`.
    pub key_mode: u32,
    /// For log lines.
    pub name: Option<String>,
    /// For log lines.
    pub sans: Vec<String>,
    /// For log lines.
    pub issuer: Option<String>,
    /// For log lines.
    pub duration: Option<String>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// `(signal, process)` of the reload hook.
    pub reload: Option<(String, String)>,
}

impl AgentConfig {
    /// Checks the flags and loads `STEP_OPERATOR_BOOTSTRAP_CA` when it names a file.
    pub fn from_args(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
        let bootstrap_ca_pem = match args.bootstrap_ca.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(pem) if pem.starts_with("-----BEGIN") => Some(pem.to_owned()),
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("cannot read STEP_OPERATOR_BOOTSTRAP_CA file {path:?} (the value is neither PEM nor a readable file)")
            })?),
        };
        Ok(AgentConfig {
            certs_dir: args.certs_dir.clone(),
            bootstrap_url: args
                .bootstrap_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(bootstrap::endpoint),
            token_path: args.token_path.clone(),
            bootstrap_ca_pem,
            ca_url: args
                .ca_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            key_algorithm: args.key_algorithm,
            owner: match args.owner.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(o) => Some(
                    parse_owner(o, Reader::Agent)
                        .map_err(|e| anyhow::anyhow!("AUTOCERT_OWNER {o:?} {e}"))?,
                ),
            },
            key_mode: args.mode,
            name: non_empty(&args.name).map(|n| args.expand(&n)),
            sans: args
                .sans
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| args.expand(s))
                .collect(),
            issuer: non_empty(&args.issuer),
            duration: non_empty(&args.duration),
            timeout: args.timeout,
            retry: RetryPolicy::default(),
            reload: match (
                non_empty(&args.reload_signal),
                non_empty(&args.reload_process),
            ) {
                (Some(signal), Some(process)) => {
                    if reload::signal_of(&signal).is_none() {
                        anyhow::bail!(
                            "AUTOCERT_RELOAD_SIGNAL {signal:?} is not one of {}",
                            crate::pod_protocol::RELOAD_SIGNALS.join(", ")
                        );
                    }
                    Some((signal, process))
                }
                _ => None,
            },
        })
    }
}

impl AgentArgs {
    /// A name of the annotations with its variables expanded from the downward API, or as it is
    /// when one is missing: it only labels log lines.
    fn expand(&self, template: &str) -> String {
        let identity = crate::pod_template::Identity {
            pod_name: self.pod_name.as_deref(),
            namespace: self.pod_namespace.as_deref(),
            service_account: self.pod_service_account.as_deref(),
            pod_uid: self.pod_uid.as_deref(),
            pod_ip: self.pod_ip.as_deref(),
        };
        crate::pod_template::expand(template, &identity).unwrap_or_else(|_| template.to_owned())
    }
}

impl AgentConfig {
    /// The certificate's name for the agents' spans (empty when the webhook gave none).
    pub fn log_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The issuer for the agents' spans (empty when the webhook gave none).
    pub fn log_issuer(&self) -> &str {
        self.issuer.as_deref().unwrap_or("")
    }
}

fn parse_key_algorithm(s: &str) -> Result<KeyAlgorithm, String> {
    s.parse().map_err(|e: crate::pki::Error| e.to_string())
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `--mode`, read as the agent reads modes (see [`Reader::Agent`]).
fn parse_mode(s: &str) -> Result<u32, String> {
    crate::pod_protocol::parse_mode(s, Reader::Agent).map_err(|e| format!("{:?} {e}", s.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: AgentArgs,
    }

    /// The parsers are table-tested in `pod_protocol`; here, that the flags use the agent's.
    #[test]
    fn owner_and_mode_are_read_as_the_agent_reads_them() {
        let t = T::try_parse_from(["x", "--owner", "0:0", "--mode", "0o640"]).unwrap();
        let cfg = AgentConfig::from_args(&t.a).unwrap();
        assert_eq!(cfg.owner, Some(Owner { uid: 0, gid: 0 }));
        assert_eq!(cfg.key_mode, 0o640);
        for bad in ["1777", "0800", "", "rw"] {
            assert!(T::try_parse_from(["x", "--mode", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_and_config() {
        let t = T::try_parse_from(["x"]).unwrap();
        let cfg = AgentConfig::from_args(&t.a).unwrap();
        assert_eq!(cfg.certs_dir, PathBuf::from(DEFAULT_CERTS_DIR));
        assert_eq!(cfg.key_mode, 0o600);
        assert_eq!(cfg.key_algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(cfg.timeout, Duration::from_secs(10));
        assert!(cfg.bootstrap_url.is_none() && cfg.owner.is_none());

        let t = T::try_parse_from([
            "x",
            "--bootstrap-url",
            "https://webhook.step-operator.svc",
            "--sans",
            "a, b,,c",
            "--owner",
            "1000:1000",
            "--key-algorithm",
            "ed25519",
            "--mode",
            "0640",
        ])
        .unwrap();
        let cfg = AgentConfig::from_args(&t.a).unwrap();
        assert_eq!(
            cfg.bootstrap_url.as_deref(),
            Some("https://webhook.step-operator.svc/bootstrap")
        );
        assert_eq!(cfg.sans, ["a", "b", "c"]);
        assert_eq!(
            cfg.owner,
            Some(Owner {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(cfg.key_algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(cfg.key_mode, 0o640);

        let e = T::try_parse_from(["x", "--mode", "0200"]).err().unwrap();
        assert!(e.to_string().contains("owner read the key"), "{e}");
        let t = T::try_parse_from(["x", "--owner", ""]).unwrap();
        assert_eq!(AgentConfig::from_args(&t.a).unwrap().owner, None);
        let t = T::try_parse_from(["x", "--owner", "root"]).unwrap();
        let e = AgentConfig::from_args(&t.a).unwrap_err().to_string();
        assert!(e.contains("AUTOCERT_OWNER"), "{e}");
        assert!(T::try_parse_from(["x", "--key-algorithm", "dsa"]).is_err());
    }

    #[test]
    fn log_names_expand_the_downward_api() {
        let t = T::try_parse_from([
            "x",
            "--name",
            "${POD_NAME}.web.${POD_NAMESPACE}.svc",
            "--sans",
            "${POD_NAME}.web.team.svc,${POD_IP}",
            "--pod-name",
            "web-abcde",
            "--pod-namespace",
            "team",
        ])
        .unwrap();
        let cfg = AgentConfig::from_args(&t.a).unwrap();
        assert_eq!(cfg.log_name(), "web-abcde.web.team.svc");
        // No POD_IP: the template stays as it is.
        assert_eq!(cfg.sans, ["web-abcde.web.team.svc", "${POD_IP}"]);
    }

    #[test]
    fn bootstrap_ca_is_pem_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nX\n").unwrap();
        let mut t = T::try_parse_from(["x"]).unwrap();
        t.a.bootstrap_ca = Some(path.display().to_string());
        let cfg = AgentConfig::from_args(&t.a).unwrap();
        assert!(cfg.bootstrap_ca_pem.unwrap().starts_with("-----BEGIN"));
        t.a.bootstrap_ca = Some("  -----BEGIN CERTIFICATE-----\nY\n".into());
        let cfg = AgentConfig::from_args(&t.a).unwrap();
        assert!(cfg.bootstrap_ca_pem.unwrap().ends_with("Y"));
        t.a.bootstrap_ca = Some(dir.path().join("missing").display().to_string());
        assert!(AgentConfig::from_args(&t.a).is_err());
    }
}
