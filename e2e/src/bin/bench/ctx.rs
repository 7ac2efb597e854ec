//! What every phase needs: the cluster, the options, the run's suffix and the CSRs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use e2e::{Env, random_suffix};
use futures::StreamExt;
use kube::Client;

use crate::Opts;
use crate::util::{log, run_out};

pub struct Ctx {
    pub env: Env,
    pub client: Client,
    pub opts: Opts,
    /// Part of every name the run creates, so that runs never collide.
    pub suffix: String,
    /// `(common name, PEM CSR)`, generated before anything is measured.
    pub csrs: Vec<(String, String)>,
    next_csr: AtomicUsize,
}

impl Ctx {
    pub async fn new(env: Env, opts: Opts) -> Result<Ctx> {
        let client = env.client().await?;
        let suffix = random_suffix();
        // Unique CSRs for every CertificateRequest that a controller signs: per system the
        // start-up probe, the steady probe and the throughput batch.
        let n_csrs = 2 * (opts.requests + 2) + 4;
        log(format!("generating {n_csrs} ECDSA P-256 CSRs with openssl"));
        let csrs = generate_csrs(&suffix, n_csrs).await?;
        Ok(Ctx {
            env,
            client,
            opts,
            suffix,
            csrs,
            next_csr: AtomicUsize::new(0),
        })
    }

    /// A unique CSR (CN and the only DNS SAN are the same name).
    pub fn csr(&self) -> Result<&(String, String)> {
        let i = self.next_csr.fetch_add(1, Ordering::Relaxed);
        self.csrs
            .get(i)
            .context("ran out of pre-generated CSRs (bug in the count)")
    }
}

/// versions.env, the step-operator binary's `--version` and the git revision.
pub async fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("versions.env");
    for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
        if let Some((k, val)) = line.split_once('=')
            && !k.starts_with('#')
        {
            let val = val.split_whitespace().next().unwrap_or_default();
            v.insert(k.trim().to_lowercase(), val.to_string());
        }
    }
    if let Ok(bin) = e2e::operator::binary() {
        let ver = run_out(&bin, &["--version"], &[]).await.unwrap_or_default();
        v.insert("step_operator".into(), ver.trim().to_string());
        v.insert("step_operator_binary".into(), bin.display().to_string());
    }
    if let Ok(rev) = run_out(Path::new("git"), &["rev-parse", "--short", "HEAD"], &[]).await {
        v.insert("git".into(), rev.trim().to_string());
    }
    v
}

async fn generate_csrs(suffix: &str, n: usize) -> Result<Vec<(String, String)>> {
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
