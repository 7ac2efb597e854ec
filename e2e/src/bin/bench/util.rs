//! Small helpers shared by the phases: logging, running a program, percentiles.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::jiff::Timestamp;

/// A progress line on stderr, with the UTC time of day.
pub fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {}] {}",
        Timestamp::now().strftime("%H:%M:%S"),
        msg.as_ref()
    );
}

/// Now in UTC, to the second (`2026-11-22T20:01:46Z`), as the report's `date`.
pub fn now_utc() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
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
