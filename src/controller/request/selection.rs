//! Whether the apiserver can send us only our CertificateRequests. cert-manager 1.20 made
//! `spec.issuerRef.{group,kind,name}` selectable fields of CertificateRequests; with them, the
//! watch asks for `spec.issuerRef.group=certmanager.step.sm` and a cluster's requests for other
//! issuers cost nothing (the apiserver filters before sending). Older CRDs refuse the selector
//! (HTTP 400): then every request is watched and filtered here, as before.

use kube::api::{Api, ListParams};

use crate::cert_manager::CertificateRequest;

/// The field selector of our requests.
pub const OUR_REQUESTS: &str = "spec.issuerRef.group=certmanager.step.sm";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The watch carries [`OUR_REQUESTS`].
    Ours,
    /// Every request is watched; why.
    All(String),
}

impl Selection {
    pub fn field_selector(&self) -> Option<&'static str> {
        match self {
            Selection::Ours => Some(OUR_REQUESTS),
            Selection::All(_) => None,
        }
    }
}

/// What a probe's answer means: an apiserver that refuses the selector (400) has CRDs without
/// selectable fields; any other failure is taken the same way, since watching everything is
/// always correct, only heavier.
pub fn from_probe(wanted: bool, probe: Option<Result<(), (u16, String)>>) -> Selection {
    match (wanted, probe) {
        (false, _) => Selection::All("--select-requests=false".into()),
        (true, Some(Ok(()))) | (true, None) => Selection::Ours,
        (true, Some(Err((400, message)))) => Selection::All(format!(
            "the apiserver does not serve spec.issuerRef.group as a selectable field of CertificateRequests (cert-manager's CRDs before 1.20): {message}"
        )),
        (true, Some(Err((status, message)))) => Selection::All(format!(
            "probing the field selector failed (HTTP {status}): {message}"
        )),
    }
}

/// Asks the apiserver once (a list of at most one request with the selector).
pub async fn probe(client: &kube::Client, namespace: Option<&str>, wanted: bool) -> Selection {
    if !wanted {
        return from_probe(false, None);
    }
    let api = match namespace {
        Some(ns) => Api::<CertificateRequest>::namespaced(client.clone(), ns),
        None => Api::<CertificateRequest>::all(client.clone()),
    };
    let answer = api
        .list_metadata(&ListParams::default().fields(OUR_REQUESTS).limit(1))
        .await;
    let probe = match answer {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err((e.code, e.message)),
        Err(e) => Err((0, e.to_string())),
    };
    from_probe(true, Some(probe))
}

/// [`probe`], and a log line that says which requests are watched and why.
pub async fn decide(client: &kube::Client, namespace: Option<&str>, wanted: bool) -> Selection {
    let selection = probe(client, namespace, wanted).await;
    match &selection {
        Selection::Ours => tracing::info!(
            field_selector = OUR_REQUESTS,
            namespace,
            "Watching only our CertificateRequests: the apiserver filters by spec.issuerRef.group"
        ),
        Selection::All(why) => tracing::info!(
            reason = %why,
            namespace,
            "Watching every CertificateRequest and keeping ours"
        ),
    }
    selection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_is_used_only_where_served_and_wanted() {
        assert_eq!(
            from_probe(true, Some(Ok(()))).field_selector(),
            Some(OUR_REQUESTS)
        );
        let old_crds = from_probe(true, Some(Err((400, "field label not supported".into()))));
        assert_eq!(old_crds.field_selector(), None);
        assert!(
            matches!(&old_crds, Selection::All(why) if why.contains("before 1.20") && why.contains("field label not supported"))
        );
        let off = from_probe(false, Some(Ok(())));
        assert_eq!(off, Selection::All("--select-requests=false".into()));
        let broken = from_probe(true, Some(Err((503, "unavailable".into()))));
        assert!(matches!(&broken, Selection::All(why) if why.contains("HTTP 503")));
    }
}
