//! Where the core's records live: a trait the core's driver ([`crate::Coordinator`]) works against, and its
//! redb implementation ([`RedbStore`], over `veil_scheduler::Store`). A distributed store replaces it by
//! implementing [`StateStore`]; the core does not change.
//!
//! Invariant: [`StateStore::commit`] applies a whole [`Batch`] or nothing.

use std::path::Path;

use veil_scheduler::{Batch, Config, Job, NodeId, Registry, Store, StoreError};

/// The named records of one kind: `(name, bytes)`.
pub type Records = Vec<(String, Vec<u8>)>;

/// Everything the core needs to rebuild itself after a restart.
pub struct Snapshot {
    /// The registry (node records, regions, the reservations of jobs in flight).
    pub registry: Registry,
    /// Every job's lifecycle.
    pub jobs: Vec<Job>,
    /// The core's bytes per node (postcard).
    pub node_extras: Vec<(NodeId, Vec<u8>)>,
    /// The core's bytes per job (postcard).
    pub job_extras: Vec<(veil_scheduler::JobId, Vec<u8>)>,
    /// Named records by kind: `(kind, [(name, bytes)])` for each kind asked for.
    pub records: Vec<(&'static str, Records)>,
}

/// The coordinator's persistent state, as the core sees it.
pub trait StateStore: Send {
    /// Loads everything: the registry under `default` (unless a configuration was saved), the jobs, the
    /// core's per-node and per-job bytes, and the named records of each of `kinds`.
    fn load(&self, default: Config, kinds: &[&'static str]) -> Result<Snapshot, StoreError>;

    /// Applies `batch` atomically.
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError>;
}

/// The redb database under the coordinator's data directory (`state.redb`).
pub struct RedbStore {
    store: Store,
}

impl RedbStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        Ok(RedbStore {
            store: Store::open(path)?,
        })
    }
}

impl StateStore for RedbStore {
    fn load(&self, default: Config, kinds: &[&'static str]) -> Result<Snapshot, StoreError> {
        let (registry, jobs) = self.store.load_registry(default)?;
        let records = kinds
            .iter()
            .map(|&k| Ok((k, self.store.load_records(k)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Snapshot {
            registry,
            jobs,
            node_extras: self.store.load_node_extras()?,
            job_extras: self.store.load_job_extras()?,
            records,
        })
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.store.commit(batch)
    }
}
