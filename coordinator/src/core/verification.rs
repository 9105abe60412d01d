//! Verification (`spdz2k` and `rep3m` attempts): the verifier reads each party's input and output
//! ciphertexts and its check transcript (MAC checks, or `rep3m`'s checks; decoded by the manifest's
//! protocol), and returns a receipt signed by its key over the attempt's manifest; the core
//! checks it, keeps it in the audit log, and the job is done.

use veil_node::api::ReceiptEntry;
use veil_node::manifest::SignedManifest;
use veil_node::PublicKey;
use veil_scheduler::{Event, FailureCause, Millis, Phase};

use super::execution::wrong_phase;
use super::{Core, RECEIPT_RECORD};
use crate::blobs::{BlobDelete, BlobKey, Direction};
use crate::error::{Error, Result, RoleName};

/// What the coordinator found when it re-checked, itself, the MAC-check transcripts of an attempt whose
/// verifier reported a failed verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacRecheck {
    /// The transcripts do not verify (or do not decode): some party cheated; the check cannot tell which.
    Fails,
    /// The transcripts verify: the verifier's report is false.
    Passes,
    /// A stored output, transcript or owner blob no longer opens as its producer's signed evidence. Every
    /// upload was opened before it was stored (`Core::upload_slot`), so it changed in the coordinator's
    /// keeping (its disk, its blob directory): no member is at fault and nobody is blamed.
    StoreCorrupt,
}

impl Core {
    /// The transcripts the driver re-checks when the verifier of attempt `attempt` of `job` (the caller)
    /// reports a failed verification, one per party.
    pub fn transcripts_to_recheck(
        &self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
    ) -> Result<Vec<BlobKey>> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.verifier != Some(node) || !a.verified {
            return Err(Error::NotRole {
                job,
                attempt,
                role: RoleName::Verifier,
            });
        }
        if e.job.phase() != Phase::Verifying {
            return Err(wrong_phase(job, e.job.phase(), "verifying"));
        }
        Ok((0..a.parties.len())
            .map(|index| BlobKey {
                job,
                attempt,
                dir: Direction::Transcript,
                index,
            })
            .collect())
    }

    /// The verifier reports that the MAC checks failed, and the coordinator's own `recheck` of the
    /// stored evidence decides whom it blames: nobody if a stored blob no longer opens as its producer's
    /// signed evidence (it changed in the coordinator's keeping), every party if the transcripts do not
    /// verify (the check cannot tell which party cheated), else the verifier, whose report was false.
    /// Either way the attempt fails and the job moves to a fresh committee.
    pub fn verification_failed(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        recheck: MacRecheck,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        self.transcripts_to_recheck(key, job, attempt)?;
        let (_, a) = self.attempt_of(job, attempt)?;
        let reason: String = reason.chars().take(300).collect();
        let (cause, blamed) = match recheck {
            MacRecheck::Fails => (FailureCause::VerificationFailed, a.parties.clone()),
            MacRecheck::Passes => (FailureCause::NodeFailure, a.verifier.into_iter().collect()),
            MacRecheck::StoreCorrupt => (FailureCause::NodeFailure, Vec::new()),
        };
        tracing::warn!(
            job,
            attempt,
            ?recheck,
            ?blamed,
            "verification failed by the verifier's report: {reason}"
        );
        self.fail_attempt(job, cause, blamed, now)
    }

    /// What the verifier of a verifying attempt reads: a party's input or output ciphertext (to commit to)
    /// or its transcript, or (kind `owner`, at the dealer's index) the dealer's signed owner material.
    pub fn task_evidence(
        &self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        kind: &str,
        party: usize,
    ) -> Result<BlobKey> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.verifier != Some(node) || !a.verified {
            return Err(Error::NotRole {
                job,
                attempt,
                role: RoleName::Verifier,
            });
        }
        if e.job.phase() != Phase::Verifying {
            return Err(wrong_phase(job, e.job.phase(), "verifying"));
        }
        // The dealer's owner material sits at the dealer's evidence index (the number of parties).
        if kind == "owner" {
            if party != a.parties.len() {
                return Err(Error::NoSuchParty { party });
            }
            return Ok(BlobKey {
                job,
                attempt,
                dir: Direction::Owner,
                index: 0,
            });
        }
        if party >= a.parties.len() {
            return Err(Error::NoSuchParty { party });
        }
        let dir = match kind {
            "input" => Direction::Input,
            "output" => Direction::Output,
            "transcript" => Direction::Transcript,
            other => {
                return Err(Error::Unsupported {
                    field: "evidence",
                    value: other.chars().take(32).collect(),
                    expected: "input, output, transcript, owner",
                })
            }
        };
        Ok(BlobKey {
            job,
            attempt,
            dir,
            index: party,
        })
    }

    /// The verifier's receipt: checked against the attempt (signature, signer = the manifest's verifier,
    /// the manifest), kept in the audit log, and the job is done.
    pub fn task_receipt(
        &mut self,
        key: &PublicKey,
        job: u64,
        attempt: u32,
        text: &str,
        now: Millis,
    ) -> Result<()> {
        let node = self.node_of(key)?;
        let (e, a) = self.attempt_of(job, attempt)?;
        if a.verifier != Some(node) || !a.verified {
            return Err(Error::NotRole {
                job,
                attempt,
                role: RoleName::Verifier,
            });
        }
        if e.job.phase() != Phase::Verifying {
            return Err(wrong_phase(job, e.job.phase(), "verifying"));
        }
        let file =
            veil_node::receipt::ReceiptFile::from_json(text).map_err(|e| Error::BadReceipt {
                reason: e.to_string(),
            })?;
        let signed: SignedManifest = postcard::from_bytes(&a.manifest).map_err(Error::invariant)?;
        if file.manifest != signed {
            return Err(Error::BadReceipt {
                reason: "it covers another manifest".into(),
            });
        }
        file.verify(&self.identity.public_key())
            .map_err(|e| Error::BadReceipt {
                reason: e.to_string(),
            })?;
        let parties = a.parties.len();
        let entry = ReceiptEntry {
            job,
            attempt,
            stored_at_ms: now,
            receipt: text.to_string(),
        };
        self.dirty_records.push((
            format!("{RECEIPT_RECORD}/{job:020}"),
            serde_json::to_vec(&entry).map_err(|e| Error::record("receipt", e))?,
        ));
        self.receipts.insert(job, entry);
        let Some(e) = self.jobs.get_mut(&job) else {
            return Err(Error::UnknownJob { job });
        };
        let fx = e
            .job
            .apply(Event::Verified, now)
            .map_err(Error::invariant)?;
        self.apply_effects(fx, now);
        self.dirty_jobs.insert(job);
        self.delete_blobs(BlobDelete::Inputs {
            job,
            attempt,
            parties,
        });
        tracing::info!(job, attempt, "receipt stored: job done");
        Ok(())
    }
}
