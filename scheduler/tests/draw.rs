//! The committee draw: recomputed from the published data (beacon reveal, eligible set, record) it gives
//! the same committee; the registry's live index and the published set agree draw for draw; frequencies
//! follow the weights, the operator cap binds, and committees never collide.

mod common;

use common::*;
use veil_scheduler::beacon::{draw_seed, verify_reveal, BeaconChain, SeedInput};
use veil_scheduler::draw::{Pool, WeightIndex};
use veil_scheduler::{Config, DomainKey, NodeId, Placement, RecomputeError, Registry, Role};

/// 60 nodes of 20 operators in 4 regions, with four hardware classes, some of them loaded.
fn mixed_registry(keys: Vec<DomainKey>) -> Registry {
    let mut reg = Registry::new(Config {
        collusion_keys: keys,
        ..Config::default()
    })
    .unwrap();
    for i in 0..60u64 {
        let hw = hardware(
            [4, 8, 32, 64][(i % 4) as usize],
            [16, 32, 64, 128][(i % 4) as usize],
        );
        let r = registration(
            i,
            &format!("op-{}", i % 20),
            &format!("r-{}", i % 4),
            Some(64_512 + (i % 9) as u32),
            hw,
        );
        admit(&mut reg, r);
    }
    reg
}

#[test]
fn the_draw_is_recomputed_from_the_published_data() {
    let mut reg = mixed_registry(vec![DomainKey::Operator]);
    // Load some nodes so that weights differ by virtual time too.
    for s in 0..10u64 {
        reg.place_stages(&[demand(3, 4, 1)], s, &[]).unwrap();
    }
    // The coordinator's chain; the anchor is published before the job is submitted.
    let chain = BeaconChain::generate([42; 32], 100).unwrap();
    let anchor = chain.anchor();
    let input = SeedInput {
        epoch: 7,
        job: 1234,
        attempt: 0,
        stage: 0,
        client: [9; 32],
    };
    let d = demand(3, 8, 1);
    let exclude = [NodeId(3), NodeId(8)];
    let seed = draw_seed(&chain.secret(7).unwrap(), &input);
    let (committee, record) = reg.draw_committee(&d, &seed, &exclude, true).unwrap();
    let published = reg.eligible_set();
    assert!(!record.cheapest_fallback);
    assert_eq!(record.eligible as usize, published.candidates().len());
    assert_eq!(record.total_weight, published.total(Pool::All));

    // The auditor: check the reveal against the anchor, rebuild the seed, redraw.
    let revealed = chain.secret(7).unwrap();
    verify_reveal(0, &anchor, 7, &revealed).unwrap();
    assert_eq!(draw_seed(&revealed, &input), record.seed);
    let keys = [DomainKey::Operator.slot()];
    let picks = record.recompute(&published, &d, &keys, &exclude).unwrap();
    assert_eq!(picks, record.picks);
    let drawn: Vec<NodeId> = picks.iter().map(|p| p.node).collect();
    let members: Vec<NodeId> = committee.members().map(|(_, n)| n).collect();
    assert_eq!(drawn, members);
    assert_eq!(picks[3].role, Role::Dealer);
    assert!(members.iter().all(|m| !exclude.contains(m)));

    // A published set that differs in one weight is refused; a different secret draws differently.
    let mut forged: Vec<_> = published.candidates().to_vec();
    forged[0].weight += 1;
    let forged =
        veil_scheduler::draw::EligibleSet::new(forged, record.reference, &record.params).unwrap();
    assert_eq!(
        record.recompute(&forged, &d, &keys, &exclude),
        Err(RecomputeError::EligibleSetMismatch)
    );
    let other = draw_seed(&chain.secret(8).unwrap(), &input);
    let (other_committee, _) = reg.draw_committee(&d, &other, &exclude, false).unwrap();
    let mut differs = other_committee != committee;
    for e in 9..20 {
        let s = draw_seed(&chain.secret(e).unwrap(), &input);
        differs |= reg.draw_committee(&d, &s, &exclude, false).unwrap().0 != committee;
    }
    assert!(differs, "eleven other seeds all drew the same committee");
}

#[test]
fn the_live_index_and_the_published_set_draw_alike_under_load() {
    let keys_cfg = vec![DomainKey::Operator, DomainKey::Asn];
    let mut reg = mixed_registry(keys_cfg.clone());
    let keys: Vec<usize> = keys_cfg.iter().map(|k| k.slot()).collect();
    let mut held: Vec<Placement> = Vec::new();
    for j in 0..300u64 {
        let d = demand(2 + (j % 3) as u8, 1 + j % 12, 1);
        let seed = veil_scheduler::select::seed_from_u64(j, 0);
        let exclude = [NodeId((j % 60) as u32)];
        let Ok((committee, record)) = reg.draw_committee(&d, &seed, &exclude, true) else {
            continue;
        };
        let published = reg.eligible_set();
        if !record.cheapest_fallback {
            let picks = record.recompute(&published, &d, &keys, &exclude).unwrap();
            assert_eq!(picks, record.picks, "job {j}");
        }
        let members: Vec<NodeId> = committee.members().map(|(_, n)| n).collect();
        for (a, &x) in members.iter().enumerate() {
            for &y in &members[..a] {
                assert!(!reg.collide(x, y), "job {j}: {x} and {y} collide");
            }
        }
        let p = Placement {
            committee,
            demand: d,
        };
        if reg.reserve(&p).is_ok() {
            held.push(p);
        }
        if held.len() > 20 {
            let p = held.remove((j % 7) as usize);
            reg.release(&p);
        }
    }
}

/// How often each node is drawn as party 0 over `trials` seeds.
fn party0_counts(reg: &mut Registry, trials: u64) -> Vec<u64> {
    let d = demand(2, 1, 1);
    let mut first = vec![0u64; reg.len()];
    for s in 0..trials {
        let seed = veil_scheduler::select::seed_from_u64(s, 0);
        let (c, _) = reg.draw_committee(&d, &seed, &[], false).unwrap();
        first[c.parties[0].index()] += 1;
    }
    first
}

fn assert_near(hits: u64, trials: u64, expect: f64, what: &str) {
    let p = hits as f64 / trials as f64;
    let sd = (expect * (1.0 - expect) / trials as f64).sqrt();
    assert!(
        (p - expect).abs() < 5.0 * sd,
        "{what}: {p}, expected {expect}"
    );
}

#[test]
fn frequencies_follow_measured_capacity() {
    // Ten operators of one node each; node 0 has 20 times the cores. Party work of `demand`: 1e9 ops and
    // 1e7 bytes at 1 GB/s, so node 0's busy seconds are 1/160 + 0.01 and the others' 1/8 + 0.01: node 0
    // is drawn in proportion 61.5 against 7.41 each, 0.480 of the time.
    let mut reg = Registry::new(Config::default()).unwrap();
    for i in 0..10u64 {
        let cores = if i == 0 { 160 } else { 8 };
        admit(
            &mut reg,
            registration(i, &format!("op-{i}"), "r", None, hardware(cores, 32)),
        );
    }
    let trials = 4_000;
    let first = party0_counts(&mut reg, trials);
    let w0 = 1.0 / (1.0 / 160.0 + 0.01);
    let w = 1.0 / (1.0 / 8.0 + 0.01);
    assert_near(first[0], trials, w0 / (w0 + 9.0 * w), "node 0 as party 0");
}

#[test]
fn the_operator_cap_binds() {
    // Operator 0 runs 20 of 29 equal nodes (69% of the weight); the cap (5%) holds its chance per try to
    // 5%, so party 0 is one of its nodes with probability 0.05 / (0.05 + 9 / 29) = 0.139.
    let build = |cap_ppm: u32| {
        let mut reg = Registry::new(Config {
            selection: veil_scheduler::SelectionTuning {
                draw: veil_scheduler::draw::DrawParams {
                    operator_cap_ppm: cap_ppm,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Config::default()
        })
        .unwrap();
        for i in 0..29u64 {
            let op = if i < 20 { 0 } else { i - 19 };
            admit(
                &mut reg,
                registration(i, &format!("op-{op}"), "r", None, hardware(8, 32)),
            );
        }
        reg
    };
    let trials = 4_000;
    let first = party0_counts(&mut build(50_000), trials);
    let op0: u64 = first[..20].iter().sum();
    assert_near(op0, trials, 0.05 / (0.05 + 9.0 / 29.0), "capped operator 0");
    // Without the cap (100%), its chance is its share, 20/29.
    let first = party0_counts(&mut build(1_000_000), trials);
    let op0: u64 = first[..20].iter().sum();
    assert_near(op0, trials, 20.0 / 29.0, "uncapped operator 0");
}

#[test]
fn load_lowers_a_nodes_chance() {
    // Two operators' nodes alone fit a big party; loading one makes the other likelier.
    let mut reg = mixed_registry(vec![DomainKey::Operator]);
    let d = demand(2, 1, 1);
    let count = |reg: &mut Registry, node: NodeId| {
        (0..2_000u64)
            .filter(|&s| {
                let seed = veil_scheduler::select::seed_from_u64(s, 1);
                reg.draw_committee(&d, &seed, &[], false)
                    .unwrap()
                    .0
                    .contains(node)
            })
            .count()
    };
    let before = count(&mut reg, NodeId(3));
    // Reserve a lot of work on node 3 (a 64-core node): its draw virtual time moves ahead by many tau.
    let heavy = veil_scheduler::JobDemand {
        party: veil_scheduler::RoleDemand {
            memory_bytes: 0,
            ops: 2_000_000_000_000,
            bytes: 0,
        },
        ..demand(2, 0, 0)
    };
    let p = Placement {
        committee: veil_scheduler::Committee {
            parties: vec![NodeId(3), NodeId(4)],
            dealer: Some(NodeId(5)),
            verifier: Some(NodeId(6)),
        },
        demand: heavy,
    };
    reg.reserve(&p).unwrap();
    let after = count(&mut reg, NodeId(3));
    assert!(before > 100, "node 3 drawn {before} times of 2000");
    assert!(
        after * 10 < before,
        "loaded node 3 still drawn {after} times (was {before})"
    );
}
