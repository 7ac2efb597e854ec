//! Go duration strings (`2160h0m0s`, `1h30m`, `90s`, `1.5h`), as cert-manager writes
//! `spec.duration`, step-ca reads `notAfter`, the pod annotation `autocert.step.sm/duration` and
//! our duration flags are written. One exact parser (integer nanoseconds) serves them all.

use std::time::Duration;

/// The longest duration accepted anywhere: 100 years.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration is empty: use a Go duration such as 2160h or 90m")]
    Empty,
    #[error("duration {0:?} is negative: use a positive Go duration such as 2160h")]
    Negative(String),
    #[error(
        "duration {0:?} is not a Go duration: use digits with a unit (ns, us, ms, s, m, h), for example 2160h or 1h30m"
    )]
    Invalid(String),
    #[error("duration {0:?} is too large: the limit is 100 years")]
    TooLarge(String),
}

/// Parses a Go duration. Zero is allowed; negative values and more than 100 years are not.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    match signed(s) {
        Ok((true, d)) if !d.is_zero() => Err(DurationError::Negative(truncate(input))),
        Ok((_, d)) => Ok(d),
        Err(GoDurationError::TooLong) => Err(DurationError::TooLarge(truncate(input))),
        Err(_) => Err(DurationError::Invalid(truncate(input))),
    }
}

/// Parses a Go duration that must be positive (a certificate's lifetime): `"0"` and any negative
/// value are [`GoDurationError::NotPositive`].
pub fn parse_positive(s: &str) -> Result<Duration, GoDurationError> {
    match signed(s)? {
        (false, d) if !d.is_zero() => Ok(d),
        _ => Err(GoDurationError::NotPositive),
    }
}

/// A duration flag's value parser (clap).
pub fn parse_flag(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

/// Why a Go duration string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoDurationError {
    /// Not Go duration syntax.
    Invalid,
    /// Zero or negative.
    NotPositive,
    /// Longer than [`MAX_DURATION`].
    TooLong,
}

/// The sign and magnitude of a Go `time.ParseDuration` string (`"24h"`, `"1h30m"`, `"1.5h"`,
/// `"300ms"`; units ns, us, µs, ms, s, m, h), exactly (integer nanoseconds), at most
/// [`MAX_DURATION`].
fn signed(s: &str) -> Result<(bool, Duration), GoDurationError> {
    const MAX_NANOS: u128 = MAX_DURATION.as_nanos();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(GoDurationError::Invalid);
    }
    let mut total: u128 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        // Number: digits, optional '.', digits; at least one digit overall.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(GoDurationError::Invalid);
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(GoDurationError::Invalid),
        };
        // Integer part; more than 30 digits is certainly too long (and would overflow).
        let int_digits = int_digits.trim_start_matches('0');
        if int_digits.len() > 30 {
            return Err(GoDurationError::TooLong);
        }
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| GoDurationError::Invalid)?
        };
        let mut value = int.checked_mul(scale).ok_or(GoDurationError::TooLong)?;
        // Fraction: only the first 18 digits matter at nanosecond precision.
        let frac_digits = &frac_digits[..frac_digits.len().min(18)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| GoDurationError::Invalid)?;
            let denom = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(18));
            value = value
                .checked_add(frac * scale / denom)
                .ok_or(GoDurationError::TooLong)?;
        }
        total = total.checked_add(value).ok_or(GoDurationError::TooLong)?;
        if total > MAX_NANOS {
            return Err(GoDurationError::TooLong);
        }
    }
    let nanos = u64::try_from(total).map_err(|_| GoDurationError::TooLong)?;
    Ok((negative, Duration::from_nanos(nanos)))
}

/// Formats a duration as a Go duration string that [`parse_positive`] (and Go) read back
/// exactly: `"24h"`, `"1h30m"`, `"90s"`, `"1500ms"`, `"7ns"`.
pub fn format_go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        let secs = d.as_secs();
        if secs == 0 {
            return "0s".to_owned();
        }
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if s > 0 {
            out.push_str(&format!("{s}s"));
        }
        out
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// Formats whole seconds the way step-ca reads them back (`7776000s`).
pub fn to_go_seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ok = [
            ("2160h0m0s", 2160 * 3600),
            ("1h30m", 5400),
            ("90s", 90),
            ("5m", 300),
            ("0", 0),
            ("0s", 0),
            ("1.5h", 5400),
            ("+10s", 10),
        ];
        for (input, secs) in ok {
            assert_eq!(parse_go_duration(input).unwrap().as_secs(), secs, "{input}");
        }
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn rejects_bad_durations() {
        let bad = [
            ("", DurationError::Empty),
            ("-1h", DurationError::Negative("-1h".into())),
            ("10", DurationError::Invalid("10".into())),
            ("h", DurationError::Invalid("h".into())),
            ("1d", DurationError::Invalid("1d".into())),
            ("1h-5m", DurationError::Invalid("1h-5m".into())),
            ("1..2s", DurationError::Invalid("1..2s".into())),
            ("99999999h", DurationError::TooLarge("99999999h".into())),
        ];
        for (input, want) in bad {
            assert_eq!(parse_go_duration(input), Err(want), "{input}");
        }
    }

    #[test]
    fn go_durations() {
        let ok: &[(&str, Duration)] = &[
            ("24h", Duration::from_secs(86_400)),
            ("90m", Duration::from_secs(5_400)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1.5h", Duration::from_secs(5_400)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("+5m", Duration::from_secs(300)),
            ("300ms", Duration::from_millis(300)),
            ("2us", Duration::from_micros(2)),
            ("2\u{b5}s", Duration::from_micros(2)),
            ("2\u{3bc}s", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
            ("1h1h", Duration::from_secs(7_200)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("876000h", MAX_DURATION),
        ];
        for (s, want) in ok {
            assert_eq!(parse_positive(s), Ok(*want), "{s}");
        }
        let bad: &[(&str, GoDurationError)] = &[
            ("", GoDurationError::Invalid),
            ("1d", GoDurationError::Invalid),
            ("h", GoDurationError::Invalid),
            ("1", GoDurationError::Invalid),
            (".h", GoDurationError::Invalid),
            ("1h 2m", GoDurationError::Invalid),
            ("1H", GoDurationError::Invalid),
            ("-", GoDurationError::Invalid),
            ("0", GoDurationError::NotPositive),
            ("0s", GoDurationError::NotPositive),
            ("-1h", GoDurationError::NotPositive),
            ("-0", GoDurationError::NotPositive),
            ("876000h1ns", GoDurationError::TooLong),
            (
                "99999999999999999999999999999999999h",
                GoDurationError::TooLong,
            ),
        ];
        for (s, want) in bad {
            assert_eq!(parse_positive(s), Err(*want), "{s}");
        }
    }

    #[test]
    fn go_duration_format() {
        let cases: &[(Duration, &str)] = &[
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(5_400), "1h30m"),
            (Duration::from_secs(3_661), "1h1m1s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::from_nanos(7), "7ns"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(*d), *want);
        }
    }

    #[test]
    fn formats_seconds() {
        assert_eq!(to_go_seconds(Duration::from_secs(7776000)), "7776000s");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn go_duration_never_panics(s in ".*") {
            let _ = parse_positive(&s);
        }

        #[test]
        fn go_duration_syntax_never_panics(s in "[-+]?([0-9]{0,25}(\\.[0-9]{0,25})?(ns|us|ms|s|m|h|x|µs)?){1,4}") {
            let _ = parse_positive(&s);
        }

        #[test]
        fn go_duration_round_trip(nanos in 1u64..=MAX_DURATION.as_nanos() as u64) {
            let d = Duration::from_nanos(nanos);
            proptest::prop_assert_eq!(parse_positive(&format_go_duration(d)), Ok(d));
        }
    }
}
