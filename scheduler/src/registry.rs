//! The node registry: who the nodes are, whether they may be selected, how loaded they are, and the
//! score-ordered index that selection scans.
//!
//! # Load accounting
//! For a node `i` with reputation `R_i`, a reservation of demand `d` costs `s_i(d)` busy seconds
//! ([`Hardware::service_seconds`]). The registry keeps, per node:
//! - `queued_s`: busy seconds of the reservations still held (added by `reserve`, removed by `release`);
//! - `virtual_s`: the node's virtual time, busy seconds ever reserved, each divided by the node's reputation
//!   at the time (a node with reputation 0.5 ages twice as fast, so it receives about half the work);
//! - `mem_reserved`: memory of the reservations still held.
//!
//! The selection key of an eligible node is
//! `key = virtual_s + queued_s + load_weight_s * reported_load + queue_weight_s * unknown_queue`
//! (seconds; lower is better), where `unknown_queue` is the reported queue length minus the reservations the
//! registry holds on the node (jobs from elsewhere: ours are in `queued_s` already). Taking the node of least key again and again keeps every node's virtual time
//! within about one job of the others (fair share in proportion to capacity and reputation) while steering
//! away from nodes that are busy now. A node entering the index (trial passed, back from down) starts no
//! lower than the virtual time of the index's head, so that it does not swallow all new work.
//!
//! # Invariants
//! - A node is in the index iff it is eligible: trial passed, up, reported `Ready`, reputation at least
//!   `min_reputation`. Its stored index key equals the key computed from its current fields.
//! - `by_tier[t]` holds exactly the indexed nodes of speed tier `t` (`eligible` counts them all);
//!   `cells[r][t]` exactly those of region `r` and tier `t`. A node's tier is
//!   `(floor(log2(ops_per_s)), floor(log2(bandwidth)))`, interned: nodes of one tier serve any role in
//!   about the same time (within 2x), so the cheapest node for a role is near the head of its tier.
//! - `mem_reserved` and `queued_s` are sums over the reservations currently held (never negative).
//! - Node ids are dense: `nodes[i].id == NodeId(i)`.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::committee::Placement;
use crate::draw::{capacity_units, DrawParams, Fenwick};
use crate::reputation::{JobOutcome, Reputation, ReputationRule};
use crate::rtt::{RegionPair, RegionRtt, RttMap};
use crate::types::{
    is_public_key_hex, keyed_hash, DomainKey, Hardware, Heartbeat, Millis, NodeId,
    NodeRegistration, NodeState, ReportedStatus, MAX_OPS_PER_S,
};

/// The load factor of a node level with the reference (see [`Registry::draw_weight`]): `2^16`. A weight is
/// at most `LOAD_BOOST_MAX * 2^16 * 2^16` (capacity units) `= 2^36`, so the draw's 64-bit sums hold up to
/// `2^28` nodes.
pub const LOAD_ONE: u64 = 1 << 16;

/// The most a node behind the reference is favoured over one level with it (see
/// [`Registry::draw_weight`]).
pub const LOAD_BOOST_MAX: f64 = 16.0;

/// The exponent `k` of the draw's load factor (see [`Registry::draw_weight`]): a node whose busy seconds
/// are `x` times the reference's is `x^k` times less likely. 16: on `veil sim`'s world (before the 45 s
/// short-role floor and the catch-up boost), 8 left `max_over_mean_utilisation` at 2.2, 16 at 1.9 (12:
/// 2.0).
pub const LOAD_EXPONENT: i32 = 16;

/// The relative growth of the mean busy seconds that triggers a rebase of the draw weights (see
/// [`Registry::rebase_draw_weights`]).
pub const LOAD_REBASE_STEP: f64 = 0.05;

/// Tuning of committee selection (see `select.rs` and the README).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectionTuning {
    /// Seconds of virtual load that one second of estimated network latency is worth.
    pub latency_weight: f64,
    /// Weight of a role's busy seconds in a candidate's cost (see `select.rs`): 1 prefers the node that
    /// finishes soonest; lower spreads work more evenly at the cost of slower jobs.
    pub busy_weight: f64,
    /// Key penalty, in seconds, of a node reporting full CPU load.
    pub reported_load_weight_s: f64,
    /// Key penalty, in seconds, per job a node reports queued beyond the reservations the registry holds.
    pub reported_queue_weight_s: f64,
    /// Base candidates, taken in equal parts from the head of each speed tier's index.
    pub base_candidates: usize,
    /// Candidates taken from the head of each seed's region.
    pub region_candidates: usize,
    /// At most this many candidates per value of the first collusion key.
    pub per_domain_candidates: usize,
    /// Committees built (from distinct-region seeds) before keeping the cheapest.
    pub seeds: usize,
    /// Index entries scanned at most per candidate list before the exhaustive path takes over.
    pub scan_limit: usize,
    /// Largest seed-derived jitter added to a candidate's cost, in seconds (breaks ties, diversifies).
    pub tie_jitter_s: f64,
    /// How committees are chosen: drawn at random (the default) or the cheapest (the deterministic path).
    pub mode: SelectionMode,
    /// The draw's knobs (see `draw.rs`).
    pub draw: DrawParams,
    /// The offset `c` of the draw's load factor, busy seconds (see [`Registry::draw_weight`]): it keeps the
    /// factor near 1 while every node has done little. (Stored where the former `load_tau_s` was, so saved
    /// configurations still load.)
    pub load_offset_s: f64,
}

/// How [`Registry::place_stages`] chooses committees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SelectionMode {
    /// A weighted random draw from a seed (`draw.rs`): what the coordinator does.
    #[default]
    Draw,
    /// The cheapest committee by cost (`select.rs`): deterministic, latency- and load-optimising, and
    /// capturable by nodes that claim speed and low RTTs. Kept for comparison (`veil sim --selection`).
    Cheapest,
}

impl Default for SelectionTuning {
    fn default() -> Self {
        SelectionTuning {
            latency_weight: 1.0,
            busy_weight: 1.0,
            reported_load_weight_s: 1.0,
            reported_queue_weight_s: 0.25,
            base_candidates: 16,
            region_candidates: 12,
            per_domain_candidates: 2,
            seeds: 3,
            scan_limit: 1024,
            tie_jitter_s: 1e-3,
            mode: SelectionMode::Draw,
            draw: DrawParams::default(),
            load_offset_s: 1.0,
        }
    }
}

/// The registry's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Keys defining collusion domains; no two committee members share a value under any of them.
    pub collusion_keys: Vec<DomainKey>,
    /// A node whose last heartbeat is older than this is marked down by [`Registry::sweep`].
    pub heartbeat_timeout_ms: u64,
    /// The reputation rule.
    pub reputation: ReputationRule,
    /// Nodes below this reputation are not selected.
    pub min_reputation: f64,
    /// RTT estimate between two nodes of one region with no measurement, microseconds.
    pub intra_region_rtt_us: u32,
    /// RTT estimate between two regions with neither configuration nor measurement, microseconds.
    pub inter_region_rtt_us: u32,
    /// Selection tuning.
    pub selection: SelectionTuning,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            collusion_keys: vec![DomainKey::Operator],
            heartbeat_timeout_ms: 30_000,
            reputation: ReputationRule::default(),
            min_reputation: 0.2,
            intra_region_rtt_us: 2_000,
            inter_region_rtt_us: 80_000,
            selection: SelectionTuning::default(),
        }
    }
}

impl Config {
    /// Checks that the collusion keys are non-empty and distinct and the numbers are sane.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let keys = &self.collusion_keys;
        if keys.is_empty() {
            return Err(RegistryError::InvalidConfig(
                "at least one collusion key is required",
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(RegistryError::InvalidConfig(
                    "collusion keys must be distinct",
                ));
            }
        }
        if !(self.min_reputation >= 0.0 && self.min_reputation <= 1.0) {
            return Err(RegistryError::InvalidConfig(
                "min_reputation must be in [0, 1]",
            ));
        }
        let s = &self.selection;
        if s.base_candidates == 0
            || s.per_domain_candidates == 0
            || s.seeds == 0
            || s.scan_limit == 0
        {
            return Err(RegistryError::InvalidConfig(
                "selection sizes must be positive",
            ));
        }
        let finite_non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !(finite_non_negative(s.latency_weight)
            && finite_non_negative(s.busy_weight)
            && finite_non_negative(s.reported_load_weight_s)
            && finite_non_negative(s.reported_queue_weight_s)
            && finite_non_negative(s.tie_jitter_s)
            && s.load_offset_s.is_finite()
            && s.load_offset_s > 0.0)
        {
            return Err(RegistryError::InvalidConfig(
                "selection weights must be finite and non-negative",
            ));
        }
        if s.draw.region_boost == 0
            || s.draw.operator_cap_ppm == 0
            || s.draw.operator_cap_ppm > 1_000_000
            || s.draw.max_tries == 0
            || s.draw.max_slowdown == 0
        {
            return Err(RegistryError::InvalidConfig(
                "draw: region_boost >= 1, operator_cap_ppm in 1..=1e6, max_tries >= 1, max_slowdown >= 1",
            ));
        }
        Ok(())
    }
}

/// Errors of registry operations.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum RegistryError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The public key is not 64 hex digits.
    #[error("a public key is 64 hex digits, got {0:?}")]
    InvalidPublicKey(String),
    /// A registration field is empty or invalid.
    #[error("invalid registration: {0}")]
    InvalidRegistration(&'static str),
    /// A known key re-registered under another operator.
    #[error("node {node} is registered to operator {registered:?}, not {claimed:?}")]
    OperatorChanged {
        /// The node.
        node: NodeId,
        /// Its registered operator.
        registered: String,
        /// The operator it now claims.
        claimed: String,
    },
    /// No node has this id.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// A placement names one node twice.
    #[error("node {0} appears twice in one committee")]
    DuplicateMember(NodeId),
    /// A reservation does not fit a member's free memory.
    #[error("node {node} has {free} bytes free, {needed} needed")]
    InsufficientMemory {
        /// The node.
        node: NodeId,
        /// Its free memory.
        free: u64,
        /// What the reservation needs.
        needed: u64,
    },
    /// Persisted records are inconsistent.
    #[error("corrupt registry records: {0}")]
    CorruptRecords(String),
}

/// Where a node's trial job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trial {
    /// Not passed yet.
    Pending,
    /// Passed: the node may be selected.
    Passed,
    /// Failed: the node is never selected.
    Failed,
}

/// What a trial measured beyond the compute rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// Bandwidth, bytes per second.
    pub bandwidth_bytes_per_s: u64,
    /// Memory the node could allocate and touch, bytes.
    pub memory_bytes: u64,
}

/// Counters of job outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Successful jobs.
    pub successes: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Failures.
    pub failures: u64,
    /// Failed verifications the node was a suspect in.
    pub verification_failures: u64,
}

/// Everything persisted about one node; [`Registry::from_records`] rebuilds the registry from these.
/// Reservations are not part of it: they are rebuilt from the jobs in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id.
    pub id: NodeId,
    /// What it registered with (hardware includes the trial's measurement).
    pub registration: NodeRegistration,
    /// Its trial.
    pub trial: Trial,
    /// Its last heartbeat.
    pub last_heartbeat: Millis,
    /// Whether it was up.
    pub up: bool,
    /// Its last heartbeat's content.
    pub reported: Heartbeat,
    /// Its reputation.
    pub reputation: Reputation,
    /// Its virtual time (see the module doc).
    pub virtual_s: f64,
    /// Outcome counters.
    pub stats: NodeStats,
    /// Its measured RTTs, microseconds.
    pub peers: Vec<(NodeId, u32)>,
}

/// The region table, persisted beside the node records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct RegionSnapshot {
    /// Region names in interning order.
    pub names: Vec<String>,
    /// Row-major `names.len()^2` pair states.
    pub pairs: Vec<RegionPair>,
}

/// One node as the registry holds it. Read through its accessors.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    pub(crate) id: NodeId,
    pub(crate) reg: NodeRegistration,
    /// Interned value per [`DomainKey::slot`].
    pub(crate) domains: [u32; 3],
    pub(crate) trial: Trial,
    pub(crate) last_heartbeat: Millis,
    pub(crate) up: bool,
    pub(crate) reported: Heartbeat,
    pub(crate) reputation: Reputation,
    pub(crate) mem_reserved: u64,
    pub(crate) queued_s: f64,
    pub(crate) virtual_s: f64,
    /// The draw's virtual time: busy seconds of every role reserved on the node
    /// ([`Hardware::service_seconds`]: at its measured compute rate and bandwidth; no reputation). Not
    /// persisted: a restart starts every node level.
    pub(crate) drawn_s: f64,
    pub(crate) active: u32,
    pub(crate) stats: NodeStats,
    pub(crate) tiebreak: u32,
    /// Speed tier (valid while indexed).
    pub(crate) tier: u32,
    pub(crate) indexed: Option<IndexKey>,
}

impl NodeEntry {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// What it registered with.
    pub fn registration(&self) -> &NodeRegistration {
        &self.reg
    }
    /// Its hardware.
    pub fn hardware(&self) -> &Hardware {
        &self.reg.hardware
    }
    /// Its state.
    pub fn state(&self) -> NodeState {
        match self.trial {
            Trial::Failed => NodeState::Rejected,
            Trial::Pending => NodeState::Probation,
            Trial::Passed if !self.up => NodeState::Down,
            Trial::Passed if self.reported.status == ReportedStatus::Draining => {
                NodeState::Draining
            }
            Trial::Passed => NodeState::Active,
        }
    }
    /// Its reputation as last updated (decay is folded in by outcomes and by [`Registry::sweep`]).
    pub fn reputation(&self) -> f64 {
        self.reputation.value
    }
    /// Whether it is in the selection index (eligible).
    pub fn is_eligible(&self) -> bool {
        self.indexed.is_some()
    }
    /// Memory not reserved, bytes.
    pub fn free_memory(&self) -> u64 {
        self.reg
            .hardware
            .memory_bytes
            .saturating_sub(self.mem_reserved)
    }
    /// Busy seconds of the reservations it holds.
    pub fn queued_seconds(&self) -> f64 {
        self.queued_s
    }
    /// Its virtual time.
    pub fn virtual_seconds(&self) -> f64 {
        self.virtual_s
    }
    /// Reservations it holds.
    pub fn active_jobs(&self) -> u32 {
        self.active
    }
    /// Its last heartbeat's content.
    pub fn reported(&self) -> Heartbeat {
        self.reported
    }
    /// When it last heartbeated.
    pub fn last_heartbeat(&self) -> Millis {
        self.last_heartbeat
    }
    /// Outcome counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }
    /// Its trial.
    pub fn trial(&self) -> Trial {
        self.trial
    }
}

/// Position in the index: key bits (a non-negative finite f64 orders like its bits), a tie-break hash, id.
pub(crate) type IndexKey = (u64, u32, u32);

/// The fields selection reads while scanning, packed apart from [`NodeEntry`] so that a scan touches one
/// small record per node. `hot[i]` is refreshed by every `reindex(i)`, which follows every change of node
/// `i`; only indexed nodes are ever scanned, so it is current wherever it is read.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Hot {
    pub(crate) free_memory: u64,
    pub(crate) domains: [u32; 3],
    pub(crate) inv_rate: f64,
    pub(crate) inv_bw: f64,
    pub(crate) reputation: f64,
    /// Measured compute rate, ops per second, rounded (at least 1).
    pub(crate) ops_per_s: u64,
    /// Bandwidth, bytes per second (at least 1).
    pub(crate) bandwidth: u64,
}

/// String interning for one collusion key.
#[derive(Clone, Debug, Default)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.ids.insert(s.to_owned(), i);
        self.names.push(s.to_owned());
        i
    }
}

const UNKNOWN_ASN: &str = "unknown";

/// The node registry (see the module doc for its invariants).
#[derive(Clone, Debug)]
pub struct Registry {
    pub(crate) config: Config,
    /// `config.collusion_keys` as slots, for the hot path.
    pub(crate) key_slots: Vec<usize>,
    pub(crate) nodes: Vec<NodeEntry>,
    pub(crate) hot: Vec<Hot>,
    by_public_key: HashMap<String, NodeId>,
    interners: [Interner; 3],
    pub(crate) rtt: RttMap,
    pub(crate) regions: RegionRtt,
    pub(crate) eligible: usize,
    pub(crate) by_tier: Vec<BTreeSet<IndexKey>>,
    pub(crate) cells: Vec<Vec<BTreeSet<IndexKey>>>,
    tiers: HashMap<(i32, i32), u32>,
    tier_order: Vec<usize>,
    /// Draw weight per node ([`Registry::draw_weight`]; 0 when not indexed): `[0]` every node, `[1]` the
    /// fast pool's (`draw::Pool::Fast`; 0 for the others).
    pub(crate) draw_trees: [Fenwick; 2],
    /// Sum of draw weights per operator (interned value), per pool.
    pub(crate) operator_weight: [Vec<u64>; 2],
    /// The reference busy seconds `D_ref` of the load factor (see [`Registry::draw_weight`]): the mean of
    /// the indexed nodes' `drawn_s` at the last rebase.
    pub(crate) load_reference: f64,
    /// Sum of the indexed nodes' `drawn_s` (kept in step by `unindex`/`reindex`).
    pub(crate) drawn_sum: f64,
    /// The reference machine the weights' capacity units were computed against (see `draw.rs`).
    pub(crate) weight_reference: (u64, u64),
    /// Sum of the indexed nodes' capacity units against `weight_reference`.
    pub(crate) draw_capacity_total: u64,
}

impl Registry {
    /// An empty registry.
    pub fn new(config: Config) -> Result<Registry, RegistryError> {
        config.validate()?;
        let key_slots = config.collusion_keys.iter().map(|k| k.slot()).collect();
        let regions = RegionRtt::new(config.intra_region_rtt_us, config.inter_region_rtt_us);
        Ok(Registry {
            config,
            key_slots,
            nodes: Vec::new(),
            hot: Vec::new(),
            by_public_key: HashMap::new(),
            interners: Default::default(),
            rtt: RttMap::default(),
            regions,
            eligible: 0,
            by_tier: Vec::new(),
            cells: Vec::new(),
            tiers: HashMap::new(),
            tier_order: Vec::new(),
            draw_trees: Default::default(),
            operator_weight: Default::default(),
            load_reference: 0.0,
            drawn_sum: 0.0,
            weight_reference: (1, 1),
            draw_capacity_total: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of registered nodes (every state).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node is registered.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of eligible nodes.
    pub fn eligible_count(&self) -> usize {
        self.eligible
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.get(id.index())
    }

    /// Every node, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.iter()
    }

    /// The id registered under a public key (any case).
    pub fn id_of(&self, public_key: &str) -> Option<NodeId> {
        self.by_public_key
            .get(&public_key.to_ascii_lowercase())
            .copied()
    }

    /// Nodes waiting for their trial job.
    pub fn probation_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.trial == Trial::Pending)
            .map(|n| n.id)
    }

    /// The interned value of `node` under `key` (equal values = same collusion domain).
    pub fn domain(&self, node: NodeId, key: DomainKey) -> Option<u32> {
        self.node(node).map(|n| n.domains[key.slot()])
    }

    /// The name of an interned domain value.
    pub fn domain_name(&self, key: DomainKey, value: u32) -> Option<&str> {
        self.interners[key.slot()]
            .names
            .get(value as usize)
            .map(String::as_str)
    }

    /// Whether two nodes share a collusion domain under the configured keys (a node collides with itself).
    pub fn collide(&self, a: NodeId, b: NodeId) -> bool {
        match (self.node(a), self.node(b)) {
            (Some(x), Some(y)) => {
                a == b || self.key_slots.iter().any(|&k| x.domains[k] == y.domains[k])
            }
            _ => false,
        }
    }

    fn domains_of(&mut self, reg: &NodeRegistration) -> [u32; 3] {
        let asn = reg
            .asn
            .map(|a| a.to_string())
            .unwrap_or_else(|| UNKNOWN_ASN.to_owned());
        let op = self.interners[DomainKey::Operator.slot()].intern(&reg.operator);
        let region = self.interners[DomainKey::Region.slot()].intern(&reg.region);
        let asn = self.interners[DomainKey::Asn.slot()].intern(&asn);
        self.grow_regions();
        [op, region, asn]
    }

    fn grow_regions(&mut self) {
        let n = self.interners[DomainKey::Region.slot()].names.len();
        self.regions.ensure(n);
        if self.cells.len() < n {
            self.cells.resize_with(n, Vec::new);
        }
    }

    /// Registers a node (or updates the registration of a known key: region, ASN and hardware may change;
    /// the operator may not). A new node starts up, on probation, at the prior reputation.
    pub fn register(
        &mut self,
        reg: NodeRegistration,
        now: Millis,
    ) -> Result<NodeId, RegistryError> {
        let key = reg.public_key.trim().to_ascii_lowercase();
        if !is_public_key_hex(&key) {
            return Err(RegistryError::InvalidPublicKey(reg.public_key));
        }
        if reg.operator.trim().is_empty() {
            return Err(RegistryError::InvalidRegistration("operator is empty"));
        }
        if reg.region.trim().is_empty() {
            return Err(RegistryError::InvalidRegistration("region is empty"));
        }
        reg.hardware
            .validate()
            .map_err(RegistryError::InvalidRegistration)?;
        let reg = NodeRegistration {
            public_key: key.clone(),
            ..reg
        };
        if let Some(&id) = self.by_public_key.get(&key) {
            let old = &self.nodes[id.index()].reg;
            if old.operator != reg.operator {
                return Err(RegistryError::OperatorChanged {
                    node: id,
                    registered: old.operator.clone(),
                    claimed: reg.operator,
                });
            }
            // A measurement comes only from a trial: registering again (a restart, new claims) keeps it,
            // so a node cannot shed a low measured rate and be drawn at its claimed one.
            let measured_ops_per_s = old.hardware.measured_ops_per_s;
            let mut reg = reg;
            reg.hardware.measured_ops_per_s = measured_ops_per_s;
            let domains = self.domains_of(&reg);
            let was = self.unindex(id.index());
            let n = &mut self.nodes[id.index()];
            n.domains = domains;
            n.reg = reg;
            n.last_heartbeat = n.last_heartbeat.max(now);
            n.up = true;
            self.reindex(id.index(), was);
            return Ok(id);
        }
        let id = NodeId(self.nodes.len() as u32);
        let domains = self.domains_of(&reg);
        self.nodes.push(NodeEntry {
            id,
            reg,
            domains,
            trial: Trial::Pending,
            last_heartbeat: now,
            up: true,
            reported: Heartbeat::default(),
            reputation: self.config.reputation.initial(now),
            mem_reserved: 0,
            queued_s: 0.0,
            virtual_s: 0.0,
            drawn_s: 0.0,
            active: 0,
            stats: NodeStats::default(),
            tiebreak: keyed_hash(0x7665_696c, u64::from(id.0)) as u32,
            tier: 0,
            indexed: None,
        });
        self.hot.push(Hot::default());
        self.by_public_key.insert(key, id);
        self.rtt.ensure(self.nodes.len());
        Ok(id)
    }

    fn check(&self, id: NodeId) -> Result<usize, RegistryError> {
        if id.index() < self.nodes.len() {
            Ok(id.index())
        } else {
            Err(RegistryError::UnknownNode(id))
        }
    }

    /// Records the result of a node's trial job (known answer). Passing admits the node (at the prior
    /// reputation the first time) and stores the measured throughput; failing rejects it.
    pub fn record_trial(
        &mut self,
        id: NodeId,
        passed: bool,
        measured_ops_per_s: Option<u64>,
        now: Millis,
    ) -> Result<(), RegistryError> {
        self.record_trial_measured(id, passed, measured_ops_per_s, None, now)
    }

    /// [`Registry::record_trial`] with the bandwidth and memory the trial measured as well: the node's
    /// bandwidth and memory become the smaller of what it registered and what was measured (a claim never
    /// raises them).
    pub fn record_trial_measured(
        &mut self,
        id: NodeId,
        passed: bool,
        measured_ops_per_s: Option<u64>,
        measured: Option<Measured>,
        now: Millis,
    ) -> Result<(), RegistryError> {
        let i = self.check(id)?;
        let was = self.unindex(i);
        let rule = self.config.reputation;
        let n = &mut self.nodes[i];
        if passed {
            if n.trial != Trial::Passed {
                n.reputation = rule.initial(now);
            }
            n.trial = Trial::Passed;
            if let Some(m) = measured_ops_per_s
                .filter(|&m| m > 0)
                .map(|m| m.min(MAX_OPS_PER_S))
            {
                n.reg.hardware.measured_ops_per_s = Some(m);
            }
            if let Some(m) = measured {
                let hw = &mut n.reg.hardware;
                hw.bandwidth_bytes_per_s =
                    hw.bandwidth_bytes_per_s.min(m.bandwidth_bytes_per_s.max(1));
                hw.memory_bytes = hw.memory_bytes.min(m.memory_bytes.max(1));
            }
        } else {
            n.trial = Trial::Failed;
        }
        self.reindex(i, was);
        Ok(())
    }

    /// Records a heartbeat: the node is up (again) with the reported status and load.
    pub fn heartbeat(
        &mut self,
        id: NodeId,
        hb: Heartbeat,
        now: Millis,
    ) -> Result<(), RegistryError> {
        let i = self.check(id)?;
        let load = if hb.load.is_finite() {
            hb.load.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let hb = Heartbeat { load, ..hb };
        let n = &mut self.nodes[i];
        n.last_heartbeat = n.last_heartbeat.max(now);
        if n.up && n.reported == hb {
            return Ok(()); // nothing the index depends on changed
        }
        let was = self.unindex(i);
        let n = &mut self.nodes[i];
        n.up = true;
        n.reported = hb;
        self.reindex(i, was);
        Ok(())
    }

    /// Marks down every node whose last heartbeat is older than the timeout and folds reputation decay in;
    /// returns the nodes newly marked down. O(nodes); call it every few seconds.
    pub fn sweep(&mut self, now: Millis) -> Vec<NodeId> {
        let timeout = self.config.heartbeat_timeout_ms;
        let rule = self.config.reputation;
        let min = self.config.min_reputation;
        let mut down = Vec::new();
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            let expired = n.up && now.saturating_sub(n.last_heartbeat) > timeout;
            let before = n.reputation.value;
            let after = rule.decayed(n.reputation, now);
            n.reputation = Reputation {
                value: after,
                updated_at: now.max(n.reputation.updated_at),
            };
            let crosses = (before >= min) != (after >= min);
            if expired {
                n.up = false;
                down.push(n.id);
            }
            if expired || crosses {
                let was = self.unindex(i);
                self.reindex(i, was);
            }
        }
        down
    }

    /// Folds one job outcome into a node's reputation and counters.
    pub fn record_outcome(
        &mut self,
        id: NodeId,
        outcome: JobOutcome,
        now: Millis,
    ) -> Result<(), RegistryError> {
        let i = self.check(id)?;
        let rule = self.config.reputation;
        let n = &mut self.nodes[i];
        n.reputation = rule.apply(n.reputation, outcome, now);
        match outcome {
            JobOutcome::Success => n.stats.successes += 1,
            JobOutcome::Timeout => n.stats.timeouts += 1,
            JobOutcome::Failure => n.stats.failures += 1,
            JobOutcome::VerificationFailed { .. } => n.stats.verification_failures += 1,
        }
        // The key does not depend on reputation: re-index only if eligibility changes.
        self.hot[i].reputation = n.reputation.value;
        if n.indexed.is_some() != self.eligible(&self.nodes[i]) {
            let was = self.unindex(i);
            self.reindex(i, was);
        }
        Ok(())
    }

    /// Records RTTs a node measured to peers (microseconds); unknown peers and self-pairs are ignored. A
    /// pair counts once both ends reported it, at the larger of the two reports (see `rtt`); each such
    /// confirmed measurement also refines the estimate between the two regions.
    pub fn report_rtts(&mut self, id: NodeId, rtts: &[(NodeId, u32)]) -> Result<(), RegistryError> {
        let i = self.check(id)?;
        let ra = self.nodes[i].domains[DomainKey::Region.slot()] as usize;
        for &(peer, us) in rtts {
            if peer == id || peer.index() >= self.nodes.len() {
                continue;
            }
            let rb = self.nodes[peer.index()].domains[DomainKey::Region.slot()] as usize;
            if let Some(confirmed) = self.rtt.report(id.0, peer.0, us) {
                self.regions.observe(ra, rb, confirmed);
            }
        }
        Ok(())
    }

    /// Sets the RTT estimate between two regions by hand (microseconds, both directions).
    pub fn configure_region_rtt(&mut self, a: &str, b: &str, rtt_us: u32) {
        let ra = self.interners[DomainKey::Region.slot()].intern(a) as usize;
        let rb = self.interners[DomainKey::Region.slot()].intern(b) as usize;
        self.grow_regions();
        self.regions.configure(ra, rb, rtt_us);
    }

    /// The RTT between two nodes in microseconds: measured if known, else the regions' estimate.
    #[inline]
    pub fn rtt_us(&self, a: NodeId, b: NodeId) -> u32 {
        if a == b {
            return 0;
        }
        if let Some(m) = self.rtt.measured(a.0, b.0) {
            return m;
        }
        match (self.nodes.get(a.index()), self.nodes.get(b.index())) {
            (Some(x), Some(y)) => self.regions.estimate(
                x.domains[DomainKey::Region.slot()] as usize,
                y.domains[DomainKey::Region.slot()] as usize,
            ),
            _ => self.config.inter_region_rtt_us,
        }
    }

    /// Reserves a placement's demand on its members: memory, queued seconds and virtual time. Fails without
    /// changing anything if a member is unknown, appears twice, or lacks free memory.
    pub fn reserve(&mut self, placement: &Placement) -> Result<(), RegistryError> {
        self.check_placement(placement, true)?;
        self.apply_reservation(placement, true);
        Ok(())
    }

    /// Re-applies a reservation after a restart (memory and queued seconds only; virtual time was persisted
    /// already). Never fails on memory: the reservation existed before the restart.
    pub fn restore_reservation(&mut self, placement: &Placement) -> Result<(), RegistryError> {
        self.check_placement(placement, false)?;
        self.apply_reservation(placement, false);
        Ok(())
    }

    /// Takes back a reservation made a moment ago that was never used (a later stage of the same attempt
    /// found no committee): releases it and refunds the virtual time it charged, so that failed placement
    /// attempts do not age their members.
    pub fn unreserve(&mut self, placement: &Placement) {
        self.release(placement);
        for (role, id) in placement.committee.members() {
            let Some(i) = self.nodes.get(id.index()).map(|n| n.id.index()) else {
                continue;
            };
            let was = self.unindex(i);
            let n = &mut self.nodes[i];
            let s = n.reg.hardware.service_seconds(placement.demand.role(role));
            n.drawn_s = (n.drawn_s - s).max(0.0);
            n.virtual_s = (n.virtual_s
                - s / n
                    .reputation
                    .value
                    .max(crate::reputation::MIN_REPUTATION_VALUE))
            .max(0.0);
            self.reindex(i, was);
        }
    }

    /// Gives a placement's reservations back. Unknown members are ignored; counters never go negative.
    pub fn release(&mut self, placement: &Placement) {
        for (role, id) in placement.committee.members() {
            let Some(i) = self.nodes.get(id.index()).map(|n| n.id.index()) else {
                continue;
            };
            let d = *placement.demand.role(role);
            let was = self.unindex(i);
            let n = &mut self.nodes[i];
            let s = n.reg.hardware.service_seconds(&d);
            n.mem_reserved = n.mem_reserved.saturating_sub(d.memory_bytes);
            n.active = n.active.saturating_sub(1);
            n.queued_s = if n.active == 0 {
                0.0
            } else {
                (n.queued_s - s).max(0.0)
            };
            self.reindex(i, was);
        }
    }

    fn check_placement(&self, placement: &Placement, memory: bool) -> Result<(), RegistryError> {
        let c = &placement.committee;
        if c.parties.len() != placement.demand.parties as usize {
            return Err(RegistryError::CorruptRecords(format!(
                "committee has {} parties, demand {}",
                c.parties.len(),
                placement.demand.parties
            )));
        }
        let members: Vec<_> = c.members().collect();
        for (j, &(role, id)) in members.iter().enumerate() {
            let i = self.check(id)?;
            if members[..j].iter().any(|&(_, other)| other == id) {
                return Err(RegistryError::DuplicateMember(id));
            }
            let need = placement.demand.role(role).memory_bytes;
            let free = self.nodes[i].free_memory();
            if memory && free < need {
                return Err(RegistryError::InsufficientMemory {
                    node: id,
                    free,
                    needed: need,
                });
            }
        }
        Ok(())
    }

    fn apply_reservation(&mut self, placement: &Placement, charge_virtual: bool) {
        for (role, id) in placement.committee.members() {
            let i = id.index();
            let was = self.unindex(i);
            self.charge(i, placement.demand.role(role), charge_virtual);
            self.reindex(i, was);
        }
    }

    /// Adds one role's reservation to node `i`'s counters (the caller keeps the index in step).
    fn charge(&mut self, i: usize, d: &crate::demand::RoleDemand, charge_virtual: bool) {
        let n = &mut self.nodes[i];
        let s = n.reg.hardware.service_seconds(d);
        n.mem_reserved = n.mem_reserved.saturating_add(d.memory_bytes);
        n.queued_s += s;
        n.active += 1;
        if charge_virtual {
            n.drawn_s += s;
            n.virtual_s += s / n
                .reputation
                .value
                .max(crate::reputation::MIN_REPUTATION_VALUE);
        }
    }

    /// Tier indexes in canonical order (by speed key, not by first sight), so that selection does not
    /// depend on the order in which tiers appeared.
    pub(crate) fn tier_order(&self) -> &[usize] {
        &self.tier_order
    }

    /// The speed tier of node `i` (see the module doc), interned on first sight.
    fn tier_of(&mut self, i: usize) -> usize {
        let h = &self.nodes[i].reg.hardware;
        let key = (
            h.ops_per_s().log2().floor() as i32,
            (h.bandwidth_bytes_per_s.max(1) as f64).log2().floor() as i32,
        );
        if let Some(&t) = self.tiers.get(&key) {
            return t as usize;
        }
        let t = self.tiers.len();
        self.tiers.insert(key, t as u32);
        self.by_tier.resize_with(t + 1, BTreeSet::new);
        let mut order: Vec<((i32, i32), usize)> =
            self.tiers.iter().map(|(&k, &v)| (k, v as usize)).collect();
        order.sort_unstable();
        self.tier_order = order.into_iter().map(|(_, v)| v).collect();
        t
    }

    /// Whether a node satisfies the eligibility rule (see the module doc).
    fn eligible(&self, n: &NodeEntry) -> bool {
        n.trial == Trial::Passed
            && n.up
            && n.reported.status == ReportedStatus::Ready
            && n.reputation.value >= self.config.min_reputation
    }

    fn key_of(&self, n: &NodeEntry) -> IndexKey {
        let s = &self.config.selection;
        let k = n.virtual_s
            + n.queued_s
            + s.reported_load_weight_s * f64::from(n.reported.load)
            + s.reported_queue_weight_s * f64::from(n.reported.queue_len.saturating_sub(n.active));
        let k = if k.is_finite() { k.max(0.0) } else { f64::MAX };
        (k.to_bits(), n.tiebreak, n.id.0)
    }

    /// Removes node `i` from the index; returns whether it was there.
    pub(crate) fn unindex(&mut self, i: usize) -> bool {
        if let Some(key) = self.nodes[i].indexed.take() {
            self.eligible -= 1;
            let r = self.nodes[i].domains[DomainKey::Region.slot()] as usize;
            let t = self.nodes[i].tier as usize;
            self.by_tier[t].remove(&key);
            self.cells[r][t].remove(&key);
            self.set_draw_weight(i, 0);
            self.draw_capacity_total -= self.draw_units(i);
            self.drawn_sum -= self.nodes[i].drawn_s;
            true
        } else {
            false
        }
    }

    /// Puts node `i` back in the index if it is eligible, with its current key. A node entering (it was
    /// not indexed before this change: `was_indexed` false) starts no lower than the head's virtual time.
    pub(crate) fn reindex(&mut self, i: usize, was_indexed: bool) {
        debug_assert!(self.nodes[i].indexed.is_none());
        if !self.eligible(&self.nodes[i]) {
            return;
        }
        if !was_indexed {
            let floor = self
                .by_tier
                .iter()
                .filter_map(|t| t.first())
                .map(|&(_, _, head)| self.nodes[head as usize].virtual_s)
                .min_by(f64::total_cmp);
            if let Some(floor) = floor {
                let n = &mut self.nodes[i];
                n.virtual_s = n.virtual_s.max(floor);
            }
            let base = self.load_reference;
            let n = &mut self.nodes[i];
            n.drawn_s = n.drawn_s.max(base);
        }
        let key = self.key_of(&self.nodes[i]);
        let r = self.nodes[i].domains[DomainKey::Region.slot()] as usize;
        self.eligible += 1;
        let t = self.tier_of(i);
        let n = &mut self.nodes[i];
        n.tier = t as u32;
        self.hot[i] = Hot {
            free_memory: n.free_memory(),
            domains: n.domains,
            inv_rate: 1.0 / n.reg.hardware.ops_per_s(),
            inv_bw: 1.0 / n.reg.hardware.bandwidth_bytes_per_s.max(1) as f64,
            reputation: n.reputation.value,
            ops_per_s: (n.reg.hardware.ops_per_s().round() as u64).max(1),
            bandwidth: n.reg.hardware.bandwidth_bytes_per_s.max(1),
        };
        self.by_tier[t].insert(key);
        if self.cells[r].len() <= t {
            self.cells[r].resize_with(t + 1, BTreeSet::new);
        }
        self.cells[r][t].insert(key);
        self.nodes[i].indexed = Some(key);
        let w = self.draw_weight(i);
        self.set_draw_weight(i, w);
        self.draw_capacity_total += self.draw_units(i);
        self.drawn_sum += self.nodes[i].drawn_s;
    }

    /// The draw weight of indexed node `i`: `load * capacity_units`. The load factor is
    /// `max(1, round(2^16 * min(LOAD_BOOST_MAX, ((D_ref + c) / (D_i + c))^k)))`, where `D_i` is the node's
    /// `drawn_s`
    /// (busy seconds of every role reserved on it, at its measured rate and bandwidth), `D_ref` is
    /// `load_reference` (the indexed nodes' mean `drawn_s` at the last rebase), `c = load_offset_s` and
    /// `k =` [`LOAD_EXPONENT`]. [`capacity_units`] are of its measured rate and bandwidth against
    /// `weight_reference`; the draw thins them to the role's capacity (see `draw.rs`).
    ///
    /// Why this shape: a node is proposed in proportion to its capacity, so each role it takes costs it
    /// busy seconds in inverse proportion, and its busy seconds grow at a rate proportional to the load
    /// factor alone. The factor is scale-free (a ratio of busy seconds), like the utilisation it evens out,
    /// so it neither saturates as a run goes on nor needs a time constant: a node 10% ahead of the reference
    /// is `1.1^16 = 4.6` times less likely, one 50% ahead 657 times (the factor floors at 1 in `2^16`, at
    /// twice the reference). A node behind the reference catches up, favoured by at most
    /// [`LOAD_BOOST_MAX`]; a node that (re)enters the index starts level with `D_ref`, so registering fresh
    /// nodes, or leaving and coming back, buys no boost. Nodes that only short roles fit (slow ones, below
    /// the capacity floor of long roles) lag behind the reference and so win the short roles from the busy
    /// fast nodes: work flows to where it evens out utilisation. Everything here is accounted by the
    /// coordinator; nothing is claimed. (Tuned on `veil sim`'s world at 10,000 nodes: boost caps of 8, 16,
    /// 32 and 256 and a unit of `2^12`, `2^16`, `2^20` and `2^24` were tried; this pair gave the lowest
    /// `max_over_mean_utilisation` over seeds 7, 1 and 2: 1.42, 1.48, 1.44.)
    pub(crate) fn draw_weight(&self, i: usize) -> u64 {
        let n = &self.nodes[i];
        let s = &self.config.selection;
        let ratio =
            (self.load_reference + s.load_offset_s) / (n.drawn_s.max(0.0) + s.load_offset_s);
        let factor = ratio.powi(LOAD_EXPONENT).min(LOAD_BOOST_MAX);
        let load = (LOAD_ONE as f64 * factor).round().max(1.0) as u64;
        load * self.draw_units(i)
    }

    /// [`capacity_units`] of node `i` against `weight_reference`.
    fn draw_units(&self, i: usize) -> u64 {
        let h = &self.nodes[i].reg.hardware;
        capacity_units(
            (h.ops_per_s().round() as u64).max(1),
            h.bandwidth_bytes_per_s.max(1),
            self.weight_reference,
        )
    }

    /// The draw's reference machine: `2^(e+1)` for the largest exponent of any speed tier's rate and
    /// bandwidth (see the module doc), so at least every indexed node's rate and bandwidth.
    pub(crate) fn draw_reference(&self) -> (u64, u64) {
        let (mut r, mut b) = (0i32, 0i32);
        for &(lr, lb) in self.tiers.keys() {
            r = r.max(lr);
            b = b.max(lb);
        }
        let pow = |e: i32| 1u64 << (e + 1).clamp(0, 62);
        (pow(r), pow(b))
    }

    /// Sets node `i`'s draw weight (in the fast pool too when it belongs there), keeping the per-operator
    /// sums in step.
    pub(crate) fn set_draw_weight(&mut self, i: usize, w: u64) {
        let fast = w > 0
            && self.draw_units(i) * u64::from(self.config.selection.draw.max_slowdown.max(1))
                >= crate::draw::CAPACITY_ONE;
        let op = self.nodes[i].domains[DomainKey::Operator.slot()] as usize;
        for (k, w) in [(0, w), (1, if fast { w } else { 0 })] {
            let old = self.draw_trees[k].get(i);
            if old == w && i < self.draw_trees[k].len() {
                continue;
            }
            let sums = &mut self.operator_weight[k];
            if sums.len() <= op {
                sums.resize(op + 1, 0);
            }
            sums[op] = sums[op] - old + w;
            self.draw_trees[k].set(i, w);
        }
    }

    /// Recomputes every draw weight (O(nodes)) when the reference machine changed (a faster tier appeared)
    /// or the indexed nodes' mean `drawn_s` has grown past `(1 + LOAD_REBASE_STEP)` times the reference
    /// (plus the offset): `load_reference` becomes that mean. Busy seconds grow about linearly with time, so
    /// rebases grow geometrically rarer (about `ln(D_end / c) / ln(1 + step)` in a run). Between rebases a
    /// node's weight changes only when its own `drawn_s` or capacity does (O(log n) each). Depends only on
    /// the registry's state.
    pub(crate) fn rebase_draw_weights(&mut self) {
        let reference = self.draw_reference();
        let c = self.config.selection.load_offset_s;
        let mean = if self.eligible > 0 {
            (self.drawn_sum / self.eligible as f64).max(0.0)
        } else {
            0.0
        };
        if reference == self.weight_reference
            && mean + c <= (1.0 + LOAD_REBASE_STEP) * (self.load_reference + c)
        {
            return;
        }
        self.weight_reference = reference;
        self.load_reference = self.load_reference.max(mean);
        // Recompute from scratch (also clears float drift of the running sums).
        self.drawn_sum = 0.0;
        self.draw_capacity_total = 0;
        let n = self.nodes.len();
        let mut all = vec![0u64; n];
        let mut fast = vec![0u64; n];
        let mut operators: [Vec<u64>; 2] = Default::default();
        let slowdown = u64::from(self.config.selection.draw.max_slowdown.max(1));
        for (i, (all_i, fast_i)) in all.iter_mut().zip(fast.iter_mut()).enumerate() {
            if self.nodes[i].indexed.is_none() {
                continue;
            }
            let units = self.draw_units(i);
            self.drawn_sum += self.nodes[i].drawn_s;
            self.draw_capacity_total += units;
            let w = self.draw_weight(i);
            let is_fast = units * slowdown >= crate::draw::CAPACITY_ONE;
            *all_i = w;
            *fast_i = if is_fast { w } else { 0 };
            let op = self.nodes[i].domains[DomainKey::Operator.slot()] as usize;
            for (k, w) in [(0, *all_i), (1, *fast_i)] {
                let sums = &mut operators[k];
                if sums.len() <= op {
                    sums.resize(op + 1, 0);
                }
                sums[op] += w;
            }
        }
        self.draw_trees[0].rebuild(all);
        self.draw_trees[1].rebuild(fast);
        self.operator_weight = operators;
    }

    /// The largest per-party stage memory `m` such that at least `parties` eligible nodes of distinct
    /// first-key domains have `m` bytes free: a good `max_stage_memory` for [`crate::partition`]. 0 if there
    /// are not enough domains.
    pub fn stage_memory_limit(&self, parties: usize) -> u64 {
        let k0 = self.key_slots[0];
        let mut best: HashMap<u32, u64> = HashMap::new();
        for &(_, _, i) in self.tier_order.iter().flat_map(|&t| &self.by_tier[t]) {
            let n = &self.nodes[i as usize];
            let e = best.entry(n.domains[k0]).or_insert(0);
            *e = (*e).max(n.free_memory());
        }
        let mut v: Vec<u64> = best.into_values().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        if parties == 0 {
            return v.first().copied().unwrap_or(0);
        }
        v.get(parties - 1).copied().unwrap_or(0)
    }

    /// A snapshot of one node for persistence.
    pub fn record(&self, id: NodeId) -> Option<NodeRecord> {
        let n = self.node(id)?;
        Some(NodeRecord {
            id: n.id,
            registration: n.reg.clone(),
            trial: n.trial,
            last_heartbeat: n.last_heartbeat,
            up: n.up,
            reported: n.reported,
            reputation: n.reputation,
            virtual_s: n.virtual_s,
            stats: n.stats,
            peers: self
                .rtt
                .peers_of(id.0)
                .iter()
                .map(|&(p, us)| (NodeId(p), us))
                .collect(),
        })
    }

    /// Snapshots of every node.
    pub fn records(&self) -> Vec<NodeRecord> {
        (0..self.nodes.len() as u32)
            .filter_map(|i| self.record(NodeId(i)))
            .collect()
    }

    /// The region table for persistence.
    pub fn region_snapshot(&self) -> RegionSnapshot {
        RegionSnapshot {
            names: self.interners[DomainKey::Region.slot()].names.clone(),
            pairs: self.regions.pairs().to_vec(),
        }
    }

    /// Rebuilds a registry from persisted records (ids must be exactly `0..records.len()`), the region
    /// table, and the placements of the jobs still in flight (their reservations are restored).
    pub fn from_records<'a>(
        config: Config,
        mut records: Vec<NodeRecord>,
        regions: Option<RegionSnapshot>,
        in_flight: impl IntoIterator<Item = &'a Placement>,
    ) -> Result<Registry, RegistryError> {
        let mut reg = Registry::new(config)?;
        if let Some(snap) = &regions {
            for name in &snap.names {
                reg.interners[DomainKey::Region.slot()].intern(name);
            }
            reg.grow_regions();
            let n = snap.names.len();
            reg.regions = RegionRtt::from_pairs(
                reg.config.intra_region_rtt_us,
                reg.config.inter_region_rtt_us,
                n,
                snap.pairs.clone(),
            );
        }
        records.sort_by_key(|r| r.id);
        for (i, r) in records.iter().enumerate() {
            if r.id.index() != i {
                return Err(RegistryError::CorruptRecords(format!(
                    "expected node id {i}, found {}",
                    r.id
                )));
            }
        }
        for r in &records {
            let id = reg.register(r.registration.clone(), r.last_heartbeat)?;
            if id != r.id {
                return Err(RegistryError::CorruptRecords(format!(
                    "public key of {} registered twice",
                    r.id
                )));
            }
            let i = id.index();
            let n = &mut reg.nodes[i];
            n.trial = r.trial;
            n.last_heartbeat = r.last_heartbeat;
            n.up = r.up;
            n.reported = r.reported;
            n.reputation = r.reputation;
            n.virtual_s = r.virtual_s;
            n.stats = r.stats;
        }
        for r in &records {
            for &(peer, us) in &r.peers {
                if peer.index() < reg.nodes.len() && peer != r.id {
                    reg.rtt.restore(r.id.0, peer.0, us);
                }
            }
        }
        for p in in_flight {
            reg.check_placement(p, false)?;
            for (role, id) in p.committee.members() {
                reg.charge(id.index(), p.demand.role(role), false);
            }
        }
        // Index last, with the persisted virtual times (no floor adjustment among restored nodes).
        for i in 0..reg.nodes.len() {
            reg.unindex(i);
        }
        let mut order: Vec<usize> = (0..reg.nodes.len()).collect();
        order.sort_by(|&a, &b| reg.nodes[a].virtual_s.total_cmp(&reg.nodes[b].virtual_s));
        for i in order {
            reg.reindex(i, true);
        }
        Ok(reg)
    }
}
