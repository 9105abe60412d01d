//! Scheduling: the timer's work. It marks silent nodes down and fails their attempts, applies phase
//! timeouts (blaming the members that did not act), places waiting jobs on a committee (selection and
//! reservation are `veil_scheduler`'s) with a signed manifest, and deletes results past their retention.

use veil_node::envelope::SealingKey;
use veil_node::manifest::{Manifest, Member, ModelSpec, SignedManifest};
use veil_node::wire::JobId as RunId;
use veil_node::PublicKey;
use veil_scheduler::beacon::SeedInput;
use veil_scheduler::explain::{JobExplanation, NodeNames, StageExplanation};
use veil_scheduler::{DomainKey, Effects, Event, FailureCause, Millis, NodeId, Phase, Placement};

use super::beacon::{self, BeaconView};
use super::submission::{check_protocol, weight_mode};
use super::{cause_text, Attempt, Core};
use crate::blobs::BlobDelete;
use crate::error::{Error, Result};

impl Core {
    /// Marks silent nodes down and fails their attempts, drains nodes no longer admitted, applies phase
    /// timeouts, places waiting jobs.
    pub fn tick(&mut self, now: Millis) -> Result<()> {
        self.beacon.advance(&self.identity, now);
        self.persist_rtts_if_due(now);
        let down = self.registry.sweep(now);
        for &n in &down {
            tracing::warn!(node = %n, "node marked down (missed heartbeats)");
            self.dirty_nodes.insert(n);
        }
        self.enforce_admission(now)?;
        self.expire_trials(now)?;
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, e)| !e.job.phase().is_terminal())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.tick_job(id, &down, now)?;
        }
        self.expire_results(now);
        self.prune_jobs(now);
        Ok(())
    }

    /// Deletes the result blobs of jobs finished longer than `result_retention_ms` ago.
    pub(super) fn expire_results(&mut self, now: Millis) {
        let retention = self.config.result_retention_ms;
        for (&id, e) in self.jobs.iter_mut() {
            let finished_at = e.job.history().last().map_or(0, |t| t.at);
            let Some(a) = e.extra.attempt.as_mut() else {
                continue;
            };
            if a.expired
                || !e.job.phase().is_terminal()
                || now.saturating_sub(finished_at) < retention
            {
                continue;
            }
            self.blob_deletes.push(BlobDelete::Attempt {
                job: id,
                attempt: a.number,
            });
            a.expired = true;
            self.dirty_jobs.insert(id);
            tracing::info!(job = id, "result blobs expired and deleted");
        }
    }

    /// One live job at tick time: a member down or a phase timed out fails its attempt; a waiting job is
    /// placed if it can be.
    pub(super) fn tick_job(&mut self, id: u64, down: &[NodeId], now: Millis) -> Result<()> {
        let Some(e) = self.jobs.get(&id) else {
            return Ok(());
        };
        let phase = e.job.phase();
        if let Some(a) = &e.extra.attempt {
            let dead: Vec<NodeId> = a.computing_members().filter(|m| down.contains(m)).collect();
            if !dead.is_empty() && matches!(phase, Phase::Scheduled | Phase::Running) {
                tracing::warn!(
                    job = id,
                    attempt = a.number,
                    ?dead,
                    "member down: attempt fails"
                );
                return self.fail_attempt(id, FailureCause::NodeFailure, dead, now);
            }
        }
        if let Some(Event::Fail { cause, .. }) = e.job.timeout_event(now) {
            let blamed: Vec<NodeId> = match (&e.extra.attempt, phase) {
                (Some(a), Phase::Scheduled) => a
                    .computing_members()
                    .enumerate()
                    .filter(|&(i, _)| !a.accepted[i])
                    .map(|(_, m)| m)
                    .collect(),
                (Some(a), Phase::Verifying) if a.verified => a.verifier.into_iter().collect(),
                (Some(a), Phase::Running | Phase::Verifying) => a
                    .parties
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| !a.outputs[i])
                    .map(|(_, &m)| m)
                    .collect(),
                _ => Vec::new(),
            };
            let cause = match (phase, &e.extra.unplaced) {
                (Phase::Submitted, Some(why)) => FailureCause::Unplaceable(why.clone()),
                _ => cause,
            };
            tracing::warn!(job = id, ?blamed, "phase timed out: {}", cause_text(&cause));
            return self.fail_attempt(id, cause, blamed, now);
        }
        if phase == Phase::Submitted {
            self.try_place(id, now)?;
        }
        Ok(())
    }

    /// Fails the current attempt of job `id` with `cause`, blaming `blamed`; deletes its blobs and, if the
    /// lifecycle reschedules, tries a fresh committee at once.
    pub(super) fn fail_attempt(
        &mut self,
        id: u64,
        cause: FailureCause,
        blamed: Vec<NodeId>,
        now: Millis,
    ) -> Result<()> {
        let Some(e) = self.jobs.get_mut(&id) else {
            return Ok(());
        };
        let fx = e
            .job
            .apply(Event::Fail { cause, blamed }, now)
            .map_err(Error::invariant)?;
        if let Some(a) = e.extra.attempt.take() {
            self.delete_blobs(BlobDelete::Attempt {
                job: id,
                attempt: a.number,
            });
        }
        let reschedule = fx.reschedule;
        self.apply_effects(fx, now);
        self.dirty_jobs.insert(id);
        if reschedule {
            self.try_place(id, now)?;
        }
        Ok(())
    }

    /// Releases the reservations and records the reputation outcomes a lifecycle transition returned.
    pub(super) fn apply_effects(&mut self, fx: Effects, now: Millis) {
        for p in &fx.release {
            self.registry.release(p);
        }
        for (n, outcome) in fx.outcomes {
            if self.registry.record_outcome(n, outcome, now).is_ok() {
                self.dirty_nodes.insert(n);
            }
        }
    }

    /// Tries to place a Submitted job: select and reserve a committee, sign its manifest.
    pub(super) fn try_place(&mut self, id: u64, now: Millis) -> Result<()> {
        let stale = self.config.stale_ms();
        let Some(e) = self.jobs.get(&id) else {
            return Ok(());
        };
        if e.job.phase() != Phase::Submitted {
            return Ok(());
        }
        let mut exclude: Vec<NodeId> = e.job.excluded().to_vec();
        exclude.extend(
            self.registry
                .nodes()
                .filter(|n| now.saturating_sub(n.last_heartbeat()) > stale)
                .map(|n| n.id()),
        );
        // The roles this job will hold: its committees' members (a dealer and a verifier only where the
        // protocol has them).
        let roles: u64 = e.job.stages.iter().map(|d| d.committee_size() as u64).sum();
        exclude.extend(self.over_role_share(roles));
        exclude.sort_unstable();
        exclude.dedup();
        let stages = e.job.stages.clone();
        let attempt_number = e.job.attempt();
        let at = beacon::epoch_at(e.job.entered_at());
        let seeds: Vec<(SeedInput, [u8; 32])> = (0..stages.len())
            .map(|t| {
                self.beacon
                    .seed(&self.identity, at, id, attempt_number, t as u32)
            })
            .collect();
        let seed_bytes: Vec<[u8; 32]> = seeds.iter().map(|&(_, s)| s).collect();
        let placed = match self
            .registry
            .place_stages_explained(&stages, &seed_bytes, &exclude)
        {
            Ok(p) => p,
            Err(why) => {
                let text = why.to_string();
                if let Some(e) = self.jobs.get_mut(&id) {
                    if e.extra.unplaced.as_deref() != Some(text.as_str()) {
                        tracing::info!(job = id, "waiting for a committee: {text}");
                        e.extra.unplaced = Some(text);
                        self.dirty_jobs.insert(id);
                    }
                }
                return Ok(());
            }
        };
        let mut placements = Vec::with_capacity(placed.len());
        let mut explained = Vec::with_capacity(placed.len());
        for ((placement, record, set), &(seed_input, _)) in placed.into_iter().zip(&seeds) {
            explained.push(StageExplanation {
                demand: placement.demand,
                seed_input,
                record,
                eligible: set.candidates().to_vec(),
            });
            placements.push(placement);
        }
        let explanation = JobExplanation {
            job: id,
            attempt: attempt_number,
            anchor: self.beacon.anchor(&self.identity, at.period),
            chain_start_ms: at.start_ms,
            epoch_ms: beacon::EPOCH_MS,
            epoch: at.epoch,
            secret: None,
            collusion_keys: self.registry.config().collusion_keys.clone(),
            exclude,
            names: self.names_of(&placements),
            stages: explained,
        };
        let attempt = match self.make_attempt(id, &placements) {
            Ok(a) => a,
            Err(err) => {
                for p in &placements {
                    self.registry.release(p);
                }
                return Err(err);
            }
        };
        let Some(e) = self.jobs.get_mut(&id) else {
            return Ok(());
        };
        if let Err(err) = e.job.apply(Event::Schedule(placements.clone()), now) {
            for p in &placements {
                self.registry.release(p);
            }
            return Err(Error::invariant(err));
        }
        tracing::info!(
            job = id,
            attempt = attempt.number,
            parties = ?attempt.parties,
            dealer = ?attempt.dealer,
            verifier = ?attempt.verifier,
            "committee scheduled"
        );
        e.extra.attempt = Some(attempt);
        e.extra.unplaced = None;
        self.dirty_jobs.insert(id);
        self.beacon.keep(explanation);
        Ok(())
    }

    /// The operator and region names of every member of `placements`, for explanations.
    fn names_of(&self, placements: &[Placement]) -> Vec<NodeNames> {
        let name = |n: NodeId, key: DomainKey| {
            self.registry
                .domain(n, key)
                .and_then(|v| self.registry.domain_name(key, v))
                .unwrap_or_default()
                .to_owned()
        };
        let mut names: Vec<NodeNames> = placements
            .iter()
            .flat_map(|p| p.committee.members().map(|(_, n)| n))
            .map(|n| NodeNames {
                node: n,
                operator: name(n, DomainKey::Operator),
                region: name(n, DomainKey::Region),
            })
            .collect();
        names.sort_by_key(|n| n.node);
        names.dedup_by_key(|n| n.node);
        names
    }

    /// The explanation of job `id`'s latest placed attempt (see `beacon.rs`): its draws, with the epoch's
    /// secret once the epoch has ended by `now`. Unknown jobs, and attempts placed before this coordinator
    /// started, have none.
    pub fn explanation(&self, id: u64, now: Millis) -> Result<JobExplanation> {
        self.beacon
            .explanation(&self.identity, id, now)
            .ok_or(Error::UnknownJob { job: id })
    }

    /// The beacon's public state at `now`: the current chain's anchor, and the last ended epoch's secret.
    pub fn beacon_view(&self, now: Millis) -> BeaconView {
        let at = beacon::epoch_at(now);
        let last = beacon::EpochAt {
            epoch: at.epoch - 1,
            ..at
        };
        BeaconView {
            anchor: beacon::hex(&self.beacon.anchor(&self.identity, at.period)),
            chain_start_ms: at.start_ms,
            epoch_ms: beacon::EPOCH_MS,
            chain_epochs: beacon::CHAIN_EPOCHS,
            epoch: at.epoch,
            revealed_epoch: last.epoch,
            revealed: (last.epoch > 0)
                .then(|| beacon::hex(&self.beacon.secret(&self.identity, last))),
        }
    }

    /// A node as a manifest names it (address and key).
    pub(super) fn member(&self, id: NodeId) -> Result<Member> {
        let node = self
            .registry
            .node(id)
            .ok_or(Error::UnknownNode { node: id.0 })?;
        let public_key: PublicKey = node
            .registration()
            .public_key
            .parse()
            .map_err(Error::invariant)?;
        let address = self
            .nodes
            .get(id.index())
            .and_then(|x| x.address)
            .ok_or_else(|| Error::invariant(format!("node {id} has no address")))?;
        Ok(Member {
            address,
            public_key,
        })
    }

    /// A fresh attempt of job `id` on the first placement's committee, with its signed manifest.
    pub(super) fn make_attempt(&self, id: u64, placements: &[Placement]) -> Result<Attempt> {
        let e = self.jobs.get(&id).ok_or(Error::UnknownJob { job: id })?;
        let c = &placements
            .first()
            .ok_or_else(|| Error::invariant("a placement without committee"))?
            .committee;
        let req = &e.extra.request;
        let run_id: [u8; 16] = rand::random();
        let deployed = match &req.model {
            Some(id) => Some(self.deployed_spec(id, req)?),
            None => None,
        };
        let output_key = req
            .output_key
            .as_deref()
            .map(str::parse::<SealingKey>)
            .transpose()
            .map_err(|e| Error::malformed("output_key", e))?;
        let protocol = check_protocol(&req.protocol, req.parties)?;
        // The committee has exactly the roles of the job's demand (`job_demand`): a dealer iff the protocol
        // has one, a verifier iff its committees have one. A committee that disagrees with the protocol
        // (a demand built otherwise) is refused rather than run with a missing or extra member.
        if c.dealer.is_some() != protocol.has_dealer()
            || c.verifier.is_some() != protocol.has_verifier()
        {
            return Err(Error::invariant(format!(
                "a {protocol} committee with dealer {:?} and verifier {:?}",
                c.dealer, c.verifier
            )));
        }
        let dealer = c.dealer;
        let manifest = Manifest {
            job: RunId(run_id),
            protocol,
            model: ModelSpec {
                workload: req.workload.clone(),
                seed: req.model_seed,
                weights: weight_mode(&req.weights)?,
                frac_bits: req.frac_bits,
                deployed,
            },
            batch: req.batch,
            inferences: req.inferences,
            parties: c
                .parties
                .iter()
                .map(|&p| self.member(p))
                .collect::<Result<_>>()?,
            dealer: dealer.map(|d| self.member(d)).transpose()?,
            client: self.identity.public_key(),
            output_key,
            verifier: c.verifier.map(|v| self.member(v)).transpose()?,
        };
        let signed: SignedManifest = manifest.sign(&self.identity).map_err(Error::invariant)?;
        let n = c.parties.len();
        Ok(Attempt {
            number: e.job.attempt(),
            run_id,
            manifest: postcard::to_stdvec(&signed).map_err(Error::invariant)?,
            parties: c.parties.clone(),
            dealer,
            verifier: c.verifier,
            accepted: vec![false; n + usize::from(dealer.is_some())],
            inputs: vec![false; n],
            outputs: vec![false; n],
            owner: false,
            transcripts: vec![false; n],
            verified: protocol.verifies(),
            expired: false,
        })
    }
}
