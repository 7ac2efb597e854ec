//! The name and issuer policy shared by every path that gets a certificate signed: pods through
//! the webhook and `/bootstrap`, and cert-manager CertificateRequests through the controller.
//! Pure, table-tested; no Kubernetes types.

pub mod issuer;
pub mod lifetime;
pub mod names;

pub use issuer::{InvalidPolicy, IssuerPolicy, PolicyInput, Refusal, WithoutPolicy};
pub use names::{NamePolicy, Pattern, PolicyError, Requester};
