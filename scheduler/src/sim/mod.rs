//! `veil sim`: the real selection code over a synthetic registry ([`synth`]), with jobs arriving and
//! completing in simulated time, failures feeding reputation, retries on fresh committees, churn and
//! heartbeats, all without a network. An independent [`checker`] replays the placements afterwards.
//!
//! # The run
//! - Nodes register at t = 0 and take their trial; those that pass are admitted. Every 5 s of simulated time
//!   the nodes that are up heartbeat (reporting their queue) and the registry sweeps (timeout 15 s). Jobs
//!   start arriving after 25 s, when the nodes down from the start have been marked down.
//! - Jobs arrive as a Poisson process whose rate puts the eligible nodes at about `target_load` of their
//!   capacity on average; each runs one of [`synth::models`], planned into stages of at most
//!   [`synth::MAX_STAGE_MEMORY`] per party.
//! - A decision is one job attempt's placement: [`Registry::place_stages`] (selection and reservation of
//!   every stage); its time is measured around that call only.
//! - Capture: with `adversary.fraction > 0`, a fraction of the operators is adversarial (see
//!   [`synth::world_with`]); every placed committee is checked against [`captured`], and the run reports the
//!   captured fraction beside the mean of [`capture_bound_for`] over the same committees.
//! - An attempt lasts its slowest member's busy seconds plus `rounds` times its largest party RTT. At its end
//!   each member fails with its hidden probability: a malicious party causes a failed verification (all
//!   parties are suspects), any other failure is a timeout or a crash of that node. The job's lifecycle
//!   decides: release, reputation outcomes, and a retry excluding the blamed nodes (3 attempts at most).

pub mod checker;
pub mod synth;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use rand::Rng;
use serde::Serialize;
use thiserror::Error;

use crate::committee::Placement;
use crate::demand::{JobDemand, Role};
use crate::lifecycle::{Event, FailureCause, Job, JobId, JobPolicy, LifecycleError, PhaseTimeouts};
use crate::partition::PartitionError;
use crate::registry::{Config, Registry, RegistryError, SelectionTuning};
use crate::select::Unplaceable;
use crate::types::{keyed_hash, DomainKey, Heartbeat, Millis, NodeId, ReportedStatus};
use checker::{LogEvent, TruthNode};
use synth::Behaviour;

/// Parameters of a run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes.
    pub nodes: usize,
    /// Jobs.
    pub jobs: usize,
    /// Seed of the world and the workload.
    pub seed: u64,
    /// Execution parties per committee.
    pub parties: u8,
    /// Collusion keys.
    pub collusion_keys: Vec<DomainKey>,
    /// Mean load of the eligible nodes the arrival rate aims at (fraction of capacity).
    pub target_load: f64,
    /// Attempts per job.
    pub max_attempts: u32,
    /// Selection tuning of the registry (its `mode` picks the draw or the cheapest committee).
    pub tuning: SelectionTuning,
    /// The adversary (see [`synth::world_with`]): a fraction of the operators, each running as many nodes
    /// as the operator cap allows, claiming maximal hardware and near-zero RTTs among its nodes.
    pub adversary: synth::Adversary,
    /// Whether trials record each node's *claimed* capacity instead of measuring it (the coordinator
    /// before measured claims): shows what claims buy an adversary when they are believed.
    pub believe_claims: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 10_000,
            jobs: 100_000,
            seed: 7,
            parties: 3,
            collusion_keys: vec![DomainKey::Operator],
            target_load: 0.5,
            max_attempts: 3,
            tuning: SelectionTuning::default(),
            adversary: synth::Adversary::default(),
            believe_claims: false,
        }
    }
}

/// Errors of a run (all are bugs or bad parameters: the world is generated valid).
#[derive(Debug, Error)]
pub enum SimError {
    /// Bad parameters.
    #[error("invalid simulation parameters: {0}")]
    Params(&'static str),
    /// The registry refused something.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The lifecycle refused a transition.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// A model could not be planned.
    #[error(transparent)]
    Partition(#[from] PartitionError),
}

/// The figures of a run.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    /// Nodes registered.
    pub nodes: usize,
    /// Jobs submitted.
    pub jobs: usize,
    /// Execution parties per committee.
    pub parties: u8,
    /// Seed.
    pub seed: u64,
    /// Collusion keys.
    pub collusion_keys: Vec<String>,
    /// Operators in the world.
    pub operators: usize,
    /// Eligible nodes when the first job arrived.
    pub eligible_nodes_at_start: usize,
    /// Placement decisions (job attempts, all stages of one attempt together).
    pub decisions: u64,
    /// Decisions that found committees.
    pub placed: u64,
    /// Jobs that could not be placed (each counted once; the job then fails). A job that finds no committee
    /// for lack of free memory waits and tries again (up to 600 times, once a simulated second) first.
    pub unplaced: u64,
    /// Decisions that found no committee for lack of free memory, after which the job waited.
    pub deferred: u64,
    /// Why, by reason.
    pub unplaced_reasons: BTreeMap<String, u64>,
    /// Attempts after the first.
    pub retries: u64,
    /// Jobs verified and done.
    pub done_jobs: u64,
    /// Jobs failed after their last attempt (or unplaceable).
    pub failed_jobs: u64,
    /// Decisions per second of time spent deciding (selection + reservation).
    pub decisions_per_s: f64,
    /// Median decision time, microseconds.
    pub p50_decision_us: f64,
    /// 99th percentile decision time, microseconds.
    pub p99_decision_us: f64,
    /// Slowest decision, microseconds.
    pub max_decision_us: f64,
    /// Wall time of the whole simulation loop (decisions, releases, heartbeats, bookkeeping), seconds.
    pub wall_s: f64,
    /// Decisions per wall second of the whole loop.
    pub wall_decisions_per_s: f64,
    /// Simulated seconds from the first arrival to the last completion.
    pub simulated_s: f64,
    /// max U / mean U over nodes eligible for the whole run (see [`checker`]).
    pub max_over_mean_utilisation: f64,
    /// Mean U over that population.
    pub mean_utilisation: f64,
    /// Size of that population.
    pub utilisation_nodes: usize,
    /// Committees with two members in one collusion domain, found by the checker.
    pub collusion_violations: u64,
    /// Memory over-reservations found by the checker.
    pub memory_violations: u64,
    /// Members on probation, long down, or excluded, found by the checker.
    pub ineligible_selections: u64,
    /// Committees the checker replayed.
    pub committees_checked: u64,
    /// Mean over committees of the largest RTT between two parties, milliseconds.
    pub mean_party_rtt_ms: f64,
    /// Mean estimated duration of a placed attempt (slowest member's busy seconds plus rounds times the
    /// largest party RTT, summed over stages), seconds.
    pub mean_attempt_s: f64,
    /// The same for random non-colluding committees of eligible nodes (what latency-blind selection gets).
    pub random_party_rtt_ms: f64,
    /// Nodes whose reputation ended below the selection minimum, by hidden behaviour.
    pub distrusted_honest: usize,
    /// Flaky nodes distrusted at the end.
    pub distrusted_flaky: usize,
    /// Malicious nodes distrusted at the end.
    pub distrusted_malicious: usize,
    /// Malicious nodes in the world.
    pub malicious_nodes: usize,
    /// How committees were chosen: "draw" or "cheapest".
    pub selection: String,
    /// Fraction of the operators that are adversarial.
    pub adversary_operators: f64,
    /// Nodes run by adversarial operators.
    pub adversarial_nodes: usize,
    /// Their share of the nodes eligible when the first job arrived.
    pub adversarial_eligible_share: f64,
    /// Committees (one per placed stage) the adversary captured (see [`capture_probability`]).
    pub captured: u64,
    /// `captured` over the committees placed.
    pub captured_committees: f64,
    /// The mean over placed committees of [`capture_probability`] for a uniformly random draw among the
    /// eligible nodes (see [`capture_bound_for`]).
    pub capture_bound: f64,
}

/// Whether the adversary captured a committee of a dealer protocol: it holds every party, or the dealer
/// and at least one party.
pub fn captured(parties: &[bool], dealer: bool) -> bool {
    parties.iter().all(|&a| a) || (dealer && parties.iter().any(|&a| a))
}

/// The probability that a committee of `n` parties and a dealer is captured when each party is adversarial
/// independently with probability `a` and the dealer with probability `d`:
///
/// `P(n, a, d) = a^n + d * (1 - (1 - a)^n - a^n)`
///
/// (every party adversarial; or, not all of them but at least one, and the dealer). For a draw without
/// replacement and with distinct operators, as committees are, the chance of further adversarial members
/// only falls after each adversarial pick, so this is the reference figure of a uniform draw.
pub fn capture_probability(n: u32, a: f64, d: f64) -> f64 {
    let all = a.powi(n as i32);
    all + d * (1.0 - (1.0 - a).powi(n as i32) - all)
}

/// The capture bound of one committee shape: [`capture_probability`] with `a` the adversary's share of
/// the eligible nodes (`(memory, adversarial)` pairs) whose memory fits a party, and `d` its share of those
/// whose memory fits the dealer. Shares are by count: a uniformly random draw among the eligible nodes.
pub fn capture_bound_for(eligible: &[(u64, bool)], demand: &JobDemand) -> f64 {
    let share = |need: u64| {
        let (mut all, mut bad) = (0u64, 0u64);
        for &(m, adv) in eligible {
            if m >= need {
                all += 1;
                bad += u64::from(adv);
            }
        }
        if all == 0 {
            0.0
        } else {
            bad as f64 / all as f64
        }
    };
    capture_probability(
        u32::from(demand.parties),
        share(demand.party.memory_bytes),
        // No dealer: only the parties capture the committee.
        demand.dealer.map_or(0.0, |r| share(r.memory_bytes)),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SimEvent {
    /// Heartbeats and sweep.
    Tick,
    /// Ground truth: node goes down.
    Down(u32),
    /// Ground truth: node comes back.
    Up(u32),
    /// Job `j` arrives.
    Arrive(u64),
    /// Job `j`'s attempt `a` ends.
    Complete(u64, u32),
    /// Job `j` tries again to find a committee (it found none for lack of free memory).
    Retry(u64),
}

/// How long a job that found no committee for lack of free memory waits before it tries again, and how
/// many times it may (the coordinator, too, keeps such a job waiting rather than failing it).
const RETRY_AFTER_MS: u64 = 1_000;
const MAX_WAITS: u32 = 600;

const HEARTBEAT_PERIOD_MS: u64 = 5_000;
const HEARTBEAT_TIMEOUT_MS: u64 = 15_000;
const WARMUP_MS: u64 = HEARTBEAT_TIMEOUT_MS + 2 * HEARTBEAT_PERIOD_MS;

fn reason_name(u: &Unplaceable) -> &'static str {
    match u {
        Unplaceable::TooFewParties { .. } => "too_few_parties",
        Unplaceable::NotEnoughEligibleNodes { .. } => "not_enough_eligible_nodes",
        Unplaceable::InsufficientMemory { .. } => "insufficient_memory",
        Unplaceable::NotEnoughCollusionDomains { .. } => "not_enough_collusion_domains",
        Unplaceable::NoNonCollidingAssignment { .. } => "no_non_colliding_assignment",
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1_000.0
}

/// Runs a simulation.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimError> {
    if cfg.parties < 2 {
        return Err(SimError::Params("parties must be at least 2"));
    }
    if cfg.nodes == 0 {
        return Err(SimError::Params("nodes must be at least 1"));
    }
    if !(cfg.target_load > 0.0 && cfg.target_load < 1.0) {
        return Err(SimError::Params("target_load must be in (0, 1)"));
    }
    let committee = cfg.parties as usize + 2;
    let mut rng = synth::rng(cfg.seed);
    let world = synth::world_with(cfg.nodes, committee, &cfg.adversary, &mut rng);
    let config = Config {
        collusion_keys: cfg.collusion_keys.clone(),
        heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_MS,
        selection: cfg.tuning,
        ..Config::default()
    };
    let min_reputation = config.min_reputation;
    let mut reg = Registry::new(config)?;
    for a in 0..synth::REGIONS.len() {
        for b in a..synth::REGIONS.len() {
            reg.configure_region_rtt(
                synth::REGIONS[a].name,
                synth::REGIONS[b].name,
                synth::region_rtt_us(a, b),
            );
        }
    }

    // Registration, trials, RTT reports.
    let mut ids = Vec::with_capacity(world.nodes.len());
    for n in &world.nodes {
        let id = reg.register(n.registration.clone(), 0)?;
        // A node that does not pass stays on probation in this world (its trial never completes).
        if n.passes_trial {
            let (ops, bandwidth) = if cfg.believe_claims {
                (n.registration.hardware.ops_per_s() as u64, None)
            } else {
                (
                    n.measured_ops_per_s,
                    Some(crate::registry::Measured {
                        bandwidth_bytes_per_s: n.measured_bandwidth_bytes_per_s,
                        memory_bytes: n.measured_memory_bytes,
                    }),
                )
            };
            reg.record_trial_measured(id, true, Some(ops), bandwidth, 0)?;
        }
        ids.push(id);
    }
    let n = world.nodes.len();
    for (i, &id) in ids.iter().enumerate() {
        let mut rtts = Vec::with_capacity(16);
        for _ in 0..16.min(n.saturating_sub(1)) {
            let j = rng.random_range(0..n);
            if j == i {
                continue;
            }
            let base = f64::from(synth::region_rtt_us(world.region_of[i], world.region_of[j]));
            let us = base * rng.random_range(0.8..1.25) + rng.random_range(0.0..1_000.0);
            rtts.push((ids[j], us as u32));
        }
        if world.nodes[i].adversarial {
            // Near-zero RTTs to other adversarial nodes (of any adversarial operator).
            let bad: Vec<usize> = (0..16)
                .map(|_| rng.random_range(0..n))
                .filter(|&j| j != i && world.nodes[j].adversarial)
                .collect();
            for j in bad {
                rtts.push((ids[j], rng.random_range(50..150)));
            }
        }
        reg.report_rtts(id, &rtts)?;
    }

    // Workload: the arrival rate for the target load (capacity-proportional spreading, see the module doc).
    let models = synth::models();
    let mut plans: Vec<(f64, Vec<JobDemand>)> = Vec::new();
    for (_, share, model) in &models {
        let stages = model
            .plan(cfg.parties, synth::MAX_STAGE_MEMORY)?
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        plans.push((*share, stages));
    }
    let admitted: Vec<usize> = (0..n)
        .filter(|&i| world.nodes[i].passes_trial && !world.nodes[i].down_at_start)
        .collect();
    let sum_rate: f64 = admitted
        .iter()
        .map(|&i| world.nodes[i].measured_ops_per_s as f64)
        .sum();
    let sum_bw: f64 = admitted
        .iter()
        .map(|&i| world.nodes[i].registration.hardware.bandwidth_bytes_per_s as f64)
        .sum();
    let mut busy_per_job = 0.0;
    for (share, stages) in &plans {
        for d in stages {
            let ops = d.party.ops as f64 * f64::from(d.parties)
                + d.role(Role::Dealer).ops as f64
                + d.role(Role::Verifier).ops as f64;
            let bytes = d.party.bytes as f64 * f64::from(d.parties)
                + d.role(Role::Dealer).bytes as f64
                + d.role(Role::Verifier).bytes as f64;
            busy_per_job +=
                share * (ops / sum_rate.max(1.0) + bytes / sum_bw.max(1.0)) * admitted.len() as f64;
        }
    }
    let lambda_per_ms = cfg.target_load * admitted.len() as f64 / busy_per_job.max(1e-9) / 1_000.0;
    let expected_run_ms = cfg.jobs as f64 / lambda_per_ms.max(1e-12);

    // Ground-truth timeline.
    let mut queue: BinaryHeap<Reverse<(Millis, u64, SimEvent)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push =
        |q: &mut BinaryHeap<Reverse<(Millis, u64, SimEvent)>>, at: Millis, ev: SimEvent| {
            seq += 1;
            q.push(Reverse((at, seq, ev)));
        };
    let mut truly_up: Vec<bool> = world.nodes.iter().map(|w| !w.down_at_start).collect();
    let mut log: Vec<LogEvent> = Vec::new();
    for (i, w) in world.nodes.iter().enumerate() {
        if w.down_at_start {
            log.push(LogEvent::Down {
                at: 0,
                node: ids[i],
            });
        }
        if let Some((a, b)) = w.churn {
            push(
                &mut queue,
                WARMUP_MS + (a * expected_run_ms) as Millis,
                SimEvent::Down(i as u32),
            );
            push(
                &mut queue,
                WARMUP_MS + (b * expected_run_ms) as Millis,
                SimEvent::Up(i as u32),
            );
        }
    }
    push(&mut queue, 0, SimEvent::Tick);
    push(&mut queue, WARMUP_MS, SimEvent::Arrive(0));

    let policy = JobPolicy {
        max_attempts: cfg.max_attempts.max(1),
        timeouts: PhaseTimeouts::default(),
    };
    let mut jobs: Vec<Option<Job>> = Vec::with_capacity(cfg.jobs);
    let mut active_jobs_of = vec![0u32; n];
    let mut report = SimReport {
        nodes: n,
        jobs: cfg.jobs,
        parties: cfg.parties,
        seed: cfg.seed,
        collusion_keys: cfg
            .collusion_keys
            .iter()
            .map(|k| k.name().to_owned())
            .collect(),
        operators: world.operators,
        eligible_nodes_at_start: 0,
        decisions: 0,
        placed: 0,
        unplaced: 0,
        deferred: 0,
        unplaced_reasons: BTreeMap::new(),
        retries: 0,
        done_jobs: 0,
        failed_jobs: 0,
        decisions_per_s: 0.0,
        p50_decision_us: 0.0,
        p99_decision_us: 0.0,
        max_decision_us: 0.0,
        wall_s: 0.0,
        wall_decisions_per_s: 0.0,
        simulated_s: 0.0,
        max_over_mean_utilisation: 0.0,
        mean_utilisation: 0.0,
        utilisation_nodes: 0,
        collusion_violations: 0,
        memory_violations: 0,
        ineligible_selections: 0,
        committees_checked: 0,
        mean_party_rtt_ms: 0.0,
        random_party_rtt_ms: 0.0,
        mean_attempt_s: 0.0,
        distrusted_honest: 0,
        distrusted_flaky: 0,
        distrusted_malicious: 0,
        malicious_nodes: world
            .nodes
            .iter()
            .filter(|w| w.behaviour == Behaviour::Malicious)
            .count(),
        selection: match cfg.tuning.mode {
            crate::registry::SelectionMode::Draw => "draw".to_owned(),
            crate::registry::SelectionMode::Cheapest => "cheapest".to_owned(),
        },
        adversary_operators: cfg.adversary.fraction,
        adversarial_nodes: world.nodes.iter().filter(|w| w.adversarial).count(),
        adversarial_eligible_share: 0.0,
        captured: 0,
        captured_committees: 0.0,
        capture_bound: 0.0,
    };
    let mut waits: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut eligible_at_start: Vec<(u64, bool)> = Vec::new();
    let mut bound_cache: std::collections::HashMap<(u64, Option<u64>, u8), f64> =
        std::collections::HashMap::new();
    let mut bound_sum = 0.0;
    let mut committees_placed = 0u64;
    let mut decision_ns: Vec<u64> = Vec::with_capacity(cfg.jobs + cfg.jobs / 10);
    let mut party_rtt_sum = 0.0;
    let mut party_rtt_count = 0u64;
    let mut attempt_s_sum = 0.0;
    let mut last_completion: Millis = WARMUP_MS;
    let mut arrivals_done = false;
    let mut live = 0usize;
    let wall = Instant::now();

    while let Some(Reverse((now, _, ev))) = queue.pop() {
        let mut to_place: Option<u64> = None;
        match ev {
            SimEvent::Tick => {
                for (i, &id) in ids.iter().enumerate() {
                    if truly_up[i] {
                        let q = active_jobs_of[i];
                        let cores = world.nodes[i].registration.hardware.cores.max(1);
                        let hb = Heartbeat {
                            status: ReportedStatus::Ready,
                            load: (q as f32 / cores as f32).min(1.0),
                            queue_len: q,
                        };
                        reg.heartbeat(id, hb, now)?;
                    }
                }
                reg.sweep(now);
                if !(arrivals_done && live == 0) {
                    push(&mut queue, now + HEARTBEAT_PERIOD_MS, SimEvent::Tick);
                }
            }
            SimEvent::Down(i) => {
                truly_up[i as usize] = false;
                log.push(LogEvent::Down {
                    at: now,
                    node: ids[i as usize],
                });
            }
            SimEvent::Up(i) => {
                truly_up[i as usize] = true;
                log.push(LogEvent::Up {
                    at: now,
                    node: ids[i as usize],
                });
            }
            SimEvent::Arrive(j) => {
                if j == 0 {
                    report.eligible_nodes_at_start = reg.eligible_count();
                    eligible_at_start = reg
                        .nodes()
                        .filter(|e| e.is_eligible())
                        .map(|e| {
                            (
                                e.hardware().memory_bytes,
                                world.nodes[e.id().index()].adversarial,
                            )
                        })
                        .collect();
                    let bad = eligible_at_start.iter().filter(|&&(_, a)| a).count();
                    report.adversarial_eligible_share =
                        bad as f64 / eligible_at_start.len().max(1) as f64;
                }
                let x = rng.random::<f64>();
                let mut acc = 0.0;
                let mut pick = plans.len() - 1;
                for (k, (share, _)) in plans.iter().enumerate() {
                    acc += share;
                    if x < acc {
                        pick = k;
                        break;
                    }
                }
                let stages = plans[pick].1.clone();
                jobs.push(Some(Job::new(
                    JobId(j),
                    stages,
                    keyed_hash(cfg.seed, j),
                    policy,
                    now,
                )));
                live += 1;
                to_place = Some(j);
                if (j + 1) < cfg.jobs as u64 {
                    let gap = -(1.0 - rng.random::<f64>()).ln() / lambda_per_ms.max(1e-12);
                    push(
                        &mut queue,
                        now + gap.round() as Millis,
                        SimEvent::Arrive(j + 1),
                    );
                } else {
                    arrivals_done = true;
                }
            }
            SimEvent::Retry(j) => to_place = Some(j),
            SimEvent::Complete(j, attempt) => {
                last_completion = last_completion.max(now);
                let Some(job) = jobs[j as usize].as_mut() else {
                    continue;
                };
                if job.attempt() != attempt {
                    continue;
                }
                let placements: Vec<Placement> = job.placements().to_vec();
                // Who fails, if anyone (first failing member in committee order).
                let mut failure: Option<(FailureCause, Vec<NodeId>)> = None;
                'outer: for p in &placements {
                    for (role, m) in p.committee.members() {
                        let w = &world.nodes[m.index()];
                        if rng.random::<f64>() < w.fail_prob {
                            failure = Some(match (w.behaviour, role) {
                                (Behaviour::Malicious, Role::Party(_)) => (
                                    FailureCause::VerificationFailed,
                                    p.committee.parties.clone(),
                                ),
                                _ if rng.random::<bool>() => {
                                    (FailureCause::Timeout(crate::Phase::Running), vec![m])
                                }
                                _ => (FailureCause::NodeFailure, vec![m]),
                            });
                            break 'outer;
                        }
                    }
                }
                let fx = match failure {
                    None => {
                        job.apply(Event::OutputReady, now)?;
                        job.apply(Event::Verified, now)?
                    }
                    Some((FailureCause::VerificationFailed, blamed)) => {
                        job.apply(Event::OutputReady, now)?;
                        job.apply(
                            Event::Fail {
                                cause: FailureCause::VerificationFailed,
                                blamed,
                            },
                            now,
                        )?
                    }
                    Some((cause, blamed)) => job.apply(Event::Fail { cause, blamed }, now)?,
                };
                for p in &fx.release {
                    reg.release(p);
                    for (_, m) in p.committee.members() {
                        active_jobs_of[m.index()] = active_jobs_of[m.index()].saturating_sub(1);
                    }
                }
                log.push(LogEvent::Release { at: now, job: j });
                for &(m, o) in &fx.outcomes {
                    reg.record_outcome(m, o, now)?;
                }
                if fx.reschedule {
                    report.retries += 1;
                    to_place = Some(j);
                } else {
                    if job.phase() == crate::Phase::Done {
                        report.done_jobs += 1;
                    } else {
                        report.failed_jobs += 1;
                    }
                    jobs[j as usize] = None;
                    live -= 1;
                }
            }
        }
        let Some(j) = to_place else { continue };
        let Some(job) = jobs[j as usize].as_mut() else {
            continue;
        };
        let stages = job.stages.clone();
        let seed = job.attempt_seed();
        let excluded = job.excluded().to_vec();
        let t = Instant::now();
        let result = reg.place_stages(&stages, seed, &excluded);
        decision_ns.push(t.elapsed().as_nanos() as u64);
        report.decisions += 1;
        match result {
            Ok(placements) => {
                report.placed += 1;
                let mut longest = 0.0f64;
                let mut logged = Vec::with_capacity(placements.len());
                for p in &placements {
                    let parties = &p.committee.parties;
                    let adv: Vec<bool> = parties
                        .iter()
                        .map(|m| world.nodes[m.index()].adversarial)
                        .collect();
                    let dealer_adv = p
                        .committee
                        .dealer
                        .is_some_and(|d| world.nodes[d.index()].adversarial);
                    report.captured += u64::from(captured(&adv, dealer_adv));
                    committees_placed += 1;
                    let d = &p.demand;
                    bound_sum += *bound_cache
                        .entry((
                            d.party.memory_bytes,
                            d.dealer.map(|r| r.memory_bytes),
                            d.parties,
                        ))
                        .or_insert_with(|| capture_bound_for(&eligible_at_start, d));
                    let mut rtt_max = 0u32;
                    for (a, &x) in parties.iter().enumerate() {
                        for &y in &parties[..a] {
                            rtt_max = rtt_max.max(reg.rtt_us(x, y));
                        }
                    }
                    party_rtt_sum += f64::from(rtt_max) / 1_000.0;
                    party_rtt_count += 1;
                    let mut slowest = 0.0f64;
                    for (role, m) in p.committee.members() {
                        active_jobs_of[m.index()] += 1;
                        if let Some(e) = reg.node(m) {
                            slowest =
                                slowest.max(e.hardware().service_seconds(p.demand.role(role)));
                        }
                    }
                    longest += slowest + f64::from(p.demand.rounds) * f64::from(rtt_max) * 1e-6;
                    logged.push((p.committee.members().map(|(_, m)| m).collect(), p.demand));
                }
                attempt_s_sum += longest;
                log.push(LogEvent::Place {
                    at: now,
                    job: j,
                    stages: logged,
                    excluded,
                });
                job.apply(Event::Schedule(placements), now)?;
                job.apply(Event::Start, now)?;
                let done_at = now + ((longest * 1_000.0).ceil() as Millis).max(1);
                push(&mut queue, done_at, SimEvent::Complete(j, job.attempt()));
            }
            Err(e)
                if matches!(e.reason, Unplaceable::InsufficientMemory { .. })
                    && waits.get(&j).copied().unwrap_or(0) < MAX_WAITS =>
            {
                *waits.entry(j).or_default() += 1;
                report.deferred += 1;
                push(&mut queue, now + RETRY_AFTER_MS, SimEvent::Retry(j));
            }
            Err(e) => {
                report.unplaced += 1;
                *report
                    .unplaced_reasons
                    .entry(reason_name(&e.reason).to_owned())
                    .or_default() += 1;
                job.apply(
                    Event::Fail {
                        cause: FailureCause::Unplaceable(e.to_string()),
                        blamed: Vec::new(),
                    },
                    now,
                )?;
                report.failed_jobs += 1;
                jobs[j as usize] = None;
                live -= 1;
            }
        }
    }
    report.wall_s = wall.elapsed().as_secs_f64();
    if committees_placed > 0 {
        report.captured_committees = report.captured as f64 / committees_placed as f64;
        report.capture_bound = bound_sum / committees_placed as f64;
    }

    decision_ns.sort_unstable();
    let total_ns: u64 = decision_ns.iter().sum();
    report.decisions_per_s = if total_ns > 0 {
        report.decisions as f64 / (total_ns as f64 * 1e-9)
    } else {
        0.0
    };
    report.p50_decision_us = percentile(&decision_ns, 0.50);
    report.p99_decision_us = percentile(&decision_ns, 0.99);
    report.max_decision_us = decision_ns.last().map_or(0.0, |&x| x as f64 / 1_000.0);
    report.wall_decisions_per_s = report.decisions as f64 / report.wall_s.max(1e-9);
    report.simulated_s = (last_completion.saturating_sub(WARMUP_MS)) as f64 / 1_000.0;
    report.mean_attempt_s = if report.placed > 0 {
        attempt_s_sum / report.placed as f64
    } else {
        0.0
    };
    report.mean_party_rtt_ms = if party_rtt_count > 0 {
        party_rtt_sum / party_rtt_count as f64
    } else {
        0.0
    };

    // Baseline: random committees of eligible nodes with distinct operators.
    let eligible: Vec<NodeId> = reg
        .nodes()
        .filter(|e| e.is_eligible())
        .map(|e| e.id())
        .collect();
    let mut sum = 0.0;
    let mut count = 0u32;
    if eligible.len() > committee {
        for _ in 0..2_000 {
            let mut chosen: Vec<NodeId> = Vec::with_capacity(cfg.parties as usize);
            let mut tries = 0;
            while chosen.len() < cfg.parties as usize && tries < 1_000 {
                tries += 1;
                let c = eligible[rng.random_range(0..eligible.len())];
                if chosen.iter().all(|&o| !reg.collide(o, c)) {
                    chosen.push(c);
                }
            }
            let mut m = 0u32;
            for (a, &x) in chosen.iter().enumerate() {
                for &y in &chosen[..a] {
                    m = m.max(reg.rtt_us(x, y));
                }
            }
            sum += f64::from(m) / 1_000.0;
            count += 1;
        }
    }
    report.random_party_rtt_ms = if count > 0 {
        sum / f64::from(count)
    } else {
        0.0
    };

    for (i, w) in world.nodes.iter().enumerate() {
        let trusted = reg
            .node(ids[i])
            .is_some_and(|e| e.reputation() >= min_reputation);
        if w.passes_trial && !trusted {
            match w.behaviour {
                Behaviour::Honest => report.distrusted_honest += 1,
                Behaviour::Flaky => report.distrusted_flaky += 1,
                Behaviour::Malicious => report.distrusted_malicious += 1,
            }
        }
    }

    let truth: Vec<TruthNode> = world
        .nodes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut hardware = w.registration.hardware.clone();
            hardware.measured_ops_per_s = w.passes_trial.then_some(w.measured_ops_per_s);
            // Utilisation is of the true hardware (an adversary's claimed bandwidth is not its own).
            hardware.bandwidth_bytes_per_s = w.measured_bandwidth_bytes_per_s;
            hardware.memory_bytes = w.measured_memory_bytes;
            TruthNode {
                operator: w.registration.operator.clone(),
                region: w.registration.region.clone(),
                asn: w.registration.asn,
                hardware,
                passed_trial: w.passes_trial,
                ever_down: w.down_at_start || w.churn.is_some(),
                trusted_at_end: reg
                    .node(ids[i])
                    .is_some_and(|e| e.reputation() >= min_reputation),
            }
        })
        .collect();
    let findings = checker::check(
        &truth,
        &cfg.collusion_keys,
        &log,
        HEARTBEAT_TIMEOUT_MS + HEARTBEAT_PERIOD_MS,
        report.simulated_s,
    );
    report.collusion_violations = findings.collusion_violations;
    report.memory_violations = findings.memory_violations;
    report.ineligible_selections = findings.ineligible_selections;
    report.committees_checked = findings.committees;
    report.max_over_mean_utilisation = findings.max_over_mean_utilisation;
    report.mean_utilisation = findings.mean_utilisation;
    report.utilisation_nodes = findings.utilisation_nodes;
    Ok(report)
}
