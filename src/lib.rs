//! step-operator: step-ca for Kubernetes. A cert-manager external issuer (`StepIssuer`,
//! `StepClusterIssuer`) and autocert-compatible pod TLS injection, in one binary.

pub mod admin;
pub mod agent;
pub mod args;
pub mod backoff;
pub mod cert_manager;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod error_chain;
pub mod issuer;
pub mod kube_client;
pub mod metrics;
pub mod pki;
pub mod pod_protocol;
pub mod pod_template;
pub mod policy;
pub mod runtime;
pub mod signal;
pub mod step;
pub mod telemetry;
pub mod webhook;
