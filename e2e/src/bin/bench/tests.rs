//! The command line, as e2e/bench.sh, the Makefile and BENCHMARKS.md use it.

use super::*;
use clap::CommandFactory;

#[test]
fn options_are_consistent() {
    Opts::command().debug_assert();
}

/// What e2e/bench.sh and BENCHMARKS.md pass, in both spellings the old parser took.
#[test]
fn takes_the_documented_arguments() {
    let o = Opts::try_parse_from(
        "bench --requests 50 --pods 50 --steady-crs 200 --steady-secrets 200 --ceiling-secs 5 --concurrency=4 --create-concurrency 32 --admission-concurrency=2 --approver cm-lite --only ceiling,issuance"
            .split(' '),
    )
    .unwrap();
    assert_eq!(
        (
            o.requests,
            o.pods,
            o.steady_crs,
            o.steady_secrets,
            o.ceiling_secs
        ),
        (50, 50, 200, 200, 5)
    );
    assert_eq!(
        (o.concurrency, o.create_concurrency, o.admission_concurrency),
        (4, 32, 2)
    );
    assert!(!o.approve_by_bench());
    assert!(o.wants(Phase::Ceiling) && o.wants(Phase::Issuance));
    assert!(!o.wants(Phase::Steady) && !o.wants(Phase::Admission));

    let d = Opts::try_parse_from(["bench"]).unwrap();
    assert_eq!(
        (
            d.requests,
            d.pods,
            d.steady_crs,
            d.steady_secrets,
            d.ceiling_secs
        ),
        (1000, 1000, 5000, 5000, 20)
    );
    assert_eq!(
        (d.concurrency, d.create_concurrency, d.admission_concurrency),
        (16, 64, 8)
    );
    assert!(d.approve_by_bench());
    assert!(d.wants(Phase::Admission));
    assert!(Opts::try_parse_from(["bench", "--approver", "nobody"]).is_err());
}
