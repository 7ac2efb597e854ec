use clap::Parser;
use step_operator::cli::{Cli, Command};
use step_operator::runtime::{Workload, worker_threads};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let workload = match cli.command {
        Command::Controller(_) | Command::Webhook(_) => Workload::Server,
        Command::Crd(_) | Command::Bootstrap(_) | Command::Renew(_) => Workload::Agent,
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let env = std::env::var("TOKIO_WORKER_THREADS").ok();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(workload, cpus, env.as_deref()))
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // kube, reqwest and axum-server all use rustls; pick ring once for all of them.
    let _ = rustls::crypto::ring::default_provider().install_default();
    step_operator::telemetry::init(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Controller(args) => step_operator::controller::run(args).await,
        Command::Webhook(args) => step_operator::webhook::run(args).await,
        Command::Crd(args) => step_operator::crd::cmd::run(&args),
        Command::Bootstrap(args) => step_operator::agent::bootstrap::run(args).await,
        Command::Renew(args) => step_operator::agent::renew::run(args).await,
    }
}
