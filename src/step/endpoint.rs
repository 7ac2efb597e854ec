//! Checks of the values that say where step-ca is and what tokens name it: the CA URL, the
//! caBundle, the token audience override, and literal addresses against the forbidden ranges.

use super::address_policy::ForbiddenRanges;
use super::{Error, Result};

/// Parses and normalises the CA URL: https, a host, no path/query/fragment/credentials, no
/// trailing slash. The host is kept verbatim because it becomes the token audience and must be
/// one of the CA's dnsNames.
pub(crate) fn normalise_url(raw: &str) -> Result<String> {
    let invalid = |detail: &str| Error::InvalidUrl {
        url: raw.to_owned(),
        detail: detail.to_owned(),
    };
    let trimmed = raw.trim();
    let parsed = url::Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(invalid(
            "the scheme must be https (step-ca only serves HTTPS)",
        ));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("the URL has no host"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("credentials in the URL are not supported"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed"));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(invalid(
            "a path is not allowed; step-ca does not support being served under a path prefix",
        ));
    }
    Ok(match parsed.port() {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    })
}

/// Parses a PEM bundle into certificates. Rejects DER, empty input and non-certificate blocks.
pub(crate) fn parse_ca_bundle(pem_bundle: &[u8]) -> Result<Vec<reqwest::Certificate>> {
    let invalid = |detail: String| Error::InvalidCaBundle { detail };
    let blocks =
        pem::parse_many(pem_bundle).map_err(|e| invalid(format!("it is not valid PEM ({e})")))?;
    if blocks.is_empty() {
        return Err(invalid(if pem_bundle.first() == Some(&0x30) {
            "it looks like DER, not PEM".to_owned()
        } else {
            "no PEM block found".to_owned()
        }));
    }
    let mut certs = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(invalid(format!(
                "block {} is a {:?}, not a CERTIFICATE",
                i + 1,
                block.tag()
            )));
        }
        x509_parser::parse_x509_certificate(block.contents())
            .map_err(|e| invalid(format!("certificate {} does not parse: {e}", i + 1)))?;
        certs.push(
            reqwest::Certificate::from_der(block.contents())
                .map_err(|e| invalid(format!("certificate {} is unusable: {e}", i + 1)))?,
        );
    }
    Ok(certs)
}

/// Refuses a URL whose host is a literal address in a forbidden range (a literal address is
/// never resolved, so the resolver does not see it).
pub(crate) fn check_literal_address(url: &str, forbidden: &ForbiddenRanges) -> Result<()> {
    let host = url::Url::parse(url).ok().and_then(|u| match u.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    });
    match host.and_then(|ip| forbidden.matching(ip).map(|r| (ip, r))) {
        Some((address, range)) => Err(Error::ForbiddenAddress {
            url: url.to_owned(),
            address,
            range: range.to_string(),
        }),
        None => Ok(()),
    }
}

/// The `host[:port]` that token audiences name instead of the CA URL's, for a CA reached
/// through a proxy or a Service alias whose name is not one of step-ca's dnsNames (step-ca
/// compares the audience's host with its dnsNames and ignores the port).
///
/// Accepts `host`, `host:port`, `[v6]:port`, or a full `https://host[:port]` URL (whose
/// authority is taken); refuses another scheme, a path, a query, a fragment or credentials.
/// Pure.
pub fn parse_audience_authority(raw: &str) -> Result<String> {
    let invalid = |detail: &str| Error::InvalidAudience {
        value: raw.to_owned(),
        detail: detail.to_owned(),
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let url_text = match trimmed.split_once("://") {
        Some((scheme, _)) if !scheme.eq_ignore_ascii_case("https") => {
            return Err(invalid(
                "the scheme must be https, as in every audience step-ca accepts",
            ));
        }
        Some(_) => trimmed.to_owned(),
        None if trimmed.contains(['/', '?', '#', '@']) => {
            return Err(invalid(
                "a host[:port] has no path, query, fragment or user part",
            ));
        }
        None if trimmed.matches(':').count() > 1 && !trimmed.starts_with('[') => {
            return Err(invalid(
                "write an IPv6 address in brackets, e.g. [fd00::1]:9000",
            ));
        }
        None => format!("https://{trimmed}"),
    };
    if url_text.chars().any(char::is_whitespace) {
        return Err(invalid("it contains whitespace"));
    }
    let parsed = url::Url::parse(&url_text).map_err(|e| invalid(&e.to_string()))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("it names no host"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("credentials are not part of an audience"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(
            "a query or fragment is not allowed (a fragment would even switch step-ca to another provisioner lookup)",
        ));
    }
    if !matches!(parsed.path(), "" | "/") {
        return Err(invalid(
            "a path is not allowed; the audience path is always /1.0/sign or /1.0/revoke",
        ));
    }
    Ok(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_authorities() {
        let ok = [
            ("step-ca.step.svc", "step-ca.step.svc"),
            ("step-ca.step.svc:9000", "step-ca.step.svc:9000"),
            (" ca.example ", "ca.example"),
            ("CA.Example:9000", "ca.example:9000"),
            ("https://ca.example", "ca.example"),
            ("https://ca.example:9000/", "ca.example:9000"),
            ("HTTPS://ca.example:9000", "ca.example:9000"),
            ("https://ca.example:443", "ca.example"),
            ("10.0.0.1:9000", "10.0.0.1:9000"),
            ("[fd00::1]:9000", "[fd00::1]:9000"),
            ("https://[::1]", "[::1]"),
        ];
        for (raw, want) in ok {
            assert_eq!(parse_audience_authority(raw).unwrap(), want, "{raw}");
        }
        let bad = [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("http://ca.example", "the scheme must be https"),
            ("ftp://ca.example", "the scheme must be https"),
            ("ca.example/1.0/sign", "no path, query, fragment or user"),
            ("https://ca.example/1.0/sign", "a path is not allowed"),
            ("https://ca.example/?x=1", "a query or fragment"),
            ("https://ca.example#frag", "a query or fragment"),
            ("user@ca.example", "no path, query, fragment or user"),
            ("https://u:p@ca.example", "credentials"),
            ("ca.example:port", "invalid port"),
            ("ca.example:99999", "invalid port"),
            ("fd00::1", "IPv6 address in brackets"),
            ("ca example", "whitespace"),
        ];
        for (raw, want) in bad {
            let err = parse_audience_authority(raw).unwrap_err();
            assert_eq!(err.reason(), "InvalidAudience", "{raw}");
            let text = err.to_string();
            assert!(text.contains(want), "{raw}: {text}");
            assert!(text.contains("one of step-ca's dnsNames"), "{text}");
        }
    }
}
