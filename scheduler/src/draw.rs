//! The committee draw: members drawn at random from the eligible nodes, weighted, from a published seed, so
//! that anyone holding the published eligible set and the seed recomputes the same committee.
//!
//! # Inputs
//! - The eligible set: every node the registry may select now, as [`Candidate`]s in node-id order, each with
//!   its operator, region and ASN (interned values), free memory, measured compute rate and bandwidth, and
//!   integer weight `w` (the registry sets `w = load * capacity_units`, see `registry.rs` and
//!   [`capacity_units`]; a weight is a published input here). Its hash ([`EligibleSet::hash`]) names it.
//! - The seed (32 bytes, from the beacon, see [`crate::beacon`]) and the [`DrawParams`].
//! - The shape: the number of parties, whether there is a dealer and a verifier, each role's memory, the
//!   collusion keys, the excluded nodes.
//!
//! # The procedure
//! A ChaCha20 generator keyed by the seed (`rand_chacha`'s `ChaCha20Rng::from_seed`, 64-bit words) drives
//! everything; `below(n)` is Lemire's unbiased multiply-and-reject reduction of one word (`x * n`, rejecting
//! a low half under `(2^64 - n) mod n`). Roles are filled in order: party 0, 1, ..., then the dealer and the
//! verifier where the shape has them (a committee has no node for a role it lacks). The anchor region is
//! party 0's region. For each role, up to `max_tries` times:
//! 1. `c` = the candidate whose cumulative-weight range (node-id order) contains `below(W)`, `W` the total
//!    of the role's pool: [`Pool::Fast`] for a long role ([`is_long`]), else [`Pool::All`] (this loses no
//!    admissible node, see [`Pool`]). `W_o` below is the operator's total in the same pool.
//! 2. Region preference: if the anchor is set, `c` is outside it and `region_boost > 1`, reject `c` unless
//!    `below(region_boost) == 0`. (Same-region nodes are thus `region_boost` times likelier, never certain.)
//! 3. Operator cap: with `W_o` the total weight of `c`'s operator, if `W_o * 10^6 > cap_ppm * W`, reject
//!    `c` unless `below(W_o) * 10^6 < cap_ppm * W`. (An operator's chance per try is at most `cap_ppm`.)
//! 4. Role acceptance: reject `c` unless `below(2^32) < role_acceptance(c)` ([`role_acceptance`]: the
//!    role's busy seconds on the reference machine over those on `c`, from `c`'s measured rate and
//!    bandwidth), skipped when the acceptance is `2^32`.
//! 5. Admissibility: reject `c` if it is below the role's capacity floor (acceptance 0), excluded, already chosen, lacks the role's free memory, or shares
//!    a value under any collusion key with a chosen member. Otherwise `c` takes the role.
//!
//! Steps 1-4 make every try pick node `i` with probability proportional to
//! `w_i * (boost if in the anchor region) * min(1, cap * W / W_o) * accept_i`; with the registry's weights
//! that is in proportion to its load factor and its measured capacity for the role (`s_ref / s_i`, the
//! inverse of its busy seconds for the role); step 5 conditions on admissibility, so the accepted node has exactly
//! that distribution restricted to the admissible nodes. If `max_tries` pass without success, the fallback
//! samples once from the admissible nodes directly with weights `w_i * (boost if in the anchor region) *
//! accept_i` (the operator cap is not applied there; the pick says so). No admissible node at all is a
//! [`DrawFailure`].
//!
//! # What a committee's capture costs an adversary
//! Every member is a weighted random eligible node: no claim of low latency or high speed moves a node ahead
//! of others. Its chance follows its *measured* rate and bandwidth (the registry keeps the smaller of the
//! claimed and measured values), its load as the coordinator accounted it, the operator cap and the
//! bounded region factor. RTTs play no part in the draw. Claimed memory does: a node that claims more
//! memory is eligible for more roles (the simulator's capture bound counts it so).
//!
//! Invariants: the picks are pairwise distinct and pairwise non-colliding under the keys; the outcome depends
//! only on the eligible set (order included), the seed, the params and the shape; [`draw`] over the registry's
//! Fenwick index and over an [`EligibleSet`] built from the same candidates give the same picks (both
//! implement [`WeightIndex`] with exact integer prefix sums).

use std::collections::HashMap;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::demand::Role;
use crate::types::{DomainKey, NodeId};

/// Domain label of the eligible-set hash.
pub const ELIGIBLE_LABEL: &[u8] = b"veil/draw/eligible/v1";

/// Knobs of the draw (published with every record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawParams {
    /// How many times likelier a node in the anchor region is than one outside (`>= 1`).
    pub region_boost: u32,
    /// The most any operator's chance per try may be, in parts per million (`1..=1_000_000`).
    pub operator_cap_ppm: u32,
    /// Tries per role before the fallback.
    pub max_tries: u32,
    /// The capacity floor: a node is eligible for a role only if the role's busy seconds on it are at
    /// most `max_slowdown` times those on the reference machine, or at most `short_role_ms`.
    pub max_slowdown: u32,
    /// Roles this short (milliseconds of busy time on the node) pass the capacity floor anywhere. 45 s by
    /// default: slow nodes then take the medium roles that fast nodes would otherwise queue, which evens
    /// out utilisation at some cost in latency (`veil sim`'s world, default seed, before the registry's
    /// catch-up boost: with 2 s, `max_over_mean_utilisation` 1.88 and 6.7 s per attempt on average; with
    /// 45 s, 1.53 and 8.1 s).
    pub short_role_ms: u32,
}

impl Default for DrawParams {
    fn default() -> Self {
        DrawParams {
            region_boost: 64,
            operator_cap_ppm: 50_000,
            max_tries: 256,
            max_slowdown: 16,
            short_role_ms: 45_000,
        }
    }
}

/// One eligible node as the draw sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Interned value per [`DomainKey::slot`] (operator, region, ASN).
    pub domains: [u32; 3],
    /// Free memory, bytes.
    pub free_memory: u64,
    /// Measured compute rate, ring operations per second (> 0).
    pub ops_per_s: u64,
    /// Measured bandwidth, bytes per second (> 0).
    pub bandwidth: u64,
    /// The draw weight (> 0 for a node the draw may pick): its load factor (see `registry.rs`).
    pub weight: u64,
}

impl Candidate {
    fn operator(&self) -> u32 {
        self.domains[DomainKey::Operator.slot()]
    }
    fn region(&self) -> u32 {
        self.domains[DomainKey::Region.slot()]
    }
}

/// The committee's shape.
#[derive(Clone, Copy, Debug)]
pub struct DrawShape<'a> {
    /// Execution parties.
    pub parties: u8,
    /// Whether the committee has a dealer.
    pub dealer: bool,
    /// Whether the committee has a verifier.
    pub verifier: bool,
    /// Free memory each role needs: party, dealer, verifier (an absent role's entry is unused).
    pub memory: [u64; 3],
    /// Work of each role: (ring operations, bytes sent), party, dealer, verifier.
    pub work: [(u64, u64); 3],
    /// The reference machine (ops per second, bytes per second): at least every candidate's rate and
    /// bandwidth, so that the role acceptance below is at most 1 (it is clamped otherwise).
    pub reference: (u64, u64),
    /// Collusion keys as [`DomainKey::slot`]s.
    pub keys: &'a [usize],
    /// Nodes that must not be picked.
    pub exclude: &'a [NodeId],
}

/// Which nodes a role's tries propose from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Every candidate.
    All,
    /// The candidates whose capacity units reach the floor: `units * max_slowdown >= 2^16`. A long role
    /// (one whose floor `max_slowdown * s_ref` exceeds `short_role_ms`) is admissible on no other node,
    /// since a node's capacity for any role is at most `units / 2^16`.
    Fast,
}

/// Whether a candidate belongs to [`Pool::Fast`] under `params` for `reference`.
pub fn is_fast(c: &Candidate, reference: (u64, u64), params: &DrawParams) -> bool {
    capacity_units(c.ops_per_s, c.bandwidth, reference) * u64::from(params.max_slowdown.max(1))
        >= CAPACITY_ONE
}

/// Where the draw reads weights: exact integer cumulative sums in node-id order, over either pool.
pub trait WeightIndex {
    /// Total weight `W` of a pool.
    fn total(&self, pool: Pool) -> u64;
    /// Total weight of one operator's nodes in a pool.
    fn operator_total(&self, pool: Pool, operator: u32) -> u64;
    /// The candidate of the pool whose range `[prefix, prefix + w)` contains `target` (`target <
    /// total(pool)`), ranges laid out in node-id order over the pool's members.
    fn find(&self, pool: Pool, target: u64) -> Candidate;
    /// Every candidate of non-zero weight, in node-id order.
    fn for_each(&self, f: &mut dyn FnMut(&Candidate));
}

/// One member drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pick {
    /// The role.
    pub role: Role,
    /// The node.
    pub node: NodeId,
    /// Its weight in the eligible set.
    pub weight: u64,
    /// Whether it sat in the anchor region (its weight counted `region_boost` times; party 0 defines it).
    pub in_anchor_region: bool,
    /// Tries it took (the fallback counts as `max_tries + 1`).
    pub tries: u32,
    /// Whether the fallback picked it.
    pub fallback: bool,
}

/// Why the draw found no committee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DrawFailure {
    /// No node has non-zero weight.
    #[error("no eligible node")]
    NoEligibleNodes,
    /// Fewer nodes have the free memory a role needs (excluded ones aside) than members still to draw for
    /// it, whoever was drawn.
    #[error("no node has the free memory {role:?} needs")]
    NoFittingNode {
        /// The role.
        role: Role,
    },
    /// No admissible node for a role, given the members already drawn.
    #[error("no admissible node for {role:?} after the members already drawn")]
    NoAdmissibleNode {
        /// The role.
        role: Role,
    },
}

/// Lemire's unbiased reduction of one 64-bit word to `[0, n)` (`n > 0`).
fn below(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(n);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// Uniform in `[0, n)` for a 128-bit `n > 0`: two words (high first), masked to the next power of two,
/// rejected until below `n`.
fn below128(rng: &mut ChaCha20Rng, n: u128) -> u128 {
    let bits = 128 - (n - 1).leading_zeros();
    let mask = if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    loop {
        let x = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & mask;
        if x < n {
            return x;
        }
    }
}

const PPM: u128 = 1_000_000;

/// The role acceptance that means "always": `2^32`.
pub const ACCEPT_ONE: u64 = 1 << 32;

/// A node's capacity units: `ceil(2^16 * max(ops_per_s / R, bandwidth / B))` clamped to `1..=2^16`, for
/// the reference machine `(R, B)`. Its capacity for any role, `s_ref / s_c` (below), is at most
/// `units / 2^16` (the mediant inequality), so the registry's weights (`load * units`) propose nodes in
/// proportion to an upper bound of their capacity and [`role_acceptance`] thins that to the exact one.
pub fn capacity_units(ops_per_s: u64, bandwidth: u64, reference: (u64, u64)) -> u64 {
    let r = ops_per_s as f64 / reference.0.max(1) as f64;
    let b = bandwidth as f64 / reference.1.max(1) as f64;
    let u = (CAPACITY_ONE as f64 * r.max(b)).ceil();
    if u.is_finite() {
        (u as u64).clamp(1, CAPACITY_ONE)
    } else {
        CAPACITY_ONE
    }
}

/// Whether a role is long: its busy seconds on the reference machine times `max_slowdown` exceed
/// `short_role_ms`, so only [`Pool::Fast`] nodes can pass its capacity floor.
pub fn is_long(work: (u64, u64), reference: (u64, u64), params: &DrawParams) -> bool {
    let s_ref =
        work.0 as f64 / reference.0.max(1) as f64 + work.1 as f64 / reference.1.max(1) as f64;
    s_ref * f64::from(params.max_slowdown) * 1_000.0 > f64::from(params.short_role_ms)
}

/// [`capacity_units`] of the reference machine itself: `2^16`.
pub const CAPACITY_ONE: u64 = 1 << 16;

/// The chance, in units of `2^-32`, that a try keeps candidate `c` for a role of `work = (ops, bytes)`:
/// `ceil(2^32 * (s_ref / s_c) / (units_c / 2^16))` clamped to `1..=2^32`, where
/// `s_c = ops / c.ops_per_s + bytes / c.bandwidth` are the role's busy seconds on `c`, `s_ref` the same on
/// the reference machine, and `units_c` = [`capacity_units`]. With weights proportional to `units_c`, a try
/// keeps `c` in proportion to its capacity for the role, `s_ref / s_c`: a node twice as fast for the role
/// is kept twice as often. A role with no work keeps every candidate. 0 (never) when `c` is below the
/// capacity floor: `s_c > max_slowdown * s_ref` and `s_c > short_role_ms / 1000`.
pub fn role_acceptance(
    c: &Candidate,
    work: (u64, u64),
    reference: (u64, u64),
    params: &DrawParams,
) -> u64 {
    let (ops, bytes) = (work.0 as f64, work.1 as f64);
    if ops == 0.0 && bytes == 0.0 {
        return ACCEPT_ONE;
    }
    let s = ops / c.ops_per_s.max(1) as f64 + bytes / c.bandwidth.max(1) as f64;
    let s_ref = ops / reference.0.max(1) as f64 + bytes / reference.1.max(1) as f64;
    if s > f64::from(params.max_slowdown) * s_ref && s * 1_000.0 > f64::from(params.short_role_ms) {
        return 0;
    }
    let units = capacity_units(c.ops_per_s, c.bandwidth, reference) as f64 / CAPACITY_ONE as f64;
    let a = (ACCEPT_ONE as f64 * (s_ref / s) / units).ceil();
    if a.is_finite() {
        (a as u64).clamp(1, ACCEPT_ONE)
    } else {
        1
    }
}

/// Draws a committee (see the module doc). Returns the picks: parties in order, then the dealer and the
/// verifier where the shape has them.
pub fn draw(
    index: &dyn WeightIndex,
    shape: &DrawShape<'_>,
    seed: &[u8; 32],
    params: &DrawParams,
) -> Result<Vec<Pick>, DrawFailure> {
    if index.total(Pool::All) == 0 {
        return Err(DrawFailure::NoEligibleNodes);
    }
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let roles: Vec<(Role, usize)> = (0..shape.parties)
        .map(|i| (Role::Party(i), 0))
        .chain(shape.dealer.then_some((Role::Dealer, 1)))
        .chain(shape.verifier.then_some((Role::Verifier, 2)))
        .collect();
    let boost = u64::from(params.region_boost.max(1));
    let mut chosen: Vec<Candidate> = Vec::with_capacity(roles.len());
    let mut picks: Vec<Pick> = Vec::with_capacity(roles.len());
    let mut anchor: Option<u32> = None;
    let admissible = |c: &Candidate, r: usize, chosen: &[Candidate]| {
        let memory = shape.memory[r];
        // Cheapest tests first (the fallback runs this over every candidate).
        c.weight > 0
            && c.free_memory >= memory
            && chosen.iter().all(|m| {
                m.node != c.node && !shape.keys.iter().any(|&k| m.domains[k] == c.domains[k])
            })
            && !shape.exclude.contains(&c.node)
            && role_acceptance(c, shape.work[r], shape.reference, params) > 0
    };
    for &(role, r) in &roles {
        let accept = |c: &Candidate| role_acceptance(c, shape.work[r], shape.reference, params);
        let pool = if is_long(shape.work[r], shape.reference, params) {
            Pool::Fast
        } else {
            Pool::All
        };
        let total = index.total(pool);
        let cap = u128::from(params.operator_cap_ppm.clamp(1, 1_000_000)) * u128::from(total);
        let tries = if total == 0 { 0 } else { params.max_tries };
        let mut found: Option<(Candidate, u32, bool)> = None;
        for t in 1..=tries {
            let c = index.find(pool, below(&mut rng, total));
            if boost > 1 && anchor.is_some_and(|r| c.region() != r) && below(&mut rng, boost) != 0 {
                continue;
            }
            let wo = index.operator_total(pool, c.operator());
            if u128::from(wo) * PPM > cap && u128::from(below(&mut rng, wo)) * PPM >= cap {
                continue;
            }
            let a = accept(&c);
            if a < ACCEPT_ONE && below(&mut rng, ACCEPT_ONE) >= a {
                continue;
            }
            if admissible(&c, r, &chosen) {
                found = Some((c, t, false));
                break;
            }
        }
        if found.is_none() {
            let mut pool: Vec<(Candidate, u128)> = Vec::new();
            let mut fitting = 0usize;
            index.for_each(&mut |c| {
                fitting += usize::from(
                    c.free_memory >= shape.memory[r] && !shape.exclude.contains(&c.node),
                );
                if admissible(c, r, &chosen) {
                    let f = if anchor.is_some_and(|r| c.region() == r) {
                        boost
                    } else {
                        1
                    };
                    pool.push((
                        *c,
                        u128::from(c.weight) * u128::from(f) * u128::from(accept(c)),
                    ));
                }
            });
            // Members still to draw that need this role's memory: the parties not yet drawn, or one.
            let needed = match role {
                Role::Party(i) => usize::from(shape.parties - i),
                _ => 1,
            };
            if fitting < needed {
                return Err(DrawFailure::NoFittingNode { role });
            }
            let sum: u128 = pool.iter().map(|&(_, w)| w).sum();
            if sum == 0 {
                return Err(DrawFailure::NoAdmissibleNode { role });
            }
            let mut x = below128(&mut rng, sum);
            for (c, w) in pool {
                if x < w {
                    found = Some((c, params.max_tries.saturating_add(1), true));
                    break;
                }
                x -= w;
            }
        }
        let Some((c, tries, fallback)) = found else {
            return Err(DrawFailure::NoAdmissibleNode { role });
        };
        let in_anchor = anchor.is_none_or(|r| c.region() == r);
        if anchor.is_none() {
            anchor = Some(c.region());
        }
        picks.push(Pick {
            role,
            node: c.node,
            weight: c.weight,
            in_anchor_region: in_anchor,
            tries,
            fallback,
        });
        chosen.push(c);
    }
    Ok(picks)
}

/// A published eligible set: the reference [`WeightIndex`] (prefix sums and binary search).
///
/// Invariant: `candidates` are sorted by node id with distinct ids; `prefix[i]` is the sum of the weights of
/// `candidates[..=i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EligibleSet {
    candidates: Vec<Candidate>,
    /// Per pool ([`Pool::All`], [`Pool::Fast`]): member indices, prefix sums, operator totals.
    pools: [PoolSums; 2],
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct PoolSums {
    members: Vec<usize>,
    prefix: Vec<u64>,
    operators: HashMap<u32, u64>,
}

fn slot(pool: Pool) -> usize {
    match pool {
        Pool::All => 0,
        Pool::Fast => 1,
    }
}

/// Why a published eligible set is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum EligibleSetError {
    /// Candidates are not in strictly increasing node-id order.
    #[error("candidates must be in strictly increasing node order (at {node})")]
    Unordered {
        /// The first node out of order.
        node: NodeId,
    },
    /// The weights overflow 64 bits.
    #[error("total weight overflows")]
    Overflow,
}

impl EligibleSet {
    /// Builds the set from candidates in node-id order; `reference` and `params` (the record's) decide
    /// which candidates form [`Pool::Fast`].
    pub fn new(
        candidates: Vec<Candidate>,
        reference: (u64, u64),
        params: &DrawParams,
    ) -> Result<EligibleSet, EligibleSetError> {
        let mut pools: [PoolSums; 2] = Default::default();
        for (i, c) in candidates.iter().enumerate() {
            if i > 0 && candidates[i - 1].node >= c.node {
                return Err(EligibleSetError::Unordered { node: c.node });
            }
            let fast = is_fast(c, reference, params);
            for (k, p) in pools.iter_mut().enumerate() {
                if k == 1 && !fast {
                    continue;
                }
                let acc = p.prefix.last().copied().unwrap_or(0);
                let acc = acc
                    .checked_add(c.weight)
                    .ok_or(EligibleSetError::Overflow)?;
                p.prefix.push(acc);
                p.members.push(i);
                *p.operators.entry(c.operator()).or_default() += c.weight;
            }
        }
        Ok(EligibleSet { candidates, pools })
    }

    /// The candidates.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// SHA-256 over `ELIGIBLE_LABEL || count || (node, operator, region, asn, free_memory, ops_per_s,
    /// bandwidth, weight)*`, all little-endian (u64 count, u32 node and domains, u64 the rest).
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(ELIGIBLE_LABEL);
        h.update((self.candidates.len() as u64).to_le_bytes());
        for c in &self.candidates {
            h.update(c.node.0.to_le_bytes());
            for d in c.domains {
                h.update(d.to_le_bytes());
            }
            h.update(c.free_memory.to_le_bytes());
            h.update(c.ops_per_s.to_le_bytes());
            h.update(c.bandwidth.to_le_bytes());
            h.update(c.weight.to_le_bytes());
        }
        h.finalize().into()
    }
}

impl WeightIndex for EligibleSet {
    fn total(&self, pool: Pool) -> u64 {
        self.pools[slot(pool)].prefix.last().copied().unwrap_or(0)
    }
    fn operator_total(&self, pool: Pool, operator: u32) -> u64 {
        self.pools[slot(pool)]
            .operators
            .get(&operator)
            .copied()
            .unwrap_or(0)
    }
    fn find(&self, pool: Pool, target: u64) -> Candidate {
        let p = &self.pools[slot(pool)];
        let i = p.prefix.partition_point(|&x| x <= target);
        self.candidates[p.members[i.min(p.members.len() - 1)]]
    }
    fn for_each(&self, f: &mut dyn FnMut(&Candidate)) {
        for c in self.candidates.iter().filter(|c| c.weight > 0) {
            f(c);
        }
    }
}

/// A Fenwick tree of `u64` weights with exact prefix sums: the registry's live [`WeightIndex`] backbone.
///
/// Invariant: `tree` is the Fenwick tree of `weights` (1-based, `tree.len() == weights.len() + 1`), and
/// `total` is their sum.
#[derive(Clone, Debug, Default)]
pub struct Fenwick {
    weights: Vec<u64>,
    tree: Vec<u64>,
    total: u64,
}

impl Fenwick {
    /// Number of slots.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The weight of slot `i` (0 beyond the end).
    pub fn get(&self, i: usize) -> u64 {
        self.weights.get(i).copied().unwrap_or(0)
    }

    /// The sum of every weight.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Sets slot `i`'s weight, growing the tree if needed (amortised O(log n)).
    pub fn set(&mut self, i: usize, w: u64) {
        if i >= self.weights.len() {
            let mut weights = std::mem::take(&mut self.weights);
            weights.resize((i + 1).max(weights.len() * 2).max(16), 0);
            weights[i] = w;
            self.rebuild(weights);
            return;
        }
        let old = self.weights[i];
        if old == w {
            return;
        }
        self.weights[i] = w;
        self.total = self.total - old + w;
        let mut j = i + 1;
        while j < self.tree.len() {
            self.tree[j] = self.tree[j] - old + w;
            j += j & j.wrapping_neg();
        }
    }

    /// Replaces every weight (O(n)).
    pub fn rebuild(&mut self, weights: Vec<u64>) {
        let n = weights.len();
        let mut tree = vec![0u64; n + 1];
        for (i, &w) in weights.iter().enumerate() {
            tree[i + 1] = tree[i + 1].wrapping_add(w);
            let parent = (i + 1) + ((i + 1) & (i + 1).wrapping_neg());
            if parent <= n {
                tree[parent] = tree[parent].wrapping_add(tree[i + 1]);
            }
        }
        self.total = weights.iter().sum();
        self.weights = weights;
        self.tree = tree;
    }

    /// The slot whose range `[prefix, prefix + w)` contains `target` (`target < total()`).
    pub fn find(&self, target: u64) -> usize {
        let n = self.weights.len();
        let mut pos = 0usize;
        let mut rem = target;
        let mut step = if n == 0 { 0 } else { 1usize << n.ilog2() };
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        pos.min(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenwick_finds_like_prefix_sums() {
        let weights: Vec<u64> = (0..37u64).map(|i| (i * 7919) % 13).collect();
        let mut f = Fenwick::default();
        for (i, &w) in weights.iter().enumerate() {
            f.set(i, w);
        }
        let cands: Vec<Candidate> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                node: NodeId(i as u32),
                domains: [i as u32, 0, 0],
                free_memory: 1,
                ops_per_s: 1,
                bandwidth: 1,
                weight: w,
            })
            .collect();
        let set = EligibleSet::new(cands, (1, 1), &DrawParams::default()).unwrap();
        assert_eq!(f.total(), set.total(Pool::All));
        for t in 0..f.total() {
            assert_eq!(
                f.find(t) as u32,
                set.find(Pool::All, t).node.0,
                "target {t}"
            );
        }
        f.set(5, 100);
        f.set(5, 0);
        f.set(80, 3);
        assert_eq!(f.total(), set.total(Pool::All) - weights[5] + 3);
        assert_eq!(f.find(f.total() - 1), 80);
    }

    #[test]
    fn below_is_in_range_and_deterministic() {
        let mut a = ChaCha20Rng::from_seed([1; 32]);
        let mut b = ChaCha20Rng::from_seed([1; 32]);
        for n in [1u64, 2, 3, 1000, u64::MAX] {
            let x = below(&mut a, n);
            assert!(x < n);
            assert_eq!(x, below(&mut b, n));
        }
        for n in [1u128, 5, 1 << 70, u128::MAX] {
            assert!(below128(&mut a, n) < n);
        }
    }
}
