//! The issuer a Kubernetes CSR or a PodCertificateRequest names, read from the API at signing
//! time (those signers keep no issuer cache): it must exist and be Ready, and its `spec.policy`
//! must parse. What is not so yet is worth another attempt.

use crate::controller::context::Context;
use crate::crd::condition::{Readiness, readiness};
use crate::issuer::{IssuerKey, IssuerObject};
use crate::policy::IssuerPolicy;

/// Why an issuer cannot sign yet; each signer turns it into its own "retry" outcome.
#[derive(Debug, PartialEq, Eq)]
pub struct NotYet {
    pub reason: &'static str,
    pub message: String,
}

fn not_yet(reason: &'static str, message: String) -> NotYet {
    NotYet { reason, message }
}

/// The issuer as the API holds it now (with its caBundle), if it is Ready. `missing_fix` ends
/// the message when it does not exist: what the requester should fix.
pub async fn ready_issuer<K: IssuerObject>(
    ctx: &Context,
    key: &IssuerKey,
    missing_fix: &str,
) -> Result<K, NotYet> {
    let namespace = match key {
        IssuerKey::Namespaced { namespace, .. } => Some(namespace.as_str()),
        IssuerKey::Cluster { .. } => None,
    };
    let issuer = K::api(ctx.client.clone(), namespace)
        .get_opt(key.name())
        .await
        .map_err(|e| not_yet("IssuerReadFailed", format!("failed to read {key}: {e}")))?
        .ok_or_else(|| {
            not_yet(
                "IssuerMissing",
                format!("{key} does not exist: create it, or {missing_fix}"),
            )
        })?;
    let conditions = issuer
        .issuer_status()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    match readiness(conditions, issuer.meta().generation) {
        Readiness::Ready => Ok(issuer),
        Readiness::NotChecked => Err(not_yet(
            "IssuerNotReady",
            format!("{key} has not been checked yet"),
        )),
        Readiness::NotReady { reason, .. } => Err(not_yet(
            "IssuerNotReady",
            format!("{key} is not Ready ({reason}); its status says why"),
        )),
    }
}

/// The issuer's `spec.policy`, or without one its namespace's names only (for pods and
/// ServiceAccounts, whatever `--issuers-without-policy` says for CertificateRequests).
pub fn policy_of<K: IssuerObject>(issuer: &K) -> Result<IssuerPolicy, NotYet> {
    match issuer.spec_view().policy {
        Some(p) => IssuerPolicy::parse(p.input(), issuer.own_namespace().is_none()).map_err(|e| {
            not_yet(
                "InvalidPolicy",
                format!("{} has an unusable spec.policy: {e}", issuer.key()),
            )
        }),
        None => Ok(IssuerPolicy::namespace_names()),
    }
}
