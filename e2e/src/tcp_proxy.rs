//! A TCP proxy on loopback in front of the real step-ca, that a test can switch between passing
//! traffic through, refusing it, and swallowing it (a CA that accepts connections and never
//! answers). TLS passes through untouched: the issuer still talks to step-ca itself, and step-ca
//! ignores the port of a token's audience, so `https://127.0.0.1:<proxy port>` is a valid CA URL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards bytes both ways.
    Forward,
    /// Closes every connection at once (existing ones too).
    Refuse,
    /// Keeps connections open and forwards nothing (existing ones stop too): a hanging CA.
    Blackhole,
}

pub struct TcpProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) to `target`, forwarding.
    pub async fn start(target: SocketAddr) -> Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(Mode::Forward);
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(client, target, rx.clone()));
            }
        });
        Ok(TcpProxy {
            addr,
            mode,
            accepted,
            task,
        })
    }

    /// The proxy for the step-ca at `url` (`https://127.0.0.1:<port>`), and the CA URL through it.
    pub async fn for_url(url: &str) -> Result<(TcpProxy, String)> {
        let hostport = url
            .strip_prefix("https://")
            .context("the CA URL is not https://")?
            .trim_end_matches('/');
        let target: SocketAddr = hostport
            .parse()
            .with_context(|| format!("the CA URL {url} is not https://<ip>:<port>"))?;
        let proxy = TcpProxy::start(target).await?;
        let through = format!("https://{}", proxy.addr);
        Ok((proxy, through))
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // A connection accepted while blackholed waits, silent, until the mode changes.
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Forward => break,
            Mode::Refuse => return,
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
        }
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() { return; }
                let now = *mode.borrow_and_update();
                match now {
                    Mode::Forward => {}
                    Mode::Refuse => return,
                    // Hold both sockets open and forward nothing, until the mode changes again.
                    Mode::Blackhole => loop {
                        if mode.changed().await.is_err() { return; }
                        let now = *mode.borrow_and_update();
                        match now {
                            Mode::Forward => break,
                            Mode::Refuse => return,
                            Mode::Blackhole => {}
                        }
                    },
                }
            }
            n = cr.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if uw.write_all(&up[..n]).await.is_err() { return; },
            },
            n = ur.read(&mut down) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&down[..n]).await.is_err() { return; },
            },
        }
    }
}
