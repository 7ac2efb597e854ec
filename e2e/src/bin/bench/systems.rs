//! The issuers under test. Each has a namespace, a password Secret and a StepClusterIssuer of
//! its own, never shared.

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::free_port;
use serde::Serialize;
use serde_json::json;

use crate::ctx::Ctx;
use crate::procs::Proc;

/// An issuer under test; its snake_case name is its key in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    StepOperator,
    StepIssuer,
}

impl System {
    /// In the order they are measured.
    pub const ALL: [System; 2] = [System::StepOperator, System::StepIssuer];

    /// The report key, also used in log lines, error labels and process names.
    pub fn key(self) -> &'static str {
        match self {
            System::StepOperator => "step_operator",
            System::StepIssuer => "step_issuer",
        }
    }

    /// Its namespace, password Secret and StepClusterIssuer.
    async fn create(self, ctx: &Ctx) -> Result<Installed> {
        let short = match self {
            System::StepOperator => "so",
            System::StepIssuer => "si",
        };
        let ns = format!("bench-{short}-{}", ctx.suffix);
        let issuer = ns.clone();
        ensure_namespace(&ctx.client, &ns).await?;
        // Written without a trailing newline: step-issuer uses the value verbatim.
        password_secret(
            &ctx.client,
            &ns,
            "provisioner",
            "password",
            &ctx.env.provisioner_password()?,
        )
        .await?;
        apply(
            &cluster(&ctx.client, &step_cluster_issuers()),
            json!({
                "apiVersion": "certmanager.step.sm/v1beta1", "kind": "StepClusterIssuer",
                "metadata": {"name": issuer},
                "spec": issuer_spec(&ctx.env, json!({"name": "provisioner", "key": "password", "namespace": ns}))?,
            }),
        )
        .await?;
        Ok(Installed {
            system: self,
            ns,
            issuer,
        })
    }
}

/// Both issuers, set up once and measured one after the other.
pub struct Systems {
    pub step_operator: Installed,
    pub step_issuer: Installed,
}

impl Systems {
    pub async fn create(ctx: &Ctx) -> Result<Systems> {
        Ok(Systems {
            step_operator: System::StepOperator.create(ctx).await?,
            step_issuer: System::StepIssuer.create(ctx).await?,
        })
    }

    pub fn all(&self) -> [&Installed; 2] {
        [&self.step_operator, &self.step_issuer]
    }
}

/// An issuer with its namespace and StepClusterIssuer (same name).
pub struct Installed {
    pub system: System,
    pub ns: String,
    pub issuer: String,
}

impl Installed {
    pub fn start(&self, ctx: &Ctx, name: &str) -> Result<(Proc, Option<u16>)> {
        self.start_with(ctx, name, &[])
    }

    /// [`Self::start`] with more arguments for step-operator's controller.
    pub fn start_with(&self, ctx: &Ctx, name: &str, extra: &[&str]) -> Result<(Proc, Option<u16>)> {
        let kubeconfig = ctx.env.kubeconfig.to_str().context("utf-8")?;
        if self.system == System::StepOperator {
            let port = free_port()?;
            let admin = format!("127.0.0.1:{port}");
            let concurrency = ctx.opts.concurrency.to_string();
            let p = Proc::spawn(
                &ctx.env,
                name,
                &[],
                &e2e::operator::binary()?,
                &[
                    &[
                        "controller",
                        "--leader-elect=false",
                        "--cluster-resource-namespace",
                        &self.ns,
                        "--concurrency",
                        &concurrency,
                    ],
                    extra,
                ]
                .concat(),
                &[
                    ("KUBECONFIG", kubeconfig),
                    ("STEP_OPERATOR_ADMIN_ADDR", &admin),
                    ("RUST_LOG", "info,kube=warn"),
                ],
            )?;
            Ok((p, Some(port)))
        } else {
            // Defaults: metrics off ("0"), leader election off, approval check on.
            let p = Proc::spawn(
                &ctx.env,
                name,
                &[],
                &ctx.env.tool("step-issuer")?,
                &["--kubeconfig", kubeconfig],
                &[("KUBECONFIG", kubeconfig)],
            )?;
            Ok((p, None))
        }
    }
}
