//! JWS signing keys (RFC 7518 §3) built from private JWKs: ring for ES256, ES384, EdDSA and the
//! RSA algorithms, RustCrypto's p521 for ES512, which ring does not implement.
//!
//! Every private JWK member is decoded into a buffer that is wiped when dropped. Error details
//! name the algorithm, the member and the library's reason, never a key byte.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p521::ecdsa::signature::Signer as _;
use ring::rand::SystemRandom;
use ring::rsa::{KeyPairComponents, PublicKeyComponents};
use ring::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, RsaEncoding, RsaKeyPair,
};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{Error, Result};

/// Bytes of a coordinate or private scalar per curve (RFC 7518 §6.2.1.2, §6.2.2.1).
const P256_LEN: usize = 32;
const P384_LEN: usize = 48;
const P521_LEN: usize = 66;
/// SEC 1 prefix of an uncompressed curve point.
const UNCOMPRESSED: u8 = 0x04;

/// A private key ready to produce JWS signatures. Clones share the key.
#[derive(Clone)]
pub(crate) enum JwsSigner {
    /// ES256 and ES384; signatures are the fixed-width r || s JWS requires.
    Ecdsa(Arc<EcdsaKeyPair>),
    /// ES512; signatures are the fixed 132-byte r || s.
    P521(Arc<p521::ecdsa::SigningKey>),
    /// EdDSA over Ed25519.
    Ed25519(Arc<Ed25519KeyPair>),
    /// RS256/384/512 and PS256/384/512, with the padding the alg names.
    Rsa(Arc<RsaKeyPair>, &'static dyn RsaEncoding),
}

/// Signing failed; deliberately without detail, which could only come from inside the key.
#[derive(Debug)]
pub(crate) struct SignFailed;

impl JwsSigner {
    /// Builds the signer for `alg` from a private JWK whose kty and crv the caller has already
    /// matched to `alg`.
    pub(crate) fn from_jwk(alg: &str, jwk: &Map<String, Value>) -> Result<Self> {
        use signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256,
            RSA_PKCS1_SHA384, RSA_PKCS1_SHA512, RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512,
        };
        let signer = match alg {
            "ES256" => ecdsa(alg, &ECDSA_P256_SHA256_FIXED_SIGNING, P256_LEN, jwk)?,
            "ES384" => ecdsa(alg, &ECDSA_P384_SHA384_FIXED_SIGNING, P384_LEN, jwk)?,
            "ES512" => p521(alg, jwk)?,
            "EdDSA" => ed25519(alg, jwk)?,
            "RS256" => rsa(alg, &RSA_PKCS1_SHA256, jwk)?,
            "RS384" => rsa(alg, &RSA_PKCS1_SHA384, jwk)?,
            "RS512" => rsa(alg, &RSA_PKCS1_SHA512, jwk)?,
            "PS256" => rsa(alg, &RSA_PSS_SHA256, jwk)?,
            "PS384" => rsa(alg, &RSA_PSS_SHA384, jwk)?,
            "PS512" => rsa(alg, &RSA_PSS_SHA512, jwk)?,
            other => {
                return Err(Error::UnsupportedKey {
                    detail: format!("alg {other:?}"),
                });
            }
        };
        // ring checks an RSA key's CRT exponents only while signing; a probe signature makes
        // such a key fail here, once, instead of on every token.
        signer
            .sign(b"probe")
            .map_err(|_| rejected(alg, "a probe signature failed"))?;
        Ok(signer)
    }

    /// The JWS signature over `input` (the ASCII of `header.payload`).
    pub(crate) fn sign(&self, input: &[u8]) -> std::result::Result<Vec<u8>, SignFailed> {
        let rng = SystemRandom::new();
        match self {
            JwsSigner::Ecdsa(pair) => pair
                .sign(&rng, input)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| SignFailed),
            JwsSigner::P521(key) => key
                .try_sign(input)
                .map(|sig: p521::ecdsa::Signature| sig.to_bytes().to_vec())
                .map_err(|_| SignFailed),
            JwsSigner::Ed25519(pair) => Ok(pair.sign(input).as_ref().to_vec()),
            JwsSigner::Rsa(pair, padding) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(*padding, &rng, input, &mut sig)
                    .map_err(|_| SignFailed)?;
                Ok(sig)
            }
        }
    }
}

/// An unusable key; `why` is a library's reason code or our own words, never key material.
fn rejected(alg: &str, why: impl fmt::Display) -> Error {
    Error::UnsupportedKey {
        detail: format!("the {alg} private key was rejected: {why}"),
    }
}

/// A JWK member's base64url-decoded bytes, wiped when dropped (public members too: one helper
/// is simpler than two and costs nothing).
fn member(jwk: &Map<String, Value>, name: &str, alg: &str) -> Result<Zeroizing<Vec<u8>>> {
    let Some(Value::String(text)) = jwk.get(name) else {
        return Err(Error::UnsupportedKey {
            detail: format!("the {alg} JWK lacks the {name:?} member"),
        });
    };
    URL_SAFE_NO_PAD
        .decode(text)
        .map(Zeroizing::new)
        .map_err(|_| Error::UnsupportedKey {
            detail: format!("the {alg} JWK member {name:?} is not base64url"),
        })
}

/// A curve member at its full width: RFC 7518 requires full-width values, but left-padding a
/// shorter one is harmless and accepts writers that strip leading zeros.
fn ec_member(
    jwk: &Map<String, Value>,
    name: &str,
    width: usize,
    alg: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = member(jwk, name, alg)?;
    let Some(pad) = width.checked_sub(bytes.len()) else {
        return Err(Error::UnsupportedKey {
            detail: format!("the {alg} JWK member {name:?} is longer than {width} bytes"),
        });
    };
    let mut out = Zeroizing::new(vec![0u8; width]);
    out[pad..].copy_from_slice(&bytes);
    Ok(out)
}

/// The public point as SEC 1 uncompressed bytes: 0x04 || x || y.
fn ec_public_point(jwk: &Map<String, Value>, width: usize, alg: &str) -> Result<Vec<u8>> {
    let x = ec_member(jwk, "x", width, alg)?;
    let y = ec_member(jwk, "y", width, alg)?;
    let mut point = Vec::with_capacity(1 + 2 * width);
    point.push(UNCOMPRESSED);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(point)
}

/// ES256 and ES384. ring also checks that `d` belongs to `x` and `y`.
fn ecdsa(
    alg: &str,
    signing: &'static EcdsaSigningAlgorithm,
    width: usize,
    jwk: &Map<String, Value>,
) -> Result<JwsSigner> {
    let point = ec_public_point(jwk, width, alg)?;
    let d = ec_member(jwk, "d", width, alg)?;
    let pair =
        EcdsaKeyPair::from_private_key_and_public_key(signing, &d, &point, &SystemRandom::new())
            .map_err(|e| rejected(alg, e))?;
    Ok(JwsSigner::Ecdsa(Arc::new(pair)))
}

/// ES512, with the check ring makes for the other curves: a `d` that does not belong to `x`
/// and `y` would sign tokens that the CA, which knows only the public key, rejects.
fn p521(alg: &str, jwk: &Map<String, Value>) -> Result<JwsSigner> {
    let point = ec_public_point(jwk, P521_LEN, alg)?;
    let d = ec_member(jwk, "d", P521_LEN, alg)?;
    let key =
        p521::ecdsa::SigningKey::from_slice(&d).map_err(|_| rejected(alg, "InvalidComponent"))?;
    let public = p521::ecdsa::VerifyingKey::from(&key).to_encoded_point(false);
    if public.as_bytes() != point.as_slice() {
        return Err(rejected(alg, "InconsistentComponents"));
    }
    Ok(JwsSigner::P521(Arc::new(key)))
}

/// EdDSA over Ed25519: `d` is the 32-byte seed, `x` the public key, which ring checks.
fn ed25519(alg: &str, jwk: &Map<String, Value>) -> Result<JwsSigner> {
    let x = member(jwk, "x", alg)?;
    let d = member(jwk, "d", alg)?;
    let pair = Ed25519KeyPair::from_seed_and_public_key(&d, &x).map_err(|e| rejected(alg, e))?;
    Ok(JwsSigner::Ed25519(Arc::new(pair)))
}

/// JWK integers are minimal big-endian (RFC 7518 §2), and ring rejects leading zeros; strip
/// any a lenient writer left.
fn unsigned(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// RSA with the CRT parameters ring signs with. ring accepts 2048- to 4096-bit moduli with
/// e >= 65537 and checks that p * q = n.
fn rsa(
    alg: &str,
    padding: &'static dyn RsaEncoding,
    jwk: &Map<String, Value>,
) -> Result<JwsSigner> {
    if jwk.contains_key("oth") {
        return Err(rejected(alg, "multi-prime RSA keys are not supported"));
    }
    let n = member(jwk, "n", alg)?;
    let e = member(jwk, "e", alg)?;
    let d = member(jwk, "d", alg)?;
    let p = member(jwk, "p", alg)?;
    let q = member(jwk, "q", alg)?;
    let dp = member(jwk, "dp", alg)?;
    let dq = member(jwk, "dq", alg)?;
    let qi = member(jwk, "qi", alg)?;
    let components = KeyPairComponents {
        public_key: PublicKeyComponents {
            n: unsigned(&n),
            e: unsigned(&e),
        },
        d: unsigned(&d),
        p: unsigned(&p),
        q: unsigned(&q),
        dP: unsigned(&dp),
        dQ: unsigned(&dq),
        qInv: unsigned(&qi),
    };
    let pair = RsaKeyPair::from_components(&components).map_err(|e| rejected(alg, e))?;
    Ok(JwsSigner::Rsa(Arc::new(pair), padding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_strips_leading_zeros_only() {
        assert_eq!(unsigned(&[0, 0, 1, 0]), &[1, 0]);
        assert_eq!(unsigned(&[1, 0]), &[1, 0]);
        assert_eq!(unsigned(&[0, 0]), &[] as &[u8]);
        assert_eq!(unsigned(&[]), &[] as &[u8]);
    }

    #[test]
    fn ec_member_pads_short_and_rejects_long_values() {
        let mut jwk = Map::new();
        jwk.insert("x".into(), Value::String(URL_SAFE_NO_PAD.encode([7u8; 3])));
        assert_eq!(
            ec_member(&jwk, "x", 5, "ES256").unwrap().as_slice(),
            &[0, 0, 7, 7, 7]
        );
        let err = ec_member(&jwk, "x", 2, "ES256").unwrap_err();
        assert!(matches!(err, Error::UnsupportedKey { .. }), "{err:?}");
        let err = ec_member(&jwk, "y", 2, "ES256").unwrap_err();
        assert!(err.to_string().contains("\"y\""), "{err}");
    }

    #[test]
    fn jws_signer_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<JwsSigner>();
    }
}
