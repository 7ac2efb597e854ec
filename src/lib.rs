//! step-operator: step-ca for Kubernetes.
