//! Results: what clients and operators read back. A job's status and history, a done job's output blobs
//! and a `spdz2k` attempt's owner material (for the submitter only), and the receipts of the audit log.

use veil_node::api::{CommitteeView, JobView, ReceiptEntry, TransitionView};
use veil_node::PublicKey;
use veil_scheduler::Phase;

use super::execution::wrong_phase;
use super::{cause_text, phase_name, Core};
use crate::blobs::{BlobKey, Direction};
use crate::error::{Error, Result};

impl Core {
    /// A job's receipt, if it has one.
    pub fn receipt(&self, job: u64) -> Result<ReceiptEntry> {
        self.receipts
            .get(&job)
            .cloned()
            .ok_or(Error::NoReceipt { job })
    }

    /// The audit log: every receipt, oldest job first.
    pub fn receipts(&self) -> Vec<ReceiptEntry> {
        self.receipts.values().cloned().collect()
    }

    /// The sealed owner material of a `spdz2k` attempt, for its submitter.
    pub fn download_owner(&self, key: &PublicKey, job: u64, attempt: u32) -> Result<BlobKey> {
        let e = self.owned(key, job)?;
        match &e.extra.attempt {
            Some(a) if a.number == attempt && a.owner => Ok(BlobKey {
                job,
                attempt,
                dir: Direction::Owner,
                index: 0,
            }),
            _ => Err(Error::NoOwnerMaterial { job, attempt }),
        }
    }

    /// Party `party`'s output blob of a done job, for its submitter.
    pub fn download_output(&self, key: &PublicKey, job: u64, party: usize) -> Result<BlobKey> {
        let e = self.owned(key, job)?;
        if e.job.phase() != Phase::Done {
            return Err(wrong_phase(job, e.job.phase(), "done"));
        }
        let a = e
            .extra
            .attempt
            .as_ref()
            .ok_or_else(|| Error::invariant(format!("done job {job} has no attempt")))?;
        if a.expired {
            return Err(Error::ResultsExpired { job });
        }
        if party >= a.parties.len() {
            return Err(Error::NoSuchParty { party });
        }
        Ok(BlobKey {
            job,
            attempt: a.number,
            dir: Direction::Output,
            index: party,
        })
    }

    /// One job's status.
    pub fn job_view(&self, id: u64) -> Result<JobView> {
        let e = self.jobs.get(&id).ok_or(Error::UnknownJob { job: id })?;
        let j = &e.job;
        let a = e.extra.attempt.as_ref();
        Ok(JobView {
            id,
            phase: phase_name(j.phase()).into(),
            attempt: j.attempt(),
            max_attempts: j.policy.max_attempts,
            submitter: hex::encode(e.extra.submitter),
            request: e.extra.request.clone(),
            committee: a.map(|a| CommitteeView {
                parties: a.parties.iter().map(|&p| self.member_view(p)).collect(),
                dealer: a.dealer.map(|d| self.member_view(d)),
                verifier: a.verifier.map(|v| self.member_view(v)),
            }),
            run_id: a.map(|a| hex::encode(a.run_id)),
            manifest: a.map(|a| hex::encode(&a.manifest)),
            inputs_uploaded: a.map_or_else(Vec::new, |a| {
                a.inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, &x)| x)
                    .map(|(i, _)| i)
                    .collect()
            }),
            unplaced_reason: e.extra.unplaced.clone(),
            failure: j.failure().map(cause_text),
            excluded: j.excluded().iter().map(|n| n.0).collect(),
            history: j
                .history()
                .iter()
                .map(|t| TransitionView {
                    from: phase_name(t.from).into(),
                    to: phase_name(t.to).into(),
                    at_ms: t.at,
                    attempt: t.attempt,
                    cause: t.cause.as_ref().map(cause_text),
                })
                .collect(),
            owner_ready: a.is_some_and(|a| a.owner),
            has_receipt: self.receipts.contains_key(&id),
        })
    }

    /// A page of `submitter`'s jobs: those with an id above `after`, oldest first, at most `limit` (the
    /// caller bounds it). Other clients' jobs are never listed.
    pub fn jobs_of(&self, submitter: &PublicKey, after: u64, limit: usize) -> Vec<JobView> {
        self.jobs
            .range(after.saturating_add(1)..)
            .filter(|(_, e)| e.extra.submitter == submitter.0)
            .take(limit)
            .filter_map(|(&id, _)| self.job_view(id).ok())
            .collect()
    }

    /// Prunes the jobs finished more than `job_retention_ms` before `now` (0: never): their records go
    /// from the state and the store (committed with the next batch) and so do the blobs they still have;
    /// receipts stay (the audit log).
    ///
    /// Invariant: the newest job is never pruned, so a restart, which numbers new jobs after the largest
    /// stored id, never reuses a job id (receipts and blob directories are keyed by it).
    pub(super) fn prune_jobs(&mut self, now: veil_scheduler::Millis) {
        let retention = self.config.job_retention_ms;
        if retention == 0 {
            return;
        }
        let newest = self.jobs.keys().next_back().copied();
        let old: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(&id, _)| Some(id) != newest)
            .filter(|(_, e)| e.job.phase().is_terminal())
            .filter(|(_, e)| {
                let finished_at = e.job.history().last().map_or(0, |t| t.at);
                now.saturating_sub(finished_at) >= retention
            })
            .map(|(&id, _)| id)
            .collect();
        for id in old {
            let Some(e) = self.jobs.remove(&id) else {
                continue;
            };
            if let Some(a) = e.extra.attempt.as_ref().filter(|a| !a.expired) {
                self.blob_deletes.push(crate::blobs::BlobDelete::Attempt {
                    job: id,
                    attempt: a.number,
                });
            }
            // A dirty id without an entry is removed from the store by the next batch.
            self.dirty_jobs.insert(id);
            tracing::info!(job = id, "finished job pruned (job_retention_ms)");
        }
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Vec<JobView> {
        self.jobs
            .keys()
            .rev()
            .filter_map(|&id| self.job_view(id).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {}
