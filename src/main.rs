use clap::Parser;
use step_operator::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube, reqwest and axum-server all use rustls; pick ring once for all of them.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    step_operator::telemetry::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Controller(args) => step_operator::controller::run(args).await,
        Command::Webhook(args) => step_operator::webhook::server::run(args).await,
        Command::Crd(args) => step_operator::crd_cmd::run(&args),
        Command::Bootstrap(args) => step_operator::agent::bootstrap::run(args).await,
        Command::Renew(args) => step_operator::agent::renew::run(args).await,
    }
}
