//! The per-issuer cache of ready-to-use signers (decrypted provisioner key, root, HTTP client).
//!
//! Decrypting a provisioner key costs ~150 ms of PBKDF2, so it happens once per issuer and is
//! redone only when the issuer's spec (generation) or its password (Secret resourceVersion, or a
//! digest of an env/file password) changes. Concurrent requests for the same issuer wait for one
//! connection instead of each decrypting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::controller::decision::IssuerKey;
use crate::step::Signer;

/// What a cached signer was built from; any difference means rebuild.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerVersion {
    pub uid: String,
    pub generation: i64,
    /// Secret resourceVersion, or a SHA-256 of an env/file password.
    pub password_version: String,
}

#[derive(Default)]
struct Slot {
    current: Option<(SignerVersion, Signer)>,
}

#[derive(Default, Clone)]
pub struct SignerCache {
    slots: Arc<Mutex<HashMap<IssuerKey, Arc<tokio::sync::Mutex<Slot>>>>>,
}

impl SignerCache {
    fn slot(&self, key: &IssuerKey) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.clone()).or_default().clone()
    }

    /// The cached signer if it was built for this uid and generation, whatever the password
    /// version: the issuer reconciler, which watches the Secret, replaces it when that changes.
    pub async fn current(&self, key: &IssuerKey, uid: &str, generation: i64) -> Option<Signer> {
        let slot = self.slot(key);
        let slot = slot.lock().await;
        slot.current
            .as_ref()
            .filter(|(v, _)| v.uid == uid && v.generation == generation)
            .map(|(_, s)| s.clone())
    }

    /// The signer for exactly `version`, built with `connect` when the cache holds another one.
    /// Callers for the same issuer are serialised, so a burst decrypts once.
    pub async fn get_or_connect<F, Fut, E>(
        &self,
        key: &IssuerKey,
        version: SignerVersion,
        connect: F,
    ) -> Result<(Signer, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Signer, E>>,
    {
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        if let Some((v, s)) = &slot.current
            && *v == version
        {
            return Ok((s.clone(), false));
        }
        // The old key must not outlive a changed password or spec, even if connecting fails.
        slot.current = None;
        let signer = connect().await?;
        slot.current = Some((version, signer.clone()));
        Ok((signer, true))
    }

    /// Forgets an issuer's signer (deleted issuer, or step-ca refused its token).
    pub async fn evict(&self, key: &IssuerKey) {
        let slot = self.slot(key);
        slot.lock().await.current = None;
    }

    /// The issuers that have a slot, for sweeping out those that no longer exist.
    pub fn keys(&self) -> Vec<IssuerKey> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.keys().cloned().collect()
    }

    pub fn remove(&self, key: &IssuerKey) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(key);
    }
}
