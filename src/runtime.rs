//! How many async worker threads each subcommand runs.
//!
//! tokio's default is one worker per CPU. On a large node that is dozens of threads (each with a
//! stack and, with glibc, its own malloc arena) for work that is almost all waiting on the
//! network: the controller's CPU use per certificate is a few milliseconds (`make bench`), the
//! webhook's under one per review. A small fixed cap keeps memory independent of the node's size.
//! `TOKIO_WORKER_THREADS` still overrides it.

/// Most workers the controller and the webhook use.
pub const SERVER_WORKERS: usize = 4;

/// What a subcommand does, as far as threads are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// controller, webhook: many concurrent API and CA calls.
    Server,
    /// bootstrap, renew, crd: one thing at a time, inside every annotated pod.
    Agent,
}

/// Worker threads for a workload on a machine with `cpus` CPUs; `env` is `TOKIO_WORKER_THREADS`.
pub fn worker_threads(workload: Workload, cpus: usize, env: Option<&str>) -> usize {
    if let Some(n) = env
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    match workload {
        Workload::Server => cpus.clamp(1, SERVER_WORKERS),
        Workload::Agent => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_by_workload_and_overridable() {
        let cases = [
            (Workload::Server, 1, None, 1),
            (Workload::Server, 2, None, 2),
            (Workload::Server, 64, None, SERVER_WORKERS),
            (Workload::Agent, 64, None, 1),
            (Workload::Server, 64, Some("12"), 12),
            (Workload::Agent, 2, Some(" 3 "), 3),
            // Nonsense in the variable falls back to the cap rather than failing.
            (Workload::Server, 64, Some("0"), SERVER_WORKERS),
            (Workload::Server, 64, Some("many"), SERVER_WORKERS),
            (Workload::Server, 0, None, 1),
        ];
        for (workload, cpus, env, want) in cases {
            assert_eq!(
                worker_threads(workload, cpus, env),
                want,
                "{workload:?} {cpus} {env:?}"
            );
        }
    }
}
