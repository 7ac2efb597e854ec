//! Signing one CertificateRequest: what to ask for (pure, from the request), whether the issuer's
//! policy allows it (pure), then the signer, step-ca, and the check of what it returned.

use std::time::Instant;

use kube::ResourceExt;

use crate::cert_manager::CertificateRequest;
use crate::controller::context::Context;
use crate::duration::parse_go_duration;
use crate::issuer::IssuerObject;
use crate::pki;
use crate::policy::lifetime::{self, Granted, Limits, NotAfter, Wish};
use crate::policy::{IssuerPolicy, NamePolicy, Requester};
use crate::step;

use super::failure::{
    REASON_CERTIFICATE_MISMATCH, REASON_DURATION, REASON_INVALID_POLICY, REASON_NOT_A_CA,
    REASON_POLICY_DENIED, SignFailure,
};
use super::plan::Signed;

/// What the request asks step-ca for, once checked.
#[derive(Debug)]
pub struct SignInput {
    pub csr: pki::csr::Csr,
    pub sans: Vec<String>,
    /// The token's subject.
    pub subject: String,
    /// `spec.duration`; `None` leaves it to the provisioner.
    pub duration: Option<std::time::Duration>,
    /// `spec.usages`.
    pub usages: Vec<String>,
    /// `spec.isCA`.
    pub is_ca: bool,
}

/// Checks the request before anything touches the CA: a bad CSR never costs a token.
pub fn prepare(cr: &CertificateRequest) -> Result<SignInput, SignFailure> {
    let csr = pki::csr::parse_csr(&cr.spec.request.0)
        .map_err(|e| SignFailure::Invalid(format!("The CSR is not acceptable: {e}")))?;
    let duration = match cr.spec.duration.as_deref() {
        None | Some("") => None,
        Some(d) => match parse_go_duration(d) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => return Err(SignFailure::Invalid(format!("spec.duration: {e}"))),
        },
    };
    // step-ca classifies token SANs by their text, so an IP written as a DNS name can never match
    // the CSR: say so now instead of relaying step-ca's 403.
    if let Some(ip) = csr
        .dns_names
        .iter()
        .find(|d| d.parse::<std::net::IpAddr>().is_ok())
    {
        return Err(SignFailure::Invalid(format!(
            "The CSR lists the IP address {ip} as a DNS name, which step-ca cannot sign: move it from dnsNames to ipAddresses in the Certificate"
        )));
    }
    let sans = csr.sans();
    let Some(subject) = step::token::subject_for(csr.common_name.as_deref(), &sans) else {
        return Err(SignFailure::Invalid(
            "The CSR has neither a common name nor subject alternative names: add dnsNames, ipAddresses, uris or emailAddresses to the Certificate".into(),
        ));
    };
    Ok(SignInput {
        csr,
        sans,
        subject,
        duration,
        usages: cr.spec.usages.clone(),
        is_ca: cr.spec.is_ca == Some(true),
    })
}

/// The issuer's name policy, before any token is minted (security review H3): a namespace that
/// may not use the issuer, or a name it may not have, fails the request for good with the rule
/// and the fix. The common name is checked too, unless it cannot be a name at all (it has
/// whitespace, and SANs carry the names): without SANs, step-ca makes it the certificate's name.
pub fn check_policy(
    issuer: &str,
    policy: &IssuerPolicy,
    names: &NamePolicy,
    namespace: &str,
    input: &SignInput,
) -> Result<(), SignFailure> {
    let sans = &input.sans;
    let common_name = input
        .csr
        .common_name
        .as_deref()
        .filter(|cn| !cn.is_empty())
        .filter(|cn| sans.is_empty() || !cn.chars().any(char::is_whitespace));
    crate::policy::issuer::check(
        issuer,
        policy,
        names,
        Requester::Namespace(namespace),
        common_name
            .into_iter()
            .chain(sans.iter().map(String::as_str)),
    )
    .map_err(|e| SignFailure::Permanent {
        reason: REASON_POLICY_DENIED,
        message: format!("Refused by the name policy: {e}"),
    })
}

/// Signs `cr` (as just read from the API) with `issuer`, and checks what step-ca returned.
pub async fn sign_with<K: IssuerObject>(
    ctx: &Context,
    issuer: &K,
    cr: &CertificateRequest,
) -> Result<Signed, SignFailure> {
    let input = prepare(cr)?;
    let policy = ctx
        .request_policy(issuer)
        .map_err(|e| SignFailure::Retryable {
            reason: REASON_INVALID_POLICY,
            message: format!("{} has an unusable spec.policy: {e}", issuer.key()),
        })?;
    check_policy(
        &issuer.key().to_string(),
        &policy,
        &policy.name_policy(&ctx.settings.names),
        &cr.namespace().unwrap_or_default(),
        &input,
    )?;

    let signer = match ctx.issuers.signers.current(
        &issuer.key(),
        &issuer.uid().unwrap_or_default(),
        issuer.meta().generation.unwrap_or_default(),
    ) {
        Some(s) => s,
        // The cached issuer is slimmed (no caBundle): connect from the API's copy. Waiting here
        // for a connect of this issuer holds one of its --max-signs-per-issuer places, never
        // more, and no longer than the connect's deadline.
        None => match ctx.issuers.signer_for_latest(issuer).await {
            Ok((s, _)) => s,
            Err(e) => return Err(SignFailure::from_issuer(&e, &issuer.key(), K::AUDIENCE)),
        },
    };

    let request_id = cr.uid().unwrap_or_default();
    sign_and_check(ctx, issuer, &signer, &input, &request_id).await
}

/// What every path that hands step-ca a whole CSR does once the policy allowed it: the lifetime
/// policy, the sign call (CSR-bound token, `request_id` as X-Request-Id), then the check of
/// what came back ([`check_signed`]), with a capped lifetime told among the notes.
pub(crate) async fn sign_and_check<K: IssuerObject>(
    ctx: &Context,
    issuer: &K,
    signer: &step::Signer,
    input: &SignInput,
    request_id: &str,
) -> Result<Signed, SignFailure> {
    let granted = lifetime(issuer, signer, input.duration)?;
    let options = step::SignOptions {
        request_id: Some(request_id.to_string()),
        not_before: None,
        not_after: granted.not_after.for_step_ca(),
        csr_der: Some(input.csr.der.clone()),
    };
    let started = Instant::now();
    let result = signer
        .sign_with_options(&input.csr.pem, &input.subject, &input.sans, &options)
        .await;
    ctx.metrics
        .observe_ca("sign", result.is_ok(), started.elapsed().as_secs_f64());
    let response = result.map_err(|e| SignFailure::from_ca(&e, K::AUDIENCE, request_id))?;
    let mut signed = check_signed(
        &response.cert_chain,
        input,
        &granted,
        signer.roots_pem(),
        &issuer.key().to_string(),
    )?;
    if let Some(note) = granted.capped {
        signed.notes.insert(0, note);
    }
    Ok(signed)
}

/// How long to ask for: the request's duration under the issuer's `spec.maxDuration`, the
/// issuing intermediate's expiry and the provisioner's limits, checked before a token is spent.
fn lifetime<K: IssuerObject>(
    issuer: &K,
    signer: &step::Signer,
    requested: Option<std::time::Duration>,
) -> Result<Granted, SignFailure> {
    let facts = signer.facts();
    // The issuer is Ready, so its spec was validated: a bad value cannot get here.
    let max_duration = issuer
        .spec_view()
        .max_duration
        .and_then(|d| parse_go_duration(d).ok())
        .filter(|d| !d.is_zero());
    lifetime::decide(&Wish {
        requested,
        max_duration,
        limits: facts.claims.as_ref().map(limits_of).unwrap_or_default(),
        intermediate_not_after: facts.intermediate_not_after,
        now: chrono::Utc::now(),
    })
    .map_err(|message| SignFailure::Permanent {
        reason: REASON_DURATION,
        message: format!("Not signed: {message}"),
    })
}

/// The provisioner's claims, as the lifetime policy reads them.
pub fn limits_of(claims: &step::ProvisionerClaims) -> Limits {
    Limits {
        min: claims.min_tls_cert_duration,
        max: claims.max_tls_cert_duration,
        default: claims.default_tls_cert_duration,
    }
}

/// What step-ca returned must certify the request's key, form a chain, be unexpired, be a CA when
/// a CA was asked for, and give what was asked: a certificate weaker than the request fails it,
/// one that only lacks details is issued with those named in a warning. `ca` is the root that
/// signed it.
fn check_signed(
    chain: &[String],
    input: &SignInput,
    granted: &Granted,
    roots_pem: &[String],
    issuer: &str,
) -> Result<Signed, SignFailure> {
    let now = chrono::Utc::now();
    let issued = pki::chain::verify_issued(chain, &input.csr.public_key_der, now)
        .map_err(|e| SignFailure::unusable_chain(&e))?;
    if input.is_ca
        && let Some(message) = pki::ca::ca_request_shortfall(&issued.leaf)
    {
        return Err(SignFailure::Permanent {
            reason: REASON_NOT_A_CA,
            message,
        });
    }
    let fidelity = pki::fidelity::compare(
        &pki::fidelity::Requested {
            csr: &input.csr,
            usages: &input.usages,
            is_ca: input.is_ca,
            duration: granted_lifetime(granted, input.duration, now),
        },
        &issued.leaf.der,
    )
    .map_err(|e| SignFailure::unusable_chain(&e))?;
    if !fidelity.weakened.is_empty() {
        return Err(SignFailure::Permanent {
            reason: REASON_CERTIFICATE_MISMATCH,
            message: format!(
                "step-ca issued a certificate that does not give what was requested: {}; {TEMPLATE_ADVICE}",
                pki::fidelity::summarize(&fidelity.weakened)
            ),
        });
    }
    let ca = pki::chain::signing_root(&issued.chain, roots_pem)
        .ok()
        .flatten()
        .or_else(|| roots_pem.first().cloned())
        .unwrap_or_default();
    let mut notes = Vec::new();
    if !fidelity.dropped.is_empty() {
        notes.push(format!(
            "step-ca left out details of the request: {}; {TEMPLATE_ADVICE}",
            pki::fidelity::summarize(&fidelity.dropped)
        ));
    }
    Ok(Signed {
        message: format!(
            "Certificate issued by {issuer} for {:?}, valid until {}",
            input.subject,
            issued.not_after.to_rfc3339()
        ),
        certificate: issued.certificate_pem,
        ca,
        notes,
    })
}

/// Where the fix for a certificate that differs from its request is documented.
const TEMPLATE_ADVICE: &str = "a step-ca provisioner with the template of docs/step-ca-templates.md keeps the CSR's subject, usages and CA constraints";

/// The lifetime step-ca was asked for, which the certificate is compared with: the request's,
/// unless the lifetime policy asked for less (that difference is reported on its own).
fn granted_lifetime(
    granted: &Granted,
    requested: Option<std::time::Duration>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<std::time::Duration> {
    match &granted.not_after {
        NotAfter::CaDefault => requested,
        NotAfter::For(d) => Some(*d),
        NotAfter::Until(t) => (*t - now).to_std().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_manager::CertificateRequestSpec;
    use k8s_openapi::ByteString;

    fn csr(names: &[&str], cn: Option<&str>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // As written, never parsed: an IP written as a DNS name must stay one.
        params.subject_alt_names = names
            .iter()
            .map(|n| rcgen::SanType::DnsName(n.to_string().try_into().unwrap()))
            .collect();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }

    fn request(csr: Vec<u8>, duration: Option<&str>) -> CertificateRequest {
        let mut cr = CertificateRequest::new(
            "r",
            CertificateRequestSpec {
                request: ByteString(csr),
                duration: duration.map(Into::into),
                ..Default::default()
            },
        );
        cr.metadata.namespace = Some("team".into());
        cr
    }

    #[test]
    fn prepare_refuses_what_step_ca_cannot_sign() {
        let invalid = |cr: &CertificateRequest| match prepare(cr) {
            Err(SignFailure::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        let good = csr(&["web.team.svc"], None);
        assert!(
            invalid(&request(b"garbage".to_vec(), None)).starts_with("The CSR is not acceptable")
        );
        assert!(invalid(&request(good.clone(), Some("soon"))).starts_with("spec.duration"));
        assert!(
            invalid(&request(csr(&["10.0.0.1"], None), None))
                .contains("move it from dnsNames to ipAddresses")
        );

        let input = prepare(&request(good.clone(), Some("1h"))).unwrap();
        assert_eq!(input.subject, "web.team.svc");
        assert_eq!(input.sans, ["web.team.svc"]);
        assert_eq!(input.duration, Some(std::time::Duration::from_secs(3600)));
        // A zero duration leaves the lifetime to the provisioner.
        assert_eq!(prepare(&request(good, Some("0s"))).unwrap().duration, None);
    }

    #[test]
    fn the_policy_reads_the_common_name_only_when_it_can_be_a_name() {
        let names = NamePolicy::new("cluster.local", Vec::new());
        let policy = crate::policy::issuer::for_requests(
            None,
            true,
            crate::policy::WithoutPolicy::NamespaceNames,
        )
        .unwrap();
        let check = |sans: &[&str], cn: Option<&str>| {
            let input = prepare(&request(csr(sans, cn), None)).unwrap();
            check_policy("StepClusterIssuer ca", &policy, &names, "team", &input)
        };
        assert_eq!(check(&["web.team.svc"], None), Ok(()));
        assert_eq!(check(&["web.team.svc"], Some("My Web Server")), Ok(()));
        let Err(SignFailure::Permanent { reason, message }) = check(&["web.other.svc"], None)
        else {
            panic!("another namespace's name is refused");
        };
        assert_eq!(reason, REASON_POLICY_DENIED);
        assert!(message.contains("web.other.svc"), "{message}");
        assert!(check(&["web.team.svc"], Some("web.other.svc")).is_err());
    }
}
