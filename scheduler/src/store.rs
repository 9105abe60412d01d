//! Persistence in redb: node records, jobs and the region table, so that a coordinator restart loses
//! nothing.
//!
//! Layout: table `nodes` (u32 node id -> value), table `jobs` (u64 job id -> value), table `meta`
//! (&str -> value), and two tables of opaque bytes that the coordinator service keeps beside the core's
//! records, in the same transactions: `node_extras` (u32 -> bytes: a node's address and the like) and
//! `job_extras` (u64 -> bytes: a job's submitter, model and attempt state). The core never reads those. Every value is one format byte ([`FORMAT`]) followed by the postcard encoding of the
//! record. A [`Batch`] is written in one transaction: all of it or none of it is durable.
//!
//! Invariant: a value that does not start with [`FORMAT`] or does not decode is reported as
//! [`StoreError::Corrupt`] with its table and key, never skipped silently and never a panic.
//!
//! Invariant: a database holds exactly one layout, named by [`LAYOUT`] under the `meta` key `layout`
//! (written when the file is created). [`Store::open`] refuses a file of another layout, or one written
//! before layouts were recorded that holds any record, with [`StoreError::Layout`] before anything is read:
//! postcard is not self-describing, so a record of an older layout could otherwise decode into wrong
//! values instead of failing. Bump [`LAYOUT`] whenever the encoding of any stored type changes (the core's
//! records or the service's extras).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::committee::Placement;
use crate::lifecycle::{Job, JobId};
use crate::registry::{Config, NodeRecord, RegionSnapshot, Registry, RegistryError};
use crate::types::NodeId;

const NODES: TableDefinition<u32, &[u8]> = TableDefinition::new("nodes");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const NODE_EXTRAS: TableDefinition<u32, &[u8]> = TableDefinition::new("node_extras");
const JOB_EXTRAS: TableDefinition<u64, &[u8]> = TableDefinition::new("job_extras");
/// The service's named records (deployed models, receipts), keyed `"{kind}/{name}"`; only ever added or
/// replaced, never removed (receipts are an audit log).
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const REGIONS_KEY: &str = "regions";
const CONFIG_KEY: &str = "config";

/// The format byte in front of every value.
pub const FORMAT: u8 = 1;

/// The layout of the stored types this build reads and writes (see the module doc). Layout 2: a job's
/// demand and committee name a dealer and a verifier only where its protocol has them.
pub const LAYOUT: u32 = 2;

/// The `meta` key of the layout (little-endian u32, no format byte).
const LAYOUT_KEY: &str = "layout";

/// Errors of the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A value could not be encoded.
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The encoder's error.
        source: postcard::Error,
    },
    /// A stored value is unreadable.
    #[error("corrupt value in table {table} at key {key}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The stored records do not form a registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The database was written in another layout (`found` is `None` for a file from before layouts were
    /// recorded): this build would misread its records.
    #[error(
        "the coordinator's database has layout {}, this build reads layout {expected}: run the veil that \
         wrote it, or start with a fresh data directory (nothing was changed in the file)",
        found.map_or_else(|| "1 (unrecorded)".to_string(), |f| f.to_string())
    )]
    Layout {
        /// The layout the file records, if any.
        found: Option<u32>,
        /// [`LAYOUT`].
        expected: u32,
    },
}

/// Reads a stored layout number.
fn layout_of(bytes: &[u8]) -> Result<u32, StoreError> {
    let word: [u8; 4] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        table: "meta",
        key: LAYOUT_KEY.into(),
        detail: format!("{} bytes, expected 4", bytes.len()),
    })?;
    Ok(u32::from_le_bytes(word))
}

fn dberr<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

fn encode<T: Serialize>(what: impl FnOnce() -> String, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT];
    let body = postcard::to_stdvec(value).map_err(|source| StoreError::Encode {
        what: what(),
        source,
    })?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => postcard::from_bytes(body).map_err(|e| StoreError::Corrupt {
            table,
            key: key(),
            detail: e.to_string(),
        }),
        Some((&v, _)) => Err(StoreError::Corrupt {
            table,
            key: key(),
            detail: format!("unknown format {v}"),
        }),
        None => Err(StoreError::Corrupt {
            table,
            key: key(),
            detail: "empty value".into(),
        }),
    }
}

/// Writes to apply together, in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Node records to insert or replace.
    pub nodes: Vec<NodeRecord>,
    /// Jobs to insert or replace.
    pub jobs: Vec<Job>,
    /// Jobs to delete.
    pub remove_jobs: Vec<JobId>,
    /// The region table, if it changed.
    pub regions: Option<RegionSnapshot>,
    /// The configuration, if it changed.
    pub config: Option<Config>,
    /// The service's opaque bytes per node, to insert or replace.
    pub node_extras: Vec<(NodeId, Vec<u8>)>,
    /// The service's opaque bytes per job, to insert or replace (deleted with the job by `remove_jobs`).
    pub job_extras: Vec<(JobId, Vec<u8>)>,
    /// The service's named records (`"{kind}/{name}"`, opaque bytes), to insert or replace.
    pub records: Vec<(String, Vec<u8>)>,
}

/// The coordinator's database.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens the database at `path`, creating the file and the tables if needed; refuses a file of another
    /// [`LAYOUT`] without changing it.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let database = Database::create(path).map_err(dberr)?;
        let tx = database.begin_write().map_err(dberr)?;
        {
            let nodes = tx.open_table(NODES).map_err(dberr)?;
            let jobs = tx.open_table(JOBS).map_err(dberr)?;
            let mut meta = tx.open_table(META).map_err(dberr)?;
            tx.open_table(NODE_EXTRAS).map_err(dberr)?;
            tx.open_table(JOB_EXTRAS).map_err(dberr)?;
            let records = tx.open_table(RECORDS).map_err(dberr)?;
            let found = match meta.get(LAYOUT_KEY).map_err(dberr)? {
                Some(v) => Some(layout_of(v.value())?),
                None => None,
            };
            match found {
                Some(LAYOUT) => {}
                Some(other) => {
                    return Err(StoreError::Layout {
                        found: Some(other),
                        expected: LAYOUT,
                    })
                }
                None => {
                    let empty = nodes.is_empty().map_err(dberr)?
                        && jobs.is_empty().map_err(dberr)?
                        && records.is_empty().map_err(dberr)?
                        && meta.is_empty().map_err(dberr)?;
                    if !empty {
                        return Err(StoreError::Layout {
                            found: None,
                            expected: LAYOUT,
                        });
                    }
                    meta.insert(LAYOUT_KEY, LAYOUT.to_le_bytes().as_slice())
                        .map_err(dberr)?;
                }
            }
        }
        tx.commit().map_err(dberr)?;
        Ok(Store { db: database })
    }

    /// Applies a batch atomically.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut encoded_nodes = Vec::with_capacity(batch.nodes.len());
        for r in &batch.nodes {
            encoded_nodes.push((r.id.0, encode(|| format!("node {}", r.id), r)?));
        }
        let mut encoded_jobs = Vec::with_capacity(batch.jobs.len());
        for j in &batch.jobs {
            encoded_jobs.push((j.id.0, encode(|| format!("job {}", j.id), j)?));
        }
        let regions = batch
            .regions
            .as_ref()
            .map(|r| encode(|| "regions".into(), r))
            .transpose()?;
        let config = batch
            .config
            .as_ref()
            .map(|c| encode(|| "config".into(), c))
            .transpose()?;
        let tx = self.db.begin_write().map_err(dberr)?;
        {
            let mut nodes = tx.open_table(NODES).map_err(dberr)?;
            for (id, v) in &encoded_nodes {
                nodes.insert(*id, v.as_slice()).map_err(dberr)?;
            }
            let mut jobs = tx.open_table(JOBS).map_err(dberr)?;
            for (id, v) in &encoded_jobs {
                jobs.insert(*id, v.as_slice()).map_err(dberr)?;
            }
            let mut job_extras = tx.open_table(JOB_EXTRAS).map_err(dberr)?;
            for (id, v) in &batch.job_extras {
                job_extras.insert(id.0, v.as_slice()).map_err(dberr)?;
            }
            for id in &batch.remove_jobs {
                jobs.remove(id.0).map_err(dberr)?;
                job_extras.remove(id.0).map_err(dberr)?;
            }
            let mut node_extras = tx.open_table(NODE_EXTRAS).map_err(dberr)?;
            for (id, v) in &batch.node_extras {
                node_extras.insert(id.0, v.as_slice()).map_err(dberr)?;
            }
            let mut records = tx.open_table(RECORDS).map_err(dberr)?;
            for (k, v) in &batch.records {
                records.insert(k.as_str(), v.as_slice()).map_err(dberr)?;
            }
            let mut meta = tx.open_table(META).map_err(dberr)?;
            if let Some(v) = &regions {
                meta.insert(REGIONS_KEY, v.as_slice()).map_err(dberr)?;
            }
            if let Some(v) = &config {
                meta.insert(CONFIG_KEY, v.as_slice()).map_err(dberr)?;
            }
        }
        tx.commit().map_err(dberr)?;
        Ok(())
    }

    /// Saves node records.
    pub fn save_nodes(&self, nodes: Vec<NodeRecord>) -> Result<(), StoreError> {
        self.commit(&Batch {
            nodes,
            ..Batch::default()
        })
    }

    /// Saves jobs.
    pub fn save_jobs(&self, jobs: Vec<Job>) -> Result<(), StoreError> {
        self.commit(&Batch {
            jobs,
            ..Batch::default()
        })
    }

    /// Saves every node record and the region table of `registry`, and its configuration.
    pub fn save_registry(&self, registry: &Registry) -> Result<(), StoreError> {
        self.commit(&Batch {
            nodes: registry.records(),
            regions: Some(registry.region_snapshot()),
            config: Some(registry.config().clone()),
            ..Batch::default()
        })
    }

    /// Every node record, by id.
    pub fn load_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let table = tx.open_table(NODES).map_err(dberr)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            let id = k.value();
            let r: NodeRecord = decode("nodes", || NodeId(id).to_string(), v.value())?;
            out.push(r);
        }
        Ok(out)
    }

    /// Every job, by id.
    pub fn load_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let table = tx.open_table(JOBS).map_err(dberr)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            let id = k.value();
            out.push(decode("jobs", || JobId(id).to_string(), v.value())?);
        }
        Ok(out)
    }

    /// One job.
    pub fn load_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let table = tx.open_table(JOBS).map_err(dberr)?;
        match table.get(id.0).map_err(dberr)? {
            Some(v) => Ok(Some(decode("jobs", || id.to_string(), v.value())?)),
            None => Ok(None),
        }
    }

    /// The service's bytes of every node that has some, by id.
    pub fn load_node_extras(&self) -> Result<Vec<(NodeId, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let table = tx.open_table(NODE_EXTRAS).map_err(dberr)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            out.push((NodeId(k.value()), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The service's bytes of every job that has some, by id.
    pub fn load_job_extras(&self) -> Result<Vec<(JobId, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let table = tx.open_table(JOB_EXTRAS).map_err(dberr)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            out.push((JobId(k.value()), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Every named record whose key starts with `"{kind}/"`, as (name, bytes), in key order.
    pub fn load_records(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let table = tx.open_table(RECORDS).map_err(dberr)?;
        let prefix = format!("{kind}/");
        let mut out = Vec::new();
        for item in table.range(prefix.as_str()..).map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            let Some(name) = k.value().strip_prefix(&prefix) else {
                break;
            };
            out.push((name.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn load_meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let table = tx.open_table(META).map_err(dberr)?;
        match table.get(key).map_err(dberr)? {
            Some(v) => Ok(Some(decode("meta", || key.to_owned(), v.value())?)),
            None => Ok(None),
        }
    }

    /// The saved region table.
    pub fn load_regions(&self) -> Result<Option<RegionSnapshot>, StoreError> {
        self.load_meta(REGIONS_KEY)
    }

    /// The saved configuration.
    pub fn load_config(&self) -> Result<Option<Config>, StoreError> {
        self.load_meta(CONFIG_KEY)
    }

    /// Rebuilds the registry: the saved configuration (or `default` if none was saved), node records, region
    /// table, and the reservations of every job not in a terminal phase.
    pub fn load_registry(&self, default: Config) -> Result<(Registry, Vec<Job>), StoreError> {
        let config = self.load_config()?.unwrap_or(default);
        let nodes = self.load_nodes()?;
        let regions = self.load_regions()?;
        let jobs = self.load_jobs()?;
        let in_flight: Vec<&Placement> = jobs
            .iter()
            .filter(|j| !j.phase().is_terminal())
            .flat_map(|j| j.placements().iter())
            .collect();
        let registry = Registry::from_records(config, nodes, regions, in_flight)?;
        Ok((registry, jobs))
    }
}
