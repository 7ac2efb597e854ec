//! The StepClusterIssuers' policies as admission sees them: a watched cache, so that `/mutate`
//! makes no API call. `/bootstrap` reads the issuer fresh and decides for good.

use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::crd::StepClusterIssuer;
use crate::policy::{InvalidPolicy, IssuerPolicy};
use crate::webhook::mutate;

/// How long start-up waits for the first listing before admitting with the webhook's own policy.
const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct KnownIssuers(Store<StepClusterIssuer>);

impl mutate::IssuerPolicies for KnownIssuers {
    fn policy_of(&self, issuer: &str) -> Option<Result<IssuerPolicy, InvalidPolicy>> {
        let known = self.0.get(&ObjectRef::new(issuer))?;
        Some(crate::policy::issuer::for_pods(
            known.spec.policy.as_ref().map(|p| p.input()),
        ))
    }
}

impl KnownIssuers {
    /// Watches the StepClusterIssuers into a cache for admission. A failing watch leaves the
    /// cache as it was (admission then falls back to the webhook's own policy for unknown
    /// issuers).
    pub fn watch(client: kube::Client) -> KnownIssuers {
        let (store, writer) = reflector::store::<StepClusterIssuer>();
        let stream = watcher(
            Api::<StepClusterIssuer>::all(client),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .touched_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "Watching StepClusterIssuers for admission failed; retrying");
                }
            }
        });
        KnownIssuers(store)
    }

    /// Waits (a bounded time) for the first listing: a pod admitted before would be checked
    /// against the webhook's own policy only, and one that its issuer allows more would be
    /// denied.
    pub async fn wait_until_listed(&self) {
        if let Err(e) = tokio::time::timeout(FIRST_LIST_TIMEOUT, self.0.wait_until_ready()).await {
            tracing::warn!(error = %e, "StepClusterIssuers not listed within 60s; admitting with the webhook's own policy for issuers not known yet");
        }
    }
}
