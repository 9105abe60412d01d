//! The driver around the sans-IO [`Core`]: it owns the store and the blob directory, calls the core, and
//! after every call persists what the core asks for, in order: blobs written (durably), then the records
//! committed (one transaction), then blobs deleted. Reads of blobs go through the core (which names the
//! blob the caller may read) and then the disk.
//!
//! Invariant: when a mutating method returns, everything the core changed is committed (or the method
//! returned the store's or the disk's error).

use std::ops::Deref;

use veil_node::api::{
    DeployRequest, HeartbeatReply, HeartbeatRequest, JobView, ModelView, NodeView, RegisterRequest,
    SubmitRequest, TaskFailure, TrialReport, MAX_HEARTBEAT_WAIT_MS,
};
use veil_node::{Identity, PublicKey};
use veil_scheduler::{JobDemand, Millis, NodeId};

use crate::blobs::{BlobKey, Blobs, Direction};
use crate::config::CoordinatorConfig;
use crate::core::trials::TrialStep;
use crate::core::{Commit, Core, MacRecheck, RECORD_KINDS};
use crate::error::{Error, Result};
use crate::holds::{Hold, Holds};
use crate::store::{RedbStore, StateStore};
use veil_node::evidence::EvidenceKind;

/// The coordinator: its core, its store and its blobs.
pub struct Coordinator<S: StateStore = RedbStore> {
    core: Core,
    store: S,
    blobs: Blobs,
    /// When each job was submitted to this process (for the latency histograms of `/metrics`; not
    /// persisted). Invariant: at most [`MAX_TRACKED_SUBMISSIONS`] entries, the oldest ids dropped first.
    submitted_at: std::collections::BTreeMap<u64, Millis>,
    /// An upload's blob, written to the staging directory outside the state lock, for the next persist
    /// to adopt ([`Coordinator::with_staged`]).
    staged: Option<crate::blobs::Staged>,
    /// A commit the store refused (a full disk, an I/O error): kept whole and written before anything
    /// newer, so a failed commit loses no record. Invariant: older than every commit the core still holds.
    unsaved: Option<Commit>,
    /// The requests held at the edge (long polls), woken after every call ([`Coordinator::update`]).
    holds: Holds,
}

/// Most submission times kept for the metrics.
const MAX_TRACKED_SUBMISSIONS: usize = 100_000;

impl Coordinator<RedbStore> {
    /// Opens (or creates) the state under the configured data directory (`state.redb`, `blobs/`) and
    /// rebuilds the core from it.
    pub fn open(config: CoordinatorConfig, identity: Identity, now: Millis) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = RedbStore::open(&config.data_dir.join("state.redb"))?;
        let blobs = Blobs::new(config.data_dir.join("blobs"));
        Coordinator::with_store(config, identity, store, blobs, now)
    }
}

impl<S: StateStore> Coordinator<S> {
    /// A coordinator over `store` and `blobs`, its core rebuilt from what `store` holds.
    pub fn with_store(
        config: CoordinatorConfig,
        identity: Identity,
        store: S,
        blobs: Blobs,
        now: Millis,
    ) -> Result<Self> {
        let snapshot = store.load(Core::registry_config(&config)?, &RECORD_KINDS)?;
        let holds = Holds::new(&config.limits, MAX_HEARTBEAT_WAIT_MS);
        let core = Core::restore(config, identity, snapshot, now)?;
        blobs.clear_staging();
        Ok(Coordinator {
            core,
            store,
            blobs,
            submitted_at: Default::default(),
            staged: None,
            unsaved: None,
            holds,
        })
    }

    /// Persists everything the core changed: first a commit an earlier call failed to write, then the
    /// core's new ones, in order. A commit that fails is kept (see `unsaved`) and retried by the next call.
    fn persist(&mut self) -> Result<()> {
        loop {
            let commit = match self.unsaved.take() {
                Some(commit) => commit,
                None => match self.core.poll_commit()? {
                    Some(commit) => commit,
                    None => return Ok(()),
                },
            };
            if let Err(e) = self.write(&commit) {
                tracing::warn!(error = %e, "commit failed; kept for the next attempt");
                self.unsaved = Some(commit);
                return Err(e);
            }
        }
    }

    /// Writes one commit: its blobs, then its records (one store transaction), then its deletions. Every
    /// step may be repeated after a failure.
    fn write(&mut self, commit: &Commit) -> Result<()> {
        for (key, bytes) in &commit.writes {
            self.blobs
                .adopt_or_put(key, bytes, self.staged.as_ref())
                .map_err(|source| Error::Blob { key: *key, source })?;
        }
        self.store.commit(&commit.batch)?;
        for op in &commit.deletes {
            self.blobs.delete(op);
        }
        Ok(())
    }

    /// Rebuilds the in-memory state from the store after a call panicked half-way through a change (what
    /// was committed is the truth; a commit still waiting in `unsaved` is dropped with the rest). Returns
    /// the error the panicking call reports.
    pub fn recover_from_panic(&mut self, now: Millis) -> Error {
        self.unsaved = None;
        let rebuilt = self
            .core
            .identity()
            .try_clone()
            .map_err(Error::invariant)
            .and_then(|identity| {
                let config = self.core.config().clone();
                let snapshot = self
                    .store
                    .load(Core::registry_config(&config)?, &RECORD_KINDS)?;
                Core::restore(config, identity, snapshot, now)
            });
        match rebuilt {
            Ok(core) => {
                self.core = core;
                tracing::error!("a request panicked under the state lock; the state was reloaded from the store");
                Error::invariant("the request failed inside the coordinator; its change was undone")
            }
            Err(e) => {
                tracing::error!(error = %e, "a request panicked and the state could not be reloaded");
                e
            }
        }
    }

    /// Runs `f` (an upload of the buffer `staged` was written from, see [`crate::blobs::Staged`]) with
    /// `staged` offered to the blob writes: the core's write of that very buffer becomes a rename of the
    /// staged file, so the write and its sync happened outside the state lock. A staged file the core did
    /// not take is removed.
    pub fn with_staged<T>(
        &mut self,
        staged: crate::blobs::Staged,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.staged = Some(staged);
        let result = f(self);
        self.staged = None;
        result
    }

    /// Runs `f` on the core and persists what it changed (also when `f` failed part-way), then wakes the
    /// requests held for the nodes and jobs it may have changed (they answer once they get the lock).
    pub fn update<T>(&mut self, f: impl FnOnce(&mut Core) -> Result<T>) -> Result<T> {
        let result = f(&mut self.core);
        let persisted = self.persist();
        let (nodes, jobs) = self.core.take_woken();
        self.holds.wake(nodes, jobs);
        let value = result?;
        persisted?;
        Ok(value)
    }

    /// Reads the blob the core names (after checking the caller may read it).
    pub fn read_blob(&self, f: impl FnOnce(&Core) -> Result<BlobKey>) -> Result<Vec<u8>> {
        let key = f(&self.core)?;
        relay_blob(&self.blobs, key)
    }

    /// The blob directory.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    // The core's calls, persisted: the names and arguments are the core's.

    /// See [`Core::register`].
    pub fn register(
        &mut self,
        key: &PublicKey,
        req: RegisterRequest,
        now: Millis,
    ) -> Result<NodeView> {
        self.update(|c| c.register(key, req, now))
    }

    /// See [`Core::trial_accepted`].
    pub fn trial_accepted(&mut self, key: &PublicKey, trial: u64) -> Result<()> {
        self.update(|c| c.trial_accepted(key, trial))
    }

    /// See [`Core::trial_report`].
    pub fn trial_report(
        &mut self,
        key: &PublicKey,
        report: TrialReport,
        now: Millis,
    ) -> Result<(NodeId, TrialStep)> {
        self.update(|c| c.trial_report(key, report, now))
    }

    /// See [`Core::record_trial_check`].
    pub fn record_trial_check(
        &mut self,
        trial: u64,
        correct: bool,
        ops: u64,
        now: Millis,
    ) -> Result<()> {
        self.update(|c| c.record_trial_check(trial, correct, ops, now))
    }

    /// See [`Core::heartbeat`].
    pub fn heartbeat(
        &mut self,
        key: &PublicKey,
        req: HeartbeatRequest,
        now: Millis,
    ) -> Result<HeartbeatReply> {
        self.update(|c| c.heartbeat(key, req, now))
    }

    /// A heartbeat that may be held ([`HeartbeatRequest::wait_ms`]): records it as [`Core::heartbeat`]
    /// does and returns the reply, with a [`Hold`] when the reply equals the one the node saw
    /// ([`HeartbeatRequest::seen`]) and it asked to wait (and the bounds of [`Holds`] allow): the caller
    /// then waits on it, outside the lock, and answers [`Coordinator::heartbeat_reply`] once woken.
    pub fn heartbeat_held(
        &mut self,
        key: &PublicKey,
        req: HeartbeatRequest,
        now: Millis,
    ) -> Result<(HeartbeatReply, Option<Hold>)> {
        let (wait_ms, seen) = (req.wait_ms, req.seen.clone());
        let reply = self.heartbeat(key, req, now)?;
        if seen.is_none() || reply.tag != seen {
            return Ok((reply, None));
        }
        let node = self.core.node_id(key)?;
        let hold = self.holds.hold_node(node, wait_ms);
        Ok((reply, hold))
    }

    /// See [`Core::heartbeat_reply`].
    pub fn heartbeat_reply(&mut self, key: &PublicKey, now: Millis) -> Result<HeartbeatReply> {
        self.update(|c| c.heartbeat_reply(key, now))
    }

    /// A hold of up to `wait_ms` on job `id`'s status (see [`Holds::hold_job`]).
    pub fn hold_job(&mut self, id: u64, wait_ms: u64) -> Option<Hold> {
        self.holds.hold_job(id, wait_ms)
    }

    /// See [`Core::task_accepted`].
    pub fn task_accepted(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        now: Millis,
    ) -> Result<()> {
        self.update(|c| c.task_accepted(key, job, attempt, now))
    }

    /// See [`Core::task_failed`]. A verifier's failed verification is re-checked here first, on the
    /// transcripts the parties uploaded ([`Core::transcripts_to_recheck`], [`Core::verification_failed`]).
    pub fn task_failed(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        failure: &TaskFailure,
        now: Millis,
    ) -> Result<()> {
        if failure.verification_failed {
            let keys = self.core.transcripts_to_recheck(key, job, attempt)?;
            let recheck = self.recheck(job, attempt, &keys)?;
            return self.update(|c| {
                c.verification_failed(key, job, attempt, recheck, &failure.reason, now)
            });
        }
        self.update(|c| c.task_failed(key, job, attempt, failure, now))
    }

    /// Re-checks the evidence of a verifying attempt: every stored output, transcript and owner blob must
    /// still open as its producer's signed evidence (they were opened on upload, so one that does not was
    /// changed here: [`MacRecheck::StoreCorrupt`]); then the parties' check transcripts are verified
    /// (`veil_node::verifier::JobViews`, by the manifest's protocol: spdz2k's MAC checks, rep3m's checks). A transcript body that does not decode fails the check (its
    /// party signed it).
    fn recheck(&self, job: u64, attempt: u32, transcripts: &[BlobKey]) -> Result<MacRecheck> {
        let parties = transcripts.len();
        let read = |key: BlobKey| {
            self.blobs
                .get(&key)
                .map_err(|source| Error::Blob { key, source })
        };
        let manifest = self.core.attempt_manifest(job, attempt)?;
        // A job with a dealer (spdz2k) has its signed owner material; rep3m has none.
        if manifest.dealer.is_some() {
            let owner = BlobKey {
                job,
                attempt,
                dir: Direction::Owner,
                index: 0,
            };
            let owner_slot =
                self.core
                    .evidence_slot(job, attempt, EvidenceKind::OwnerMaterial, parties)?;
            if owner_slot.check(&read(owner)?).is_err() {
                return Ok(MacRecheck::StoreCorrupt);
            }
        }
        let mut bodies = Vec::with_capacity(parties);
        for key in transcripts {
            let output = BlobKey {
                dir: Direction::Output,
                ..*key
            };
            let output_slot =
                self.core
                    .evidence_slot(job, attempt, EvidenceKind::Output, key.index)?;
            if output_slot.check(&read(output)?).is_err() {
                return Ok(MacRecheck::StoreCorrupt);
            }
            let slot =
                self.core
                    .evidence_slot(job, attempt, EvidenceKind::Transcript, key.index)?;
            let Ok(body) = slot.open(&read(*key)?) else {
                return Ok(MacRecheck::StoreCorrupt);
            };
            bodies.push(body);
        }
        // Decoded by the manifest's protocol (spdz2k's MAC checks, rep3m's checks); a body that does not
        // decode fails, its party signed it.
        let views = veil_node::verifier::JobViews::decode(manifest.protocol, &bodies);
        Ok(match views.and_then(|v| v.verify()) {
            Ok(_) => MacRecheck::Passes,
            Err(_) => MacRecheck::Fails,
        })
    }

    /// See [`Core::task_input`].
    pub fn task_input(&self, key: &PublicKey, job: u64, attempt: u32) -> Result<Vec<u8>> {
        self.read_blob(|c| c.task_input(key, job, attempt))
    }

    /// See [`Core::task_output`].
    pub fn task_output(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: Vec<u8>,
        now: Millis,
    ) -> Result<()> {
        self.update(|c| c.task_output(key, job, attempt, bytes, now))
    }

    /// See [`Core::task_transcript`].
    pub fn task_transcript(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: Vec<u8>,
        now: Millis,
    ) -> Result<()> {
        self.update(|c| c.task_transcript(key, job, attempt, bytes, now))
    }

    /// See [`Core::task_owner`].
    pub fn task_owner(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        bytes: Vec<u8>,
    ) -> Result<()> {
        self.update(|c| c.task_owner(key, job, attempt, bytes))
    }

    /// See [`Core::task_evidence`].
    pub fn task_evidence(
        &self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        kind: &str,
        party: usize,
    ) -> Result<Vec<u8>> {
        self.read_blob(|c| c.task_evidence(key, job, attempt, kind, party))
    }

    /// See [`Core::task_receipt`].
    pub fn task_receipt(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        text: &str,
        now: Millis,
    ) -> Result<()> {
        self.update(|c| c.task_receipt(key, job, attempt, text, now))
    }

    /// See [`Core::download_owner`].
    pub fn download_owner(&self, key: &PublicKey, job: u64, attempt: u32) -> Result<Vec<u8>> {
        self.read_blob(|c| c.download_owner(key, job, attempt))
    }

    /// See [`Core::submit`].
    pub fn submit(
        &mut self,
        submitter: &PublicKey,
        req: SubmitRequest,
        demand: JobDemand,
        now: Millis,
    ) -> Result<JobView> {
        let view = self.update(|c| c.submit(submitter, req, demand, now))?;
        self.submitted_at.insert(view.id, now);
        while self.submitted_at.len() > MAX_TRACKED_SUBMISSIONS {
            self.submitted_at.pop_first();
        }
        Ok(view)
    }

    /// When each job was submitted to this process, by id (see the field's invariant).
    pub fn submission_times(&self) -> &std::collections::BTreeMap<u64, Millis> {
        &self.submitted_at
    }

    /// See [`Core::deploy`].
    pub fn deploy(
        &mut self,
        owner: &PublicKey,
        req: DeployRequest,
        now: Millis,
    ) -> Result<ModelView> {
        self.update(|c| c.deploy(owner, req, now))
    }

    /// See [`Core::upload_input`].
    pub fn upload_input(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        party: usize,
        bytes: Vec<u8>,
        now: Millis,
    ) -> Result<()> {
        self.update(|c| c.upload_input(key, job, attempt, party, bytes, now))
    }

    /// See [`Core::download_output`].
    pub fn download_output(&self, key: &PublicKey, job: u64, party: usize) -> Result<Vec<u8>> {
        self.read_blob(|c| c.download_output(key, job, party))
    }

    /// See [`Core::cancel`].
    pub fn cancel(&mut self, key: &PublicKey, job: u64, now: Millis) -> Result<JobView> {
        self.update(|c| c.cancel(key, job, now))
    }

    /// See [`Core::tick`].
    pub fn tick(&mut self, now: Millis) -> Result<()> {
        self.update(|c| c.tick(now))
    }
}

/// Read-only calls go to the core directly (views, listings, the pending trial, the configuration).
impl<S: StateStore> Deref for Coordinator<S> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// Reads blob `key` as the coordinator relays it: every download of a stored blob goes through here (in
/// builds with `insecure-test-hooks`, the test-only tampering of `crate::tamper` applies at this one place).
pub fn relay_blob(blobs: &Blobs, key: BlobKey) -> Result<Vec<u8>> {
    let bytes = blobs
        .get(&key)
        .map_err(|source| Error::Blob { key, source })?;
    #[cfg(feature = "insecure-test-hooks")]
    let bytes = crate::tamper::apply(&key, bytes);
    Ok(bytes)
}
