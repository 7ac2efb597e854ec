//! Flag groups that more than one role takes, defined once and flattened into each role's
//! arguments, so that a flag means the same in every role. The roles read their configuration
//! from their argument structs only, never from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

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

/// Parses a rate in requests per second: a finite number, 0 or more.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: give requests per second as a number, 0 or more (0: no limit)"
        )),
    }
}
