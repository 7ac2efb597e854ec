//! Whether a certificate issued for a CA request really is a CA.
//!
//! cert-manager's `spec.isCA` asks for a certificate that can sign others. step-ca's default
//! template ignores the CSR's basic constraints and issues a leaf, so the result must be checked:
//! a request that asked for a CA ends Issued only with a certificate that has BasicConstraints
//! `CA:TRUE` and a keyUsage that allows `keyCertSign`.

use super::chain::CertInfo;

/// What a certificate lacks to act as a CA, in words; empty when it is one.
pub fn missing_ca_properties(cert: &CertInfo) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !cert.is_ca {
        missing.push("BasicConstraints CA:TRUE");
    }
    if !cert.key_cert_sign {
        missing.push("keyUsage keyCertSign");
    }
    missing
}

/// The message of a CA request that was signed as something else, naming the fix. `None` when the
/// certificate is a CA.
pub fn ca_request_shortfall(cert: &CertInfo) -> Option<String> {
    let missing = missing_ca_properties(cert);
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "The request asks for a CA certificate (isCA: true), but step-ca issued one without {}: \
         sign CA requests with a step-ca provisioner whose template issues CA certificates \
         (basicConstraints isCA true and keyUsage certSign), or remove isCA from the Certificate",
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::chain::cert_info;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

    fn cert(is_ca: bool, usages: &[KeyUsagePurpose]) -> CertInfo {
        let mut p = CertificateParams::new(vec!["x.example".to_string()]).unwrap();
        if is_ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        } else {
            p.is_ca = IsCa::ExplicitNoCa;
        }
        p.key_usages = usages.to_vec();
        let key = KeyPair::generate().unwrap();
        let der = p.self_signed(&key).unwrap().der().to_vec();
        cert_info(0, &der).unwrap()
    }

    #[test]
    fn a_ca_needs_both_basic_constraints_and_key_cert_sign() {
        use KeyUsagePurpose::{CrlSign, DigitalSignature, KeyCertSign};
        let cases: [(&str, CertInfo, &[&str]); 5] = [
            ("real CA", cert(true, &[KeyCertSign, CrlSign]), &[]),
            (
                "leaf (step-ca's default template)",
                cert(false, &[DigitalSignature]),
                &["BasicConstraints CA:TRUE", "keyUsage keyCertSign"],
            ),
            (
                "CA without keyCertSign",
                cert(true, &[DigitalSignature]),
                &["keyUsage keyCertSign"],
            ),
            (
                "CA without any keyUsage",
                cert(true, &[]),
                &["keyUsage keyCertSign"],
            ),
            (
                "keyCertSign on a leaf",
                cert(false, &[KeyCertSign]),
                &["BasicConstraints CA:TRUE"],
            ),
        ];
        for (name, info, want) in cases {
            assert_eq!(missing_ca_properties(&info), want, "{name}");
            assert_eq!(
                ca_request_shortfall(&info).is_none(),
                want.is_empty(),
                "{name}"
            );
        }
    }

    #[test]
    fn the_message_names_what_is_missing_and_the_fix() {
        use KeyUsagePurpose::DigitalSignature;
        let msg = ca_request_shortfall(&cert(false, &[DigitalSignature])).unwrap();
        assert!(msg.contains("isCA: true"), "{msg}");
        assert!(
            msg.contains("without BasicConstraints CA:TRUE and keyUsage keyCertSign"),
            "{msg}"
        );
        assert!(
            msg.contains("provisioner whose template issues CA certificates"),
            "{msg}"
        );
    }
}
