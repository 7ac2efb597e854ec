//! A provisioner private key given directly (from a Kubernetes Secret) instead of fetched from
//! step-ca's `/provisioners/{kid}/encrypted-key`: for CAs that do not store the encrypted key
//! (provisioners added with only a public key), or whose admins would rather not serve it.
//!
//! Accepted forms, each also base64-wrapped once (standard or URL-safe alphabet, padded or not,
//! with line breaks), because Secrets are often filled with `base64 < file`:
//! - a compact JWE (5 parts), as in ca.json's `encryptedKey`;
//! - a JSON JWE, flattened (`step crypto jwk create` writes this) or general with one recipient;
//! - a plain private JWK (`{"kty":..,"d":..}`).
//!
//! Error messages name the form seen and the fix, never any of the material.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::provisioner::{
    PRIVATE_MEMBERS, ProvisionerKey, decrypt_provisioner_key, wipe_private_members,
};
use super::{Error, Result};

/// What to tell the admin to store, appended to most errors.
const FIX: &str = "store the provisioner's private key, encrypted with the provisioner password (the `encryptedKey` of ca.json, or the output of `step crypto jwk create --password-file ...`) or plain (a private JWK)";

fn invalid(detail: impl Into<String>) -> Error {
    Error::InvalidKeyMaterial {
        detail: detail.into(),
    }
}

/// Loads a provisioner key from what a Secret holds (see the module doc for the forms).
///
/// `password` decrypts a JWE and is required for one (an error says so when it is missing or
/// empty); it is ignored for a plain JWK. It is used verbatim. Decrypting runs PBKDF2 (up to
/// ~150 ms): call this off the async runtime.
pub fn provisioner_key_from_material(
    material: &[u8],
    password: Option<&[u8]>,
) -> Result<ProvisionerKey> {
    load(material, password, false)
}

fn load(material: &[u8], password: Option<&[u8]>, wrapped: bool) -> Result<ProvisionerKey> {
    let text = material.trim_ascii();
    let prefix = if wrapped { "base64 of " } else { "" };
    if text.is_empty() {
        return Err(invalid(format!("it holds {prefix}nothing; {FIX}")));
    }
    if text.starts_with(b"-----BEGIN") {
        return Err(invalid(format!(
            "it holds {prefix}PEM, which is not a provisioner key format; {FIX} (`step crypto jwk create --from-pem` converts a PEM key)"
        )));
    }
    if text.first() == Some(&b'{') {
        return load_json(text, password, prefix);
    }
    let compact: Zeroizing<String> = Zeroizing::new(
        String::from_utf8_lossy(text)
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    match compact.matches('.').count() {
        4 => decrypt(&compact, password, &format!("{prefix}a compact JWE")),
        2 => Err(invalid(format!(
            "it holds {prefix}a 3-part JWS or JWT (a token?), not a key; {FIX}"
        ))),
        0 if !wrapped => match unwrap_base64(&compact) {
            Some(inner) => load(&inner, password, true),
            None => Err(garbage(prefix)),
        },
        _ => Err(garbage(prefix)),
    }
}

fn garbage(prefix: &str) -> Error {
    invalid(format!(
        "it holds {prefix}neither a JWE (compact or JSON) nor a private JWK, nor either of them base64-encoded; {FIX}"
    ))
}

/// Decodes base64 in either alphabet, padded or not. `None` when it is not base64.
fn unwrap_base64(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let normalised: Zeroizing<String> = Zeroizing::new(
        text.trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                other => other,
            })
            .collect(),
    );
    STANDARD_NO_PAD
        .decode(normalised.as_bytes())
        .ok()
        .map(Zeroizing::new)
}

fn load_json(text: &[u8], password: Option<&[u8]>, prefix: &str) -> Result<ProvisionerKey> {
    let mut map: Map<String, Value> = serde_json::from_slice(text).map_err(|_| {
        invalid(format!(
            "it holds {prefix}text that starts like JSON but is not a JSON object; {FIX}"
        ))
    })?;
    if map.contains_key("kty") {
        if !PRIVATE_MEMBERS.iter().any(|m| map.contains_key(*m)) {
            return Err(invalid(format!(
                "it holds {prefix}a public JWK (no \"d\"): store the private key, encrypted with the provisioner password (`step crypto jwk create --password-file ...`) or plain"
            )));
        }
        return ProvisionerKey::from_private_jwk_map(map);
    }
    // Nothing below reads private members, but a JSON JWE could be wrapped around any object.
    wipe_private_members(&mut map);
    if map.get("keys").is_some_and(Value::is_array) {
        return Err(invalid(format!(
            "it holds {prefix}a JWK set (\"keys\"); store the one private key of the provisioner"
        )));
    }
    if let Some(Value::String(jwe)) = map.get("encryptedKey") {
        // A provisioner entry copied from ca.json.
        let jwe = Zeroizing::new(jwe.clone());
        return decrypt(
            &jwe,
            password,
            &format!("{prefix}a ca.json provisioner entry"),
        );
    }
    if map.contains_key("ciphertext") {
        let (compact, form) = json_jwe_to_compact(&map, prefix)?;
        return decrypt(&compact, password, &form);
    }
    Err(invalid(format!(
        "it holds {prefix}JSON that is neither a JWK (no \"kty\") nor a JWE (no \"ciphertext\"); {FIX}"
    )))
}

/// The compact form of a JSON-serialised JWE, which carries the same bytes when every header
/// parameter is in the protected header (as step writes it) and there is no `aad`.
fn json_jwe_to_compact(
    map: &Map<String, Value>,
    prefix: &str,
) -> Result<(Zeroizing<String>, String)> {
    let non_empty =
        |v: Option<&Value>| v.is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty()));
    let unsupported = |what: &str| {
        invalid(format!(
            "it holds {prefix}a JSON JWE with {what}, which step never writes and the compact form cannot carry; re-encrypt the key with `step crypto jwk create --password-file ...`"
        ))
    };
    if map.contains_key("aad") {
        return Err(unsupported("additional authenticated data (\"aad\")"));
    }
    if non_empty(map.get("unprotected")) {
        return Err(unsupported("an unprotected header"));
    }
    let (recipient, form) = match map.get("recipients") {
        None => (map, format!("{prefix}a JSON JWE (flattened)")),
        Some(Value::Array(list)) if list.len() == 1 => match &list[0] {
            Value::Object(r) => (r, format!("{prefix}a JSON JWE (general, one recipient)")),
            _ => return Err(unsupported("a recipient that is not an object")),
        },
        Some(Value::Array(list)) => {
            return Err(unsupported(&format!("{} recipients", list.len())));
        }
        Some(_) => return Err(unsupported("\"recipients\" that is not a list")),
    };
    if non_empty(recipient.get("header")) {
        return Err(unsupported("a per-recipient header"));
    }
    let member = |m: &Map<String, Value>, name: &str| -> Result<String> {
        match m.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(invalid(format!(
                "it holds {form} without the {name:?} member; {FIX}"
            ))),
        }
    };
    let compact = Zeroizing::new(format!(
        "{}.{}.{}.{}.{}",
        member(map, "protected")?,
        member(recipient, "encrypted_key")?,
        member(map, "iv")?,
        member(map, "ciphertext")?,
        member(map, "tag")?,
    ));
    Ok((compact, form))
}

fn decrypt(compact: &str, password: Option<&[u8]>, form: &str) -> Result<ProvisionerKey> {
    let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
        invalid(format!(
            "it holds {form}, an encrypted key, but no provisioner password was given; add the password (the one the key was encrypted with) to the Secret, or store the private JWK unencrypted"
        ))
    })?;
    decrypt_provisioner_key(compact, password).map_err(|e| match e {
        Error::InvalidEncryptedKey { detail } => invalid(format!(
            "it holds {form} that is not a JWE step-operator decrypts ({detail}); {FIX}"
        )),
        other => other,
    })
}

#[cfg(test)]
#[path = "key_material_tests.rs"]
mod tests;
