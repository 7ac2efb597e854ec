//! Where an issuer's provisioner password comes from (a Secret, or the controller's environment
//! or a file), and the version that tells the signer cache when it changed. The password itself
//! is zeroized when dropped and never printed.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

use super::error::IssuerError;
use super::spec::{KeySource, PasswordSource, trim_trailing_whitespace};

/// A password and the version that identifies it in the signer cache (never the password).
pub(super) struct Password {
    pub(super) bytes: zeroize::Zeroizing<Vec<u8>>,
    pub(super) version: String,
}

pub(super) async fn read_password(
    client: &Client,
    source: &PasswordSource,
) -> Result<Password, IssuerError> {
    match source {
        PasswordSource::Secret {
            namespace,
            name,
            key,
        } => {
            let (bytes, version) = match read_secret_key(client, namespace, name, key).await? {
                SecretValue::Found { bytes, version } => (bytes, version),
                SecretValue::NoSecret => {
                    return Err(IssuerError::SecretNotFound {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    });
                }
                SecretValue::NoKey => {
                    return Err(IssuerError::SecretKeyMissing {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        key: key.clone(),
                    });
                }
            };
            Ok(Password { bytes, version })
        }
        PasswordSource::Env(var) => {
            let value = std::env::var_os(var)
                .map(|v| v.into_encoded_bytes())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| IssuerError::PasswordEnvMissing(var.clone()))?;
            Ok(digest_password(trim_trailing_whitespace(&value)))
        }
        PasswordSource::File(path) => {
            let value =
                tokio::fs::read(path)
                    .await
                    .map_err(|e| IssuerError::PasswordFileUnreadable {
                        path: path.clone(),
                        detail: e.kind().to_string(),
                    })?;
            Ok(digest_password(trim_trailing_whitespace(&value)))
        }
    }
}

/// The provisioner key material of `keyRef` (a JWK or JWE, parsed by the signer), and its
/// version for the signer cache.
pub(super) async fn read_key(client: &Client, source: &KeySource) -> Result<Password, IssuerError> {
    match read_secret_key(client, &source.namespace, &source.name, &source.key).await? {
        SecretValue::Found { bytes, version } => Ok(Password { bytes, version }),
        SecretValue::NoSecret => Err(IssuerError::KeySecretNotFound {
            namespace: source.namespace.clone(),
            name: source.name.clone(),
        }),
        SecretValue::NoKey => Err(IssuerError::KeySecretKeyMissing {
            namespace: source.namespace.clone(),
            name: source.name.clone(),
            key: source.key.clone(),
        }),
    }
}

enum SecretValue {
    Found {
        bytes: zeroize::Zeroizing<Vec<u8>>,
        version: String,
    },
    NoSecret,
    NoKey,
}

/// One key of a Secret, with the Secret's resourceVersion as its version (never the value).
async fn read_secret_key(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<SecretValue, IssuerError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(name).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(SecretValue::NoSecret),
        Err(source) => {
            return Err(IssuerError::SecretRead {
                namespace: namespace.to_string(),
                name: name.to_string(),
                source,
            });
        }
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .filter(|v| !v.is_empty());
    Ok(match value {
        Some(v) => SecretValue::Found {
            bytes: zeroize::Zeroizing::new(v),
            version: format!("secret:{}", secret.resource_version().unwrap_or_default()),
        },
        None => SecretValue::NoKey,
    })
}

fn digest_password(value: &[u8]) -> Password {
    Password {
        bytes: zeroize::Zeroizing::new(value.to_vec()),
        version: format!("sha256:{}", hex::encode(Sha256::digest(value))),
    }
}
