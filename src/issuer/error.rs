//! Why an issuer cannot sign. Each variant has a stable `reason()` used as the condition reason,
//! the Event reason and the metric label; messages name the cause and the fix, never a secret.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error(
        "Secret {namespace}/{name} with the provisioner password was not found: create it, or fix spec.provisioner.passwordRef.name"
    )]
    SecretNotFound { namespace: String, name: String },

    #[error(
        "Secret {namespace}/{name} has no key {key:?}: add the password under that key, or fix spec.provisioner.passwordRef.key"
    )]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },

    #[error(
        "Secret {namespace}/{name} with the provisioner key was not found: create it, or fix spec.provisioner.keyRef.name"
    )]
    KeySecretNotFound { namespace: String, name: String },

    #[error(
        "Secret {namespace}/{name} has no key {key:?}: add the provisioner's private key (JWK or JWE) under that key, or fix spec.provisioner.keyRef.key"
    )]
    KeySecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },

    #[error("the provisioner key in Secret {namespace}/{name} is unusable: {detail}")]
    InvalidKey {
        namespace: String,
        name: String,
        detail: String,
    },

    #[error(
        "environment variable {0} of the controller is not set: set it in the controller's Deployment, or use passwordRef"
    )]
    PasswordEnvMissing(String),

    #[error(
        "failed to read the password file {path} in the controller's container ({detail}): mount it, or use passwordRef"
    )]
    PasswordFileUnreadable { path: PathBuf, detail: String },

    #[error("failed to read Secret {namespace}/{name}: {source}")]
    SecretRead {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to read {key} from the API: {source}")]
    IssuerRead {
        key: String,
        #[source]
        source: kube::Error,
    },

    #[error("step-ca check failed: {0}")]
    Step(#[from] crate::step::Error),
}

impl IssuerError {
    pub fn reason(&self) -> &'static str {
        match self {
            IssuerError::InvalidSpec(_) => "InvalidSpec",
            IssuerError::SecretNotFound { .. } => "SecretNotFound",
            IssuerError::SecretKeyMissing { .. } => "SecretKeyMissing",
            IssuerError::KeySecretNotFound { .. } => "KeySecretNotFound",
            IssuerError::KeySecretKeyMissing { .. } => "KeySecretKeyMissing",
            IssuerError::InvalidKey { .. } => "InvalidProvisionerKey",
            IssuerError::PasswordEnvMissing(_) => "PasswordEnvMissing",
            IssuerError::PasswordFileUnreadable { .. } => "PasswordFileUnreadable",
            IssuerError::SecretRead { .. } => "SecretReadFailed",
            IssuerError::IssuerRead { .. } => "IssuerReadFailed",
            IssuerError::Step(e) => e.reason(),
        }
    }

    /// The message for `audience`: a tenant's StepIssuer never shows text from the answer of
    /// whatever its URL points at (security review M1).
    pub fn message_for(&self, audience: crate::step::Audience) -> String {
        match self {
            IssuerError::Step(e) => format!("step-ca check failed: {}", e.message_for(audience)),
            other => other.to_string(),
        }
    }

    /// Problems that may heal without anyone editing the issuer or its Secret (a CA or
    /// apiserver blip) are re-checked quickly.
    pub fn is_transient(&self) -> bool {
        match self {
            IssuerError::SecretRead { .. } | IssuerError::IssuerRead { .. } => true,
            IssuerError::Step(e) => e.is_retryable(),
            _ => false,
        }
    }
}
