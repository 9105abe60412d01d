//! Committee selection: n execution parties, plus a dealer and a verifier where the job's protocol has them,
//! no two in one collusion domain.
//!
//! # Roles
//! A committee has exactly the roles of its [`JobDemand`]: `parties` execution parties, a dealer iff
//! `demand.dealer` is `Some` (a protocol whose correlated randomness comes from a dealer: `semi2k`,
//! `spdz2k`), a verifier iff `demand.verifier` is `Some` (the coordinator names one for the protocols that
//! keep a verifier slot, see `Protocol::has_verifier`). A role the demand lacks is neither drawn nor
//! searched for, counts in no size or memory check, and holds no node: a `rep3` committee is its three
//! parties, reserved on three nodes. Every rule below (distinct members, no two in one collusion domain,
//! the draw's order and weights) applies to whatever roles exist.
//!
//! Two modes ([`SelectionMode`]): the coordinator *draws* committees at random from a published seed
//! ([`Registry::draw_committee`], the procedure in `draw.rs`), so that nothing a node claims about its speed
//! or latency lets it win roles beyond its measured capacity; the *cheapest* mode below is the
//! deterministic, cost-minimising search, kept as the draw's fallback and for comparison.
//!
//! # Algorithm (fast path)
//! 1. Base candidates: from the head of each speed tier's index (eligible nodes in key order, see
//!    `registry.rs`), the first `base_candidates / tiers` (at least 2) nodes that are not excluded, fit at
//!    least one role's memory, and share a value of any collusion key with fewer than
//!    `per_domain_candidates` candidates already; then, if fewer than `2 * parties` of them fit a party,
//!    more party-fitting nodes from further down each tier (with a cap two higher). Taking each tier's
//!    head matters: a node's cost for a role is its key plus the role's busy seconds on it, and those
//!    differ by an order of magnitude between tiers, so the cheapest node for a heavy role may sit far
//!    from the head of a single key-ordered index.
//! 2. Seeds: the cheapest candidates (as a party) from up to `seeds` distinct regions.
//! 3. For each seed, the pool is the base plus the head of each tier within the seed's region (about
//!    `region_candidates` in all), filtered the same way. A greedy build adds parties one by one, each
//!    time the fitting, non-colliding candidate of least
//!    `cost + latency_weight * rounds * (growth of the largest party RTT)`, then the dealer and the
//!    verifier where they exist, each of least `cost + latency_weight * (largest RTT to a party)`. `cost`
//!    is the candidate's index key after the reservation (its key plus `busy_weight * s * (1 + 1/R)`, the
//!    growth of its queued and virtual seconds for the role's busy seconds `s`) plus a jitter below
//!    `tie_jitter_s` from a keyed hash of the seed. `busy_weight` trades speed for spread: at 1 a role
//!    goes to the node where it finishes soonest in virtual time; lower values favour the least-loaded
//!    node even if slower.
//! 4. The committee of least total cost wins.
//!
//! The fast path costs O(tiers * scan + seeds * pool * committee) with small constants, independent of
//! the registry's size.
//!
//! # Exhaustive path
//! When the fast path finds no committee (tight memory, many exclusions, few domains), every eligible
//! node is considered. First the necessary counts, in this order: enough eligible nodes, enough with the
//! free memory of each role, enough distinct values of each collusion key among them; the first one unmet
//! is the [`Unplaceable`] reason. Otherwise, with one collusion key, the cheapest node per (domain, role)
//! feeds a greedy build and, if that fails, a bipartite matching of roles to domains, which is exact: a
//! committee exists iff one is found. With several keys, greedy builds from several seeds over every
//! fitting node, then a depth-first search (exact within [`BACKTRACK_BUDGET`] steps). A failed search is
//! reported as "no non-colliding assignment".
//!
//! # Determinism
//! The result depends only on the registry's state, the request and its seed: iteration is over ordered
//! structures (tiers in their canonical speed order), and ties are broken by (cost, node id).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use sha2::{Digest, Sha256};

use crate::committee::{Committee, Placement};
use crate::demand::{JobDemand, Role};
use crate::draw::{
    draw, Candidate, DrawFailure, DrawParams, DrawShape, EligibleSet, Pick, Pool as DrawPool,
    WeightIndex,
};
use crate::registry::{IndexKey, Registry, RegistryError, SelectionMode};
use crate::types::{keyed_hash, DomainKey, NodeId};

/// A role without its party index, for reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleKind {
    /// An execution party.
    Party,
    /// The dealer.
    Dealer,
    /// The verifier.
    Verifier,
}

impl std::fmt::Display for RoleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleKind::Party => "party",
            RoleKind::Dealer => "dealer",
            RoleKind::Verifier => "verifier",
        })
    }
}

/// Why a job cannot be placed now.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Unplaceable {
    /// MPC needs at least two execution parties.
    #[error("a job needs at least 2 execution parties, got {parties}")]
    TooFewParties {
        /// The parties asked for.
        parties: u8,
    },
    /// Fewer eligible (active, trusted, not excluded) nodes than committee members.
    #[error("not enough eligible nodes: {needed} needed, {eligible} eligible")]
    NotEnoughEligibleNodes {
        /// Committee size.
        needed: usize,
        /// Eligible nodes not excluded.
        eligible: usize,
    },
    /// Too few eligible nodes have the free memory a role needs.
    #[error("insufficient memory: {required} {role} node(s) with {needed_bytes} bytes free needed, {fitting} found")]
    InsufficientMemory {
        /// The role.
        role: RoleKind,
        /// Bytes per node.
        needed_bytes: u64,
        /// Nodes needed for that role.
        required: usize,
        /// Eligible nodes with that much free.
        fitting: usize,
    },
    /// Too few distinct values of a collusion key among the nodes that fit.
    #[error("not enough distinct {key} domains: {needed} needed, {available} available")]
    NotEnoughCollusionDomains {
        /// The key.
        key: DomainKey,
        /// Distinct values needed.
        needed: usize,
        /// Distinct values among fitting eligible nodes.
        available: usize,
    },
    /// Enough nodes and domains, but no assignment of roles avoids a shared domain (roles' memory needs and
    /// several collusion keys together).
    #[error("no committee of {needed} members avoids shared collusion domains")]
    NoNonCollidingAssignment {
        /// Committee size.
        needed: usize,
    },
}

/// What to place.
#[derive(Clone, Copy, Debug)]
pub struct SelectRequest<'a> {
    /// The committee's needs.
    pub demand: &'a JobDemand,
    /// Breaks ties and diversifies between equally good committees; same state + same seed = same result.
    pub seed: u64,
    /// Nodes that must not be chosen (e.g. those blamed for an earlier attempt).
    pub exclude: &'a [NodeId],
}

/// A stage of a pipeline could not be placed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("stage {stage}: {reason}")]
pub struct StageUnplaceable {
    /// The stage's index.
    pub stage: usize,
    /// Why.
    pub reason: Unplaceable,
}

/// Steps the exhaustive search of several-key selection may take before giving up.
pub const BACKTRACK_BUDGET: usize = 200_000;

const PARTY: usize = 0;
const DEALER: usize = 1;
const VERIFIER: usize = 2;

/// One candidate with everything the greedy build needs, copied out of the registry.
#[derive(Clone, Copy, Debug)]
struct Cand {
    idx: u32,
    region: u32,
    dom: [u32; 3],
    /// Bit r set iff the node's free memory fits role kind r.
    fits: u8,
    /// `cost(r)` for role kind r (see the module doc).
    cost: [f64; 3],
}

impl Cand {
    #[inline]
    fn fits(&self, r: usize) -> bool {
        self.fits & (1 << r) != 0
    }
}

/// Counts of `u32` values: open addressing with linear probing in a table that doubles when half full.
#[derive(Clone, Default)]
struct Counts {
    slots: Vec<(u32, u32)>,
    len: usize,
}

impl Counts {
    const EMPTY: u32 = u32::MAX;

    #[inline]
    fn home(x: u32, mask: usize) -> usize {
        (x.wrapping_mul(0x9E37_79B9) as usize >> 7) & mask
    }

    /// How many times `x` was added.
    #[inline]
    fn get(&self, x: u32) -> u32 {
        if self.slots.is_empty() {
            return 0;
        }
        let mask = self.slots.len() - 1;
        let mut i = Self::home(x, mask);
        loop {
            let (v, c) = self.slots[i];
            if v == x {
                return c;
            }
            if v == Self::EMPTY {
                return 0;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds one occurrence of `x` (`x != u32::MAX`).
    fn add(&mut self, x: u32) {
        if 2 * (self.len + 1) > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            self.slots = vec![(Self::EMPTY, 0); (old.len() * 2).max(64)];
            self.len = 0;
            for (v, c) in old {
                if v != Self::EMPTY {
                    self.bump(v, c);
                }
            }
        }
        self.bump(x, 1);
    }

    fn bump(&mut self, x: u32, by: u32) {
        let mask = self.slots.len() - 1;
        let mut i = Self::home(x, mask);
        loop {
            let (v, c) = self.slots[i];
            if v == x {
                self.slots[i].1 = c + by;
                return;
            }
            if v == Self::EMPTY {
                self.slots[i] = (x, by);
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

/// Candidates with exact counts of their ids and domain values, kept in step by [`Pool::push`].
#[derive(Clone, Default)]
struct Pool {
    cands: Vec<Cand>,
    ids: Counts,
    doms: [Counts; 3],
}

impl Pool {
    fn from_cands(ctx: &Ctx<'_>, cands: Vec<Cand>) -> Pool {
        let mut p = Pool::default();
        for c in cands {
            p.push(ctx, c);
        }
        p
    }

    fn push(&mut self, ctx: &Ctx<'_>, c: Cand) {
        self.ids.add(c.idx);
        for &k in ctx.keys {
            self.doms[k].add(c.dom[k]);
        }
        self.cands.push(c);
    }
}

/// Per-request constants.
struct Ctx<'a> {
    demand: &'a JobDemand,
    /// The role kinds after the parties, in order: `DEALER` if the demand has a dealer, then `VERIFIER` if
    /// it has a verifier.
    aux: Vec<usize>,
    seed: u64,
    exclude: Vec<u32>,
    keys: &'a [usize],
    k0: usize,
}

impl Ctx<'_> {
    #[inline]
    fn excluded(&self, i: u32) -> bool {
        if self.exclude.len() <= 8 {
            self.exclude.contains(&i)
        } else {
            self.exclude.binary_search(&i).is_ok()
        }
    }

    #[inline]
    fn collide(&self, a: &Cand, b: &Cand) -> bool {
        self.keys.iter().any(|&k| a.dom[k] == b.dom[k])
    }
}

impl Registry {
    /// The role-fit mask of node `i` for the request (0 if excluded or fitting nothing).
    #[inline]
    fn fit_mask(&self, ctx: &Ctx<'_>, i: u32) -> u8 {
        let free = self.hot[i as usize].free_memory;
        let d = ctx.demand;
        // An absent role fits nowhere, so that no node enters the pool for it alone.
        let fits_role =
            |r: Option<crate::demand::RoleDemand>| r.is_some_and(|r| free >= r.memory_bytes);
        let fits = u8::from(free >= d.party.memory_bytes)
            | (u8::from(fits_role(d.dealer)) << 1)
            | (u8::from(fits_role(d.verifier)) << 2);
        if fits == 0 || ctx.excluded(i) {
            0
        } else {
            fits
        }
    }

    /// The candidate for the node at `key`, whose fit mask is `fits` (non-zero).
    #[inline]
    fn make_candidate(&self, ctx: &Ctx<'_>, key: &IndexKey, fits: u8) -> Cand {
        let i = key.2;
        let n = &self.hot[i as usize];
        let d = ctx.demand;
        let k = f64::from_bits(key.0);
        let grow = (1.0 + 1.0 / n.reputation.max(crate::reputation::MIN_REPUTATION_VALUE))
            * self.config.selection.busy_weight;
        let jitter = self.config.selection.tie_jitter_s
            * (keyed_hash(ctx.seed, u64::from(i)) >> 11) as f64
            / (1u64 << 53) as f64;
        let s = |r: &crate::demand::RoleDemand| {
            (r.ops as f64 * n.inv_rate + r.bytes as f64 * n.inv_bw) * grow
        };
        let base = k + jitter;
        Cand {
            idx: i,
            region: n.domains[DomainKey::Region.slot()],
            dom: n.domains,
            fits,
            cost: [
                base + s(&d.party),
                base + s(d.role(Role::Dealer)),
                base + s(d.role(Role::Verifier)),
            ],
        }
    }

    /// The candidate for the node at `key`, or `None` if it is excluded or fits no role.
    #[inline]
    fn candidate(&self, ctx: &Ctx<'_>, key: &IndexKey) -> Option<Cand> {
        let fits = self.fit_mask(ctx, key.2);
        (fits != 0).then(|| self.make_candidate(ctx, key, fits))
    }

    /// Appends candidates from `iter` to `out` (skipping those already there, excluded, fitting nothing, or
    /// over the per-domain cap under any collusion key) until `want` were added of which at least `want_parties` fit a party, scanning
    /// at most `limit` entries; once `want` are added, only party-fitting ones are taken. Returns true if
    /// `iter` ended.
    #[allow(clippy::too_many_arguments)]
    fn collect<'k>(
        &self,
        ctx: &Ctx<'_>,
        iter: impl Iterator<Item = &'k IndexKey>,
        want: usize,
        want_parties: usize,
        limit: usize,
        cap: usize,
        out: &mut Pool,
    ) -> bool {
        let mut added = 0;
        let mut parties = 0;
        for (scanned, key) in iter.enumerate() {
            if (added >= want && parties >= want_parties) || scanned >= limit {
                return false;
            }
            let fits = self.fit_mask(ctx, key.2);
            let fits_party = fits & 1 != 0;
            if fits == 0 || (added >= want && !fits_party) {
                continue;
            }
            let dom = self.hot[key.2 as usize].domains;
            if out.ids.get(key.2) > 0
                || ctx
                    .keys
                    .iter()
                    .any(|&k| out.doms[k].get(dom[k]) as usize >= cap)
            {
                continue;
            }
            parties += usize::from(fits_party);
            out.push(ctx, self.make_candidate(ctx, key, fits));
            added += 1;
        }
        true
    }

    /// RTT in seconds between two candidates: measured, else their regions' estimate.
    #[inline]
    fn rtt_s(&self, a: &Cand, b: &Cand) -> f64 {
        let us = if a.idx == b.idx {
            0
        } else {
            match self.rtt.measured(a.idx, b.idx) {
                Some(m) => m,
                None => self.regions.estimate(a.region as usize, b.region as usize),
            }
        };
        f64::from(us) * 1e-6
    }

    /// Greedy build from `pool[seed]` (see the module doc). Returns the total cost and the members as pool
    /// indices: parties, then the dealer and the verifier where they exist.
    fn build(
        &self,
        ctx: &Ctx<'_>,
        pool: &[Cand],
        seed: usize,
        scratch: &mut Vec<f64>,
    ) -> Option<(f64, Vec<usize>)> {
        let d = ctx.demand;
        let parties = d.parties as usize;
        let lw = self.config.selection.latency_weight;
        let rounds = f64::from(d.rounds.max(1));
        let s = &pool[seed];
        if !s.fits(PARTY) {
            return None;
        }
        let mut chosen = Vec::with_capacity(parties + 2);
        chosen.push(seed);
        scratch.clear();
        scratch.extend(pool.iter().map(|c| self.rtt_s(s, c)));
        let mut total = s.cost[PARTY];
        let mut exec_max = 0.0f64;
        let free = |chosen: &[usize], c: &Cand| {
            chosen
                .iter()
                .all(|&m| !ctx.collide(&pool[m], c) && pool[m].idx != c.idx)
        };
        for _ in 1..parties {
            let mut best: Option<(f64, usize)> = None;
            for (j, c) in pool.iter().enumerate() {
                if !c.fits(PARTY) || !free(&chosen, c) {
                    continue;
                }
                let v = c.cost[PARTY] + lw * rounds * (scratch[j] - exec_max).max(0.0);
                if best.is_none_or(|(bv, bj)| v < bv || (v == bv && c.idx < pool[bj].idx)) {
                    best = Some((v, j));
                }
            }
            let (v, j) = best?;
            total += v;
            exec_max = exec_max.max(scratch[j]);
            chosen.push(j);
            let new = pool[j];
            for (x, c) in pool.iter().enumerate() {
                let r = self.rtt_s(&new, c);
                if r > scratch[x] {
                    scratch[x] = r;
                }
            }
        }
        for &role in &ctx.aux {
            let mut best: Option<(f64, usize)> = None;
            for (j, c) in pool.iter().enumerate() {
                if !c.fits(role) || !free(&chosen, c) {
                    continue;
                }
                let v = c.cost[role] + lw * scratch[j];
                if best.is_none_or(|(bv, bj)| v < bv || (v == bv && c.idx < pool[bj].idx)) {
                    best = Some((v, j));
                }
            }
            let (v, j) = best?;
            total += v;
            chosen.push(j);
        }
        Some((total, chosen))
    }

    /// The committee of `chosen` (pool indices: the parties, then one per role of `ctx.aux`, in order).
    fn committee_of(ctx: &Ctx<'_>, pool: &[Cand], chosen: &[usize]) -> Committee {
        let parties = ctx.demand.parties as usize;
        let node = |role: usize| {
            ctx.aux
                .iter()
                .position(|&r| r == role)
                .and_then(|k| chosen.get(parties + k))
                .map(|&j| NodeId(pool[j].idx))
        };
        Committee {
            parties: chosen[..parties]
                .iter()
                .map(|&j| NodeId(pool[j].idx))
                .collect(),
            dealer: node(DEALER),
            verifier: node(VERIFIER),
        }
    }

    /// Best committee over seeds taken from `seed_pool`; each seed's pool is `base` plus its region's head.
    fn best_over_seeds(
        &self,
        ctx: &Ctx<'_>,
        base: &Pool,
        seeds: usize,
        region_heads: bool,
    ) -> Option<Committee> {
        let t = &self.config.selection;
        let mut seed_regions: Vec<u32> = Vec::with_capacity(seeds);
        let mut best: Option<(f64, Committee)> = None;
        let mut scratch = Vec::with_capacity(base.cands.len() + 2 * t.region_candidates);
        while seed_regions.len() < seeds {
            // The cheapest party-fitting candidate of a region not seeded yet (ties: lower id).
            let next = base
                .cands
                .iter()
                .enumerate()
                .filter(|(_, c)| c.fits(PARTY) && !seed_regions.contains(&c.region))
                .min_by(|(_, a), (_, b)| {
                    a.cost[PARTY]
                        .total_cmp(&b.cost[PARTY])
                        .then(a.idx.cmp(&b.idx))
                });
            let Some((j, &seed)) = next else { break };
            seed_regions.push(seed.region);
            // With region as a collusion key the seed's region can give no other member.
            let region_is_key = ctx.keys.contains(&DomainKey::Region.slot());
            let cells = self
                .cells
                .get(seed.region as usize)
                .filter(|_| region_heads && !region_is_key && t.region_candidates > 0);
            let extended;
            let pool: &[Cand] = match cells {
                Some(cells) => {
                    let mut pool = base.clone();
                    let cells: Vec<_> = self
                        .tier_order()
                        .iter()
                        .filter_map(|&k| cells.get(k))
                        .filter(|c| !c.is_empty())
                        .collect();
                    let want = t.region_candidates.div_ceil(cells.len().max(1)).max(2);
                    let cap = t.per_domain_candidates + 1;
                    for cell in cells {
                        self.collect(ctx, cell.iter(), want, 0, t.scan_limit, cap, &mut pool);
                    }
                    extended = pool;
                    &extended.cands
                }
                None => &base.cands,
            };
            if let Some((cost, chosen)) = self.build(ctx, pool, j, &mut scratch) {
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, Self::committee_of(ctx, pool, &chosen)));
                }
            }
        }
        best.map(|(_, c)| c)
    }

    /// The fast path (see the module doc) with candidate counts and per-domain caps scaled by `widen`.
    fn select_fast(&self, ctx: &Ctx<'_>, widen: usize) -> Option<Committee> {
        let d = ctx.demand;
        let t = &self.config.selection;
        let tier_sets: Vec<_> = self
            .tier_order()
            .iter()
            .map(|&k| &self.by_tier[k])
            .filter(|c| !c.is_empty())
            .collect();
        let tiers = tier_sets.len().max(1);
        let want = (t.base_candidates.max(2 * d.committee_size()) * widen)
            .div_ceil(tiers)
            .max(2);
        let mut base = Pool::default();
        for tier in &tier_sets {
            self.collect(
                ctx,
                tier.iter(),
                want,
                0,
                t.scan_limit,
                t.per_domain_candidates * widen,
                &mut base,
            );
        }
        // Top up with party-fitting nodes (a large model's parties may fit few nodes), allowing two more
        // per domain value than the base so that full domains do not keep them out.
        let want_parties = 2 * d.parties as usize * widen;
        let limit = (t.scan_limit / tiers).max(1);
        for tier in &tier_sets {
            let have = base.cands.iter().filter(|c| c.fits(PARTY)).count();
            if have >= want_parties {
                break;
            }
            let cap = t.per_domain_candidates * widen + 2;
            self.collect(
                ctx,
                tier.iter(),
                0,
                want_parties - have,
                limit,
                cap,
                &mut base,
            );
        }
        self.best_over_seeds(ctx, &base, t.seeds, true)
    }

    /// Picks a committee for `req` without changing the registry (see the module doc).
    pub fn select(&self, req: &SelectRequest<'_>) -> Result<Committee, Unplaceable> {
        let d = req.demand;
        if d.parties < 2 {
            return Err(Unplaceable::TooFewParties { parties: d.parties });
        }
        let mut exclude: Vec<u32> = req.exclude.iter().map(|n| n.0).collect();
        exclude.sort_unstable();
        exclude.dedup();
        let ctx = Ctx {
            demand: d,
            aux: d
                .dealer
                .map(|_| DEALER)
                .into_iter()
                .chain(d.verifier.map(|_| VERIFIER))
                .collect(),
            seed: req.seed,
            exclude,
            keys: &self.key_slots,
            k0: self.key_slots[0],
        };
        // The fast path, then the same with a pool four times wider, then the exhaustive path.
        for widen in [1, 4] {
            if let Some(c) = self.select_fast(&ctx, widen) {
                return Ok(c);
            }
        }
        self.select_exhaustive(&ctx)
    }

    /// The exhaustive path (see the module doc).
    fn select_exhaustive(&self, ctx: &Ctx<'_>) -> Result<Committee, Unplaceable> {
        let d = ctx.demand;
        let parties = d.parties as usize;
        let mut all: Vec<Cand> = Vec::new();
        for key in self.tier_order().iter().flat_map(|&k| &self.by_tier[k]) {
            if let Some(c) = self.candidate(ctx, key) {
                all.push(c);
            }
        }
        // Counting first: cheap, and when it finds a reason no search can succeed.
        if let Some(reason) = self.necessary(ctx, &all) {
            return Err(reason);
        }
        let none = Unplaceable::NoNonCollidingAssignment {
            needed: d.committee_size(),
        };
        if ctx.keys.len() == 1 {
            // Cheapest node per (domain, role kind): enough, since a domain gives at most one member.
            let mut per_domain: HashMap<u32, [Option<usize>; 3]> = HashMap::new();
            for (j, c) in all.iter().enumerate() {
                let slot = per_domain.entry(c.dom[ctx.k0]).or_insert([None; 3]);
                for r in [PARTY, DEALER, VERIFIER] {
                    if c.fits(r) && slot[r].is_none_or(|o| c.cost[r] < all[o].cost[r]) {
                        slot[r] = Some(j);
                    }
                }
            }
            let mut keep: Vec<usize> = per_domain
                .values()
                .flat_map(|s| s.iter().flatten().copied())
                .collect();
            keep.sort_unstable();
            keep.dedup();
            let pool: Vec<Cand> = keep.iter().map(|&j| all[j]).collect();
            let seeded = Pool::from_cands(ctx, pool.clone());
            if let Some(c) = self.best_over_seeds(ctx, &seeded, 8, false) {
                return Ok(c);
            }
            if let Some(c) = self.matching(ctx, &pool, parties) {
                return Ok(c);
            }
        } else {
            let seeded = Pool::from_cands(ctx, all.clone());
            if let Some(c) = self.best_over_seeds(ctx, &seeded, 3, false) {
                return Ok(c);
            }
            if let Some(c) = Self::backtrack(ctx, &all, parties) {
                return Ok(c);
            }
        }
        Err(none)
    }

    /// Exact feasibility for one collusion key: match roles to domains (Kuhn's augmenting paths, domains in
    /// order of their best cost), then take each matched domain's best node for its role.
    fn matching(&self, ctx: &Ctx<'_>, pool: &[Cand], parties: usize) -> Option<Committee> {
        let k0 = ctx.k0;
        let mut domains: Vec<u32> = Vec::new();
        let mut best_of: HashMap<u32, [Option<usize>; 3]> = HashMap::new();
        let mut order: Vec<usize> = (0..pool.len()).collect();
        order.sort_by(|&a, &b| {
            pool[a].cost[PARTY]
                .total_cmp(&pool[b].cost[PARTY])
                .then(pool[a].idx.cmp(&pool[b].idx))
        });
        for &j in &order {
            let c = &pool[j];
            let slot = best_of.entry(c.dom[k0]).or_insert_with(|| {
                domains.push(c.dom[k0]);
                [None; 3]
            });
            for r in [PARTY, DEALER, VERIFIER] {
                if c.fits(r) && slot[r].is_none_or(|o| c.cost[r] < pool[o].cost[r]) {
                    slot[r] = Some(j);
                }
            }
        }
        let roles: Vec<usize> = (0..parties)
            .map(|_| PARTY)
            .chain(ctx.aux.iter().copied())
            .collect();
        let adj: Vec<Vec<usize>> = roles
            .iter()
            .map(|&r| {
                (0..domains.len())
                    .filter(|&di| best_of[&domains[di]][r].is_some())
                    .collect()
            })
            .collect();
        let mut owner: Vec<Option<usize>> = vec![None; domains.len()];
        fn augment(
            r: usize,
            adj: &[Vec<usize>],
            seen: &mut [bool],
            owner: &mut [Option<usize>],
        ) -> bool {
            for &di in &adj[r] {
                if seen[di] {
                    continue;
                }
                seen[di] = true;
                if owner[di].is_none_or(|o| augment(o, adj, seen, owner)) {
                    owner[di] = Some(r);
                    return true;
                }
            }
            false
        }
        for r in 0..roles.len() {
            let mut seen = vec![false; domains.len()];
            if !augment(r, &adj, &mut seen, &mut owner) {
                return None;
            }
        }
        let mut chosen = vec![0usize; roles.len()];
        for (di, o) in owner.iter().enumerate() {
            if let Some(r) = *o {
                chosen[r] = best_of[&domains[di]][roles[r]]?;
            }
        }
        Some(Self::committee_of(ctx, pool, &chosen))
    }

    /// Depth-first search for any non-colliding assignment when several keys make greedy builds incomplete.
    /// Exact when it finishes within [`BACKTRACK_BUDGET`] steps (always for small registries); candidates are
    /// tried in cost order, so the first committee found is a cheap one.
    fn backtrack(ctx: &Ctx<'_>, pool: &[Cand], parties: usize) -> Option<Committee> {
        let roles: Vec<usize> = (0..parties)
            .map(|_| PARTY)
            .chain(ctx.aux.iter().copied())
            .collect();
        let mut sorted: Vec<Cand> = pool.to_vec();
        sorted.sort_by(|a, b| {
            a.cost[PARTY]
                .total_cmp(&b.cost[PARTY])
                .then(a.idx.cmp(&b.idx))
        });
        fn go(
            ctx: &Ctx<'_>,
            sorted: &[Cand],
            roles: &[usize],
            parties: usize,
            chosen: &mut Vec<usize>,
            budget: &mut usize,
        ) -> bool {
            let depth = chosen.len();
            if depth == roles.len() {
                return true;
            }
            // Parties are interchangeable: take them in increasing order to skip permutations.
            let start = if depth > 0 && depth < parties {
                chosen[depth - 1] + 1
            } else {
                0
            };
            for j in start..sorted.len() {
                if *budget == 0 {
                    return false;
                }
                *budget -= 1;
                let c = &sorted[j];
                if !c.fits(roles[depth]) || chosen.iter().any(|&m| ctx.collide(&sorted[m], c)) {
                    continue;
                }
                chosen.push(j);
                if go(ctx, sorted, roles, parties, chosen, budget) {
                    return true;
                }
                chosen.pop();
            }
            false
        }
        let mut chosen = Vec::with_capacity(roles.len());
        let mut budget = BACKTRACK_BUDGET;
        go(ctx, &sorted, &roles, parties, &mut chosen, &mut budget)
            .then(|| Self::committee_of(ctx, &sorted, &chosen))
    }

    /// The first unmet necessary condition (see the module doc), over every eligible node; `None` if the
    /// counts alone do not rule a committee out.
    fn necessary(&self, ctx: &Ctx<'_>, fitting: &[Cand]) -> Option<Unplaceable> {
        let d = ctx.demand;
        let size = d.committee_size();
        let parties = d.parties as usize;
        let excluded_eligible = ctx
            .exclude
            .iter()
            .filter(|&&i| self.nodes.get(i as usize).is_some_and(|n| n.is_eligible()))
            .count();
        let eligible = self.eligible - excluded_eligible;
        if eligible < size {
            return Some(Unplaceable::NotEnoughEligibleNodes {
                needed: size,
                eligible,
            });
        }
        let count = |r: usize| fitting.iter().filter(|c| c.fits(r)).count();
        // The roles that exist, with their memory and how many nodes each needs.
        let roles: Vec<(RoleKind, usize, u64, usize)> = [
            Some((RoleKind::Party, PARTY, d.party.memory_bytes, parties)),
            d.dealer
                .map(|r| (RoleKind::Dealer, DEALER, r.memory_bytes, 1)),
            d.verifier
                .map(|r| (RoleKind::Verifier, VERIFIER, r.memory_bytes, 1)),
        ]
        .into_iter()
        .flatten()
        .collect();
        for &(role, r, needed_bytes, required) in &roles {
            let fitting = count(r);
            if fitting < required {
                return Some(Unplaceable::InsufficientMemory {
                    role,
                    needed_bytes,
                    required,
                    fitting,
                });
            }
        }
        if fitting.len() < size {
            // Every role fits somewhere, but too few nodes fit any role to fill the committee.
            let (role, needed_bytes) = roles
                .iter()
                .map(|&(role, _, m, _)| (role, m))
                .min_by_key(|&(_, m)| m)
                .unwrap_or((RoleKind::Party, d.party.memory_bytes));
            return Some(Unplaceable::InsufficientMemory {
                role,
                needed_bytes,
                required: size,
                fitting: fitting.len(),
            });
        }
        for &key in &self.config.collusion_keys {
            let k = key.slot();
            let mut all: Vec<u32> = fitting.iter().map(|c| c.dom[k]).collect();
            all.sort_unstable();
            all.dedup();
            if all.len() < size {
                return Some(Unplaceable::NotEnoughCollusionDomains {
                    key,
                    needed: size,
                    available: all.len(),
                });
            }
            let mut party: Vec<u32> = fitting
                .iter()
                .filter(|c| c.fits(PARTY))
                .map(|c| c.dom[k])
                .collect();
            party.sort_unstable();
            party.dedup();
            if party.len() < parties {
                return Some(Unplaceable::NotEnoughCollusionDomains {
                    key,
                    needed: parties,
                    available: party.len(),
                });
            }
        }
        None
    }

    /// The committee for one stage under the configured [`SelectionMode`]: the draw from `seed` (with the
    /// cheapest committee as the fallback when no draw round finds one, see [`Registry::draw_committee`]), or
    /// the cheapest committee.
    fn choose(
        &mut self,
        demand: &JobDemand,
        seed: &[u8; 32],
        exclude: &[NodeId],
    ) -> Result<(Committee, Option<DrawRecord>), Unplaceable> {
        match self.config.selection.mode {
            SelectionMode::Cheapest => {
                let req = SelectRequest {
                    demand,
                    seed: u64::from_le_bytes(seed[..8].try_into().unwrap_or_default()),
                    exclude,
                };
                self.select(&req).map(|c| (c, None))
            }
            SelectionMode::Draw => self
                .draw_committee(demand, seed, exclude, false)
                .map(|(c, r)| (c, Some(r))),
        }
    }

    /// Draws a committee for `demand` from `seed` (see `draw.rs`), after bringing the draw weights' base up
    /// to date. Up to [`DRAW_ROUNDS`] rounds are tried, round `r > 0` with the seed `SHA-256(seed || r)`;
    /// if none completes (a random order can dead-end under several collusion keys or tight memory), the
    /// cheapest committee is taken and the record says so (`cheapest_fallback`), or the reason none exists
    /// is returned. With `explain`, the record carries the eligible set's hash (O(eligible) to compute).
    pub fn draw_committee(
        &mut self,
        demand: &JobDemand,
        seed: &[u8; 32],
        exclude: &[NodeId],
        explain: bool,
    ) -> Result<(Committee, DrawRecord), Unplaceable> {
        self.draw_committee_with_set(demand, seed, exclude, explain)
            .map(|(c, r, _)| (c, r))
    }

    /// [`Registry::draw_committee`] with `explain`, also returning the eligible set drawn from (what an
    /// auditor needs to recompute the draw, see `explain.rs`).
    pub fn draw_committee_explained(
        &mut self,
        demand: &JobDemand,
        seed: &[u8; 32],
        exclude: &[NodeId],
    ) -> Result<(Committee, DrawRecord, EligibleSet), Unplaceable> {
        let (c, r, set) = self.draw_committee_with_set(demand, seed, exclude, true)?;
        let set = set.unwrap_or_else(|| self.eligible_set());
        Ok((c, r, set))
    }

    fn draw_committee_with_set(
        &mut self,
        demand: &JobDemand,
        seed: &[u8; 32],
        exclude: &[NodeId],
        explain: bool,
    ) -> Result<(Committee, DrawRecord, Option<EligibleSet>), Unplaceable> {
        if demand.parties < 2 {
            return Err(Unplaceable::TooFewParties {
                parties: demand.parties,
            });
        }
        let mut excluded: Vec<NodeId> = exclude.to_vec();
        excluded.sort_unstable();
        excluded.dedup();
        let excluded_eligible = excluded
            .iter()
            .filter(|n| self.nodes.get(n.index()).is_some_and(|e| e.is_eligible()))
            .count();
        let eligible = self.eligible.saturating_sub(excluded_eligible);
        if eligible < demand.committee_size() {
            return Err(Unplaceable::NotEnoughEligibleNodes {
                needed: demand.committee_size(),
                eligible,
            });
        }
        self.rebase_draw_weights();
        let params = self.config.selection.draw;
        let reference = self.draw_reference();
        let shape = shape_of(demand, &self.key_slots, exclude, reference);
        let set = explain.then(|| self.eligible_set());
        let mut record = DrawRecord {
            eligible_hash: set.as_ref().map(EligibleSet::hash),
            eligible: self.eligible as u32,
            total_weight: self.draw_trees[0].total(),
            seed: *seed,
            round: 0,
            params,
            reference,
            picks: Vec::new(),
            cheapest_fallback: false,
        };
        let index = RegistryIndex { reg: self };
        for round in 0..DRAW_ROUNDS {
            let s = round_seed(seed, round);
            let result = draw(&index, &shape, &s, &params);
            if let Err(DrawFailure::NoFittingNode { role }) = result {
                // No node has the free memory (or every one is excluded): no round or search can help.
                let (kind, needed_bytes, required) = match role {
                    Role::Party(_) => (RoleKind::Party, shape.memory[0], demand.parties as usize),
                    Role::Dealer => (RoleKind::Dealer, shape.memory[1], 1),
                    Role::Verifier => (RoleKind::Verifier, shape.memory[2], 1),
                };
                return Err(Unplaceable::InsufficientMemory {
                    role: kind,
                    needed_bytes,
                    required,
                    fitting: 0,
                });
            }
            if let Ok(picks) = result {
                let of = |role: Role| picks.iter().find(|p| p.role == role).map(|p| p.node);
                let committee = Committee {
                    parties: picks
                        .iter()
                        .filter(|p| matches!(p.role, Role::Party(_)))
                        .map(|p| p.node)
                        .collect(),
                    dealer: of(Role::Dealer),
                    verifier: of(Role::Verifier),
                };
                record.round = round;
                record.picks = picks;
                return Ok((committee, record, set));
            }
        }
        let req = SelectRequest {
            demand,
            seed: u64::from_le_bytes(seed[..8].try_into().unwrap_or_default()),
            exclude,
        };
        let committee = self.select(&req)?;
        record.cheapest_fallback = true;
        record.round = DRAW_ROUNDS;
        Ok((committee, record, set))
    }

    /// The eligible set the draw reads now, as it would be published (see `draw.rs`).
    pub fn eligible_set(&self) -> EligibleSet {
        let mut cands = Vec::with_capacity(self.eligible);
        RegistryIndex { reg: self }.for_each(&mut |c| cands.push(*c));
        // Node-id order with distinct ids and sums below the tree's total: cannot fail.
        let params = self.config.selection.draw;
        EligibleSet::new(cands, self.weight_reference, &params).unwrap_or_else(|_| {
            EligibleSet::new(Vec::new(), self.weight_reference, &params)
                .expect("the empty set is ordered")
        })
    }

    /// Selects and reserves one committee per stage, in order (stages may share domains with each other,
    /// never within one committee). Stage `i` uses the seed `SHA-256(DRAW_SEED64_LABEL || seed || i)`. On
    /// failure, the stages already reserved are released and the failing stage is named.
    pub fn place_stages(
        &mut self,
        stages: &[JobDemand],
        seed: u64,
        exclude: &[NodeId],
    ) -> Result<Vec<Placement>, StageUnplaceable> {
        let seeds: Vec<[u8; 32]> = (0..stages.len())
            .map(|i| seed_from_u64(seed, i as u64))
            .collect();
        self.place_stages_seeded(stages, &seeds, exclude)
            .map(|v| v.into_iter().map(|(p, _)| p).collect())
    }

    /// Draws (whatever the configured mode) and reserves one committee per stage from `seeds[i]` (one per
    /// stage: the beacon's), returning with each placement its draw record and the eligible set it was drawn
    /// from (the stages before it already reserved). On failure, the stages already reserved are released
    /// and the failing stage is named.
    pub fn place_stages_explained(
        &mut self,
        stages: &[JobDemand],
        seeds: &[[u8; 32]],
        exclude: &[NodeId],
    ) -> Result<Vec<(Placement, DrawRecord, EligibleSet)>, StageUnplaceable> {
        let mut placed: Vec<(Placement, DrawRecord, EligibleSet)> =
            Vec::with_capacity(stages.len());
        for (stage, demand) in stages.iter().enumerate() {
            let seed = seeds
                .get(stage)
                .copied()
                .unwrap_or_else(|| round_seed(seeds.last().unwrap_or(&[0; 32]), stage as u32));
            let result = self
                .draw_committee_explained(demand, &seed, exclude)
                .and_then(|(committee, record, set)| {
                    let p = Placement {
                        committee,
                        demand: *demand,
                    };
                    self.reserve(&p)
                        .map(|()| (p, record, set))
                        .map_err(|e| reservation_failure(e, demand))
                });
            match result {
                Ok(p) => placed.push(p),
                Err(reason) => {
                    for (p, _, _) in &placed {
                        self.unreserve(p);
                    }
                    return Err(StageUnplaceable { stage, reason });
                }
            }
        }
        Ok(placed)
    }

    /// [`Registry::place_stages`] with one 32-byte seed per stage (from the beacon: see
    /// [`crate::beacon::draw_seed`]), returning each stage's draw record (`None` in
    /// [`SelectionMode::Cheapest`]). `seeds` shorter than `stages` reuse the last seed hashed with the stage.
    pub fn place_stages_seeded(
        &mut self,
        stages: &[JobDemand],
        seeds: &[[u8; 32]],
        exclude: &[NodeId],
    ) -> Result<Vec<(Placement, Option<DrawRecord>)>, StageUnplaceable> {
        let mut placed: Vec<(Placement, Option<DrawRecord>)> = Vec::with_capacity(stages.len());
        for (stage, demand) in stages.iter().enumerate() {
            let seed = match seeds.get(stage) {
                Some(s) => *s,
                None => round_seed(seeds.last().unwrap_or(&[0; 32]), stage as u32),
            };
            let result = self
                .choose(demand, &seed, exclude)
                .and_then(|(committee, record)| {
                    let p = Placement {
                        committee,
                        demand: *demand,
                    };
                    self.reserve(&p)
                        .map(|()| (p, record))
                        .map_err(|e| reservation_failure(e, demand))
                });
            match result {
                Ok(p) => placed.push(p),
                Err(reason) => {
                    for (p, _) in &placed {
                        self.unreserve(p);
                    }
                    return Err(StageUnplaceable { stage, reason });
                }
            }
        }
        Ok(placed)
    }
}

/// Why a committee just chosen could not be reserved, as a reason a job cannot be placed.
fn reservation_failure(e: RegistryError, demand: &JobDemand) -> Unplaceable {
    match e {
        RegistryError::InsufficientMemory { needed, .. } => Unplaceable::InsufficientMemory {
            role: RoleKind::Party,
            needed_bytes: needed,
            required: demand.parties as usize,
            fitting: 0,
        },
        _ => Unplaceable::NoNonCollidingAssignment {
            needed: demand.committee_size(),
        },
    }
}

/// Draw rounds tried before the cheapest committee is taken (see [`Registry::draw_committee`]).
pub const DRAW_ROUNDS: u32 = 4;

/// Domain label of the 32-byte seeds [`Registry::place_stages`] derives from a 64-bit seed.
pub const DRAW_SEED64_LABEL: &[u8] = b"veil/draw/seed64/v1";

/// `SHA-256(DRAW_SEED64_LABEL || seed || stage)`, little-endian.
pub fn seed_from_u64(seed: u64, stage: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DRAW_SEED64_LABEL);
    h.update(seed.to_le_bytes());
    h.update(stage.to_le_bytes());
    h.finalize().into()
}

/// Round `r` of a draw: the seed itself for round 0, else `SHA-256(seed || r)` (r little-endian).
pub fn round_seed(seed: &[u8; 32], round: u32) -> [u8; 32] {
    if round == 0 {
        return *seed;
    }
    let mut h = Sha256::new();
    h.update(seed);
    h.update(round.to_le_bytes());
    h.finalize().into()
}

/// The explanation of one committee draw: what `veil job N --explain` prints and an auditor recomputes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawRecord {
    /// [`EligibleSet::hash`] of the set drawn from (when explained).
    pub eligible_hash: Option<[u8; 32]>,
    /// Eligible nodes.
    pub eligible: u32,
    /// Their total weight.
    pub total_weight: u64,
    /// The seed (round 0).
    pub seed: [u8; 32],
    /// The round that completed ([`DRAW_ROUNDS`] when the cheapest committee was taken).
    pub round: u32,
    /// The draw's knobs.
    pub params: DrawParams,
    /// The reference machine (ops per second, bytes per second) of the role acceptance.
    pub reference: (u64, u64),
    /// The picks, parties first (empty when the cheapest committee was taken).
    pub picks: Vec<Pick>,
    /// Whether no draw round completed and the cheapest committee was taken.
    pub cheapest_fallback: bool,
}

impl DrawRecord {
    /// Recomputes the draw from a published eligible set: checks that its hash is the record's, redraws
    /// with the record's seed, params and reference for the job's demand, collusion keys (as
    /// [`DomainKey::slot`]s) and exclusions, and returns the picks, which equal the record's iff the
    /// coordinator drew honestly.
    pub fn recompute(
        &self,
        eligible: &EligibleSet,
        demand: &JobDemand,
        keys: &[usize],
        exclude: &[NodeId],
    ) -> Result<Vec<Pick>, RecomputeError> {
        if self.eligible_hash != Some(eligible.hash()) {
            return Err(RecomputeError::EligibleSetMismatch);
        }
        let shape = shape_of(demand, keys, exclude, self.reference);
        draw(
            eligible,
            &shape,
            &round_seed(&self.seed, self.round),
            &self.params,
        )
        .map_err(RecomputeError::Draw)
    }
}

/// The draw's shape of a demand.
pub fn shape_of<'a>(
    demand: &JobDemand,
    keys: &'a [usize],
    exclude: &'a [NodeId],
    reference: (u64, u64),
) -> DrawShape<'a> {
    let work = |r: &crate::demand::RoleDemand| (r.ops, r.bytes);
    DrawShape {
        parties: demand.parties,
        dealer: demand.dealer.is_some(),
        verifier: demand.verifier.is_some(),
        memory: [
            demand.party.memory_bytes,
            demand.role(Role::Dealer).memory_bytes,
            demand.role(Role::Verifier).memory_bytes,
        ],
        work: [
            work(&demand.party),
            work(demand.role(Role::Dealer)),
            work(demand.role(Role::Verifier)),
        ],
        reference,
        keys,
        exclude,
    }
}

/// Why a draw could not be recomputed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RecomputeError {
    /// The published eligible set is not the one the record names.
    #[error("the published eligible set does not hash to the record's")]
    EligibleSetMismatch,
    /// The draw failed on it.
    #[error(transparent)]
    Draw(DrawFailure),
}

fn pool_slot(pool: DrawPool) -> usize {
    match pool {
        DrawPool::All => 0,
        DrawPool::Fast => 1,
    }
}

/// The registry's live index: its Fenwick trees of draw weights over node ids (every node; the fast ones).
struct RegistryIndex<'a> {
    reg: &'a Registry,
}

impl RegistryIndex<'_> {
    fn candidate(&self, i: usize) -> Candidate {
        let h = &self.reg.hot[i];
        Candidate {
            node: NodeId(i as u32),
            domains: h.domains,
            free_memory: h.free_memory,
            ops_per_s: h.ops_per_s,
            bandwidth: h.bandwidth,
            weight: self.reg.draw_trees[0].get(i),
        }
    }
}

impl WeightIndex for RegistryIndex<'_> {
    fn total(&self, pool: DrawPool) -> u64 {
        self.reg.draw_trees[pool_slot(pool)].total()
    }
    fn operator_total(&self, pool: DrawPool, operator: u32) -> u64 {
        self.reg.operator_weight[pool_slot(pool)]
            .get(operator as usize)
            .copied()
            .unwrap_or(0)
    }
    fn find(&self, pool: DrawPool, target: u64) -> Candidate {
        self.candidate(self.reg.draw_trees[pool_slot(pool)].find(target))
    }
    fn for_each(&self, f: &mut dyn FnMut(&Candidate)) {
        for i in 0..self.reg.nodes.len().min(self.reg.draw_trees[0].len()) {
            if self.reg.draw_trees[0].get(i) > 0 {
                f(&self.candidate(i));
            }
        }
    }
}
