//! Deployed model files (ONNX, `veil_node::onnx_model`), content-addressed: the file of model `id` is
//! `models/{id}.onnx` under the coordinator's data directory, kept across restarts. The deploy route
//! checks a file (size, SHA-256 against the id, import) before it is stored, outside the state lock;
//! members and clients fetch it by id and check it again themselves.
//!
//! Invariants: a stored file hashes to its name (it is only written after that check) and is at most
//! [`veil_node::onnx_model::MAX_ONNX_BYTES`]; it is written to a temporary name, synced and renamed, so a
//! reader sees all of it or nothing; the coordinator never interprets a stored file after deploy.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The directory of model files.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    root: PathBuf,
}

impl ModelFiles {
    /// Model files under `root` (created on the first write).
    pub fn new(root: PathBuf) -> ModelFiles {
        ModelFiles { root }
    }

    /// Where the file of model `id` (checked: 64 hex digits, taken in lower case) is kept.
    pub fn path(&self, id: &str) -> Result<PathBuf> {
        let id =
            veil_node::onnx_model::check_id(id).map_err(|e| Error::malformed("model id", e))?;
        Ok(self.root.join(format!("{id}.onnx")))
    }

    /// Stores the file of model `id` durably (write, sync, rename). The caller checked that `bytes`
    /// hashes to `id`. Storing the same file again replaces it with the same bytes.
    pub fn put(&self, id: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let path = self.path(id)?;
        let io = |source| Error::ModelFile {
            model: id.to_string(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(io)?;
        let tmp = self
            .root
            .join(format!(".{}.tmp", hex::encode(rand::random::<[u8; 8]>())));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }

    /// Reads the file of model `id` (bounded by [`veil_node::onnx_model::MAX_ONNX_BYTES`]).
    pub fn get(&self, id: &str) -> Result<Vec<u8>> {
        use std::io::Read;
        let path = self.path(id)?;
        let io = |source| Error::ModelFile {
            model: id.to_string(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(veil_node::onnx_model::MAX_ONNX_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() > veil_node::onnx_model::MAX_ONNX_BYTES {
            return Err(Error::invariant(format!(
                "the stored file of model {id} is over the bound"
            )));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_file_is_stored_by_id_and_read_back_by_a_new_handle() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"a model file".to_vec();
        let id = veil_node::onnx_model::model_id(&bytes);
        ModelFiles::new(dir.path().join("models"))
            .put(&id.to_ascii_uppercase(), &bytes)
            .unwrap();
        // Another handle on the same directory (a restarted coordinator) reads it back.
        let files = ModelFiles::new(dir.path().join("models"));
        assert_eq!(files.get(&id).unwrap(), bytes);
        assert!(dir
            .path()
            .join("models")
            .join(format!("{id}.onnx"))
            .exists());
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("models"))
                .unwrap()
                .count(),
            1
        );
        assert!(files.get(&"ab".repeat(32)).is_err());
        assert!(files.path("../x").is_err());
    }
}
