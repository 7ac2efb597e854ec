//! Decryption of a JWK provisioner's `encryptedKey` and the resulting signing key.
//!
//! step-ca stores the provisioner's private JWK as a compact JWE encrypted with
//! `PBES2-HS256+A128KW` and `A128GCM` or `A256GCM` (protocol doc §3). Decryption costs one
//! PBKDF2 run of `p2c` iterations (up to ~150 ms at 600 000), so callers decrypt once and keep the
//! [`ProvisionerKey`] in memory.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::jwe::CompactJwe;
use super::jws::JwsSigner;
use super::{Error, Result};

/// JWK members that hold private key material and are wiped after use.
pub(crate) const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A decrypted provisioner private key, ready to sign one-time tokens. Clones share the key.
///
/// The JSON form of the private JWK and every decoded private member are zeroized as soon as the
/// signer is built. The key itself then lives in ring's key pair, which is not wiped when freed,
/// or, for P-521, in a p521 signing key, which is.
#[derive(Clone)]
pub struct ProvisionerKey {
    pub(crate) kid: String,
    pub(crate) alg: String,
    pub(crate) signer: JwsSigner,
    pub(crate) public_jwk: Value,
}

impl ProvisionerKey {
    /// The key id: the JWK's `kid`, which equals its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm tokens are signed with (`ES256`, `EdDSA`, ...).
    pub fn alg(&self) -> &str {
        &self.alg
    }

    /// The public part of the key as a JWK.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// Builds a key from a private JWK (JSON). The input is not retained.
    pub fn from_private_jwk(jwk_json: &[u8]) -> Result<Self> {
        let map: Map<String, Value> =
            serde_json::from_slice(jwk_json).map_err(|_| Error::UnsupportedKey {
                detail: "the decrypted key is not a JSON object".into(),
            })?;
        Self::from_private_jwk_map(map)
    }

    /// As [`Self::from_private_jwk`], from the parsed JSON; the map's private members are wiped.
    pub(crate) fn from_private_jwk_map(map: Map<String, Value>) -> Result<Self> {
        let guard = WipeOnDrop(map);
        let map = &guard.0;
        let kty = str_member(map, "kty").unwrap_or_default().to_owned();
        let crv = str_member(map, "crv").map(str::to_owned);
        let alg = match str_member(map, "alg") {
            Some(a) => a.to_owned(),
            None => derive_alg(&kty, crv.as_deref())?,
        };
        check_alg_matches(&alg, &kty, crv.as_deref())?;
        if !PRIVATE_MEMBERS.iter().any(|m| map.contains_key(*m)) {
            return Err(Error::UnsupportedKey {
                detail: format!("the {kty} JWK holds no private key"),
            });
        }
        let public_jwk = public_members(map, &kty)?;
        let thumbprint = thumbprint(&public_jwk)?;
        let kid = match str_member(map, "kid") {
            Some(kid) if kid != thumbprint => {
                return Err(Error::KidMismatch {
                    expected: kid.to_owned(),
                    actual: thumbprint,
                });
            }
            Some(kid) => kid.to_owned(),
            None => thumbprint,
        };

        let signer = JwsSigner::from_jwk(&alg, map);
        // Wipe the JSON copy of the private key whether or not the signer could be built.
        drop(guard);
        let signer = signer?;

        let mut public_jwk = Value::Object(public_jwk);
        if let Value::Object(m) = &mut public_jwk {
            m.insert("kid".into(), Value::String(kid.clone()));
            m.insert("alg".into(), Value::String(alg.clone()));
        }
        Ok(ProvisionerKey {
            kid,
            alg,
            signer,
            public_jwk,
        })
    }
}

impl fmt::Debug for ProvisionerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionerKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Zeroizes the private members of a JWK map when dropped.
struct WipeOnDrop(Map<String, Value>);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        wipe_private_members(&mut self.0);
    }
}

pub(crate) fn wipe_private_members(map: &mut Map<String, Value>) {
    for member in PRIVATE_MEMBERS {
        if let Some(value) = map.get_mut(*member) {
            wipe_value(value);
        }
    }
}

fn wipe_value(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_value),
        Value::Object(map) => map.values_mut().for_each(wipe_value),
        _ => {}
    }
}

fn str_member<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    map.get(name).and_then(Value::as_str)
}

/// The JWS algorithm to use when the JWK does not say, per protocol doc §3.
fn derive_alg(kty: &str, crv: Option<&str>) -> Result<String> {
    let alg = match (kty, crv) {
        ("EC", Some("P-256")) => "ES256",
        ("EC", Some("P-384")) => "ES384",
        ("EC", Some("P-521")) => "ES512",
        ("OKP", Some("Ed25519")) => "EdDSA",
        ("RSA", _) => "RS256",
        _ => {
            return Err(Error::UnsupportedKey {
                detail: format!("kty {kty:?} crv {crv:?}"),
            });
        }
    };
    Ok(alg.to_owned())
}

fn check_alg_matches(alg: &str, kty: &str, crv: Option<&str>) -> Result<()> {
    let ok = match alg {
        "ES256" => kty == "EC" && crv == Some("P-256"),
        "ES384" => kty == "EC" && crv == Some("P-384"),
        "ES512" => kty == "EC" && crv == Some("P-521"),
        "EdDSA" => kty == "OKP" && crv == Some("Ed25519"),
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => kty == "RSA",
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::UnsupportedKey {
            detail: format!("alg {alg:?} with kty {kty:?} crv {crv:?}"),
        })
    }
}

/// The RFC 7638 required members of the public key, which are also all a verifier needs.
fn public_members(map: &Map<String, Value>, kty: &str) -> Result<Map<String, Value>> {
    let names: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        other => {
            return Err(Error::UnsupportedKey {
                detail: format!("kty {other:?}"),
            });
        }
    };
    let mut out = Map::new();
    for name in names {
        match map.get(*name) {
            Some(Value::String(s)) => {
                out.insert((*name).to_owned(), Value::String(s.clone()));
            }
            _ => {
                return Err(Error::UnsupportedKey {
                    detail: format!("the {kty} JWK lacks the {name:?} member"),
                });
            }
        }
    }
    Ok(out)
}

/// RFC 7638 thumbprint: base64url (no padding) of SHA-256 over the required members, sorted,
/// without whitespace. step uses it as the provisioner kid.
pub fn thumbprint(public_jwk: &Map<String, Value>) -> Result<String> {
    let kty = str_member(public_jwk, "kty").unwrap_or_default();
    let required = public_members(public_jwk, kty)?;
    let sorted: BTreeMap<&String, &Value> = required.iter().collect();
    let json = serde_json::to_string(&sorted).map_err(|e| Error::UnsupportedKey {
        detail: format!("cannot serialise the public key: {e}"),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes())))
}

/// Trims trailing Unicode whitespace like step does for password *files* and env variables
/// (`bytes.TrimRightFunc(pw, unicode.IsSpace)`).
///
/// Kubernetes Secret values are used verbatim (as step-issuer does), so the controller calls this
/// only for passwords read from files or the environment. Invalid UTF-8 at the end stops the
/// trimming, as in Go where it decodes to U+FFFD, which is not a space.
pub fn trim_password(raw: &[u8]) -> &[u8] {
    let mut end = raw.len();
    'outer: while end > 0 {
        for width in 1..=end.min(4) {
            if let Ok(s) = std::str::from_utf8(&raw[end - width..end]) {
                let mut chars = s.chars();
                if let (Some(c), None) = (chars.next(), chars.next()) {
                    if c.is_whitespace() {
                        end -= width;
                        continue 'outer;
                    }
                    break 'outer;
                }
            }
        }
        break;
    }
    &raw[..end]
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::InvalidEncryptedKey {
        detail: detail.into(),
    }
}

/// Decrypts a provisioner's `encryptedKey` (compact JWE) with its password and loads the key.
///
/// The header and segment sizes are checked before any expensive work, so that garbage, an
/// unknown algorithm or an excessive `p2c` fails fast with [`Error::InvalidEncryptedKey`]; an AES
/// key-unwrap integrity failure is reported as [`Error::WrongPassword`]. The password is used as
/// given (see [`trim_password`]).
pub fn decrypt_provisioner_key(jwe_compact: &str, password: &[u8]) -> Result<ProvisionerKey> {
    let payload = CompactJwe::parse(jwe_compact.trim())?.decrypt(password)?;
    ProvisionerKey::from_private_jwk(&payload).map_err(|e| match e {
        Error::UnsupportedKey { detail } if detail.starts_with("the decrypted key") => {
            invalid(detail)
        }
        other => other,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use josekit::jwe::{JweHeader, PBES2_HS256_A128KW};
    use josekit::jwk::Jwk;
    use josekit::jwk::alg::ec::EcCurve;
    use josekit::jwk::alg::ed::EdCurve;
    use proptest::prelude::*;

    /// Upstream vector: smallstep/certificates `ca/testdata/ca.json`, provisioner "mariano"
    /// (A128GCM, p2c 100000, no cty), password "password".
    pub(crate) const MARIANO_JWE: &str = "eyJhbGciOiJQQkVTMi1IUzI1NitBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIiwicDJjIjoxMDAwMDAsInAycyI6IlB1UnJVQ1RZZkR1T2F5MEh2cGl6bncifQ.7a-OP5xWGbFra8m2MN9YuLGt6v4y0wmB.u-54daK2y-0UO9na.3GQy6E52-fOSUu5NJ_sEbxj_T3CTyWb7wOPFv2oI2PBWXp5CLpiWJbCFpF4v2oD9fN5XbxMP14ootbrFjATnoMWfWgyLwG-KOj9BqMGNxhG2v37yC7Wrris6s30nrPa3uyNEYZ12AOQW1K04cU2X0u_qJM3vzMCle548ZFTWs6_d6L8lp3o0F9MEbCmJ4p6CLqQxjxYtn1aD79lM91NbIXpRP3iUFQRly-y_iC2mSkXCdd_cQ6-dqLUchXwWRyVO5nBHb4J87aZ91VApw7ldTLtwRZ2ZGJpqGQGgjTwi4sgjEcMuGg0_83XGk2ubdlKDpmGFedOHS5rYCbxotts.vSYfxsi2UU9LQeySDjAnnQ";
    pub(crate) const MARIANO_KID: &str = "FLIV7q23CXHrg75J2OSbvzwKJJqoxCYixjmsJirneOg";

    /// Which kind of key to generate for a test vector.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum KeyKind {
        P256,
        P384,
        P521,
        Ed25519,
        /// RSA 2048 signing with RS256.
        Rsa,
        /// RSA 2048 signing with PS256.
        RsaPss,
    }

    /// Every kind, for tests that cover them all.
    pub(crate) const ALL_KINDS: [KeyKind; 6] = [
        KeyKind::P256,
        KeyKind::P384,
        KeyKind::P521,
        KeyKind::Ed25519,
        KeyKind::Rsa,
        KeyKind::RsaPss,
    ];

    /// A freshly generated private JWK shaped like step's (use, kty, kid, crv, alg, ...).
    pub(crate) fn generate_private_jwk(kind: KeyKind) -> Jwk {
        let (jwk, alg) = match kind {
            KeyKind::P256 => (Jwk::generate_ec_key(EcCurve::P256), "ES256"),
            KeyKind::P384 => (Jwk::generate_ec_key(EcCurve::P384), "ES384"),
            KeyKind::P521 => (Jwk::generate_ec_key(EcCurve::P521), "ES512"),
            KeyKind::Ed25519 => (Jwk::generate_ed_key(EdCurve::Ed25519), "EdDSA"),
            KeyKind::Rsa => (Jwk::generate_rsa_key(2048), "RS256"),
            KeyKind::RsaPss => (Jwk::generate_rsa_key(2048), "PS256"),
        };
        let mut jwk = jwk.unwrap();
        let public: Map<String, Value> = jwk.as_ref().clone();
        let kid = thumbprint(&public).unwrap();
        jwk.set_key_use("sig");
        jwk.set_algorithm(alg);
        jwk.set_key_id(kid);
        jwk
    }

    /// Encrypts a JWK like `step` does (compact JWE, PBES2-HS256+A128KW).
    pub(crate) fn encrypt_jwk(jwk: &Jwk, password: &[u8], p2c: usize, enc: &str) -> String {
        encrypt_bytes(jwk.to_string().as_bytes(), password, p2c, enc)
    }

    /// Encrypts any plaintext the way `step` encrypts a JWK.
    fn encrypt_bytes(plaintext: &[u8], password: &[u8], p2c: usize, enc: &str) -> String {
        let mut header = JweHeader::new();
        header.set_content_encryption(enc);
        header.set_content_type("jwk+json");
        let mut encrypter = PBES2_HS256_A128KW.encrypter_from_bytes(password).unwrap();
        encrypter.set_iter_count(p2c);
        encrypter.set_salt_len(16);
        josekit::jwe::serialize_compact(plaintext, &header, &encrypter).unwrap()
    }

    fn header_p2c(jwe: &str) -> u64 {
        let h = URL_SAFE_NO_PAD
            .decode(jwe.split('.').next().unwrap())
            .unwrap();
        let v: Value = serde_json::from_slice(&h).unwrap();
        v["p2c"].as_u64().unwrap()
    }

    #[test]
    fn upstream_mariano_vector() {
        let key = decrypt_provisioner_key(MARIANO_JWE, b"password").unwrap();
        assert_eq!(key.kid(), MARIANO_KID);
        assert_eq!(key.alg(), "ES256");
        assert_eq!(key.public_jwk()["crv"], "P-256");
        assert_eq!(
            key.public_jwk()["x"],
            "tTKthEHN7RuybhkaC43J2oLfBG995FNSWbtahLAiK7Y"
        );
        let debug = format!("{key:?}");
        assert!(debug.contains("redacted"), "{debug}");
        assert!(!debug.contains("\"d\""), "{debug}");
    }

    #[test]
    fn upstream_vector_wrong_password() {
        let err = decrypt_provisioner_key(MARIANO_JWE, b"passwort").unwrap_err();
        assert!(matches!(err, Error::WrongPassword { .. }), "{err:?}");
        assert_eq!(err.reason(), "WrongPassword");
        let err = decrypt_provisioner_key(MARIANO_JWE, b"").unwrap_err();
        assert!(matches!(err, Error::WrongPassword { .. }), "{err:?}");
    }

    #[test]
    fn generated_vectors_all_key_types_and_encs() {
        let cases = [
            (KeyKind::P256, "A256GCM", 1000),
            (KeyKind::P256, "A128GCM", 1000),
            (KeyKind::P384, "A256GCM", 1000),
            (KeyKind::P384, "A128GCM", 100_000),
            (KeyKind::Ed25519, "A256GCM", 100_000),
            (KeyKind::Ed25519, "A128GCM", 1000),
            (KeyKind::Rsa, "A256GCM", 1000),
            (KeyKind::Rsa, "A128GCM", 1000),
            (KeyKind::P521, "A256GCM", 1000),
            (KeyKind::P521, "A128GCM", 1000),
            (KeyKind::RsaPss, "A128GCM", 1000),
        ];
        for (kind, enc, p2c) in cases {
            let jwk = generate_private_jwk(kind);
            let jwe = encrypt_jwk(&jwk, b"s3cret pass", p2c, enc);
            assert_eq!(header_p2c(&jwe), p2c as u64);
            let key = decrypt_provisioner_key(&jwe, b"s3cret pass")
                .unwrap_or_else(|e| panic!("{kind:?} {enc}: {e}"));
            assert_eq!(Some(key.kid()), jwk.key_id(), "{kind:?} {enc}");
            assert_eq!(Some(key.alg()), jwk.algorithm(), "{kind:?} {enc}");
            let err = decrypt_provisioner_key(&jwe, b"s3cret pass\n").unwrap_err();
            assert!(
                matches!(err, Error::WrongPassword { .. }),
                "{kind:?} {enc}: {err:?}"
            );
        }
    }

    #[test]
    fn p2c_600000_current_step_default() {
        let jwk = generate_private_jwk(KeyKind::P256);
        let jwe = encrypt_jwk(&jwk, b"pw", 600_000, "A256GCM");
        assert_eq!(header_p2c(&jwe), 600_000);
        let key = decrypt_provisioner_key(&jwe, b"pw").unwrap();
        assert_eq!(Some(key.kid()), jwk.key_id());
    }

    #[test]
    fn alg_derived_when_absent_and_kid_optional() {
        let mut map: Map<String, Value> = generate_private_jwk(KeyKind::P384).into();
        map.remove("alg");
        let kid = map.remove("kid").unwrap();
        let key = ProvisionerKey::from_private_jwk(&serde_json::to_vec(&map).unwrap()).unwrap();
        assert_eq!(key.alg(), "ES384");
        assert_eq!(key.kid(), kid.as_str().unwrap());
    }

    #[test]
    fn kid_mismatch_detected() {
        let mut jwk = generate_private_jwk(KeyKind::P256);
        jwk.set_key_id("not-the-thumbprint");
        let jwe = encrypt_jwk(&jwk, b"pw", 1000, "A256GCM");
        let err = decrypt_provisioner_key(&jwe, b"pw").unwrap_err();
        assert!(matches!(err, Error::KidMismatch { .. }), "{err:?}");
    }

    #[test]
    fn public_only_key_rejected() {
        let jwk = generate_private_jwk(KeyKind::P256).to_public_key().unwrap();
        let jwe = encrypt_jwk(&jwk, b"pw", 1000, "A256GCM");
        let err = decrypt_provisioner_key(&jwe, b"pw").unwrap_err();
        assert!(matches!(err, Error::UnsupportedKey { .. }), "{err:?}");
    }

    fn with_header(jwe: &str, header: &str) -> String {
        let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
        parts[0] = URL_SAFE_NO_PAD.encode(header);
        parts.join(".")
    }

    #[test]
    fn p2c_bounds() {
        for p2c in [0u64, 2_000_000] {
            let header = format!(
                r#"{{"alg":"PBES2-HS256+A128KW","enc":"A128GCM","p2c":{p2c},"p2s":"PuRrUCTYfDuOay0Hvpiznw"}}"#
            );
            let err = decrypt_provisioner_key(&with_header(MARIANO_JWE, &header), b"password")
                .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidEncryptedKey { detail } if detail.contains("p2c")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn unknown_alg_or_enc() {
        for header in [
            r#"{"alg":"PBES2-HS512+A256KW","enc":"A128GCM","p2c":1000,"p2s":"PuRrUCTYfDuOay0Hvpiznw"}"#,
            r#"{"alg":"PBES2-HS256+A128KW","enc":"A128CBC-HS256","p2c":1000,"p2s":"PuRrUCTYfDuOay0Hvpiznw"}"#,
            r#"{"alg":"dir","enc":"A128GCM"}"#,
            r#"{"enc":"A128GCM"}"#,
            r#"[]"#,
        ] {
            let err = decrypt_provisioner_key(&with_header(MARIANO_JWE, header), b"password")
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidEncryptedKey { .. }),
                "{header}: {err:?}"
            );
        }
    }

    #[test]
    fn truncated_and_garbage_jwe() {
        for cut in [0, 1, 10, 100, 150, 200, MARIANO_JWE.len() - 1] {
            let err = decrypt_provisioner_key(&MARIANO_JWE[..cut], b"password").unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidEncryptedKey { .. } | Error::WrongPassword { .. }
                ),
                "cut {cut}: {err:?}"
            );
        }
        // Cut inside the tag: structurally invalid, never "wrong password".
        let err = decrypt_provisioner_key(&MARIANO_JWE[..MARIANO_JWE.len() - 1], b"password")
            .unwrap_err();
        assert!(matches!(err, Error::InvalidEncryptedKey { .. }), "{err:?}");
        let err = decrypt_provisioner_key("a.b.c.d.e", b"password").unwrap_err();
        assert!(matches!(err, Error::InvalidEncryptedKey { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(!msg.contains("password"), "{msg}");
    }

    #[test]
    fn tampered_ciphertext_is_not_wrong_password() {
        let mut parts: Vec<String> = MARIANO_JWE.split('.').map(str::to_owned).collect();
        let mut ct = URL_SAFE_NO_PAD.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = URL_SAFE_NO_PAD.encode(ct);
        let err = decrypt_provisioner_key(&parts.join("."), b"password").unwrap_err();
        assert!(matches!(err, Error::InvalidEncryptedKey { .. }), "{err:?}");
    }

    /// Flips one bit in the decoded segment `index` of a compact JWE.
    fn flip_bit(jwe: &str, index: usize) -> String {
        let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
        let mut bytes = URL_SAFE_NO_PAD.decode(&parts[index]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        parts[index] = URL_SAFE_NO_PAD.encode(bytes);
        parts.join(".")
    }

    #[test]
    fn tampering_is_detected_and_classified() {
        let jwk = generate_private_jwk(KeyKind::P256);
        for enc in ["A128GCM", "A256GCM"] {
            let jwe = encrypt_jwk(&jwk, b"pw", 1000, enc);
            decrypt_provisioner_key(&jwe, b"pw").unwrap();

            // The header is GCM's additional data: any change to it fails authentication.
            let mut header: Map<String, Value> = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(jwe.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap();
            header.insert("kid".into(), Value::String("added".into()));
            let with_added_member = with_header(&jwe, &serde_json::to_string(&header).unwrap());

            for (what, tampered) in [
                ("iv", flip_bit(&jwe, 2)),
                ("ciphertext", flip_bit(&jwe, 3)),
                ("tag", flip_bit(&jwe, 4)),
                ("header", with_added_member),
            ] {
                let err = decrypt_provisioner_key(&tampered, b"pw").unwrap_err();
                assert!(
                    matches!(err, Error::InvalidEncryptedKey { .. }),
                    "{enc} {what}: {err:?}"
                );
            }
            // A changed wrapped key fails the key-unwrap check, like a wrong password does.
            for (what, tampered, password) in [
                ("wrapped key", flip_bit(&jwe, 1), &b"pw"[..]),
                ("password", jwe.clone(), &b"pW"[..]),
            ] {
                let err = decrypt_provisioner_key(&tampered, password).unwrap_err();
                assert!(
                    matches!(err, Error::WrongPassword { .. }),
                    "{enc} {what}: {err:?}"
                );
            }
        }
    }

    /// The base64url `d` of a generated key, to check it never shows up in output.
    fn private_d(jwk: &Jwk) -> String {
        jwk.parameter("d").unwrap().as_str().unwrap().to_owned()
    }

    #[test]
    fn every_key_kind_loads_and_keeps_secrets_out_of_debug() {
        fn check<T: Send + Sync + Clone>() {}
        check::<ProvisionerKey>();
        for kind in ALL_KINDS {
            let jwk = generate_private_jwk(kind);
            let jwe = encrypt_jwk(&jwk, b"pw", 1000, "A128GCM");
            let key = decrypt_provisioner_key(&jwe, b"pw").unwrap();
            let clone = key.clone();
            assert_eq!(clone.kid(), key.kid(), "{kind:?}");
            assert_eq!(Some(clone.alg()), jwk.algorithm(), "{kind:?}");
            let debug = format!("{clone:?}");
            assert!(!debug.contains(&private_d(&jwk)), "{kind:?}: {debug}");
            assert!(!key.public_jwk().to_string().contains("\"d\""), "{kind:?}");
        }
    }

    #[test]
    fn private_key_not_matching_public_key_is_unsupported() {
        for kind in [
            KeyKind::P256,
            KeyKind::P384,
            KeyKind::P521,
            KeyKind::Ed25519,
        ] {
            let mut map: Map<String, Value> = generate_private_jwk(kind).into();
            let other = generate_private_jwk(kind);
            map.insert("d".into(), Value::String(private_d(&other)));
            let err =
                ProvisionerKey::from_private_jwk(&serde_json::to_vec(&map).unwrap()).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedKey { .. }),
                "{kind:?}: {err:?}"
            );
            let msg = err.to_string();
            assert!(!msg.contains(&private_d(&other)), "{kind:?}: {msg}");
        }
    }

    #[test]
    fn broken_rsa_keys_are_unsupported() {
        let jwk = generate_private_jwk(KeyKind::Rsa);
        let other: Map<String, Value> = generate_private_jwk(KeyKind::Rsa).into();
        // A wrong CRT exponent passes ring's construction checks; the probe signature catches it.
        for member in ["dp", "qi", "p"] {
            let mut map: Map<String, Value> = jwk.clone().into();
            map.insert(member.into(), other[member].clone());
            let err =
                ProvisionerKey::from_private_jwk(&serde_json::to_vec(&map).unwrap()).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedKey { .. }),
                "{member}: {err:?}"
            );
        }
        let mut map: Map<String, Value> = jwk.into();
        map.insert("oth".into(), serde_json::json!([]));
        let err = ProvisionerKey::from_private_jwk(&serde_json::to_vec(&map).unwrap()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedKey { .. }), "{err:?}");
    }

    #[test]
    fn trim_password_like_step() {
        assert_eq!(trim_password(b"pw\n"), b"pw");
        assert_eq!(trim_password(b"pw \t\r\n"), b"pw");
        assert_eq!(trim_password(b" pw"), b" pw");
        assert_eq!(trim_password("pw\u{00a0}\u{3000}".as_bytes()), b"pw");
        assert_eq!(trim_password("pw\u{2028}".as_bytes()), b"pw");
        assert_eq!(trim_password(b"pw\xff\n"), b"pw\xff");
        assert_eq!(trim_password(b"\n\n"), b"");
        assert_eq!(trim_password(b""), b"");
        assert_eq!(trim_password("pé".as_bytes()), "pé".as_bytes());
    }

    // Cases: PROPTEST_CASES, 256 by default.
    proptest! {
        #[test]
        fn decrypt_never_panics(input in ".{0,400}", pw in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = decrypt_provisioner_key(&input, &pw);
        }

        #[test]
        fn decrypt_never_panics_on_jwe_like(parts in proptest::collection::vec("[A-Za-z0-9_-]{0,60}", 0..7)) {
            let _ = decrypt_provisioner_key(&parts.join("."), b"password");
        }
    }

    /// The password of [`cheap_vector`].
    const CHEAP_PASSWORD: &[u8] = b"cheap password";

    /// A P-256 key as `step` encrypts it, but with p2c 1000: a mutated copy that keeps the header
    /// costs a millisecond to derive, so the properties below can reach the key unwrap, the GCM
    /// decryption and the JWK parsing in every case. Built once: (JWE, the key's JSON, its kid).
    fn cheap_vector() -> &'static (String, String, String) {
        static VECTOR: std::sync::OnceLock<(String, String, String)> = std::sync::OnceLock::new();
        VECTOR.get_or_init(|| {
            let jwk = generate_private_jwk(KeyKind::P256);
            let jwe = encrypt_jwk(&jwk, CHEAP_PASSWORD, 1000, "A128GCM");
            let kid = jwk.key_id().unwrap().to_owned();
            (jwe, jwk.to_string(), kid)
        })
    }

    /// How far the decryption of an input got, from its result.
    fn stage(result: &Result<ProvisionerKey>) -> &'static str {
        match result {
            Ok(_) => "key",
            Err(Error::WrongPassword { .. }) => "unwrap",
            Err(Error::InvalidEncryptedKey { detail })
                if detail.starts_with("decryption failed") =>
            {
                "gcm"
            }
            Err(Error::InvalidEncryptedKey { detail })
                if detail.starts_with("the decrypted key") =>
            {
                "jwk"
            }
            Err(Error::InvalidEncryptedKey { .. }) => "parse",
            Err(Error::UnsupportedKey { .. } | Error::KidMismatch { .. }) => "jwk",
            Err(_) => "other",
        }
    }

    /// Runs `property` over `strategy` for PROPTEST_CASES cases (256 by default) and returns how
    /// many cases ended in each stage.
    fn count_stages<S: Strategy>(
        strategy: S,
        property: impl Fn(S::Value) -> std::result::Result<&'static str, TestCaseError>,
    ) -> (u32, std::collections::BTreeMap<&'static str, usize>) {
        let config = ProptestConfig::default();
        let cases = config.cases;
        let seen = std::sync::Mutex::new(std::collections::BTreeMap::new());
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let outcome = runner.run(&strategy, |value| {
            let stage = property(value)?;
            *seen.lock().unwrap().entry(stage).or_insert(0) += 1;
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
        let seen = seen.into_inner().unwrap();
        eprintln!("{cases} cases by stage: {seen:?}");
        (cases, seen)
    }

    #[test]
    fn cheap_vector_decrypts() {
        let (jwe, _, kid) = cheap_vector();
        let key = decrypt_provisioner_key(jwe, CHEAP_PASSWORD).unwrap();
        assert_eq!(key.kid(), kid);
        assert_eq!(header_p2c(jwe), 1000);
    }

    /// One byte of the decoded encrypted key, iv, ciphertext or tag changed, the header kept:
    /// the input parses, so a changed encrypted key fails the key unwrap (reported as a wrong
    /// password, which is all AES-KW can tell) and anything else fails GCM authentication.
    #[test]
    fn decrypt_classifies_mutated_segments() {
        let (jwe, _, _) = cheap_vector();
        let parts: Vec<&str> = jwe.split('.').collect();
        let strategy = (1usize..5, any::<proptest::sample::Index>(), 1u8..=255);
        let (cases, stages) = count_stages(strategy, |(segment, idx, xor)| {
            let mut bytes = URL_SAFE_NO_PAD.decode(parts[segment]).unwrap();
            let i = idx.index(bytes.len());
            bytes[i] ^= xor;
            let mut mutated: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
            mutated[segment] = URL_SAFE_NO_PAD.encode(&bytes);
            let result = decrypt_provisioner_key(&mutated.join("."), CHEAP_PASSWORD);
            let want = if segment == 1 { "unwrap" } else { "gcm" };
            prop_assert_eq!(
                stage(&result),
                want,
                "segment {} byte {}: {:?}",
                segment,
                i,
                result.err()
            );
            Ok(want)
        });
        // With a handful of cases both later stages must have been reached.
        if cases >= 32 {
            assert!(stages.get("unwrap").is_some_and(|n| *n > 0), "{stages:?}");
            assert!(stages.get("gcm").is_some_and(|n| *n > 0), "{stages:?}");
        }
    }

    /// One character of the compact form replaced (header included): never a panic, an error
    /// from parsing, the key unwrap or GCM unless the input is unchanged, and not only parse
    /// errors.
    #[test]
    fn decrypt_never_panics_on_mutated_vector() {
        let (jwe, _, kid) = cheap_vector();
        let strategy = (any::<proptest::sample::Index>(), "[A-Za-z0-9_.-]");
        let (cases, stages) = count_stages(strategy, |(idx, c)| {
            let i = idx.index(jwe.len());
            let mut s = jwe.clone();
            s.replace_range(i..i + 1, &c);
            let result = decrypt_provisioner_key(&s, CHEAP_PASSWORD);
            let stage = stage(&result);
            if s == *jwe {
                let loaded = result.map(|k| k.kid().to_owned()).ok();
                prop_assert_eq!(loaded.as_ref(), Some(kid));
            } else {
                prop_assert!(
                    ["parse", "unwrap", "gcm"].contains(&stage),
                    "char {} -> {:?}: {:?}",
                    i,
                    c,
                    result.err()
                );
            }
            Ok(stage)
        });
        if cases >= 32 {
            let later = stages.get("unwrap").unwrap_or(&0) + stages.get("gcm").unwrap_or(&0);
            assert!(later > 0, "no mutation got past parsing: {stages:?}");
        }
    }

    /// A correctly encrypted but mutated JWK (one byte of its JSON replaced): decryption
    /// succeeds, so the JWK parser runs; it either loads the same key or refuses the key.
    #[test]
    fn decrypt_checks_mutated_jwk_plaintext() {
        let (_, json, kid) = cheap_vector();
        let strategy = (any::<proptest::sample::Index>(), 0x20u8..0x7f);
        let (cases, stages) = count_stages(strategy, |(idx, byte)| {
            let mut plaintext = json.clone().into_bytes();
            let i = idx.index(plaintext.len());
            plaintext[i] = byte;
            let jwe = encrypt_bytes(&plaintext, CHEAP_PASSWORD, 1000, "A256GCM");
            let result = decrypt_provisioner_key(&jwe, CHEAP_PASSWORD);
            let stage = stage(&result);
            prop_assert!(
                ["key", "jwk"].contains(&stage),
                "byte {} -> {:?}: {:?}",
                i,
                byte as char,
                result.as_ref().err()
            );
            if let Ok(key) = &result {
                // Any change to a public member or the kid changes the thumbprint check.
                prop_assert_eq!(key.kid(), kid.as_str());
            }
            Ok(stage)
        });
        if cases >= 32 {
            assert!(stages.get("jwk").is_some_and(|n| *n > 0), "{stages:?}");
        }
    }
}
