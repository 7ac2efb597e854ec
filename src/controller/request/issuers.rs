//! The request path's caches of both issuer kinds, looked up by the key a request names.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::cert_manager::CertificateRequest;
use crate::controller::context::Context;
use crate::controller::decision::IssuerState;
use crate::crd::condition::{Readiness, readiness};
use crate::crd::{StepClusterIssuer, StepIssuer};
use crate::issuer::{IssuerKey, IssuerObject};

use super::failure::SignFailure;
use super::plan::Signed;

#[derive(Clone)]
pub struct IssuerStores {
    pub namespaced: Store<StepIssuer>,
    pub cluster: Store<StepClusterIssuer>,
}

/// One issuer of either kind.
pub enum AnyIssuer {
    Namespaced(Arc<StepIssuer>),
    Cluster(Arc<StepClusterIssuer>),
}

impl IssuerStores {
    pub fn get(&self, key: &IssuerKey) -> Option<AnyIssuer> {
        match key {
            IssuerKey::Namespaced { namespace, name } => self
                .namespaced
                .get(&ObjectRef::new(name).within(namespace))
                .map(AnyIssuer::Namespaced),
            IssuerKey::Cluster { name } => self
                .cluster
                .get(&ObjectRef::new(name))
                .map(AnyIssuer::Cluster),
        }
    }

    pub fn state(&self, key: &IssuerKey) -> IssuerState {
        match self.get(key) {
            Some(AnyIssuer::Namespaced(i)) => IssuerState::Known(issuer_readiness(&*i)),
            Some(AnyIssuer::Cluster(i)) => IssuerState::Known(issuer_readiness(&*i)),
            None => IssuerState::Missing,
        }
    }
}

impl AnyIssuer {
    pub async fn sign(
        &self,
        ctx: &Context,
        cr: &CertificateRequest,
    ) -> Result<Signed, SignFailure> {
        match self {
            AnyIssuer::Namespaced(i) => super::sign::sign_with(ctx, &**i, cr).await,
            AnyIssuer::Cluster(i) => super::sign::sign_with(ctx, &**i, cr).await,
        }
    }

    /// With `spec.revocation.onSupersede`: the signer to revoke with, else `None`.
    pub fn supersede_signer(&self, ctx: &Context) -> Option<crate::step::Signer> {
        fn of<K: IssuerObject>(issuer: &K, ctx: &Context) -> Option<crate::step::Signer> {
            let asked = issuer
                .spec_view()
                .revocation
                .is_some_and(|r| r.on_supersede);
            asked
                .then(|| {
                    ctx.issuers.signers.current(
                        &issuer.key(),
                        &issuer.uid().unwrap_or_default(),
                        issuer.meta().generation.unwrap_or_default(),
                    )
                })
                .flatten()
        }
        match self {
            AnyIssuer::Namespaced(i) => of(&**i, ctx),
            AnyIssuer::Cluster(i) => of(&**i, ctx),
        }
    }

    /// step-ca refused the issuer's token: the issuer is marked and re-checked.
    pub async fn report_auth_failure(&self, ctx: &Context, message: &str) {
        use crate::controller::issuer::report_sign_auth_failure;
        match self {
            AnyIssuer::Namespaced(i) => report_sign_auth_failure(ctx, &**i, message).await,
            AnyIssuer::Cluster(i) => report_sign_auth_failure(ctx, &**i, message).await,
        }
    }
}

pub fn is_ready<K: IssuerObject>(issuer: &K) -> bool {
    issuer_readiness(issuer) == Readiness::Ready
}

fn issuer_readiness<K: IssuerObject>(issuer: &K) -> Readiness {
    let conditions = issuer
        .issuer_status()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    readiness(conditions, issuer.meta().generation)
}
