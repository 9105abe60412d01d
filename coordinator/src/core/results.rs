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
                dealer: self.member_view(a.dealer),
                verifier: self.member_view(a.verifier),
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
