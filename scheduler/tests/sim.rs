//! The simulation end to end on a small world: the checker finds nothing, results are deterministic.

use veil_scheduler::sim::{run, SimConfig};
use veil_scheduler::DomainKey;

#[test]
fn small_world_has_no_violations_and_is_deterministic() {
    let cfg = SimConfig {
        nodes: 400,
        jobs: 3_000,
        seed: 3,
        ..SimConfig::default()
    };
    let a = run(&cfg).unwrap();
    assert_eq!(a.collusion_violations, 0);
    assert_eq!(a.memory_violations, 0);
    assert_eq!(a.ineligible_selections, 0);
    assert_eq!(a.unplaced, 0);
    assert_eq!(a.done_jobs + a.failed_jobs, 3_000);
    assert!(a.committees_checked >= 3_000);
    assert!(
        a.max_over_mean_utilisation >= 1.0 && a.max_over_mean_utilisation < 2.0,
        "{}",
        a.max_over_mean_utilisation
    );
    assert!(
        a.mean_party_rtt_ms < a.random_party_rtt_ms / 2.0,
        "{} vs {}",
        a.mean_party_rtt_ms,
        a.random_party_rtt_ms
    );
    let b = run(&cfg).unwrap();
    assert_eq!(
        (
            a.decisions,
            a.retries,
            a.done_jobs,
            a.max_over_mean_utilisation.to_bits()
        ),
        (
            b.decisions,
            b.retries,
            b.done_jobs,
            b.max_over_mean_utilisation.to_bits()
        )
    );
}

#[test]
fn several_collusion_keys() {
    let cfg = SimConfig {
        nodes: 300,
        jobs: 1_000,
        seed: 5,
        collusion_keys: vec![DomainKey::Operator, DomainKey::Region, DomainKey::Asn],
        ..SimConfig::default()
    };
    let r = run(&cfg).unwrap();
    assert_eq!(r.collusion_violations, 0);
    assert_eq!(r.memory_violations, 0);
    assert_eq!(r.ineligible_selections, 0);
    assert_eq!(r.unplaced, 0, "{:?}", r.unplaced_reasons);
}

#[test]
fn a_world_too_small_reports_reasons() {
    // 4 nodes cannot host committees of 5.
    let cfg = SimConfig {
        nodes: 4,
        jobs: 20,
        seed: 1,
        ..SimConfig::default()
    };
    let r = run(&cfg).unwrap();
    assert_eq!(r.unplaced, 20);
    assert_eq!(
        r.unplaced_reasons.get("not_enough_eligible_nodes"),
        Some(&20)
    );
}
