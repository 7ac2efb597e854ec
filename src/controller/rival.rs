//! Another controller writing what only we should write: step-issuer left running after a
//! migration, or any other controller of the group certmanager.step.sm. It would act on the same
//! issuers and requests; we notice it from `metadata.managedFields` (which field manager wrote
//! what, and when) and say so in an Event instead of fighting over the status.
//!
//! A second step-operator installation writes under our own field manager, so it is not seen
//! here: one installation serves a cluster (or one set of namespaces, `--namespaces`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use k8s_openapi::jiff::Timestamp;

/// How long an issuer's status is left to the other writer after it wrote: at most one write of
/// ours per this period while two controllers run, instead of a write for every write of theirs.
pub const YIELD_FOR: Duration = Duration::from_secs(60);

/// When this process started: status writes by other managers before it are a predecessor's.
pub fn process_start() -> Timestamp {
    static START: std::sync::OnceLock<Timestamp> = std::sync::OnceLock::new();
    *START.get_or_init(Timestamp::now)
}

/// What to do with a status write of ours that another controller's write preceded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Write,
    /// Leave the status to the other writer for `left`; `tell` the first time.
    Yield {
        tell: bool,
        left: Duration,
    },
}

/// Per object (by key), until when its status is left to another writer.
#[derive(Debug, Default)]
pub struct Yielding(Mutex<HashMap<String, Instant>>);

impl Yielding {
    /// Whether to write now: a rival's newer write starts a [`YIELD_FOR`] period without our
    /// writes; once it is over we write again, once, whatever the rival did meanwhile.
    pub fn turn(&self, key: &str, rival_newer: bool, now: Instant) -> Turn {
        let mut until = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (until.get(key).copied(), rival_newer) {
            (Some(end), _) if now < end => Turn::Yield {
                tell: false,
                left: end - now,
            },
            (Some(_), _) => {
                until.remove(key);
                Turn::Write
            }
            (None, true) => {
                until.insert(key.to_string(), now + YIELD_FOR);
                Turn::Yield {
                    tell: true,
                    left: YIELD_FOR,
                }
            }
            (None, false) => Turn::Write,
        }
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// A field manager other than ours, and when it last wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rival {
    pub manager: String,
    pub time: Option<Timestamp>,
}

fn writes_status(entry: &ManagedFieldsEntry) -> bool {
    entry.subresource.as_deref() == Some("status")
        || entry
            .fields_v1
            .as_ref()
            .is_some_and(|f| f.0.get("f:status").is_some())
}

fn time_of(entry: &ManagedFieldsEntry) -> Option<Timestamp> {
    entry.time.as_ref().map(|t| t.0)
}

/// The newest status writer other than `ours` that wrote after our own last status write and
/// after `since` (this process's start): a manager that wrote before we ran is a predecessor
/// whose conditions we replace, not a rival.
pub fn rival_status_writer(
    fields: &[ManagedFieldsEntry],
    ours: &str,
    since: Timestamp,
) -> Option<Rival> {
    let our_last = fields
        .iter()
        .filter(|e| e.manager.as_deref() == Some(ours) && writes_status(e))
        .filter_map(time_of)
        .max();
    fields
        .iter()
        .filter(|e| e.manager.as_deref().is_some_and(|m| m != ours) && writes_status(e))
        .filter_map(|e| Some((time_of(e)?, e)))
        .filter(|(t, _)| *t >= since && our_last.is_none_or(|o| *t > o))
        .max_by_key(|(t, _)| *t)
        .map(|(t, e)| Rival {
            manager: e.manager.clone().unwrap_or_default(),
            time: Some(t),
        })
}

/// The field manager, other than `ours`, that wrote a CertificateRequest's
/// `status.certificate`: the request was signed by another controller.
pub fn certificate_writer(fields: &[ManagedFieldsEntry], ours: &str) -> Option<String> {
    fields
        .iter()
        .filter(|e| e.manager.as_deref().is_some_and(|m| m != ours))
        .find(|e| {
            e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:status"].get("f:certificate").is_some())
        })
        .and_then(|e| e.manager.clone())
}

/// The Warning for an issuer whose status another controller writes.
pub fn issuer_message(rival: &Rival, kind: &str) -> String {
    format!(
        "Another controller, field manager {:?}, writes this {kind}'s status too: it also signs \
         the requests of group certmanager.step.sm, and both would act on them. Run one: stop \
         the other (step-issuer after a migration). step-operator leaves the status to it for {}s after each of its writes.",
        rival.manager,
        YIELD_FOR.as_secs()
    )
}

/// The Warning for a request that another controller signed while we held it.
pub fn request_message(manager: &str) -> String {
    format!(
        "This request was signed by another controller, field manager {manager:?}, not by \
         step-operator (nothing of ours was written to it). Two controllers serve the group \
         certmanager.step.sm: stop the other one (step-issuer after a migration)."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, Time};
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn entry(
        manager: &str,
        subresource: Option<&str>,
        time: &str,
        fields: serde_json::Value,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            subresource: subresource.map(Into::into),
            time: Some(Time(at(time))),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn status_entry(manager: &str, time: &str) -> ManagedFieldsEntry {
        entry(
            manager,
            Some("status"),
            time,
            json!({"f:status": {"f:conditions": {}}}),
        )
    }

    #[test]
    fn another_status_writer_is_a_rival_only_after_our_start_and_our_last_write() {
        let start = at("2026-11-30T10:00:00Z");
        let rival =
            |fields: &[ManagedFieldsEntry]| rival_status_writer(fields, "step-operator", start);
        // A predecessor: it wrote before this process started.
        assert_eq!(
            rival(&[status_entry("step-issuer", "2026-11-30T09:00:00Z")]),
            None
        );
        // It wrote after we started, and we have not written since.
        assert_eq!(
            rival(&[status_entry("step-issuer", "2026-11-30T10:00:05Z")]),
            Some(Rival {
                manager: "step-issuer".into(),
                time: Some(at("2026-11-30T10:00:05Z"))
            })
        );
        assert!(
            rival(&[
                status_entry("step-operator", "2026-11-30T10:00:01Z"),
                status_entry("step-issuer", "2026-11-30T10:00:05Z"),
            ])
            .is_some()
        );
        // Our write is the newest (or of the same second): nothing to yield to.
        assert_eq!(
            rival(&[
                status_entry("step-operator", "2026-11-30T10:00:05Z"),
                status_entry("step-issuer", "2026-11-30T10:00:05Z"),
            ]),
            None
        );
        // Writers of the spec or metadata (kubectl, helm) are not status writers.
        let spec = entry(
            "kubectl",
            None,
            "2026-11-30T10:00:09Z",
            json!({"f:spec": {"f:url": {}}}),
        );
        assert_eq!(rival(&[spec]), None);
        // A status written without the subresource (an old CRD without it) still counts.
        let whole = entry(
            "other",
            None,
            "2026-11-30T10:00:09Z",
            json!({"f:status": {}}),
        );
        assert_eq!(rival(&[whole]).map(|r| r.manager).as_deref(), Some("other"));
    }

    #[test]
    fn a_certificate_written_by_another_manager_names_it() {
        let signed = |m: &str| {
            entry(
                m,
                Some("status"),
                "2026-11-30T10:00:00Z",
                json!({"f:status": {"f:certificate": {}, "f:conditions": {}}}),
            )
        };
        let approved = entry(
            "cert-manager-certificaterequests-approver",
            Some("status"),
            "2026-11-30T10:00:00Z",
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Approved\"}": {}}}}),
        );
        assert_eq!(
            certificate_writer(&[approved.clone(), signed("step-issuer")], "step-operator")
                .as_deref(),
            Some("step-issuer")
        );
        assert_eq!(
            certificate_writer(
                &[approved.clone(), signed("step-operator")],
                "step-operator"
            ),
            None
        );
        assert_eq!(certificate_writer(&[approved], "step-operator"), None);
    }

    #[test]
    fn a_rival_write_is_yielded_to_once_per_period() {
        let y = Yielding::default();
        let t0 = Instant::now();
        assert_eq!(y.turn("a", false, t0), Turn::Write);
        assert_eq!(
            y.turn("a", true, t0),
            Turn::Yield {
                tell: true,
                left: YIELD_FOR
            }
        );
        // Within the period: no write, no second Event, whoever wrote since.
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            y.turn("a", true, later),
            Turn::Yield {
                tell: false,
                left: YIELD_FOR - Duration::from_secs(20)
            }
        );
        assert_eq!(
            y.turn("a", false, later),
            Turn::Yield {
                tell: false,
                left: YIELD_FOR - Duration::from_secs(20)
            }
        );
        // Another object is not affected.
        assert_eq!(y.turn("b", false, later), Turn::Write);
        // After it: ours again, once; a newer rival write then starts a new period.
        let after = t0 + YIELD_FOR;
        assert_eq!(y.turn("a", true, after), Turn::Write);
        assert_eq!(
            y.turn("a", true, after),
            Turn::Yield {
                tell: true,
                left: YIELD_FOR
            }
        );
        y.forget("a");
        assert_eq!(y.turn("a", false, after), Turn::Write);
    }

    #[test]
    fn the_messages_name_the_other_manager_and_the_fix() {
        let r = Rival {
            manager: "step-issuer".into(),
            time: None,
        };
        let m = issuer_message(&r, "StepClusterIssuer");
        assert!(
            m.contains("\"step-issuer\"") && m.contains("stop") && m.contains("60s"),
            "{m}"
        );
        let m = request_message("step-issuer");
        assert!(
            m.contains("\"step-issuer\"") && m.contains("stop the other"),
            "{m}"
        );
    }
}
