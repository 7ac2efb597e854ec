//! Errors of the PKI helpers.
//!
//! Every message names the cause and, where there is one, the fix. No variant ever carries private
//! key material: the only inputs that reach an error message are public (CSRs, certificates, SAN
//! strings, algorithm names).

/// PEM label of a PKCS#10 certificate signing request.
pub const CSR_LABEL: &str = "CERTIFICATE REQUEST";
/// PEM label of an X.509 certificate.
pub const CERTIFICATE_LABEL: &str = "CERTIFICATE";

/// Everything that can go wrong while parsing or checking CSRs, certificates and keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input holds no PEM block at all.
    #[error("no PEM block found: expected PEM text starting with \"-----BEGIN {expected}-----\"")]
    NoPemBlock {
        /// The PEM label that was expected (`CERTIFICATE REQUEST` or `CERTIFICATE`).
        expected: &'static str,
    },

    /// The input looks like binary DER rather than PEM.
    #[error(
        "the input looks like binary DER, but a PEM-encoded {expected} was expected; convert it \
         with `openssl {tool} -inform DER -outform PEM`"
    )]
    NotPem {
        /// The PEM label that was expected.
        expected: &'static str,
        /// The `openssl` subcommand that converts it (`req` or `x509`).
        tool: &'static str,
    },

    /// A PEM block is truncated or its base64 body does not decode.
    #[error("malformed PEM ({expected} expected): {detail}; re-encode the data as PEM")]
    InvalidPem {
        /// The PEM label that was expected.
        expected: &'static str,
        /// What is wrong.
        detail: String,
    },

    /// A CSR input holds more than one PEM block.
    #[error(
        "expected exactly one PEM \"CERTIFICATE REQUEST\" block, found {count}; send one CSR per request"
    )]
    MultiplePemBlocks {
        /// How many blocks were found.
        count: usize,
    },

    /// A PEM block has the wrong label.
    #[error("PEM block labelled \"{label}\" where \"{expected}\" was expected")]
    WrongPemLabel {
        /// The label found.
        label: String,
        /// The label expected.
        expected: &'static str,
    },

    /// The CSR does not decode as PKCS#10.
    #[error("malformed certificate signing request: {detail}; generate a new CSR")]
    MalformedCsr {
        /// What is wrong.
        detail: String,
    },

    /// The CSR's self-signature does not verify with its own public key.
    #[error(
        "the certificate signing request's signature does not verify with its public key (the CSR \
         was altered or signed with another key); generate a new CSR with the private key it names"
    )]
    BadCsrSignature,

    /// An RSA key shorter than 2048 bits.
    #[error("RSA key of {bits} bits is too weak: use at least 2048 bits")]
    WeakRsaKey {
        /// The modulus length in bits.
        bits: u32,
    },

    /// A key type or size that step-ca does not accept.
    #[error(
        "unsupported key ({detail}): only RSA 2048 to 8192 bits, ECDSA P-256, P-384 or P-521, and \
         Ed25519 keys are accepted"
    )]
    UnsupportedKey {
        /// What was found.
        detail: String,
    },

    /// The signature algorithm of a CSR cannot be checked.
    #[error(
        "unsupported signature algorithm {detail}; sign the CSR with SHA-256/384/512 (RSA \
         PKCS#1 v1.5 or PSS), ECDSA with SHA-256/384, or Ed25519"
    )]
    UnsupportedSignatureAlgorithm {
        /// The algorithm OID or name.
        detail: String,
    },

    /// A certificate does not decode.
    #[error("certificate {index} of the chain is malformed: {detail}")]
    MalformedCertificate {
        /// Position in the chain (0 = leaf).
        index: usize,
        /// What is wrong.
        detail: String,
    },

    /// No certificate at all.
    #[error("the certificate chain is empty: the CA returned no certificate")]
    EmptyChain,

    /// More certificates than any sane chain holds.
    #[error("the certificate chain holds {count} certificates, more than the limit of {max}")]
    TooManyCertificates {
        /// How many were found.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// The leaf's public key is not the key of the CSR.
    #[error(
        "the issued certificate's public key does not match the CSR's public key; the CA signed \
         a different key, so the certificate is unusable"
    )]
    KeyMismatch,

    /// Certificate `index` is not issued (signed) by certificate `index + 1`.
    #[error(
        "certificate {index} of the chain is not signed by certificate {next}: the chain is out \
         of order or holds an unrelated certificate; check the intermediate configured in step-ca",
        next = index + 1
    )]
    ChainOrder {
        /// Position of the certificate whose issuer is wrong.
        index: usize,
    },

    /// The issued certificate is already expired.
    #[error(
        "the issued certificate expired at {not_after}; check the requested duration and the \
         clocks of step-ca and of this cluster"
    )]
    Expired {
        /// When it expired (RFC 3339).
        not_after: String,
    },

    /// A SAN string cannot be put in a CSR.
    #[error("invalid subject alternative name {value:?}: {detail}")]
    InvalidSan {
        /// The SAN as given.
        value: String,
        /// What is wrong.
        detail: String,
    },

    /// Key generation or CSR signing failed.
    #[error("key generation failed: {detail}")]
    KeyGeneration {
        /// What failed (never key material).
        detail: String,
    },
}

impl Error {
    /// A stable PascalCase reason, suitable for a Kubernetes condition or Event reason.
    ///
    /// Problems with a CSR map to `InvalidRequest`, problems with an issued certificate or chain map
    /// to `InvalidCertificate`, key generation failures to `KeyGenerationFailed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NoPemBlock { expected }
            | Error::NotPem { expected, .. }
            | Error::InvalidPem { expected, .. }
            | Error::WrongPemLabel { expected, .. } => {
                if *expected == CSR_LABEL {
                    "InvalidRequest"
                } else {
                    "InvalidCertificate"
                }
            }
            Error::MultiplePemBlocks { .. }
            | Error::MalformedCsr { .. }
            | Error::BadCsrSignature
            | Error::WeakRsaKey { .. }
            | Error::UnsupportedKey { .. }
            | Error::UnsupportedSignatureAlgorithm { .. }
            | Error::InvalidSan { .. } => "InvalidRequest",
            Error::MalformedCertificate { .. }
            | Error::EmptyChain
            | Error::TooManyCertificates { .. }
            | Error::KeyMismatch
            | Error::ChainOrder { .. }
            | Error::Expired { .. } => "InvalidCertificate",
            Error::KeyGeneration { .. } => "KeyGenerationFailed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_reasons() {
        let cases: Vec<(Error, &str, &str)> = vec![
            (
                Error::NoPemBlock {
                    expected: CSR_LABEL,
                },
                "InvalidRequest",
                "-----BEGIN CERTIFICATE REQUEST-----",
            ),
            (
                Error::NoPemBlock {
                    expected: CERTIFICATE_LABEL,
                },
                "InvalidCertificate",
                "-----BEGIN CERTIFICATE-----",
            ),
            (
                Error::NotPem {
                    expected: CSR_LABEL,
                    tool: "req",
                },
                "InvalidRequest",
                "openssl req -inform DER",
            ),
            (
                Error::MultiplePemBlocks { count: 2 },
                "InvalidRequest",
                "found 2",
            ),
            (
                Error::WeakRsaKey { bits: 1024 },
                "InvalidRequest",
                "use at least 2048 bits",
            ),
            (
                Error::BadCsrSignature,
                "InvalidRequest",
                "generate a new CSR",
            ),
            (
                Error::ChainOrder { index: 0 },
                "InvalidCertificate",
                "certificate 0 of the chain is not signed by certificate 1",
            ),
            (
                Error::KeyMismatch,
                "InvalidCertificate",
                "does not match the CSR",
            ),
            (
                Error::Expired {
                    not_after: "2021-01-01T00:00:00+00:00".into(),
                },
                "InvalidCertificate",
                "expired at 2021",
            ),
            (
                Error::KeyGeneration { detail: "x".into() },
                "KeyGenerationFailed",
                "key generation failed: x",
            ),
        ];
        for (err, reason, text) in cases {
            assert_eq!(err.reason(), reason, "{err:?}");
            assert!(err.to_string().contains(text), "{err} lacks {text}");
        }
    }
}
