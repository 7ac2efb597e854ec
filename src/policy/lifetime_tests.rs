use super::*;

const H: u64 = 3600;

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * H)
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn wish() -> Wish {
    Wish {
        requested: None,
        max_duration: None,
        limits: Limits::default(),
        intermediate_not_after: None,
        now: now(),
    }
}

fn limits(min: u64, max: u64, default: u64) -> Limits {
    Limits {
        min: Some(Duration::from_secs(min)),
        max: Some(Duration::from_secs(max)),
        default: Some(Duration::from_secs(default)),
    }
}

#[test]
fn what_is_asked_of_step_ca() {
    let later = |h: i64| now() + chrono::Duration::hours(h);
    // (case, wish, expected notAfter, capped?)
    let cases: Vec<(&str, Wish, NotAfter, bool)> = vec![
        (
            "nothing set: the CA decides",
            wish(),
            NotAfter::CaDefault,
            false,
        ),
        (
            "a duration within every limit is asked as is",
            Wish {
                requested: Some(hours(48)),
                limits: limits(60, 100 * H, 24 * H),
                ..wish()
            },
            NotAfter::For(hours(48)),
            false,
        ),
        (
            "maxDuration caps a longer request",
            Wish {
                requested: Some(hours(2160)),
                max_duration: Some(hours(720)),
                ..wish()
            },
            NotAfter::For(hours(720)),
            true,
        ),
        (
            "maxDuration leaves a shorter request alone",
            Wish {
                requested: Some(hours(24)),
                max_duration: Some(hours(720)),
                ..wish()
            },
            NotAfter::For(hours(24)),
            false,
        ),
        (
            "no request, unknown CA default: the cap is asked for, so it holds",
            Wish {
                max_duration: Some(hours(12)),
                ..wish()
            },
            NotAfter::For(hours(12)),
            true,
        ),
        (
            "no request, a known default within the cap: the CA decides",
            Wish {
                max_duration: Some(hours(48)),
                limits: limits(60, 100 * H, 24 * H),
                ..wish()
            },
            NotAfter::CaDefault,
            false,
        ),
        (
            "the intermediate expires before the requested end: ask until it expires",
            Wish {
                requested: Some(hours(2160)),
                intermediate_not_after: Some(later(100)),
                ..wish()
            },
            NotAfter::Until(later(100)),
            true,
        ),
        (
            "the intermediate outlives the request: untouched",
            Wish {
                requested: Some(hours(24)),
                intermediate_not_after: Some(later(100)),
                ..wish()
            },
            NotAfter::For(hours(24)),
            false,
        ),
        (
            "nothing asked but the intermediate ends before step-ca's 24h default",
            Wish {
                intermediate_not_after: Some(later(5)),
                ..wish()
            },
            NotAfter::Until(later(5)),
            true,
        ),
    ];
    for (case, w, want, capped) in cases {
        let got = decide(&w).unwrap_or_else(|e| panic!("{case}: refused: {e}"));
        assert_eq!(got.not_after, want, "{case}");
        assert_eq!(got.capped.is_some(), capped, "{case}: {:?}", got.capped);
    }
}

#[test]
fn refusals_name_the_numbers_and_the_fix() {
    let later = |h: i64| now() + chrono::Duration::hours(h);
    // (case, wish, words the message must hold)
    let cases: Vec<(&str, Wish, &[&str])> = vec![
        (
            "longer than the provisioner's max",
            Wish {
                requested: Some(hours(100)),
                limits: limits(60, 48 * H, 24 * H),
                ..wish()
            },
            &["100h", "maxTLSCertDuration 48h", "spec.maxDuration"],
        ),
        (
            "shorter than the provisioner's min",
            Wish {
                requested: Some(Duration::from_secs(30)),
                limits: limits(300, 48 * H, 24 * H),
                ..wish()
            },
            &["30s", "minTLSCertDuration 5m"],
        ),
        (
            "the intermediate has expired",
            Wish {
                requested: Some(hours(1)),
                intermediate_not_after: Some(later(-1)),
                ..wish()
            },
            &["expired at 2026-11-29T11:00:00Z", "renew"],
        ),
        (
            "the intermediate expires before the provisioner's minimum",
            Wish {
                requested: Some(hours(24)),
                limits: limits(2 * H, 48 * H, 24 * H),
                intermediate_not_after: Some(now() + chrono::Duration::minutes(30)),
                ..wish()
            },
            &[
                "minTLSCertDuration 2h",
                "intermediate certificate expires sooner",
            ],
        ),
    ];
    for (case, w, words) in cases {
        let e = decide(&w).expect_err(case);
        for word in words {
            assert!(e.contains(word), "{case}: {e:?} lacks {word:?}");
        }
    }
}

#[test]
fn the_cap_applies_before_the_provisioner_limit() {
    // Capped to 48h by maxDuration, the request fits a 72h maximum it would otherwise exceed.
    let w = Wish {
        requested: Some(hours(2160)),
        max_duration: Some(hours(48)),
        limits: limits(60, 72 * H, 24 * H),
        ..wish()
    };
    let got = decide(&w).unwrap();
    assert_eq!(got.not_after, NotAfter::For(hours(48)));
    let note = got.capped.unwrap();
    assert!(note.contains("2160h") && note.contains("48h"), "{note}");
}

#[test]
fn step_ca_gets_go_durations_and_rfc3339_times() {
    assert_eq!(NotAfter::CaDefault.for_step_ca(), None);
    assert_eq!(
        NotAfter::For(hours(2)).for_step_ca().as_deref(),
        Some("7200s")
    );
    assert_eq!(
        NotAfter::Until(now()).for_step_ca().as_deref(),
        Some("2026-11-29T12:00:00Z")
    );
}
