//! Opaque per-node blobs (a party's input shares going in, its output shares coming out), kept as files
//! under the coordinator's data directory so that a restart loses none.
//!
//! Invariants: a blob file is written to a temporary name and renamed, so a reader sees all of it or
//! nothing; the coordinator never decodes or logs a blob's contents (only its length); an attempt's
//! directory is removed when the attempt ends without a result.

use std::path::{Path, PathBuf};

/// Which way a blob travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to a party.
    Input,
    /// From a party to the client.
    Output,
    /// From the dealer to the client (`spdz2k` owner material; the index is 0).
    Owner,
    /// From a party to the verifier (its MAC-check views, public).
    Transcript,
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// Blobs under `root` (created on first write).
    pub fn new(root: PathBuf) -> Blobs {
        Blobs { root }
    }

    fn attempt_dir(&self, job: u64, attempt: u32) -> PathBuf {
        self.root
            .join(format!("job-{job}"))
            .join(format!("attempt-{attempt}"))
    }

    fn path(&self, job: u64, attempt: u32, dir: Direction, party: usize) -> PathBuf {
        let name = match dir {
            Direction::Input => format!("input-{party}"),
            Direction::Output => format!("output-{party}"),
            Direction::Owner => format!("owner-{party}"),
            Direction::Transcript => format!("transcript-{party}"),
        };
        self.attempt_dir(job, attempt).join(name)
    }

    /// Stores a blob durably (write, sync, rename).
    pub fn put(
        &self,
        job: u64,
        attempt: u32,
        dir: Direction,
        party: usize,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.path(job, attempt, dir, party);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
    }

    /// Reads a blob.
    pub fn get(
        &self,
        job: u64,
        attempt: u32,
        dir: Direction,
        party: usize,
    ) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(job, attempt, dir, party))
    }

    /// Removes every blob of an attempt (ignores a missing directory).
    pub fn remove_attempt(&self, job: u64, attempt: u32) {
        remove_dir(&self.attempt_dir(job, attempt));
    }

    /// Removes the input blobs of an attempt, keeping its outputs.
    pub fn remove_inputs(&self, job: u64, attempt: u32, parties: usize) {
        for p in 0..parties {
            let _ = std::fs::remove_file(self.path(job, attempt, Direction::Input, p));
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "removing blobs: {e}");
        }
    }
}
