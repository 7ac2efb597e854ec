//! Key usages and extended key usages: RFC 5280 bits, OIDs, the names step-ca templates use, and
//! the usage strings of cert-manager's `spec.usages`.

use std::fmt;

use super::csr::KeyInfo;

/// One keyUsage bit (RFC 5280 §4.2.1.3); the discriminant is the bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyUsage {
    /// `digitalSignature` (bit 0).
    DigitalSignature = 0,
    /// `contentCommitment`, formerly `nonRepudiation` (bit 1).
    ContentCommitment = 1,
    /// `keyEncipherment` (bit 2).
    KeyEncipherment = 2,
    /// `dataEncipherment` (bit 3).
    DataEncipherment = 3,
    /// `keyAgreement` (bit 4).
    KeyAgreement = 4,
    /// `keyCertSign` (bit 5).
    KeyCertSign = 5,
    /// `cRLSign` (bit 6).
    CrlSign = 6,
    /// `encipherOnly` (bit 7).
    EncipherOnly = 7,
    /// `decipherOnly` (bit 8).
    DecipherOnly = 8,
}

impl KeyUsage {
    /// Every bit, in bit order.
    pub const ALL: [KeyUsage; 9] = [
        KeyUsage::DigitalSignature,
        KeyUsage::ContentCommitment,
        KeyUsage::KeyEncipherment,
        KeyUsage::DataEncipherment,
        KeyUsage::KeyAgreement,
        KeyUsage::KeyCertSign,
        KeyUsage::CrlSign,
        KeyUsage::EncipherOnly,
        KeyUsage::DecipherOnly,
    ];

    /// The RFC 5280 name (`keyCertSign`, `cRLSign`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyUsage::DigitalSignature => "digitalSignature",
            KeyUsage::ContentCommitment => "contentCommitment",
            KeyUsage::KeyEncipherment => "keyEncipherment",
            KeyUsage::DataEncipherment => "dataEncipherment",
            KeyUsage::KeyAgreement => "keyAgreement",
            KeyUsage::KeyCertSign => "keyCertSign",
            KeyUsage::CrlSign => "cRLSign",
            KeyUsage::EncipherOnly => "encipherOnly",
            KeyUsage::DecipherOnly => "decipherOnly",
        }
    }

    fn mask(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of keyUsage bits: bit `i` is RFC 5280 bit `i`, as x509-parser's `KeyUsage::flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyUsages(u16);

impl KeyUsages {
    /// The set with the given bits; bits above `decipherOnly` are ignored.
    pub fn from_bits(bits: u16) -> KeyUsages {
        KeyUsages(bits & 0x01ff)
    }

    /// Whether `usage` is in the set.
    pub fn contains(self, usage: KeyUsage) -> bool {
        self.0 & usage.mask() != 0
    }

    /// Adds `usage`.
    pub fn insert(&mut self, usage: KeyUsage) {
        self.0 |= usage.mask();
    }

    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bits set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = KeyUsage> {
        KeyUsage::ALL.into_iter().filter(move |u| self.contains(*u))
    }
}

impl FromIterator<KeyUsage> for KeyUsages {
    fn from_iter<I: IntoIterator<Item = KeyUsage>>(iter: I) -> Self {
        let mut set = KeyUsages::default();
        for u in iter {
            set.insert(u);
        }
        set
    }
}

/// OIDs of the extended key usages Go's crypto/x509 knows, with step-ca's template names.
const EXT_KEY_USAGES: [(&str, &str); 14] = [
    ("2.5.29.37.0", "any"),
    ("1.3.6.1.5.5.7.3.1", "serverAuth"),
    ("1.3.6.1.5.5.7.3.2", "clientAuth"),
    ("1.3.6.1.5.5.7.3.3", "codeSigning"),
    ("1.3.6.1.5.5.7.3.4", "emailProtection"),
    ("1.3.6.1.5.5.7.3.5", "ipsecEndSystem"),
    ("1.3.6.1.5.5.7.3.6", "ipsecTunnel"),
    ("1.3.6.1.5.5.7.3.7", "ipsecUser"),
    ("1.3.6.1.5.5.7.3.8", "timeStamping"),
    ("1.3.6.1.5.5.7.3.9", "ocspSigning"),
    ("1.3.6.1.4.1.311.10.3.3", "microsoftServerGatedCrypto"),
    ("2.16.840.1.113730.4.1", "netscapeServerGatedCrypto"),
    ("1.3.6.1.4.1.311.2.1.22", "microsoftCommercialCodeSigning"),
    ("1.3.6.1.4.1.311.61.1.1", "microsoftKernelCodeSigning"),
];

/// An extended key usage, identified by its OID (dotted text). Unknown OIDs are kept as they
/// are, so a CSR asking for a private purpose is compared like any other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtKeyUsage(String);

impl ExtKeyUsage {
    /// `serverAuth`.
    pub const SERVER_AUTH: &'static str = "1.3.6.1.5.5.7.3.1";
    /// `clientAuth`.
    pub const CLIENT_AUTH: &'static str = "1.3.6.1.5.5.7.3.2";
    /// `codeSigning`.
    pub const CODE_SIGNING: &'static str = "1.3.6.1.5.5.7.3.3";

    /// The usage with this dotted OID.
    pub fn from_oid(dotted: &str) -> ExtKeyUsage {
        ExtKeyUsage(dotted.to_owned())
    }

    /// The dotted OID.
    pub fn oid(&self) -> &str {
        &self.0
    }

    /// step-ca's name for it (`serverAuth`, `codeSigning`, ...), if it has one.
    pub fn name(&self) -> Option<&'static str> {
        EXT_KEY_USAGES
            .iter()
            .find(|(oid, _)| *oid == self.0)
            .map(|(_, name)| *name)
    }
}

impl fmt::Display for ExtKeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => f.write_str(&self.0),
        }
    }
}

/// What one cert-manager usage string asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    /// A keyUsage bit.
    Key(KeyUsage),
    /// An extended key usage.
    Extended(ExtKeyUsage),
}

/// Maps a cert-manager usage string (`"digital signature"`, `"server auth"`, `"s/mime"`, ...)
/// the way cert-manager's own `KeyUsageType`/`ExtKeyUsageType` do. `None` for a string
/// cert-manager does not know (its webhook refuses those before a request is created).
pub fn cert_manager_usage(usage: &str) -> Option<Usage> {
    let key = |u| Some(Usage::Key(u));
    let ext = |oid: &str| Some(Usage::Extended(ExtKeyUsage::from_oid(oid)));
    match usage.trim().to_ascii_lowercase().as_str() {
        "signing" | "digital signature" => key(KeyUsage::DigitalSignature),
        "content commitment" => key(KeyUsage::ContentCommitment),
        "key encipherment" => key(KeyUsage::KeyEncipherment),
        "key agreement" => key(KeyUsage::KeyAgreement),
        "data encipherment" => key(KeyUsage::DataEncipherment),
        "cert sign" => key(KeyUsage::KeyCertSign),
        "crl sign" => key(KeyUsage::CrlSign),
        "encipher only" => key(KeyUsage::EncipherOnly),
        "decipher only" => key(KeyUsage::DecipherOnly),
        "any" => ext("2.5.29.37.0"),
        "server auth" => ext(ExtKeyUsage::SERVER_AUTH),
        "client auth" => ext(ExtKeyUsage::CLIENT_AUTH),
        "code signing" => ext(ExtKeyUsage::CODE_SIGNING),
        "email protection" | "s/mime" => ext("1.3.6.1.5.5.7.3.4"),
        "ipsec end system" => ext("1.3.6.1.5.5.7.3.5"),
        "ipsec tunnel" => ext("1.3.6.1.5.5.7.3.6"),
        "ipsec user" => ext("1.3.6.1.5.5.7.3.7"),
        "timestamping" => ext("1.3.6.1.5.5.7.3.8"),
        "ocsp signing" => ext("1.3.6.1.5.5.7.3.9"),
        "microsoft sgc" => ext("1.3.6.1.4.1.311.10.3.3"),
        "netscape sgc" => ext("2.16.840.1.113730.4.1"),
        _ => None,
    }
}

/// Key usages that RFC 3279, RFC 5480 and RFC 8410 do not allow for a key type: a CA that leaves
/// them out of a certificate drops nothing. For ECDSA keys `keyAgreement` stays applicable (ECDH
/// is a real use of an EC key), only encryption is not; RSA has no key agreement; Ed25519 keys
/// only sign.
pub fn not_applicable(key: KeyInfo) -> &'static [KeyUsage] {
    match key {
        // RFC 3279 §2.3.1: RSA keys sign or encrypt; there is no RSA key agreement.
        KeyInfo::Rsa { .. } => &[
            KeyUsage::KeyAgreement,
            KeyUsage::EncipherOnly,
            KeyUsage::DecipherOnly,
        ],
        // RFC 5480 §3: ECDSA keys sign or agree (ECDH); they cannot encrypt.
        KeyInfo::Ecdsa { .. } => &[KeyUsage::KeyEncipherment, KeyUsage::DataEncipherment],
        // RFC 8410 §5: Ed25519 keys only sign.
        KeyInfo::Ed25519 => &[
            KeyUsage::KeyEncipherment,
            KeyUsage::DataEncipherment,
            KeyUsage::KeyAgreement,
            KeyUsage::EncipherOnly,
            KeyUsage::DecipherOnly,
        ],
    }
}

/// Extended key usages of an x509-parser extension, as OIDs, in a fixed order.
pub(crate) fn ext_key_usages(
    eku: &x509_parser::extensions::ExtendedKeyUsage<'_>,
) -> Vec<ExtKeyUsage> {
    let known = [
        (eku.any, "2.5.29.37.0"),
        (eku.server_auth, ExtKeyUsage::SERVER_AUTH),
        (eku.client_auth, ExtKeyUsage::CLIENT_AUTH),
        (eku.code_signing, ExtKeyUsage::CODE_SIGNING),
        (eku.email_protection, "1.3.6.1.5.5.7.3.4"),
        (eku.time_stamping, "1.3.6.1.5.5.7.3.8"),
        (eku.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
    ];
    let mut out: Vec<ExtKeyUsage> = known
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, oid)| ExtKeyUsage::from_oid(oid))
        .collect();
    out.extend(eku.other.iter().map(|oid| ExtKeyUsage(oid.to_id_string())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_usage_sets() {
        let set: KeyUsages = [KeyUsage::KeyCertSign, KeyUsage::DigitalSignature]
            .into_iter()
            .collect();
        assert!(set.contains(KeyUsage::KeyCertSign));
        assert!(!set.contains(KeyUsage::CrlSign));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [KeyUsage::DigitalSignature, KeyUsage::KeyCertSign]
        );
        assert_eq!(KeyUsages::from_bits(0xffff).iter().count(), 9);
        assert!(KeyUsages::default().is_empty());
        assert_eq!(KeyUsage::CrlSign.to_string(), "cRLSign");
    }

    #[test]
    fn cert_manager_usage_strings() {
        let cases: &[(&str, Option<&str>)] = &[
            ("signing", Some("digitalSignature")),
            ("digital signature", Some("digitalSignature")),
            ("key encipherment", Some("keyEncipherment")),
            ("cert sign", Some("keyCertSign")),
            ("crl sign", Some("cRLSign")),
            ("decipher only", Some("decipherOnly")),
            ("server auth", Some("serverAuth")),
            ("Code Signing", Some("codeSigning")),
            ("s/mime", Some("emailProtection")),
            ("ocsp signing", Some("ocspSigning")),
            ("netscape sgc", Some("netscapeServerGatedCrypto")),
            ("any", Some("any")),
            ("teleportation", None),
        ];
        for (s, want) in cases {
            let got = cert_manager_usage(s).map(|u| match u {
                Usage::Key(k) => k.to_string(),
                Usage::Extended(e) => e.to_string(),
            });
            assert_eq!(got.as_deref(), *want, "{s}");
        }
    }

    #[test]
    fn unknown_ext_key_usage_shows_its_oid() {
        assert_eq!(ExtKeyUsage::from_oid("1.2.3.4").to_string(), "1.2.3.4");
        assert_eq!(
            ExtKeyUsage::from_oid(ExtKeyUsage::SERVER_AUTH).to_string(),
            "serverAuth"
        );
    }
}
