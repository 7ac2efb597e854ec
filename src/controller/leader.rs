//! Leader election on a Lease: one replica writes, the others wait as ready standbys.

use anyhow::Context as _;
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the lease lives and who asks for it.
pub struct LeaseSettings<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub identity: &'a str,
    pub duration: std::time::Duration,
}

/// The lease, held. Dropping it without [`Leadership::release`] lets it expire.
pub struct Leadership {
    leader: watch::Receiver<bool>,
    task:
        JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

impl Leadership {
    /// Waits until this replica holds the lease. Meanwhile the replica is ready (`ready`): a
    /// standby serves /metrics and waits.
    pub async fn acquire(
        client: Client,
        lease: &LeaseSettings<'_>,
        ready: &watch::Sender<bool>,
    ) -> anyhow::Result<Leadership> {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client, lease.name)
            .with_namespace(lease.namespace)
            .with_identity(lease.identity)
            .with_duration(lease.duration.as_secs().max(2))
            .with_grace((lease.duration.as_secs() / 3).max(1))
            .with_field_manager(lease_field_manager(lease.identity))
            .build()
            .await
            .with_context(|| {
                format!(
                    "setting up leader election with Lease {}/{}",
                    lease.namespace, lease.name
                )
            })?;
        let (mut leader, task) = manager.watch().await;
        let _ = ready.send(true);
        tracing::info!(
            identity = lease.identity,
            lease = lease.name,
            namespace = lease.namespace,
            "Waiting to become the leader"
        );
        while !*leader.borrow_and_update() {
            // Say so periodically: a standby and a replica that lacks Lease RBAC look the same.
            match tokio::time::timeout(std::time::Duration::from_secs(30), leader.changed()).await {
                Ok(changed) => changed
                    .context("the leader-election task ended before this replica became leader")?,
                Err(_) => tracing::info!(
                    identity = lease.identity,
                    lease = lease.name,
                    namespace = lease.namespace,
                    "Still waiting for the leader lease: another replica holds it, or this ServiceAccount may not get, create or patch Leases in this namespace"
                ),
            }
        }
        tracing::info!(identity = lease.identity, "Became the leader");
        Ok(Leadership { leader, task })
    }

    /// Resolves when this replica no longer holds the lease.
    pub async fn lost(&mut self) {
        let _ = self.leader.wait_for(|is_leader| !*is_leader).await;
    }

    /// Hands the lease over now rather than make a standby wait for it to expire: closing the
    /// receiver makes the lease task release it.
    pub async fn release(self) {
        drop(self.leader);
        match tokio::time::timeout(std::time::Duration::from_secs(3), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("Released the leader lease"),
            _ => tracing::warn!(
                "Could not release the leader lease; a standby takes over when it expires"
            ),
        }
    }
}

/// The field manager of this replica's Lease writes. It must differ between replicas: the lease
/// manager takes the lease with a server-side apply that only conflicts with another manager's
/// fields, so replicas sharing one manager name could each "take" the lease at the same moment
/// and both act as leader until the next renewal (seen with two replicas started together).
fn lease_field_manager(identity: &str) -> String {
    // Field managers are limited to 128 characters; pod names are at most 63.
    let name = format!("step-operator-lease-{identity}");
    name.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_writes_the_lease_as_its_own_field_manager() {
        let a = lease_field_manager("step-operator-controller-7d9f-abcde");
        let b = lease_field_manager("step-operator-controller-7d9f-fghij");
        assert_ne!(a, b);
        assert_eq!(a, "step-operator-lease-step-operator-controller-7d9f-abcde");
        assert!(lease_field_manager(&"x".repeat(300)).chars().count() <= 128);
    }
}
