use super::*;
use crate::cert_manager::{CONDITION_APPROVED, CONDITION_DENIED};
use crate::crd::condition::Readiness;

fn cond(type_: &str, status: &str, why: &str, message: Option<&str>) -> RequestCondition {
    RequestCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(why.into()),
        message: message.map(Into::into),
        last_transition_time: None,
    }
}

fn status(conds: &[RequestCondition]) -> CertificateRequestStatus {
    CertificateRequestStatus {
        conditions: conds.to_vec(),
        ..Default::default()
    }
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_000_000 + s).unwrap()
}

fn approved() -> RequestCondition {
    cond(CONDITION_APPROVED, "True", "cert-manager.io", None)
}

fn signed() -> Signed {
    Signed {
        certificate: "leaf".into(),
        notes: Vec::new(),
        ca: "root".into(),
        message: "Certificate issued".into(),
    }
}

fn note(warning: bool, reason: &'static str, message: &str, action: &'static str) -> Option<Note> {
    Some(Note {
        warning,
        reason,
        message: message.into(),
        action,
    })
}

#[test]
fn before_signing_carries_out_the_gates() {
    let key = IssuerKey::Cluster { name: "ca".into() };
    let ready = IssuerState::Known(Readiness::Ready);
    let missing_message = "StepClusterIssuer ca does not exist. Waiting for it to be created.";
    let issued = cond(CONDITION_READY, "True", reason::ISSUED, None);
    let denied = cond(CONDITION_DENIED, "True", "policy", None);
    let waiting = cond(
        CONDITION_READY,
        "False",
        reason::PENDING,
        Some(missing_message),
    );
    let wait = |next| Step::Do(Box::new(Plan::wait(next)));
    // (status, issuer, told approval, age in s, want)
    let cases: Vec<(Vec<RequestCondition>, IssuerState, bool, i64, Step)> = vec![
        (vec![approved()], ready.clone(), false, 0, Step::Sign),
        (
            vec![approved(), issued],
            ready.clone(),
            false,
            0,
            Step::Do(Box::new(Plan {
                remember: Remember::Release,
                ..Plan::wait(Next::AwaitChange)
            })),
        ),
        (
            vec![denied],
            ready.clone(),
            false,
            0,
            Step::Do(Box::new(Plan {
                status: Some(StatusChange::Denied(DENIED_MESSAGE.into())),
                event: note(true, event::DENIED, DENIED_MESSAGE, "Deny"),
                count: Some(reason::DENIED),
                remember: Remember::Finish,
                next: Next::AwaitChange,
                issuer_auth_failure: None,
            })),
        ),
        // Approvers usually act within milliseconds: no Event during the grace period.
        (
            vec![],
            ready.clone(),
            false,
            1,
            wait(Next::Requeue(Duration::from_secs(4))),
        ),
        (
            vec![],
            ready.clone(),
            false,
            60,
            Step::Do(Box::new(Plan {
                event: note(
                    false,
                    event::WAITING_FOR_APPROVAL,
                    AWAITING_APPROVAL_MESSAGE,
                    "Wait",
                ),
                remember: Remember::ToldApproval,
                ..Plan::wait(Next::AwaitChange)
            })),
        ),
        (vec![], ready.clone(), true, 60, wait(Next::AwaitChange)),
        (
            vec![approved()],
            IssuerState::Missing,
            false,
            0,
            Step::Do(Box::new(Plan {
                status: Some(StatusChange::Pending(missing_message.into())),
                event: note(false, "WaitingForIssuerExist", missing_message, "Wait"),
                ..Plan::wait(Next::AwaitChange)
            })),
        ),
        // Our own Pending write re-triggers the request: it is not written again.
        (
            vec![approved(), waiting],
            IssuerState::Missing,
            false,
            0,
            wait(Next::AwaitChange),
        ),
    ];
    for (conds, issuer, told_approval, age, want) in cases {
        let s = status(&conds);
        let seen = Seen {
            status: Some(&s),
            key: &key,
            issuer: &issuer,
            told_approval,
            created: Some(at(0)),
            now: at(age),
        };
        assert_eq!(before_signing(&seen), want, "{conds:?} {issuer:?}");
    }
}

#[test]
fn after_signing_classifies_once() {
    let budget = RetryBudget {
        max: Duration::from_secs(300),
        acting_since: at(-3600),
    };
    let fresh = status(&[approved()]);
    let attempt = |attempts: u32, age: i64| Attempt {
        status: Some(&fresh),
        attempts,
        created: at(0),
        now: at(age),
        budget,
    };
    let retryable = || {
        Err(SignFailure::Retryable {
            reason: "CAUnreachable",
            message: "connection refused".into(),
        })
    };

    let plan = after_signing(Ok(signed()), &attempt(0, 1));
    assert_eq!(plan.status, Some(StatusChange::Issued(signed())));
    assert_eq!(
        plan.event,
        note(false, event::ISSUED, "Certificate issued", "Sign")
    );
    assert_eq!(
        (plan.count, plan.remember),
        (Some(reason::ISSUED), Remember::Finish)
    );

    // Issued not exactly as asked: the same status, counted as Issued, told in a Warning.
    let changed = Signed {
        notes: vec![
            "the requested duration 2160h is capped".into(),
            "organization \"Acme\" dropped".into(),
        ],
        ..signed()
    };
    let plan = after_signing(Ok(changed.clone()), &attempt(0, 1));
    assert_eq!(plan.status, Some(StatusChange::Issued(changed)));
    assert_eq!(
        plan.event,
        note(
            true,
            event::ISSUED_WITH_CHANGES,
            "Certificate issued; but the requested duration 2160h is capped; organization \"Acme\" dropped",
            "Sign"
        )
    );
    assert_eq!(
        (plan.count, plan.remember),
        (Some(reason::ISSUED), Remember::Finish)
    );

    let plan = after_signing(Err(SignFailure::Invalid("bad CSR".into())), &attempt(0, 1));
    assert_eq!(plan.status, Some(StatusChange::Invalid("bad CSR".into())));
    assert_eq!(
        plan.event,
        note(true, event::PERMANENT_ERROR, "bad CSR", "Sign")
    );
    assert_eq!(plan.count, Some(RESULT_INVALID_REQUEST));

    let refused = SignFailure::Permanent {
        reason: "PolicyDenied",
        message: "Refused by the name policy".into(),
    };
    let plan = after_signing(Err(refused), &attempt(0, 1));
    assert_eq!(
        plan.status,
        Some(StatusChange::Failed("Refused by the name policy".into()))
    );
    assert_eq!(
        (plan.count, plan.remember),
        (Some("PolicyDenied"), Remember::Finish)
    );

    // Retryable: Pending, backing off.
    let plan = after_signing(retryable(), &attempt(2, 10));
    let message = "Failed to sign, will retry in 4s: connection refused";
    assert_eq!(plan.status, Some(StatusChange::Pending(message.into())));
    assert_eq!(
        plan.event,
        note(true, event::RETRYABLE_ERROR, message, "Sign")
    );
    assert_eq!(plan.remember, Remember::Failure(Duration::from_secs(4)));
    assert_eq!(plan.next, Next::Requeue(Duration::from_secs(4)));
    assert_eq!(plan.count, Some("CAUnreachable"));

    // The same Pending message is not written twice, but the backoff still counts.
    let same = status(&[
        approved(),
        cond(CONDITION_READY, "False", reason::PENDING, Some(message)),
    ]);
    let again = Attempt {
        status: Some(&same),
        ..attempt(2, 10)
    };
    let plan = after_signing(retryable(), &again);
    assert_eq!((plan.status, plan.event), (None, None));
    assert_eq!(plan.remember, Remember::Failure(Duration::from_secs(4)));

    // The budget is spent: Failed, with the last error.
    let plan = after_signing(retryable(), &attempt(9, 300));
    let Some(StatusChange::Failed(message)) = plan.status else {
        panic!("{plan:?}")
    };
    assert!(message.contains("--max-retry-duration (300s)"), "{message}");
    assert!(
        message.ends_with("last error: connection refused"),
        "{message}"
    );
    assert_eq!(plan.remember, Remember::Finish);

    // step-ca refused the token: the issuer is re-checked and the request retried.
    let plan = after_signing(Err(SignFailure::Auth("HTTP 401".into())), &attempt(0, 1));
    assert_eq!(plan.issuer_auth_failure.as_deref(), Some("HTTP 401"));
    assert_eq!(plan.count, Some(REASON_CA_REJECTED_TOKEN));
    assert!(
        matches!(plan.status, Some(StatusChange::Pending(m)) if m.contains("step-ca refused the signing token: HTTP 401"))
    );
}

#[test]
fn status_for_sends_only_our_conditions() {
    let now = at(100);
    let earlier = Time(at(5));
    let mut pending = cond(CONDITION_READY, "False", reason::PENDING, Some("waiting"));
    pending.last_transition_time = Some(earlier.clone());
    let previous = status(&[approved(), pending]);

    let s = status_for(&StatusChange::Issued(signed()), Some(&previous), now);
    assert_eq!(s.conditions.len(), 1);
    assert_eq!(s.conditions[0].status, "True");
    assert_eq!(s.conditions[0].last_transition_time, Some(Time(now)));
    assert_eq!(
        s.certificate.as_ref().map(|c| c.0.as_slice()),
        Some(&b"leaf"[..])
    );
    assert_eq!(s.ca.as_ref().map(|c| c.0.as_slice()), Some(&b"root"[..]));
    assert_eq!(s.failure_time, None);

    // Still False: the transition time stays.
    let s = status_for(&StatusChange::Failed("no".into()), Some(&previous), now);
    assert_eq!(s.conditions[0].reason.as_deref(), Some(reason::FAILED));
    assert_eq!(s.conditions[0].last_transition_time, Some(earlier));
    assert_eq!(s.failure_time, Some(Time(now)));
    assert_eq!(s.certificate, None);

    let s = status_for(&StatusChange::Invalid("bad CSR".into()), None, now);
    let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [CONDITION_READY, CONDITION_INVALID_REQUEST]);
    assert_eq!(s.conditions[1].message.as_deref(), Some("bad CSR"));

    let s = status_for(&StatusChange::Denied("denied".into()), None, now);
    assert_eq!(s.conditions[0].reason.as_deref(), Some(reason::DENIED));
    assert!(s.failure_time.is_some());

    let s = status_for(&StatusChange::Pending("later".into()), None, now);
    assert_eq!(s.conditions[0].reason.as_deref(), Some(reason::PENDING));
    assert_eq!(s.failure_time, None);

    // Messages are bounded, whatever step-ca said.
    let s = status_for(&StatusChange::Failed("x".repeat(100_000)), None, now);
    assert!(s.conditions[0].message.as_ref().unwrap().len() < 100_000);
}
