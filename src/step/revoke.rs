//! Revocation (protocol doc §6, `POST /1.0/revoke`): passive only, which is all step-ca does: a
//! mark in its database that blocks renewal and feeds the CRL.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::client::Client;
use super::{Error, Result};

const ACTION_REVOKE: &str = "revoke the certificate";

/// Longest serial accepted, in hex digits: RFC 5280 allows 20 octets (40 digits); twice that
/// leaves room for non-conforming CAs and still bounds the conversion.
const MAX_SERIAL_HEX_DIGITS: usize = 80;

/// A certificate serial number, in the notation the caller has it in. Hex is what
/// [`CertInfo::serial_hex`](crate::pki::chain::CertInfo) holds; step-ca wants decimal in the
/// token, so the two must not be guessed from the text (`"1234"` is both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialNumber {
    /// Hex digits, either case, with an optional `0x` and optional `:` separators.
    Hex(String),
    /// Decimal digits.
    Decimal(String),
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::InvalidSerial {
        detail: detail.into(),
    }
}

impl SerialNumber {
    /// The decimal form step-ca normalises serials to (no leading zeros). Pure.
    pub fn to_decimal(&self) -> Result<String> {
        match self {
            SerialNumber::Decimal(text) => {
                let t = text.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(format!("{text:?} is not a decimal number")));
                }
                let t = t.trim_start_matches('0');
                Ok(if t.is_empty() { "0".into() } else { t.into() })
            }
            SerialNumber::Hex(text) => hex_to_decimal(text),
        }
    }
}

/// Converts hex digits to decimal with base-10⁹ limbs, so any serial length works without a
/// big-number dependency.
fn hex_to_decimal(text: &str) -> Result<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: Vec<u32> = t
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_digit(16))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid(format!("{text:?} is not a hex number")))?;
    if digits.is_empty() {
        return Err(invalid(format!("{text:?} has no digits")));
    }
    if digits.len() > MAX_SERIAL_HEX_DIGITS {
        return Err(invalid(format!(
            "the serial has {} hex digits, more than the {MAX_SERIAL_HEX_DIGITS} accepted",
            digits.len()
        )));
    }
    const LIMB: u64 = 1_000_000_000;
    // Little-endian limbs of the value so far.
    let mut limbs: Vec<u64> = vec![0];
    for digit in digits {
        let mut carry = u64::from(digit);
        for limb in &mut limbs {
            let v = *limb * 16 + carry;
            *limb = v % LIMB;
            carry = v / LIMB;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    let mut out = String::new();
    for (i, limb) in limbs.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&limb.to_string());
        } else {
            out.push_str(&format!("{limb:09}"));
        }
    }
    Ok(out)
}

/// RFC 5280 CRLReason codes, which step-ca accepts as `reasonCode` (0 to 10; 7 is unused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RevocationReason {
    #[default]
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    RemoveFromCrl,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    /// The RFC 5280 code.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::RemoveFromCrl => 8,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }
}

/// Body of `POST /1.0/revoke`.
#[derive(Serialize)]
struct RevokeRequest<'a> {
    serial: &'a str,
    ott: &'a str,
    passive: bool,
    #[serde(rename = "reasonCode")]
    reason_code: u8,
    reason: &'a str,
}

impl fmt::Debug for RevokeRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevokeRequest")
            .field("serial", &self.serial)
            .field("ott", &"<redacted>")
            .field("reason_code", &self.reason_code)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `POST /1.0/revoke` with a revoke token (`sub` = `serial_decimal`, audience
    /// [`Client::audience_revoke`]), passive as step-ca requires. `request_id` becomes
    /// `X-Request-Id`. 200 is success; 501 means the CA has no database
    /// ([`Error::is_not_implemented`]); 400 "already revoked" is [`Error::is_already_revoked`].
    pub async fn revoke(
        &self,
        serial_decimal: &str,
        ott: &str,
        reason_code: u8,
        reason: &str,
        request_id: Option<&str>,
    ) -> Result<()> {
        let body = RevokeRequest {
            serial: serial_decimal,
            ott,
            passive: true,
            reason_code,
            reason,
        };
        let url = self.endpoint("/1.0/revoke")?;
        let _: Value = self
            .send_json_limited(
                self.inner.http.post(url).json(&body),
                "/1.0/revoke",
                ACTION_REVOKE,
                64 * 1024,
                request_id,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_to_decimal() {
        let hex = |s: &str| SerialNumber::Hex(s.into()).to_decimal();
        let dec = |s: &str| SerialNumber::Decimal(s.into()).to_decimal();
        let cases = [
            ("0", "0"),
            ("00", "0"),
            ("1", "1"),
            ("ff", "255"),
            ("FF", "255"),
            ("0x10", "16"),
            ("0Xff", "255"),
            ("1234", "4660"),
            ("3b9aca00", "1000000000"),
            ("3b9ac9ff", "999999999"),
            ("ffffffffffffffff", "18446744073709551615"),
            ("10000000000000000", "18446744073709551616"),
            (
                "ffffffffffffffffffffffffffffffff",
                "340282366920938463463374607431768211455",
            ),
            // 20 octets, the RFC 5280 maximum.
            (
                "7fffffffffffffffffffffffffffffffffffffff",
                "730750818665451459101842416358141509827966271487",
            ),
            ("0a:1b:2c", "662316"),
            (" 00ab \n", "171"),
        ];
        for (input, want) in cases {
            assert_eq!(hex(input).unwrap(), want, "{input}");
        }
        assert_eq!(dec("0042").unwrap(), "42");
        assert_eq!(dec("0").unwrap(), "0");
        assert_eq!(dec(" 1234 ").unwrap(), "1234");
        for bad in ["", "0x", "xyz", "12 34", "-1", "0x-1", &"f".repeat(81)] {
            let err = hex(bad).unwrap_err();
            assert_eq!(err.reason(), "InvalidSerial", "{bad}");
        }
        for bad in ["", "ff", "-1", "1.5"] {
            assert_eq!(dec(bad).unwrap_err().reason(), "InvalidSerial", "{bad}");
        }
    }

    #[test]
    fn every_reason_code_is_rfc5280s() {
        use RevocationReason::*;
        let all = [
            Unspecified,
            KeyCompromise,
            CaCompromise,
            AffiliationChanged,
            Superseded,
            CessationOfOperation,
            CertificateHold,
            RemoveFromCrl,
            PrivilegeWithdrawn,
            AaCompromise,
        ];
        let codes: Vec<u8> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]);
    }

    #[test]
    fn the_revoke_body_is_steps_and_hides_the_token() {
        let body = RevokeRequest {
            serial: "4660",
            ott: "secret.token.value",
            passive: true,
            reason_code: 4,
            reason: "superseded",
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"serial": "4660", "ott": "secret.token.value", "passive": true,
                               "reasonCode": 4, "reason": "superseded"})
        );
        assert!(!format!("{body:?}").contains("secret"));
    }
}
