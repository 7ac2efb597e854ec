//! Running upstream tools and step-operator itself as child processes.

use std::path::Path;
use std::process::Output;

use anyhow::{Context as _, Result, bail};

/// Runs a command to completion and fails with its output when it exits non-zero.
pub async fn run(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<Output> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("starting {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} exited with {}\nstdout:\n{}\nstderr:\n{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}
