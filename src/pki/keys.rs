//! Private key generation and CSR creation, for the in-pod bootstrapper and renewer.
//!
//! Keys are generated with rcgen's `ring` backend, which can generate ECDSA P-256/P-384 and
//! Ed25519 keys but not RSA keys: [`KeyAlgorithm::Rsa2048`] parses, and [`GeneratedKey::generate`]
//! refuses it with a clear error. An existing RSA PKCS#8 key can still be loaded with
//! [`GeneratedKey::from_pkcs8_pem`] and used to sign CSRs.

use std::fmt;
use std::str::FromStr;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType};

use super::csr::{SanKind, classify_san};
use super::{Error, Result};

/// Key algorithms the pod-side tooling can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default, as in step and autocert).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 with SHA-256 (cannot be generated with the ring backend).
    Rsa2048,
}

impl KeyAlgorithm {
    /// Canonical names, as [`fmt::Display`] writes them.
    pub const NAMES: [&'static str; 4] = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa2048"];

    fn signature_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlgorithm::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::Rsa2048 => "rsa2048",
        })
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;

    /// Case-insensitive; accepts the canonical names and common aliases (`p256`, `P-256`, `ec`,
    /// `ecdsa`, `prime256v1`, `secp256r1`, `p384`, `secp384r1`, `eddsa`, `okp`, `rsa`,
    /// `rsa-2048`).
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match norm.as_str() {
            "ecdsa-p256" | "ecdsa-p-256" | "p256" | "p-256" | "ec" | "ecdsa" | "ec-p256"
            | "prime256v1" | "secp256r1" => KeyAlgorithm::EcdsaP256,
            "ecdsa-p384" | "ecdsa-p-384" | "p384" | "p-384" | "ec-p384" | "secp384r1" => {
                KeyAlgorithm::EcdsaP384
            }
            "ed25519" | "eddsa" | "okp" => KeyAlgorithm::Ed25519,
            "rsa2048" | "rsa-2048" | "rsa" => KeyAlgorithm::Rsa2048,
            _ => {
                return Err(Error::UnsupportedKey {
                    detail: format!(
                        "unknown key algorithm {:?}; use one of {}",
                        super::csr::truncate(s, 64),
                        Self::NAMES.join(", ")
                    ),
                });
            }
        })
    }
}

/// A private key with its algorithm. `Debug` never shows the key.
pub struct GeneratedKey {
    algorithm: KeyAlgorithm,
    key: KeyPair,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("algorithm", &self.algorithm)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl GeneratedKey {
    /// Generates a fresh key. [`KeyAlgorithm::Rsa2048`] gives [`Error::KeyGeneration`]: the ring
    /// backend cannot generate RSA keys.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<GeneratedKey> {
        if algorithm == KeyAlgorithm::Rsa2048 {
            return Err(Error::KeyGeneration {
                detail: "RSA key generation is not available (the ring crypto backend cannot \
                         generate RSA keys); use ecdsa-p256, ecdsa-p384 or ed25519, or provide \
                         an existing RSA key"
                    .to_owned(),
            });
        }
        let key = KeyPair::generate_for(algorithm.signature_algorithm()).map_err(|e| {
            Error::KeyGeneration {
                detail: format!("{algorithm} key generation failed ({e})"),
            }
        })?;
        Ok(GeneratedKey { algorithm, key })
    }

    /// Loads an existing unencrypted PKCS#8 PEM key (`-----BEGIN PRIVATE KEY-----`) of one of
    /// the supported algorithms (RSA keys are used with SHA-256).
    pub fn from_pkcs8_pem(pem_text: &str) -> Result<GeneratedKey> {
        let key = KeyPair::from_pem(pem_text).map_err(|_| Error::KeyGeneration {
            detail: "the private key is not an unencrypted PKCS#8 PEM key (\"-----BEGIN \
                     PRIVATE KEY-----\") of type ECDSA P-256/P-384, Ed25519 or RSA"
                .to_owned(),
        })?;
        let alg = key.algorithm();
        let algorithm = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            KeyAlgorithm::EcdsaP256
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            KeyAlgorithm::EcdsaP384
        } else if alg == &rcgen::PKCS_ED25519 {
            KeyAlgorithm::Ed25519
        } else if alg == &rcgen::PKCS_RSA_SHA256 {
            KeyAlgorithm::Rsa2048
        } else {
            return Err(Error::KeyGeneration {
                detail: "the private key's algorithm is not supported".to_owned(),
            });
        };
        Ok(GeneratedKey { algorithm, key })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Secret: never log it.
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The SubjectPublicKeyInfo DER (compare with [`super::csr::Csr::public_key_der`] and
    /// [`super::chain::CertInfo::public_key_der`]).
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    /// A PEM CSR signed with this key, with subject CN `common_name` (omitted when empty) and
    /// the given SANs, each classified like step-ca does ([`classify_san`]): IP, URI, email or
    /// DNS name.
    pub fn csr_pem(&self, common_name: &str, sans: &[String]) -> Result<String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if !common_name.is_empty() {
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
        }
        params.subject_alt_names = sans
            .iter()
            .map(|s| san_type(s))
            .collect::<Result<Vec<_>>>()?;
        let csr = params
            .serialize_request(&self.key)
            .and_then(|c| c.pem())
            .map_err(|e| Error::KeyGeneration {
                detail: format!("signing the CSR failed ({e})"),
            })?;
        Ok(csr)
    }
}

fn san_type(s: &str) -> Result<SanType> {
    let invalid = |detail: &str| Error::InvalidSan {
        value: super::csr::truncate(s, 256),
        detail: detail.to_owned(),
    };
    if s.is_empty() {
        return Err(invalid("it is empty"));
    }
    let ia5 = || {
        rcgen::string::Ia5String::try_from(s)
            .map_err(|_| invalid("it must be ASCII (use the punycode form of IDNs)"))
    };
    Ok(match classify_san(s) {
        SanKind::Ip(ip) => SanType::IpAddress(ip),
        SanKind::Uri => SanType::URI(ia5()?),
        SanKind::Email => SanType::Rfc822Name(ia5()?),
        SanKind::Dns => SanType::DnsName(ia5()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::csr::{KeyInfo, parse_csr};

    #[test]
    fn from_str_aliases() {
        let cases: &[(&str, Option<KeyAlgorithm>)] = &[
            ("ecdsa-p256", Some(KeyAlgorithm::EcdsaP256)),
            ("P256", Some(KeyAlgorithm::EcdsaP256)),
            ("P-256", Some(KeyAlgorithm::EcdsaP256)),
            (" ec ", Some(KeyAlgorithm::EcdsaP256)),
            ("ecdsa_p384", Some(KeyAlgorithm::EcdsaP384)),
            ("p384", Some(KeyAlgorithm::EcdsaP384)),
            ("Ed25519", Some(KeyAlgorithm::Ed25519)),
            ("rsa2048", Some(KeyAlgorithm::Rsa2048)),
            ("RSA", Some(KeyAlgorithm::Rsa2048)),
            ("rsa4096", None),
            ("p521", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<KeyAlgorithm>().ok(), *want, "{s:?}");
        }
        for name in KeyAlgorithm::NAMES {
            let alg: KeyAlgorithm = name.parse().unwrap();
            assert_eq!(alg.to_string(), name);
        }
        let err = "dsa".parse::<KeyAlgorithm>().unwrap_err();
        assert!(err.to_string().contains("ecdsa-p256"), "{err}");
        assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcdsaP256);
    }

    #[test]
    fn generate_and_csr_round_trip() {
        let sans: Vec<String> = [
            "app.default.svc.cluster.local",
            "app",
            "10.0.0.7",
            "fd00::7",
            "spiffe://cluster.local/ns/default/sa/app",
            "ops@example.com",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let cases = [
            (KeyAlgorithm::EcdsaP256, KeyInfo::Ecdsa { curve: "P-256" }),
            (KeyAlgorithm::EcdsaP384, KeyInfo::Ecdsa { curve: "P-384" }),
            (KeyAlgorithm::Ed25519, KeyInfo::Ed25519),
        ];
        for (alg, info) in cases {
            let key = GeneratedKey::generate(alg).unwrap();
            assert_eq!(key.algorithm(), alg);
            let csr_pem = key.csr_pem("app.default.svc.cluster.local", &sans).unwrap();
            let csr = parse_csr(csr_pem.as_bytes()).unwrap();
            assert_eq!(csr.key, info, "{alg}");
            assert!(csr.signature_verified);
            assert_eq!(
                csr.common_name.as_deref(),
                Some("app.default.svc.cluster.local")
            );
            assert_eq!(csr.dns_names, ["app.default.svc.cluster.local", "app"]);
            assert_eq!(csr.sans(), sans, "{alg}");
            assert_eq!(csr.public_key_der, key.public_key_der());

            let pem = key.private_key_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let reloaded = GeneratedKey::from_pkcs8_pem(&pem).unwrap();
            assert_eq!(reloaded.algorithm(), alg);
            assert_eq!(reloaded.public_key_der(), key.public_key_der());

            // Debug never shows the key.
            let dbg = format!("{key:?}");
            assert!(dbg.contains("[redacted]"));
            let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
            assert!(!dbg.contains(&body));
        }
    }

    #[test]
    fn csr_without_cn_or_sans() {
        let key = GeneratedKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = parse_csr(key.csr_pem("", &[]).unwrap().as_bytes()).unwrap();
        assert_eq!(csr.common_name, None);
        assert!(csr.sans().is_empty());
    }

    #[test]
    fn rsa_generation_is_refused_clearly() {
        let err = GeneratedKey::generate(KeyAlgorithm::Rsa2048).unwrap_err();
        assert_eq!(err.reason(), "KeyGenerationFailed");
        assert!(err.to_string().contains("use ecdsa-p256"), "{err}");
    }

    #[test]
    fn invalid_sans() {
        let key = GeneratedKey::generate(KeyAlgorithm::Ed25519).unwrap();
        for bad in ["", "bücher.example"] {
            let err = key.csr_pem("x", &[bad.to_owned()]).unwrap_err();
            assert!(matches!(err, Error::InvalidSan { .. }), "{bad:?}: {err:?}");
            assert_eq!(err.reason(), "InvalidRequest");
        }
    }

    #[test]
    fn from_pkcs8_pem_rejects_garbage_without_echoing_it() {
        let secretish =
            "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n";
        let err = GeneratedKey::from_pkcs8_pem(secretish).unwrap_err();
        assert!(!err.to_string().contains("U0VDUkVU"));
        assert!(!format!("{err:?}").contains("U0VDUkVU"));
    }
}
