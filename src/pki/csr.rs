//! PKCS#10 certificate signing requests: parsing, self-signature and key checks, SAN extraction.
//!
//! The rules follow step-ca (`docs/stepca-protocol.md` §7): RSA keys of 2048 to 8192 bits, ECDSA
//! P-256/P-384/P-521 and Ed25519 are accepted; everything else is refused before the CSR is sent.

use std::fmt;
use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use super::error::CSR_LABEL;
use super::usage::{ExtKeyUsage, KeyUsages, ext_key_usages};
use super::{Error, Result};

/// PEM label some older tools (Netscape, MS) write for CSRs.
const NEW_CSR_LABEL: &str = "NEW CERTIFICATE REQUEST";

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA modulus accepted, in bits (the limit of ring's verifier and of step-ca's defaults).
pub const MAX_RSA_BITS: u32 = 8192;

/// The type and size of a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyInfo {
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus length in bits.
        bits: u32,
    },
    /// ECDSA on a named curve: `"P-256"`, `"P-384"` or `"P-521"`.
    Ecdsa {
        /// NIST curve name.
        curve: &'static str,
    },
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyInfo::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyInfo::Ecdsa { curve } => write!(f, "ECDSA {curve}"),
            KeyInfo::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A parsed and checked certificate signing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// The CSR re-encoded as a single PEM block (`CERTIFICATE REQUEST`, LF, ending with `\n`).
    pub pem: String,
    /// The CSR DER.
    pub der: Vec<u8>,
    /// The first subject common name, if any (an empty CN counts as none).
    pub common_name: Option<String>,
    /// DNS SANs, in CSR order.
    pub dns_names: Vec<String>,
    /// IP SANs, in CSR order.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs, in CSR order.
    pub uris: Vec<String>,
    /// Email (rfc822Name) SANs, in CSR order.
    pub emails: Vec<String>,
    /// The SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
    /// Key type and size.
    pub key: KeyInfo,
    /// Whether the self-signature was verified here. Always `true` except for ECDSA P-521 keys,
    /// which ring cannot verify; step-ca still verifies those itself before signing.
    pub signature_verified: bool,
    /// Subject attributes other than the common name (O, OU, C, ...), in CSR order.
    pub subject_attributes: Vec<SubjectAttribute>,
    /// The keyUsage extension the CSR requests, if any.
    pub key_usage: Option<KeyUsages>,
    /// The extendedKeyUsage extension the CSR requests, if any.
    pub ext_key_usages: Option<Vec<ExtKeyUsage>>,
    /// The basicConstraints extension the CSR requests, if any.
    pub basic_constraints: Option<BasicConstraints>,
}

/// A basicConstraints extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BasicConstraints {
    /// `cA`.
    pub ca: bool,
    /// `pathLenConstraint`; `None` means no limit.
    pub path_len: Option<u32>,
}

/// One attribute of a subject name, other than the common name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectAttribute {
    /// The attribute type, as a dotted OID.
    pub oid: String,
    /// The value; `#` and the hex of the DER content when it is not a string.
    pub value: String,
}

/// Names of the subject attribute types people set (those of Go's `pkix.Name` and a few more).
const ATTRIBUTE_NAMES: [(&str, &str); 11] = [
    ("2.5.4.6", "country"),
    ("2.5.4.10", "organization"),
    ("2.5.4.11", "organizational unit"),
    ("2.5.4.7", "locality"),
    ("2.5.4.8", "province"),
    ("2.5.4.9", "street address"),
    ("2.5.4.17", "postal code"),
    ("2.5.4.5", "serial number"),
    ("1.2.840.113549.1.9.1", "email address"),
    ("0.9.2342.19200300.100.1.25", "domain component"),
    ("0.9.2342.19200300.100.1.1", "user ID"),
];

/// OID of the common name attribute.
const OID_COMMON_NAME: &str = "2.5.4.3";

impl SubjectAttribute {
    /// A readable name of the attribute type (`organization`, ...), else its OID.
    pub fn type_name(&self) -> &str {
        ATTRIBUTE_NAMES
            .iter()
            .find(|(oid, _)| *oid == self.oid)
            .map_or(self.oid.as_str(), |(_, name)| name)
    }
}

/// The attributes of `name` other than common names, in order.
pub(crate) fn subject_attributes(name: &X509Name<'_>) -> Vec<SubjectAttribute> {
    name.iter_attributes()
        .map(|attr| SubjectAttribute {
            oid: attr.attr_type().to_id_string(),
            value: match attr.as_str() {
                Ok(s) => s.to_owned(),
                Err(_) => format!("#{}", hex::encode(attr.attr_value().data)),
            },
        })
        .filter(|a| a.oid != OID_COMMON_NAME)
        .collect()
}

impl Csr {
    /// All SANs as strings, in the order DNS names, IP addresses (canonical text form, IPv4-mapped
    /// IPv6 written as IPv4 like Go does), URIs, emails. This is what goes into the token's `sans`.
    pub fn sans(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(
            self.dns_names.len() + self.ip_addresses.len() + self.uris.len() + self.emails.len(),
        );
        out.extend(self.dns_names.iter().cloned());
        out.extend(self.ip_addresses.iter().map(|ip| canonical_ip(*ip)));
        out.extend(self.uris.iter().cloned());
        out.extend(self.emails.iter().cloned());
        out
    }

    /// The token subject (`sub`) for this CSR, never an invented name (step-ca's default
    /// template makes `sub` the certificate's CN): the common name; else the first DNS or IP SAN,
    /// passing over `localhost` and `127.0.0.1` when another DNS or IP SAN exists; else the first
    /// URI, else the first email. `None` when there is none of these.
    pub fn token_subject(&self) -> Option<String> {
        if let Some(cn) = &self.common_name {
            return Some(cn.clone());
        }
        let hosts: Vec<String> = self
            .dns_names
            .iter()
            .cloned()
            .chain(self.ip_addresses.iter().map(|ip| canonical_ip(*ip)))
            .filter(|h| !h.is_empty())
            .collect();
        hosts
            .iter()
            .find(|h| h.as_str() != "localhost" && h.as_str() != "127.0.0.1")
            .or_else(|| hosts.first())
            .or_else(|| self.uris.first())
            .or_else(|| self.emails.first())
            .cloned()
    }
}

/// Text form of an IP address as Go's `net.IP.String()` writes it.
pub fn canonical_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The kind of a SAN string, classified like step-ca's `x509util.SplitSANs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanKind {
    /// Parses as an IP address.
    Ip(IpAddr),
    /// Has a URL scheme (`spiffe://...`, `mailto:...`, and also `host:port`, as in Go).
    Uri,
    /// Contains `@`.
    Email,
    /// Anything else.
    Dns,
}

/// Classifies a SAN string the way step-ca does: IP if it parses as one, else URI if Go's
/// `url.Parse` would find a non-empty scheme (`[A-Za-z][A-Za-z0-9+.-]*:`), else email if it
/// contains `@`, else DNS.
///
/// Like step-ca, `host:8443` counts as a URI (scheme `host`): avoid such SANs.
pub fn classify_san(s: &str) -> SanKind {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return SanKind::Ip(ip);
    }
    if has_url_scheme(s) {
        return SanKind::Uri;
    }
    if s.contains('@') {
        return SanKind::Email;
    }
    SanKind::Dns
}

/// Go's `url.getScheme`: letters first, then letters, digits, `+`, `-`, `.` up to a `:`.
fn has_url_scheme(s: &str) -> bool {
    for (i, c) in s.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' => return i > 0,
            _ => return false,
        }
    }
    false
}

/// Parses a PEM CSR and checks it.
///
/// The input must hold exactly one PEM block labelled `CERTIFICATE REQUEST` (or the legacy
/// `NEW CERTIFICATE REQUEST`); whitespace and text around it are ignored. The self-signature is
/// verified (see [`Csr::signature_verified`] for the one exception), the key must be RSA
/// 2048..=8192 bits, ECDSA P-256/P-384/P-521 or Ed25519. The subject CN and the SANs of the
/// extensionRequest attribute are extracted.
pub fn parse_csr(input: &[u8]) -> Result<Csr> {
    let blocks = super::pem_blocks(input, CSR_LABEL, "req")?;
    let block = match blocks.as_slice() {
        [] => {
            return Err(Error::NoPemBlock {
                expected: CSR_LABEL,
            });
        }
        [one] => one,
        many => return Err(Error::MultiplePemBlocks { count: many.len() }),
    };
    if block.tag() != CSR_LABEL && block.tag() != NEW_CSR_LABEL {
        return Err(Error::WrongPemLabel {
            label: truncate(block.tag(), 64),
            expected: CSR_LABEL,
        });
    }
    parse_csr_der(block.contents())
}

/// Parses and checks a DER CSR; see [`parse_csr`].
pub fn parse_csr_der(der: &[u8]) -> Result<Csr> {
    let (rest, req) = X509CertificationRequest::from_der(der).map_err(|e| Error::MalformedCsr {
        detail: format!("not a PKCS#10 structure ({e})"),
    })?;
    if !rest.is_empty() {
        return Err(Error::MalformedCsr {
            detail: format!("{} unexpected bytes after the CSR", rest.len()),
        });
    }
    let info = &req.certification_request_info;
    let key = key_info(&info.subject_pki)?;

    let signature_verified = match req.verify_signature() {
        Ok(()) => true,
        Err(X509Error::SignatureUnsupportedAlgorithm)
            if key == (KeyInfo::Ecdsa { curve: "P-521" }) =>
        {
            false
        }
        Err(X509Error::SignatureUnsupportedAlgorithm) => {
            return Err(Error::UnsupportedSignatureAlgorithm {
                detail: format!(
                    "{} with a {key} key",
                    req.signature_algorithm.algorithm.to_id_string()
                ),
            });
        }
        Err(_) => return Err(Error::BadCsrSignature),
    };

    let common_name = match info.subject.iter_common_name().next() {
        None => None,
        Some(cn) => {
            let s = cn.as_str().map_err(|e| Error::MalformedCsr {
                detail: format!("the subject common name is not a readable string ({e})"),
            })?;
            (!s.is_empty()).then(|| s.to_owned())
        }
    };

    let mut csr = Csr {
        pem: super::encode_pem(CSR_LABEL, der),
        der: der.to_vec(),
        common_name,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        uris: Vec::new(),
        emails: Vec::new(),
        public_key_der: info.subject_pki.raw.to_vec(),
        key,
        signature_verified,
        subject_attributes: subject_attributes(&info.subject),
        key_usage: None,
        ext_key_usages: None,
        basic_constraints: None,
    };
    collect_extensions(&req, &mut csr)?;
    Ok(csr)
}

/// The SANs, key usages and basic constraints of the CSR's extensionRequest attribute.
fn collect_extensions(req: &X509CertificationRequest<'_>, csr: &mut Csr) -> Result<()> {
    let Some(extensions) = req.requested_extensions() else {
        return Ok(());
    };
    for ext in extensions {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                collect_sans(&san.general_names, csr)?;
            }
            ParsedExtension::KeyUsage(ku) => {
                csr.key_usage = Some(KeyUsages::from_bits(ku.flags));
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                csr.ext_key_usages = Some(ext_key_usages(eku));
            }
            ParsedExtension::BasicConstraints(bc) => {
                csr.basic_constraints = Some(BasicConstraints {
                    ca: bc.ca,
                    path_len: bc.path_len_constraint,
                });
            }
            ParsedExtension::ParseError { error } => {
                return Err(Error::MalformedCsr {
                    detail: format!("a requested extension does not parse ({error})"),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn collect_sans(names: &[GeneralName<'_>], csr: &mut Csr) -> Result<()> {
    for name in names {
        match name {
            GeneralName::DNSName(s) => csr.dns_names.push((*s).to_owned()),
            GeneralName::URI(s) => csr.uris.push((*s).to_owned()),
            GeneralName::RFC822Name(s) => csr.emails.push((*s).to_owned()),
            GeneralName::IPAddress(bytes) => {
                csr.ip_addresses
                    .push(ip_from_bytes(bytes).ok_or_else(|| Error::MalformedCsr {
                        detail: format!(
                            "an IP address SAN has {} bytes; it must have 4 (IPv4) or 16 (IPv6)",
                            bytes.len()
                        ),
                    })?)
            }
            GeneralName::Invalid(_, _) => {
                return Err(Error::MalformedCsr {
                    detail: "a subject alternative name is not valid (for example a DNS name \
                             that is not ASCII)"
                        .to_owned(),
                });
            }
            // Other name forms (otherName, directoryName, ...) are not used by step-ca's checks.
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

/// Classifies a SubjectPublicKeyInfo and enforces the accepted key types and sizes.
pub(crate) fn key_info(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyInfo> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let parsed = spki.parsed().map_err(|e| Error::MalformedCsr {
            detail: format!("the RSA public key does not parse ({e})"),
        })?;
        let x509_parser::public_key::PublicKey::RSA(rsa) = parsed else {
            return Err(Error::MalformedCsr {
                detail: "the RSA public key does not parse".to_owned(),
            });
        };
        let bits = modulus_bits(rsa.modulus);
        if bits < MIN_RSA_BITS {
            return Err(Error::WeakRsaKey { bits });
        }
        if bits > MAX_RSA_BITS {
            return Err(Error::UnsupportedKey {
                detail: format!("RSA {bits}"),
            });
        }
        return Ok(KeyInfo::Rsa { bits });
    }
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyInfo::Ecdsa { curve: "P-256" }),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyInfo::Ecdsa { curve: "P-384" }),
            Some(c) if c == OID_NIST_EC_P521 => Ok(KeyInfo::Ecdsa { curve: "P-521" }),
            Some(c) => Err(Error::UnsupportedKey {
                detail: format!("ECDSA on curve {}", c.to_id_string()),
            }),
            None => Err(Error::UnsupportedKey {
                detail: "ECDSA without a named curve".to_owned(),
            }),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return Ok(KeyInfo::Ed25519);
    }
    Err(Error::UnsupportedKey {
        detail: format!("key algorithm {}", alg.to_id_string()),
    })
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn modulus_bits(modulus: &[u8]) -> u32 {
    let trimmed = match modulus.iter().position(|b| *b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    let Some(first) = trimmed.first() else {
        return 0;
    };
    let bytes = u32::try_from(trimmed.len()).unwrap_or(u32::MAX / 8);
    (bytes - 1) * 8 + (8 - first.leading_zeros())
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType, SignatureAlgorithm};

    const RSA1024: &str = include_str!("testdata/csr-rsa1024.pem");
    const RSA2048: &str = include_str!("testdata/csr-rsa2048.pem");
    const RSA4096: &str = include_str!("testdata/csr-rsa4096.pem");
    const RSA2048_PSS_SIG: &str = include_str!("testdata/csr-rsa2048-pss-sig.pem");
    const RSA2048_SHA1: &str = include_str!("testdata/csr-rsa2048-sha1.pem");
    const RSAPSS_KEY: &str = include_str!("testdata/csr-rsapss-key.pem");
    const P521: &str = include_str!("testdata/csr-p521.pem");
    const SECP256K1: &str = include_str!("testdata/csr-secp256k1.pem");
    const ED448: &str = include_str!("testdata/csr-ed448.pem");

    fn rcgen_csr(alg: &'static SignatureAlgorithm, cn: &str, sans: Vec<SanType>) -> String {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if !cn.is_empty() {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn sample_sans() -> Vec<SanType> {
        vec![
            SanType::DnsName("a.example.com".try_into().unwrap()),
            SanType::DnsName("*.b.example.com".try_into().unwrap()),
            SanType::IpAddress("192.0.2.7".parse().unwrap()),
            SanType::IpAddress("2001:db8::1".parse().unwrap()),
            SanType::URI(
                "spiffe://cluster.local/ns/default/sa/web"
                    .try_into()
                    .unwrap(),
            ),
            SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
        ]
    }

    #[test]
    fn valid_csrs() {
        struct Case {
            name: &'static str,
            pem: String,
            key: KeyInfo,
            cn: Option<&'static str>,
            verified: bool,
        }
        let cases = vec![
            Case {
                name: "rsa2048 openssl",
                pem: RSA2048.to_owned(),
                key: KeyInfo::Rsa { bits: 2048 },
                cn: Some("rsa2048.example.com"),
                verified: true,
            },
            Case {
                name: "rsa4096 openssl",
                pem: RSA4096.to_owned(),
                key: KeyInfo::Rsa { bits: 4096 },
                cn: Some("rsa4096.example.com"),
                verified: true,
            },
            Case {
                name: "rsa2048 with PSS signature",
                pem: RSA2048_PSS_SIG.to_owned(),
                key: KeyInfo::Rsa { bits: 2048 },
                cn: Some("psssig.example.com"),
                verified: true,
            },
            Case {
                name: "rsa2048 with SHA-1 signature",
                pem: RSA2048_SHA1.to_owned(),
                key: KeyInfo::Rsa { bits: 2048 },
                cn: Some("sha1.example.com"),
                verified: true,
            },
            Case {
                name: "p521 openssl (signature left to step-ca)",
                pem: P521.to_owned(),
                key: KeyInfo::Ecdsa { curve: "P-521" },
                cn: Some("p521.example.com"),
                verified: false,
            },
            Case {
                name: "p256 rcgen",
                pem: rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, "p256", sample_sans()),
                key: KeyInfo::Ecdsa { curve: "P-256" },
                cn: Some("p256"),
                verified: true,
            },
            Case {
                name: "p384 rcgen",
                pem: rcgen_csr(&rcgen::PKCS_ECDSA_P384_SHA384, "p384", sample_sans()),
                key: KeyInfo::Ecdsa { curve: "P-384" },
                cn: Some("p384"),
                verified: true,
            },
            Case {
                name: "ed25519 rcgen",
                pem: rcgen_csr(&rcgen::PKCS_ED25519, "ed", sample_sans()),
                key: KeyInfo::Ed25519,
                cn: Some("ed"),
                verified: true,
            },
            Case {
                name: "no subject, no SANs",
                pem: rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, "", vec![]),
                key: KeyInfo::Ecdsa { curve: "P-256" },
                cn: None,
                verified: true,
            },
        ];
        for c in cases {
            let csr = parse_csr(c.pem.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(csr.key, c.key, "{}", c.name);
            assert_eq!(csr.common_name.as_deref(), c.cn, "{}", c.name);
            assert_eq!(csr.signature_verified, c.verified, "{}", c.name);
            assert!(csr.pem.ends_with("-----END CERTIFICATE REQUEST-----\n"));
            assert_eq!(parse_csr(csr.pem.as_bytes()).unwrap().der, csr.der);
            assert!(!csr.public_key_der.is_empty());
        }
    }

    #[test]
    fn key_info_display() {
        assert_eq!(KeyInfo::Rsa { bits: 2048 }.to_string(), "RSA 2048");
        assert_eq!(KeyInfo::Ecdsa { curve: "P-256" }.to_string(), "ECDSA P-256");
        assert_eq!(KeyInfo::Ed25519.to_string(), "Ed25519");
    }

    #[test]
    fn san_extraction_rcgen() {
        let pem = rcgen_csr(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            "a.example.com",
            sample_sans(),
        );
        let csr = parse_csr(pem.as_bytes()).unwrap();
        assert_eq!(csr.dns_names, ["a.example.com", "*.b.example.com"]);
        assert_eq!(
            csr.ip_addresses,
            [
                "192.0.2.7".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(csr.uris, ["spiffe://cluster.local/ns/default/sa/web"]);
        assert_eq!(csr.emails, ["ops@example.com"]);
        assert_eq!(
            csr.sans(),
            [
                "a.example.com",
                "*.b.example.com",
                "192.0.2.7",
                "2001:db8::1",
                "spiffe://cluster.local/ns/default/sa/web",
                "ops@example.com"
            ]
        );
    }

    #[test]
    fn requested_subject_and_extensions() {
        use crate::pki::usage::KeyUsage;
        use rcgen::{BasicConstraints as Bc, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "ca");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme");
        params.distinguished_name.push(DnType::CountryName, "DE");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.is_ca = IsCa::Ca(Bc::Constrained(1));
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let csr = parse_csr(pem.as_bytes()).unwrap();

        let attrs: Vec<(&str, &str)> = csr
            .subject_attributes
            .iter()
            .map(|a| (a.type_name(), a.value.as_str()))
            .collect();
        assert_eq!(attrs, [("organization", "Acme"), ("country", "DE")]);
        let ku: Vec<KeyUsage> = csr.key_usage.unwrap().iter().collect();
        assert_eq!(ku, [KeyUsage::KeyCertSign, KeyUsage::CrlSign]);
        let eku: Vec<String> = csr
            .ext_key_usages
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(eku, ["codeSigning"]);
        assert_eq!(
            csr.basic_constraints,
            Some(BasicConstraints {
                ca: true,
                path_len: Some(1)
            })
        );

        let plain = parse_csr(RSA2048.as_bytes()).unwrap();
        assert_eq!(plain.key_usage, None);
        assert_eq!(plain.ext_key_usages, None);
        assert_eq!(plain.basic_constraints, None);
        assert_eq!(plain.subject_attributes[0].type_name(), "organization");
    }

    #[test]
    fn san_extraction_openssl() {
        let csr = parse_csr(RSA2048.as_bytes()).unwrap();
        assert_eq!(csr.dns_names, ["rsa.example.com", "www.example.com"]);
        assert_eq!(
            csr.sans(),
            [
                "rsa.example.com",
                "www.example.com",
                "10.0.0.1",
                "2001:db8::1",
                "spiffe://cluster.local/ns/default/sa/app",
                "admin@example.com"
            ]
        );
    }

    #[test]
    fn token_subject_cases() {
        let dns = |s: &str| SanType::DnsName(s.try_into().unwrap());
        let ip = |s: &str| SanType::IpAddress(s.parse().unwrap());
        let uri = |s: &str| SanType::URI(s.try_into().unwrap());
        let email = |s: &str| SanType::Rfc822Name(s.try_into().unwrap());
        let cases: Vec<(&str, Vec<SanType>, Option<&str>)> = vec![
            ("cn.example", vec![dns("a.example")], Some("cn.example")),
            (
                "",
                vec![dns("localhost"), ip("127.0.0.1"), dns("b.example")],
                Some("b.example"),
            ),
            ("", vec![ip("127.0.0.1"), ip("10.0.0.1")], Some("10.0.0.1")),
            ("", vec![dns("localhost")], Some("localhost")),
            (
                "",
                vec![ip("127.0.0.1"), dns("localhost")],
                Some("localhost"),
            ),
            (
                "",
                vec![uri("spiffe://c/ns/a"), dns("localhost")],
                Some("localhost"),
            ),
            (
                "",
                vec![email("ops@example.com"), uri("spiffe://c/ns/a")],
                Some("spiffe://c/ns/a"),
            ),
            ("", vec![email("ops@example.com")], Some("ops@example.com")),
            ("", vec![], None),
        ];
        for (cn, sans, want) in cases {
            let pem = rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, cn, sans);
            let csr = parse_csr(pem.as_bytes()).unwrap();
            assert_eq!(csr.token_subject().as_deref(), want, "{cn:?}");
        }
    }

    #[test]
    fn ipv4_mapped_is_written_as_ipv4() {
        let sans = vec![SanType::IpAddress("::ffff:10.1.2.3".parse().unwrap())];
        let pem = rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, "", sans);
        let csr = parse_csr(pem.as_bytes()).unwrap();
        assert_eq!(csr.sans(), ["10.1.2.3"]);
    }

    fn flip_signature_byte(pem_text: &str) -> String {
        let block = pem::parse(pem_text).unwrap();
        let mut der = block.contents().to_vec();
        // The signature BIT STRING is the last element: flip its last byte.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        crate::pki::encode_pem(CSR_LABEL, &der)
    }

    fn flip_subject_byte(pem_text: &str, needle: &[u8]) -> String {
        let block = pem::parse(pem_text).unwrap();
        let mut der = block.contents().to_vec();
        let pos = der.windows(needle.len()).position(|w| w == needle).unwrap();
        der[pos] ^= 0x20; // change the case of the first letter
        crate::pki::encode_pem(CSR_LABEL, &der)
    }

    #[test]
    fn invalid_csrs() {
        let p256 = rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, "x.example.com", vec![]);
        let ed = rcgen_csr(&rcgen::PKCS_ED25519, "ed.example.com", vec![]);
        let der = pem::parse(&p256).unwrap().contents().to_vec();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "NoPemBlock"),
            ("no pem", b"just some text".to_vec(), "NoPemBlock"),
            ("der input", der.clone(), "NotPem"),
            (
                "two blocks",
                format!("{p256}\n{p256}").into_bytes(),
                "MultiplePemBlocks",
            ),
            (
                "garbage base64",
                b"-----BEGIN CERTIFICATE REQUEST-----\n@@@@ not base64 @@@@\n-----END CERTIFICATE REQUEST-----\n"
                    .to_vec(),
                "InvalidPem",
            ),
            (
                "valid base64, not a CSR",
                b"-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE REQUEST-----\n"
                    .to_vec(),
                "MalformedCsr",
            ),
            (
                "wrong label",
                p256.replace("CERTIFICATE REQUEST", "CERTIFICATE").into_bytes(),
                "WrongPemLabel",
            ),
            (
                "truncated",
                p256.as_bytes()[..p256.len() / 2].to_vec(),
                "InvalidPem",
            ),
            (
                "tampered signature p256",
                flip_signature_byte(&p256).into_bytes(),
                "BadCsrSignature",
            ),
            (
                "tampered signature ed25519",
                flip_signature_byte(&ed).into_bytes(),
                "BadCsrSignature",
            ),
            (
                "tampered subject ed25519",
                flip_subject_byte(&ed, b"ed.example.com").into_bytes(),
                "BadCsrSignature",
            ),
            (
                "tampered signature rsa",
                flip_signature_byte(RSA2048).into_bytes(),
                "BadCsrSignature",
            ),
            ("rsa1024", RSA1024.as_bytes().to_vec(), "WeakRsaKey"),
            ("secp256k1", SECP256K1.as_bytes().to_vec(), "UnsupportedKey"),
            ("ed448", ED448.as_bytes().to_vec(), "UnsupportedKey"),
            ("rsa-pss key", RSAPSS_KEY.as_bytes().to_vec(), "UnsupportedKey"),
            (
                "trailing bytes",
                {
                    let mut d = der.clone();
                    d.push(0);
                    crate::pki::encode_pem(CSR_LABEL, &d).into_bytes()
                },
                "MalformedCsr",
            ),
        ];
        for (name, input, want) in cases {
            let err = parse_csr(&input).unwrap_err();
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "{name}: got {got}, want {want}");
            assert_eq!(err.reason(), "InvalidRequest", "{name}");
        }
    }

    #[test]
    fn weak_rsa_message_names_the_fix() {
        let err = parse_csr(RSA1024.as_bytes()).unwrap_err();
        assert_eq!(err, Error::WeakRsaKey { bits: 1024 });
        assert!(err.to_string().contains("use at least 2048 bits"));
    }

    #[test]
    fn accepted_legacy_label_and_surrounding_whitespace() {
        let p256 = rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, "x", vec![]);
        let legacy = format!(
            "\n\n  {}\n\n",
            p256.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
        );
        let csr = parse_csr(legacy.as_bytes()).unwrap();
        assert!(csr.pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
        let crlf = p256.replace('\n', "\r\n");
        parse_csr(crlf.as_bytes()).unwrap();
    }

    #[test]
    fn classify_san_like_step_ca() {
        let cases: &[(&str, SanKind)] = &[
            ("10.0.0.1", SanKind::Ip("10.0.0.1".parse().unwrap())),
            ("::1", SanKind::Ip("::1".parse().unwrap())),
            ("spiffe://td/ns/x", SanKind::Uri),
            ("mailto:a@b.c", SanKind::Uri),
            ("host:8443", SanKind::Uri),
            ("a@example.com", SanKind::Email),
            ("example.com", SanKind::Dns),
            ("*.example.com", SanKind::Dns),
            ("1foo:bar", SanKind::Dns),
            (":nope", SanKind::Dns),
            ("", SanKind::Dns),
        ];
        for (s, want) in cases {
            assert_eq!(&classify_san(s), want, "{s}");
        }
    }

    #[test]
    fn modulus_bits_cases() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x01, 0x00]), 9);
        assert_eq!(modulus_bits(&[0xff]), 8);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        // Cases: PROPTEST_CASES, 256 by default.
        proptest! {
            #[test]
            fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = parse_csr(&bytes);
                let _ = parse_csr_der(&bytes);
            }

            #[test]
            fn never_panics_on_mutated_pem(
                idx in any::<proptest::sample::Index>(),
                byte in any::<u8>(),
                cut in any::<proptest::sample::Index>(),
            ) {
                let pem_text = RSA2048.as_bytes();
                let mut m = pem_text.to_vec();
                let i = idx.index(m.len());
                m[i] = byte;
                let _ = parse_csr(&m);
                let _ = parse_csr(&m[..cut.index(m.len())]);
            }

            #[test]
            fn never_panics_on_mutated_der(
                idx in any::<proptest::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let mut der = pem::parse(RSA2048).unwrap().contents().to_vec();
                let i = idx.index(der.len());
                der[i] = byte;
                let _ = parse_csr_der(&der);
                let _ = parse_csr(crate::pki::encode_pem(CSR_LABEL, &der).as_bytes());
            }
        }
    }
}
