//! Selection: non-collusion over random registries, exact feasibility against brute force, the reasons of
//! unplaceable jobs, determinism, reservations, pipelines, latency preference.

mod common;

use common::*;
use proptest::prelude::*;
use veil_scheduler::{
    Committee, Config, DomainKey, Heartbeat, JobDemand, JobOutcome, NodeId, Placement, Registry,
    ReportedStatus, Role, RoleKind, SelectRequest, Unplaceable,
};

/// What the test knows of a node, independently of the registry.
#[derive(Clone, Debug)]
struct Truth {
    operator: u8,
    region: u8,
    asn: Option<u8>,
    memory_gib: u64,
    state: St,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum St {
    Active,
    Probation,
    Down,
    Draining,
    Rejected,
    Distrusted,
}

fn st() -> impl Strategy<Value = St> {
    prop_oneof![
        6 => Just(St::Active),
        1 => Just(St::Probation),
        1 => Just(St::Down),
        1 => Just(St::Draining),
        1 => Just(St::Rejected),
        1 => Just(St::Distrusted),
    ]
}

fn truth() -> impl Strategy<Value = Truth> {
    (
        0u8..4,
        0u8..3,
        prop::option::of(0u8..3),
        prop::sample::select(vec![1u64, 4, 16]),
        st(),
    )
        .prop_map(|(operator, region, asn, memory_gib, state)| Truth {
            operator,
            region,
            asn,
            memory_gib,
            state,
        })
}

fn keys() -> impl Strategy<Value = Vec<DomainKey>> {
    prop::sample::subsequence(
        vec![DomainKey::Operator, DomainKey::Region, DomainKey::Asn],
        1..=3,
    )
    .prop_shuffle()
}

/// Builds the registry for `nodes`: every node registered at 0; live ones heartbeat at 100 s; the sweep at
/// 100 s marks the others down.
fn build(nodes: &[Truth], keys: &[DomainKey]) -> Registry {
    let mut reg = Registry::new(Config {
        collusion_keys: keys.to_vec(),
        ..Config::default()
    })
    .unwrap();
    for (i, t) in nodes.iter().enumerate() {
        let r = registration(
            i as u64,
            &format!("op-{}", t.operator),
            &format!("r-{}", t.region),
            t.asn.map(u32::from),
            hardware(4, t.memory_gib),
        );
        let id = reg.register(r, 0).unwrap();
        match t.state {
            St::Probation => {}
            St::Rejected => reg.record_trial(id, false, None, 0).unwrap(),
            _ => reg.record_trial(id, true, None, 0).unwrap(),
        }
        if t.state == St::Distrusted {
            for _ in 0..3 {
                reg.record_outcome(id, JobOutcome::VerificationFailed { suspects: 1 }, 0)
                    .unwrap();
            }
        }
    }
    let now = 100_000;
    for (i, t) in nodes.iter().enumerate() {
        if t.state != St::Down {
            let status = if t.state == St::Draining {
                ReportedStatus::Draining
            } else {
                ReportedStatus::Ready
            };
            reg.heartbeat(
                NodeId(i as u32),
                Heartbeat {
                    status,
                    ..Heartbeat::default()
                },
                now,
            )
            .unwrap();
        }
    }
    reg.sweep(now);
    reg
}

fn collide(keys: &[DomainKey], a: &Truth, b: &Truth) -> bool {
    keys.iter().any(|k| match k {
        DomainKey::Operator => a.operator == b.operator,
        DomainKey::Region => a.region == b.region,
        DomainKey::Asn => a.asn == b.asn,
    })
}

fn fits(t: &Truth, bytes: u64) -> bool {
    t.memory_gib * GIB >= bytes
}

/// Total memory of every node, as the free memory of an idle registry.
fn idle(nodes: &[Truth]) -> Vec<u64> {
    nodes.iter().map(|t| t.memory_gib * GIB).collect()
}

/// Brute force: does any valid committee exist?
fn feasible(nodes: &[Truth], keys: &[DomainKey], d: &JobDemand, exclude: &[usize]) -> bool {
    let usable: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].state == St::Active && !exclude.contains(&i))
        .collect();
    let needs: Vec<u64> = d.roles().map(|r| d.role(r).memory_bytes).collect();
    fn go(
        nodes: &[Truth],
        keys: &[DomainKey],
        usable: &[usize],
        needs: &[u64],
        chosen: &mut Vec<usize>,
    ) -> bool {
        if chosen.len() == needs.len() {
            return true;
        }
        for &i in usable {
            if chosen.contains(&i)
                || !fits(&nodes[i], needs[chosen.len()])
                || chosen.iter().any(|&c| collide(keys, &nodes[c], &nodes[i]))
            {
                continue;
            }
            chosen.push(i);
            if go(nodes, keys, usable, needs, chosen) {
                return true;
            }
            chosen.pop();
        }
        false
    }
    go(nodes, keys, &usable, &needs, &mut Vec::new())
}

/// Checks a committee against the truth: distinct, non-colliding, eligible, not excluded, memory fits
/// (`free`: the test's own account of each node's free memory).
fn check_committee(
    nodes: &[Truth],
    free: &[u64],
    keys: &[DomainKey],
    d: &JobDemand,
    exclude: &[usize],
    c: &Committee,
) {
    // Exactly the demand's roles: no dealer or verifier where the demand has none.
    assert_eq!(c.parties.len(), d.parties as usize);
    assert_eq!(c.dealer.is_some(), d.dealer.is_some(), "{c:?} for {d:?}");
    assert_eq!(
        c.verifier.is_some(),
        d.verifier.is_some(),
        "{c:?} for {d:?}"
    );
    assert_eq!(c.len(), d.committee_size());
    let members: Vec<(u64, usize)> = c
        .members()
        .map(|(role, n)| (d.role(role).memory_bytes, n.index()))
        .collect();
    for (a, &(need, i)) in members.iter().enumerate() {
        assert_eq!(
            nodes[i].state,
            St::Active,
            "member {i} is {:?}",
            nodes[i].state
        );
        assert!(!exclude.contains(&i), "member {i} was excluded");
        assert!(free[i] >= need, "member {i} lacks memory");
        for &(_, j) in &members[..a] {
            assert_ne!(i, j, "node {i} twice");
            assert!(
                !collide(keys, &nodes[i], &nodes[j]),
                "members {i} and {j} collude under {keys:?}"
            );
        }
    }
}

/// Demands of 2 or 3 parties with every combination of roles: dealer and verifier (`semi2k`, `spdz2k`),
/// a verifier only (`rep3m`), neither (`rep3`), a dealer only.
fn demand_strategy() -> impl Strategy<Value = JobDemand> {
    (
        2u8..=3,
        prop::sample::select(vec![0u64, 2, 8]),
        prop::sample::select(vec![0u64, 1, 2]),
        any::<(bool, bool)>(),
    )
        .prop_map(|(p, party, aux, (dealer, verifier))| {
            let d = demand(p, party, aux);
            JobDemand {
                dealer: d.dealer.filter(|_| dealer),
                verifier: d.verifier.filter(|_| verifier),
                ..d
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Over random small registries: a committee is found iff one exists (brute force), and any committee
    /// found is valid (no shared domain, dealer and verifier included).
    #[test]
    fn selection_is_valid_and_exact(
        nodes in prop::collection::vec(truth(), 2..11),
        keys in keys(),
        d in demand_strategy(),
        seed in any::<u64>(),
        exclude_mask in any::<u16>(),
    ) {
        let reg = build(&nodes, &keys);
        let exclude: Vec<usize> = (0..nodes.len()).filter(|i| exclude_mask & (1 << i) != 0 && i % 3 == 0).collect();
        let ex_ids: Vec<NodeId> = exclude.iter().map(|&i| NodeId(i as u32)).collect();
        let result = reg.select(&SelectRequest { demand: &d, seed, exclude: &ex_ids });
        let truth_ok = feasible(&nodes, &keys, &d, &exclude);
        match &result {
            Ok(c) => check_committee(&nodes, &idle(&nodes), &keys, &d, &exclude, c),
            Err(reason) => check_reason(&nodes, &idle(&nodes), &keys, &d, &exclude, reason),
        }
        prop_assert_eq!(result.is_ok(), truth_ok, "select {:?} but brute force says {}", result, truth_ok);
        // Determinism: same state and seed, same answer; also from a clone.
        prop_assert_eq!(reg.select(&SelectRequest { demand: &d, seed, exclude: &ex_ids }), result.clone());
        prop_assert_eq!(reg.clone().select(&SelectRequest { demand: &d, seed, exclude: &ex_ids }), result);
    }

    /// Larger registries (beyond brute force): every committee is valid, under load, with reservations.
    #[test]
    fn committees_never_collude_under_load(
        nodes in prop::collection::vec(truth(), 20..80),
        keys in keys(),
        demands in prop::collection::vec(demand_strategy(), 1..40),
        seed in any::<u64>(),
    ) {
        let mut reg = build(&nodes, &keys);
        let mut placed: Vec<Placement> = Vec::new();
        let mut free = idle(&nodes);
        let account = |free: &mut Vec<u64>, p: &Placement, sign: i64| {
            for (role, n) in p.committee.members() {
                let m = p.demand.role(role).memory_bytes as i64 * sign;
                free[n.index()] = (free[n.index()] as i64 - m) as u64;
            }
        };
        for (k, d) in demands.iter().enumerate() {
            match reg.select(&SelectRequest { demand: d, seed: seed ^ k as u64, exclude: &[] }) {
                Ok(c) => {
                    check_committee(&nodes, &free, &keys, d, &[], &c);
                    let p = Placement { committee: c, demand: *d };
                    reg.reserve(&p).unwrap();
                    account(&mut free, &p, 1);
                    placed.push(p);
                }
                Err(reason) => check_reason(&nodes, &free, &keys, d, &[], &reason),
            }
            if k % 3 == 2 && !placed.is_empty() {
                let p = placed.remove(0);
                reg.release(&p);
                account(&mut free, &p, -1);
            }
        }
        for p in &placed {
            reg.release(p);
        }
        for e in reg.nodes() {
            prop_assert_eq!(e.free_memory(), e.hardware().memory_bytes);
            prop_assert_eq!(e.active_jobs(), 0);
            prop_assert_eq!(e.queued_seconds(), 0.0);
        }
    }
}

/// Checks that an unplaceable reason is true of the ground truth, and is the first in the documented order.
fn check_reason(
    nodes: &[Truth],
    free: &[u64],
    keys: &[DomainKey],
    d: &JobDemand,
    exclude: &[usize],
    reason: &Unplaceable,
) {
    let usable: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].state == St::Active && !exclude.contains(&i))
        .collect();
    let size = d.committee_size();
    let fit_party = usable
        .iter()
        .filter(|&&i| free[i] >= d.party.memory_bytes)
        .count();
    match reason {
        Unplaceable::NotEnoughEligibleNodes { needed, eligible } => {
            assert_eq!(*needed, size);
            assert_eq!(*eligible, usable.len());
            assert!(usable.len() < size);
        }
        Unplaceable::InsufficientMemory {
            role,
            needed_bytes,
            required,
            fitting,
        } => {
            assert!(
                usable.len() >= size,
                "eligibility should have been reported first"
            );
            let count = usable.iter().filter(|&&i| free[i] >= *needed_bytes).count();
            if *role == RoleKind::Party && *required == d.parties as usize {
                assert_eq!(*needed_bytes, d.party.memory_bytes);
            }
            assert_eq!(*fitting, count);
            assert!(count < *required);
        }
        Unplaceable::NotEnoughCollusionDomains {
            key,
            needed,
            available,
        } => {
            assert!(usable.len() >= size && fit_party >= d.parties as usize);
            assert!(keys.contains(key));
            assert!(available < needed);
        }
        Unplaceable::NoNonCollidingAssignment { needed } => assert_eq!(*needed, size),
        Unplaceable::TooFewParties { .. } => panic!("demands here have at least 2 parties"),
    }
}

#[test]
fn reasons_name_the_missing_resource() {
    // 3 operators only: committee of 5 impossible.
    let (reg, _) = simple_registry(12, 3, 2, vec![DomainKey::Operator]);
    let d = demand(3, 1, 1);
    assert_eq!(
        reg.select(&SelectRequest {
            demand: &d,
            seed: 1,
            exclude: &[]
        }),
        Err(Unplaceable::NotEnoughCollusionDomains {
            key: DomainKey::Operator,
            needed: 5,
            available: 3
        })
    );
    // Too few nodes at all.
    let (reg, ids) = simple_registry(6, 6, 2, vec![DomainKey::Operator]);
    assert_eq!(
        reg.select(&SelectRequest {
            demand: &d,
            seed: 1,
            exclude: &ids[..2]
        }),
        Err(Unplaceable::NotEnoughEligibleNodes {
            needed: 5,
            eligible: 4
        })
    );
    // Memory: every node has 32 GiB.
    let big = demand(3, 64, 1);
    assert!(matches!(
        reg.select(&SelectRequest {
            demand: &big,
            seed: 1,
            exclude: &[]
        }),
        Err(Unplaceable::InsufficientMemory {
            role: RoleKind::Party,
            fitting: 0,
            required: 3,
            ..
        })
    ));
    // Region as a second key: 6 operators but 2 regions.
    let (reg, _) = simple_registry(12, 6, 2, vec![DomainKey::Operator, DomainKey::Region]);
    assert_eq!(
        reg.select(&SelectRequest {
            demand: &d,
            seed: 1,
            exclude: &[]
        }),
        Err(Unplaceable::NotEnoughCollusionDomains {
            key: DomainKey::Region,
            needed: 5,
            available: 2
        })
    );
    let one = demand(1, 1, 1);
    assert_eq!(
        reg.select(&SelectRequest {
            demand: &one,
            seed: 1,
            exclude: &[]
        }),
        Err(Unplaceable::TooFewParties { parties: 1 })
    );
}

#[test]
fn same_seed_same_committee_and_seeds_diversify() {
    let (reg, _) = simple_registry(200, 40, 1, vec![DomainKey::Operator]);
    let d = demand(3, 1, 1);
    let a = reg
        .select(&SelectRequest {
            demand: &d,
            seed: 42,
            exclude: &[],
        })
        .unwrap();
    let b = reg
        .select(&SelectRequest {
            demand: &d,
            seed: 42,
            exclude: &[],
        })
        .unwrap();
    assert_eq!(a, b);
    // On an idle, uniform registry the seed alone decides between equals.
    let distinct: std::collections::HashSet<Vec<NodeId>> = (0..20)
        .map(|s| {
            reg.select(&SelectRequest {
                demand: &d,
                seed: s,
                exclude: &[],
            })
            .unwrap()
            .parties
        })
        .collect();
    assert!(
        distinct.len() > 5,
        "seeds should diversify ties, got {} distinct",
        distinct.len()
    );
}

#[test]
fn load_spreads_and_is_released() {
    let (mut reg, ids) = simple_registry(50, 50, 1, vec![DomainKey::Operator]);
    let d = demand(3, 1, 1);
    let mut placements = Vec::new();
    for s in 0..50 {
        let c = reg
            .select(&SelectRequest {
                demand: &d,
                seed: s,
                exclude: &[],
            })
            .unwrap();
        let p = Placement {
            committee: c,
            demand: d,
        };
        reg.reserve(&p).unwrap();
        placements.push(p);
    }
    // 250 roles over 50 identical nodes, least virtual time first: the spread of virtual time stays within
    // about one party role's charge, and every node got work.
    let v: Vec<f64> = ids
        .iter()
        .map(|&id| reg.node(id).unwrap().virtual_seconds())
        .collect();
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let party_charge = (1e9 / 8e9 + 1e7 / 1e9) / 0.8;
    assert!(
        hi - lo <= 1.5 * party_charge,
        "virtual time spread {lo}..{hi}"
    );
    assert!(ids
        .iter()
        .all(|&id| reg.node(id).unwrap().active_jobs() > 0));
    for p in &placements {
        reg.release(p);
    }
    assert!(reg
        .nodes()
        .all(|n| n.active_jobs() == 0 && n.free_memory() == n.hardware().memory_bytes));
}

#[test]
fn reservations_respect_memory() {
    let (mut reg, _) = simple_registry(5, 5, 1, vec![DomainKey::Operator]);
    let d = demand(3, 20, 1); // 20 of 32 GiB per party
    let c = reg
        .select(&SelectRequest {
            demand: &d,
            seed: 0,
            exclude: &[],
        })
        .unwrap();
    reg.reserve(&Placement {
        committee: c.clone(),
        demand: d,
    })
    .unwrap();
    // The parties now have 12 GiB free: a second identical job cannot fit (only the dealer and verifier do).
    assert!(matches!(
        reg.select(&SelectRequest {
            demand: &d,
            seed: 0,
            exclude: &[]
        }),
        Err(Unplaceable::InsufficientMemory {
            role: RoleKind::Party,
            fitting: 2,
            ..
        })
    ));
    // Reserving the same placement again fails without side effects.
    let before: Vec<u64> = reg.nodes().map(|n| n.free_memory()).collect();
    assert!(reg
        .reserve(&Placement {
            committee: c,
            demand: d
        })
        .is_err());
    assert_eq!(
        before,
        reg.nodes().map(|n| n.free_memory()).collect::<Vec<_>>()
    );
}

#[test]
fn exclusions_force_a_fresh_committee() {
    let (reg, _) = simple_registry(30, 30, 1, vec![DomainKey::Operator]);
    let d = demand(3, 1, 1);
    let first = reg
        .select(&SelectRequest {
            demand: &d,
            seed: 3,
            exclude: &[],
        })
        .unwrap();
    let failed: Vec<NodeId> = first.members().map(|(_, n)| n).collect();
    let second = reg
        .select(&SelectRequest {
            demand: &d,
            seed: 3,
            exclude: &failed,
        })
        .unwrap();
    assert!(second.members().all(|(_, n)| !failed.contains(&n)));
}

#[test]
fn committees_stay_close_when_they_can() {
    // Two regions 150 ms apart, 20 operators each spread over both.
    let (mut reg, _) = simple_registry(80, 20, 2, vec![DomainKey::Operator]);
    reg.configure_region_rtt("r-0", "r-1", 150_000);
    reg.configure_region_rtt("r-0", "r-0", 1_000);
    reg.configure_region_rtt("r-1", "r-1", 1_000);
    let d = demand(3, 1, 1);
    for s in 0..20 {
        let c = reg
            .select(&SelectRequest {
                demand: &d,
                seed: s,
                exclude: &[],
            })
            .unwrap();
        let region = |n: NodeId| reg.node(n).unwrap().registration().region.clone();
        let r0 = region(c.parties[0]);
        assert!(
            c.members().all(|(_, n)| region(n) == r0),
            "committee {c:?} spans regions"
        );
    }
}

#[test]
fn pipeline_stages_are_placed_and_rolled_back() {
    let (mut reg, _) = simple_registry(10, 10, 1, vec![DomainKey::Operator]);
    let stage = demand(3, 16, 1);
    // Two stages of 16 GiB fit (nodes have 32 GiB; stages may even share nodes).
    let placed = reg.place_stages(&[stage, stage], 9, &[]).unwrap();
    assert_eq!(placed.len(), 2);
    for p in &placed {
        let ids: Vec<NodeId> = p.committee.members().map(|(_, n)| n).collect();
        for (a, &x) in ids.iter().enumerate() {
            for &y in &ids[..a] {
                assert!(!reg.collide(x, y));
            }
        }
    }
    for p in &placed {
        reg.release(p);
    }
    // Five stages of 20 GiB cannot all fit: the ones placed are rolled back.
    let big = demand(3, 20, 1);
    let err = reg.place_stages(&[big; 5], 9, &[]).unwrap_err();
    assert!(err.stage >= 3, "stage {} failed", err.stage);
    assert!(reg
        .nodes()
        .all(|n| n.free_memory() == n.hardware().memory_bytes && n.active_jobs() == 0));
}

/// A committee has exactly the roles of its demand, drawn and reserved: a `rep3` demand (no dealer, no
/// verifier) gets its 3 parties and holds 3 nodes; a `rep3m` one (a verifier, no dealer) 4; a
/// `semi2k`/`spdz2k` one (dealer and verifier) 5, in the draw order party 0, 1, 2, dealer, verifier.
#[test]
fn a_committee_holds_a_node_for_each_role_of_its_protocol_and_no_other() {
    let full = demand(3, 1, 1);
    let rep3 = JobDemand {
        dealer: None,
        verifier: None,
        ..full
    };
    let rep3m = JobDemand {
        dealer: None,
        ..full
    };
    let seed = [7u8; 32];
    let mut parties_drawn = Vec::new();
    for (d, size) in [(rep3, 3), (rep3m, 4), (full, 5)] {
        let (mut reg, _) = simple_registry(30, 30, 1, vec![DomainKey::Operator]);
        let (c, record) = reg.draw_committee(&d, &seed, &[], false).unwrap();
        // Pinned: the same three parties for every shape; the full one (semi2k, spdz2k) draws its dealer
        // and verifier after them exactly as before roles were per protocol (same role order, same
        // random stream), and rep3m's verifier takes the node the dealer would have.
        let pinned = |dealer: Option<u32>, verifier: Option<u32>| Committee {
            parties: vec![NodeId(7), NodeId(10), NodeId(4)],
            dealer: dealer.map(NodeId),
            verifier: verifier.map(NodeId),
        };
        let expected = match size {
            3 => pinned(None, None),
            4 => pinned(None, Some(20)),
            _ => pinned(Some(20), Some(29)),
        };
        assert_eq!(c, expected);
        assert_eq!(c.parties.len(), 3);
        assert_eq!(c.dealer.is_some(), d.dealer.is_some());
        assert_eq!(c.verifier.is_some(), d.verifier.is_some());
        assert_eq!(c.len(), size);
        let roles: Vec<Role> = record.picks.iter().map(|p| p.role).collect();
        assert_eq!(roles, d.roles().collect::<Vec<_>>());
        assert_eq!(roles.len(), size);
        // The parties come first from the same random stream: the roles after them do not move them.
        parties_drawn.push(c.parties.clone());
        // The cheapest selection has the same roles.
        let cheap = reg
            .select(&SelectRequest {
                demand: &d,
                seed: 7,
                exclude: &[],
            })
            .unwrap();
        assert_eq!(
            (cheap.len(), cheap.dealer.is_some()),
            (size, d.dealer.is_some())
        );
        // Placed: exactly `size` nodes hold the job and its memory, the committee's members.
        let placed = reg.place_stages_seeded(&[d], &[seed], &[]).unwrap();
        let committee = &placed[0].0.committee;
        assert_eq!(committee, &c, "the draw reserved is the draw made");
        let held: Vec<NodeId> = reg
            .nodes()
            .filter(|e| e.active_jobs() > 0)
            .map(|e| e.id())
            .collect();
        assert_eq!(held.len(), size, "{held:?}");
        assert!(held.iter().all(|&n| committee.contains(n)));
        let used: u64 = reg
            .nodes()
            .map(|e| e.hardware().memory_bytes - e.free_memory())
            .sum();
        assert_eq!(used, d.roles().map(|r| d.role(r).memory_bytes).sum::<u64>());
        reg.release(&placed[0].0);
        assert!(reg.nodes().all(|e| e.active_jobs() == 0));
    }
    assert!(
        parties_drawn.windows(2).all(|w| w[0] == w[1]),
        "{parties_drawn:?}"
    );
}
