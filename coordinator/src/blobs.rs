//! Opaque per-node blobs (a party's input shares going in, its output shares coming out), kept as files
//! under the coordinator's data directory so that a restart loses none. The core names blobs by
//! [`BlobKey`] and says which to write and delete ([`BlobOp`]); the service does it here.
//!
//! Invariants: a blob file is written to a temporary name and renamed, so a reader sees all of it or
//! nothing; the coordinator never decodes or logs a blob's contents (only its length); an attempt's
//! directory is removed when the attempt ends without a result.

use std::path::{Path, PathBuf};

/// Which way a blob travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// One blob: party `index`'s (or, for the owner material, 0) blob of direction `dir` in an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobKey {
    /// The coordinator's job id.
    pub job: u64,
    /// The attempt (1-based).
    pub attempt: u32,
    /// Which way it travels.
    pub dir: Direction,
    /// The party index (0 for the owner material).
    pub index: usize,
}

impl std::fmt::Display for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {} of attempt {} of job {}",
            self.dir, self.index, self.attempt, self.job
        )
    }
}

/// A change to the blob directory that the core asks for (applied after the records are committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobDelete {
    /// Every blob of an attempt (it ended without a result, or its results expired).
    Attempt {
        /// The job.
        job: u64,
        /// The attempt.
        attempt: u32,
    },
    /// The input blobs of an attempt (it produced its result; the outputs stay).
    Inputs {
        /// The job.
        job: u64,
        /// The attempt.
        attempt: u32,
        /// Its parties.
        parties: usize,
    },
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

    fn path(&self, key: &BlobKey) -> PathBuf {
        let party = key.index;
        let name = match key.dir {
            Direction::Input => format!("input-{party}"),
            Direction::Output => format!("output-{party}"),
            Direction::Owner => format!("owner-{party}"),
            Direction::Transcript => format!("transcript-{party}"),
        };
        self.attempt_dir(key.job, key.attempt).join(name)
    }

    /// Stores a blob durably (write, sync, rename).
    pub fn put(&self, key: &BlobKey, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.path(key);
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

    /// The directory of staged blobs (same filesystem as the blobs, so adopting one is a rename).
    fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Writes `bytes` durably (write, sync) under a fresh name in the staging directory, outside the
    /// state lock: the slow part of an upload. The core then decides under the lock whether and where it
    /// goes ([`Blobs::adopt_or_put`]); a staged blob nobody adopts is removed when it is dropped.
    pub fn stage(&self, bytes: &[u8]) -> std::io::Result<Staged> {
        use std::io::Write;
        let dir = self.staging_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(hex::encode(rand::random::<[u8; 16]>()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let staged = Staged {
            path,
            buffer: bytes.as_ptr() as usize,
            len: bytes.len(),
        };
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(staged)
    }

    /// Removes what a previous process left in the staging directory (staged, never adopted).
    pub fn clear_staging(&self) {
        remove_dir(&self.staging_dir());
    }

    /// Stores blob `key`: by renaming `staged` into place when `bytes` is the very buffer that was staged
    /// (see [`Staged`]), otherwise as [`Blobs::put`] does. Returns whether the staged file was adopted.
    pub fn adopt_or_put(
        &self,
        key: &BlobKey,
        bytes: &[u8],
        staged: Option<&Staged>,
    ) -> std::io::Result<bool> {
        match staged {
            Some(s) if s.is(bytes) => {
                let path = self.path(key);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&s.path, &path)?;
                Ok(true)
            }
            _ => self.put(key, bytes).map(|()| false),
        }
    }

    /// Reads a blob.
    pub fn get(&self, key: &BlobKey) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(key))
    }

    /// Applies a deletion (a missing file or directory is not an error: it is already gone).
    pub fn delete(&self, op: &BlobDelete) {
        match *op {
            BlobDelete::Attempt { job, attempt } => remove_dir(&self.attempt_dir(job, attempt)),
            BlobDelete::Inputs {
                job,
                attempt,
                parties,
            } => {
                for index in 0..parties {
                    let key = BlobKey {
                        job,
                        attempt,
                        dir: Direction::Input,
                        index,
                    };
                    let _ = std::fs::remove_file(self.path(&key));
                }
            }
        }
    }
}

/// A blob written durably to the staging directory ([`Blobs::stage`]) from one buffer.
///
/// Invariant: it names the buffer it was written from by address and length, and it is adopted only for a
/// write of that same live buffer. The core treats blobs as opaque and never changes their bytes, so the
/// same buffer, still alive when the core hands it back, holds exactly the bytes on disk; any other buffer
/// (a copy, a different blob) is written anew.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    buffer: usize,
    len: usize,
}

impl Staged {
    fn is(&self, bytes: &[u8]) -> bool {
        bytes.as_ptr() as usize == self.buffer && bytes.len() == self.len
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Adopted: renamed away already (NotFound). Otherwise it was refused: remove it.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "removing blobs: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_blob_is_adopted_only_for_its_own_buffer_and_removed_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path().join("blobs"));
        let key = |index| BlobKey {
            job: 1,
            attempt: 1,
            dir: Direction::Input,
            index,
        };
        let bytes = vec![7u8; 4096];
        let staged = blobs.stage(&bytes).unwrap();
        // A copy with the same content is not the staged buffer: written anew, the staged file stays.
        let copy = bytes.clone();
        assert!(!blobs.adopt_or_put(&key(0), &copy, Some(&staged)).unwrap());
        assert!(staged.path.exists());
        // The very buffer: renamed into place.
        assert!(blobs.adopt_or_put(&key(1), &bytes, Some(&staged)).unwrap());
        assert!(!staged.path.exists());
        assert_eq!(blobs.get(&key(1)).unwrap(), bytes);
        assert_eq!(blobs.get(&key(0)).unwrap(), bytes);
        // A staged blob nobody adopts goes when dropped; leftovers of a previous process on open.
        let unused = blobs.stage(b"refused").unwrap();
        let path = unused.path.clone();
        drop(unused);
        assert!(!path.exists());
        let leftover = blobs.stage(b"crashed").unwrap();
        let path = leftover.path.clone();
        std::mem::forget(leftover);
        assert!(path.exists());
        blobs.clear_staging();
        assert!(!path.exists());
    }
}
