//! Command line: the subcommands, each with its role's arguments. Every flag is also an
//! environment variable (`STEP_OPERATOR_*` or the name given). Each role defines its own
//! arguments (`controller::args`, `webhook::args`, `agent::AgentArgs`, `crd::cmd`); the flags
//! several roles take are groups in `crate::args`. This module imports the roles, never the
//! reverse.

use clap::{Parser, Subcommand};

pub use crate::controller::args::{ControllerArgs, IssuersWithoutPolicy};
use crate::crd::cmd::CrdArgs;
use crate::telemetry::LogFormat;
pub use crate::webhook::args::WebhookArgs;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::parse_rate;
    use clap::CommandFactory;
    use std::time::Duration;

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
