//! Whether an issued certificate is what was asked for.
//!
//! step-ca's default template keeps only the CN and the SANs, always sets the extended key usages
//! serverAuth and clientAuth, puts the token subject into the CN and ignores the CSR's basic
//! constraints. So after signing, the leaf is compared with the request (the CSR, and
//! cert-manager's `spec.usages`, `spec.isCA` and `spec.duration`). Differences come in two kinds:
//!
//! - **weakened**: the certificate cannot do what was asked, or can do more than was asked in a
//!   way that matters for security. The caller fails the request. These are: a requested SAN
//!   missing; a CA asked but a leaf issued (no `CA:TRUE`, or no `keyCertSign`); a leaf asked but a
//!   CA issued; a requested path length constraint absent or different (a larger or absent limit
//!   lets the CA mint deeper chains than allowed, a smaller one stops the user from building the
//!   chain they asked for); a requested key usage or extended key usage missing; a lifetime
//!   longer than asked by more than [`LIFETIME_TOLERANCE`]; the requested CN neither in the CN nor
//!   among the SANs.
//! - **dropped**: the certificate works as asked but differs in details. The caller issues it
//!   and warns. These are: subject attributes other than the CN missing or different; key usages
//!   or extended key usages added when `spec.usages` was explicit; SANs added (other than the
//!   requested CN); a path length constraint added to a CA that asked for none (it is stricter);
//!   an unrequested CN that is neither a DNS nor an IP SAN (cert-manager refuses a URI in the
//!   CN); a lifetime shorter than asked by more than [`LIFETIME_TOLERANCE`]; the requested CN
//!   replaced or removed while it is still a SAN.
//!
//! Key usages the RFCs do not allow for the key type are not required (cert-manager asks
//! `keyEncipherment` for every key by default); see [`not_applicable`].
//!
//! A certificate without a keyUsage (or extendedKeyUsage) extension is not restricted (RFC 5280
//! §4.2.1.3, §4.2.1.12), so it satisfies any requested usage, except `keyCertSign` for a CA:
//! RFC 5280 requires CA certificates to carry keyUsage, as [`super::ca`] does. A leaf with
//! `anyExtendedKeyUsage` does not stand for a specific requested purpose: RFC 5280 lets
//! applications that need that purpose reject it.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use x509_parser::certificate::X509Certificate;

mod difference;

pub use difference::{Difference, SUMMARY_ITEMS, summarize};

use super::chain::{CertInfo, cert_info, parse_x509};
use super::csr::{BasicConstraints, Csr, KeyInfo, SubjectAttribute, subject_attributes};
use super::usage::{
    ExtKeyUsage, KeyUsage, KeyUsages, Usage, cert_manager_usage, ext_key_usages, not_applicable,
};
use super::{Error, Result};

/// How far the issued lifetime may be from the requested one: step-ca backdates `notBefore` by
/// one minute, and the request takes a moment to reach it.
pub const LIFETIME_TOLERANCE: Duration = Duration::from_secs(120);

/// What was asked for.
#[derive(Debug, Clone, Copy)]
pub struct Requested<'a> {
    /// The parsed CSR (its subject, SANs and requested extensions).
    pub csr: &'a Csr,
    /// cert-manager's `spec.usages` strings; empty when none were given explicitly.
    pub usages: &'a [String],
    /// cert-manager's `spec.isCA`.
    pub is_ca: bool,
    /// The requested lifetime; `None` leaves it to the CA.
    pub duration: Option<Duration>,
}

/// The differences between an issued certificate and its request; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fidelity {
    /// Differences that make the certificate unfit for the request: fail it.
    pub weakened: Vec<Difference>,
    /// Differences in details: issue, with a warning.
    pub dropped: Vec<Difference>,
}

impl Fidelity {
    /// Whether the certificate is exactly what was asked for.
    pub fn is_exact(&self) -> bool {
        self.weakened.is_empty() && self.dropped.is_empty()
    }
}

/// Compares the issued leaf (DER) with the request; see the module docs for the rules.
///
/// Errors only when the leaf does not parse.
pub fn compare(requested: &Requested<'_>, issued_leaf_der: &[u8]) -> Result<Fidelity> {
    let leaf = Leaf::parse(issued_leaf_der)?;
    let asked = Asked::from(requested);
    let mut out = Fidelity::default();
    compare_ca(&asked, &leaf, &mut out);
    compare_sans(requested.csr, &leaf.info, &mut out);
    compare_common_name(requested.csr.common_name.as_deref(), &leaf, &mut out);
    compare_subject(
        &requested.csr.subject_attributes,
        &leaf.attributes,
        &mut out,
    );
    compare_key_usage(&asked, leaf.key_usage, requested.csr.key, &mut out);
    compare_ext_key_usage(&asked, leaf.ext_key_usages.as_deref(), &mut out);
    if let Some(duration) = requested.duration {
        compare_lifetime(duration, &leaf.info, &mut out);
    }
    Ok(out)
}

/// The request, with cert-manager's spec and the CSR's extensions combined.
struct Asked {
    key_usage: KeyUsages,
    ext_key_usages: Vec<ExtKeyUsage>,
    /// `spec.usages` was given: usages the CA adds are worth a warning.
    explicit_usages: bool,
    ca: bool,
    path_len: Option<u32>,
}

impl From<&Requested<'_>> for Asked {
    fn from(req: &Requested<'_>) -> Asked {
        let mut key_usage = req.csr.key_usage.unwrap_or_default();
        let mut ext = req.csr.ext_key_usages.clone().unwrap_or_default();
        for usage in req.usages {
            match cert_manager_usage(usage) {
                Some(Usage::Key(u)) => key_usage.insert(u),
                Some(Usage::Extended(u)) if !ext.contains(&u) => ext.push(u),
                // A repeated usage adds nothing; an unknown string is ignored, as cert-manager's
                // webhook refuses those before a request exists.
                Some(Usage::Extended(_)) | None => {}
            }
        }
        let csr_bc = req.csr.basic_constraints.filter(|bc| bc.ca);
        let ca = req.is_ca || csr_bc.is_some();
        // A CA must sign certificates: cert-manager adds keyCertSign to isCA requests as well.
        if ca {
            key_usage.insert(KeyUsage::KeyCertSign);
        }
        Asked {
            key_usage,
            ext_key_usages: ext,
            explicit_usages: !req.usages.is_empty(),
            ca,
            path_len: csr_bc.and_then(|bc| bc.path_len),
        }
    }
}

/// What the issued leaf carries.
struct Leaf {
    info: CertInfo,
    common_name: Option<String>,
    attributes: Vec<SubjectAttribute>,
    key_usage: Option<KeyUsages>,
    ext_key_usages: Option<Vec<ExtKeyUsage>>,
    basic_constraints: Option<BasicConstraints>,
}

impl Leaf {
    fn parse(der: &[u8]) -> Result<Leaf> {
        let info = cert_info(0, der)?;
        let cert = parse_x509(0, der)?;
        let malformed = |what: &str, e: &dyn fmt::Display| Error::MalformedCertificate {
            index: 0,
            detail: format!("bad {what} ({e})"),
        };
        let key_usage = cert
            .key_usage()
            .map_err(|e| malformed("keyUsage extension", &e))?
            .map(|ku| KeyUsages::from_bits(ku.value.flags));
        let ext_key_usages = cert
            .extended_key_usage()
            .map_err(|e| malformed("extendedKeyUsage extension", &e))?
            .map(|eku| ext_key_usages(eku.value));
        let basic_constraints = cert
            .basic_constraints()
            .map_err(|e| malformed("basicConstraints extension", &e))?
            .map(|bc| BasicConstraints {
                ca: bc.value.ca,
                path_len: bc.value.path_len_constraint,
            });
        Ok(Leaf {
            common_name: common_name(&cert)?,
            attributes: subject_attributes(cert.subject()),
            info,
            key_usage,
            ext_key_usages,
            basic_constraints,
        })
    }
}

fn common_name(cert: &X509Certificate<'_>) -> Result<Option<String>> {
    let Some(cn) = cert.subject().iter_common_name().next() else {
        return Ok(None);
    };
    let s = cn.as_str().map_err(|e| Error::MalformedCertificate {
        index: 0,
        detail: format!("the subject common name is not a readable string ({e})"),
    })?;
    Ok((!s.is_empty()).then(|| s.to_owned()))
}

fn compare_ca(asked: &Asked, leaf: &Leaf, out: &mut Fidelity) {
    let issued = leaf.basic_constraints.filter(|bc| bc.ca);
    match (asked.ca, issued) {
        (true, None) => out.weakened.push(Difference::NotCa),
        (false, Some(_)) => out.weakened.push(Difference::UnrequestedCa),
        (true, Some(bc)) => match (asked.path_len, bc.path_len) {
            (Some(want), got) if got != Some(want) => {
                out.weakened.push(Difference::PathLenDifferent {
                    requested: want,
                    issued: got,
                });
            }
            (None, Some(got)) => out.dropped.push(Difference::PathLenAdded { issued: got }),
            _ => {}
        },
        (false, None) => {}
    }
}

/// The SANs of a CSR or certificate, each with its kind, for comparison.
fn sans_of(dns: &[String], ips: &[IpAddr], uris: &[String], emails: &[String]) -> Vec<San> {
    let mut out = Vec::with_capacity(dns.len() + ips.len() + uris.len() + emails.len());
    out.extend(dns.iter().map(|d| San::Dns(d.clone())));
    out.extend(ips.iter().map(|ip| San::Ip(ip.to_canonical())));
    out.extend(uris.iter().map(|u| San::Uri(u.clone())));
    out.extend(emails.iter().map(|e| San::Email(e.clone())));
    out
}

#[derive(Debug, Clone)]
enum San {
    Dns(String),
    Ip(IpAddr),
    Uri(String),
    Email(String),
}

impl San {
    /// DNS names compare without regard to ASCII case (RFC 4343); IPv4-mapped IPv6 addresses as
    /// IPv4, since Go writes them so.
    fn matches(&self, other: &San) -> bool {
        match (self, other) {
            (San::Dns(a), San::Dns(b)) => a.eq_ignore_ascii_case(b),
            (San::Ip(a), San::Ip(b)) => a == b,
            (San::Uri(a), San::Uri(b)) | (San::Email(a), San::Email(b)) => a == b,
            _ => false,
        }
    }

    /// Whether `text` (a CN) names this SAN.
    fn is_named_by(&self, text: &str) -> bool {
        match self {
            San::Dns(d) => d.eq_ignore_ascii_case(text),
            San::Ip(ip) => text
                .parse::<IpAddr>()
                .is_ok_and(|t| t.to_canonical() == *ip),
            San::Uri(v) | San::Email(v) => v == text,
        }
    }

    fn difference(&self, missing: bool) -> Difference {
        let (kind, value) = match self {
            San::Dns(d) => ("DNS name", d.clone()),
            San::Ip(ip) => ("IP address", ip.to_string()),
            San::Uri(u) => ("URI", u.clone()),
            San::Email(e) => ("email address", e.clone()),
        };
        if missing {
            Difference::SanMissing { kind, value }
        } else {
            Difference::SanAdded { kind, value }
        }
    }
}

fn compare_sans(csr: &Csr, leaf: &CertInfo, out: &mut Fidelity) {
    let asked = sans_of(&csr.dns_names, &csr.ip_addresses, &csr.uris, &csr.emails);
    let issued = sans_of(
        &leaf.dns_names,
        &leaf.ip_addresses,
        &leaf.uris,
        &leaf.emails,
    );
    for san in &asked {
        if !issued.iter().any(|i| i.matches(san)) {
            out.weakened.push(san.difference(true));
        }
    }
    // step-ca makes the token subject (the requested CN) a SAN when the token has no SANs.
    let cn = csr.common_name.as_deref();
    for san in &issued {
        let from_cn = cn.is_some_and(|cn| san.is_named_by(cn));
        if !from_cn && !asked.iter().any(|a| a.matches(san)) {
            out.dropped.push(san.difference(false));
        }
    }
}

fn compare_common_name(asked: Option<&str>, leaf: &Leaf, out: &mut Fidelity) {
    let issued = leaf.common_name.as_deref();
    if asked == issued {
        return;
    }
    let sans = sans_of(
        &leaf.info.dns_names,
        &leaf.info.ip_addresses,
        &leaf.info.uris,
        &leaf.info.emails,
    );
    match asked {
        Some(want) if sans.iter().any(|s| s.is_named_by(want)) => {
            out.dropped.push(Difference::CommonNameReplaced {
                requested: want.to_owned(),
                issued: issued.map(str::to_owned),
            });
        }
        Some(want) => out.weakened.push(Difference::CommonNameMissing {
            requested: want.to_owned(),
            issued: issued.map(str::to_owned),
        }),
        None => {
            let Some(got) = issued else { return };
            let dns_or_ip = sans
                .iter()
                .filter(|s| matches!(s, San::Dns(_) | San::Ip(_)))
                .any(|s| s.is_named_by(got));
            if !dns_or_ip {
                out.dropped.push(Difference::CommonNameAdded {
                    issued: got.to_owned(),
                });
            }
        }
    }
}

/// Each requested attribute value must appear in the certificate, as many times as requested;
/// the order of attributes does not matter (Go writes them in its own order).
fn compare_subject(asked: &[SubjectAttribute], issued: &[SubjectAttribute], out: &mut Fidelity) {
    let mut unmatched: Vec<&SubjectAttribute> = issued.iter().collect();
    for want in asked {
        match unmatched.iter().position(|got| *got == want) {
            Some(at) => {
                unmatched.swap_remove(at);
            }
            None => out.dropped.push(Difference::SubjectAttributeDropped {
                requested: want.clone(),
                issued: issued
                    .iter()
                    .filter(|got| got.oid == want.oid)
                    .map(|got| got.value.clone())
                    .collect(),
            }),
        }
    }
}

fn compare_key_usage(asked: &Asked, issued: Option<KeyUsages>, key: KeyInfo, out: &mut Fidelity) {
    let Some(issued) = issued else {
        // No extension: unrestricted, except that a CA must state keyCertSign (RFC 5280).
        if asked.key_usage.contains(KeyUsage::KeyCertSign) {
            out.weakened
                .push(Difference::KeyUsageMissing(KeyUsage::KeyCertSign));
        }
        return;
    };
    let skip = not_applicable(key);
    for u in asked.key_usage.iter() {
        if !issued.contains(u) && !skip.contains(&u) {
            out.weakened.push(Difference::KeyUsageMissing(u));
        }
    }
    if asked.explicit_usages {
        for u in issued.iter().filter(|u| !asked.key_usage.contains(*u)) {
            out.dropped.push(Difference::KeyUsageAdded(u));
        }
    }
}

fn compare_ext_key_usage(asked: &Asked, issued: Option<&[ExtKeyUsage]>, out: &mut Fidelity) {
    // No extension: the key may serve any purpose.
    let Some(issued) = issued else { return };
    for u in &asked.ext_key_usages {
        if !issued.contains(u) {
            out.weakened.push(Difference::ExtKeyUsageMissing(u.clone()));
        }
    }
    if asked.explicit_usages {
        for u in issued.iter().filter(|u| !asked.ext_key_usages.contains(u)) {
            out.dropped.push(Difference::ExtKeyUsageAdded(u.clone()));
        }
    }
}

fn compare_lifetime(requested: Duration, leaf: &CertInfo, out: &mut Fidelity) {
    let secs = (leaf.not_after - leaf.not_before).num_seconds();
    let issued = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    if issued > requested.saturating_add(LIFETIME_TOLERANCE) {
        out.weakened
            .push(Difference::LifetimeLonger { requested, issued });
    } else if issued.saturating_add(LIFETIME_TOLERANCE) < requested {
        out.dropped
            .push(Difference::LifetimeShorter { requested, issued });
    }
}

#[cfg(test)]
#[path = "fidelity_tests.rs"]
mod tests;
