//! StepIssuer / StepClusterIssuer reconciler: checks that the issuer can sign (spec, password,
//! step-ca health, provisioner, key decryption) and reports it in the `Ready` condition.
//!
//! Re-checked on spec changes, when the referenced Secret changes (through a metadata-only watch
//! of Secrets, so no Secret body is cached), after a sign-time authentication failure, and
//! periodically.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};

use crate::controller::context::{Context, IssuerObject};
use crate::controller::decision::IssuerKey;
use crate::controller::issuer_spec::{PasswordSource, validate};
use crate::controller::relist::triggers;
use crate::controller::watch_health::{WatchHealth, log_unreported};
use crate::crd::IssuerStatus;
use crate::crd::condition;

/// Reason of a Ready issuer.
pub const VERIFIED: &str = "Verified";
/// Reason the request reconciler writes when step-ca refuses a token at sign time.
pub const SIGN_AUTH_FAILED: &str = "CARejectedToken";

/// Which issuers are Ready, for the `issuers_ready` gauge.
#[derive(Default)]
pub struct ReadyTracker {
    ready: Mutex<HashMap<String, bool>>,
}

impl ReadyTracker {
    fn set(&self, ctx: &Context, kind: &str, key: String, ready: Option<bool>) {
        let mut map = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        match ready {
            Some(r) => map.insert(key, r),
            None => map.remove(&key),
        };
        let prefix = format!("{kind}/");
        let count = map
            .iter()
            .filter(|(k, r)| **r && k.starts_with(&prefix))
            .count();
        ctx.metrics
            .issuers_ready
            .get_or_create(&crate::metrics::KindLabels { kind: kind.into() })
            .set(count as i64);
    }
}

struct IssuerCtx {
    ctx: Arc<Context>,
    tracker: Arc<ReadyTracker>,
    /// When each issuer's CA last passed a check, for [`health_check_due`].
    verified: Mutex<HashMap<String, Instant>>,
}

/// Whether a reconcile that reuses a cached connection must ask step-ca for its health (a fresh
/// connection has just proved the CA works). A check that passed less than `interval` ago still holds: without this,
/// the reconcile that our own status write triggers checked the CA again at once, which doubled
/// the health checks and could report a CA outage that began right after a successful check
/// (the Ready issuer flipped to not Ready although the next check was minutes away). A changed
/// spec or password, or a token refused at sign time, always connects afresh.
pub fn health_check_due(verified_ago: Option<Duration>, interval: Duration) -> bool {
    verified_ago.is_none_or(|ago| ago >= interval)
}

/// Runs the reconciler for one issuer kind until `shutdown` resolves.
pub async fn run<K: IssuerObject>(
    ctx: Arc<Context>,
    health: WatchHealth,
    tracker: Arc<ReadyTracker>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let cfg = crate::controller::initial_list::watch_config(ctx.settings.streaming_lists);
    let (store, writer) = reflector::store::<K>();
    let issuer_ctx = Arc::new(IssuerCtx {
        ctx: ctx.clone(),
        tracker,
        verified: Mutex::new(HashMap::new()),
    });
    // Our own watch rather than Controller::new's, so that a relist reconciles the issuers from
    // the refreshed cache at InitDone (see `relist`) and its failures reach the log and /readyz.
    let issuers = health
        .observe(
            K::PLURAL,
            K::PLURAL,
            watcher(K::api(ctx.watch_client.clone(), None), cfg.clone()).default_backoff(),
        )
        .reflect(writer)
        // A deleted issuer is never reconciled (it is gone from the cache), so what this process
        // holds for it (the decrypted provisioner key above all) is dropped here: at its Delete
        // event, or, for issuers deleted while the watch was down, when the relist ends.
        .inspect_ok({
            let (store, c) = (store.clone(), issuer_ctx.clone());
            move |ev| match ev {
                watcher::Event::Delete(issuer) => c.forget(&issuer.key()),
                watcher::Event::InitDone => {
                    let present: HashSet<IssuerKey> =
                        store.state().iter().map(|i| i.key()).collect();
                    for key in gone(c.ctx.signers.keys(), &present, K::KIND) {
                        c.forget(&key);
                    }
                }
                _ => {}
            }
        })
        .map_ok({
            let store = store.clone();
            move |ev| futures::stream::iter(triggers(ev, || store.state()).into_iter().map(Ok))
        })
        .try_flatten();
    // Metadata only: the controller never holds the bodies of the cluster's Secrets.
    let secrets = health
        .observe(
            K::SECRETS_WATCH,
            "Secrets",
            watcher(
                Api::<PartialObjectMeta<Secret>>::all(ctx.watch_client.clone()),
                cfg,
            )
            .default_backoff(),
        )
        .touched_objects();
    let cluster_ns = ctx.settings.cluster_resource_namespace.clone();
    let mapper_store = store.clone();
    Controller::for_stream(issuers, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .watches_stream(secrets, move |secret| {
            let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            mapper_store
                .state()
                .into_iter()
                .filter(|issuer| references_secret(&**issuer, &cluster_ns, &ns, &name))
                .map(|issuer| ObjectRef::from_obj(&*issuer))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, issuer_ctx)
        .for_each(|outcome| {
            log_unreported(K::KIND, outcome);
            futures::future::ready(())
        })
        .await;
}

/// The issuers of `kind` that this process holds something for but that are not `present`.
fn gone(held: Vec<IssuerKey>, present: &HashSet<IssuerKey>, kind: &str) -> Vec<IssuerKey> {
    held.into_iter()
        .filter(|k| k.kind() == kind && !present.contains(k))
        .collect()
}

fn references_secret<K: IssuerObject>(issuer: &K, cluster_ns: &str, ns: &str, name: &str) -> bool {
    match validate(
        &issuer.spec_view(),
        issuer.own_namespace().as_deref(),
        cluster_ns,
    ) {
        Ok(v) => {
            matches!(v.password, PasswordSource::Secret { namespace, name: n, .. } if namespace == ns && n == name)
        }
        Err(_) => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to write the issuer status: {0}")]
    Status(#[source] kube::Error),
}

async fn reconcile<K: IssuerObject>(
    issuer: Arc<K>,
    c: Arc<IssuerCtx>,
) -> Result<Action, ReconcileError> {
    let ctx = &c.ctx;
    let key = issuer.key();
    let tracker_key = format!("{}/{}", K::KIND, key);
    if issuer.meta().deletion_timestamp.is_some() {
        c.forget_verified(&tracker_key);
        ctx.signers.remove(&key);
        c.tracker.set(ctx, K::KIND, tracker_key, None);
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let previous = issuer
        .issuer_status()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    // A sign-time token rejection evicts the signer: reconnect from scratch.
    let after_auth_failure = previous
        .iter()
        .any(|c| c.type_ == condition::READY && c.reason == SIGN_AUTH_FAILED);
    if after_auth_failure {
        ctx.signers.evict(&key).await;
    }
    let interval = ctx.settings.issuer_recheck_interval;
    // When the CA is next checked; shorter when an earlier check still holds.
    let mut next_check = interval;
    // Whether this reconcile proved the CA works (a fresh connection or a health check).
    let mut proved = false;
    let outcome = match ctx.signer_for(&*issuer).await {
        Ok((signer, fresh)) => {
            let verified_ago = c.verified_ago(&tracker_key);
            let health = if fresh {
                proved = true;
                Ok(())
            } else if health_check_due(verified_ago, interval) {
                let t = Instant::now();
                let r = signer.check_health().await;
                ctx.metrics
                    .observe_ca("health", r.is_ok(), t.elapsed().as_secs_f64());
                proved = r.is_ok();
                r.map_err(crate::controller::error::IssuerError::from)
            } else {
                let ago = verified_ago.unwrap_or_default();
                next_check = interval.saturating_sub(ago).max(Duration::from_secs(1));
                Ok(())
            };
            health.map(|_| signer)
        }
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(_) if proved => c.mark_verified(tracker_key.clone()),
        Ok(_) => {}
        Err(_) => c.forget_verified(&tracker_key),
    }
    let generation = issuer.meta().generation;
    let (ready, reason, message, requeue) = match &outcome {
        Ok(signer) => (
            true,
            VERIFIED.to_string(),
            format!(
                "Signing with JWK provisioner {:?} (kid {}) at {}",
                signer.provisioner_name(),
                signer.kid(),
                signer.url()
            ),
            next_check,
        ),
        Err(e) => (
            false,
            e.reason().to_string(),
            e.to_string(),
            if e.is_transient() {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(60)
            },
        ),
    };
    let cond = condition::ready(
        &previous,
        ready,
        &reason,
        &message,
        generation,
        Timestamp::now(),
    );
    let unchanged = previous.iter().any(|p| {
        p.type_ == cond.type_
            && p.status == cond.status
            && p.reason == cond.reason
            && p.message == cond.message
            && p.observed_generation == cond.observed_generation
    });
    if !unchanged {
        let status = IssuerStatus {
            conditions: vec![cond],
        };
        ctx.apply_issuer_status(&*issuer, &status)
            .await
            .map_err(ReconcileError::Status)?;
        let (type_, action) = if ready {
            (EventType::Normal, "Verified")
        } else {
            (EventType::Warning, "Check")
        };
        ctx.event(&*issuer, type_, &reason, message.clone(), action)
            .await;
        tracing::info!(issuer = %key, ready, reason, elapsed_ms = started.elapsed().as_millis() as u64, "Issuer checked");
    }
    c.tracker.set(ctx, K::KIND, tracker_key, Some(ready));
    Ok(Action::requeue(requeue))
}

impl IssuerCtx {
    fn verified_ago(&self, key: &str) -> Option<Duration> {
        let map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|at| at.elapsed())
    }

    fn mark_verified(&self, key: String) {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, Instant::now());
    }

    /// Drops everything held for an issuer that no longer exists: its signer (and with it the
    /// decrypted key), its place in the ready gauge, its last check.
    fn forget(&self, key: &IssuerKey) {
        let tracker_key = format!("{}/{}", key.kind(), key);
        tracing::info!(issuer = %key, "Issuer deleted; dropped its signer and provisioner key");
        self.ctx.signers.remove(key);
        self.tracker
            .set(&self.ctx, key.kind(), tracker_key.clone(), None);
        self.forget_verified(&tracker_key);
    }

    fn forget_verified(&self, key: &str) {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

fn error_policy<K: IssuerObject>(
    issuer: Arc<K>,
    err: &ReconcileError,
    _c: Arc<IssuerCtx>,
) -> Action {
    tracing::warn!(issuer = %issuer.key(), error = %err, "Issuer reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Marks an issuer not Ready after step-ca refused its token at sign time; its reconciler then
/// reconnects and re-checks.
pub async fn report_sign_auth_failure<K: IssuerObject>(ctx: &Context, issuer: &K, detail: &str) {
    let previous = issuer
        .issuer_status()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let cond = condition::ready(
        &previous,
        false,
        SIGN_AUTH_FAILED,
        &format!(
            "step-ca refused a signing token ({detail}); re-checking the provisioner and password"
        ),
        issuer.meta().generation,
        Timestamp::now(),
    );
    ctx.signers.evict(&issuer.key()).await;
    if let Err(e) = ctx
        .apply_issuer_status(
            issuer,
            &IssuerStatus {
                conditions: vec![cond],
            },
        )
        .await
    {
        tracing::warn!(issuer = %issuer.key(), error = %e, "Failed to mark the issuer not Ready");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review M4: what is held for issuers that no longer exist is found, per kind.
    #[test]
    fn held_issuers_missing_from_the_cache_are_gone() {
        let ns = |n: &str| IssuerKey::Namespaced {
            namespace: "team".into(),
            name: n.into(),
        };
        let cl = |n: &str| IssuerKey::Cluster { name: n.into() };
        let held = vec![ns("kept"), ns("deleted"), cl("deleted"), cl("kept")];
        let present: HashSet<IssuerKey> = [ns("kept"), cl("kept")].into();
        assert_eq!(gone(held.clone(), &present, "StepIssuer"), [ns("deleted")]);
        assert_eq!(
            gone(held.clone(), &present, "StepClusterIssuer"),
            [cl("deleted")]
        );
        // Another kind's watch never sweeps this kind's issuers.
        let only_namespaced: HashSet<IssuerKey> = [ns("kept")].into();
        assert_eq!(gone(held, &only_namespaced, "StepIssuer"), [ns("deleted")]);
        assert!(gone(Vec::new(), &present, "StepIssuer").is_empty());
    }

    #[test]
    fn health_is_checked_when_no_recent_check_holds() {
        let min = Duration::from_secs(60);
        let interval = 5 * min;
        let cases = [
            // (last passed check, due)
            (None, true),
            (Some(Duration::from_secs(1)), false),
            (Some(interval - Duration::from_secs(1)), false),
            (Some(interval), true),
            (Some(10 * min), true),
        ];
        for (ago, due) in cases {
            assert_eq!(health_check_due(ago, interval), due, "verified_ago={ago:?}");
        }
    }
}
