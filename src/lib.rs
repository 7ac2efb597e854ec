//! step-operator: step-ca for Kubernetes.
pub mod webhook;
