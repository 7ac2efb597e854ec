//! One-time tokens for step-ca's JWK provisioner, minted in-process by step-operator's own token
//! code, so that the ceiling measurement spends no time spawning `step ca token` and step-ca
//! sees the tokens the controller sends.
//!
//! The provisioner's private JWK is decrypted once, from step-ca's config and the provisioner
//! password, as the controller decrypts it from the CA's provisioner list.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use serde_json::Value;
use step_operator::step::signer::root_fingerprint;
use step_operator::step::token::DEFAULT_TOKEN_LIFETIME;
use step_operator::step::{ProvisionerKey, TokenClaims, decrypt_provisioner_key, trim_password};

pub struct Minter {
    key: ProvisionerKey,
    /// Everything but the subject and SANs, which change with each token.
    claims: TokenClaims,
}

impl Minter {
    /// `ca_json` is step-ca's config; `provisioner` the JWK provisioner's name.
    pub fn new(
        ca_json: &Path,
        password_file: &Path,
        root_pem: &str,
        provisioner: &str,
        ca_url: &str,
    ) -> Result<Minter> {
        let cfg: Value = serde_json::from_slice(
            &std::fs::read(ca_json).with_context(|| format!("reading {}", ca_json.display()))?,
        )
        .with_context(|| format!("parsing {}", ca_json.display()))?;
        let prov = cfg["authority"]["provisioners"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == provisioner))
            .with_context(|| format!("no provisioner {provisioner} in {}", ca_json.display()))?;
        let encrypted = prov["encryptedKey"]
            .as_str()
            .context("provisioner has no encryptedKey")?;
        let password = std::fs::read(password_file)
            .with_context(|| format!("reading {}", password_file.display()))?;
        // Trailing whitespace trimmed, as `step --password-file` reads the file.
        let key = decrypt_provisioner_key(encrypted, trim_password(&password))
            .context("decrypting the provisioner key")?;
        let root_sha256_hex =
            root_fingerprint(root_pem).context("the CA root is not a PEM certificate")?;
        Ok(Minter {
            key,
            claims: TokenClaims {
                issuer: provisioner.to_string(),
                subject: String::new(),
                sans: Vec::new(),
                audience: format!("{}/1.0/sign", ca_url.trim_end_matches('/')),
                root_sha256_hex: Some(root_sha256_hex),
                lifetime: DEFAULT_TOKEN_LIFETIME,
                csr_fingerprint: None,
                purpose: Default::default(),
            },
        })
    }

    /// A fresh token for `subject` with `sans` (random `jti`, 5-minute lifetime).
    pub fn token(&self, subject: &str, sans: &[&str]) -> Result<String> {
        let claims = TokenClaims {
            subject: subject.to_string(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            ..self.claims.clone()
        };
        Ok(self.key.sign_token(&claims, SystemTime::now())?)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    /// smallstep/certificates `ca/testdata/ca.json`, provisioner "mariano", password "password".
    const MARIANO_JWE: &str = "eyJhbGciOiJQQkVTMi1IUzI1NitBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIiwicDJjIjoxMDAwMDAsInAycyI6IlB1UnJVQ1RZZkR1T2F5MEh2cGl6bncifQ.7a-OP5xWGbFra8m2MN9YuLGt6v4y0wmB.u-54daK2y-0UO9na.3GQy6E52-fOSUu5NJ_sEbxj_T3CTyWb7wOPFv2oI2PBWXp5CLpiWJbCFpF4v2oD9fN5XbxMP14ootbrFjATnoMWfWgyLwG-KOj9BqMGNxhG2v37yC7Wrris6s30nrPa3uyNEYZ12AOQW1K04cU2X0u_qJM3vzMCle548ZFTWs6_d6L8lp3o0F9MEbCmJ4p6CLqQxjxYtn1aD79lM91NbIXpRP3iUFQRly-y_iC2mSkXCdd_cQ6-dqLUchXwWRyVO5nBHb4J87aZ91VApw7ldTLtwRZ2ZGJpqGQGgjTwi4sgjEcMuGg0_83XGk2ubdlKDpmGFedOHS5rYCbxotts.vSYfxsi2UU9LQeySDjAnnQ";

    /// The header and claim set the bench's own ES256 minter wrote, from step-ca's files.
    #[test]
    fn tokens_carry_the_claims_the_old_minter_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let ca_json = dir.path().join("ca.json");
        let config = json!({"authority": {"provisioners": [
            {"name": "other", "type": "JWK"},
            {"name": "mariano", "type": "JWK", "encryptedKey": MARIANO_JWE},
        ]}});
        std::fs::write(&ca_json, config.to_string()).unwrap();
        // A password file as `step` writes it, with a newline.
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, "password\n").unwrap();
        let root = rcgen::CertificateParams::new(vec!["root".into()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let minter = Minter::new(
            &ca_json,
            &password_file,
            &root.pem(),
            "mariano",
            "https://ca.example:9000/",
        )
        .unwrap();

        let token = minter.token("a.example", &["a.example"]).unwrap();
        let part = |i: usize| -> Value {
            let seg = token.split('.').nth(i).unwrap();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
        };
        let header = part(0);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], "FLIV7q23CXHrg75J2OSbvzwKJJqoxCYixjmsJirneOg");
        let claims = part(1);
        let mut keys: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "aud", "exp", "iat", "iss", "jti", "nbf", "sans", "sha", "sub"
            ]
        );
        assert_eq!(claims["iss"], "mariano");
        assert_eq!(claims["aud"], "https://ca.example:9000/1.0/sign");
        assert_eq!(claims["sub"], "a.example");
        assert_eq!(claims["sans"], json!(["a.example"]));
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            300
        );
        assert_eq!(claims["nbf"], claims["iat"]);
        assert_eq!(claims["sha"].as_str().unwrap().len(), 64);
        // ES256: a fixed-width r || s.
        let sig = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(2).unwrap())
            .unwrap();
        assert_eq!(sig.len(), 64);
        // Every token is new (step-ca burns each jti).
        assert_ne!(minter.token("a.example", &["a.example"]).unwrap(), token);
    }
}
