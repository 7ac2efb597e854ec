//! The webhook's command line (`step-operator webhook`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::args::{
    AdminArgs, ClusterArgs, IssuerAccessArgs, PodArgs, WEBHOOK_ADMIN_PORT, parse_rate,
};

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
