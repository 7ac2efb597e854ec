//! How long a certificate may live: the request's wish, capped by the issuer's `maxDuration` and
//! by the expiry of the intermediate that signs it, then checked against the provisioner's own
//! limits, so that step-ca is asked only for what it will grant, and a refusal names the numbers
//! before a token is spent. Pure; every signing path (CertificateRequests, pod certificates,
//! Kubernetes CSRs) asks it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::duration::format_go_duration;

/// step-ca's built-in default lifetime, assumed when the CA's own default is not visible.
pub const STEP_CA_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// A provisioner's lifetime claims, each when known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub min: Option<Duration>,
    pub max: Option<Duration>,
    pub default: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wish {
    /// What the request asks for; `None` leaves it to the CA.
    pub requested: Option<Duration>,
    /// The issuer's `spec.maxDuration`.
    pub max_duration: Option<Duration>,
    /// The provisioner's claims, when step-ca lists them.
    pub limits: Limits,
    /// When the intermediate that signs for this issuer expires, once known.
    pub intermediate_not_after: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// What to ask step-ca for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotAfter {
    /// Ask for nothing: the CA's default applies.
    CaDefault,
    /// A lifetime from now.
    For(Duration),
    /// An end of validity.
    Until(DateTime<Utc>),
}

impl NotAfter {
    /// The `notAfter` of step-ca's sign request: a Go duration or an RFC 3339 time.
    pub fn for_step_ca(&self) -> Option<String> {
        match self {
            NotAfter::CaDefault => None,
            NotAfter::For(d) => Some(crate::duration::to_go_seconds(*d)),
            NotAfter::Until(t) => Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub not_after: NotAfter,
    /// Why less was asked for than requested: worth an Event.
    pub capped: Option<String>,
}

/// Caps the wish, then checks it against the provisioner's limits. Refusals say which number is
/// out of range and what to change.
pub fn decide(wish: &Wish) -> Result<Granted, String> {
    let default = wish.limits.default;
    let mut not_after = match wish.requested {
        Some(d) => NotAfter::For(d),
        None => NotAfter::CaDefault,
    };
    let mut capped = None;
    if let Some(max) = wish.max_duration {
        let asked = wish.requested.or(default);
        // An unknown CA default may be longer than the cap: ask for the cap then, so it holds.
        if asked.is_none_or(|d| d > max) {
            capped = Some(match wish.requested {
                Some(d) => format!(
                    "the requested duration {} is capped to the issuer's spec.maxDuration {}",
                    go(d),
                    go(max)
                ),
                None => format!(
                    "no duration was requested: asking for the issuer's spec.maxDuration {}",
                    go(max)
                ),
            });
            not_after = NotAfter::For(max);
        }
    }
    let lifetime = lifetime_of(&not_after, default, wish.now);
    if let Some(end) = wish.intermediate_not_after
        && wish.now + to_chrono(lifetime) > end
    {
        if end <= wish.now {
            return Err(format!(
                "the CA's intermediate certificate expired at {}: renew step-ca's intermediate certificate",
                rfc3339(end)
            ));
        }
        capped = Some(format!(
            "the certificate ends when the CA's intermediate certificate expires, at {} (renew the intermediate to issue longer certificates)",
            rfc3339(end)
        ));
        not_after = NotAfter::Until(end);
    }
    check_limits(&not_after, &wish.limits, wish.now)?;
    Ok(Granted { not_after, capped })
}

/// The lifetime `not_after` gives from `now`; the CA default counts as its known default or as
/// step-ca's built-in one.
fn lifetime_of(not_after: &NotAfter, default: Option<Duration>, now: DateTime<Utc>) -> Duration {
    match not_after {
        NotAfter::CaDefault => default.unwrap_or(STEP_CA_DEFAULT),
        NotAfter::For(d) => *d,
        NotAfter::Until(t) => (*t - now).to_std().unwrap_or_default(),
    }
}

fn check_limits(not_after: &NotAfter, limits: &Limits, now: DateTime<Utc>) -> Result<(), String> {
    // With nothing asked, the CA applies its own default, which its own limits admit.
    if *not_after == NotAfter::CaDefault {
        return Ok(());
    }
    let lifetime = lifetime_of(not_after, limits.default, now);
    if let Some(min) = limits.min
        && lifetime < min
    {
        let why = match not_after {
            NotAfter::Until(_) => {
                "the CA's intermediate certificate expires sooner than that: renew it"
            }
            _ => {
                "lengthen the Certificate's duration, or lower the provisioner's minTLSCertDuration"
            }
        };
        return Err(format!(
            "the certificate would last {}, less than the provisioner's minTLSCertDuration {}: {why}",
            go(lifetime),
            go(min)
        ));
    }
    if let Some(max) = limits.max
        && lifetime > max
    {
        return Err(format!(
            "the requested duration {} is longer than the provisioner's maxTLSCertDuration {}: shorten the Certificate's duration, set the issuer's spec.maxDuration to {} to cap every request, or raise the provisioner's maxTLSCertDuration",
            go(lifetime),
            go(max),
            go(max)
        ));
    }
    Ok(())
}

fn go(d: Duration) -> String {
    format_go_duration(d)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
#[path = "lifetime_tests.rs"]
mod tests;
