//! Trials over QUIC: pairing a node on probation (the subject) with an examiner and a dealer, the signed
//! committee manifest, the members' acceptances and reports, and the outcome. What is measured, by whom,
//! and what a lying subject or examiner can do is in `veil_node::trial` and [`crate::trial`].
//!
//! Pairing (when a subject on probation heartbeats and takes part in no trial):
//! - the examiner is an active node of another operator, the least loaded first, that is a party of no
//!   other trial;
//! - at bootstrap (no such active node) another fresh node on probation of another operator examines it,
//!   and the two examine each other: one run is the trial of both (a pair whose answer was wrong is not
//!   paired again);
//! - the dealer is any other fresh node, active ones and those of another operator than the subject's
//!   first;
//! - with no examiner or no dealer the subject waits on probation and is paired on a later heartbeat;
//! - an active node without a measurement (admitted before trials measured anything) is examined the same
//!   way, by an active examiner only; its failure blames nobody (it passed a trial already) and it is
//!   examined again after [`REEXAM_BACKOFF`] trial timeouts, so that selection does not compare its claim
//!   with the measurements of newer nodes.
//!
//! Outcome: the two parties' output shares are opened and checked outside the lock ([`crate::trial`]);
//! a pass admits the subject (both, at bootstrap) with the measured rate and records both RTT reports. A
//! wrong answer, a party's failure, or no reports within `trial_timeout_ms` count against the subject
//! (it is rejected) only if its examiner and dealer were active nodes when it was paired (they passed a
//! trial of their own); otherwise the trial is given up and the subject is paired again.
//!
//! Invariants: a node is a party of at most one trial; a trial is in `Core::trials` until decided; trials
//! are not persisted (a restarted coordinator pairs afresh).

use std::cmp::Ordering;

use veil_engine::WeightMode;
use veil_node::api::{TaskRole, TrialReport, TrialTask, MAX_TRIAL_OUTPUTS, MAX_TRIAL_REASON_BYTES};
use veil_node::manifest::{Manifest, ModelSpec, Protocol, SignedManifest};
use veil_node::wire::JobId as RunId;
use veil_node::PublicKey;
use veil_scheduler::{Millis, NodeEntry, NodeId, NodeState, Trial};

use super::Core;
use crate::error::{Error, Result};

/// After a failed re-examination of an active node, trial timeouts before the next one.
pub const REEXAM_BACKOFF: u64 = 10;

/// One trial in flight.
#[derive(Debug, Clone)]
pub(crate) struct TrialRun {
    /// The public seeds.
    seeds: TrialSeeds,
    /// Hex of the postcard `SignedManifest`.
    manifest: String,
    /// Party 0 (the subject) and party 1 (the examiner).
    parties: [NodeId; 2],
    dealer: NodeId,
    /// A bootstrap pair: both were on probation, each examines the other.
    mutual: bool,
    /// The examiner and the dealer were active when paired: a failure counts against the subject.
    trusted: bool,
    /// Party 0, party 1, the dealer.
    accepted: [bool; 3],
    reports: [Option<TrialReport>; 2],
    deadline: Millis,
    /// The opened output is being checked outside the lock.
    checking: bool,
}

impl TrialRun {
    fn task_for(&self, node: NodeId) -> Option<TrialTask> {
        let role = match self.parties.iter().position(|&p| p == node) {
            Some(index) => TaskRole::Party { index },
            None if self.dealer == node => TaskRole::Dealer,
            None => return None,
        };
        Some(TrialTask {
            id: self.seeds.id,
            workload: self.seeds.workload.clone(),
            model_seed: self.seeds.model_seed,
            input_seed: self.seeds.input_seed,
            share_seed: self.seeds.share_seed,
            role,
            manifest: self.manifest.clone(),
            go: self.accepted.iter().all(|&a| a),
        })
    }

    /// Party 0, party 1, the dealer.
    fn members(&self) -> [NodeId; 3] {
        [self.parties[0], self.parties[1], self.dealer]
    }

    fn member_index(&self, node: NodeId) -> Option<usize> {
        match self.parties.iter().position(|&p| p == node) {
            Some(i) => Some(i),
            None => (self.dealer == node).then_some(2),
        }
    }
}

/// A trial's public seeds (what the plaintext reference is computed from).
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSeeds {
    /// The trial's nonce.
    pub id: u64,
    /// The workload.
    pub workload: String,
    /// Seed of its weights.
    pub model_seed: u64,
    /// Seed of its input.
    pub input_seed: u64,
    /// Seed of the public dealing of the shares.
    pub share_seed: u64,
}

/// Both parties' output shares of a trial, to be opened and checked outside the lock.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialCheck {
    /// The trial's seeds.
    pub seeds: TrialSeeds,
    /// Party 0's and party 1's output shares.
    pub shares: Vec<Vec<u64>>,
}

/// What a trial report calls for.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialStep {
    /// The other party's report is still missing (or the check is already under way).
    Wait,
    /// Both shares are in: check them ([`crate::trial::check`]), then [`Core::record_trial_check`].
    Check(TrialCheck),
    /// A party failed: the trial is decided.
    Decided,
}

/// Why a trial failed.
enum Failure {
    WrongAnswer,
    PartyFailed,
    Timeout,
}

impl Failure {
    fn text(&self) -> &'static str {
        match self {
            Failure::WrongAnswer => "wrong answer",
            Failure::PartyFailed => "a party failed",
            Failure::Timeout => "no report in time",
        }
    }
}

/// The order in which candidates are picked: least loaded, fewest reservations, lowest id.
fn by_load(a: &NodeEntry, b: &NodeEntry) -> Ordering {
    a.reported()
        .load
        .total_cmp(&b.reported().load)
        .then(a.active_jobs().cmp(&b.active_jobs()))
        .then(a.id().cmp(&b.id()))
}

impl Core {
    /// `node`'s trials for its heartbeat reply; a fresh node on probation that takes part in no trial as a
    /// party is paired first (see the module doc).
    pub(super) fn trials_of(&mut self, node: NodeId, now: Millis) -> Result<Vec<TrialTask>> {
        let due = self.exam_after.get(&node).is_none_or(|&at| now >= at);
        let pending = self.registry.node(node).is_some_and(|n| {
            n.trial() == Trial::Pending
                || (n.state() == NodeState::Active && n.hardware().measured_ops_per_s.is_none())
        });
        if pending && due && self.fresh(node, now) && !self.in_trial(node) {
            self.pair_trial(node, now)?;
        }
        Ok(self
            .trials
            .values()
            .filter_map(|r| r.task_for(node))
            .collect())
    }

    /// Whether `node` heartbeats (within the stale bound) and is not drained.
    fn fresh(&self, node: NodeId, now: Millis) -> bool {
        let revoked = self.nodes.get(node.index()).is_some_and(|x| x.revoked);
        !revoked
            && self.registry.node(node).is_some_and(|n| {
                now.saturating_sub(n.last_heartbeat()) <= self.config.stale_ms()
                    && matches!(n.state(), NodeState::Active | NodeState::Probation)
            })
    }

    /// Whether `node` is a party of a trial.
    fn in_trial(&self, node: NodeId) -> bool {
        self.trials.values().any(|r| r.parties.contains(&node))
    }

    /// Pairs `subject` with an examiner and a dealer and signs the trial's manifest; `None` if there is
    /// no examiner or no dealer (the subject waits).
    pub(super) fn pair_trial(&mut self, subject: NodeId, now: Millis) -> Result<Option<u64>> {
        let Some((operator, reexam)) = self.registry.node(subject).map(|n| {
            (
                n.registration().operator.clone(),
                n.trial() == Trial::Passed,
            )
        }) else {
            return Ok(None);
        };
        let mut others: Vec<&NodeEntry> = self
            .registry
            .nodes()
            .filter(|n| n.id() != subject && self.fresh(n.id(), now))
            .collect();
        others.sort_by(|a, b| by_load(a, b));
        let examinable: Vec<&NodeEntry> = others
            .iter()
            .copied()
            .filter(|n| n.registration().operator != operator && !self.in_trial(n.id()))
            .collect();
        let active = examinable.iter().find(|n| n.state() == NodeState::Active);
        let (examiner, mutual) = match active {
            Some(n) => (n.id(), false),
            // An active node is examined by active nodes only.
            None if reexam => return Ok(None),
            None => match examinable.iter().find(|n| {
                n.state() == NodeState::Probation
                    && !self.failed_pairs.contains(&pair_key(subject, n.id()))
            }) {
                Some(n) => (n.id(), true),
                None => return Ok(None),
            },
        };
        // Active dealers first, then those of another operator than the subject's, then by load.
        let dealer = others
            .iter()
            .filter(|n| n.id() != examiner)
            .min_by(|a, b| {
                (a.state() != NodeState::Active)
                    .cmp(&(b.state() != NodeState::Active))
                    .then(
                        (a.registration().operator == operator)
                            .cmp(&(b.registration().operator == operator)),
                    )
                    .then(by_load(a, b))
            })
            .map(|n| (n.id(), n.state() == NodeState::Active));
        let Some((dealer, dealer_active)) = dealer else {
            return Ok(None);
        };
        let seeds = TrialSeeds {
            id: rand::random(),
            workload: self.config.trial_workload.clone(),
            model_seed: u64::from(rand::random::<u32>()),
            input_seed: u64::from(rand::random::<u32>()),
            share_seed: rand::random(),
        };
        let manifest = Manifest {
            job: RunId(rand::random()),
            protocol: Protocol::Semi2k,
            model: ModelSpec {
                workload: seeds.workload.clone(),
                seed: seeds.model_seed,
                weights: WeightMode::Shared,
                frac_bits: veil_node::trial::FRAC_BITS,
                deployed: None,
            },
            batch: 1,
            inferences: 1,
            parties: vec![self.member(subject)?, self.member(examiner)?],
            dealer: Some(self.member(dealer)?),
            client: self.identity.public_key(),
            output_key: None,
            verifier: None,
        };
        let signed: SignedManifest = manifest.sign(&self.identity).map_err(Error::invariant)?;
        let id = seeds.id;
        tracing::info!(
            trial = id,
            subject = %subject,
            examiner = %examiner,
            dealer = %dealer,
            mutual,
            "trial paired"
        );
        // The members' held heartbeats learn of the trial at once.
        self.woken.extend([subject, examiner, dealer]);
        self.trials.insert(
            id,
            TrialRun {
                seeds,
                manifest: hex::encode(postcard::to_stdvec(&signed).map_err(Error::invariant)?),
                parties: [subject, examiner],
                dealer,
                mutual,
                trusted: !mutual && !reexam && dealer_active,
                accepted: [false; 3],
                reports: [None, None],
                deadline: now.saturating_add(self.config.trial_timeout_ms),
                checking: false,
            },
        );
        Ok(Some(id))
    }

    /// A member of trial `id` accepted its manifest; once all three did, their tasks say `go`.
    pub fn trial_accepted(&mut self, key: &PublicKey, id: u64) -> Result<()> {
        let node = self.node_of(key)?;
        let run = self
            .trials
            .get_mut(&id)
            .ok_or(Error::NoPendingTrial { trial: id })?;
        let i = run
            .member_index(node)
            .ok_or(Error::NoPendingTrial { trial: id })?;
        run.accepted[i] = true;
        if run.accepted.iter().all(|&a| a) {
            // The go reaches the members' held heartbeats at once.
            let members = run.members();
            self.woken.extend(members);
        }
        Ok(())
    }

    /// A party's report of trial `id` (`key` must be one of its parties); returns the reporter and what
    /// the report calls for. A second report of the same party is ignored.
    pub fn trial_report(
        &mut self,
        key: &PublicKey,
        mut report: TrialReport,
        now: Millis,
    ) -> Result<(NodeId, TrialStep)> {
        let node = self.node_of(key)?;
        let id = report.id;
        let run = self
            .trials
            .get_mut(&id)
            .ok_or(Error::NoPendingTrial { trial: id })?;
        let i = run
            .parties
            .iter()
            .position(|&p| p == node)
            .ok_or(Error::NoPendingTrial { trial: id })?;
        if run.reports[i].is_some() {
            return Ok((node, TrialStep::Wait));
        }
        if report.failure.is_none() {
            if report.outputs.len() > MAX_TRIAL_OUTPUTS {
                report.failure = Some("too many outputs".into());
            } else if !(report.online_seconds.is_finite() && report.online_seconds >= 0.0) {
                report.failure = Some("an online time that is not a number of seconds".into());
            }
        }
        if let Some(why) = &mut report.failure {
            if why.len() > MAX_TRIAL_REASON_BYTES {
                let mut end = MAX_TRIAL_REASON_BYTES;
                while !why.is_char_boundary(end) {
                    end -= 1;
                }
                why.truncate(end);
            }
            report.outputs.clear();
        }
        let failed = report.failure.clone();
        run.reports[i] = Some(report);
        if let Some(why) = failed {
            tracing::warn!(trial = id, party = i, reason = %why, "a trial party failed");
            self.fail_trial(id, Failure::PartyFailed, now)?;
            return Ok((node, TrialStep::Decided));
        }
        let [Some(a), Some(b)] = &run.reports else {
            return Ok((node, TrialStep::Wait));
        };
        if run.checking {
            return Ok((node, TrialStep::Wait));
        }
        let check = TrialCheck {
            seeds: run.seeds.clone(),
            shares: vec![a.outputs.clone(), b.outputs.clone()],
        };
        run.checking = true;
        Ok((node, TrialStep::Check(check)))
    }

    /// Records the check of trial `id`: `correct` admits the subject (both, at bootstrap) with the
    /// measured rate (`ops` ring operations over the larger online time the parties reported) and records
    /// both parties' RTT reports; a wrong answer fails the trial (see the module doc).
    pub fn record_trial_check(
        &mut self,
        id: u64,
        correct: bool,
        ops: u64,
        now: Millis,
    ) -> Result<()> {
        if !self.trials.contains_key(&id) {
            return Err(Error::NoPendingTrial { trial: id });
        }
        if !correct {
            return self.fail_trial(id, Failure::WrongAnswer, now);
        }
        let Some(run) = self.trials.remove(&id) else {
            return Err(Error::NoPendingTrial { trial: id });
        };
        self.woken.extend(run.members());
        let online = run
            .reports
            .iter()
            .flatten()
            .map(|r| r.online_seconds)
            .fold(0f64, f64::max)
            .max(1e-6);
        let measured = ((ops as f64 / online).round() as u64).max(1);
        let subjects: &[NodeId] = if run.mutual {
            &run.parties
        } else {
            &run.parties[..1]
        };
        for &s in subjects {
            self.registry
                .record_trial(s, true, Some(measured), now)
                .map_err(Error::invariant)?;
            self.dirty_nodes.insert(s);
            tracing::info!(trial = id, node = %s, measured_ops_per_s = measured, "trial passed");
        }
        for (i, r) in run.reports.iter().enumerate() {
            let Some(us) = r.as_ref().and_then(|r| r.rtt_us) else {
                continue;
            };
            let (me, peer) = (run.parties[i], run.parties[1 - i]);
            self.registry
                .report_rtts(me, &[(peer, us)])
                .map_err(Error::invariant)?;
            self.rtt_pending.insert(me);
        }
        Ok(())
    }

    /// Gives trial `id` up: against the subject if the trial was trusted, else the subject is paired
    /// again (a bootstrap pair with a wrong answer is not paired together again).
    fn fail_trial(&mut self, id: u64, why: Failure, now: Millis) -> Result<()> {
        let Some(run) = self.trials.remove(&id) else {
            return Ok(());
        };
        self.woken.extend(run.members());
        let [subject, examiner] = run.parties;
        let reexam = self
            .registry
            .node(subject)
            .is_some_and(|n| n.trial() == Trial::Passed);
        if reexam {
            let backoff = REEXAM_BACKOFF.saturating_mul(self.config.trial_timeout_ms);
            self.exam_after.insert(subject, now.saturating_add(backoff));
            tracing::warn!(trial = id, node = %subject, reason = why.text(), "re-examination failed: examined again later");
            return Ok(());
        }
        if run.trusted {
            self.registry
                .record_trial(subject, false, None, now)
                .map_err(Error::invariant)?;
            self.dirty_nodes.insert(subject);
            tracing::warn!(trial = id, node = %subject, examiner = %examiner, reason = why.text(), "trial failed: node rejected");
        } else {
            if run.mutual && matches!(why, Failure::WrongAnswer) {
                self.failed_pairs.insert(pair_key(subject, examiner));
            }
            tracing::warn!(trial = id, node = %subject, examiner = %examiner, reason = why.text(), "trial given up (examiner or dealer on probation): paired again");
        }
        Ok(())
    }

    /// Gives up the trials past their deadline (the timer's part).
    pub(super) fn expire_trials(&mut self, now: Millis) -> Result<()> {
        let late: Vec<u64> = self
            .trials
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            // An examiner or dealer that went silent meanwhile is no evidence against the subject.
            let silent = self
                .trials
                .get(&id)
                .is_some_and(|r| !self.fresh(r.parties[1], now) || !self.fresh(r.dealer, now));
            if silent {
                if let Some(r) = self.trials.get_mut(&id) {
                    r.trusted = false;
                }
            }
            self.fail_trial(id, Failure::Timeout, now)?;
        }
        Ok(())
    }
}

/// The unordered pair `(a, b)`.
fn pair_key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}
