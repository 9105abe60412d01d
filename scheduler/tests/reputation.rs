//! The reputation rule's properties (see `reputation.rs`).

use proptest::prelude::*;
use veil_scheduler::reputation::MIN_REPUTATION_VALUE;
use veil_scheduler::{JobOutcome, Reputation, ReputationRule};

fn outcome() -> impl Strategy<Value = JobOutcome> {
    prop_oneof![
        Just(JobOutcome::Success),
        Just(JobOutcome::Timeout),
        Just(JobOutcome::Failure),
        (1u8..=16).prop_map(|suspects| JobOutcome::VerificationFailed { suspects }),
    ]
}

proptest! {
    #[test]
    fn bounded_under_any_history(history in prop::collection::vec((outcome(), 0u64..10_000_000_000), 0..300)) {
        let rule = ReputationRule::default();
        let mut r = rule.initial(0);
        let mut now = 0;
        for (o, dt) in history {
            now += dt;
            r = rule.apply(r, o, now);
            prop_assert!(r.value >= MIN_REPUTATION_VALUE && r.value <= 1.0 && r.value.is_finite(), "{}", r.value);
        }
    }

    #[test]
    fn monotone_in_outcome_and_order_preserving(a in MIN_REPUTATION_VALUE..=1.0f64, b in MIN_REPUTATION_VALUE..=1.0f64) {
        let rule = ReputationRule::default();
        let up = rule.update_value(a, JobOutcome::Success);
        let t = rule.update_value(a, JobOutcome::Timeout);
        let f = rule.update_value(a, JobOutcome::Failure);
        let v = rule.update_value(a, JobOutcome::VerificationFailed { suspects: 1 });
        prop_assert!(up >= a && a >= t && t >= f && f >= v);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        for o in [JobOutcome::Success, JobOutcome::Timeout, JobOutcome::Failure, JobOutcome::VerificationFailed { suspects: 3 }] {
            prop_assert!(rule.update_value(lo, o) <= rule.update_value(hi, o));
        }
    }

    #[test]
    fn a_failure_costs_more_than_a_success_gains(r in 0.2f64..=1.0, suspects in 1u8..=16) {
        let rule = ReputationRule::default();
        let gain = rule.update_value(r, JobOutcome::Success) - r;
        for o in [JobOutcome::Timeout, JobOutcome::Failure, JobOutcome::VerificationFailed { suspects }] {
            let cost = r - rule.update_value(r, o);
            prop_assert!(cost > gain, "{o:?} at {r}: cost {cost} <= gain {gain}");
        }
    }

    #[test]
    fn decay_moves_toward_the_prior_without_overshoot(r in MIN_REPUTATION_VALUE..=1.0f64, t1 in 0u64..10_000_000_000, t2 in 0u64..10_000_000_000) {
        let rule = ReputationRule::default();
        let rep = Reputation { value: r, updated_at: 0 };
        let (early, late) = (t1.min(t2), t1.max(t2));
        let d1 = rule.decayed(rep, early);
        let d2 = rule.decayed(rep, late);
        let p = rule.prior;
        // Never past the prior, and closer to it as time passes.
        prop_assert!((d1 - p).abs() <= (r - p).abs() + 1e-12);
        prop_assert!((d2 - p).abs() <= (d1 - p).abs() + 1e-12);
        prop_assert!((d1 - p) * (r - p) >= 0.0);
    }
}

#[test]
fn verification_failure_is_the_worst_and_recovery_is_slow() {
    let rule = ReputationRule::default();
    let r = 0.9;
    assert!(
        rule.update_value(r, JobOutcome::VerificationFailed { suspects: 1 })
            < rule.update_value(r, JobOutcome::Failure)
    );
    assert!(rule.update_value(r, JobOutcome::Failure) < rule.update_value(r, JobOutcome::Timeout));
    // Blame shared by 3 suspects hurts each less than sole blame, still more than a crash.
    let shared = rule.update_value(r, JobOutcome::VerificationFailed { suspects: 3 });
    assert!(shared > rule.update_value(r, JobOutcome::VerificationFailed { suspects: 1 }));
    assert!(shared < rule.update_value(r, JobOutcome::Failure));
    // One crash from 0.9 takes more than 10 successes to repair.
    let mut x = rule.update_value(r, JobOutcome::Failure);
    for _ in 0..10 {
        x = rule.update_value(x, JobOutcome::Success);
    }
    assert!(x < r);
    // One sole verification failure from the prior drops a node below the default selection threshold (0.2).
    assert!(rule.update_value(rule.prior, JobOutcome::VerificationFailed { suspects: 1 }) < 0.2);
    // Half a half-life later a node at 0.2 has recovered part of the way to the prior, not all of it.
    let rep = Reputation {
        value: 0.2,
        updated_at: 0,
    };
    let later = rule.decayed(rep, rule.half_life_ms);
    assert!((later - 0.5).abs() < 1e-9, "{later}");
}
