//! The registry of a node's live jobs.
//!
//! Invariants:
//! - a job is registered only from a [`CheckedManifest`], and its members' keys are admitted to the
//!   node's allow-list exactly as long as the job is registered;
//! - registration returns a [`JobGuard`]; dropping it (job done, failed, timed out or abandoned) removes the
//!   job and releases its keys, so no job state outlives its handler;
//! - a job id is registered at most once at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use quinn::RecvStream;
use tokio::sync::mpsc;

use crate::dealer::DealerState;
use crate::error::{NodeError, Result};
use crate::manifest::CheckedManifest;
use crate::tls::AllowList;
use crate::wire::JobId;

/// A party's incoming data stream: the sending party and the stream after its `Hello`.
pub type Arrival = (usize, RecvStream);

/// What a node holds for one live job.
pub struct JobSlot {
    /// The checked manifest and this node's role.
    pub manifest: CheckedManifest,
    /// Where incoming party data streams go (execution parties).
    pub arrivals: mpsc::UnboundedSender<Arrival>,
    /// Dealing state (dealer).
    pub dealer: DealerState,
}

/// The live jobs of a node.
pub struct Jobs {
    map: Mutex<HashMap<JobId, Arc<JobSlot>>>,
    allowed: Arc<AllowList>,
    dealer_seed: Option<u64>,
}

/// Keeps a job registered; removes it when dropped.
pub struct JobGuard {
    jobs: Arc<Jobs>,
    id: JobId,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        let removed = self
            .jobs
            .map
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&self.id));
        if let Some(slot) = removed {
            self.jobs.allowed.release(&slot.manifest.manifest().keys());
            tracing::debug!(job = %self.id, "job state removed");
        }
    }
}

impl Jobs {
    /// An empty registry admitting members into `allowed`.
    /// `dealer_seed` is the node's test-only [`crate::config::NodeConfig::insecure_dealer_seed`].
    pub fn new(allowed: Arc<AllowList>, dealer_seed: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            map: Mutex::new(HashMap::new()),
            allowed,
            dealer_seed,
        })
    }

    /// Registers a job; fails if its id is live already.
    pub fn register(
        self: &Arc<Self>,
        manifest: CheckedManifest,
    ) -> Result<(JobGuard, Arc<JobSlot>, mpsc::UnboundedReceiver<Arrival>)> {
        let id = manifest.manifest().job;
        let parties = manifest.manifest().parties.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = manifest.manifest().keys();
        let slot = Arc::new(JobSlot {
            manifest,
            arrivals: tx,
            dealer: DealerState::new(parties, self.dealer_seed),
        });
        {
            let mut map = self
                .map
                .lock()
                .map_err(|_| NodeError::Job("job registry poisoned".into()))?;
            if map.contains_key(&id) {
                return Err(NodeError::Manifest(format!("job {id} is already running")));
            }
            map.insert(id, slot.clone());
        }
        self.allowed.admit(&keys);
        Ok((
            JobGuard {
                jobs: self.clone(),
                id,
            },
            slot,
            rx,
        ))
    }

    /// The live job `id`.
    pub fn get(&self, id: &JobId) -> Option<Arc<JobSlot>> {
        self.map.lock().ok()?.get(id).cloned()
    }

    /// Number of live jobs.
    pub fn count(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}
