//! Small helpers shared by the phases: logging, running a program, percentiles.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

pub fn log(msg: impl AsRef<str>) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 86400)
        .unwrap_or(0);
    eprintln!(
        "[bench {:02}:{:02}:{:02}] {}",
        t / 3600,
        t / 60 % 60,
        t % 60,
        msg.as_ref()
    );
}

/// Runs a program and returns its stdout (fails with its output on a non-zero exit).
pub async fn run_out(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<String> {
    let out = e2e::process::run(program, args, envs).await?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Nearest-rank percentile of `v` (sorted in place), in the unit of `v`.
pub fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

pub fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Aborts a background task (a watch, a sampler) when the phase that started it ends.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
