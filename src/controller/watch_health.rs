//! What the controller's watches are doing: the source of `/readyz`, of the "cannot list" warnings
//! and of the gate that keeps request reconciles from running before the issuers are known.
//!
//! kube-runtime retries a failed watch quietly (it warns only on 403), so a missing CRD or a
//! 404/500 would leave requests waiting with nothing in the log. Every watch here reports its
//! events through [`WatchHealth::observe`]: a failure is logged once at `warn` (again only when
//! the cause changes) with what to check, a recovery at `info`, and the controller is ready only
//! while every watch has listed and none is failing.
//!
//! It also replaces `Store::wait_until_ready`: in kube-runtime 5.0.0 that wait sits on a one-shot
//! channel that keeps a single waker, so of many tasks waiting on one store only the last to poll
//! is ever woken (`tests::kube_store_wait_wakes_only_the_last_waiter`). [`WatchHealth::listed`]
//! wakes every waiter.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::watch;

/// One watch's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchState {
    /// It has completed a listing since the process started.
    pub listed: bool,
    /// Why it cannot list or watch now.
    pub failing: Option<String>,
}

/// What a watch just did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A listing is complete (`InitDone`).
    Listed,
    /// Any other event: the watch works.
    Progress,
    /// The watch failed with this message (already with its hint).
    Failed(String),
}

/// What to log about a change of state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// A new or different failure: warn.
    Failing(String),
    /// It works again after a failure: info.
    Recovered,
}

/// The next state of a watch and what to log, for one observation. Pure.
pub fn next(state: &WatchState, seen: &Observed) -> (WatchState, Option<Report>) {
    match seen {
        Observed::Failed(why) => {
            let report = (state.failing.as_deref() != Some(why.as_str()))
                .then(|| Report::Failing(why.clone()));
            (
                WatchState {
                    listed: state.listed,
                    failing: Some(why.clone()),
                },
                report,
            )
        }
        Observed::Listed | Observed::Progress => {
            let report = state.failing.is_some().then_some(Report::Recovered);
            (
                WatchState {
                    listed: state.listed || *seen == Observed::Listed,
                    failing: None,
                },
                report,
            )
        }
    }
}

/// Ready when there are watches, every one has listed and none is failing.
pub fn all_ready(states: &BTreeMap<&'static str, WatchState>) -> bool {
    !states.is_empty() && states.values().all(|s| s.listed && s.failing.is_none())
}

fn status(err: &watcher::Error) -> Option<&kube::core::Status> {
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
        watcher::Error::WatchError(s) => Some(s.as_ref()),
        _ => None,
    }
}

fn status_code(err: &watcher::Error) -> Option<u16> {
    status(err).map(|s| s.code)
}

/// What a watch error means for the controller.
pub fn observed(resource: &str, err: &watcher::Error) -> Observed {
    match status_code(err) {
        // "Gone": the watch's resourceVersion expired; the watcher relists. Routine, not a fault.
        Some(410) => Observed::Progress,
        _ => Observed::Failed(describe(resource, err)),
    }
}

/// A watch error in one line (the API server's code and message, not its debug form), with what
/// to check for the causes an operator can fix.
pub fn describe(resource: &str, err: &watcher::Error) -> String {
    let what = match err {
        watcher::Error::InitialListFailed(_) => "listing",
        watcher::Error::WatchStartFailed(_) => "starting to watch",
        _ => "watching",
    };
    let cause = match status(err) {
        Some(s) => format!(
            "{what} {resource} failed: HTTP {} {}",
            s.code,
            s.message.trim()
        ),
        None => format!("{what} {resource} failed: {err}"),
    };
    let hint = match status_code(err) {
        Some(404) => format!(
            "; the API server does not serve {resource}: install its CustomResourceDefinition (cert-manager's for CertificateRequests; `step-operator crd | kubectl apply -f -` or the Helm chart for StepIssuers and StepClusterIssuers)"
        ),
        Some(403) => format!(
            "; the controller's ServiceAccount may not list and watch {resource}; check the ClusterRole the Helm chart installs"
        ),
        _ => format!("; retrying; check that the API server is reachable and serves {resource}"),
    };
    format!("{cause}{hint}")
}

/// The shared record of every watch; cheap to clone.
#[derive(Clone)]
pub struct WatchHealth {
    states: Arc<watch::Sender<BTreeMap<&'static str, WatchState>>>,
    ready: watch::Sender<bool>,
}

impl WatchHealth {
    /// A record that reports its readiness to `ready` (what `/readyz` serves).
    /// Not ready until watches are registered and have listed (a standby that just became the
    /// leader stops being ready here).
    pub fn new(ready: watch::Sender<bool>) -> Self {
        let health = Self {
            states: Arc::new(watch::channel(BTreeMap::new()).0),
            ready,
        };
        health.publish();
        health
    }

    /// Registers a watch before it starts, so that readiness waits for it.
    pub fn register(&self, resource: &'static str) {
        self.states.send_modify(|m| {
            m.entry(resource).or_default();
        });
        self.publish();
    }

    fn publish(&self) {
        let ready = all_ready(&self.states.borrow());
        self.ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// Records one observation of the watch `name` and logs what changed.
    pub fn record(&self, name: &'static str, seen: Observed) {
        let mut report = None;
        self.states.send_if_modified(|m| {
            let state = m.entry(name).or_default();
            let (new, r) = next(state, &seen);
            report = r;
            let changed = *state != new;
            *state = new;
            changed
        });
        match report {
            Some(Report::Failing(why)) => {
                tracing::warn!(watch = name, error = %why, "A watch cannot list or watch; its objects are not reconciled until it recovers")
            }
            Some(Report::Recovered) => {
                tracing::info!(watch = name, "A watch recovered; reconciling again")
            }
            None => {}
        }
        self.publish();
    }

    /// Whether `resource`'s watch has completed a listing.
    #[cfg(test)]
    fn is_listed(&self, resource: &str) -> bool {
        self.states.borrow().get(resource).is_some_and(|s| s.listed)
    }

    /// Resolves once every one of `resources` has completed a listing. Every waiter is woken.
    pub async fn listed(&self, resources: &[&str]) {
        let mut rx = self.states.subscribe();
        let _ = rx
            .wait_for(|m| resources.iter().all(|r| m.get(r).is_some_and(|s| s.listed)))
            .await;
    }

    /// Passes a watch stream through, recording its events and errors under `name`; `resource`
    /// names what it watches in messages (`StepIssuers`).
    pub fn observe<S, K>(
        &self,
        name: &'static str,
        resource: &'static str,
        stream: S,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<S, K>
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
        K: Send,
    {
        self.register(name);
        let health = self.clone();
        stream.inspect(move |item| {
            let seen = match item {
                Ok(watcher::Event::InitDone) => Observed::Listed,
                Ok(_) => Observed::Progress,
                Err(e) => observed(resource, e),
            };
            health.record(name, seen);
        })
    }
}

/// Counts every outcome of a controller's output stream (`reconciles{controller, outcome}`) and
/// logs what nobody else has: failed reconciles are logged by the error policies and watch
/// failures by [`WatchHealth::observe`], once each; what is left would otherwise be dropped
/// silently.
pub fn report_outcome<K, R, Q>(
    kind: &str,
    metrics: &crate::metrics::Metrics,
    outcome: Result<
        (
            kube::runtime::reflector::ObjectRef<K>,
            kube::runtime::controller::Action,
        ),
        kube::runtime::controller::Error<R, Q>,
    >,
) where
    K: kube::Resource,
    R: std::error::Error,
    Q: std::error::Error,
{
    use kube::runtime::controller::Error;
    let label = match outcome {
        Ok(_) => "ok",
        Err(Error::ReconcilerFailed(..)) => "error",
        Err(Error::QueueError(e)) => {
            tracing::debug!(kind, error = %e, "A watch feeding the controller's queue failed");
            "queue_error"
        }
        Err(Error::ObjectNotFound(obj)) => {
            tracing::debug!(kind, object = %obj, "A queued object is gone from the cache");
            "object_gone"
        }
        Err(e @ Error::RunnerError(_)) => {
            tracing::warn!(kind, error = %e, "The controller's runner failed");
            "runner_error"
        }
    };
    metrics.count_reconcile(kind, label);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn state(listed: bool, failing: Option<&str>) -> WatchState {
        WatchState {
            listed,
            failing: failing.map(str::to_string),
        }
    }

    #[test]
    fn transitions() {
        let fail = |s: &str| Observed::Failed(s.to_string());
        let cases = [
            // (before, seen, after, report)
            (
                state(false, None),
                Observed::Progress,
                state(false, None),
                None,
            ),
            (
                state(false, None),
                Observed::Listed,
                state(true, None),
                None,
            ),
            (
                state(false, None),
                fail("404"),
                state(false, Some("404")),
                Some(Report::Failing("404".into())),
            ),
            // The same failure again is not logged again.
            (
                state(false, Some("404")),
                fail("404"),
                state(false, Some("404")),
                None,
            ),
            // A different one is.
            (
                state(true, Some("404")),
                fail("500"),
                state(true, Some("500")),
                Some(Report::Failing("500".into())),
            ),
            (
                state(false, Some("404")),
                Observed::Listed,
                state(true, None),
                Some(Report::Recovered),
            ),
            // Once listed, a later event never unlists.
            (
                state(true, Some("timeout")),
                Observed::Progress,
                state(true, None),
                Some(Report::Recovered),
            ),
        ];
        for (before, seen, after, report) in cases {
            assert_eq!(
                next(&before, &seen),
                (after, report),
                "{before:?} + {seen:?}"
            );
        }
    }

    #[test]
    fn ready_only_when_every_watch_listed_and_none_fails() {
        let m = |v: &[(&'static str, WatchState)]| v.iter().cloned().collect::<BTreeMap<_, _>>();
        assert!(!all_ready(&m(&[])), "nothing watched yet");
        assert!(all_ready(&m(&[
            ("a", state(true, None)),
            ("b", state(true, None))
        ])));
        assert!(!all_ready(&m(&[
            ("a", state(true, None)),
            ("b", state(false, None))
        ])));
        assert!(!all_ready(&m(&[("a", state(true, Some("x")))])));
    }

    fn api_error(code: u16) -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "the server could not find the requested resource".into(),
            ..Default::default()
        })))
    }

    #[test]
    fn errors_name_the_fix() {
        let missing = describe("StepIssuers", &api_error(404));
        assert!(
            missing.starts_with("listing StepIssuers failed: HTTP 404 the server could not find"),
            "{missing}"
        );
        assert!(missing.contains("does not serve StepIssuers"), "{missing}");
        assert!(missing.contains("step-operator crd"), "{missing}");
        let forbidden = describe("Secrets", &api_error(403));
        assert!(
            forbidden.contains("may not list and watch Secrets"),
            "{forbidden}"
        );
        let other = describe("Secrets", &api_error(500));
        assert!(other.contains("retrying"), "{other}");
        assert_eq!(observed("Secrets", &api_error(410)), Observed::Progress);
        assert!(matches!(
            observed("Secrets", &api_error(500)),
            Observed::Failed(_)
        ));
    }

    #[tokio::test]
    async fn readiness_follows_every_registered_watch() {
        let (tx, rx) = watch::channel(true);
        let health = WatchHealth::new(tx);
        assert!(
            !*rx.borrow(),
            "a new leader is not ready before its watches exist"
        );
        health.register("A");
        health.register("B");
        assert!(
            !*rx.borrow(),
            "registered watches that have not listed are not ready"
        );
        health.record("A", Observed::Listed);
        assert!(!*rx.borrow());
        health.record("B", Observed::Listed);
        assert!(*rx.borrow());
        health.record("B", Observed::Failed("500".into()));
        assert!(
            !*rx.borrow(),
            "a failing watch makes the controller not ready"
        );
        health.record("B", Observed::Progress);
        assert!(*rx.borrow());
    }

    /// The cause of requests that stayed unreconciled after a restart: kube-runtime's
    /// `Store::wait_until_ready` wakes only the last of many waiters. If this ever fails, the
    /// upstream store wakes everyone and the workaround could go.
    #[tokio::test(start_paused = true)]
    async fn kube_store_wait_wakes_only_the_last_waiter() {
        use kube::runtime::reflector;
        let (store, mut writer) = reflector::store::<k8s_openapi::api::core::v1::ConfigMap>();
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.wait_until_ready().await.is_ok() })
            })
            .collect();
        // Let every waiter poll (and register its waker) before the store becomes ready.
        for _ in 0..32 {
            tokio::task::yield_now().await;
        }
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let mut resumed = 0;
        for w in waiters {
            // Paused time: the timeout fires as soon as every task is idle, deterministically.
            if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(5), w).await {
                resumed += 1;
            }
        }
        assert!(resumed < 16, "all 16 waiters resumed: {resumed}");
    }

    #[tokio::test(start_paused = true)]
    async fn listed_wakes_every_waiter() {
        let (tx, _rx) = watch::channel(false);
        let health = WatchHealth::new(tx);
        health.register("StepIssuers");
        health.register("StepClusterIssuers");
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let health = health.clone();
                tokio::spawn(async move {
                    health.listed(&["StepIssuers", "StepClusterIssuers"]).await;
                })
            })
            .collect();
        for _ in 0..32 {
            tokio::task::yield_now().await;
        }
        health.record("StepIssuers", Observed::Listed);
        assert!(!health.is_listed("StepClusterIssuers"));
        health.record("StepClusterIssuers", Observed::Failed("404".into()));
        health.record("StepClusterIssuers", Observed::Listed);
        let mut resumed = 0;
        for w in waiters {
            if tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .is_ok()
            {
                resumed += 1;
            }
        }
        assert_eq!(resumed, 16);
    }
}
