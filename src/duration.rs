//! Go duration strings (`2160h0m0s`, `1h30m`, `90s`, `1.5h`), as cert-manager writes
//! `spec.duration` and step-ca reads `notAfter`.

use std::time::Duration;

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

const MAX_SECS: f64 = 100.0 * 365.0 * 24.0 * 3600.0;

/// Parses a Go duration. Zero is allowed; negative values and more than 100 years are not.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(truncate(input));
    let (negative, mut rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if num_len == 0 {
            return Err(invalid());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += value * scale;
        if total > MAX_SECS {
            return Err(DurationError::TooLarge(truncate(input)));
        }
    }
    if negative && total > 0.0 {
        return Err(DurationError::Negative(truncate(input)));
    }
    Ok(Duration::from_secs_f64(total))
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
    fn formats_seconds() {
        assert_eq!(to_go_seconds(Duration::from_secs(7776000)), "7776000s");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_go_duration(&s);
        }
    }
}
