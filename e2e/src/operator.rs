//! step-operator itself as a child process of the test binary.
//!
//! Each process runs under a small bash supervisor that stops it when the test binary exits (the
//! test harness has no teardown hook), and its PID is saved as `$E2E_STATE/extra-*.pid` so that
//! `e2e/cluster.sh down` stops it too. Logs go to `$E2E_STATE/logs/<name>.log` (other programs':
//! `$E2E_STATE/peer-logs/`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::{Env, random_suffix, wait_for};

/// Path of the step-operator binary under test.
pub fn binary() -> Result<PathBuf> {
    let path = match std::env::var_os("STEP_OPERATOR_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/step-operator"),
    };
    if !path.exists() {
        bail!(
            "step-operator binary {} is missing: run `cargo build --bin step-operator` (make test does) or set STEP_OPERATOR_BIN",
            path.display()
        );
    }
    Ok(path)
}

pub struct Process {
    pub name: String,
    pub log: PathBuf,
    pub admin_port: u16,
    child: Child,
    pid_file: PathBuf,
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Process {
    /// Starts `step-operator <args>` with extra environment variables.
    pub fn start(env: &Env, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<Process> {
        Self::spawn(env, name, &binary()?, args, envs, "logs")
    }

    /// Starts another program (step-issuer, cert-manager's controllers, a second step-ca) the
    /// same way: supervised, stopped by `cluster.sh down` at the latest. Its log goes to
    /// `$E2E_STATE/peer-logs/`: `logs/` is step-operator's alone, which check-secrets.sh searches
    /// for secrets (step-ca, for one, logs the tokens it is given).
    pub fn start_program(
        env: &Env,
        name: &str,
        bin: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Process> {
        Self::spawn(env, name, bin, args, envs, "peer-logs")
    }

    fn spawn(
        env: &Env,
        name: &str,
        bin: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log_dir: &str,
    ) -> Result<Process> {
        let name = format!("{name}-{}", random_suffix());
        let logs = env.state.join(log_dir);
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)?;
        let admin_port = free_port()?;
        let admin = format!("127.0.0.1:{admin_port}");
        // The supervisor exits (and stops the child) when the test binary is gone.
        let script = r#"parent=$1; shift; "$@" & c=$!
            trap 'kill -TERM $c 2>/dev/null' TERM INT
            while kill -0 "$parent" 2>/dev/null && kill -0 "$c" 2>/dev/null; do sleep 0.5; done
            kill -TERM $c 2>/dev/null; wait $c"#;
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .arg("supervisor")
            .arg(std::process::id().to_string())
            .arg(bin)
            .args(args)
            .env("KUBECONFIG", &env.kubeconfig)
            .env("STEP_OPERATOR_ADMIN_ADDR", &admin)
            .env("RUST_LOG", "info,step_operator=debug,kube=warn")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid_file = env.state.join(format!("extra-{name}.pid"));
        std::fs::write(&pid_file, child.id().to_string())?;
        Ok(Process {
            name,
            log,
            admin_port,
            child,
            pid_file,
        })
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure reports.
    pub fn log_tail(&self) -> String {
        let logs = self.logs();
        let lines: Vec<_> = logs.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Peak resident memory (`VmHWM`) of step-operator itself, the supervisor's child, in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let supervisor = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))?;
        let pid = children
            .split_whitespace()
            .next()
            .with_context(|| format!("{} has no process", self.name))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM in /proc/{pid}/status"))
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let url = self.admin_url("/readyz");
        let log = self.log.clone();
        wait_for(
            &format!("{} /readyz", self.name),
            timeout,
            async || {
                Ok(http_get(&url)
                    .await
                    .ok()
                    .filter(|(s, _)| *s == 200)
                    .map(|_| ()))
            },
            async || std::fs::read_to_string(&log).unwrap_or_default(),
        )
        .await
    }

    /// SIGTERM (through the supervisor), then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.pid_file);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }

    /// PID of step-operator itself (the supervisor's child), for fault tests that SIGKILL it.
    pub fn operator_pid(&self) -> Option<u32> {
        let id = self.child.id();
        std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// SIGKILL to step-operator itself: no graceful shutdown, no lease release.
    pub fn kill_hard(&mut self) {
        if let Some(pid) = self.operator_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.0 GET on loopback (admin endpoints), returning status and body.
pub async fn http_get(url: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The controller shared by the tests of one test binary. It runs with leader election on a
/// fixed Lease, so the controller of the previous test binary (stopped when that binary exits)
/// hands over instead of overlapping with this one.
pub fn shared_controller(env: &Env) -> Result<&'static str> {
    static SHARED: OnceLock<std::sync::Mutex<Option<Process>>> = OnceLock::new();
    let slot = SHARED.get_or_init(|| std::sync::Mutex::new(None));
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        let p = Process::start(
            env,
            "controller",
            &[
                "controller",
                "--leader-elect=true",
                "--lease-name",
                "step-operator-e2e-shared",
                "--lease-duration",
                "4s",
                "--cluster-resource-namespace",
                CLUSTER_RESOURCE_NAMESPACE,
                "--max-retry-duration",
                "3m",
                // The tests of a changed or deleted password Secret expect it to be noticed at
                // once; issuer_rechecks covers the default (no Secret watch).
                "--watch-secrets=true",
            ],
            &[("POD_NAMESPACE", "default")],
        )?;
        let _ = SHARED_LOG.set(p.log.display().to_string());
        let _ = SHARED_READYZ.set(p.admin_url("/readyz"));
        *guard = Some(p);
    }
    Ok(SHARED_LOG.get().map(String::as_str).unwrap_or(""))
}

/// The shared controller's `/metrics` text.
pub async fn shared_controller_metrics() -> Result<String> {
    let readyz = SHARED_READYZ
        .get()
        .context("the shared controller has not been started")?;
    let (code, body) = http_get(&readyz.replace("/readyz", "/metrics")).await?;
    anyhow::ensure!(code == 200, "/metrics answered {code}: {body}");
    Ok(body)
}

/// The value of `series` (its name and labels as exported, e.g.
/// `step_operator_issuers_ready{kind="StepIssuer"}`) in a Prometheus text exposition; `None` when
/// it has no such line.
pub fn metric_value(text: &str, series: &str) -> Result<Option<f64>> {
    let Some(line) = text
        .lines()
        .find(|l| l.rsplit_once(' ').map(|(s, _)| s) == Some(series))
    else {
        return Ok(None);
    };
    let value = line.rsplit(' ').next().and_then(|v| v.parse().ok());
    value
        .map(Some)
        .with_context(|| format!("unreadable metric line {line:?}"))
}

static SHARED_LOG: OnceLock<String> = OnceLock::new();
static SHARED_READYZ: OnceLock<String> = OnceLock::new();

/// [`shared_controller`], once this binary's controller holds the lease and its watches have
/// listed. The previous test binary's controller hands the lease over while this binary already
/// runs; a test that stops a shared component (step-ca) must not do so before this controller has
/// taken over, or the first check this controller makes meets the outage.
pub async fn shared_controller_leading(env: &Env) -> Result<String> {
    let log = shared_controller(env)?.to_string();
    let readyz = SHARED_READYZ
        .get()
        .cloned()
        .context("the shared controller has no admin address")?;
    wait_for(
        "the shared controller to lead and list",
        Duration::from_secs(60),
        async || {
            let leads = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Became the leader");
            let ready = http_get(&readyz).await.is_ok_and(|(s, _)| s == 200);
            Ok((leads && ready).then_some(()))
        },
        async || std::fs::read_to_string(&log).unwrap_or_default(),
    )
    .await?;
    Ok(log)
}

/// Where cluster issuers' password Secrets live in the tests.
pub const CLUSTER_RESOURCE_NAMESPACE: &str = "step-operator-e2e";
