//! Which objects a watch event should reconcile, so that a relist never reconciles a stale copy.
//!
//! A (re)list delivers its objects as `InitApply` while the reflector's cache still holds the
//! previous state, which it keeps until `InitDone`. A reconcile triggered by an `InitApply` could
//! therefore read the stale copy (say, a request not yet approved, or an issuer with its old
//! spec) and then never hear of the object again until its next change: after an apiserver
//! restart, requests approved while the watch was down stayed unsigned. So the listed objects
//! are reconciled at `InitDone`, from the cache as it now is, as informers do after a relist.

use std::sync::Arc;

use kube::runtime::watcher;

/// The objects to reconcile for one event that the cache has already applied; `cached` reads
/// the cache (called only at `InitDone`).
pub fn triggers<K: Clone>(ev: watcher::Event<K>, cached: impl FnOnce() -> Vec<Arc<K>>) -> Vec<K> {
    use watcher::Event;
    match ev {
        Event::Apply(obj) | Event::Delete(obj) => vec![obj],
        Event::InitDone => cached().iter().map(|obj| (**obj).clone()).collect(),
        Event::Init | Event::InitApply(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event;

    #[test]
    fn a_relist_reconciles_from_the_new_cache_at_its_end() {
        let fresh = Arc::new("approved-meanwhile");
        let cache = || vec![fresh.clone()];
        // Nothing while the list is loading: the cache still holds the old state.
        assert!(triggers(Event::Init, cache).is_empty());
        assert!(triggers(Event::InitApply("stale"), cache).is_empty());
        // Everything the cache holds once it has been swapped.
        assert_eq!(triggers(Event::InitDone, cache), ["approved-meanwhile"]);
        // Ordinary events reconcile their own object.
        assert_eq!(triggers(Event::Apply("one"), cache), ["one"]);
        assert_eq!(triggers(Event::Delete("one"), cache), ["one"]);
    }
}
