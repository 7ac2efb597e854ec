//! The webhook's configuration, built from its arguments in one place: what `/mutate` injects and
//! what `/bootstrap` accepts must agree (the audience of the projected token above all), so both
//! come from the same values here and nowhere else.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::policy::{NamePolicy, Pattern};
use crate::webhook::args::WebhookArgs;
use crate::webhook::bootstrap::BootstrapSettings;

/// Everything [`super::mutate`] needs besides the Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectConfig {
    /// Image of the injected containers (step-operator itself).
    pub image: String,
    /// `imagePullPolicy` of the injected containers (`None`: the Kubernetes default).
    pub image_pull_policy: Option<String>,
    /// Base URL of the webhook Service; the bootstrapper POSTs `<webhook_url>/bootstrap`.
    pub webhook_url: String,
    /// step-ca URL, passed as `STEP_CA_URL` when not empty so the renewer can reach the CA even
    /// when the webhook is down. The bootstrapper also gets it (and the root) from `/bootstrap`.
    pub ca_url: String,
    /// `StepClusterIssuer` used when the pod has no `autocert.step.sm/issuer`.
    pub default_issuer: String,
    /// Lifetime used when the pod has no `autocert.step.sm/duration` (`None`: the CA decides).
    pub default_duration: Option<Duration>,
    /// Audience of the projected ServiceAccount token (`step-operator`).
    pub token_audience: String,
    /// Lifetime of the projected token; Kubernetes requires at least 600.
    pub token_expiration_seconds: i64,
    /// Which names a pod may ask for (with the cluster DNS domain).
    pub policy: NamePolicy,
    /// Resources of each injected container.
    pub resources: ResourceRequirements,
    /// PEM root the injected agent trusts for the webhook's TLS (`STEP_OPERATOR_BOOTSTRAP_CA`).
    pub bootstrap_ca_pem: Option<String>,
}

/// Lifetime of the injected projected token: the shortest Kubernetes allows (the kubelet
/// refreshes it long before it expires).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;

impl InjectConfig {
    /// A configuration with the defaults, for tests and tools: audience `step-operator`, 600 s
    /// tokens, cluster domain `cluster.local` with the default name policy,
    /// [`default_resources`]. The webhook builds its own from its flags, in
    /// [`from_args`].
    pub fn new(image: &str, webhook_url: &str, ca_url: &str, default_issuer: &str) -> Self {
        Self {
            image: image.to_owned(),
            image_pull_policy: None,
            webhook_url: webhook_url.to_owned(),
            ca_url: ca_url.to_owned(),
            default_issuer: default_issuer.to_owned(),
            default_duration: None,
            token_audience: "step-operator".to_owned(),
            token_expiration_seconds: TOKEN_EXPIRATION_SECONDS,
            policy: NamePolicy::default(),
            resources: default_resources(),
            bootstrap_ca_pem: None,
        }
    }
}

/// Requests cpu 10m / memory 16Mi, limits memory 64Mi.
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("10m")),
            ("memory".to_owned(), q("16Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("64Mi"))])),
        ..ResourceRequirements::default()
    }
}

/// Everything the handlers need from the arguments.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub inject: InjectConfig,
    pub bootstrap: BootstrapSettings,
}

/// Builds the injection and bootstrap settings from the arguments. `bootstrap_ca_pem` is the
/// root the injected agent trusts for the webhook's TLS (known once the serving certificate is).
/// Every field of both is set here, from a flag or a named default, so none can be left behind.
pub fn from_args(args: &WebhookArgs, bootstrap_ca_pem: &str) -> anyhow::Result<WebhookConfig> {
    let mut policy = NamePolicy::new(&args.cluster.cluster_domain, allowed_names(args)?);
    policy.short_names = args.allow_short_names;
    let webhook_url = args.bootstrap_url.clone().unwrap_or_else(|| {
        format!(
            "https://{}.{}.svc:443",
            args.service_name, args.pod.pod_namespace
        )
    });
    let inject = InjectConfig {
        image: args.image.clone(),
        image_pull_policy: args.image_pull_policy.clone(),
        webhook_url,
        // No CA URL: the renewer uses the one the bootstrapper got from /bootstrap, so the
        // webhook stays the only place that knows where each issuer's step-ca is.
        ca_url: String::new(),
        default_issuer: args.default_issuer.clone(),
        // The CA (the issuer's provisioner) decides unless the pod asks.
        default_duration: None,
        token_audience: args.token_audience.clone(),
        token_expiration_seconds: TOKEN_EXPIRATION_SECONDS,
        policy: policy.clone(),
        resources: default_resources(),
        bootstrap_ca_pem: Some(bootstrap_ca_pem.to_owned()),
    };
    let bootstrap = BootstrapSettings {
        audience: args.token_audience.clone(),
        default_issuer: args.default_issuer.clone(),
        policy,
        namespace_labels: namespace_labels(args)?,
    };
    Ok(WebhookConfig { inject, bootstrap })
}

/// `--allowed-names`, parsed; empty entries are skipped.
fn allowed_names(args: &WebhookArgs) -> anyhow::Result<Vec<Pattern>> {
    args.allowed_names
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.parse::<Pattern>()
                .map_err(|e| anyhow::anyhow!("--allowed-names {p:?}: {e}"))
        })
        .collect()
}

/// `--namespace-label` as (key, value) pairs; empty entries are skipped.
fn namespace_labels(args: &WebhookArgs) -> anyhow::Result<Vec<(String, String)>> {
    args.namespace_labels
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(anyhow::anyhow!(
                "--namespace-label {l:?} is not key=value, e.g. autocert.step.sm=enabled"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> WebhookArgs {
        let mut argv = vec!["step-operator", "webhook", "--default-issuer", "ca"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Webhook(a) => a,
            other => panic!("not the webhook: {other:?}"),
        }
    }

    #[test]
    fn injected_tokens_carry_the_audience_bootstrap_accepts() {
        for (flags, want) in [
            (vec![], "step-operator"),
            (vec!["--token-audience", "pods.example"], "pods.example"),
        ] {
            let cfg = from_args(&args(&flags), "root").unwrap();
            assert_eq!(cfg.inject.token_audience, want, "{flags:?}");
            assert_eq!(cfg.bootstrap.audience, want, "{flags:?}");
        }
    }

    #[test]
    fn every_injection_setting_comes_from_its_flag() {
        let cfg = from_args(
            &args(&[
                "--image",
                "local/step-operator:dev",
                "--image-pull-policy",
                "Never",
                "--cluster-domain",
                "corp.internal",
                "--service-name",
                "hook",
                "--pod-namespace",
                "ops",
                "--allowed-names",
                "*.example.com",
            ]),
            "root-pem",
        )
        .unwrap();
        assert_eq!(cfg.inject.image, "local/step-operator:dev");
        assert_eq!(cfg.inject.image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(cfg.inject.policy.cluster_domain, "corp.internal");
        assert_eq!(cfg.bootstrap.policy.cluster_domain, "corp.internal");
        assert_eq!(cfg.inject.webhook_url, "https://hook.ops.svc:443");
        assert_eq!(cfg.inject.default_issuer, "ca");
        assert_eq!(cfg.bootstrap.default_issuer, "ca");
        assert_eq!(cfg.inject.bootstrap_ca_pem.as_deref(), Some("root-pem"));
        // What no flag sets keeps its documented default.
        assert_eq!(cfg.inject.token_expiration_seconds, 600);
        assert_eq!(cfg.inject.resources, default_resources());
        assert_eq!(
            (cfg.inject.ca_url.as_str(), cfg.inject.default_duration),
            ("", None)
        );
        let url = from_args(&args(&["--bootstrap-url", "https://127.0.0.1:9443"]), "r").unwrap();
        assert_eq!(url.inject.webhook_url, "https://127.0.0.1:9443");
    }

    #[test]
    fn short_names_and_namespace_labels_come_from_their_flags() {
        let default = from_args(&args(&[]), "r").unwrap();
        assert!(!default.inject.policy.short_names);
        assert!(!default.bootstrap.policy.short_names);
        assert_eq!(
            default.bootstrap.namespace_labels,
            vec![("autocert.step.sm".to_string(), "enabled".to_string())]
        );
        let set = from_args(
            &args(&[
                "--allow-short-names",
                "--namespace-label",
                "a=b",
                "--namespace-label",
                "c=",
            ]),
            "r",
        )
        .unwrap();
        assert!(set.inject.policy.short_names && set.bootstrap.policy.short_names);
        assert_eq!(
            set.bootstrap.namespace_labels,
            vec![("a".into(), "b".into()), ("c".into(), String::new())]
        );
        let off = from_args(&args(&["--namespace-label", ""]), "r").unwrap();
        assert!(off.bootstrap.namespace_labels.is_empty());
        let bad = from_args(&args(&["--namespace-label", "nolabel"]), "r").unwrap_err();
        assert!(bad.to_string().contains("is not key=value"), "{bad}");
    }

    #[test]
    fn a_bad_pattern_names_the_flag() {
        let err = from_args(&args(&["--allowed-names", "a.*.b"]), "r").unwrap_err();
        assert!(
            err.to_string().contains("--allowed-names \"a.*.b\""),
            "{err}"
        );
    }
}
