//! Finding the provisioner on the CA: its key (fetched and decrypted, or given and checked
//! against the CA's list) and its claims.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::client::{Client, ProvisionerInfo};
use super::facts::ProvisionerClaims;
use super::provisioner::{ProvisionerKey, decrypt_provisioner_key, thumbprint};
use super::signer::MAX_SAME_NAME_CANDIDATES;
use super::{Error, Result};

/// Decrypts off the async runtime: PBKDF2 at 600 000 iterations blocks for ~150 ms.
async fn decrypt_blocking(
    jwe: String,
    password: Arc<Zeroizing<Vec<u8>>>,
) -> Result<ProvisionerKey> {
    tokio::task::spawn_blocking(move || decrypt_provisioner_key(&jwe, &password))
        .await
        .map_err(|e| Error::InvalidEncryptedKey {
            detail: format!("the decryption task failed: {e}"),
        })?
}

pub(super) async fn load_by_kid(
    client: &Client,
    name: &str,
    kid: &str,
    password: Arc<Zeroizing<Vec<u8>>>,
) -> Result<ProvisionerKey> {
    let jwe = match client.encrypted_key(kid).await {
        Ok(jwe) => jwe,
        Err(e) if e.http_status() == Some(404) => {
            return Err(diagnose_missing_kid(client, name, kid).await);
        }
        Err(e) => return Err(e),
    };
    let key = decrypt_blocking(jwe, password)
        .await
        .map_err(|e| e.for_provisioner(name))?;
    if key.kid() != kid {
        return Err(Error::KidMismatch {
            expected: kid.to_owned(),
            actual: key.kid().to_owned(),
        });
    }
    Ok(key)
}

/// The encrypted-key endpoint only says 404; the list tells which of name, kid, type or the
/// missing encryptedKey is wrong.
async fn diagnose_missing_kid(client: &Client, name: &str, kid: &str) -> Error {
    let not_found = || Error::ProvisionerNotFound {
        name: name.to_owned(),
        kid: Some(kid.to_owned()),
    };
    let list = match client
        .find_provisioners(|p| p.kid.as_deref() == Some(kid) && p.name == name, 1)
        .await
    {
        Ok(list) => list,
        Err(_) => return not_found(),
    };
    match list
        .iter()
        .find(|p| p.kid.as_deref() == Some(kid) && p.name == name)
    {
        Some(p) if !p.is_jwk() => Error::NotJwkProvisioner {
            name: name.to_owned(),
            actual_type: p.type_.clone(),
        },
        Some(p) if p.encrypted_key.is_none() => Error::NoEncryptedKey {
            name: p.name.clone(),
        },
        _ => not_found(),
    }
}

/// The key of the JWK provisioner called `name` that `password` decrypts, and that
/// provisioner's claims.
pub(super) async fn load_by_name(
    client: &Client,
    name: &str,
    password: Arc<Zeroizing<Vec<u8>>>,
) -> Result<(ProvisionerKey, Option<ProvisionerClaims>)> {
    let named = client
        .find_provisioners(|p| p.name == name, MAX_SAME_NAME_CANDIDATES)
        .await?;
    if named.len() > MAX_SAME_NAME_CANDIDATES {
        return Err(Error::AmbiguousProvisioner {
            name: name.to_owned(),
            limit: MAX_SAME_NAME_CANDIDATES,
        });
    }
    if named.is_empty() {
        return Err(Error::ProvisionerNotFound {
            name: name.to_owned(),
            kid: None,
        });
    }
    let jwk: Vec<&ProvisionerInfo> = named.iter().filter(|p| p.is_jwk()).collect();
    if jwk.is_empty() {
        return Err(Error::NotJwkProvisioner {
            name: name.to_owned(),
            actual_type: named[0].type_.clone(),
        });
    }
    let candidates: Vec<(&ProvisionerInfo, &String)> = jwk
        .iter()
        .filter_map(|p| p.encrypted_key.as_ref().map(|k| (*p, k)))
        .collect();
    if candidates.is_empty() {
        return Err(Error::NoEncryptedKey {
            name: name.to_owned(),
        });
    }
    let mut first_error: Option<Error> = None;
    for (info, jwe) in candidates {
        match decrypt_blocking(jwe.clone(), password.clone()).await {
            Ok(key) => {
                if let Some(expected) = &info.kid
                    && expected != key.kid()
                {
                    first_error.get_or_insert(Error::KidMismatch {
                        expected: expected.clone(),
                        actual: key.kid().to_owned(),
                    });
                    continue;
                }
                return Ok((key, info.claims.clone()));
            }
            Err(e) => {
                // Report a wrong password in preference to a structural problem of another key.
                let replace = match &first_error {
                    None => true,
                    Some(Error::WrongPassword { .. }) => false,
                    Some(_) => matches!(e, Error::WrongPassword { .. }),
                };
                if replace {
                    first_error = Some(e);
                }
            }
        }
    }
    Err(first_error
        .unwrap_or_else(|| Error::NoEncryptedKey {
            name: name.to_owned(),
        })
        .for_provisioner(name))
}

/// The claims of the provisioner `name` with `kid`, when the list can be read within one
/// request timeout. Only informative, so every failure is `None`.
pub(super) async fn claims_by_kid(
    client: &Client,
    name: &str,
    kid: &str,
) -> Option<ProvisionerClaims> {
    // Stops at the first match (more than 0 kept).
    let find = client.find_provisioners(|p| p.kid.as_deref() == Some(kid) && p.name == name, 0);
    match tokio::time::timeout(client.timeout(), find).await {
        Ok(Ok(list)) => list.into_iter().find_map(|p| p.claims),
        _ => None,
    }
}

/// Whether a listed provisioner's public key is `key`'s: the same RFC 7638 thumbprint (the kid
/// of a given key always is its thumbprint), or, when the listed key does not parse, the same
/// listed kid.
fn holds_key(info: &ProvisionerInfo, key: &ProvisionerKey) -> bool {
    let listed = info.key.as_object().and_then(|k| thumbprint(k).ok());
    match listed {
        Some(t) => t == key.kid(),
        None => info.kid.as_deref() == Some(key.kid()),
    }
}

/// Checks a key given in a Secret against the CA's list: when the list names the provisioner,
/// one of the JWK provisioners of that name must hold this public key, else every token would be
/// refused. Returns that provisioner's claims. A list that cannot be read (within one request
/// timeout) is no reason to refuse the key: the first sign will tell.
pub(super) async fn check_given_key(
    client: &Client,
    name: &str,
    key: &ProvisionerKey,
) -> Result<Option<ProvisionerClaims>> {
    let find = client.find_provisioners(|p| p.name == name, MAX_SAME_NAME_CANDIDATES);
    let named = match tokio::time::timeout(client.timeout(), find).await {
        Ok(Ok(named)) => named,
        _ => return Ok(None),
    };
    if named.is_empty() {
        return Err(Error::ProvisionerNotFound {
            name: name.to_owned(),
            kid: Some(key.kid().to_owned()),
        });
    }
    let jwk: Vec<&ProvisionerInfo> = named.iter().filter(|p| p.is_jwk()).collect();
    if jwk.is_empty() {
        return Err(Error::NotJwkProvisioner {
            name: name.to_owned(),
            actual_type: named[0].type_.clone(),
        });
    }
    match jwk.iter().find(|p| holds_key(p, key)) {
        Some(p) => Ok(p.claims.clone()),
        None => Err(Error::ProvisionerKeyMismatch {
            name: name.to_owned(),
            kid: key.kid().to_owned(),
            listed: jwk.iter().filter_map(|p| p.kid.clone()).collect(),
        }),
    }
}
