//! Client for Smallstep step-ca: the wire protocol (`client`, `revoke`), provisioner key
//! decryption (`provisioner`, on the JWE and JWS primitives in `jwe` and `jws`) or a key given
//! in a Secret (`key_material`), one-time tokens (`token`), what is known about the CA (`facts`)
//! and the per-issuer [`Signer`] built from them.
//!
//! This module knows nothing about Kubernetes (no kube or k8s-openapi imports) so it can be
//! tested against a fake CA and reused by the bootstrap/renew subcommands.

pub mod address_policy;
pub mod client;
mod endpoint;
pub mod error;
pub mod facts;
mod jwe;
mod jws;
pub mod key_material;
mod lookup;
pub mod provisioner;
pub mod revoke;
pub mod signer;
pub mod token;
mod wire;

#[cfg(test)]
pub(crate) mod fake_ca;

pub use address_policy::{Cidr, ForbiddenRanges};
pub use client::{Client, ClientIdentity, ProvisionerInfo, SignRequest, SignResponse, VersionInfo};
pub use endpoint::parse_audience_authority;
pub use error::{Audience, Error};
pub use facts::{CaFacts, ProvisionerClaims, supports_token_binding};
pub use key_material::provisioner_key_from_material;
pub use provisioner::{ProvisionerKey, decrypt_provisioner_key, trim_password};
pub use revoke::{RevocationReason, SerialNumber};
pub use signer::{SignOptions, Signer};
pub use token::{TokenClaims, TokenPurpose, csr_fingerprint, sans_from_csr_parts, subject_for};

/// Result of step-ca operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
