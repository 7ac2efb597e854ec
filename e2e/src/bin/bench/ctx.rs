//! What every phase needs: the cluster, the options, the run's suffix and the CSRs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use e2e::Env;
use futures::StreamExt;
use kube::Client;
use serde_json::{Value, json};

use crate::Opts;
use crate::util::run_out;

pub struct Ctx {
    pub env: Env,
    pub client: Client,
    pub opts: Opts,
    pub suffix: String,
    pub csrs: Vec<(String, String)>,
    pub next_csr: AtomicUsize,
}

impl Ctx {
    /// A unique CSR (CN and the only DNS SAN are the same name).
    pub fn csr(&self) -> Result<&(String, String)> {
        let i = self.next_csr.fetch_add(1, Ordering::Relaxed);
        self.csrs
            .get(i)
            .context("ran out of pre-generated CSRs (bug in the count)")
    }
}

pub async fn versions() -> Value {
    let mut v = serde_json::Map::new();
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("versions.env");
    for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
        if let Some((k, val)) = line.split_once('=')
            && !k.starts_with('#')
        {
            let val = val.split_whitespace().next().unwrap_or_default();
            v.insert(k.trim().to_lowercase(), json!(val));
        }
    }
    if let Ok(bin) = e2e::operator::binary() {
        let ver = run_out(&bin, &["--version"], &[]).await.unwrap_or_default();
        v.insert("step_operator".into(), json!(ver.trim()));
        v.insert(
            "step_operator_binary".into(),
            json!(bin.display().to_string()),
        );
    }
    if let Ok(rev) = run_out(Path::new("git"), &["rev-parse", "--short", "HEAD"], &[]).await {
        v.insert("git".into(), json!(rev.trim()));
    }
    Value::Object(v)
}

pub async fn generate_csrs(suffix: &str, n: usize) -> Result<Vec<(String, String)>> {
    let results: Vec<Result<(String, String)>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let cn = format!("r{i}-{suffix}.bench.example");
            let out = run_out(
                Path::new("openssl"),
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    "/dev/null",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-addext",
                    &format!("subjectAltName=DNS:{cn}"),
                ],
                &[],
            )
            .await?;
            Ok((cn, out))
        })
        .buffer_unordered(2)
        .collect()
        .await;
    results.into_iter().collect()
}
