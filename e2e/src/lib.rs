//! Helpers for step-operator's end-to-end tests.
//!
//! The tests run against the real local control plane that `e2e/cluster.sh up` starts (etcd,
//! kube-apiserver, cert-manager's controllers and step-ca). They read its `env` contract; when a
//! variable is missing they fail with a message that says how to start the cluster, never skip.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub mod autocert;
pub mod chart;
pub mod faults;
pub mod fixtures;
pub mod node;
pub mod operator;
pub mod process;
pub mod tcp_proxy;

/// The `e2e/cluster.sh env` contract.
#[derive(Debug, Clone)]
pub struct Env {
    pub kubeconfig: PathBuf,
    pub user_kubeconfig: PathBuf,
    pub bin: PathBuf,
    pub state: PathBuf,
    pub step_ca_url: String,
    pub step_ca_root: PathBuf,
    pub step_provisioner: String,
    pub step_provisioner_kid: String,
    pub step_provisioner_password_file: PathBuf,
}

pub(crate) fn var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| {
        anyhow!(
            "{name} is not set: the e2e tests need the local control plane. \
             Run the tests inside the cluster's network namespace: `e2e/cluster.sh up`, then \
             `e2e/cluster.sh exec cargo test -p e2e` (or `make test`)"
        )
    })
}

fn existing(name: &str) -> Result<PathBuf> {
    let p = PathBuf::from(var(name)?);
    if !p.exists() {
        bail!(
            "{name}={} does not exist: is e2e/cluster.sh still up?",
            p.display()
        );
    }
    Ok(p)
}

impl Env {
    pub fn load() -> Result<Env> {
        install_crypto_provider();
        Ok(Env {
            kubeconfig: existing("KUBECONFIG")?,
            user_kubeconfig: existing("E2E_USER_KUBECONFIG")?,
            bin: existing("E2E_BIN")?,
            state: existing("E2E_STATE")?,
            step_ca_url: var("STEP_CA_URL")?,
            step_ca_root: existing("STEP_CA_ROOT")?,
            step_provisioner: var("STEP_PROVISIONER")?,
            step_provisioner_kid: var("STEP_PROVISIONER_KID")?,
            step_provisioner_password_file: existing("STEP_PROVISIONER_PASSWORD_FILE")?,
        })
    }

    /// An admin client for the local apiserver.
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// A client for `e2e-user`, an identity with no RBAC rights.
    pub async fn user_client(&self) -> Result<Client> {
        client_from(&self.user_kubeconfig).await
    }

    /// Path of one of the built upstream binaries (kubectl, step, step-ca, helm, ...).
    pub fn tool(&self, name: &str) -> Result<PathBuf> {
        let p = self.bin.join(name);
        if !p.exists() {
            bail!(
                "{} is missing from E2E_BIN: rebuild with e2e/build-infra.sh",
                p.display()
            );
        }
        Ok(p)
    }

    pub fn provisioner_password(&self) -> Result<String> {
        std::fs::read_to_string(&self.step_provisioner_password_file)
            .with_context(|| format!("reading {}", self.step_provisioner_password_file.display()))
    }

    pub fn root_pem(&self) -> Result<String> {
        std::fs::read_to_string(&self.step_ca_root)
            .with_context(|| format!("reading {}", self.step_ca_root.display()))
    }
}

pub fn install_crypto_provider() {
    // Both kube and the tests use ring; a second install attempt is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn client_from(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A namespace created for one test and deleted afterwards; unique names keep tests apart. With
/// the node (kube-controller-manager), `create` returns once the namespace's `default`
/// ServiceAccount exists, as pods are refused before; without it there is no namespace controller
/// and deletion leaves the namespace Terminating.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Result<TestNamespace> {
        Self::create_labelled(client, prefix, Default::default()).await
    }

    pub async fn create_labelled(
        client: &Client,
        prefix: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<TestNamespace> {
        let name = format!("{prefix}-{}", random_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        if std::env::var("E2E_NODE").as_deref() == Ok("1") {
            let accounts = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
                client.clone(),
                &name,
            );
            wait_for(
                &format!("kube-controller-manager to create the default ServiceAccount in {name}"),
                Duration::from_secs(30),
                async || Ok(accounts.get_opt("default").await?.map(|_| ())),
                async || "no ServiceAccount default yet".to_owned(),
            )
            .await?;
        }
        Ok(TestNamespace {
            name,
            client: client.clone(),
        })
    }

    pub async fn delete(self) -> Result<()> {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

pub fn random_suffix() -> String {
    random_letters(6)
}

/// `n` random lowercase letters: long enough (say 24) to make a junk token or password that
/// nothing else in a log contains by chance.
pub fn random_letters(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// Records a secret the tests used (a pod or ServiceAccount token, a one-time token, a
/// password), one per line in `$E2E_STATE/secrets/used-<pid>.txt` (mode 0600), so that
/// `e2e/check-secrets.sh` can look for each in the logs, Events and statuses after the run.
/// Returns the secret, for use in an expression.
pub fn record_secret<'a>(env: &Env, secret: &'a str) -> Result<&'a str> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // An empty line would make `grep -F -f` match everything; a newline would split it.
    if secret.trim().len() < 8 || secret.contains(['\n', '\r']) {
        bail!(
            "refusing to record a secret of {} bytes that is blank, shorter than 8 characters or spans lines",
            secret.len()
        );
    }
    let dir = env.state.join("secrets");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("used-{}.txt", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// Polls `check` until it returns `Ok(Some(value))` or `timeout` passes.
///
/// `Ok(None)` means "not yet". Any error ends the wait at once, with `what` and the current state
/// (the caller's `describe` closure) attached: a check that sees a terminal state (a Failed
/// request, an admitted pod that should have been denied) fails the test immediately instead of
/// costing the whole timeout and being reported as one. An error wrapped with [`retry`] is the
/// one exception: it is taken as "not yet" and shown as the last error on timeout. Wrap only an
/// error that is expected to be transient at that point, and say why at the call.
///
/// On timeout the error carries `what` and what `describe` reports (an `Ok(None)` cannot explain
/// itself).
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> Result<Option<T>>,
    describe: impl AsyncFnOnce() -> String,
) -> Result<T> {
    wait_for_every(what, timeout, Duration::from_millis(200), check, describe).await
}

/// [`wait_for`], looking every `every`: the bench looks every 20 ms where the moment a state is
/// seen is part of what it measures.
pub async fn wait_for_every<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
    describe: impl AsyncFnOnce() -> String,
) -> Result<T> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last_retried = None;
    // The poll clock: the first tick is at once; a slow check delays the next rather than
    // bunching them up.
    let mut poll = tokio::time::interval(every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) if e.downcast_ref::<Retry>().is_some() => last_retried = Some(e),
            Err(e) => {
                let seen = describe().await;
                return Err(e.context(format!(
                    "failed after {:?} while waiting for {what}; seen:\n{seen}",
                    started.elapsed()
                )));
            }
        }
        if Instant::now() >= deadline {
            let seen = describe().await;
            let err = last_retried
                .map(|e| format!("\nlast (retried) error: {e:#}"))
                .unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}; seen:\n{seen}{err}");
        }
    }
}

/// An error that [`wait_for`] retries instead of failing at once; see [`retry`].
#[derive(Debug)]
pub struct Retry(anyhow::Error);

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Retry {}

/// Marks `e` as transient for [`wait_for`]: the wait goes on, and the error is reported only if
/// the wait times out. For errors that are expected where they are used (an API call while the
/// apiserver restarts), never to hide an unexpected one.
pub fn retry(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Retry(e.into()))
}

/// Pretty-printed JSON of any object, for timeout reports.
pub fn dump<T: serde::Serialize>(obj: &T) -> String {
    serde_json::to_string_pretty(obj).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_fails_at_once_on_an_error() {
        let started = Instant::now();
        let mut calls = 0;
        let err = wait_for(
            "something",
            Duration::from_secs(60),
            async || -> Result<Option<()>> {
                calls += 1;
                bail!("the request turned Failed")
            },
            async || "the state seen".to_string(),
        )
        .await
        .expect_err("an error must end the wait");
        assert!(started.elapsed() < Duration::from_secs(5), "it waited");
        assert_eq!(calls, 1);
        let text = format!("{err:#}");
        assert!(text.contains("the request turned Failed"), "{text}");
        assert!(text.contains("the state seen"), "{text}");
        assert!(text.contains("waiting for something"), "{text}");
    }

    #[tokio::test]
    async fn wait_for_retries_only_marked_errors() {
        let mut calls = 0;
        let got = wait_for(
            "a value",
            Duration::from_secs(30),
            async || {
                calls += 1;
                if calls < 3 {
                    Err(retry(anyhow!("connection reset")))
                } else {
                    Ok(Some(calls))
                }
            },
            async || String::new(),
        )
        .await
        .expect("retried errors must not end the wait");
        assert_eq!(got, 3);

        let err = wait_for(
            "a value",
            Duration::from_millis(500),
            async || -> Result<Option<()>> { Err(retry(anyhow!("still down"))) },
            async || "nothing yet".to_string(),
        )
        .await
        .expect_err("a wait that only sees retried errors times out");
        let text = format!("{err:#}");
        assert!(text.contains("timed out"), "{text}");
        assert!(text.contains("still down"), "{text}");
        assert!(text.contains("nothing yet"), "{text}");
    }
}
