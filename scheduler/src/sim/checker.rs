//! The independent checker of `veil sim`: it replays the log of placements and releases against the
//! synthetic world's ground truth (raw operator, region and ASN strings; hardware; who was really down) and
//! counts what the selector should never do. It uses nothing of the registry: not its interned domains, not
//! its eligibility, not its memory accounting.
//!
//! # Utilisation
//! The utilisation of node `i` is `U_i = B_i / T`, where `B_i` is the busy seconds of every role it was
//! given (each role's demand at the node's own rate: `ops / ops_per_s + bytes / bandwidth`, the definition of
//! [`crate::Hardware::service_seconds`]), and `T` the run's length in simulated seconds. The population is the
//! nodes eligible for the whole run: trial passed, never down (neither from the start nor by churn), and
//! still above the minimum reputation at the end. `max_over_mean_utilisation = max_i U_i / mean_i U_i` over
//! that population: 1 is a perfect spread of work in proportion to capacity.

use crate::demand::JobDemand;
use crate::types::{DomainKey, Hardware, Millis, NodeId};

/// One logged event.
#[derive(Clone, Debug)]
pub enum LogEvent {
    /// A job attempt was placed.
    Place {
        /// When.
        at: Millis,
        /// The job.
        job: u64,
        /// One committee per stage: members (parties, dealer, verifier) with their demand.
        stages: Vec<(Vec<NodeId>, JobDemand)>,
        /// Nodes the attempt had to avoid.
        excluded: Vec<NodeId>,
    },
    /// A job attempt's reservations were released.
    Release {
        /// When.
        at: Millis,
        /// The job.
        job: u64,
    },
    /// Ground truth: the node stopped heartbeating.
    Down {
        /// When.
        at: Millis,
        /// The node.
        node: NodeId,
    },
    /// Ground truth: the node heartbeats again.
    Up {
        /// When.
        at: Millis,
        /// The node.
        node: NodeId,
    },
}

/// What the checker knows of a node: ground truth only.
#[derive(Clone, Debug)]
pub struct TruthNode {
    /// Operator name.
    pub operator: String,
    /// Region name.
    pub region: String,
    /// ASN (None: unknown, one shared domain).
    pub asn: Option<u32>,
    /// Hardware (with the trial's measurement).
    pub hardware: Hardware,
    /// Passed its trial.
    pub passed_trial: bool,
    /// Down at some point of the run.
    pub ever_down: bool,
    /// Above the minimum reputation at the end.
    pub trusted_at_end: bool,
}

/// The checker's findings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    /// Committees with two members in one collusion domain (or one node twice).
    pub collusion_violations: u64,
    /// Placements that pushed a node's reserved memory past its memory.
    pub memory_violations: u64,
    /// Members that were on probation, down for longer than the grace period, or excluded for the job.
    pub ineligible_selections: u64,
    /// Committees checked.
    pub committees: u64,
    /// `max U / mean U` (see the module doc); 0 when the population is empty.
    pub max_over_mean_utilisation: f64,
    /// Mean U over the population.
    pub mean_utilisation: f64,
    /// Size of the population.
    pub utilisation_nodes: usize,
    /// U per node (NaN outside the population).
    pub per_node: Vec<f64>,
}

fn same(key: DomainKey, a: &TruthNode, b: &TruthNode) -> bool {
    match key {
        DomainKey::Operator => a.operator == b.operator,
        DomainKey::Region => a.region == b.region,
        DomainKey::Asn => a.asn == b.asn,
    }
}

/// Replays `log` (in time order) against `truth`. A node counts as down for selection purposes once it has
/// been down for longer than `grace_ms` (the heartbeat timeout plus the sweep period: before that the
/// coordinator cannot know).
pub fn check(
    truth: &[TruthNode],
    keys: &[DomainKey],
    log: &[LogEvent],
    grace_ms: u64,
    run_s: f64,
) -> Findings {
    let mut f = Findings::default();
    let mut reserved = vec![0u64; truth.len()];
    let mut busy = vec![0f64; truth.len()];
    let mut down_since: Vec<Option<Millis>> = vec![None; truth.len()];
    let mut held: std::collections::HashMap<u64, Vec<(NodeId, u64)>> =
        std::collections::HashMap::new();
    for ev in log {
        match ev {
            LogEvent::Down { at, node } => down_since[node.index()] = Some(*at),
            LogEvent::Up { node, .. } => down_since[node.index()] = None,
            LogEvent::Place {
                at,
                job,
                stages,
                excluded,
            } => {
                let mut holds = Vec::new();
                for (members, demand) in stages {
                    f.committees += 1;
                    let parties = demand.parties as usize;
                    let mut bad = false;
                    for (a, &x) in members.iter().enumerate() {
                        for &y in &members[..a] {
                            let (tx, ty) = (&truth[x.index()], &truth[y.index()]);
                            if x == y || keys.iter().any(|&k| same(k, tx, ty)) {
                                bad = true;
                            }
                        }
                    }
                    f.collusion_violations += u64::from(bad);
                    for (pos, &m) in members.iter().enumerate() {
                        // Members are logged in the demand's role order (parties, then the dealer and
                        // the verifier where they exist).
                        let role = if pos < parties {
                            &demand.party
                        } else {
                            demand.role(
                                demand
                                    .roles()
                                    .nth(pos)
                                    .unwrap_or(crate::demand::Role::Verifier),
                            )
                        };
                        let t = &truth[m.index()];
                        let down_long =
                            down_since[m.index()].is_some_and(|d| at.saturating_sub(d) > grace_ms);
                        if !t.passed_trial || down_long || excluded.contains(&m) {
                            f.ineligible_selections += 1;
                        }
                        reserved[m.index()] += role.memory_bytes;
                        if reserved[m.index()] > t.hardware.memory_bytes {
                            f.memory_violations += 1;
                        }
                        let h = &t.hardware;
                        busy[m.index()] += role.ops as f64 / h.ops_per_s()
                            + role.bytes as f64 / h.bandwidth_bytes_per_s.max(1) as f64;
                        holds.push((m, role.memory_bytes));
                    }
                }
                held.entry(*job).or_default().extend(holds);
            }
            LogEvent::Release { job, .. } => {
                for (m, bytes) in held.remove(job).unwrap_or_default() {
                    reserved[m.index()] = reserved[m.index()].saturating_sub(bytes);
                }
            }
        }
    }
    let population: Vec<f64> = truth
        .iter()
        .enumerate()
        .filter(|(_, t)| t.passed_trial && !t.ever_down && t.trusted_at_end)
        .map(|(i, _)| busy[i] / run_s.max(1e-9))
        .collect();
    f.per_node = truth
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.passed_trial && !t.ever_down && t.trusted_at_end {
                busy[i] / run_s.max(1e-9)
            } else {
                f64::NAN
            }
        })
        .collect();
    f.utilisation_nodes = population.len();
    if !population.is_empty() {
        let mean = population.iter().sum::<f64>() / population.len() as f64;
        let max = population.iter().copied().fold(0.0, f64::max);
        f.mean_utilisation = mean;
        f.max_over_mean_utilisation = if mean > 0.0 { max / mean } else { 0.0 };
    }
    f
}
