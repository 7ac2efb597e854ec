//! The differences [`super::compare`] reports, and their one-line summary.

use std::fmt;
use std::time::Duration;

use crate::duration::format_go_duration;
use crate::pki::csr::{SubjectAttribute, truncate};
use crate::pki::usage::{ExtKeyUsage, KeyUsage};

/// How many differences [`summarize`] names before "and N more".
pub const SUMMARY_ITEMS: usize = 5;

/// Longest value (name, SAN) quoted in a message, in characters: Event messages are short.
const MAX_VALUE_CHARS: usize = 96;

/// One difference between an issued certificate and its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A requested SAN is not in the certificate.
    SanMissing {
        /// `DNS name`, `IP address`, `URI` or `email address`.
        kind: &'static str,
        /// The SAN.
        value: String,
    },
    /// The certificate has a SAN that was not requested.
    SanAdded {
        /// `DNS name`, `IP address`, `URI` or `email address`.
        kind: &'static str,
        /// The SAN.
        value: String,
    },
    /// The requested CN is neither the certificate's CN nor one of its SANs.
    CommonNameMissing {
        /// The CSR's CN.
        requested: String,
        /// The certificate's CN, if any.
        issued: Option<String>,
    },
    /// The requested CN was replaced or removed, but is still one of the SANs.
    CommonNameReplaced {
        /// The CSR's CN.
        requested: String,
        /// The certificate's CN, if any.
        issued: Option<String>,
    },
    /// The certificate has a CN that was not requested and is not a DNS or IP SAN.
    CommonNameAdded {
        /// The certificate's CN.
        issued: String,
    },
    /// A requested subject attribute is missing.
    SubjectAttributeDropped {
        /// The requested attribute.
        requested: SubjectAttribute,
        /// The certificate's values of the same type.
        issued: Vec<String>,
    },
    /// A CA was requested, the certificate is not one (no basicConstraints `CA:TRUE`).
    NotCa,
    /// A leaf was requested, the certificate is a CA.
    UnrequestedCa,
    /// A requested path length constraint is absent or different.
    PathLenDifferent {
        /// The requested limit.
        requested: u32,
        /// The certificate's limit; `None` is no limit.
        issued: Option<u32>,
    },
    /// A CA that asked for no path length constraint got one.
    PathLenAdded {
        /// The certificate's limit.
        issued: u32,
    },
    /// A requested key usage is missing.
    KeyUsageMissing(KeyUsage),
    /// The certificate has a key usage that was not requested.
    KeyUsageAdded(KeyUsage),
    /// A requested extended key usage is missing.
    ExtKeyUsageMissing(ExtKeyUsage),
    /// The certificate has an extended key usage that was not requested.
    ExtKeyUsageAdded(ExtKeyUsage),
    /// The certificate is valid for longer than requested.
    LifetimeLonger {
        /// The requested lifetime.
        requested: Duration,
        /// `notAfter - notBefore`.
        issued: Duration,
    },
    /// The certificate is valid for less than requested.
    LifetimeShorter {
        /// The requested lifetime.
        requested: Duration,
        /// `notAfter - notBefore`.
        issued: Duration,
    },
}

fn quoted(s: &str) -> String {
    format!("{:?}", truncate(s, MAX_VALUE_CHARS))
}

fn by_what(issued: &Option<String>) -> String {
    match issued {
        Some(cn) => format!("replaced by {}", quoted(cn)),
        None => "dropped".to_owned(),
    }
}

fn lifetime_gap(requested: Duration, issued: Duration) -> String {
    let gap = issued.abs_diff(requested);
    let word = if issued > requested {
        "longer"
    } else {
        "shorter"
    };
    format!(
        "valid for {}, {} {word} than the requested {}",
        format_go_duration(issued),
        format_go_duration(gap),
        format_go_duration(requested)
    )
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::SanMissing { kind, value } => write!(f, "{kind} {} missing", quoted(value)),
            Difference::SanAdded { kind, value } => write!(f, "{kind} {} added", quoted(value)),
            Difference::CommonNameMissing { requested, issued } => {
                write!(f, "common name {} missing", quoted(requested))?;
                match issued {
                    Some(cn) => write!(f, " (the certificate's is {})", quoted(cn)),
                    None => Ok(()),
                }
            }
            Difference::CommonNameReplaced { requested, issued } => write!(
                f,
                "common name {} {} (it is still a subject alternative name)",
                quoted(requested),
                by_what(issued)
            ),
            Difference::CommonNameAdded { issued } => write!(
                f,
                "common name {} added, and it is not a DNS name or IP address of the certificate",
                quoted(issued)
            ),
            Difference::SubjectAttributeDropped { requested, issued } => {
                let name = requested.type_name();
                write!(f, "{name} {} dropped", quoted(&requested.value))?;
                if issued.is_empty() {
                    return Ok(());
                }
                let issued: Vec<String> = issued.iter().map(|v| quoted(v)).collect();
                write!(f, " (the certificate has {})", issued.join(", "))
            }
            Difference::NotCa => f.write_str("issued as a leaf, but isCA was requested"),
            Difference::UnrequestedCa => {
                f.write_str("issued as a CA (CA:TRUE), but a leaf was requested")
            }
            Difference::PathLenDifferent { requested, issued } => match issued {
                Some(got) => write!(
                    f,
                    "path length constraint {got} instead of the requested {requested}"
                ),
                None => write!(f, "path length constraint {requested} missing"),
            },
            Difference::PathLenAdded { issued } => write!(
                f,
                "path length constraint {issued} added, though none was requested"
            ),
            Difference::KeyUsageMissing(u) => write!(f, "key usage {u} missing"),
            Difference::KeyUsageAdded(u) => write!(f, "key usage {u} added"),
            Difference::ExtKeyUsageMissing(u) => write!(f, "extended key usage {u} missing"),
            Difference::ExtKeyUsageAdded(u) => write!(f, "extended key usage {u} added"),
            Difference::LifetimeLonger { requested, issued }
            | Difference::LifetimeShorter { requested, issued } => {
                f.write_str(&lifetime_gap(*requested, *issued))
            }
        }
    }
}

/// The differences on one line, `; `-separated, naming at most [`SUMMARY_ITEMS`] and then
/// "and N more", so that Event and condition messages stay short. Empty for no differences.
pub fn summarize(differences: &[Difference]) -> String {
    let mut out = differences
        .iter()
        .take(SUMMARY_ITEMS)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if differences.len() > SUMMARY_ITEMS {
        out.push_str(&format!("; and {} more", differences.len() - SUMMARY_ITEMS));
    }
    out
}
