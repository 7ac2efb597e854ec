//! What a measurement cost the API: kube-apiserver's own request counter
//! (`apiserver_request_total`, from `GET /metrics` with the admin credentials), by resource and
//! verb, as the difference of two scrapes.
//!
//! The counter has no user-agent label, so the difference holds every client: the system under
//! test, the bench client, cm-lite and the control plane's own background (lease renewals).
//! The bench counts its own calls exactly ([`ApiCounts::add`]) and the report shows the totals and
//! the totals less the bench's own.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use kube::Client;
use kube::api::GetParams;

use crate::util::round;

const METRIC: &str = "apiserver_request_total";

/// The verbs that change something.
pub const WRITES: [&str; 4] = ["create", "update", "patch", "delete"];

/// Request counts by `resource[/subresource]`, then by verb (`create`, `update`, `patch`,
/// `delete`, `get`, `list`, `watch`, ...).
pub type ByResource = BTreeMap<String, BTreeMap<String, f64>>;

/// Requests counted by kube-apiserver, or by the bench for its own calls.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ApiCounts(pub ByResource);

impl ApiCounts {
    /// The apiserver's counter now.
    pub async fn scrape(client: &Client) -> Result<ApiCounts> {
        let req = kube::core::Request::new("").get("metrics", &GetParams::default())?;
        let body = client
            .request_text(req)
            .await
            .context("GET /metrics on kube-apiserver")?;
        ApiCounts::parse(&body)
    }

    /// Sums `apiserver_request_total` over every label but `resource`, `subresource` and `verb`
    /// (codes, scopes, groups, versions, dry runs). Requests to non-resource URLs (`/metrics`,
    /// `/healthz`, ...) are left out.
    pub fn parse(body: &str) -> Result<ApiCounts> {
        let mut counts = ApiCounts::default();
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(METRIC).and_then(|r| r.strip_prefix('{')) else {
                continue;
            };
            let (labels, value) = rest
                .rsplit_once("} ")
                .with_context(|| format!("unexpected {METRIC} line: {line}"))?;
            let labels = parse_labels(labels).with_context(|| format!("in line {line}"))?;
            let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
            if label("resource").is_empty() {
                continue;
            }
            let resource = match label("subresource") {
                "" => label("resource").to_string(),
                sub => format!("{}/{sub}", label("resource")),
            };
            let value: f64 = value
                .trim()
                .parse()
                .with_context(|| format!("bad value in line {line}"))?;
            counts.add(&resource, verb(label("verb")), value);
        }
        Ok(counts)
    }

    pub fn add(&mut self, resource: &str, verb: &str, n: f64) {
        *self
            .0
            .entry(resource.to_string())
            .or_default()
            .entry(verb.to_string())
            .or_default() += n;
    }

    /// What was counted after `before` (counters only grow; an apiserver restart would show as
    /// negative and is clamped to 0).
    pub fn since(&self, before: &ApiCounts) -> ApiCounts {
        let mut out = ApiCounts::default();
        for (resource, verbs) in &self.0 {
            for (verb, n) in verbs {
                let b = before
                    .0
                    .get(resource)
                    .and_then(|v| v.get(verb))
                    .copied()
                    .unwrap_or(0.0);
                if n - b > 0.0 {
                    out.add(resource, verb, n - b);
                }
            }
        }
        out
    }

    /// Create, update, patch and delete requests, over every resource.
    pub fn writes(&self) -> f64 {
        self.0
            .values()
            .flat_map(|verbs| verbs.iter())
            .filter(|(verb, _)| WRITES.contains(&verb.as_str()))
            .map(|(_, n)| n)
            // Not `sum()`: an empty f64 sum is -0.0, which JSON would show as such.
            .fold(0.0, |a, b| a + b)
    }

    /// Every count divided by `n`, to 3 places.
    pub fn per(&self, n: usize) -> ByResource {
        let n = n.max(1) as f64;
        self.0
            .iter()
            .map(|(resource, verbs)| {
                let verbs = verbs
                    .iter()
                    .map(|(verb, c)| (verb.clone(), round(c / n, 3)))
                    .collect();
                (resource.clone(), verbs)
            })
            .collect()
    }
}

/// The request verb as kubectl and RBAC name it. The metric's verb is the HTTP one, except
/// `APPLY` (server-side apply, counted as a patch here), `LIST` and `WATCH`.
fn verb(metric_verb: &str) -> &str {
    match metric_verb {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" | "APPLY" => "patch",
        "DELETE" | "DELETECOLLECTION" => "delete",
        "GET" => "get",
        "LIST" => "list",
        "WATCH" | "WATCHLIST" => "watch",
        "CONNECT" => "connect",
        _ => "other",
    }
}

/// `a="x",b="y"` (Prometheus text format; `\"`, `\\` and `\n` escaped in values).
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            bail!("label {key} has no quoted value");
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => bail!("label {key}: unfinished escape"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => bail!("label {key}: unterminated value"),
            }
        }
        out.insert(key.trim().to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="cert-manager.io",resource="certificaterequests",scope="resource",subresource="",verb="POST",version="v1"} 100
apiserver_request_total{code="409",component="apiserver",dry_run="",group="cert-manager.io",resource="certificaterequests",scope="resource",subresource="",verb="POST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="cert-manager.io",resource="certificaterequests",scope="resource",subresource="status",verb="APPLY",version="v1"} 200
apiserver_request_total{code="200",component="apiserver",dry_run="",group="cert-manager.io",resource="certificaterequests",scope="resource",subresource="status",verb="PATCH",version="v1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="events",scope="namespace",subresource="",verb="POST",version="v1"} 50
apiserver_request_total{code="201",component="apiserver",dry_run="",group="events.k8s.io",resource="events",scope="namespace",subresource="",verb="POST",version="v1"} 50
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="namespace",subresource="",verb="WATCH",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 3
apiserver_request_duration_seconds_count{component="apiserver",resource="secrets",verb="GET"} 9
"#;

    #[test]
    fn sums_over_codes_groups_and_scopes_by_resource_and_verb() {
        let c = ApiCounts::parse(SCRAPE).unwrap();
        let get = |r: &str, v: &str| c.0.get(r).and_then(|m| m.get(v)).copied();
        assert_eq!(get("certificaterequests", "create"), Some(102.0));
        // Server-side apply and merge patches are both patches.
        assert_eq!(get("certificaterequests/status", "patch"), Some(205.0));
        assert_eq!(get("events", "create"), Some(100.0));
        assert_eq!(get("leases", "update"), Some(7.0));
        assert_eq!(get("secrets", "watch"), Some(1.0));
        // Non-resource URLs and other metrics are not counted.
        assert_eq!(c.0.len(), 5, "{c:?}");
        assert_eq!(c.writes(), 102.0 + 205.0 + 100.0 + 7.0);
    }

    #[test]
    fn a_difference_divided_per_issuance() {
        let before = ApiCounts::parse(SCRAPE).unwrap();
        let mut after = before.clone();
        after.add("certificaterequests", "create", 10.0);
        after.add("certificaterequests/status", "patch", 20.0);
        after.add("events", "create", 10.0);
        after.add("certificaterequests", "get", 10.0);
        let d = after.since(&before);
        assert_eq!(d.writes(), 40.0);
        let per = d.per(10);
        assert_eq!(per["certificaterequests"]["create"], 1.0);
        assert_eq!(per["certificaterequests"]["get"], 1.0);
        assert_eq!(per["certificaterequests/status"]["patch"], 2.0);
        assert!(!per.contains_key("leases"), "{per:?}");
        let mut bench = ApiCounts::default();
        bench.add("certificaterequests", "create", 10.0);
        assert_eq!(d.writes() - bench.writes(), 30.0);
    }

    #[test]
    fn labels_with_escapes_and_commas() {
        let l = parse_labels(r#"a="x,y",b="say \"hi\"",c="""#).unwrap();
        assert_eq!(l["a"], "x,y");
        assert_eq!(l["b"], "say \"hi\"");
        assert_eq!(l["c"], "");
        assert!(parse_labels(r#"a="x"#).is_err());
    }
}
