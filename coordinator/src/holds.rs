//! Long polls: requests the HTTPS edge holds until what they would answer changes (a node's heartbeat
//! until its tasks, a go or a cancellation change its reply; a client's job status until the job's phase
//! moves), or their wait ends.
//!
//! Each node and each waited-on job has a `tokio::sync::watch` whose version the driver bumps after every
//! call that may have changed what a held request would answer ([`crate::core::Core::take_woken`]); a held
//! request subscribes under the state lock (so a change made after its answer was computed is never
//! missed), waits outside it, and computes its answer again under the lock once woken.
//!
//! Invariants: no lock is held across a wait; at most [`Holds::max_held`] heartbeats and as many job
//! statuses as half that are held at once (a semaphore's permits each, each held request owning one; so
//! clients cannot crowd out nodes, and a quarter of the edge's concurrency stays for other requests), at
//! most [`MAX_HELD_PER_KEY`] per node or job; a
//! wait is at most [`Holds::max_wait`], below the edge's request timeout; the maps hold one entry per
//! registered node (bounded by the registry) and one per job with a waiter (cleaned of entries without
//! waiters once they outnumber the permits).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use veil_scheduler::NodeId;

use crate::config::EdgeLimits;

/// The most requests held at once for one node or one job (a node's heartbeat, plus one of a process that
/// replaced it; a client's wait, plus one retry).
pub const MAX_HELD_PER_KEY: usize = 2;

/// The longest wait of a job status long poll, ms.
pub const MAX_JOB_WAIT_MS: u64 = 5_000;

/// A held request's right to wait: what it waits on and for how long.
pub struct Hold {
    /// The longest it may wait.
    pub wait: Duration,
    changes: watch::Receiver<u64>,
    _permit: OwnedSemaphorePermit,
}

impl Hold {
    /// Waits until what the holder answers may have changed; `false` if it never can (the watch is gone).
    pub async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }
}

/// One kind of watched key (nodes, or jobs).
struct Watches<K> {
    map: HashMap<K, watch::Sender<u64>>,
}

impl<K: Eq + Hash + Copy> Watches<K> {
    fn new() -> Self {
        Watches {
            map: HashMap::new(),
        }
    }

    fn wake(&mut self, key: K) {
        if let Some(tx) = self.map.get(&key) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// A receiver of `key`'s changes, unless `key` already has [`MAX_HELD_PER_KEY`] waiters.
    fn subscribe(&mut self, key: K, bound: usize) -> Option<watch::Receiver<u64>> {
        if self.map.len() >= bound && !self.map.contains_key(&key) {
            self.map.retain(|_, tx| tx.receiver_count() > 0);
        }
        let tx = self.map.entry(key).or_insert_with(|| watch::channel(0).0);
        (tx.receiver_count() < MAX_HELD_PER_KEY).then(|| tx.subscribe())
    }
}

/// The held requests of one coordinator (see the module doc).
pub struct Holds {
    nodes: Watches<NodeId>,
    jobs: Watches<u64>,
    node_permits: Arc<Semaphore>,
    job_permits: Arc<Semaphore>,
    max_held: usize,
    max_wait: Duration,
}

impl Holds {
    /// The holds under the edge's `limits`: at most half the requests it serves at once are held
    /// heartbeats and a quarter job statuses, each for at most `cap_ms` and at most half the request
    /// timeout.
    pub fn new(limits: &EdgeLimits, cap_ms: u64) -> Holds {
        let max_held = (limits.max_concurrent_requests / 2) as usize;
        Holds {
            nodes: Watches::new(),
            jobs: Watches::new(),
            node_permits: Arc::new(Semaphore::new(max_held)),
            job_permits: Arc::new(Semaphore::new(max_held / 2)),
            max_held,
            max_wait: Duration::from_millis(cap_ms.min(limits.request_timeout_ms / 2)),
        }
    }

    /// The most heartbeats held at once.
    pub fn max_held(&self) -> usize {
        self.max_held
    }

    /// The longest a request is held.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// A hold of up to `wait_ms` (capped at [`Holds::max_wait`]) on `node`'s heartbeat replies; `None`
    /// (answer at once) for a zero wait or when the bounds are reached.
    pub fn hold_node(&mut self, node: NodeId, wait_ms: u64) -> Option<Hold> {
        let (wait, permit) = self.permit(&self.node_permits, wait_ms)?;
        let changes = self.nodes.subscribe(node, self.max_held)?;
        Some(Hold {
            wait,
            changes,
            _permit: permit,
        })
    }

    /// A hold of up to `wait_ms` (capped at [`Holds::max_wait`] and [`MAX_JOB_WAIT_MS`]) on `job`'s
    /// status; `None` as for [`Holds::hold_node`].
    pub fn hold_job(&mut self, job: u64, wait_ms: u64) -> Option<Hold> {
        let (wait, permit) = self.permit(&self.job_permits, wait_ms.min(MAX_JOB_WAIT_MS))?;
        let changes = self.jobs.subscribe(job, self.max_held)?;
        Some(Hold {
            wait,
            changes,
            _permit: permit,
        })
    }

    fn permit(
        &self,
        permits: &Arc<Semaphore>,
        wait_ms: u64,
    ) -> Option<(Duration, OwnedSemaphorePermit)> {
        let wait = Duration::from_millis(wait_ms).min(self.max_wait);
        if wait.is_zero() {
            return None;
        }
        let permit = permits.clone().try_acquire_owned().ok()?;
        Some((wait, permit))
    }

    /// Wakes the requests held for `nodes` and `jobs`.
    pub fn wake(
        &mut self,
        nodes: impl IntoIterator<Item = NodeId>,
        jobs: impl IntoIterator<Item = u64>,
    ) {
        for n in nodes {
            self.nodes.wake(n);
        }
        for j in jobs {
            self.jobs.wake(j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrent: u32, timeout_ms: u64) -> EdgeLimits {
        EdgeLimits {
            max_concurrent_requests: concurrent,
            request_timeout_ms: timeout_ms,
            ..EdgeLimits::default()
        }
    }

    #[test]
    fn holds_are_bounded_in_number_per_key_and_in_time() {
        let mut h = Holds::new(&limits(6, 4_000), 5_000);
        assert_eq!(h.max_held(), 3);
        // The wait is capped at half the request timeout; a zero wait is no hold.
        assert_eq!(h.max_wait(), Duration::from_millis(2_000));
        assert!(h.hold_node(NodeId(1), 0).is_none());
        let a = h.hold_node(NodeId(1), 60_000).unwrap();
        assert_eq!(a.wait, Duration::from_millis(2_000));
        let b = h.hold_node(NodeId(1), 10).unwrap();
        assert_eq!(b.wait, Duration::from_millis(10));
        // A third for the same node is refused; another node gets the last permit.
        assert!(h.hold_node(NodeId(1), 10).is_none());
        let c = h.hold_node(NodeId(2), 10).unwrap();
        // Every heartbeat permit is taken; job statuses have their own (one here).
        assert!(h.hold_node(NodeId(3), 10).is_none());
        let j = h.hold_job(7, 10).unwrap();
        assert!(h.hold_job(8, 10).is_none());
        drop((a, b));
        assert!(h.hold_node(NodeId(3), 10).is_some());
        drop((c, j));
        assert!(h.hold_job(8, 10).is_some());
    }

    #[tokio::test]
    async fn a_wake_reaches_a_hold_taken_before_it_and_only_its_own() {
        let mut h = Holds::new(&limits(8, 60_000), 5_000);
        let mut mine = h.hold_node(NodeId(1), 1_000).unwrap();
        let mut other = h.hold_node(NodeId(2), 1_000).unwrap();
        let mut job = h.hold_job(3, 1_000).unwrap();
        // Woken before it waits: the change is kept for it.
        h.wake([NodeId(1)], [3]);
        assert!(mine.changed().await);
        assert!(job.changed().await);
        let quiet = tokio::time::timeout(Duration::from_millis(50), other.changed()).await;
        assert!(quiet.is_err(), "node 2 was not woken");
    }
}
