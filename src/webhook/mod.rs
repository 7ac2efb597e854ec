//! `step-operator webhook`: pod admission (`/mutate`, a pure function of the Pod), pod bootstrap
//! (`/bootstrap`, identity-bound one-time tokens) and the webhook's own serving certificate.
pub mod admission;
pub mod annotations;
pub mod body_budget;
pub mod bootstrap;
pub mod config;
pub mod mutate;
pub mod pod_view;
pub mod rate_limit;
pub mod server;
pub mod serving;
