//! The per-issuer cache of ready-to-use signers (decrypted provisioner key, root, HTTP client).
//!
//! Decrypting a provisioner key costs ~150 ms of PBKDF2, so it happens once per issuer and is
//! redone only when the issuer's spec (generation) or its password (Secret resourceVersion, or a
//! digest of an env/file password) changes. Concurrent connects for the same issuer wait for one
//! connection instead of each decrypting.
//!
//! Each signer remembers when its password was last read and found unchanged, so that a role
//! without an issuer reconciler (the webhook) can re-read it as often as the controller's
//! re-check does and serve from the cache in between
//! ([`SignerCache::current_confirmed_within`]).
//!
//! The signer in use and the connect lock are kept apart: a connect can take up to its deadline
//! (a CA that answers slowly, or on purpose), and requests that only need the signer in use must
//! never wait for it, or one issuer's CA could hold every request worker (security review H2).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::issuer::IssuerKey;
use crate::step::Signer;

/// What a cached signer was built from; any difference means rebuild.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerVersion {
    pub uid: String,
    pub generation: i64,
    /// Secret resourceVersion, or a SHA-256 of an env/file password.
    pub password_version: String,
}

impl SignerVersion {
    /// Same issuer object and spec; only the password may differ.
    fn same_spec(&self, other: &SignerVersion) -> bool {
        self.uid == other.uid && self.generation == other.generation
    }
}

/// A signer in use, what it was built from, and when that was last confirmed.
#[derive(Clone)]
struct Held {
    version: SignerVersion,
    signer: Signer,
    /// When the password was last read and found to be `version`'s (at the connect, or since).
    confirmed: Instant,
}

impl Held {
    fn new(version: SignerVersion, signer: Signer) -> Self {
        Self {
            version,
            signer,
            confirmed: Instant::now(),
        }
    }

    fn is_for(&self, uid: &str, generation: i64) -> bool {
        self.version.uid == uid && self.version.generation == generation
    }
}

#[derive(Default)]
struct Slot {
    /// The signer in use. Locked only to read or replace it, never across an await.
    current: RwLock<Option<Held>>,
    /// Held for the whole of a connect, so that a burst for one issuer decrypts once.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn read(&self) -> Option<Held> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, value: Option<Held>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = value;
    }

    /// The signer for exactly `version`, which the caller has just read: confirmed as of now.
    fn confirm(&self, version: &SignerVersion) -> Option<Signer> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let held = current.as_mut().filter(|h| h.version == *version)?;
        held.confirmed = Instant::now();
        Some(held.signer.clone())
    }
}

#[derive(Default, Clone)]
pub struct SignerCache {
    slots: Arc<Mutex<HashMap<IssuerKey, Arc<Slot>>>>,
}

impl SignerCache {
    fn slot(&self, key: &IssuerKey) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.clone()).or_default().clone()
    }

    fn existing_slot(&self, key: &IssuerKey) -> Option<Arc<Slot>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(key).cloned()
    }

    /// The cached signer if it was built for this uid and generation, whatever the password
    /// version: the issuer reconciler, which watches the Secret, replaces it when that changes.
    /// Never waits, not even for a connect of the same issuer in progress.
    pub fn current(&self, key: &IssuerKey, uid: &str, generation: i64) -> Option<Signer> {
        self.existing_slot(key)?
            .read()
            .filter(|h| h.is_for(uid, generation))
            .map(|h| h.signer)
    }

    /// [`Self::current`], while its password was read and found unchanged less than `max_age`
    /// ago: for a caller that re-reads the password itself, having no issuer reconciler to.
    pub fn current_confirmed_within(
        &self,
        key: &IssuerKey,
        uid: &str,
        generation: i64,
        max_age: Duration,
    ) -> Option<Signer> {
        self.existing_slot(key)?
            .read()
            .filter(|h| h.is_for(uid, generation) && h.confirmed.elapsed() < max_age)
            .map(|h| h.signer)
    }

    /// The signer for exactly `version`, built with `connect` when the cache holds another one.
    /// Connects for the same issuer are serialised, so a burst decrypts once; [`Self::current`]
    /// is not held up by them.
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
        if let Some(signer) = slot.confirm(&version) {
            return Ok((signer, false));
        }
        let _connecting = slot.connecting.lock().await;
        // Whoever held the lock before us may have built exactly this version.
        if let Some(signer) = slot.confirm(&version) {
            return Ok((signer, false));
        }
        // A changed spec makes the old signer wrong at once. A changed password alone leaves the
        // key the same (the password only wraps it), so the old signer keeps serving requests
        // until the new connect ends.
        if slot
            .read()
            .is_some_and(|held| !held.version.same_spec(&version))
        {
            slot.set(None);
        }
        match connect().await {
            Ok(signer) => {
                slot.set(Some(Held::new(version, signer.clone())));
                Ok((signer, true))
            }
            Err(e) => {
                // The old key must not outlive a changed password or spec that fails to connect.
                slot.set(None);
                Err(e)
            }
        }
    }

    /// Forgets an issuer's signer (step-ca refused its token).
    pub fn evict(&self, key: &IssuerKey) {
        if let Some(slot) = self.existing_slot(key) {
            slot.set(None);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::step::fake_ca::FakeCa;

    async fn signer(ca: &FakeCa) -> Signer {
        Signer::connect(
            &ca.url,
            Some(ca.certs.root_pem.as_bytes()),
            "admin",
            Some(&ca.kid),
            FakeCa::PASSWORD,
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    }

    fn key() -> IssuerKey {
        IssuerKey::Namespaced {
            namespace: "team".into(),
            name: "evil".into(),
        }
    }

    fn version(generation: i64, password: &str) -> SignerVersion {
        SignerVersion {
            uid: "uid-1".into(),
            generation,
            password_version: password.into(),
        }
    }

    /// Waits until a connect for `key` holds the connect lock; panics after 5 s.
    async fn wait_for_connect(cache: &SignerCache, key: &IssuerKey) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let held = cache
                .existing_slot(key)
                .is_some_and(|slot| slot.connecting.try_lock().is_err());
            if held {
                return;
            }
            assert!(Instant::now() < deadline, "the connect never started");
            tokio::task::yield_now().await;
        }
    }

    /// Security review H2: a connect that never ends (a CA that stalls on purpose) holds up no
    /// request: `current` answers at once, with the signer in use while only the password
    /// changed, and with nothing once the spec changed.
    #[tokio::test]
    async fn current_never_waits_for_a_connect_in_progress() {
        let ca = FakeCa::start().await;
        let cache = SignerCache::default();
        let (old, fresh) = cache
            .get_or_connect(&key(), version(1, "secret:1"), || async {
                Ok::<_, ()>(signer(&ca).await)
            })
            .await
            .unwrap();
        assert!(fresh);

        // The password Secret changed; its reconnect stalls forever.
        let stalled = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_connect(&key(), version(1, "secret:2"), || {
                        std::future::pending::<Result<Signer, ()>>()
                    })
                    .await
            }
        });
        wait_for_connect(&cache, &key()).await;
        let started = Instant::now();
        let during = cache.current(&key(), "uid-1", 1);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "current() took {:?}",
            started.elapsed()
        );
        assert_eq!(
            during.map(|s| s.kid().to_owned()),
            Some(old.kid().to_owned())
        );
        stalled.abort();
        assert!(stalled.await.unwrap_err().is_cancelled());

        // The spec changed: the old signer is no longer handed out, still without waiting.
        let stalled = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_connect(&key(), version(2, "secret:2"), || {
                        std::future::pending::<Result<Signer, ()>>()
                    })
                    .await
            }
        });
        wait_for_connect(&cache, &key()).await;
        let started = Instant::now();
        assert!(cache.current(&key(), "uid-1", 1).is_none());
        assert!(cache.current(&key(), "uid-1", 2).is_none());
        assert!(started.elapsed() < Duration::from_millis(100));
        stalled.abort();
    }

    #[tokio::test]
    async fn a_burst_connects_once_and_a_failed_connect_drops_the_old_signer() {
        let ca = FakeCa::start().await;
        let cache = SignerCache::default();
        let connects = AtomicUsize::new(0);
        let connect = || async {
            connects.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(signer(&ca).await)
        };
        let k = key();
        let (a, b) = tokio::join!(
            cache.get_or_connect(&k, version(1, "secret:1"), connect),
            cache.get_or_connect(&k, version(1, "secret:1"), connect),
        );
        assert_eq!(connects.load(Ordering::SeqCst), 1);
        assert_eq!(
            [a.unwrap().1, b.unwrap().1].iter().filter(|f| **f).count(),
            1,
            "exactly one caller connected"
        );
        assert!(cache.current(&key(), "uid-1", 1).is_some());

        // A new password that does not work: the old key is dropped with it.
        let err = cache
            .get_or_connect(&key(), version(1, "secret:2"), || async {
                Err::<Signer, _>("wrong password")
            })
            .await
            .unwrap_err();
        assert_eq!(err, "wrong password");
        assert!(cache.current(&key(), "uid-1", 1).is_none());

        cache
            .get_or_connect(&key(), version(1, "secret:3"), connect)
            .await
            .unwrap();
        cache.evict(&key());
        assert!(cache.current(&key(), "uid-1", 1).is_none());
        assert_eq!(cache.keys(), vec![key()]);
        cache.remove(&key());
        assert!(cache.keys().is_empty());
    }
}
