//! The systems under test as child processes, and their memory.
//!
//! Like `e2e::operator::Process`, each program runs under a small bash supervisor that stops it
//! when the bench exits, and the supervisor's PID is saved as `$E2E_STATE/extra-bench-*.pid` so
//! that `e2e/cluster.sh down` stops it too. The supervisor also writes the program's own PID to a
//! file: that is the process whose `/proc/<pid>/status` (VmRSS, VmHWM) is read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::{Env, random_suffix};

pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    /// PID of the program itself (not of its supervisor).
    pub pid: u32,
    /// When `spawn` was called.
    pub started: Instant,
    child: Child,
    pid_file: PathBuf,
}

impl Proc {
    /// Starts `program args...` with `envs`. `wrap` (e.g. `unshare ... --`) is put in front of it
    /// and must `exec` the program, so that the recorded PID stays the program's.
    pub fn spawn(
        env: &Env,
        name: &str,
        wrap: &[&str],
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Proc> {
        let name = format!("bench-{name}-{}", random_suffix());
        let logs = env.state.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child_pid_file = logs.join(format!("{name}.child-pid"));
        let script = r#"parent=$1; pidfile=$2; shift 2; "$@" & c=$!; echo $c >"$pidfile"
            trap 'kill -TERM $c 2>/dev/null' TERM INT
            while kill -0 "$parent" 2>/dev/null && kill -0 "$c" 2>/dev/null; do sleep 0.5; done
            kill -TERM $c 2>/dev/null; wait $c"#;
        let started = Instant::now();
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("supervisor")
            .arg(std::process::id().to_string())
            .arg(&child_pid_file)
            .args(wrap)
            .arg(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid_file = env.state.join(format!("extra-{name}.pid"));
        std::fs::write(&pid_file, child.id().to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&child_pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            if Instant::now() > deadline {
                bail!("{name}: the supervisor did not report the program's PID within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Proc {
            name,
            log,
            pid,
            started,
            child,
            pid_file,
        })
    }

    pub fn log_tail(&self, n: usize) -> String {
        let logs = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// VmRSS and VmHWM in MiB.
    pub fn memory(&self) -> Result<Memory> {
        memory_of(self.pid)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM through the supervisor, SIGKILL after 15 s; waits for the program to be gone.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Memory {
    pub rss_mib: f64,
    pub hwm_mib: f64,
}

pub fn memory_of(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (has the process exited?)"))?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?;
        Ok(kb / 1024.0)
    };
    Ok(Memory {
        rss_mib: field("VmRSS:")?,
        hwm_mib: field("VmHWM:")?,
    })
}

/// CPU time (user + system) of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("bad /proc/<pid>/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).context("short stat")?.parse::<u64>()?
        + f.get(12).context("short stat")?.parse::<u64>()?)
}

fn tick_hz() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds by process name, and the wall-clock seconds they were counted over.
pub type CpuSeconds = std::collections::BTreeMap<String, f64>;

/// CPU time of a set of named processes between `CpuSnapshot::take` and `since`: where the
/// cores went during a measurement (2 cores are shared by everything on this machine).
pub struct CpuSnapshot {
    at: Instant,
    ticks: Vec<(String, u32, u64)>,
}

impl CpuSnapshot {
    pub fn take(pids: &[(String, u32)]) -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            ticks: pids
                .iter()
                .filter_map(|(n, p)| cpu_ticks(*p).ok().map(|t| (n.clone(), *p, t)))
                .collect(),
        }
    }

    /// CPU seconds each process used since the snapshot, plus `wall_seconds`.
    pub fn since(&self) -> CpuSeconds {
        let hz = tick_hz();
        let mut out = CpuSeconds::new();
        out.insert(
            "wall_seconds".into(),
            (self.at.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        );
        for (name, pid, t0) in &self.ticks {
            if let Ok(t1) = cpu_ticks(*pid) {
                let secs = t1.saturating_sub(*t0) as f64 / hz;
                out.insert(name.clone(), (secs * 100.0).round() / 100.0);
            }
        }
        out
    }
}

/// Waits until the process used less than `max_share` of one core over the last second (or
/// `timeout` passes); returns how long that took and whether it got idle.
pub async fn wait_idle(pid: u32, max_share: f64, timeout: Duration) -> Result<(Duration, bool)> {
    let tick_hz = tick_hz();
    let start = Instant::now();
    let mut samples: std::collections::VecDeque<(Instant, u64)> = Default::default();
    loop {
        let now = Instant::now();
        samples.push_back((now, cpu_ticks(pid)?));
        while samples.len() > 1 && now.duration_since(samples[0].0) > Duration::from_secs(1) {
            samples.pop_front();
        }
        let (t0, c0) = samples[0];
        let span = now.duration_since(t0).as_secs_f64();
        if span >= 0.9 {
            let share = (samples.back().map_or(c0, |s| s.1) - c0) as f64 / tick_hz / span;
            if share < max_share {
                return Ok((start.elapsed(), true));
            }
        }
        if start.elapsed() > timeout {
            return Ok((start.elapsed(), false));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The control plane's processes by name, from the PID files `e2e/cluster.sh` writes.
pub fn cluster_pids(env: &Env) -> Vec<(String, u32)> {
    ["etcd", "apiserver", "cert-manager", "step-ca"]
        .iter()
        .filter_map(|n| {
            let pid = std::fs::read_to_string(env.state.join(format!("{n}.pid"))).ok()?;
            Some((n.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}
