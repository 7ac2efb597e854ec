//! The issuers under test. Each has a namespace, a password Secret and a StepClusterIssuer of
//! its own, never shared.

use anyhow::{Context as _, Result};
use e2e::fixtures::*;
use e2e::operator::free_port;
use serde_json::json;

use crate::ctx::Ctx;
use crate::procs::Proc;
use crate::report::SO;

pub struct System {
    pub key: &'static str,
    pub ns: String,
    pub issuer: String,
}

impl System {
    pub async fn create(ctx: &Ctx, key: &'static str) -> Result<System> {
        let short = if key == SO { "so" } else { "si" };
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
        Ok(System { key, ns, issuer })
    }

    pub fn start(&self, ctx: &Ctx, name: &str) -> Result<(Proc, Option<u16>)> {
        let kubeconfig = ctx.env.kubeconfig.to_str().context("utf-8")?;
        if self.key == SO {
            let port = free_port()?;
            let admin = format!("127.0.0.1:{port}");
            let concurrency = ctx.opts.concurrency.to_string();
            let p = Proc::spawn(
                &ctx.env,
                name,
                &[],
                &e2e::operator::binary()?,
                &[
                    "controller",
                    "--leader-elect=false",
                    "--cluster-resource-namespace",
                    &self.ns,
                    "--concurrency",
                    &concurrency,
                ],
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
