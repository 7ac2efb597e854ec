use super::*;
use crate::pki::csr::{SanKind, classify_san, parse_csr};
use rcgen::{
    BasicConstraints as Bc, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair, KeyUsagePurpose as Ku, SanType,
};

/// A fixed 2048-bit RSA key for tests only (generating one per test would be slow).
const RSA_KEY: &str = include_str!("testdata/key-rsa2048.pem");

const HOUR: u64 = 3600;
const DAY: Duration = Duration::from_secs(24 * HOUR);
/// What step-ca issues for a one-day request: `notBefore` backdated by one minute.
const DAY_AS_ISSUED: Duration = Duration::from_secs(24 * HOUR + 60);

#[derive(Clone, Copy)]
enum Key {
    Ec,
    Rsa,
    Ed,
}

impl Key {
    fn pair(self) -> KeyPair {
        match self {
            Key::Ec => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            Key::Ed => KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            Key::Rsa => KeyPair::from_pem(RSA_KEY).unwrap(),
        }
    }
}

/// One side of a comparison: what a CSR asks, or what a certificate carries.
#[derive(Clone)]
struct Side {
    cn: Option<&'static str>,
    dn: Vec<(DnType, &'static str)>,
    sans: Vec<&'static str>,
    ku: Vec<Ku>,
    eku: Vec<Eku>,
    ca: IsCa,
    /// Certificates only.
    lifetime: Duration,
}

/// What cert-manager asks for a Certificate with a commonName, two dnsNames and defaults.
fn asked() -> Side {
    Side {
        cn: Some("app.example"),
        dn: vec![],
        sans: vec!["app.example", "www.example"],
        ku: vec![Ku::DigitalSignature, Ku::KeyEncipherment],
        eku: vec![],
        ca: IsCa::NoCa,
        lifetime: Duration::ZERO,
    }
}

/// What step-ca's default template issues for [`asked`] with an EC key.
fn issued() -> Side {
    Side {
        ku: vec![Ku::DigitalSignature],
        eku: vec![Eku::ServerAuth, Eku::ClientAuth],
        lifetime: DAY_AS_ISSUED,
        ..asked()
    }
}

fn san(s: &str) -> SanType {
    match classify_san(s) {
        SanKind::Ip(ip) => SanType::IpAddress(ip),
        SanKind::Uri => SanType::URI(s.try_into().unwrap()),
        SanKind::Email => SanType::Rfc822Name(s.try_into().unwrap()),
        SanKind::Dns => SanType::DnsName(s.try_into().unwrap()),
    }
}

fn params(side: &Side) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    if let Some(cn) = side.cn {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    for (ty, value) in &side.dn {
        p.distinguished_name.push(ty.clone(), *value);
    }
    p.subject_alt_names = side.sans.iter().map(|s| san(s)).collect();
    p.key_usages = side.ku.clone();
    p.extended_key_usages = side.eku.clone();
    p.is_ca = side.ca;
    let start = rcgen::date_time_ymd(2030, 1, 1);
    p.not_before = start;
    p.not_after = start + side.lifetime;
    p
}

struct Case {
    name: &'static str,
    key: Key,
    csr: Side,
    leaf: Side,
    usages: &'static [&'static str],
    is_ca: bool,
    duration: Option<Duration>,
    weakened: &'static [&'static str],
    dropped: &'static [&'static str],
}

impl Default for Case {
    fn default() -> Case {
        Case {
            name: "",
            key: Key::Ec,
            csr: asked(),
            leaf: issued(),
            usages: &[],
            is_ca: false,
            duration: Some(DAY),
            weakened: &[],
            dropped: &[],
        }
    }
}

fn run(case: &Case) -> Fidelity {
    let key = case.key.pair();
    let csr_pem = params(&case.csr)
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let csr = parse_csr(csr_pem.as_bytes()).unwrap();
    let leaf = params(&case.leaf).self_signed(&key).unwrap();
    let usages: Vec<String> = case.usages.iter().map(|s| s.to_string()).collect();
    let requested = Requested {
        csr: &csr,
        usages: &usages,
        is_ca: case.is_ca,
        duration: case.duration,
    };
    compare(&requested, leaf.der()).unwrap()
}

fn check(cases: Vec<Case>) {
    for case in cases {
        let got = run(&case);
        let strings = |d: &[Difference]| d.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            strings(&got.weakened),
            case.weakened,
            "{}: weakened",
            case.name
        );
        assert_eq!(
            strings(&got.dropped),
            case.dropped,
            "{}: dropped",
            case.name
        );
        let exact = case.weakened.is_empty() && case.dropped.is_empty();
        assert_eq!(got.is_exact(), exact, "{}", case.name);
    }
}

#[test]
fn exact_matches_are_empty() {
    check(vec![
        Case {
            name: "cert-manager defaults, step-ca's default template, EC key",
            ..Case::default()
        },
        Case {
            name: "RSA key gets keyEncipherment too",
            key: Key::Rsa,
            leaf: Side {
                ku: vec![Ku::DigitalSignature, Ku::KeyEncipherment],
                ..issued()
            },
            ..Case::default()
        },
        Case {
            name: "explicit usages, all kept",
            usages: &["digital signature", "server auth", "client auth"],
            csr: Side {
                ku: vec![Ku::DigitalSignature],
                eku: vec![Eku::ServerAuth, Eku::ClientAuth],
                ..asked()
            },
            ..Case::default()
        },
        Case {
            name: "no duration asked: any lifetime",
            duration: None,
            leaf: Side {
                lifetime: DAY * 90,
                ..issued()
            },
            ..Case::default()
        },
    ]);
}

#[test]
fn requested_sans_must_all_be_issued() {
    check(vec![
        Case {
            name: "DNS name missing",
            leaf: Side {
                sans: vec!["app.example"],
                ..issued()
            },
            weakened: &["DNS name \"www.example\" missing"],
            ..Case::default()
        },
        Case {
            name: "DNS names compare without case",
            leaf: Side {
                sans: vec!["APP.example", "www.EXAMPLE"],
                ..issued()
            },
            ..Case::default()
        },
        Case {
            name: "IP, URI and email missing",
            csr: Side {
                sans: vec![
                    "app.example",
                    "10.0.0.7",
                    "spiffe://td/ns/a",
                    "ops@example.com",
                ],
                ..asked()
            },
            leaf: Side {
                sans: vec!["app.example"],
                ..issued()
            },
            weakened: &[
                "IP address \"10.0.0.7\" missing",
                "URI \"spiffe://td/ns/a\" missing",
                "email address \"ops@example.com\" missing",
            ],
            ..Case::default()
        },
        Case {
            name: "IPv4-mapped IPv6 asked, IPv4 issued",
            csr: Side {
                sans: vec!["app.example", "::ffff:10.0.0.7"],
                ..asked()
            },
            leaf: Side {
                sans: vec!["app.example", "10.0.0.7"],
                ..issued()
            },
            ..Case::default()
        },
        Case {
            name: "a SAN added",
            leaf: Side {
                sans: vec!["app.example", "www.example", "evil.example"],
                ..issued()
            },
            dropped: &["DNS name \"evil.example\" added"],
            ..Case::default()
        },
        Case {
            name: "the CN made a SAN (a CSR without SANs)",
            csr: Side {
                sans: vec![],
                ..asked()
            },
            leaf: Side {
                sans: vec!["app.example"],
                ..issued()
            },
            ..Case::default()
        },
    ]);
}

fn ca_csr(bc: Bc) -> Side {
    Side {
        ca: IsCa::Ca(bc),
        ku: vec![Ku::KeyCertSign, Ku::CrlSign],
        ..asked()
    }
}

fn ca_leaf(bc: Bc, ku: Vec<Ku>) -> Side {
    Side {
        ca: IsCa::Ca(bc),
        ku,
        eku: vec![],
        ..issued()
    }
}

#[test]
fn ca_requests() {
    check(vec![
        Case {
            name: "isCA in the spec, step-ca's default template",
            is_ca: true,
            weakened: &[
                "issued as a leaf, but isCA was requested",
                "key usage keyCertSign missing",
            ],
            ..Case::default()
        },
        Case {
            name: "CA:TRUE in the CSR only, step-ca's default template",
            csr: ca_csr(Bc::Unconstrained),
            weakened: &[
                "issued as a leaf, but isCA was requested",
                "key usage keyCertSign missing",
                "key usage cRLSign missing",
            ],
            ..Case::default()
        },
        Case {
            name: "isCA with CA:TRUE and keyCertSign",
            is_ca: true,
            csr: ca_csr(Bc::Unconstrained),
            leaf: ca_leaf(Bc::Unconstrained, vec![Ku::KeyCertSign, Ku::CrlSign]),
            ..Case::default()
        },
        Case {
            name: "isCA with CA:TRUE but no keyCertSign",
            is_ca: true,
            leaf: ca_leaf(Bc::Unconstrained, vec![Ku::DigitalSignature]),
            weakened: &["key usage keyCertSign missing"],
            ..Case::default()
        },
        Case {
            name: "isCA with CA:TRUE but no keyUsage extension at all",
            is_ca: true,
            csr: Side {
                ku: vec![],
                ..asked()
            },
            leaf: ca_leaf(Bc::Unconstrained, vec![]),
            weakened: &["key usage keyCertSign missing"],
            ..Case::default()
        },
        Case {
            name: "a leaf asked, a CA issued",
            leaf: ca_leaf(
                Bc::Unconstrained,
                vec![Ku::DigitalSignature, Ku::KeyCertSign],
            ),
            weakened: &["issued as a CA (CA:TRUE), but a leaf was requested"],
            ..Case::default()
        },
        Case {
            name: "a leaf asked, CA:FALSE issued",
            leaf: Side {
                ca: IsCa::ExplicitNoCa,
                ..issued()
            },
            ..Case::default()
        },
    ]);
}

#[test]
fn path_length_constraints() {
    let ca_ku = || vec![Ku::KeyCertSign, Ku::CrlSign];
    check(vec![
        Case {
            name: "pathLen 0 kept",
            csr: ca_csr(Bc::Constrained(0)),
            leaf: ca_leaf(Bc::Constrained(0), ca_ku()),
            ..Case::default()
        },
        Case {
            name: "pathLen 1 asked, no limit issued",
            csr: ca_csr(Bc::Constrained(1)),
            leaf: ca_leaf(Bc::Unconstrained, ca_ku()),
            weakened: &["path length constraint 1 missing"],
            ..Case::default()
        },
        Case {
            name: "pathLen 0 asked, 2 issued (a looser limit)",
            csr: ca_csr(Bc::Constrained(0)),
            leaf: ca_leaf(Bc::Constrained(2), ca_ku()),
            weakened: &["path length constraint 2 instead of the requested 0"],
            ..Case::default()
        },
        Case {
            name: "pathLen 2 asked, 0 issued (a tighter limit)",
            csr: ca_csr(Bc::Constrained(2)),
            leaf: ca_leaf(Bc::Constrained(0), ca_ku()),
            weakened: &["path length constraint 0 instead of the requested 2"],
            ..Case::default()
        },
        Case {
            name: "no pathLen asked, 0 issued",
            is_ca: true,
            csr: ca_csr(Bc::Unconstrained),
            leaf: ca_leaf(Bc::Constrained(0), ca_ku()),
            dropped: &["path length constraint 0 added, though none was requested"],
            ..Case::default()
        },
    ]);
}

#[test]
fn extended_key_usages() {
    check(vec![
        Case {
            name: "codeSigning asked, serverAuth+clientAuth issued",
            usages: &["digital signature", "code signing"],
            csr: Side {
                ku: vec![Ku::DigitalSignature],
                eku: vec![Eku::CodeSigning],
                ..asked()
            },
            weakened: &["extended key usage codeSigning missing"],
            dropped: &[
                "extended key usage serverAuth added",
                "extended key usage clientAuth added",
            ],
            ..Case::default()
        },
        Case {
            name: "codeSigning asked in the spec only",
            usages: &["digital signature", "key encipherment", "code signing"],
            weakened: &["extended key usage codeSigning missing"],
            dropped: &[
                "extended key usage serverAuth added",
                "extended key usage clientAuth added",
            ],
            ..Case::default()
        },
        Case {
            name: "serverAuth asked in the CSR only: additions are not reported",
            csr: Side {
                eku: vec![Eku::ServerAuth],
                ..asked()
            },
            ..Case::default()
        },
        Case {
            name: "no extendedKeyUsage extension: any purpose",
            usages: &["digital signature", "code signing"],
            leaf: Side {
                eku: vec![],
                ..issued()
            },
            ..Case::default()
        },
        Case {
            name: "anyExtendedKeyUsage does not stand for codeSigning",
            csr: Side {
                eku: vec![Eku::CodeSigning],
                ..asked()
            },
            leaf: Side {
                eku: vec![Eku::Any],
                ..issued()
            },
            weakened: &["extended key usage codeSigning missing"],
            ..Case::default()
        },
        Case {
            name: "an unknown OID is compared too",
            csr: Side {
                eku: vec![
                    Eku::ServerAuth,
                    Eku::Other(vec![1, 3, 6, 1, 4, 1, 99999, 1]),
                ],
                ..asked()
            },
            weakened: &["extended key usage 1.3.6.1.4.1.99999.1 missing"],
            ..Case::default()
        },
    ]);
}

#[test]
fn key_usages_by_key_type() {
    let agreement = || Side {
        ku: vec![Ku::DigitalSignature, Ku::KeyAgreement],
        ..asked()
    };
    check(vec![
        Case {
            name: "RSA: keyEncipherment missing",
            key: Key::Rsa,
            weakened: &["key usage keyEncipherment missing"],
            ..Case::default()
        },
        Case {
            name: "EC: keyEncipherment is meaningless",
            key: Key::Ec,
            ..Case::default()
        },
        Case {
            name: "Ed25519: keyEncipherment is meaningless",
            key: Key::Ed,
            ..Case::default()
        },
        Case {
            name: "EC: keyAgreement (ECDH) is required",
            key: Key::Ec,
            csr: agreement(),
            weakened: &["key usage keyAgreement missing"],
            ..Case::default()
        },
        Case {
            name: "RSA: keyAgreement is meaningless",
            key: Key::Rsa,
            csr: agreement(),
            ..Case::default()
        },
        Case {
            name: "Ed25519: keyAgreement is meaningless",
            key: Key::Ed,
            csr: agreement(),
            ..Case::default()
        },
        Case {
            name: "EC: dataEncipherment is meaningless, contentCommitment is not",
            csr: Side {
                ku: vec![
                    Ku::DigitalSignature,
                    Ku::DataEncipherment,
                    Ku::ContentCommitment,
                ],
                ..asked()
            },
            weakened: &["key usage contentCommitment missing"],
            ..Case::default()
        },
    ]);
}

#[test]
fn key_usages_asked_and_added() {
    check(vec![
        Case {
            name: "asked in the spec only",
            usages: &["digital signature", "content commitment"],
            csr: Side {
                ku: vec![],
                ..asked()
            },
            weakened: &["key usage contentCommitment missing"],
            dropped: &[
                "extended key usage serverAuth added",
                "extended key usage clientAuth added",
            ],
            ..Case::default()
        },
        Case {
            name: "explicit usages: an added key usage is reported",
            usages: &["digital signature", "server auth", "client auth"],
            csr: Side {
                ku: vec![Ku::DigitalSignature],
                eku: vec![Eku::ServerAuth, Eku::ClientAuth],
                ..asked()
            },
            leaf: Side {
                ku: vec![Ku::DigitalSignature, Ku::KeyEncipherment],
                ..issued()
            },
            dropped: &["key usage keyEncipherment added"],
            ..Case::default()
        },
        Case {
            name: "default usages: an added key usage is not reported",
            csr: Side {
                ku: vec![Ku::DigitalSignature],
                ..asked()
            },
            leaf: Side {
                ku: vec![Ku::DigitalSignature, Ku::KeyEncipherment],
                ..issued()
            },
            ..Case::default()
        },
        Case {
            name: "no keyUsage extension: unrestricted",
            key: Key::Rsa,
            leaf: Side {
                ku: vec![],
                ..issued()
            },
            ..Case::default()
        },
    ]);
}

fn lasting(lifetime: Duration) -> Side {
    Side {
        lifetime,
        ..issued()
    }
}

#[test]
fn lifetimes() {
    let minutes = |m: u64| Duration::from_secs(60 * m);
    check(vec![
        Case {
            name: "two minutes longer is within the tolerance",
            leaf: lasting(DAY + minutes(2)),
            ..Case::default()
        },
        Case {
            name: "three minutes longer",
            leaf: lasting(DAY + minutes(3)),
            weakened: &["valid for 24h3m, 3m longer than the requested 24h"],
            ..Case::default()
        },
        Case {
            name: "the CA's 90 days for a one-day request",
            leaf: lasting(DAY * 90),
            weakened: &["valid for 2160h, 2136h longer than the requested 24h"],
            ..Case::default()
        },
        Case {
            name: "two minutes shorter is within the tolerance",
            leaf: lasting(DAY - minutes(2)),
            ..Case::default()
        },
        Case {
            name: "capped by the provisioner's maximum",
            duration: Some(DAY * 30),
            leaf: lasting(DAY),
            dropped: &["valid for 24h, 696h shorter than the requested 720h"],
            ..Case::default()
        },
    ]);
}

#[test]
fn common_names() {
    check(vec![
        Case {
            name: "CN neither kept nor a SAN",
            csr: Side {
                cn: Some("svc.example"),
                ..asked()
            },
            leaf: Side {
                cn: None,
                ..issued()
            },
            weakened: &["common name \"svc.example\" missing"],
            ..Case::default()
        },
        Case {
            name: "CN replaced, and not a SAN",
            csr: Side {
                cn: Some("svc.example"),
                ..asked()
            },
            leaf: Side {
                cn: Some("www.example"),
                ..issued()
            },
            weakened: &[
                "common name \"svc.example\" missing (the certificate's is \"www.example\")",
            ],
            ..Case::default()
        },
        Case {
            name: "CN replaced, still a SAN",
            leaf: Side {
                cn: Some("www.example"),
                ..issued()
            },
            dropped: &[
                "common name \"app.example\" replaced by \"www.example\" (it is still a subject \
                 alternative name)",
            ],
            ..Case::default()
        },
        Case {
            name: "CN removed, still a SAN",
            leaf: Side {
                cn: None,
                ..issued()
            },
            dropped: &[
                "common name \"app.example\" dropped (it is still a subject alternative name)",
            ],
            ..Case::default()
        },
        Case {
            name: "URI-only CSR, the CA put the URI in the CN",
            csr: Side {
                cn: None,
                sans: vec!["spiffe://td/ns/a/sa/b"],
                ..asked()
            },
            leaf: Side {
                cn: Some("spiffe://td/ns/a/sa/b"),
                sans: vec!["spiffe://td/ns/a/sa/b"],
                ..issued()
            },
            dropped: &[
                "common name \"spiffe://td/ns/a/sa/b\" added, and it is not a DNS name or IP \
                 address of the certificate",
            ],
            ..Case::default()
        },
        Case {
            name: "no CN asked, the CA put the first DNS SAN in the CN",
            csr: Side {
                cn: None,
                ..asked()
            },
            ..Case::default()
        },
        Case {
            name: "no CN asked, the CA put the IP SAN in the CN",
            csr: Side {
                cn: None,
                sans: vec!["10.0.0.7"],
                ..asked()
            },
            leaf: Side {
                cn: Some("10.0.0.7"),
                sans: vec!["10.0.0.7"],
                ..issued()
            },
            ..Case::default()
        },
    ]);
}

fn custom(oid: &[u64]) -> DnType {
    DnType::CustomDnType(oid.to_vec())
}

#[test]
fn subject_attributes() {
    let full = || Side {
        dn: vec![
            (DnType::OrganizationName, "Acme"),
            (DnType::OrganizationalUnitName, "Web"),
            (DnType::CountryName, "DE"),
            (DnType::LocalityName, "Berlin"),
            (DnType::StateOrProvinceName, "Berlin"),
            (custom(&[2, 5, 4, 9]), "Main Street 1"),
            (custom(&[2, 5, 4, 17]), "10115"),
            (custom(&[2, 5, 4, 5]), "A-1"),
        ],
        ..asked()
    };
    check(vec![
        Case {
            name: "step-ca's default template keeps only the CN",
            csr: full(),
            weakened: &[],
            dropped: &[
                "organization \"Acme\" dropped",
                "organizational unit \"Web\" dropped",
                "country \"DE\" dropped",
                "locality \"Berlin\" dropped",
                "province \"Berlin\" dropped",
                "street address \"Main Street 1\" dropped",
                "postal code \"10115\" dropped",
                "serial number \"A-1\" dropped",
            ],
            ..Case::default()
        },
        Case {
            name: "all kept, in another order",
            csr: full(),
            leaf: Side {
                dn: full().dn.into_iter().rev().collect(),
                ..issued()
            },
            ..Case::default()
        },
        Case {
            name: "organization replaced",
            csr: Side {
                dn: vec![(DnType::OrganizationName, "Acme")],
                ..asked()
            },
            leaf: Side {
                dn: vec![(DnType::OrganizationName, "Smallstep")],
                ..issued()
            },
            dropped: &["organization \"Acme\" dropped (the certificate has \"Smallstep\")"],
            ..Case::default()
        },
    ]);
}

#[test]
fn summaries_are_capped() {
    let many: Vec<Difference> = KeyUsage::ALL[..7]
        .iter()
        .map(|u| Difference::KeyUsageMissing(*u))
        .collect();
    let s = summarize(&many);
    assert!(
        s.starts_with("key usage digitalSignature missing; key usage contentCommitment"),
        "{s}"
    );
    assert!(
        s.ends_with("key usage keyAgreement missing; and 2 more"),
        "{s}"
    );
    assert_eq!(summarize(&many[..1]), "key usage digitalSignature missing");
    assert_eq!(summarize(&[]), "");
}

#[test]
fn long_values_are_truncated() {
    let d = Difference::SanMissing {
        kind: "DNS name",
        value: "a".repeat(300),
    };
    let s = d.to_string();
    assert!(s.len() < 120, "{s}");
    assert!(s.ends_with("...\" missing"), "{s}");
}

#[test]
fn a_malformed_leaf_is_an_error() {
    let key = Key::Ec.pair();
    let pem = params(&asked())
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let csr = parse_csr(pem.as_bytes()).unwrap();
    let requested = Requested {
        csr: &csr,
        usages: &[],
        is_ca: false,
        duration: None,
    };
    let err = compare(&requested, b"not a certificate").unwrap_err();
    assert_eq!(err.reason(), "InvalidCertificate");
}
