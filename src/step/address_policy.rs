//! Address ranges a CA URL must not lead to (`--forbidden-ca-cidrs`).
//!
//! A tenant's StepIssuer makes the controller connect wherever its URL points, from the
//! controller's place in the network: the cloud metadata service, the apiserver, loopback. The
//! check applies to the addresses actually connected to: a literal IP in the URL, and every
//! address a name resolves to (through [`GuardedResolver`]), so neither a DNS name nor a
//! selector-less Service with hand-written endpoints gets around it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// An address range, `10.0.0.0/8` or `fd00::/8`; a bare address is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{s:?} is not an address range: write it as 169.254.0.0/16, fd00::/8 or 10.96.0.1"
            )
        })?;
        let network = network.to_canonical();
        let max = max_prefix(network);
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("{s:?}: the prefix length must be a number from 0 to {max}")
            })?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl Cidr {
    /// Whether `ip` lies in the range. An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) counts
    /// as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` are equal. Pure.
fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// The ranges a CA URL must not lead to; empty allows every address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForbiddenRanges(Arc<Vec<Cidr>>);

impl ForbiddenRanges {
    pub fn new(ranges: Vec<Cidr>) -> Self {
        ForbiddenRanges(Arc::new(ranges))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first range that holds `ip`, if any.
    pub fn matching(&self, ip: IpAddr) -> Option<Cidr> {
        self.0.iter().copied().find(|r| r.contains(ip))
    }
}

/// A name resolved to an address in a forbidden range. Travels through reqwest as the cause of
/// its connect error; the client turns it back into [`super::Error::ForbiddenAddress`].
#[derive(Debug)]
pub struct ForbiddenAddress {
    pub address: IpAddr,
    pub range: Cidr,
}

impl fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is in the forbidden range {}",
            self.address, self.range
        )
    }
}

impl std::error::Error for ForbiddenAddress {}

/// Resolves with the system resolver, as reqwest does by default, and refuses the name when
/// any address it resolves to is forbidden: connecting to the others would still let the owner
/// of the name choose, per connection, where it goes.
pub(crate) struct GuardedResolver {
    pub ranges: ForbiddenRanges,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let ranges = self.ranges.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some((address, range)) = addrs
                .iter()
                .find_map(|a| ranges.matching(a.ip()).map(|r| (a.ip(), r)))
            {
                return Err(Box::new(ForbiddenAddress { address, range }) as _);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(cidr("169.254.0.0/16").to_string(), "169.254.0.0/16");
        assert_eq!(cidr(" 10.96.0.1 ").to_string(), "10.96.0.1/32");
        assert_eq!(cidr("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("::ffff:127.0.0.1/32").to_string(), "127.0.0.1/32");
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/x",
            "host/8",
            "10.0.0/8",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn containment() {
        let cases = [
            // (range, address, contained)
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "127.255.255.255", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("169.254.0.0/16", "169.254.169.254", true),
            ("169.254.0.0/16", "169.255.0.1", false),
            ("10.96.0.1", "10.96.0.1", true),
            ("10.96.0.1", "10.96.0.2", false),
            ("10.96.0.0/12", "10.111.255.255", true),
            ("10.96.0.0/12", "10.112.0.0", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("::1", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
        ];
        for (range, addr, want) in cases {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(cidr(range).contains(ip), want, "{range} ∋ {addr}");
        }
    }

    #[test]
    fn the_first_matching_range_is_named() {
        let ranges = ForbiddenRanges::new(vec![cidr("10.0.0.0/8"), cidr("127.0.0.0/8")]);
        assert_eq!(
            ranges.matching("127.0.0.1".parse().unwrap()),
            Some(cidr("127.0.0.0/8"))
        );
        assert_eq!(ranges.matching("192.0.2.1".parse().unwrap()), None);
        assert!(ForbiddenRanges::default().is_empty());
        assert_eq!(
            ForbiddenRanges::default().matching("127.0.0.1".parse().unwrap()),
            None
        );
    }
}
