//! The registry: registration rules, trials, heartbeats and down detection, RTTs, eligibility.

mod common;

use common::*;
use veil_scheduler::{
    Config, DomainKey, Heartbeat, JobOutcome, NodeId, NodeState, Registry, RegistryError,
    ReportedStatus, SelectRequest,
};

fn registry() -> Registry {
    Registry::new(Config::default()).unwrap()
}

#[test]
fn registration_is_validated() {
    let mut reg = registry();
    let mut bad = registration(1, "op", "eu", None, hardware(4, 8));
    bad.public_key = "not hex".into();
    assert!(matches!(
        reg.register(bad, 0),
        Err(RegistryError::InvalidPublicKey(_))
    ));
    let mut bad = registration(1, "op", "eu", None, hardware(4, 8));
    bad.hardware.cores = 0;
    assert!(matches!(
        reg.register(bad, 0),
        Err(RegistryError::InvalidRegistration(_))
    ));
    assert!(matches!(
        reg.register(registration(1, " ", "eu", None, hardware(4, 8)), 0),
        Err(RegistryError::InvalidRegistration(_))
    ));
    let id = reg
        .register(registration(1, "op", "eu", None, hardware(4, 8)), 0)
        .unwrap();
    // Upper-case key: the same node; new hardware accepted; another operator refused.
    let mut again = registration(1, "op", "us", Some(3), hardware(8, 16));
    again.public_key = again.public_key.to_uppercase();
    assert_eq!(reg.register(again, 5).unwrap(), id);
    assert_eq!(reg.node(id).unwrap().hardware().cores, 8);
    assert_eq!(reg.node(id).unwrap().registration().region, "us");
    assert!(matches!(
        reg.register(registration(1, "other", "us", None, hardware(8, 16)), 5),
        Err(RegistryError::OperatorChanged { .. })
    ));
    assert_eq!(reg.id_of(&key(1).to_uppercase()), Some(id));
    assert!(Registry::new(Config {
        collusion_keys: vec![],
        ..Config::default()
    })
    .is_err());
    assert!(Registry::new(Config {
        collusion_keys: vec![DomainKey::Operator, DomainKey::Operator],
        ..Config::default()
    })
    .is_err());
}

#[test]
fn probation_trial_heartbeats_and_down() {
    let mut reg = registry();
    let id = reg
        .register(registration(1, "op", "eu", None, hardware(4, 8)), 0)
        .unwrap();
    assert_eq!(reg.node(id).unwrap().state(), NodeState::Probation);
    assert_eq!(reg.probation_nodes().collect::<Vec<_>>(), vec![id]);
    assert_eq!(reg.eligible_count(), 0);
    reg.record_trial(id, true, Some(5_000_000_000), 0).unwrap();
    assert_eq!(reg.node(id).unwrap().state(), NodeState::Active);
    assert_eq!(
        reg.node(id).unwrap().hardware().measured_ops_per_s,
        Some(5_000_000_000)
    );
    assert_eq!(reg.eligible_count(), 1);
    // Heartbeats keep it up; silence past the timeout marks it down; a heartbeat brings it back.
    reg.heartbeat(id, ready(), 20_000).unwrap();
    assert!(reg.sweep(45_000).is_empty());
    assert_eq!(reg.sweep(50_001), vec![id]);
    assert_eq!(reg.node(id).unwrap().state(), NodeState::Down);
    assert_eq!(reg.eligible_count(), 0);
    assert!(reg.sweep(60_000).is_empty(), "reported once");
    reg.heartbeat(id, ready(), 61_000).unwrap();
    assert_eq!(reg.node(id).unwrap().state(), NodeState::Active);
    // Draining leaves the index, Ready re-enters it.
    reg.heartbeat(
        id,
        Heartbeat {
            status: ReportedStatus::Draining,
            ..ready()
        },
        62_000,
    )
    .unwrap();
    assert_eq!(reg.node(id).unwrap().state(), NodeState::Draining);
    assert_eq!(reg.eligible_count(), 0);
    reg.heartbeat(id, ready(), 63_000).unwrap();
    assert_eq!(reg.eligible_count(), 1);
    // A failed trial rejects for good (until the service admits it again).
    let other = reg
        .register(registration(2, "op2", "eu", None, hardware(4, 8)), 0)
        .unwrap();
    reg.record_trial(other, false, None, 0).unwrap();
    assert_eq!(reg.node(other).unwrap().state(), NodeState::Rejected);
    assert_eq!(reg.eligible_count(), 1);
    assert_eq!(
        reg.heartbeat(NodeId(99), ready(), 0),
        Err(RegistryError::UnknownNode(NodeId(99)))
    );
}

#[test]
fn distrusted_nodes_leave_selection_and_decay_brings_them_back() {
    let (mut reg, ids) = simple_registry(6, 6, 1, vec![DomainKey::Operator]);
    let bad = ids[0];
    reg.record_outcome(bad, JobOutcome::VerificationFailed { suspects: 1 }, 0)
        .unwrap();
    assert!(!reg.node(bad).unwrap().is_eligible());
    assert_eq!(reg.node(bad).unwrap().stats().verification_failures, 1);
    let d = demand(3, 1, 1);
    let c = reg
        .select(&SelectRequest {
            demand: &d,
            seed: 0,
            exclude: &[],
        })
        .unwrap();
    assert!(!c.contains(bad));
    // Two weeks later (one half-life) the evidence has faded halfway to the prior: eligible again.
    for &id in &ids {
        reg.heartbeat(id, ready(), 14 * 24 * 3600 * 1000).unwrap();
    }
    reg.sweep(14 * 24 * 3600 * 1000);
    assert!(reg.node(bad).unwrap().reputation() > 0.2);
    assert!(reg.node(bad).unwrap().is_eligible());
}

#[test]
fn rtts_measured_and_estimated() {
    let mut reg = registry();
    let a = admit(&mut reg, registration(1, "a", "eu", None, hardware(4, 8)));
    let b = admit(&mut reg, registration(2, "b", "eu", None, hardware(4, 8)));
    let c = admit(&mut reg, registration(3, "c", "us", None, hardware(4, 8)));
    let d = admit(&mut reg, registration(4, "d", "us", None, hardware(4, 8)));
    // Defaults before anything is known.
    assert_eq!(reg.rtt_us(a, b), Config::default().intra_region_rtt_us);
    assert_eq!(reg.rtt_us(a, c), Config::default().inter_region_rtt_us);
    // One end's report alone counts for nothing (it could claim any RTT to anyone).
    reg.report_rtts(a, &[(c, 90_000), (NodeId(77), 1), (a, 1)])
        .unwrap();
    assert_eq!(reg.rtt_us(c, a), Config::default().inter_region_rtt_us);
    assert_eq!(reg.rtt_us(b, d), Config::default().inter_region_rtt_us);
    // Once both ends reported, the pair is measured at the larger report, symmetric, and it refines the
    // region estimate for unmeasured pairs.
    reg.report_rtts(c, &[(a, 1)]).unwrap();
    assert_eq!(reg.rtt_us(c, a), 90_000);
    assert_eq!(reg.rtt_us(a, c), 90_000);
    assert_eq!(reg.rtt_us(b, d), 90_000);
    reg.report_rtts(b, &[(d, 110_000)]).unwrap();
    reg.report_rtts(d, &[(b, 110_000)]).unwrap();
    assert_eq!(reg.rtt_us(a, d), 100_000);
    // Configuration wins over measurements for unmeasured pairs.
    reg.configure_region_rtt("eu", "us", 70_000);
    assert_eq!(reg.rtt_us(a, d), 70_000);
    assert_eq!(reg.rtt_us(a, c), 90_000);
}

#[test]
fn stage_memory_limit_counts_distinct_domains() {
    let mut reg = registry();
    admit(&mut reg, registration(1, "a", "eu", None, hardware(4, 64)));
    admit(&mut reg, registration(2, "a", "eu", None, hardware(4, 64)));
    admit(&mut reg, registration(3, "b", "eu", None, hardware(4, 32)));
    admit(&mut reg, registration(4, "c", "eu", None, hardware(4, 16)));
    assert_eq!(reg.stage_memory_limit(1), 64 * GIB);
    assert_eq!(reg.stage_memory_limit(2), 32 * GIB);
    assert_eq!(reg.stage_memory_limit(3), 16 * GIB);
    assert_eq!(reg.stage_memory_limit(4), 0);
}

#[test]
fn registering_again_keeps_the_trials_measurement() {
    let mut reg = registry();
    let id = reg
        .register(registration(1, "op", "eu", None, hardware(4, 8)), 0)
        .unwrap();
    reg.record_trial(id, true, Some(20_000_000), 0).unwrap();
    let measured = reg.node(id).unwrap().hardware().ops_per_s();
    assert_eq!(measured, 20_000_000.0);
    // A restart (or new, larger claims) registers the same key again: the measurement stays, so the rate
    // selection draws by does not jump back to the claim.
    let again = reg
        .register(registration(1, "op", "eu", None, hardware(1024, 8)), 1_000)
        .unwrap();
    assert_eq!(again, id);
    let hw = reg.node(id).unwrap().hardware();
    assert_eq!(hw.measured_ops_per_s, Some(20_000_000));
    assert_eq!(hw.ops_per_s(), measured);
    assert_eq!(reg.node(id).unwrap().state(), NodeState::Active);
}
