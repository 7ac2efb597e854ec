//! Issued certificate chains: parsing, the checks cert-manager applies to an issued certificate,
//! choosing the root for `status.ca`, fingerprints and renewal times.
//!
//! See `docs/cert-manager-contract.md` §4: `status.certificate` holds the leaf followed by its
//! intermediates, never a self-signed root; `status.ca` holds the root that signed the chain.

use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::csr::KeyInfo;
use super::error::CERTIFICATE_LABEL;
use super::{Error, Result};

/// Most certificates accepted in an issued chain (cert-manager caps chain length too).
pub const MAX_CHAIN_LEN: usize = 10;
/// Most certificates accepted in a trust bundle given to [`signing_root`].
pub const MAX_BUNDLE_LEN: usize = 1000;

/// A parsed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The certificate as one PEM block (`CERTIFICATE`, LF, ending with `\n`, no headers).
    pub pem: String,
    /// The certificate DER.
    pub der: Vec<u8>,
    /// Subject DN, RFC 4514-like text.
    pub subject: String,
    /// Issuer DN, RFC 4514-like text.
    pub issuer: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// SubjectPublicKeyInfo DER.
    pub public_key_der: Vec<u8>,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
    /// The keyUsage extension allows signing certificates (`keyCertSign`).
    pub key_cert_sign: bool,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// Serial number, lowercase hex of the unsigned value (no leading zero bytes).
    pub serial_hex: String,
}

impl CertInfo {
    /// SHA-256 fingerprint of the DER, lowercase hex (the format `step certificate fingerprint`
    /// prints).
    pub fn fingerprint(&self) -> String {
        sha256_fingerprint_hex(&self.der)
    }
}

/// Parses one or more PEM `CERTIFICATE` blocks (at most [`MAX_CHAIN_LEN`]).
///
/// Text around blocks is ignored; every block must be labelled `CERTIFICATE`. Binary DER input
/// gives [`Error::NotPem`].
pub fn parse_pem_chain(input: &[u8]) -> Result<Vec<CertInfo>> {
    parse_certs(input, MAX_CHAIN_LEN)
}

fn parse_certs(input: &[u8], max: usize) -> Result<Vec<CertInfo>> {
    let blocks = super::pem_blocks(input, CERTIFICATE_LABEL, "x509")?;
    if blocks.len() > max {
        return Err(Error::TooManyCertificates {
            count: blocks.len(),
            max,
        });
    }
    blocks
        .iter()
        .enumerate()
        .map(|(index, block)| {
            if block.tag() != CERTIFICATE_LABEL {
                return Err(Error::WrongPemLabel {
                    label: super::csr::truncate(block.tag(), 64),
                    expected: CERTIFICATE_LABEL,
                });
            }
            cert_info(index, block.contents())
        })
        .collect()
}

pub(crate) fn parse_x509(index: usize, der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| Error::MalformedCertificate {
        index,
        detail: format!("not an X.509 certificate ({e})"),
    })?;
    if !rest.is_empty() {
        return Err(Error::MalformedCertificate {
            index,
            detail: format!("{} unexpected bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

/// Parses one DER certificate; `index` is only used in errors.
pub fn cert_info(index: usize, der: &[u8]) -> Result<CertInfo> {
    let cert = parse_x509(index, der)?;
    let malformed = |detail: String| Error::MalformedCertificate { index, detail };
    let time = |t: &x509_parser::time::ASN1Time| {
        DateTime::<Utc>::from_timestamp(t.timestamp(), 0)
            .ok_or_else(|| malformed("a validity date is out of range".to_owned()))
    };
    let validity = cert.validity();
    let mut info = CertInfo {
        pem: super::encode_pem(CERTIFICATE_LABEL, der),
        der: der.to_vec(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: time(&validity.not_before)?,
        not_after: time(&validity.not_after)?,
        public_key_der: cert.public_key().raw.to_vec(),
        is_ca: cert.is_ca(),
        key_cert_sign: cert
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|ku| ku.value.key_cert_sign()),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        uris: Vec::new(),
        emails: Vec::new(),
        serial_hex: serial_hex(cert.raw_serial()),
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| malformed(format!("bad subjectAltName extension ({e})")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) => info.dns_names.push((*s).to_owned()),
                GeneralName::URI(s) => info.uris.push((*s).to_owned()),
                GeneralName::RFC822Name(s) => info.emails.push((*s).to_owned()),
                GeneralName::IPAddress(b) => {
                    let ip = super::csr::ip_from_bytes(b).ok_or_else(|| {
                        malformed(format!("an IP address SAN has {} bytes", b.len()))
                    })?;
                    info.ip_addresses.push(ip);
                }
                _ => {}
            }
        }
    }
    Ok(info)
}

fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(raw.get(start..).unwrap_or_default())
}

/// Whether `child` was issued by `issuer`: the issuer name of `child` equals the subject name of
/// `issuer` (byte for byte) and `child`'s signature verifies with `issuer`'s key.
///
/// ring cannot verify signatures made with ECDSA P-521 keys; when the issuer's key is P-521 the
/// name match alone decides. The chain comes from step-ca over an authenticated TLS connection,
/// so this check guards against mistakes, not forgery. Any other signature that cannot be
/// verified counts as not issued.
fn issued_by(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    if child.issuer().as_raw() != issuer.subject().as_raw() {
        return false;
    }
    match child.verify_signature(Some(issuer.public_key())) {
        Ok(()) => true,
        Err(X509Error::SignatureUnsupportedAlgorithm) => {
            super::csr::key_info(issuer.public_key()) == Ok(KeyInfo::Ecdsa { curve: "P-521" })
        }
        Err(_) => false,
    }
}

fn self_signed(cert: &X509Certificate<'_>) -> bool {
    issued_by(cert, cert)
}

/// The outcome of [`verify_issued`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The leaf then its intermediates, each PEM block ending with `\n`; no self-signed root.
    /// This is what goes into `status.certificate`.
    pub certificate_pem: String,
    /// The leaf.
    pub leaf: CertInfo,
    /// The certificates of `certificate_pem`, leaf first.
    pub chain: Vec<CertInfo>,
    /// The self-signed root the CA appended to the chain, if any (removed from `chain`).
    pub appended_root: Option<CertInfo>,
    /// The leaf's expiry.
    pub not_after: DateTime<Utc>,
}

/// Checks an issued chain the way cert-manager does, and builds `status.certificate`.
///
/// `chain_pems` holds PEM strings (each may hold one or more certificates), leaf first, in the
/// order step-ca returned them. Exact duplicate certificates are removed (step-ca's `crt` and
/// `certChain[0]` are the same leaf). Then:
/// - the leaf's SubjectPublicKeyInfo must equal `csr_public_key_der` ([`Error::KeyMismatch`]);
/// - each certificate must be issued (name and signature) by the next one
///   ([`Error::ChainOrder`]);
/// - a self-signed root at the end is dropped (cert-manager keeps roots out of `tls.crt`);
/// - the leaf must not be expired at `now` ([`Error::Expired`]).
pub fn verify_issued(
    chain_pems: &[String],
    csr_public_key_der: &[u8],
    now: DateTime<Utc>,
) -> Result<Issued> {
    if chain_pems.iter().all(|p| p.trim().is_empty()) {
        return Err(Error::EmptyChain);
    }
    let joined = chain_pems.join("\n");
    let mut certs = parse_pem_chain(joined.as_bytes())?;
    let mut seen = std::collections::HashSet::new();
    certs.retain(|c| seen.insert(c.der.clone()));
    if certs.is_empty() {
        return Err(Error::EmptyChain);
    }

    let parsed = certs
        .iter()
        .enumerate()
        .map(|(i, c)| parse_x509(i, &c.der))
        .collect::<Result<Vec<_>>>()?;

    if certs[0].public_key_der != csr_public_key_der {
        return Err(Error::KeyMismatch);
    }
    for (index, pair) in parsed.windows(2).enumerate() {
        if let [child, issuer] = pair
            && !issued_by(child, issuer)
        {
            return Err(Error::ChainOrder { index });
        }
    }
    let mut keep = certs.len();
    while keep > 1 && parsed.get(keep - 1).is_some_and(self_signed) {
        keep -= 1;
    }
    drop(parsed);
    // Only the last certificate can be a self-signed root once the chain verified, since a
    // self-signed certificate cannot also be issued by a later one unless it is a duplicate.
    let mut dropped = certs.split_off(keep);
    let appended_root = dropped.pop();

    let leaf = certs[0].clone();
    if leaf.not_after <= now {
        return Err(Error::Expired {
            not_after: leaf.not_after.to_rfc3339(),
        });
    }
    let certificate_pem = certs.iter().map(|c| c.pem.as_str()).collect::<String>();
    Ok(Issued {
        certificate_pem,
        not_after: leaf.not_after,
        leaf,
        chain: certs,
        appended_root,
    })
}

/// The root, among `roots_pem`, that signed the last certificate of `chain`, as one PEM block
/// ending with `\n`: what goes into cert-manager's `status.ca`.
///
/// Each string of `roots_pem` may hold several certificates (a bundle); blank strings are
/// skipped. A bundle certificate qualifies when the last chain certificate is issued by it (name
/// and signature), or when it is the last chain certificate itself and is self-signed. The first
/// match wins; `None` when no given certificate signed the chain.
pub fn signing_root(chain: &[CertInfo], roots_pem: &[String]) -> Result<Option<String>> {
    let last = chain.last().ok_or(Error::EmptyChain)?;
    let last_index = chain.len() - 1;
    let last_parsed = parse_x509(last_index, &last.der)?;
    for bundle in roots_pem.iter().filter(|s| !s.trim().is_empty()) {
        for root in parse_certs(bundle.as_bytes(), MAX_BUNDLE_LEN)? {
            let root_parsed = parse_x509(0, &root.der)?;
            let is_last = root.der == last.der;
            if (is_last && self_signed(&root_parsed))
                || (!is_last && issued_by(&last_parsed, &root_parsed))
            {
                return Ok(Some(root.pem));
            }
        }
    }
    Ok(None)
}

/// SHA-256 of `der`, lowercase hex without separators.
pub fn sha256_fingerprint_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// When to renew a certificate valid from `not_before` to `not_after`.
///
/// `renew_at = not_before + 2/3 * lifetime - 0.05 * lifetime * j`, where
/// `lifetime = not_after - not_before` and `j` is `jitter_fraction` clamped to `[0, 1]` (NaN
/// counts as 0). The caller draws `j` at random so that many pods do not renew at the same
/// instant; the result therefore lies between 61.67% and 66.67% of the lifetime. When
/// `not_after <= not_before` the result is `not_before` (renew now). Arithmetic is in
/// milliseconds.
pub fn renew_at(
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    jitter_fraction: f64,
) -> DateTime<Utc> {
    let lifetime_ms = (not_after - not_before).num_milliseconds();
    if lifetime_ms <= 0 {
        return not_before;
    }
    let j = if jitter_fraction.is_nan() {
        0.0
    } else {
        jitter_fraction.clamp(0.0, 1.0)
    };
    let lifetime = lifetime_ms as f64;
    let offset = lifetime * 2.0 / 3.0 - lifetime * 0.05 * j;
    // offset lies in [0, lifetime_ms], which fits an i64; `as` saturates anyway.
    not_before + TimeDelta::milliseconds(offset.round() as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };

    /// A CA: its certificate PEM and an issuer to sign with.
    pub(crate) struct TestCa {
        pub pem: String,
        pub issuer: Issuer<'static, KeyPair>,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2090, 1, 1);
        p
    }

    pub(crate) fn root(cn: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub(crate) fn intermediate(cn: &str, parent: &TestCa) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let cert = params.signed_by(&key, &parent.issuer).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `key` signed by `ca`, valid for the given years.
    pub(crate) fn leaf(key: &KeyPair, ca: &TestCa, from: i32, to: i32) -> String {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "leaf.example.com");
        p.subject_alt_names = vec![
            SanType::DnsName("leaf.example.com".try_into().unwrap()),
            SanType::IpAddress("10.1.2.3".parse().unwrap()),
            SanType::URI("spiffe://td/leaf".try_into().unwrap()),
            SanType::Rfc822Name("leaf@example.com".try_into().unwrap()),
        ];
        p.not_before = rcgen::date_time_ymd(from, 1, 1);
        p.not_after = rcgen::date_time_ymd(to, 1, 1);
        p.signed_by(key, &ca.issuer).unwrap().pem()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    struct Pki {
        root: TestCa,
        inter: TestCa,
        key: KeyPair,
        leaf: String,
    }

    fn pki() -> Pki {
        let root = root("Test Root CA");
        let inter = intermediate("Test Intermediate CA", &root);
        let key = KeyPair::generate().unwrap();
        let leaf = leaf(&key, &inter, 2025, 2030);
        Pki {
            root,
            inter,
            key,
            leaf,
        }
    }

    fn spki(key: &KeyPair) -> Vec<u8> {
        use rcgen::PublicKeyData;
        key.subject_public_key_info()
    }

    #[test]
    fn parse_chain_fields() {
        let p = pki();
        let certs = parse_pem_chain(format!("{}{}", p.leaf, p.inter.pem).as_bytes()).unwrap();
        assert_eq!(certs.len(), 2);
        let l = &certs[0];
        assert_eq!(l.subject, "CN=leaf.example.com");
        assert_eq!(l.issuer, "CN=Test Intermediate CA");
        assert!(!l.is_ca);
        assert!(certs[1].is_ca);
        assert_eq!(l.dns_names, ["leaf.example.com"]);
        assert_eq!(l.ip_addresses, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(l.uris, ["spiffe://td/leaf"]);
        assert_eq!(l.emails, ["leaf@example.com"]);
        assert_eq!(l.not_before.to_rfc3339(), "2025-01-01T00:00:00+00:00");
        assert_eq!(l.not_after.to_rfc3339(), "2030-01-01T00:00:00+00:00");
        assert_eq!(l.public_key_der, spki(&p.key));
        assert!(!l.serial_hex.is_empty());
        assert!(!l.serial_hex.starts_with("00"));
        assert_eq!(l.fingerprint().len(), 64);
    }

    #[test]
    fn parse_chain_errors() {
        let p = pki();
        let der = pem::parse(&p.leaf).unwrap().contents().to_vec();
        let key_pem = p.key.serialize_pem();
        let eleven = p.leaf.repeat(11);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "NoPemBlock"),
            ("der", der, "NotPem"),
            (
                "wrong label",
                format!("{}{}", p.leaf, p.leaf.replace("CERTIFICATE", "X509 CRL")).into_bytes(),
                "WrongPemLabel",
            ),
            ("private key", key_pem.into_bytes(), "WrongPemLabel"),
            (
                "garbage",
                b"-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                "MalformedCertificate",
            ),
            ("too many", eleven.into_bytes(), "TooManyCertificates"),
        ];
        for (name, input, want) in cases {
            let err = parse_pem_chain(&input).unwrap_err();
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "{name}: got {got}, want {want}");
            assert_eq!(err.reason(), "InvalidCertificate", "{name}");
            // Never echo key material.
            assert!(!got.contains("PRIVATE KEY") || want != "WrongPemLabel" || got.len() < 200);
        }
    }

    #[test]
    fn verify_issued_cases() {
        let p = pki();
        let other_key = KeyPair::generate().unwrap();
        let other_leaf = leaf(&other_key, &p.inter, 2025, 2030);
        let expired_leaf = leaf(&p.key, &p.inter, 2020, 2021);
        let unrelated = root("Unrelated Root");
        let unrelated_inter = intermediate("Test Intermediate CA", &unrelated);
        let s = |v: &[&String]| v.iter().map(|x| (*x).clone()).collect::<Vec<String>>();

        struct Case {
            name: &'static str,
            chain: Vec<String>,
            want: std::result::Result<usize, &'static str>,
        }
        let cases = vec![
            Case {
                name: "leaf + intermediate",
                chain: s(&[&p.leaf, &p.inter.pem]),
                want: Ok(2),
            },
            Case {
                name: "root appended is dropped",
                chain: s(&[&p.leaf, &p.inter.pem, &p.root.pem]),
                want: Ok(2),
            },
            Case {
                name: "one string holding the whole chain",
                chain: vec![format!("{}{}{}", p.leaf, p.inter.pem, p.root.pem)],
                want: Ok(2),
            },
            Case {
                name: "duplicate leaf removed",
                chain: s(&[&p.leaf, &p.leaf, &p.inter.pem]),
                want: Ok(2),
            },
            Case {
                name: "leaf alone",
                chain: s(&[&p.leaf]),
                want: Ok(1),
            },
            Case {
                name: "wrong order",
                chain: s(&[&p.leaf, &p.root.pem, &p.inter.pem]),
                want: Err("ChainOrder { index: 0 }"),
            },
            Case {
                name: "intermediate first",
                chain: s(&[&p.inter.pem, &p.leaf]),
                want: Err("KeyMismatch"),
            },
            Case {
                name: "same name, other key (signature, not names)",
                chain: s(&[&p.leaf, &unrelated_inter.pem]),
                want: Err("ChainOrder { index: 0 }"),
            },
            Case {
                name: "wrong root after intermediate",
                chain: s(&[&p.leaf, &p.inter.pem, &unrelated.pem]),
                want: Err("ChainOrder { index: 1 }"),
            },
            Case {
                name: "leaf with another key",
                chain: s(&[&other_leaf, &p.inter.pem]),
                want: Err("KeyMismatch"),
            },
            Case {
                name: "expired",
                chain: s(&[&expired_leaf, &p.inter.pem]),
                want: Err("Expired"),
            },
            Case {
                name: "empty",
                chain: vec![],
                want: Err("EmptyChain"),
            },
            Case {
                name: "blank strings",
                chain: vec![String::new(), " \n".to_owned()],
                want: Err("EmptyChain"),
            },
        ];
        let csr_key = spki(&p.key);
        for c in cases {
            let got = verify_issued(&c.chain, &csr_key, now());
            match (c.want, got) {
                (Ok(n), Ok(issued)) => {
                    assert_eq!(issued.chain.len(), n, "{}", c.name);
                    assert_eq!(issued.leaf.der, issued.chain[0].der, "{}", c.name);
                    assert_eq!(issued.not_after, issued.leaf.not_after, "{}", c.name);
                    let expected: String = [&p.leaf, &p.inter.pem][..n]
                        .iter()
                        .map(|s| s.replace("\r\n", "\n"))
                        .collect();
                    assert_eq!(issued.certificate_pem, expected, "{}", c.name);
                    assert!(issued.certificate_pem.ends_with("-----\n"));
                    assert_eq!(
                        parse_pem_chain(issued.certificate_pem.as_bytes())
                            .unwrap()
                            .len(),
                        n
                    );
                }
                (Err(want), Err(e)) => {
                    let got = format!("{e:?}");
                    assert!(got.starts_with(want), "{}: got {got}, want {want}", c.name);
                    assert_eq!(e.reason(), "InvalidCertificate", "{}", c.name);
                }
                (want, got) => panic!("{}: want {want:?}, got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn appended_root_is_reported() {
        let p = pki();
        let chain = vec![p.leaf.clone(), p.inter.pem.clone(), p.root.pem.clone()];
        let issued = verify_issued(&chain, &spki(&p.key), now()).unwrap();
        let root = issued.appended_root.unwrap();
        assert_eq!(root.subject, "CN=Test Root CA");
        assert!(!issued.certificate_pem.contains(root.pem.trim()));
    }

    #[test]
    fn expired_message() {
        let p = pki();
        let expired = leaf(&p.key, &p.inter, 2020, 2021);
        let err = verify_issued(&[expired], &spki(&p.key), now()).unwrap_err();
        assert_eq!(
            err,
            Error::Expired {
                not_after: "2021-01-01T00:00:00+00:00".to_owned()
            }
        );
    }

    #[test]
    fn signing_root_picks_the_signer() {
        let p = pki();
        let other = root("Other Root");
        let issued =
            verify_issued(&[p.leaf.clone(), p.inter.pem.clone()], &spki(&p.key), now()).unwrap();
        let norm = |s: &str| s.replace("\r\n", "\n");

        // Among two roots, in either order, in one bundle or in two strings.
        let got = signing_root(&issued.chain, &[other.pem.clone(), p.root.pem.clone()]).unwrap();
        assert_eq!(got.as_deref(), Some(norm(&p.root.pem).as_str()));
        let bundle = format!("{}{}", p.root.pem, other.pem);
        let got = signing_root(&issued.chain, &[bundle]).unwrap();
        assert_eq!(got.as_deref(), Some(norm(&p.root.pem).as_str()));

        // A root with the same name but another key does not qualify.
        let impostor = root("Test Root CA");
        assert_eq!(
            signing_root(&issued.chain, &[impostor.pem.clone(), other.pem.clone()]).unwrap(),
            None
        );
        // Nothing given.
        assert_eq!(signing_root(&issued.chain, &[]).unwrap(), None);
        assert_eq!(
            signing_root(&issued.chain, &[" ".to_owned()]).unwrap(),
            None
        );
        // A chain that still ends with its self-signed root.
        let full =
            parse_pem_chain(format!("{}{}{}", p.leaf, p.inter.pem, p.root.pem).as_bytes()).unwrap();
        let got = signing_root(&full, &[other.pem.clone(), p.root.pem.clone()]).unwrap();
        assert_eq!(got.as_deref(), Some(norm(&p.root.pem).as_str()));
        // Errors.
        assert_eq!(
            signing_root(&[], std::slice::from_ref(&p.root.pem)).unwrap_err(),
            Error::EmptyChain
        );
        assert!(signing_root(&issued.chain, &["junk".to_owned()]).is_err());
    }

    #[test]
    fn p521_issuer_falls_back_to_name_match() {
        // leaf (P-256, ecdsa-with-SHA512) signed by a self-signed P-521 root, made with openssl.
        let text = include_str!("testdata/chain-p521-root.pem");
        let certs = parse_pem_chain(text.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2);
        let csr_key = certs[0].public_key_der.clone();
        let issued = verify_issued(&[text.to_owned()], &csr_key, now()).unwrap();
        assert_eq!(issued.chain.len(), 1);
        assert_eq!(
            issued.appended_root.as_ref().unwrap().subject,
            "CN=P521 Root"
        );
        let other = root("Other Root");
        let got = signing_root(&issued.chain, &[other.pem.clone(), certs[1].pem.clone()]).unwrap();
        assert_eq!(got.as_deref(), Some(certs[1].pem.as_str()));

        // An impostor with the same name but a P-256 key is not accepted: the fallback only
        // applies to P-521 issuers.
        let impostor = root("P521 Root");
        let chain = vec![certs[0].pem.clone(), impostor.pem.clone()];
        let err = verify_issued(&chain, &csr_key, now()).unwrap_err();
        assert_eq!(err, Error::ChainOrder { index: 0 });
        assert_eq!(signing_root(&issued.chain, &[impostor.pem]).unwrap(), None);
    }

    #[test]
    fn fingerprint_known_value() {
        assert_eq!(
            sha256_fingerprint_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn renew_at_table() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let nb = t("2026-01-01T00:00:00Z");
        let cases: &[(&str, &str, f64, &str)] = &[
            // 24h lifetime: 2/3 = 16h; 5% = 1h12m.
            (
                "24h, no jitter",
                "2026-01-02T00:00:00Z",
                0.0,
                "2026-01-01T16:00:00Z",
            ),
            (
                "24h, full jitter",
                "2026-01-02T00:00:00Z",
                1.0,
                "2026-01-01T14:48:00Z",
            ),
            (
                "24h, half jitter",
                "2026-01-02T00:00:00Z",
                0.5,
                "2026-01-01T15:24:00Z",
            ),
            (
                "jitter clamped high",
                "2026-01-02T00:00:00Z",
                7.0,
                "2026-01-01T14:48:00Z",
            ),
            (
                "jitter clamped low",
                "2026-01-02T00:00:00Z",
                -1.0,
                "2026-01-01T16:00:00Z",
            ),
            (
                "NaN jitter",
                "2026-01-02T00:00:00Z",
                f64::NAN,
                "2026-01-01T16:00:00Z",
            ),
            // 90 days: 60 days; 5% = 4.5 days.
            ("90d", "2026-04-01T00:00:00Z", 0.0, "2026-03-02T00:00:00Z"),
            (
                "90d full",
                "2026-04-01T00:00:00Z",
                1.0,
                "2026-02-25T12:00:00Z",
            ),
            (
                "zero lifetime",
                "2026-01-01T00:00:00Z",
                0.5,
                "2026-01-01T00:00:00Z",
            ),
            (
                "negative lifetime",
                "2025-01-01T00:00:00Z",
                0.5,
                "2026-01-01T00:00:00Z",
            ),
        ];
        for (name, na, j, want) in cases {
            assert_eq!(renew_at(nb, t(na), *j), t(want), "{name}");
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn valid_chain() -> String {
            let p = pki();
            format!("{}{}{}", p.leaf, p.inter.pem, p.root.pem)
        }

        // Cases: PROPTEST_CASES, 256 by default.
        proptest! {
            #[test]
            fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = parse_pem_chain(&bytes);
                let _ = cert_info(0, &bytes);
            }

            #[test]
            fn never_panics_on_mutated_pem(
                idx in any::<proptest::sample::Index>(),
                byte in any::<u8>(),
                cut in any::<proptest::sample::Index>(),
            ) {
                let text = valid_chain();
                let mut m = text.into_bytes();
                let i = idx.index(m.len());
                m[i] = byte;
                let _ = parse_pem_chain(&m);
                let _ = parse_pem_chain(&m[..cut.index(m.len())]);
                if let Ok(s) = String::from_utf8(m) {
                    let _ = verify_issued(&[s], &[], now());
                }
            }

            #[test]
            fn never_panics_on_mutated_der(
                idx in any::<proptest::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let p = pki();
                let mut der = pem::parse(&p.leaf).unwrap().contents().to_vec();
                let i = idx.index(der.len());
                der[i] = byte;
                let _ = cert_info(0, &der);
                let leaf = crate::pki::encode_pem("CERTIFICATE", &der);
                let _ = verify_issued(&[leaf, p.inter.pem.clone()], &spki(&p.key), now());
            }

            #[test]
            fn renew_at_is_within_bounds(
                secs in 1i64..(10 * 365 * 86400),
                j in proptest::num::f64::ANY,
            ) {
                let nb = now();
                let na = nb + TimeDelta::seconds(secs);
                let r = renew_at(nb, na, j);
                prop_assert!(r >= nb && r <= na);
                let lifetime = (na - nb).num_milliseconds() as f64;
                let off = (r - nb).num_milliseconds() as f64;
                prop_assert!(off <= lifetime * 2.0 / 3.0 + 1.0);
                prop_assert!(off >= lifetime * (2.0 / 3.0 - 0.05) - 1.0);
            }
        }
    }
}
