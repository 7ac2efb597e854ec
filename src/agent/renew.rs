//! `step-operator renew`: keep the certificate files fresh (the native sidecar).
//!
//! Loop: read the files; [`next_action`] decides. Before the renewal time, wait (or exit 0 on
//! SIGTERM/SIGINT). At the renewal time, renew over mTLS with the current certificate and key
//! (`POST /1.0/renew` on `STEP_CA_URL`, trusting `root.crt`) and replace `site.crt` (the key is
//! unchanged). When the files are missing or invalid, the certificate has expired or step-ca
//! refuses the renewal (4xx), bootstrap again with a new key ([`super::bootstrap::obtain`]).
//! Retryable failures are retried with backoff capped at a tenth of the remaining lifetime.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};

use super::bootstrap::{self, BootstrapClient};
use super::files::{self, CERT_MODE, Current, Invalid, SITE_CRT};
use super::{AgentArgs, AgentConfig};
use crate::pki::chain::{renew_at, verify_issued};
use crate::step;

/// Longest single wait: the files are re-checked at least this often (clock jumps, files
/// replaced by someone else).
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Shortest retry delay after a failed renewal.
pub const MIN_RETRY: Duration = Duration::from_secs(1);

/// What the renewer does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Wait until then, then renew.
    RenewAt(DateTime<Utc>),
    /// Renew now (the renewal time has passed, the certificate is still valid).
    RenewNow,
    /// Get a new certificate and key from the bootstrap flow.
    Rebootstrap,
}

/// The pure renewal decision. `jitter` in `[0, 1]` moves the renewal time earlier by up to 5% of
/// the lifetime (see [`renew_at`]).
pub fn next_action(now: DateTime<Utc>, current: Option<&Current>, jitter: f64) -> Action {
    let Some(c) = current else {
        return Action::Rebootstrap;
    };
    if c.not_after <= now {
        return Action::Rebootstrap;
    }
    let t = renew_at(c.not_before, c.not_after, jitter);
    if t <= now {
        Action::RenewNow
    } else {
        Action::RenewAt(t)
    }
}

/// Delay before retrying a renewal: 1 s, then doubling, capped at a tenth of the remaining
/// lifetime but never below 1 s.
pub fn retry_delay(previous: Option<Duration>, remaining: TimeDelta) -> Duration {
    let cap = remaining
        .to_std()
        .map(|r| r / 10)
        .unwrap_or(Duration::ZERO)
        .max(MIN_RETRY);
    previous
        .map_or(MIN_RETRY, |p| p.saturating_mul(2))
        .min(cap)
        .max(MIN_RETRY)
}

/// Why a renewal failed.
#[derive(Debug)]
enum RenewFailure {
    /// step-ca refused it: bootstrap again.
    Refused(String),
    /// Try again later.
    Retry(String),
}

/// The renewer's state between ticks.
pub struct Renewer {
    cfg: AgentConfig,
    /// The CA URL: `STEP_CA_URL`, else learnt from the last bootstrap.
    ca_url: Option<String>,
    /// Jitter drawn once per certificate (keyed by its notAfter), so the renewal time is stable.
    jitter: Option<(DateTime<Utc>, f64)>,
    previous_retry: Option<Duration>,
}

impl Renewer {
    pub fn new(cfg: AgentConfig) -> Self {
        Renewer {
            ca_url: cfg.ca_url.clone(),
            cfg,
            jitter: None,
            previous_retry: None,
        }
    }

    fn jitter_for(&mut self, cur: &Current) -> f64 {
        match self.jitter {
            Some((na, j)) if na == cur.not_after => j,
            _ => {
                let j = rand::random::<f64>();
                self.jitter = Some((cur.not_after, j));
                let t = renew_at(cur.not_before, cur.not_after, j);
                tracing::info!(
                    "renew: certificate for {} valid until {}; next renewal at {}",
                    cur.subject,
                    cur.not_after.to_rfc3339(),
                    t.to_rfc3339()
                );
                j
            }
        }
    }

    /// One step of the loop; returns how long to wait before the next one. Errors only for
    /// problems no retry can fix.
    pub async fn tick(&mut self) -> anyhow::Result<Duration> {
        let now = Utc::now();
        let current = match files::check_current(&self.cfg.certs_dir) {
            Ok(c) => Some(c),
            Err(Invalid::Missing(name)) => {
                tracing::info!("renew: {name} is missing; bootstrapping");
                None
            }
            Err(e) => {
                tracing::warn!("renew: the files are unusable ({e}); bootstrapping");
                None
            }
        };
        let jitter = current.as_ref().map_or(0.0, |c| self.jitter_for(c));
        match next_action(now, current.as_ref(), jitter) {
            Action::RenewAt(t) => Ok((t - now).to_std().unwrap_or(Duration::ZERO).min(MAX_WAIT)),
            Action::Rebootstrap => {
                if let Some(c) = &current {
                    tracing::warn!(
                        "renew: the certificate for {} expired at {}; bootstrapping a new one",
                        c.subject,
                        c.not_after.to_rfc3339()
                    );
                }
                self.rebootstrap().await?;
                Ok(Duration::ZERO)
            }
            Action::RenewNow => {
                let Some(cur) = current else {
                    return Ok(Duration::ZERO);
                };
                match self.renew(&cur).await {
                    Ok(not_after) => {
                        self.previous_retry = None;
                        tracing::info!(
                            "renew: renewed the certificate for {}, notAfter {}",
                            cur.subject,
                            not_after.to_rfc3339()
                        );
                        Ok(Duration::ZERO)
                    }
                    Err(RenewFailure::Refused(msg)) => {
                        tracing::warn!(
                            "renew: step-ca refused the renewal ({msg}); bootstrapping a new certificate and key"
                        );
                        self.rebootstrap().await?;
                        Ok(Duration::ZERO)
                    }
                    Err(RenewFailure::Retry(msg)) => {
                        let d = retry_delay(self.previous_retry, cur.not_after - Utc::now());
                        self.previous_retry = Some(d);
                        tracing::warn!(
                            "renew: renewal failed ({msg}), retrying in {}",
                            super::backoff::display(d)
                        );
                        Ok(d)
                    }
                }
            }
        }
    }

    async fn rebootstrap(&mut self) -> anyhow::Result<()> {
        let issued = bootstrap::obtain(&self.cfg).await?;
        bootstrap::write_issued(&self.cfg, &issued)?;
        if self.cfg.ca_url.is_none() {
            self.ca_url = Some(issued.ca_url.clone());
        }
        self.previous_retry = None;
        Ok(())
    }

    async fn ca_url(&mut self) -> anyhow::Result<String> {
        if let Some(u) = &self.ca_url {
            return Ok(u.clone());
        }
        // No STEP_CA_URL: ask the webhook (the token it mints for us goes unused).
        let resp = BootstrapClient::new(&self.cfg)?.fetch().await;
        self.ca_url = Some(resp.ca_url.clone());
        Ok(resp.ca_url)
    }

    /// `POST /1.0/renew` over mTLS and replace `site.crt`. Returns the new notAfter.
    async fn renew(&mut self, cur: &Current) -> Result<DateTime<Utc>, RenewFailure> {
        let url = self
            .ca_url()
            .await
            .map_err(|e| RenewFailure::Retry(format!("{e:#}")))?;
        let client = step::Client::new(&url, Some(cur.root_pem.as_bytes()), self.cfg.timeout)
            .map_err(|e| RenewFailure::Retry(e.to_string()))?;
        let identity = step::ClientIdentity {
            cert_chain_pem: cur.chain_pem.clone(),
            key_pem: cur.key_pem.clone(),
        };
        let resp = client.renew(&identity).await.map_err(|e| {
            let refused = matches!(e, step::Error::InvalidIdentity { .. })
                || e.http_status()
                    .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429);
            if refused {
                RenewFailure::Refused(e.to_string())
            } else {
                RenewFailure::Retry(e.to_string())
            }
        })?;
        let issued =
            verify_issued(&resp.cert_chain, &cur.public_key_der, Utc::now()).map_err(|e| {
                RenewFailure::Retry(format!("step-ca returned an unusable certificate: {e}"))
            })?;
        files::write_atomic(
            &self.cfg.certs_dir,
            SITE_CRT,
            issued.certificate_pem.as_bytes(),
            CERT_MODE,
            self.cfg.owner,
        )
        .map_err(|e| RenewFailure::Retry(e.to_string()))?;
        Ok(issued.not_after)
    }
}

/// Runs the renewer until `shutdown` completes (then returns Ok) or an unfixable error.
pub async fn run_until(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut renewer = Renewer::new(cfg);
    tokio::pin!(shutdown);
    loop {
        let wait = tokio::select! {
            r = renewer.tick() => r?,
            _ = &mut shutdown => break,
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("renew: shutting down");
    Ok(())
}

/// Entry point of `step-operator renew`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let cfg = AgentConfig::from_args(&args).context("invalid configuration")?;
    run_until(cfg, crate::controller::shutdown_signal()).await
}
