//! The compact JWE step writes for provisioner keys: `PBES2-HS256+A128KW` key management
//! (RFC 7518 §4.8) with `A128GCM` or `A256GCM` content encryption (RFC 7518 §5.3).
//!
//! [`CompactJwe::parse`] checks the structure and every size before any expensive work, so
//! garbage, an unknown algorithm or an excessive `p2c` fails fast; only
//! [`CompactJwe::decrypt`] runs PBKDF2. Every buffer that holds key material or plaintext is
//! wiped when dropped.

use std::num::NonZeroU32;

use aes_kw::KekAes128;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::pbkdf2;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{Error, Result};

/// The only key-management algorithm step uses for provisioner keys.
const ALG_PBES2: &str = "PBES2-HS256+A128KW";
/// Smallest accepted PBKDF2 iteration count.
const MIN_P2C: u64 = 1;
/// Largest accepted PBKDF2 iteration count; also go-jose's cap. Bounds the CPU an
/// attacker-controlled CA answer can make us burn.
const MAX_P2C: u64 = 1_000_000;
/// RFC 7518 §4.8.1.1: the salt input must be at least 8 octets.
const MIN_P2S_LEN: usize = 8;
/// A128KW: the key-encryption key is 128 bits.
const KEK_LEN: usize = 16;
/// RFC 3394: a wrapped key is 8 bytes (the integrity block) longer than the key.
const KW_OVERHEAD: usize = 8;
/// AES-GCM in JWE uses 96-bit IVs and 128-bit tags (RFC 7518 §5.3).
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Content-encryption algorithms step has used for provisioner keys.
#[derive(Clone, Copy, Debug)]
enum ContentEncryption {
    A128Gcm,
    A256Gcm,
}

impl ContentEncryption {
    fn from_name(enc: &str) -> Option<Self> {
        match enc {
            "A128GCM" => Some(Self::A128Gcm),
            "A256GCM" => Some(Self::A256Gcm),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::A128Gcm => "A128GCM",
            Self::A256Gcm => "A256GCM",
        }
    }

    /// The content-encryption key length, which is what the wrapped key must unwrap to.
    fn cek_len(self) -> usize {
        self.aead().key_len()
    }

    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Self::A128Gcm => &aead::AES_128_GCM,
            Self::A256Gcm => &aead::AES_256_GCM,
        }
    }
}

/// A structurally valid compact JWE, its segments decoded.
pub(crate) struct CompactJwe<'a> {
    /// The first segment exactly as received: the GCM additional authenticated data.
    protected: &'a str,
    enc: ContentEncryption,
    p2c: NonZeroU32,
    p2s: Vec<u8>,
    wrapped_cek: Vec<u8>,
    iv: [u8; IV_LEN],
    ciphertext: Vec<u8>,
    tag: [u8; TAG_LEN],
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::InvalidEncryptedKey {
        detail: detail.into(),
    }
}

fn wrong_password() -> Error {
    Error::WrongPassword {
        provisioner: String::new(),
    }
}

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid(format!("the {what} is not base64url")))
}

/// Decodes a segment that must have exactly `N` bytes.
fn decode_fixed<const N: usize>(part: &str, what: &str) -> Result<[u8; N]> {
    decode_part(part, what)?
        .try_into()
        .map_err(|_| invalid(format!("the {what} is not {N} bytes")))
}

impl<'a> CompactJwe<'a> {
    /// Splits and decodes a compact JWE and checks its header and segment sizes.
    pub(crate) fn parse(compact: &'a str) -> Result<Self> {
        let parts: Vec<&str> = compact.split('.').collect();
        let [protected, wrapped, iv, ciphertext, tag] = parts[..] else {
            return Err(invalid(format!(
                "expected a compact JWE with 5 dot-separated parts, got {}",
                parts.len()
            )));
        };
        let header = parse_header(protected)?;
        let enc = header_enc(&header)?;
        let p2c = header_p2c(&header)?;
        let p2s = header_p2s(&header)?;
        if header.contains_key("zip") || header.contains_key("crit") {
            return Err(invalid(
                "compressed or critical-header JWEs are not supported",
            ));
        }
        let wrapped_cek = decode_part(wrapped, "encrypted key")?;
        let expected = enc.cek_len() + KW_OVERHEAD;
        if wrapped_cek.len() != expected {
            return Err(invalid(format!(
                "the wrapped key is {} bytes, expected {expected} for {}",
                wrapped_cek.len(),
                enc.name()
            )));
        }
        let iv = decode_fixed::<IV_LEN>(iv, "iv")?;
        let ciphertext = decode_part(ciphertext, "ciphertext")?;
        if ciphertext.is_empty() {
            return Err(invalid("the ciphertext is empty"));
        }
        let tag = decode_fixed::<TAG_LEN>(tag, "tag")?;
        Ok(CompactJwe {
            protected,
            enc,
            p2c,
            p2s,
            wrapped_cek,
            iv,
            ciphertext,
            tag,
        })
    }

    /// Decrypts the content with `password`. A failed key-unwrap integrity check is
    /// [`Error::WrongPassword`]; content that fails GCM authentication after a successful
    /// unwrap has been altered and is [`Error::InvalidEncryptedKey`].
    pub(crate) fn decrypt(&self, password: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if password.is_empty() {
            return Err(wrong_password());
        }
        let kek = self.derive_kek(password);
        let cek = self.unwrap_cek(&kek)?;
        drop(kek);
        self.open(&cek)
    }

    /// PBES2 salt: UTF-8(alg) || 0x00 || p2s (RFC 7518 §4.8.1.1).
    fn pbes2_salt(&self) -> Vec<u8> {
        let mut salt = Vec::with_capacity(ALG_PBES2.len() + 1 + self.p2s.len());
        salt.extend_from_slice(ALG_PBES2.as_bytes());
        salt.push(0);
        salt.extend_from_slice(&self.p2s);
        salt
    }

    /// The key-encryption key: PBKDF2-HMAC-SHA256 over the password.
    fn derive_kek(&self, password: &[u8]) -> Zeroizing<[u8; KEK_LEN]> {
        let mut kek = Zeroizing::new([0u8; KEK_LEN]);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            self.p2c,
            &self.pbes2_salt(),
            password,
            kek.as_mut_slice(),
        );
        kek
    }

    /// The content-encryption key: AES-128 key unwrap (RFC 3394) of the encrypted key.
    fn unwrap_cek(&self, kek: &[u8; KEK_LEN]) -> Result<Zeroizing<Vec<u8>>> {
        let kek = KekAes128::try_from(kek.as_slice())
            .map_err(|_| invalid("the key-encryption key has the wrong size"))?;
        let mut cek = Zeroizing::new(vec![0u8; self.enc.cek_len()]);
        match kek.unwrap(&self.wrapped_cek, cek.as_mut_slice()) {
            Ok(()) => Ok(cek),
            // A wrong password derives a wrong KEK, which only this check can notice.
            Err(aes_kw::Error::IntegrityCheckFailed) => Err(wrong_password()),
            Err(_) => Err(invalid("the wrapped key has the wrong size")),
        }
    }

    /// The plaintext: AES-GCM decryption of ciphertext || tag, authenticating the protected
    /// header as received.
    fn open(&self, cek: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = UnboundKey::new(self.enc.aead(), cek)
            .map_err(|_| invalid("the content-encryption key has the wrong size"))?;
        let key = LessSafeKey::new(key);
        let mut buffer = Zeroizing::new(Vec::with_capacity(self.ciphertext.len() + TAG_LEN));
        buffer.extend_from_slice(&self.ciphertext);
        buffer.extend_from_slice(&self.tag);
        let plaintext_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(self.iv),
                Aad::from(self.protected.as_bytes()),
                buffer.as_mut_slice(),
            )
            .map_err(|_| {
                invalid("decryption failed: the header, iv, ciphertext or tag has been altered")
            })?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }
}

fn parse_header(protected: &str) -> Result<Map<String, Value>> {
    let bytes = decode_part(protected, "protected header")?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("the protected header is not a JSON object"))?;
    match header.get("alg").and_then(Value::as_str) {
        Some(ALG_PBES2) => Ok(header),
        Some(other) => Err(invalid(format!(
            "unsupported alg {other:?}, expected {ALG_PBES2:?}"
        ))),
        None => Err(invalid("the header has no alg")),
    }
}

fn header_enc(header: &Map<String, Value>) -> Result<ContentEncryption> {
    let enc = header
        .get("enc")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ContentEncryption::from_name(enc).ok_or_else(|| {
        invalid(format!(
            "unsupported enc {enc:?}, expected A128GCM or A256GCM"
        ))
    })
}

fn header_p2c(header: &Map<String, Value>) -> Result<NonZeroU32> {
    let p2c = header
        .get("p2c")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("the header has no integer p2c"))?;
    let out_of_range = || invalid(format!("p2c {p2c} is outside {MIN_P2C}..={MAX_P2C}"));
    if !(MIN_P2C..=MAX_P2C).contains(&p2c) {
        return Err(out_of_range());
    }
    u32::try_from(p2c)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(out_of_range)
}

fn header_p2s(header: &Map<String, Value>) -> Result<Vec<u8>> {
    let p2s = header
        .get("p2s")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the header has no p2s"))?;
    let salt = decode_part(p2s, "p2s salt")?;
    if salt.len() < MIN_P2S_LEN {
        return Err(invalid(format!(
            "the p2s salt is shorter than {MIN_P2S_LEN} bytes"
        )));
    }
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7517 Appendix C: the PBES2 salt input and the derived key-encryption key, which are
    /// independent of the content encryption the example uses.
    #[test]
    fn rfc7517_appendix_c_kek() {
        let p2s = [
            217, 96, 147, 112, 150, 117, 70, 247, 127, 8, 155, 137, 174, 42, 80, 215,
        ];
        let jwe = CompactJwe {
            protected: "",
            enc: ContentEncryption::A128Gcm,
            p2c: NonZeroU32::new(4096).unwrap(),
            p2s: p2s.to_vec(),
            wrapped_cek: Vec::new(),
            iv: [0; IV_LEN],
            ciphertext: Vec::new(),
            tag: [0; TAG_LEN],
        };
        let password = b"Thus from my lips, by yours, my sin is purged.";
        assert_eq!(
            *jwe.derive_kek(password),
            [
                110, 171, 169, 92, 129, 92, 109, 117, 233, 242, 116, 233, 170, 14, 24, 75
            ]
        );
    }

    /// RFC 7517 Appendix C.4: the content-encryption key, wrapped with the KEK above.
    #[test]
    fn rfc7517_appendix_c_key_unwrap() {
        let kek = [
            110, 171, 169, 92, 129, 92, 109, 117, 233, 242, 116, 233, 170, 14, 24, 75,
        ];
        let wrapped = [
            78, 186, 151, 59, 11, 141, 81, 240, 213, 245, 83, 211, 53, 188, 134, 188, 66, 125, 36,
            200, 222, 124, 5, 103, 249, 52, 117, 184, 140, 81, 246, 158, 161, 177, 20, 33, 245, 57,
            59, 4,
        ];
        let cek = [
            111, 27, 25, 52, 66, 29, 20, 78, 92, 176, 56, 240, 65, 208, 82, 112, 161, 131, 36, 55,
            202, 236, 185, 172, 129, 23, 153, 194, 195, 48, 253, 182,
        ];
        let jwe = CompactJwe {
            protected: "",
            enc: ContentEncryption::A256Gcm,
            p2c: NonZeroU32::MIN,
            p2s: Vec::new(),
            wrapped_cek: wrapped.to_vec(),
            iv: [0; IV_LEN],
            ciphertext: Vec::new(),
            tag: [0; TAG_LEN],
        };
        assert_eq!(jwe.unwrap_cek(&kek).unwrap().as_slice(), cek);
        let mut wrong = kek;
        wrong[0] ^= 1;
        let err = jwe.unwrap_cek(&wrong).unwrap_err();
        assert!(matches!(err, Error::WrongPassword { .. }), "{err:?}");
    }
}
