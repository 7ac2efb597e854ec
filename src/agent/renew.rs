//! `step-operator renew`: keep the certificate files fresh (the native sidecar).
//!
//! Loop: read the files; [`next_action`] decides. Before the renewal time, wait (or exit 0 on
//! SIGTERM/SIGINT). At the renewal time, renew over mTLS with the current certificate and key
//! (`POST /1.0/renew` on `STEP_CA_URL`, trusting `root.crt`) and replace `site.crt` (the key is
//! unchanged). When the files are missing or invalid, the certificate has expired or step-ca
//! refuses the renewal for good ([`after_renewal_error`]), bootstrap again with a new key through
//! the same `/bootstrap` flow as the init container ([`super::bootstrap::obtain`]).
//! Retryable failures are retried with backoff capped at a tenth of the remaining lifetime.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use tracing::Instrument as _;

use super::bootstrap::{self, BootstrapClient};
use super::files::{self, CERT_MODE, Current, Invalid, SITE_CRT};
use super::{AgentArgs, AgentConfig};
use crate::backoff::{self, Failure, RetryPolicy};
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

/// Delay before retrying a renewal: the shared transient backoff from 1 s, doubling, capped at a
/// tenth of the remaining lifetime (so a certificate about to expire is retried often enough to
/// be renewed in time) but never below 1 s.
pub fn retry_delay(previous: Option<Duration>, remaining: TimeDelta) -> Duration {
    let cap = remaining
        .to_std()
        .map(|r| r / 10)
        .unwrap_or(Duration::ZERO)
        .max(MIN_RETRY);
    let policy = RetryPolicy {
        transient_initial: MIN_RETRY,
        transient_max: cap,
        ..RetryPolicy::default()
    };
    backoff::next_delay(&policy, previous, Failure::Transient)
}

/// What a failed `POST /1.0/renew` means for the renewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRenewalError {
    /// step-ca refused for good: the provisioner has renewal disabled (`disableRenewal`), the
    /// certificate expired (without `allowRenewalAfterExpiry`) or was revoked (all 401), or the
    /// request is forbidden or invalid (other 4xx), or the files cannot serve as a client
    /// identity. Retrying the same renewal cannot succeed: get a fresh certificate and key
    /// through `/bootstrap`, with the projected token, as the init container did.
    Rebootstrap,
    /// Transport failures, timeouts, 408, 429 and 5xx: the same renewal may succeed later.
    Retry,
}

/// The pure decision over a renewal error (see [`AfterRenewalError`]).
pub fn after_renewal_error(e: &step::Error) -> AfterRenewalError {
    let refused = matches!(e, step::Error::InvalidIdentity { .. })
        || e.http_status()
            .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429);
    if refused {
        AfterRenewalError::Rebootstrap
    } else {
        AfterRenewalError::Retry
    }
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
                    subject = %cur.subject,
                    not_after = %cur.not_after.to_rfc3339(),
                    renew_at = %t.to_rfc3339(),
                    "Next renewal scheduled"
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
                tracing::info!(file = %name, "A certificate file is missing; bootstrapping");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "The files are unusable; bootstrapping");
                None
            }
        };
        let jitter = current.as_ref().map_or(0.0, |c| self.jitter_for(c));
        match (next_action(now, current.as_ref(), jitter), current) {
            (Action::RenewAt(t), _) => {
                Ok((t - now).to_std().unwrap_or(Duration::ZERO).min(MAX_WAIT))
            }
            (Action::RenewNow, Some(cur)) => self.renew_now(&cur).await,
            (Action::RenewNow, None) => Ok(Duration::ZERO),
            (Action::Rebootstrap, current) => {
                if let Some(c) = &current {
                    tracing::warn!(
                        subject = %c.subject,
                        not_after = %c.not_after.to_rfc3339(),
                        "The certificate expired; bootstrapping a new one"
                    );
                }
                self.rebootstrap().await?;
                Ok(Duration::ZERO)
            }
        }
    }

    /// Renews `cur` now; bootstraps a new certificate and key when step-ca refuses, and
    /// returns the delay before a retry when the renewal failed otherwise.
    async fn renew_now(&mut self, cur: &Current) -> anyhow::Result<Duration> {
        match self.renew(cur).await {
            Ok(not_after) => {
                self.previous_retry = None;
                super::reload::after_new_files(self.cfg.reload.as_ref());
                tracing::info!(
                    subject = %cur.subject,
                    not_after = %not_after.to_rfc3339(),
                    "Renewed the certificate"
                );
                Ok(Duration::ZERO)
            }
            Err(RenewFailure::Refused(msg)) => {
                tracing::warn!(
                    error = %msg,
                    "step-ca refused the renewal; bootstrapping a new certificate and key"
                );
                self.rebootstrap().await?;
                Ok(Duration::ZERO)
            }
            Err(RenewFailure::Retry(msg)) => {
                let d = retry_delay(self.previous_retry, cur.not_after - Utc::now());
                self.previous_retry = Some(d);
                tracing::warn!(error = %msg, retry_in = %backoff::display(d), "Renewal failed; retrying");
                Ok(d)
            }
        }
    }

    async fn rebootstrap(&mut self) -> anyhow::Result<()> {
        let issued = bootstrap::obtain(&self.cfg).await?;
        bootstrap::write_issued(&self.cfg, &issued)?;
        super::reload::after_new_files(self.cfg.reload.as_ref());
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
        let resp = client
            .renew(&identity)
            .await
            .map_err(|e| match after_renewal_error(&e) {
                AfterRenewalError::Rebootstrap => RenewFailure::Refused(e.to_string()),
                AfterRenewalError::Retry => RenewFailure::Retry(e.to_string()),
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
    tracing::info!("Shutting down");
    Ok(())
}

/// Entry point of `step-operator renew`. Every line it logs is in a `renew` span naming the
/// certificate (`certificate`: the span's own `name` is taken in JSON logs) and its issuer.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let cfg = AgentConfig::from_args(&args).context("invalid configuration")?;
    let span = tracing::info_span!(
        "renew",
        certificate = cfg.log_name(),
        issuer = cfg.log_issuer()
    );
    run_until(cfg, crate::signal::shutdown_signal())
        .instrument(span)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fake::Fake;
    use zeroize::Zeroizing;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn current(not_before: &str, not_after: &str) -> Current {
        Current {
            chain_pem: String::new(),
            key_pem: Zeroizing::new(String::new()),
            root_pem: String::new(),
            subject: "CN=app".into(),
            not_before: at(not_before),
            not_after: at(not_after),
            public_key_der: vec![],
        }
    }

    #[test]
    fn next_actions() {
        // 30 days from 2026-01-01: renewal at 2026-01-21 (jitter 0) or 2026-01-19T12:00 (jitter 1).
        let c = current("2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z");
        let cases: &[(&str, Option<&Current>, f64, Action)] = &[
            ("2026-01-02T00:00:00Z", None, 0.0, Action::Rebootstrap),
            (
                "2026-01-02T00:00:00Z",
                Some(&c),
                0.0,
                Action::RenewAt(at("2026-01-21T00:00:00Z")),
            ),
            (
                "2026-01-02T00:00:00Z",
                Some(&c),
                1.0,
                Action::RenewAt(at("2026-01-19T12:00:00Z")),
            ),
            (
                "2026-01-02T00:00:00Z",
                Some(&c),
                0.5,
                Action::RenewAt(at("2026-01-20T06:00:00Z")),
            ),
            ("2026-01-20T00:00:00Z", Some(&c), 1.0, Action::RenewNow),
            ("2026-01-21T00:00:00Z", Some(&c), 0.0, Action::RenewNow),
            ("2026-01-30T23:59:59Z", Some(&c), 0.0, Action::RenewNow),
            ("2026-01-31T00:00:00Z", Some(&c), 0.0, Action::Rebootstrap),
            ("2026-03-01T00:00:00Z", Some(&c), 0.0, Action::Rebootstrap),
            // Before notBefore (clock skew): wait.
            (
                "2025-12-31T00:00:00Z",
                Some(&c),
                0.0,
                Action::RenewAt(at("2026-01-21T00:00:00Z")),
            ),
        ];
        for (now, cur, jitter, want) in cases {
            assert_eq!(next_action(at(now), *cur, *jitter), *want, "{now} {jitter}");
        }
    }

    #[test]
    fn retry_delays() {
        let s = Duration::from_secs;
        let h = TimeDelta::hours;
        let cases: &[(Option<Duration>, TimeDelta, Duration)] = &[
            (None, h(8), s(1)),
            (Some(s(1)), h(8), s(2)),
            (Some(s(1024)), h(8), s(2048)),
            (Some(s(4000)), h(8), s(2880)),
            // A tenth of 60 s remaining.
            (Some(s(4)), TimeDelta::seconds(60), s(6)),
            (Some(s(8)), TimeDelta::seconds(60), s(6)),
            // Never below 1 s, even when (almost) expired.
            (Some(s(8)), TimeDelta::seconds(5), s(1)),
            (None, TimeDelta::seconds(-5), s(1)),
            (Some(Duration::MAX), h(1), s(360)),
        ];
        for (prev, remaining, want) in cases {
            assert_eq!(
                retry_delay(*prev, *remaining),
                *want,
                "{prev:?} {remaining}"
            );
        }
    }

    fn read(dir: &std::path::Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[tokio::test]
    async fn bootstraps_then_renews_over_mtls() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake.config(dir.path());
        let certs = cfg.certs_dir.clone();
        let mut r = Renewer::new(cfg);
        // No files: bootstrap. The fake backdates, so the certificate is due at once.
        assert_eq!(r.tick().await.unwrap(), Duration::ZERO);
        let key = read(&certs, files::SITE_KEY);
        let crt = read(&certs, SITE_CRT);
        assert_eq!(fake.log().sign_otts, ["ott-1"]);
        // Due: renew over mTLS with the CA URL learnt from the bootstrap.
        assert_eq!(r.tick().await.unwrap(), Duration::ZERO);
        assert_eq!(fake.log().renews, 1);
        assert_eq!(read(&certs, files::SITE_KEY), key, "renewal keeps the key");
        assert_ne!(read(&certs, SITE_CRT), crt, "renewal replaces site.crt");
        assert!(files::read_current(&certs).is_some());
        assert_eq!(fake.log().auth.len(), 1, "no second bootstrap");
    }

    #[tokio::test]
    async fn renewal_authenticates_with_the_current_certificate() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = fake.config(dir.path());
        // STEP_CA_URL wins over the bootstrap's caUrl; this listener requires a client
        // certificate issued under the fake root.
        cfg.ca_url = Some(fake.mtls_url.clone());
        let certs = cfg.certs_dir.clone();
        let mut r = Renewer::new(cfg);
        r.tick().await.unwrap();
        let crt = read(&certs, SITE_CRT);
        assert_eq!(r.tick().await.unwrap(), Duration::ZERO);
        assert_eq!(fake.log().renews, 1);
        assert_ne!(read(&certs, SITE_CRT), crt);

        // Without a usable client certificate the handshake fails: the files are replaced by an
        // unrelated self-signed certificate and key, which the mTLS listener rejects.
        let key =
            crate::pki::keys::GeneratedKey::generate(crate::pki::keys::KeyAlgorithm::EcdsaP256)
                .unwrap();
        let mut stranger = crate::agent::files::tests::leaf_files(&key, -2, 1);
        stranger.root_crt = fake.root_pem.clone();
        files::write_all(&certs, &stranger, 0o600, None).unwrap();
        let wait = r.tick().await.unwrap();
        assert_eq!(
            wait,
            Duration::from_secs(1),
            "a TLS failure is retried, not refused"
        );
        assert_eq!(fake.log().renews, 1);
    }

    #[test]
    fn renewal_errors() {
        use AfterRenewalError::*;
        let status = |status| step::Error::Status {
            status,
            message: "m".into(),
            action: "renew the certificate",
        };
        let cases = [
            // disableRenewal, expired without allowRenewalAfterExpiry, revoked: all 401.
            (status(401), Rebootstrap),
            (status(403), Rebootstrap),
            (status(400), Rebootstrap),
            (status(404), Rebootstrap),
            (status(408), Retry),
            (status(429), Retry),
            (status(500), Retry),
            (status(503), Retry),
            (
                step::Error::InvalidIdentity { detail: "d".into() },
                Rebootstrap,
            ),
            (
                step::Error::Timeout {
                    action: "renew the certificate",
                    url: "https://ca".into(),
                    timeout: Duration::from_secs(1),
                },
                Retry,
            ),
            (
                step::Error::Decode {
                    action: "renew the certificate",
                    detail: "d".into(),
                },
                Retry,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(after_renewal_error(&e), want, "{e}");
        }
    }

    /// A refused renewal is not retried: the renewer bootstraps again through the webhook, with
    /// a new token and a new key, and then renews that certificate as usual.
    #[tokio::test]
    async fn refused_renewal_rebootstraps_with_a_new_key() {
        for refusal in [401, 403] {
            let fake = Fake::start().await;
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = fake.config(dir.path());
            cfg.ca_url = Some(fake.mtls_url.clone());
            let certs = cfg.certs_dir.clone();
            let mut r = Renewer::new(cfg);
            r.tick().await.unwrap();
            let key = read(&certs, files::SITE_KEY);
            fake.log().renew_status = refusal;
            assert_eq!(r.tick().await.unwrap(), Duration::ZERO);
            assert_eq!(fake.log().renews, 1);
            assert_eq!(fake.log().sign_otts, ["ott-1", "ott-2"]);
            assert_eq!(fake.log().auth.len(), 2, "a second /bootstrap");
            assert_ne!(read(&certs, files::SITE_KEY), key, "a new key");
            assert!(files::read_current(&certs).is_some());
            fake.log().renew_status = 201;
            assert_eq!(r.tick().await.unwrap(), Duration::ZERO);
            assert_eq!(fake.log().renews, 2, "the new certificate renews");
        }
    }

    /// An expired certificate is not even sent for renewal: the renewer bootstraps at once.
    #[tokio::test]
    async fn an_expired_certificate_is_replaced_through_bootstrap() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake.config(dir.path());
        let certs = cfg.certs_dir.clone();
        let key =
            crate::pki::keys::GeneratedKey::generate(crate::pki::keys::KeyAlgorithm::EcdsaP256)
                .unwrap();
        let mut expired = crate::agent::files::tests::leaf_files(&key, -3, -1);
        expired.root_crt = fake.root_pem.clone();
        files::write_all(&certs, &expired, 0o600, None).unwrap();
        let mut r = Renewer::new(cfg);
        assert_eq!(r.tick().await.unwrap(), Duration::ZERO);
        assert_eq!(fake.log().renews, 0);
        assert_eq!(fake.log().sign_otts, ["ott-1"]);
        let cur = files::read_current(&certs).unwrap();
        assert!(cur.not_after > Utc::now());
    }

    #[tokio::test]
    async fn retryable_renewal_failure_backs_off() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake.config(dir.path());
        let certs = cfg.certs_dir.clone();
        let mut r = Renewer::new(cfg);
        r.tick().await.unwrap();
        let crt = read(&certs, SITE_CRT);
        fake.log().renew_status = 503;
        assert_eq!(r.tick().await.unwrap(), Duration::from_secs(1));
        assert_eq!(r.tick().await.unwrap(), Duration::from_secs(2));
        assert_eq!(read(&certs, SITE_CRT), crt);
        assert_eq!(fake.log().sign_otts.len(), 1, "no re-bootstrap on 5xx");
        fake.log().renew_status = 201;
        assert_eq!(r.tick().await.unwrap(), Duration::ZERO);
        assert_ne!(read(&certs, SITE_CRT), crt);
        assert_eq!(r.previous_retry, None);
    }

    #[tokio::test]
    async fn waits_for_the_renewal_time_and_stops_on_shutdown() {
        let fake = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = fake.config(dir.path());
        fake.log().duration = Some("24h".into());
        let mut r = Renewer::new(cfg.clone());
        r.tick().await.unwrap();
        // Valid for 24h: the next step is a capped wait, with no request.
        assert_eq!(r.tick().await.unwrap(), MAX_WAIT);
        assert_eq!(fake.log().renews, 0);

        // The clock is paused only now: the fake CA above is reached over real sockets, whose
        // timeouts a paused clock would fire as soon as the runtime idles.
        tokio::time::pause();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_until(cfg, async {
            let _ = rx.await;
        }));
        // Half of the capped wait passes: the task has run its first step and sleeps.
        tokio::time::advance(MAX_WAIT / 2).await;
        assert!(!task.is_finished(), "run_until ended on its own");
        assert_eq!(fake.log().renews, 0);

        // Shutdown interrupts the sleep: the task ends without the paused clock moving on. Had
        // it ignored the signal, the runtime would advance the clock to the 1 s timeout (before
        // the sleep's end) and the timeout would fire.
        let signalled = tokio::time::Instant::now();
        tx.send(()).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("run_until must stop at once when shut down while it waits")
            .unwrap();
        assert_eq!(signalled.elapsed(), Duration::ZERO);
        assert!(res.is_ok(), "{res:?}");
        assert_eq!(fake.log().renews, 0);
        assert_eq!(fake.log().sign_otts.len(), 1, "no bootstrap while waiting");
    }
}
