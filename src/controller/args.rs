//! The controller's command line (`step-operator controller`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::args::{AdminArgs, CONTROLLER_ADMIN_PORT, ClusterArgs, IssuerAccessArgs, PodArgs};
use crate::controller::initial_list::InitialList;

/// See `--issuers-without-policy`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum IssuersWithoutPolicy {
    AllowAnyName,
    NamespaceNames,
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

    /// How long a CertificateRequest or CertificateSigningRequest is retried after retryable
    /// errors, counted from its creation, before it is marked Failed. Pod certificate requests
    /// have no budget: the kubelet never asks again after a Failed one.
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

    /// Sign Kubernetes PodCertificateRequests whose signerName names one of our issuers
    /// (`stepclusterissuers.certmanager.step.sm/<name>`,
    /// `stepissuers.certmanager.step.sm/<namespace>.<name>`). Off by itself when the apiserver
    /// does not serve `certificates.k8s.io/v1` podcertificaterequests (before 1.37).
    #[arg(long, env = "STEP_OPERATOR_POD_CERTIFICATES", default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_certificates: bool,

    /// Watch only these namespaces (comma-separated), with Roles in each instead of a
    /// ClusterRole: StepIssuers, their CertificateRequests and Secrets there. Pod certificates,
    /// Kubernetes CSRs and trust bundles are off in this mode (they are cluster-scoped).
    /// Empty: the whole cluster.
    #[arg(long, env = "STEP_OPERATOR_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Serve StepClusterIssuers. With `--namespaces`, set it to false to need no ClusterRole at
    /// all; requests naming a StepClusterIssuer then wait as if it did not exist.
    #[arg(long, env = "STEP_OPERATOR_CLUSTER_ISSUERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub cluster_issuers: bool,

    /// Watch only our CertificateRequests (field selector `spec.issuerRef.group=certmanager.step.sm`)
    /// when the apiserver serves it (cert-manager's CRDs 1.20 and later); otherwise, or when
    /// false, every request is watched and ours are kept. The log says which.
    #[arg(long, env = "STEP_OPERATOR_SELECT_REQUESTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub select_requests: bool,

    /// Sign approved Kubernetes CertificateSigningRequests (`certificates.k8s.io/v1`) whose
    /// signerName names one of our issuers (the same names as for pod certificates).
    #[arg(long, env = "STEP_OPERATOR_CERTIFICATE_SIGNING_REQUESTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub certificate_signing_requests: bool,

    /// Publish each StepClusterIssuer's roots as a ClusterTrustBundle named
    /// `stepclusterissuers.certmanager.step.sm:<name>:roots` and linked to its signer name, for
    /// pods to mount with a `clusterTrustBundle` volume source. Off by itself when the apiserver
    /// does not serve `certificates.k8s.io/v1` clustertrustbundles (before 1.37).
    #[arg(long, env = "STEP_OPERATOR_TRUST_BUNDLES", default_value_t = true, action = clap::ArgAction::Set)]
    pub trust_bundles: bool,

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
