//! The Kubernetes API clients of the controller and the webhook, built in one place with
//! timeouts, so that an apiserver connection that goes silent fails a call instead of holding a
//! reconcile worker (or a webhook task) forever.
//!
//! kube-client applies `read_timeout` to every read on a connection, and a watch is one long
//! response that can stay silent for up to its server-side timeout (290 s). So there are two
//! clients: one for request/response calls, whose reads time out after `--kube-timeout`; and one
//! for watches, without a read timeout: kube-runtime's watcher already gives up on a watch
//! silent for longer than its server-side timeout plus a margin, and reconnects.

use std::time::Duration;

use anyhow::Context as _;
use kube::{Client, Config};

/// What a client is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// GET, LIST, PATCH, CREATE, TokenReview: each read must come within the timeout.
    Calls,
    /// Long watch responses; silence is normal, the watcher's idle timeout catches a dead one.
    Watches,
}

/// `config` with the timeouts for `use_`: connecting and sending take at most `timeout`; for
/// calls, so does every wait for the next bytes of a response, counted from when the request
/// was sent (not from when its pooled connection went idle).
pub fn with_timeouts(mut config: Config, use_: Use, timeout: Duration) -> Config {
    config.connect_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    match use_ {
        Use::Calls => {
            config.read_timeout = Some(timeout);
            config.reset_reader_on_write = true;
        }
        Use::Watches => {
            config.read_timeout = None;
        }
    }
    config
}

/// A client for `use_` from `config`.
pub fn client(config: Config, use_: Use, timeout: Duration) -> anyhow::Result<Client> {
    Client::try_from(with_timeouts(config, use_, timeout))
        .context("building the Kubernetes API client")
}

/// The in-cluster configuration (or KUBECONFIG), and a client for `use_` from it.
/// The two clients every role uses: one for calls (reads time out) and one for watches.
pub async fn connect_both(timeout: Duration) -> anyhow::Result<(Client, Client)> {
    let (config, calls) = connect(Use::Calls, timeout).await?;
    let watches = client(config, Use::Watches, timeout)?;
    Ok((calls, watches))
}

pub async fn connect(use_: Use, timeout: Duration) -> anyhow::Result<(Config, Client)> {
    let config = Config::infer()
        .await
        .context("reading the Kubernetes API configuration (in-cluster config or KUBECONFIG)")?;
    let client = client(config.clone(), use_, timeout)?;
    Ok((config, client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use std::time::Instant;

    fn base() -> Config {
        Config::new("http://127.0.0.1:1".parse().unwrap_or_default())
    }

    #[test]
    fn timeouts_by_use() {
        let t = Duration::from_secs(7);
        // (use, read timeout, reset reader on write)
        for (use_, read, reset) in [(Use::Calls, Some(t), true), (Use::Watches, None, false)] {
            let c = with_timeouts(base(), use_, t);
            assert_eq!(c.connect_timeout, Some(t), "{use_:?}");
            assert_eq!(c.write_timeout, Some(t), "{use_:?}");
            assert_eq!(c.read_timeout, read, "{use_:?}");
            assert_eq!(c.reset_reader_on_write, reset, "{use_:?}");
        }
    }

    /// Security review L5: an apiserver that accepts the connection and never answers fails the
    /// call within the timeout.
    #[tokio::test]
    async fn a_silent_apiserver_fails_the_call_within_the_timeout() {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("binding a listener: {e}"),
        };
        let addr = listener.local_addr().ok();
        // Accepts and holds every connection, reading nothing and answering nothing.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let url = format!("http://{}", addr.map(|a| a.to_string()).unwrap_or_default());
        let config = Config::new(url.parse().unwrap_or_default());
        let timeout = Duration::from_millis(500);
        let client = match client(config, Use::Calls, timeout) {
            Ok(c) => c,
            Err(e) => panic!("{e:#}"),
        };
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let started = Instant::now();
        // The outer bound only keeps a regression from hanging the test run.
        let outcome = tokio::time::timeout(Duration::from_secs(30), api.get("x")).await;
        let elapsed = started.elapsed();
        silent.abort();
        match outcome {
            Ok(Err(e)) => assert!(
                elapsed < Duration::from_secs(10),
                "the call failed ({e}) but only after {elapsed:?}"
            ),
            Ok(Ok(cm)) => panic!("a silent server answered {cm:?}"),
            Err(_) => panic!("the call was still waiting after 30s (timeout {timeout:?})"),
        }
    }
}
