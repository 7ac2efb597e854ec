//! How the controller's watches load their initial state: paginated LISTs (the default), or a
//! streaming list (a watch with `sendInitialEvents`) on request.
//!
//! A streaming list hands over the cluster's CertificateRequests and Secrets one object at a
//! time, so each is slimmed or dropped before the next arrives (a few MiB less resident memory
//! with 8,000 CertificateRequests and 5,000 Secrets in `make bench`). It is not the default: the
//! apiserver ends the initial events with a bookmark sent on its own schedule, which adds about
//! 0.7 s to start-up and to every relist, and the WatchList feature is off by default in
//! Kubernetes 1.33 and before 1.32. Paged LISTs of 100 objects (10 for CertificateRequests, see
//! [`REQUEST_PAGE_SIZE`]) keep the transient memory of a listing small and work on every
//! apiserver.

use kube::runtime::watcher;

/// `--initial-list`: paged LISTs or a streaming list.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    Paged,
    Streaming,
}

/// The watcher configuration for either strategy.
pub fn watch_config(streaming: bool) -> watcher::Config {
    watch_config_paged(streaming, PAGE_SIZE)
}

/// The watcher configuration for either strategy, with `page_size` objects per LIST page.
pub fn watch_config_paged(streaming: bool, page_size: u32) -> watcher::Config {
    let config = watcher::Config::default();
    if streaming {
        config.streaming_lists()
    } else {
        config.page_size(page_size)
    }
}

/// Objects per page of the initial LIST: small pages keep the transient memory of a listing low
/// (it is freed, but the allocator keeps much of it resident).
pub const PAGE_SIZE: u32 = 100;

/// Objects per page when listing CertificateRequests. Any tenant can create them, for any
/// issuer, with CSRs of about 1 MiB, and kube-client buffers a whole page as text before it
/// decodes it: 100 such requests made one page of about 140 MiB at every (re)start and relist
/// (security review M3). Ten keep a page under about 15 MiB, for ten times the LIST calls,
/// which cost little next to the requests' own size.
pub const REQUEST_PAGE_SIZE: u32 = 10;

/// Streaming lists or not, for a flag value.
pub fn streaming(flag: InitialList) -> bool {
    flag == InitialList::Streaming
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_by_flag() {
        assert!(streaming(InitialList::Streaming));
        assert!(!streaming(InitialList::Paged));
    }

    #[test]
    fn configs() {
        use watcher::InitialListStrategy;
        assert_eq!(
            watch_config(true).initial_list_strategy,
            InitialListStrategy::StreamingList
        );
        let paged = watch_config(false);
        assert_eq!(paged.initial_list_strategy, InitialListStrategy::ListWatch);
        assert_eq!(paged.page_size, Some(PAGE_SIZE));
        let requests = watch_config_paged(false, REQUEST_PAGE_SIZE);
        assert_eq!(requests.page_size, Some(10));
        assert_eq!(
            watch_config_paged(true, REQUEST_PAGE_SIZE).initial_list_strategy,
            InitialListStrategy::StreamingList
        );
    }
}
