//! Execution: committee members acting on their tasks. A member accepts its task (manifest checked, job
//! registered on the node) or reports its failure; parties fetch their input blob once the attempt runs and
//! return their output blob (and, for `spdz2k`, their MAC-check transcript); the dealer of a `spdz2k`
//! attempt returns the client's owner material. The attempt starts when every member accepted and every
//! input is in, and moves on to verification when every output is in.

use veil_node::api::TaskFailure;
use veil_node::evidence::{self, EvidenceKind};
use veil_node::manifest::{Manifest, SignedManifest};
use veil_node::PublicKey;
use veil_scheduler::{Event, FailureCause, Millis, NodeId, Phase};

use super::{phase_name, Attempt, Core, Entry};
use crate::blobs::{BlobDelete, BlobKey, Direction};
use crate::error::{Error, Result, RoleName};

/// The error of job `job` being in `phase` when this needs `expected`.
pub(crate) fn wrong_phase(job: u64, phase: veil_scheduler::Phase, expected: &'static str) -> Error {
    Error::WrongPhase {
        job,
        phase: phase_name(phase),
        expected,
    }
}

impl Core {
    /// The current attempt `attempt` of live job `job`.
    pub(crate) fn attempt_of(&self, job: u64, attempt: u32) -> Result<(&Entry, &Attempt)> {
        let e = self.jobs.get(&job).ok_or(Error::UnknownJob { job })?;
        match &e.extra.attempt {
            Some(a) if a.number == attempt && !e.job.phase().is_terminal() => Ok((e, a)),
            _ => Err(Error::StaleAttempt { job, attempt }),
        }
    }

    /// A member checked the manifest and registered the job.
    pub fn task_accepted(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        now: Millis,
    ) -> Result<()> {
        let node = self.node_of(key)?;
        let (_, a) = self.attempt_of(job, attempt)?;
        let i = a
            .member_index(node)
            .ok_or(Error::NotMember { job, attempt })?;
        if let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.extra.attempt.as_mut())
        {
            a.accepted[i] = true;
        }
        self.dirty_jobs.insert(job);
        self.maybe_start(job, now)?;
        Ok(())
    }

    /// A member reports that its part failed: the attempt fails. Blame follows evidence only: the members
    /// the coordinator itself saw go silent (missed heartbeats) are blamed; a report with no such evidence
    /// blames nobody else and counts against the reporter. A party that refused its sealed input ends the
    /// job without blame (the client's data, not a node, is at fault). Verifiers report through
    /// [`Core::verification_failed`].
    pub fn task_failed(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        failure: &TaskFailure,
        now: Millis,
    ) -> Result<()> {
        let (reason, rejected_input, verification_failed) = (
            failure.reason.as_str(),
            failure.rejected_input,
            failure.verification_failed,
        );
        let node = self.node_of(key)?;
        if verification_failed {
            // A verifier's word alone blames nobody: the driver re-checks the transcripts first
            // (`transcripts_to_recheck`, then `verification_failed`).
            return Err(Error::invariant(
                "a failed verification is reported through Core::verification_failed",
            ));
        }
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.member_index(node).is_none() {
            return Err(Error::NotMember { job, attempt });
        }
        if !matches!(e.job.phase(), Phase::Scheduled | Phase::Running) {
            return Err(wrong_phase(job, e.job.phase(), "scheduled or running"));
        }
        let stale = self.config.stale_ms();
        let blamed: Vec<NodeId> = a
            .computing_members()
            .filter(|&m| {
                self.registry
                    .node(m)
                    .is_none_or(|n| now.saturating_sub(n.last_heartbeat()) > stale)
            })
            .collect();
        let reason: String = reason.chars().take(300).collect();
        let blamed = if blamed.is_empty() && !rejected_input {
            // No evidence: every member is alive as far as the coordinator sees, and the report carries
            // nothing a third party can check. It blames nobody else, and counts against the reporter
            // (which is also kept out of this job's next attempts, so it cannot abort it again and again).
            tracing::warn!(job, attempt, reporter = %node, "failure report without evidence: counted against the reporter");
            vec![node]
        } else {
            blamed
        };
        if rejected_input {
            // The party's own report that its sealed input is bad: a fault of the client's data or of its
            // path, not of a node; the job ends (a retry would carry the same data).
            tracing::warn!(job, attempt, reporter = %node, "input rejected: {reason}");
            self.fail_attempt(job, FailureCause::RejectedInput(reason), Vec::new(), now)?;
            return Ok(());
        }
        tracing::warn!(job, attempt, reporter = %node, ?blamed, "attempt failed: {reason}");
        self.fail_attempt(job, FailureCause::NodeFailure, blamed, now)?;
        Ok(())
    }

    /// The party index of the caller `key` in attempt `attempt` of `job`, which must be running.
    pub(super) fn running_party(&self, key: &PublicKey, job: u64, attempt: u32) -> Result<usize> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        let i = a
            .parties
            .iter()
            .position(|&p| p == node)
            .ok_or(Error::NotRole {
                job,
                attempt,
                role: RoleName::Party,
            })?;
        if e.job.phase() != Phase::Running {
            return Err(wrong_phase(job, e.job.phase(), "running"));
        }
        Ok(i)
    }

    /// The evidence slot the caller's upload of `dir` (an output, a transcript, or the dealer's owner
    /// material) fills, checked as the upload itself is ([`Core::task_output`], [`Core::task_transcript`],
    /// [`Core::task_owner`]): the driver opens the blob against it outside the state lock before storing
    /// it, so every stored output, transcript and owner blob is its producer's signed evidence, and a
    /// stored blob that later fails to open was changed in the coordinator's keeping, not by a member.
    pub fn upload_slot(
        &self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        dir: Direction,
    ) -> Result<EvidenceSlot> {
        let (kind, member) = match dir {
            Direction::Output => (EvidenceKind::Output, self.running_party(key, job, attempt)?),
            Direction::Transcript => (
                EvidenceKind::Transcript,
                self.running_party(key, job, attempt)?,
            ),
            Direction::Owner => {
                let node = self.node_of(key)?;
                let (_, a) = self.attempt_of(job, attempt)?;
                if a.dealer != Some(node) || !a.verified {
                    return Err(Error::NotRole {
                        job,
                        attempt,
                        role: RoleName::Dealer,
                    });
                }
                (EvidenceKind::OwnerMaterial, a.parties.len())
            }
            Direction::Input => {
                return Err(Error::invariant("inputs are the client's, not evidence"))
            }
        };
        self.evidence_slot(job, attempt, kind, member)
    }

    /// The coordinator-signed manifest of attempt `attempt` of `job`, decoded.
    pub(crate) fn attempt_manifest(&self, job: u64, attempt: u32) -> Result<Manifest> {
        let (_, a) = self.attempt_of(job, attempt)?;
        let signed: SignedManifest = postcard::from_bytes(&a.manifest).map_err(Error::invariant)?;
        postcard::from_bytes(&signed.body.0).map_err(Error::invariant)
    }

    /// The slot of member `member`'s `kind` evidence in attempt `attempt` of `job`: the run id of its
    /// signed manifest and the member's key there.
    pub(crate) fn evidence_slot(
        &self,
        job: u64,
        attempt: u32,
        kind: EvidenceKind,
        member: usize,
    ) -> Result<EvidenceSlot> {
        let (_, a) = self.attempt_of(job, attempt)?;
        let signed: SignedManifest = postcard::from_bytes(&a.manifest).map_err(Error::invariant)?;
        let run = evidence::run_id(&signed).map_err(Error::invariant)?;
        let index = u32::try_from(member).map_err(Error::invariant)?;
        let manifest: Manifest = postcard::from_bytes(&signed.body.0).map_err(Error::invariant)?;
        let producer = evidence::member_key(&manifest, index).map_err(Error::invariant)?;
        Ok(EvidenceSlot {
            job,
            attempt,
            kind,
            run,
            index,
            producer,
        })
    }

    /// Where a party's input blob is (its shares for this attempt), once the attempt runs.
    pub fn task_input(&self, key: &PublicKey, job: u64, attempt: u32) -> Result<BlobKey> {
        let index = self.running_party(key, job, attempt)?;
        Ok(BlobKey {
            job,
            attempt,
            dir: Direction::Input,
            index,
        })
    }

    /// A party's output blob. When every party's is in (and, for `spdz2k`, every transcript), the attempt
    /// moves on ([`Coordinator::complete_if_ready`]).
    pub fn task_output(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: Vec<u8>,
        now: Millis,
    ) -> Result<()> {
        self.party_upload(key, job, attempt, Direction::Output, bytes, now)
    }

    /// A verified job's (`spdz2k`, `rep3m`) party check views, for the verifier. Like the output, it
    /// completes the attempt.
    pub fn task_transcript(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: Vec<u8>,
        now: Millis,
    ) -> Result<()> {
        self.party_upload(key, job, attempt, Direction::Transcript, bytes, now)
    }

    /// Stores a running party's output or transcript blob, marks it in, and moves the attempt on once
    /// complete.
    pub(super) fn party_upload(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        dir: Direction,
        bytes: Vec<u8>,
        now: Millis,
    ) -> Result<()> {
        let i = self.running_party(key, job, attempt)?;
        let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.extra.attempt.as_mut())
        else {
            return Err(Error::StaleAttempt { job, attempt });
        };
        match dir {
            Direction::Transcript => a.transcripts[i] = true,
            _ => a.outputs[i] = true,
        }
        self.dirty_jobs.insert(job);
        self.write_blob(
            BlobKey {
                job,
                attempt,
                dir,
                index: i,
            },
            bytes,
        );
        self.complete_if_ready(job, attempt, now)
    }

    /// Running -> Verifying once every output (and, for a protocol that verifies, every transcript) is in;
    /// an attempt whose protocol checks nothing (`semi2k`, `rep3`) goes on to Done at once.
    pub(super) fn complete_if_ready(&mut self, job: u64, attempt: u32, now: Millis) -> Result<()> {
        let Some(entry) = self.jobs.get_mut(&job) else {
            return Err(Error::UnknownJob { job });
        };
        let Some(a) = entry.extra.attempt.as_ref() else {
            return Err(Error::StaleAttempt { job, attempt });
        };
        let complete =
            a.outputs.iter().all(|&o| o) && (!a.verified || a.transcripts.iter().all(|&t| t));
        if !complete {
            return Ok(());
        }
        let (parties, verified) = (a.parties.len(), a.verified);
        let mut fx = entry
            .job
            .apply(Event::OutputReady, now)
            .map_err(Error::invariant)?;
        if !verified {
            let done = entry
                .job
                .apply(Event::Verified, now)
                .map_err(Error::invariant)?;
            fx.release.extend(done.release);
            fx.outcomes.extend(done.outcomes);
        }
        self.apply_effects(fx, now);
        if verified {
            tracing::info!(job, attempt, "outputs in: verifying");
        } else {
            self.delete_blobs(BlobDelete::Inputs {
                job,
                attempt,
                parties,
            });
            tracing::info!(job, attempt, "job done");
        }
        Ok(())
    }

    /// The dealer of a `spdz2k` attempt uploads the owner material, sealed to the client.
    pub fn task_owner(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.dealer != Some(node) || !a.verified {
            return Err(Error::NotRole {
                job,
                attempt,
                role: RoleName::Dealer,
            });
        }
        if e.job.phase() != Phase::Scheduled {
            return Err(wrong_phase(job, e.job.phase(), "scheduled"));
        }
        if let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|e| e.extra.attempt.as_mut())
        {
            a.owner = true;
        }
        self.dirty_jobs.insert(job);
        self.write_blob(
            BlobKey {
                job,
                attempt,
                dir: Direction::Owner,
                index: 0,
            },
            bytes,
        );
        Ok(())
    }

    /// Scheduled -> Running once every member accepted and every input is in.
    pub(super) fn maybe_start(&mut self, id: u64, now: Millis) -> Result<()> {
        let Some(e) = self.jobs.get_mut(&id) else {
            return Ok(());
        };
        let ready = e.job.phase() == Phase::Scheduled
            && e.extra
                .attempt
                .as_ref()
                .is_some_and(|a| a.accepted.iter().all(|&x| x) && a.inputs.iter().all(|&x| x));
        if ready {
            e.job.apply(Event::Start, now).map_err(Error::invariant)?;
            self.dirty_jobs.insert(id);
            tracing::info!(job = id, attempt = e.job.attempt(), "attempt running");
        }
        Ok(())
    }
}

/// Where a signed evidence blob belongs: the attempt, the kind, the run id it must be bound to, the member
/// index and the key that must have signed it. Opening a blob against it is pure computation (a hash of the
/// blob and one signature check), so the driver does it outside the state lock.
#[derive(Clone, Debug)]
pub struct EvidenceSlot {
    job: u64,
    attempt: u32,
    kind: EvidenceKind,
    run: [u8; 32],
    index: u32,
    producer: PublicKey,
}

impl EvidenceSlot {
    /// Checks that `bytes` is exactly the producer's signed evidence for this slot.
    pub fn check(&self, bytes: &[u8]) -> Result<()> {
        self.open(bytes).map(|_| ())
    }

    /// [`EvidenceSlot::check`], returning the signed body.
    pub fn open(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        evidence::open(
            bytes,
            self.kind,
            &self.run,
            self.index,
            &self.producer,
            bytes.len(),
        )
        .map(|(body, _)| body)
        .map_err(|source| Error::BadEvidence {
            job: self.job,
            attempt: self.attempt,
            member: self.index,
            source,
        })
    }
}
