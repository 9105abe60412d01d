//! Model files a node fetched from its coordinator (deployed ONNX files, `crate::onnx_model`), kept on
//! disk by hash under the node's data directory (`models/{id}.onnx`), so that a second job on a model
//! fetches nothing.
//!
//! Invariants: a file is fetched only when no cached copy passes the check; a fetched file is kept only
//! if it is at most [`crate::onnx_model::MAX_ONNX_BYTES`], has the manifest's size and hashes to the
//! model id; a cached file is checked again (size and hash) every time it is read, and one that fails is
//! removed and fetched anew; files are written to a temporary name, synced and renamed, so a reader sees
//! all of a file or none. The directory holds at most [`MAX_CACHED_FILES`] files and
//! [`MAX_CACHE_BYTES`]: past either, the files fetched longest ago go first (the file just fetched stays).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::onnx_model::{self, OnnxFileError};

/// Most files kept.
pub const MAX_CACHED_FILES: usize = 16;
/// Most bytes kept (the file just fetched stays even when it alone exceeds this).
pub const MAX_CACHE_BYTES: u64 = 1 << 30;

/// Why a model file could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file (fetched or cached) is not the model's.
    #[error(transparent)]
    File(#[from] OnnxFileError),
    /// The coordinator did not hand the file over.
    #[error("fetching model {id} from the coordinator: {reason}")]
    Fetch {
        /// The model id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// The cache directory of model files.
#[derive(Debug)]
pub struct ModelCache {
    dir: PathBuf,
    fetches: AtomicU64,
}

impl ModelCache {
    /// The cache in `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> ModelCache {
        ModelCache {
            dir,
            fetches: AtomicU64::new(0),
        }
    }

    /// Where the file of model `id` (checked: 64 hex digits) is kept.
    pub fn path(&self, id: &str) -> Result<PathBuf, OnnxFileError> {
        Ok(self.dir.join(format!("{}.onnx", onnx_model::check_id(id)?)))
    }

    /// Files fetched by this cache since it was made (a cached file read back is not counted).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The file of model `id` of `size` bytes (as a manifest names them): the cached copy if it passes the
    /// check, otherwise what `fetch` returns, checked before it is kept or returned. A copy that cannot
    /// be kept (a full disk) is still returned: the cache is an optimisation.
    pub fn get_or_fetch(
        &self,
        id: &str,
        size: u64,
        fetch: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Vec<u8>, ModelFileError> {
        let path = self.path(id)?;
        onnx_model::check_size(size)?;
        if let Some(bytes) = read_cached(&path, id, size) {
            return Ok(bytes);
        }
        let bytes = fetch().map_err(|reason| ModelFileError::Fetch {
            id: id.to_string(),
            reason,
        })?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        onnx_model::check_file(&bytes, id, Some(size))?;
        match write_atomic(&path, &bytes) {
            Ok(()) => self.evict(&path),
            Err(e) => tracing::warn!(path = %path.display(), "keeping a model file: {e}"),
        }
        Ok(bytes)
    }

    /// Removes the files fetched longest ago while the directory exceeds its bounds (`keep` stays).
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "onnx"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut count = files.len();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files {
            if count <= MAX_CACHED_FILES && total <= MAX_CACHE_BYTES {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                count -= 1;
                total = total.saturating_sub(len);
            }
        }
    }
}

/// The cached file at `path` if it has `size` bytes and hashes to `id`; a file that fails the check is
/// removed.
fn read_cached(path: &Path, id: &str, size: u64) -> Option<Vec<u8>> {
    let len = std::fs::metadata(path).ok()?.len();
    if len == size {
        // `size` passed `check_size`: the read is bounded.
        if let Ok(bytes) = std::fs::read(path) {
            if onnx_model::check_file(&bytes, id, Some(size)).is_ok() {
                return Some(bytes);
            }
        }
    }
    tracing::warn!(path = %path.display(), "a cached model file fails its check: fetching it again");
    let _ = std::fs::remove_file(path);
    None
}

/// Writes `bytes` to `path` durably: a temporary file in the same directory, synced, then renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a cache path without a directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", hex::encode(rand::random::<[u8; 8]>())));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_fetched_once_checked_and_refused_when_it_is_not_the_ids() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::new(dir.path().join("models"));
        let file = b"an onnx file, for the cache".to_vec();
        let id = onnx_model::model_id(&file);
        let size = file.len() as u64;

        // A coordinator that hands over another file: refused, nothing kept.
        let other = b"another file of the same size!!".to_vec();
        let err = cache
            .get_or_fetch(&id, other.len() as u64, || Ok(other.clone()))
            .unwrap_err();
        assert!(
            matches!(err, ModelFileError::File(OnnxFileError::WrongHash { .. })),
            "{err}"
        );
        assert!(
            err.to_string().contains("does not hash to model id"),
            "{err}"
        );
        assert!(!cache.path(&id).unwrap().exists());
        // The right file but not the manifest's size: refused.
        assert!(matches!(
            cache.get_or_fetch(&id, size + 1, || Ok(file.clone())),
            Err(ModelFileError::File(OnnxFileError::WrongSize { .. }))
        ));
        // A size over the bound: refused before fetching.
        assert!(matches!(
            cache.get_or_fetch(&id, onnx_model::MAX_ONNX_BYTES as u64 + 1, || {
                panic!("fetched")
            }),
            Err(ModelFileError::File(OnnxFileError::Size { .. }))
        ));
        assert_eq!(cache.fetches(), 2);

        // The right file: fetched once, then read from disk.
        let got = cache.get_or_fetch(&id, size, || Ok(file.clone())).unwrap();
        assert_eq!(got, file);
        assert_eq!(cache.fetches(), 3);
        let path = cache.path(&id).unwrap();
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        let again = cache
            .get_or_fetch(&id, size, || panic!("fetched again"))
            .unwrap();
        assert_eq!(again, file);
        assert_eq!(cache.fetches(), 3);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            written
        );

        // A cached copy damaged on disk: removed and fetched anew.
        std::fs::write(&path, b"an onnx file, for the cachf").unwrap();
        let repaired = cache.get_or_fetch(&id, size, || Ok(file.clone())).unwrap();
        assert_eq!(repaired, file);
        assert_eq!(cache.fetches(), 4);
        assert_eq!(std::fs::read(&path).unwrap(), file);

        // A failed fetch is the coordinator's message.
        let gone = onnx_model::model_id(b"gone");
        let err = cache
            .get_or_fetch(&gone, 4, || Err("404".into()))
            .unwrap_err();
        assert!(matches!(err, ModelFileError::Fetch { .. }), "{err}");
    }

    #[test]
    fn the_cache_keeps_at_most_its_bound_of_files_the_oldest_going_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::new(dir.path().to_path_buf());
        let files: Vec<Vec<u8>> = (0..MAX_CACHED_FILES + 2)
            .map(|i| format!("file {i}").into_bytes())
            .collect();
        for f in &files {
            let id = onnx_model::model_id(f);
            cache
                .get_or_fetch(&id, f.len() as u64, || Ok(f.clone()))
                .unwrap();
            // Distinct modification times, so the order is the fetch order.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let kept = |f: &Vec<u8>| cache.path(&onnx_model::model_id(f)).unwrap().exists();
        assert!(!kept(&files[0]) && !kept(&files[1]));
        assert!(files[2..].iter().all(kept));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            MAX_CACHED_FILES
        );
    }
}
