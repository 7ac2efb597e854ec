//! One-time tokens for step-ca's JWK provisioner, minted in-process (ES256), so that the ceiling
//! measurement spends no time spawning `step ca token`.
//!
//! The provisioner's private JWK is decrypted once with `step crypto jwe decrypt`, turned into a
//! PKCS#8 document and handed to rustls's ring signer (the e2e crate has no JOSE dependency).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use rustls::SignatureScheme;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SigningKey;
use serde_json::{Value, json};

pub struct Minter {
    key: Arc<dyn SigningKey>,
    kid: String,
    issuer: String,
    audience: String,
    fingerprint: String,
}

impl Minter {
    /// `ca_json` is step-ca's config; `provisioner` the JWK provisioner's name.
    pub async fn new(
        step: &Path,
        ca_json: &Path,
        password_file: &Path,
        root: &Path,
        provisioner: &str,
        ca_url: &str,
    ) -> Result<Minter> {
        let cfg: Value = serde_json::from_slice(&std::fs::read(ca_json)?)
            .with_context(|| format!("reading {}", ca_json.display()))?;
        let prov = cfg["authority"]["provisioners"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == provisioner))
            .with_context(|| format!("no provisioner {provisioner} in {}", ca_json.display()))?;
        let encrypted = prov["encryptedKey"]
            .as_str()
            .context("provisioner has no encryptedKey")?;
        let steppath = tempfile::tempdir()?;
        let mut child = tokio::process::Command::new(step)
            .args(["crypto", "jwe", "decrypt", "--password-file"])
            .arg(password_file)
            .env("STEPPATH", steppath.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().context("stdin")?;
            stdin.write_all(encrypted.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!(
                "step crypto jwe decrypt failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let jwk: Value = serde_json::from_slice(&out.stdout)?;
        if jwk["crv"] != "P-256" {
            bail!(
                "only P-256 provisioner keys are supported, got {}",
                jwk["crv"]
            );
        }
        let field = |k: &str| -> Result<Vec<u8>> {
            let v = b64url_decode(jwk[k].as_str().with_context(|| format!("JWK has no {k}"))?)?;
            if v.len() != 32 {
                bail!("JWK {k} is {} bytes, expected 32", v.len());
            }
            Ok(v)
        };
        let der = pkcs8_p256(&field("d")?, &field("x")?, &field("y")?);
        let key = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(der),
        ))
        .map_err(|e| anyhow::anyhow!("loading the provisioner key: {e}"))?;
        let fp = crate::util::run_out(
            step,
            &[
                "certificate",
                "fingerprint",
                root.to_str().context("utf-8")?,
            ],
            &[("STEPPATH", steppath.path().to_str().context("utf-8")?)],
        )
        .await?;
        Ok(Minter {
            key,
            kid: jwk["kid"].as_str().unwrap_or_default().to_string(),
            issuer: provisioner.to_string(),
            audience: format!("{}/1.0/sign", ca_url.trim_end_matches('/')),
            fingerprint: fp.trim().to_string(),
        })
    }

    /// A fresh token for `subject` with `sans` (unique `jti`, 5-minute lifetime).
    pub fn token(&self, subject: &str, sans: &[&str]) -> Result<String> {
        use rand::Rng;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let jti: String = {
            let mut rng = rand::rng();
            (0..32)
                .map(|_| format!("{:02x}", rng.random::<u8>()))
                .collect()
        };
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let claims = json!({
            "iss": self.issuer, "aud": self.audience, "sub": subject, "sans": sans,
            "jti": jti, "iat": now, "nbf": now, "exp": now + 300, "sha": self.fingerprint,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(&serde_json::to_vec(&header)?),
            b64url(&serde_json::to_vec(&claims)?)
        );
        let signer = self
            .key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .context("the key cannot sign ES256")?;
        let sig = signer
            .sign(signing_input.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        Ok(format!(
            "{signing_input}.{}",
            b64url(&der_sig_to_raw(&sig)?)
        ))
    }
}

/// PKCS#8 `PrivateKeyInfo` for a P-256 key (RFC 5915 inside RFC 5208), with the public key.
fn pkcs8_p256(d: &[u8], x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30,
        0x6b, 0x02, 0x01, 0x01, 0x04, 0x20,
    ];
    v.extend_from_slice(d);
    v.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00, 0x04]);
    v.extend_from_slice(x);
    v.extend_from_slice(y);
    v
}

/// ASN.1 `ECDSA-Sig-Value` (what TLS uses) to JOSE's fixed 64-byte `r || s`.
fn der_sig_to_raw(der: &[u8]) -> Result<Vec<u8>> {
    fn int(b: &[u8]) -> Result<(&[u8], &[u8])> {
        if b.len() < 2 || b[0] != 0x02 {
            bail!("bad DER integer");
        }
        let n = b[1] as usize;
        let rest = b.get(2..2 + n).context("short DER integer")?;
        Ok((rest, &b[2 + n..]))
    }
    if der.len() < 2 || der[0] != 0x30 {
        bail!("bad DER signature");
    }
    let body = &der[2..];
    let (r, rest) = int(body)?;
    let (s, _) = int(rest)?;
    let mut out = vec![0u8; 64];
    for (i, part) in [r, s].iter().enumerate() {
        let p: &[u8] = {
            let mut p = *part;
            while p.len() > 32 && p[0] == 0 {
                p = &p[1..];
            }
            p
        };
        if p.len() > 32 {
            bail!("DER integer longer than 32 bytes");
        }
        out[i * 32 + 32 - p.len()..(i + 1) * 32].copy_from_slice(p);
    }
    Ok(out)
}

pub fn b64url(bytes: &[u8]) -> String {
    e2e::fixtures::base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

pub fn b64url_decode(s: &str) -> Result<Vec<u8>> {
    b64_decode(&s.replace('-', "+").replace('_', "/"))
}

/// Standard base64 (padding and whitespace ignored).
pub fn b64_decode(s: &str) -> Result<Vec<u8>> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        if c == b'=' || c.is_ascii_whitespace() {
            continue;
        }
        let v = A
            .iter()
            .position(|&a| a == c)
            .with_context(|| format!("bad base64 character {:?}", c as char))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
