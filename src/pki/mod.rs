//! Pure PKI helpers: CSR parsing and checks, certificate chain checks, key and CSR generation,
//! and the comparison of an issued certificate with its request.
//!
//! Nothing here does I/O or talks to Kubernetes. Signatures are verified with `ring` (through
//! x509-parser's `verify` feature), keys are generated with rcgen's `ring` backend.

pub mod ca;
pub mod chain;
pub mod csr;
pub mod error;
pub mod fidelity;
pub mod keys;
pub mod usage;

pub use error::Error;

/// Result type of the PKI helpers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Splits `input` into PEM blocks.
///
/// Text around and between blocks is ignored. Errors when there is no block at all (with a
/// specific message when the input looks like binary DER), when a block is truncated, or when a
/// base64 body does not decode. Labels are not checked here.
pub(crate) fn pem_blocks(
    input: &[u8],
    expected: &'static str,
    tool: &'static str,
) -> Result<Vec<pem::Pem>> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let begins = count_occurrences(input, BEGIN);
    if begins == 0 {
        let first = input.iter().find(|b| !b.is_ascii_whitespace());
        return Err(match first {
            None => Error::NoPemBlock { expected },
            Some(0x30) => Error::NotPem { expected, tool },
            Some(_) if std::str::from_utf8(input).is_err() => Error::NotPem { expected, tool },
            Some(_) => Error::NoPemBlock { expected },
        });
    }
    let blocks = pem::parse_many(input).map_err(|e| Error::InvalidPem {
        expected,
        detail: describe_pem_error(&e),
    })?;
    if blocks.len() != begins {
        return Err(Error::InvalidPem {
            expected,
            detail: format!(
                "found {begins} \"-----BEGIN\" lines but only {} complete block(s); a block is \
                 truncated or lacks its \"-----END\" line",
                blocks.len()
            ),
        });
    }
    Ok(blocks)
}

/// Describes a PEM error without echoing the input's data (it may be a private key).
fn describe_pem_error(e: &pem::PemError) -> String {
    use crate::pki::csr::truncate;
    match e {
        pem::PemError::MismatchedTags(begin, end) => format!(
            "the BEGIN label {:?} and the END label {:?} differ",
            truncate(begin, 40),
            truncate(end, 40)
        ),
        pem::PemError::InvalidData(_) => "a block's base64 body does not decode".to_owned(),
        pem::PemError::InvalidHeader(_) => "a block has a malformed header line".to_owned(),
        pem::PemError::NotUtf8(_) => "a block's label or header is not UTF-8".to_owned(),
        pem::PemError::MissingData => "a block has no data".to_owned(),
        pem::PemError::MissingBeginTag
        | pem::PemError::MissingEndTag
        | pem::PemError::MalformedFraming => "a block's BEGIN/END lines are malformed".to_owned(),
    }
}

/// Encodes DER as a PEM block with the given label, LF line endings, ending with `\n`.
pub(crate) fn encode_pem(label: &str, der: &[u8]) -> String {
    let block = pem::Pem::new(label, der.to_vec());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn count_occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_pem_ends_with_newline() {
        let s = encode_pem("CERTIFICATE", &[1, 2, 3]);
        assert!(s.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(s.ends_with("-----END CERTIFICATE-----\n"));
        assert!(!s.contains('\r'));
    }

    #[test]
    fn pem_blocks_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "NoPemBlock"),
            (b"   \n", "NoPemBlock"),
            (b"hello", "NoPemBlock"),
            (&[0x30, 0x82, 0x01, 0x00], "NotPem"),
            (&[0xff, 0xfe, 0x00], "NotPem"),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "InvalidPem"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!notbase64***\n-----END CERTIFICATE-----\n",
                "InvalidPem",
            ),
        ];
        for (input, want) in cases {
            let err = pem_blocks(input, "CERTIFICATE", "x509").unwrap_err();
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "{input:?}: got {got}, want {want}");
        }
    }

    #[test]
    fn pem_errors_do_not_echo_data() {
        let input = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0c2VjcmV0 @@ c2VjcmV0\n-----END PRIVATE KEY-----\n";
        let err = pem_blocks(input, "CERTIFICATE", "x509").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("c2Vjc"), "{err:?}");
    }
}
