//! Command line. Every flag is also an environment variable (`STEP_OPERATOR_*` or the name given).
//!
//! Flags that more than one role takes are defined once, as groups flattened into each role's
//! arguments ([`AdminArgs`], [`PodArgs`], [`ClusterArgs`], [`IssuerAccessArgs`]), so that a flag
//! means the same in every role. The roles read their configuration from these structs only,
//! never from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::controller::initial_list::InitialList;
use crate::crd::cmd::CrdArgs;
use crate::telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(name = "step-operator", version, about = "step-ca for Kubernetes")]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "STEP_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,

    /// Log filter, in `RUST_LOG` syntax (for example `info,step_operator=debug`).
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = "info,kube=warn",
        global = true
    )]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once at start-up and matched at once: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the cert-manager external issuer: StepIssuer, StepClusterIssuer and CertificateRequest
    /// reconcilers.
    Controller(ControllerArgs),
    /// Serve the pod-mutating admission webhook (`/mutate`) and the pod bootstrap endpoint
    /// (`/bootstrap`) over HTTPS with a certificate from step-ca.
    Webhook(WebhookArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crd(CrdArgs),
    /// In-pod init container: obtain the pod's certificate through the webhook and step-ca.
    Bootstrap(crate::agent::AgentArgs),
    /// In-pod sidecar: renew the pod's certificate before it expires.
    Renew(crate::agent::AgentArgs),
}

/// See `--issuers-without-policy`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum IssuersWithoutPolicy {
    AllowAnyName,
    NamespaceNames,
}

/// Default port of the controller's admin server.
pub const CONTROLLER_ADMIN_PORT: u16 = 8080;
/// Default port of the webhook's admin server: another than the controller's, so that both can
/// run on one host.
pub const WEBHOOK_ADMIN_PORT: u16 = 8081;

/// The plain-HTTP admin server of a role. Its default differs per role, so it is not a clap
/// default (clap keeps one default per field, whatever the role): see [`AdminArgs::addr`].
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Address of the plain-HTTP admin server (/healthz, /readyz, /metrics). Default:
    /// 0.0.0.0:8080 for the controller, 0.0.0.0:8081 for the webhook.
    #[arg(long, env = "STEP_OPERATOR_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
}

impl AdminArgs {
    /// The address given, or all interfaces on the role's `default_port`.
    pub fn addr(&self, default_port: u16) -> SocketAddr {
        self.admin_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port)))
    }
}

/// Who this replica is, from the downward API.
#[derive(Args, Debug, Clone)]
pub struct PodArgs {
    /// Namespace of this pod (set from the downward API): the controller's Lease and the
    /// webhook's Service are in it.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub pod_namespace: String,

    /// Name of this pod: the leader identity and the Events' reporting instance.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Host name, for the identity outside a pod (without `--pod-name`): `<hostname>-<pid>`.
    #[arg(long, env = "HOSTNAME", default_value = "step-operator")]
    pub hostname: String,
}

impl PodArgs {
    /// This replica's identity: the pod's name, or `<hostname>-<pid>` when it has none (the pid
    /// keeps two processes on one host apart).
    pub fn identity(&self) -> String {
        self.pod_name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.hostname, std::process::id()))
    }
}

/// The cluster a role runs in: how it talks to the Kubernetes API, and its DNS domain.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Timeout of connecting to and sending to the Kubernetes API, and of each wait for a
    /// response's next bytes (watches have their own idle timeout instead).
    #[arg(long, env = "STEP_OPERATOR_KUBE_TIMEOUT", default_value = "30s", value_parser = crate::duration::parse_flag)]
    pub kube_timeout: Duration,

    /// Cluster DNS domain used by the name policy (`<svc>.<ns>.svc.<domain>`, SPIFFE IDs) and in
    /// the webhook's serving certificate.
    #[arg(
        long,
        env = "STEP_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
}

/// How a role reaches the issuers' step-ca (see [`crate::issuer::IssuerAccess`]).
#[derive(Args, Debug, Clone)]
pub struct IssuerAccessArgs {
    /// Namespace of the password Secrets of StepClusterIssuers whose `passwordRef` names no
    /// namespace.
    #[arg(
        long,
        env = "STEP_OPERATOR_CLUSTER_RESOURCE_NAMESPACE",
        default_value = "step-operator"
    )]
    pub cluster_resource_namespace: String,

    /// Timeout of each request to step-ca.
    #[arg(long, env = "STEP_OPERATOR_CA_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse_flag)]
    pub ca_timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub admin: AdminArgs,

    /// Elect a leader with a Lease so that only one replica reconciles; the process exits when it
    /// loses the lease.
    #[arg(long, env = "STEP_OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the Lease used for leader election (in the namespace from POD_NAMESPACE).
    #[arg(
        long,
        env = "STEP_OPERATOR_LEASE_NAME",
        default_value = "step-operator-controller"
    )]
    pub lease_name: String,

    /// Lease duration: how long a standby waits for a dead leader.
    #[arg(long, env = "STEP_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = crate::duration::parse_flag)]
    pub lease_duration: Duration,

    #[command(flatten)]
    pub issuers: IssuerAccessArgs,

    /// How long a CertificateRequest is retried after retryable errors, counted from its
    /// creation, before it is marked Failed.
    #[arg(long, env = "STEP_OPERATOR_MAX_RETRY_DURATION", default_value = "5m", value_parser = crate::duration::parse_flag)]
    pub max_retry_duration: Duration,

    /// CertificateRequests signed in parallel.
    #[arg(long, env = "STEP_OPERATOR_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// At most this many CertificateRequests of one issuer are signed at once, so that a CA that
    /// hangs holds at most this many of the `--concurrency` workers and the others keep serving
    /// the other issuers. 0: a quarter of `--concurrency` (at least 1).
    #[arg(long, env = "STEP_OPERATOR_MAX_SIGNS_PER_ISSUER", default_value_t = 0)]
    pub max_signs_per_issuer: u16,

    /// How the controller's watches load the initial state: `paged` (LIST, 100 objects a page,
    /// 10 for CertificateRequests) or `streaming` (watch with sendInitialEvents: objects arrive
    /// one by one, a little less memory, about 0.7 s more per (re)list; needs the WatchList
    /// feature, on by default in Kubernetes 1.32 and 1.34+).
    #[arg(long, env = "STEP_OPERATOR_INITIAL_LIST", value_enum, default_value_t = InitialList::Paged)]
    pub initial_list: InitialList,

    /// How often a Ready issuer re-checks its step-ca and re-reads its password.
    #[arg(long, env = "STEP_OPERATOR_ISSUER_RECHECK_INTERVAL", default_value = "5m", value_parser = crate::duration::parse_flag)]
    pub issuer_recheck_interval: Duration,

    /// Watch the metadata of every Secret in the cluster, so that a changed password Secret
    /// re-checks its issuers at once. Off by default: it needs `list` and `watch` on all Secrets,
    /// which RBAC cannot limit to metadata. Without it, a changed password is noticed at the
    /// next re-check (`--issuer-recheck-interval`), or as soon as step-ca refuses a token.
    #[arg(long, env = "STEP_OPERATOR_WATCH_SECRETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub watch_secrets: bool,

    /// What a StepClusterIssuer without `spec.policy` signs for CertificateRequests:
    /// `allow-any-name` (any name for any namespace: step-issuer's behaviour) or
    /// `namespace-names` (each namespace gets its own names only: `<svc>.<ns>.svc`, ...; the
    /// Helm chart's default). Its `NamePolicy` condition says which applies.
    #[arg(long, env = "STEP_OPERATOR_ISSUERS_WITHOUT_POLICY", value_enum, default_value_t = IssuersWithoutPolicy::AllowAnyName)]
    pub issuers_without_policy: IssuersWithoutPolicy,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Address ranges a StepIssuer's URL may not lead to, comma-separated CIDRs (for example
    /// `169.254.0.0/16,127.0.0.0/8,10.96.0.1`: link-local and metadata services, loopback, the
    /// apiserver's Service IP). Checked on the literal address in the URL and on every address
    /// its name resolves to; StepIssuer clients then connect without proxy. StepClusterIssuers
    /// are not restricted. Empty: no restriction.
    #[arg(
        long,
        env = "STEP_OPERATOR_FORBIDDEN_CA_CIDRS",
        value_delimiter = ',',
        value_parser = clap::value_parser!(crate::step::Cidr)
    )]
    pub forbidden_ca_cidrs: Vec<crate::step::Cidr>,

    #[command(flatten)]
    pub pod: PodArgs,
}

impl ControllerArgs {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr(CONTROLLER_ADMIN_PORT)
    }
}

#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// HTTPS address for /mutate and /bootstrap.
    #[arg(
        long,
        env = "STEP_OPERATOR_LISTEN_ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub listen_addr: SocketAddr,

    #[command(flatten)]
    pub admin: AdminArgs,

    /// StepClusterIssuer that signs pods without `autocert.step.sm/issuer`, and the webhook's
    /// own serving certificate.
    #[arg(long, env = "STEP_OPERATOR_DEFAULT_ISSUER")]
    pub default_issuer: String,

    /// Name of the webhook's Service; its DNS names go into the serving certificate.
    #[arg(
        long,
        env = "STEP_OPERATOR_SERVICE_NAME",
        default_value = "step-operator-webhook"
    )]
    pub service_name: String,

    #[command(flatten)]
    pub pod: PodArgs,

    /// Extra names or IPs for the serving certificate (repeatable).
    #[arg(
        long = "tls-san",
        env = "STEP_OPERATOR_TLS_SANS",
        value_delimiter = ','
    )]
    pub tls_sans: Vec<String>,

    /// Lifetime of the serving certificate; it is renewed at 2/3 of it without a restart.
    #[arg(long, env = "STEP_OPERATOR_SERVING_CERT_DURATION", default_value = "24h", value_parser = crate::duration::parse_flag)]
    pub serving_cert_duration: Duration,

    /// MutatingWebhookConfiguration whose caBundle the webhook keeps equal to the step-ca root
    /// (only this one, by name; empty to disable).
    #[arg(
        long,
        env = "STEP_OPERATOR_WEBHOOK_CONFIG_NAME",
        default_value = "step-operator"
    )]
    pub webhook_config_name: String,

    /// Image of the injected bootstrapper and renewer (step-operator's own image).
    #[arg(
        long,
        env = "STEP_OPERATOR_IMAGE",
        default_value = "ghcr.io/step-operator/step-operator:latest"
    )]
    pub image: String,

    /// `imagePullPolicy` of the injected containers.
    #[arg(long, env = "STEP_OPERATOR_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,

    /// URL the injected bootstrapper calls; defaults to https://<service>.<namespace>.svc:443.
    #[arg(long, env = "STEP_OPERATOR_BOOTSTRAP_URL")]
    pub bootstrap_url: Option<String>,

    /// Extra names pods may request, beyond their own namespace's (`*.example.com`,
    /// `api.example.com`; repeatable).
    #[arg(
        long = "allowed-names",
        env = "STEP_OPERATOR_ALLOWED_NAMES",
        value_delimiter = ','
    )]
    pub allowed_names: Vec<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Allow single-label names (`db`, `localhost`) for pods of every namespace. Off: such a
    /// name means the same service in every namespace. A StepClusterIssuer's
    /// `spec.policy.allowShortNames` allows them for its pods only.
    #[arg(long, env = "STEP_OPERATOR_ALLOW_SHORT_NAMES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_short_names: bool,

    /// Labels (`key=value`, repeatable) a pod's namespace must carry for `/bootstrap` to serve
    /// it: the webhook's own namespaceSelector, so that a namespace that never opted in cannot
    /// get certificates with a hand-made pod. Empty: no check.
    #[arg(
        long = "namespace-label",
        env = "STEP_OPERATOR_NAMESPACE_LABELS",
        value_delimiter = ',',
        default_value = "autocert.step.sm=enabled"
    )]
    pub namespace_labels: Vec<String>,

    /// Audience the pods' projected tokens must carry.
    #[arg(
        long,
        env = "STEP_OPERATOR_TOKEN_AUDIENCE",
        default_value = "step-operator"
    )]
    pub token_audience: String,

    #[command(flatten)]
    pub issuers: IssuerAccessArgs,

    /// /bootstrap requests per second this replica admits from all clients together (each costs
    /// a TokenReview); more get 429 with Retry-After, and the agents retry. 0: no limit.
    #[arg(long, env = "STEP_OPERATOR_BOOTSTRAP_RATE", default_value_t = 50.0, value_parser = parse_rate)]
    pub bootstrap_rate: f64,

    /// /bootstrap requests admitted at once from all clients after a quiet spell.
    #[arg(long, env = "STEP_OPERATOR_BOOTSTRAP_BURST", default_value_t = 100)]
    pub bootstrap_burst: u32,

    /// /bootstrap requests per second admitted from one client IP. 0: no per-client limit.
    #[arg(long, env = "STEP_OPERATOR_BOOTSTRAP_CLIENT_RATE", default_value_t = 5.0, value_parser = parse_rate)]
    pub bootstrap_client_rate: f64,

    /// /bootstrap requests admitted at once from one client IP after a quiet spell.
    #[arg(
        long,
        env = "STEP_OPERATOR_BOOTSTRAP_CLIENT_BURST",
        default_value_t = 20
    )]
    pub bootstrap_client_burst: u32,
}

impl WebhookArgs {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr(WEBHOOK_ADMIN_PORT)
    }
}

/// Parses a rate in requests per second: a finite number, 0 or more.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: give requests per second as a number, 0 or more (0: no limit)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn controller_defaults() {
        let cli = Cli::try_parse_from(["step-operator", "controller"]).unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not controller")
        };
        assert_eq!(args.concurrency, 16);
        assert_eq!(args.max_retry_duration, Duration::from_secs(300));
        assert!(args.leader_elect);
        let cli = Cli::try_parse_from(["step-operator", "controller", "--leader-elect", "false"])
            .unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not controller")
        };
        assert!(!args.leader_elect);
    }

    fn controller(argv: &[&str]) -> ControllerArgs {
        let argv = [&["step-operator", "controller"][..], argv].concat();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Controller(args) => args,
            other => panic!("not the controller: {other:?}"),
        }
    }

    fn webhook(argv: &[&str]) -> WebhookArgs {
        let argv = [
            &["step-operator", "webhook", "--default-issuer", "ca"][..],
            argv,
        ]
        .concat();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Webhook(args) => args,
            other => panic!("not the webhook: {other:?}"),
        }
    }

    /// The shared groups keep each role's default admin port, and the flags' names.
    #[test]
    fn shared_flags_mean_the_same_in_both_roles() {
        assert_eq!(controller(&[]).admin_addr().to_string(), "0.0.0.0:8080");
        assert_eq!(webhook(&[]).admin_addr().to_string(), "0.0.0.0:8081");
        let shared = [
            "--admin-addr=127.0.0.1:9000",
            "--pod-namespace=ops",
            "--pod-name=p-1",
            "--cluster-resource-namespace=secrets",
            "--ca-timeout=3s",
            "--kube-timeout=7s",
            "--cluster-domain=corp.internal",
        ];
        let c = controller(&shared);
        let w = webhook(&shared);
        for (admin, pod, cluster, issuers) in [
            (c.admin_addr(), &c.pod, &c.cluster, &c.issuers),
            (w.admin_addr(), &w.pod, &w.cluster, &w.issuers),
        ] {
            assert_eq!(admin.to_string(), "127.0.0.1:9000");
            assert_eq!(pod.pod_namespace, "ops");
            assert_eq!(pod.identity(), "p-1");
            assert_eq!(issuers.cluster_resource_namespace, "secrets");
            assert_eq!(issuers.ca_timeout, Duration::from_secs(3));
            assert_eq!(cluster.kube_timeout, Duration::from_secs(7));
            assert_eq!(cluster.cluster_domain, "corp.internal");
        }
    }

    /// Outside a pod the identity is the host name and the process id, as it always was.
    #[test]
    fn identity_without_a_pod_name() {
        let pod = controller(&["--hostname=node-a"]).pod;
        assert_eq!(pod.pod_name, None);
        assert_eq!(pod.identity(), format!("node-a-{}", std::process::id()));
    }

    #[test]
    fn forbidden_ca_cidrs() {
        let parse = |extra: &[&str]| {
            let argv = [&["step-operator", "controller"][..], extra].concat();
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Controller(args)) => Ok(args.forbidden_ca_cidrs),
                Ok(_) => panic!("not controller"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(parse(&[]), Ok(vec![]));
        let ranges = parse(&["--forbidden-ca-cidrs=169.254.0.0/16,127.0.0.0/8,10.96.0.1"]).unwrap();
        let shown: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["169.254.0.0/16", "127.0.0.0/8", "10.96.0.1/32"]);
        let err = parse(&["--forbidden-ca-cidrs=10.0.0.0/40"]).unwrap_err();
        assert!(
            err.contains("prefix length must be a number from 0 to 32"),
            "{err}"
        );
    }

    #[test]
    fn rates() {
        for (input, want) in [
            ("50", Some(50.0)),
            ("0.5", Some(0.5)),
            ("0", Some(0.0)),
            ("-1", None),
            ("NaN", None),
            ("inf", None),
            ("fast", None),
        ] {
            assert_eq!(parse_rate(input).ok(), want, "{input}");
        }
    }
}
