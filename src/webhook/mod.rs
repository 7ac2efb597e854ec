//! `step-operator webhook`: pod admission (`/mutate`, a pure function of the Pod), pod bootstrap
//! (`/bootstrap`, identity-bound one-time tokens) and the webhook's own serving certificate.
//!
//! [`run`] wires them: the HTTP shell ([`server`]), the serving certificate ([`tls`]), the
//! settings built from the flags ([`config`]) and the issuers' policies admission knows
//! ([`issuers`]).

pub mod admission;
pub mod annotations;
pub mod args;
pub mod body_budget;
pub mod bootstrap;
pub mod config;
pub mod issuers;
pub mod mutate;
pub mod patch;
pub mod pod_names;
pub mod pod_view;
pub mod rate_limit;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum_server::tls_rustls::RustlsConfig;

use crate::issuer::IssuerAccess;
use crate::kube_client;
use crate::metrics::Metrics;
use crate::webhook::args::WebhookArgs;

use self::issuers::KnownIssuers;
use self::server::AppState;
use self::tls::ServingCert;

/// How long connections in flight may finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves until a shutdown signal (then drains) or until the HTTPS or admin server fails.
pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    // Checked before anything else so that a bad flag fails at once; built again below with the
    // bootstrap root once the serving certificate is known.
    config::from_args(&args, "")?;
    let (client, watch_client) = kube_client::connect_both(args.cluster.kube_timeout).await?;
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, admin) = crate::admin::start(args.admin_addr(), metrics.clone());
    // The webhook reaches issuers as the controller does, and writes no status and no Event.
    let access = Arc::new(IssuerAccess {
        client,
        metrics,
        signers: Default::default(),
        cluster_resource_namespace: args.issuers.cluster_resource_namespace.clone(),
        ca_timeout: args.issuers.ca_timeout,
        // Pods name StepClusterIssuers only, which the deny-list does not restrict.
        forbidden_ca_cidrs: Default::default(),
    });

    let issuers = KnownIssuers::watch(watch_client);
    let serving = ServingCert::new(access.clone(), &args);
    let first = serving.obtain().await;
    issuers.wait_until_listed().await;
    let tls = RustlsConfig::from_pem(
        first.chain_pem.as_bytes().to_vec(),
        first.key_pem.as_bytes().to_vec(),
    )
    .await
    .context("loading the serving certificate")?;
    let config = config::from_args(&args, &first.root_pem)?;
    let state = Arc::new(AppState::new(access, config, issuers));
    tokio::spawn(serving.keep_fresh(tls.clone(), first, {
        let state = state.clone();
        move |root| state.set_bootstrap_root(root)
    }));

    let handle = axum_server::Handle::new();
    let server = axum_server::bind_rustls(args.listen_addr, tls)
        .handle(handle.clone())
        .serve(
            server::router(state, &args)
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        );
    let _ = ready_tx.send(true);
    tracing::info!(addr = %args.listen_addr, identity = %args.pod.identity(), "Webhook serving HTTPS");
    tokio::select! {
        r = server => r.context("the HTTPS server stopped")?,
        r = admin => anyhow::bail!("admin server stopped: {r:?}"),
        _ = crate::signal::shutdown_signal() => {
            tracing::info!("Shutting down");
            handle.graceful_shutdown(Some(DRAIN));
        }
    }
    Ok(())
}
