//! ONNX models deployed on the network (issue 22): public weights, secret inputs and outputs.
//!
//! A deployed ONNX model is a content-addressed file: its model id is the hex SHA-256 of its bytes, and
//! it is at most [`MAX_ONNX_BYTES`]. The owner's client uploads it once (`PUT /v1/models/{id}/onnx`); the
//! coordinator checks its hash, imports it once, stores it and records the graph's figures
//! ([`crate::api::OnnxFile`]). A job's signed manifest carries only the id and the file's size. Every
//! member (parties and dealer) fetches the file from the coordinator (`GET /v1/models/{id}/onnx`), checks
//! its size and hash against the manifest before importing it ([`check_file`]), keeps it on disk by hash
//! ([`crate::model_cache`]) and the imported graph in memory ([`install`], [`loaded`]), so all derive the
//! same graph and the same dealer requests, and a second job on the model fetches and imports nothing.
//! The client fetches and checks the file the same way (to encode the inputs and decode the outputs).
//!
//! Invariant: a file that reaches the importer is at most [`MAX_ONNX_BYTES`] bytes and hashes to the id
//! it is used under.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use veil_engine::onnx::{Graph, PrivateConfig, PrivateGraph};
use veil_protocols::ring::FixedPoint;

use crate::error::{NodeError, Result};

/// The workload name of a job on a deployed ONNX model.
pub const ONNX_WORKLOAD: &str = "onnx";

/// Largest deployable ONNX file, bytes (64 MiB): what the coordinator reads of an upload (it refuses the
/// rest while reading), and what a member or a client accepts from the coordinator.
pub const MAX_ONNX_BYTES: usize = 64 << 20;

/// Why an ONNX file is refused for a model id.
#[derive(Debug, thiserror::Error)]
pub enum OnnxFileError {
    /// The model id is not 64 hex digits.
    #[error("ONNX model id {id:?} is not 64 hex digits")]
    BadId {
        /// The id given (its first 80 characters).
        id: String,
    },
    /// The file is larger than [`MAX_ONNX_BYTES`] (or empty).
    #[error("ONNX file of {bytes} bytes: a deployable file has 1 to {max} bytes")]
    Size {
        /// Its size.
        bytes: u64,
        /// The bound.
        max: usize,
    },
    /// The file does not have the size the manifest names.
    #[error("ONNX file of {got} bytes, but model {id} has {expected}")]
    WrongSize {
        /// The model id.
        id: String,
        /// The size the manifest names.
        expected: u64,
        /// The file's size.
        got: u64,
    },
    /// The file does not hash to the model id.
    #[error("the ONNX file does not hash to model id {id} (its SHA-256 is {actual})")]
    WrongHash {
        /// The model id.
        id: String,
        /// The file's SHA-256 (hex).
        actual: String,
    },
}

/// The model id of an ONNX file: the hex SHA-256 of its bytes.
pub fn model_id(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks that `id` is a model id (64 hex digits); returns it in lower case.
pub fn check_id(id: &str) -> std::result::Result<String, OnnxFileError> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OnnxFileError::BadId {
            id: id.chars().take(80).collect(),
        });
    }
    Ok(id.to_ascii_lowercase())
}

/// Checks a size against [`MAX_ONNX_BYTES`] (and that it is not 0).
pub fn check_size(bytes: u64) -> std::result::Result<(), OnnxFileError> {
    if bytes == 0 || bytes > MAX_ONNX_BYTES as u64 {
        return Err(OnnxFileError::Size {
            bytes,
            max: MAX_ONNX_BYTES,
        });
    }
    Ok(())
}

/// Checks `bytes` as the file of model `id`: bounded, of `size` bytes when a size is named (a manifest's),
/// and hashing to `id`. What every member and the client run on a fetched file before importing it.
pub fn check_file(
    bytes: &[u8],
    id: &str,
    size: Option<u64>,
) -> std::result::Result<(), OnnxFileError> {
    let id = check_id(id)?;
    let got = bytes.len() as u64;
    check_size(got)?;
    if let Some(expected) = size {
        if expected != got {
            return Err(OnnxFileError::WrongSize { id, expected, got });
        }
    }
    let actual = model_id(bytes);
    if actual != id {
        return Err(OnnxFileError::WrongHash { id, actual });
    }
    Ok(())
}

/// Checks a manifest's ONNX model: an id of 64 hex digits, a file size within [`check_size`], and nothing
/// else (no architecture: the file is fetched apart; one stage).
pub fn check_deployed(d: &crate::manifest::DeployedModel) -> Result<()> {
    d.check_id()?;
    check_size(d.file_bytes).map_err(|e| NodeError::Manifest(e.to_string()))?;
    if !d.architecture.is_empty() || d.handoff.is_some() || d.senders != 0 {
        return Err(NodeError::Manifest(
            "an ONNX job's manifest names its file only, in one stage".into(),
        ));
    }
    Ok(())
}

/// The imported graph of an ONNX file (refuses unsupported operators, dynamic shapes, external data).
pub fn import(bytes: &[u8]) -> Result<Graph> {
    Ok(veil_engine::onnx::import(bytes).map_err(veil_engine::EngineError::from)?)
}

/// `graph` prepared for private inference at `frac_bits` fractional bits.
pub fn prepare(graph: Graph, frac_bits: u32) -> Result<PrivateGraph> {
    let fp = FixedPoint::new(frac_bits).map_err(|e| NodeError::Manifest(e.to_string()))?;
    Ok(PrivateGraph::new(graph, PrivateConfig::new(fp)?)?)
}

/// The graph of `bytes` prepared for private inference at `frac_bits` fractional bits.
pub fn private_graph(bytes: &[u8], frac_bits: u32) -> Result<PrivateGraph> {
    prepare(import(bytes)?, frac_bits)
}

/// What the coordinator records of a deployed file: its size and the graph's figures that a job's demand
/// is estimated from (every tensor's elements, the node count).
pub fn figures(graph: &Graph, bytes: u64) -> crate::api::OnnxFile {
    crate::api::OnnxFile {
        bytes,
        elements: graph.tensors.iter().map(|t| t.len() as u64).sum(),
        nodes: u32::try_from(graph.nodes.len()).unwrap_or(u32::MAX),
    }
}

/// Most imported graphs this process keeps that no task holds (see [`install`]).
pub const MAX_LOADED: usize = 4;

/// Imported graphs by `id/frac_bits`, the most recently installed last. Invariant: every entry's graph was
/// imported from a file that passed [`check_file`] for its id; at most [`MAX_LOADED`] entries beyond those
/// a task still holds (an `Arc` held elsewhere is never evicted, so a graph stays while a job uses it).
static LOADED: Mutex<Vec<(String, Arc<PrivateGraph>)>> = Mutex::new(Vec::new());

fn key(id: &str, frac_bits: u32) -> String {
    format!("{}/{frac_bits}", id.to_ascii_lowercase())
}

/// The graph of model `id` (`bytes` its file, checked here against the id and `size`) at `frac_bits`,
/// imported once per process: a graph already installed is returned as it is. The caller holds the
/// returned `Arc` while its job runs, so that [`loaded`] finds it.
pub fn install(id: &str, size: u64, frac_bits: u32, bytes: &[u8]) -> Result<Arc<PrivateGraph>> {
    let k = key(id, frac_bits);
    if let Some(g) = lookup(&k) {
        return Ok(g);
    }
    check_file(bytes, id, Some(size)).map_err(|e| NodeError::Manifest(e.to_string()))?;
    let graph = Arc::new(private_graph(bytes, frac_bits)?);
    let mut all = LOADED
        .lock()
        .map_err(|_| NodeError::Job("the ONNX graph cache is poisoned".into()))?;
    if let Some((_, g)) = all.iter().find(|(x, _)| *x == k) {
        return Ok(g.clone());
    }
    all.push((k, graph.clone()));
    // Evict the oldest graphs nobody holds while there are more than the bound.
    while all.len() > MAX_LOADED {
        match all.iter().position(|(_, g)| Arc::strong_count(g) == 1) {
            Some(i) => {
                all.remove(i);
            }
            None => break,
        }
    }
    Ok(graph)
}

fn lookup(k: &str) -> Option<Arc<PrivateGraph>> {
    let all = LOADED.lock().ok()?;
    all.iter().find(|(x, _)| x == k).map(|(_, g)| g.clone())
}

/// The graph of model `id` at `frac_bits` that [`install`] imported in this process (what a job's
/// parties and dealer compute), or an error naming the model if none was.
pub fn loaded(id: &str, frac_bits: u32) -> Result<Arc<PrivateGraph>> {
    lookup(&key(id, frac_bits)).ok_or_else(|| {
        NodeError::Manifest(format!(
            "ONNX model {id} is not fetched on this node (its file comes from the coordinator)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_and_the_size_pin_the_file() {
        let bytes = b"not really onnx";
        let id = model_id(bytes);
        assert!(check_file(bytes, &id, Some(15)).is_ok());
        assert!(check_file(bytes, &id.to_ascii_uppercase(), None).is_ok());
        assert!(matches!(
            check_file(bytes, &model_id(b"another file"), None),
            Err(OnnxFileError::WrongHash { .. })
        ));
        assert!(matches!(
            check_file(bytes, &id, Some(16)),
            Err(OnnxFileError::WrongSize {
                expected: 16,
                got: 15,
                ..
            })
        ));
        assert!(matches!(
            check_file(bytes, "zz", None),
            Err(OnnxFileError::BadId { .. })
        ));
        assert!(matches!(
            check_file(b"", &model_id(b""), None),
            Err(OnnxFileError::Size { bytes: 0, .. })
        ));
        assert!(check_size(MAX_ONNX_BYTES as u64).is_ok());
        assert!(check_size(MAX_ONNX_BYTES as u64 + 1).is_err());
    }

    #[test]
    fn a_manifest_names_an_onnx_file_by_id_and_size_only() {
        let d = crate::manifest::DeployedModel {
            id: model_id(b"file"),
            architecture: String::new(),
            handoff: None,
            senders: 0,
            file_bytes: 820_554,
        };
        assert!(check_deployed(&d).is_ok());
        let refused = |f: &dyn Fn(&mut crate::manifest::DeployedModel)| {
            let mut bad = d.clone();
            f(&mut bad);
            check_deployed(&bad).is_err()
        };
        assert!(refused(&|d| d.file_bytes = 0));
        assert!(refused(&|d| d.file_bytes = MAX_ONNX_BYTES as u64 + 1));
        assert!(refused(&|d| d.architecture = "00".into()));
        assert!(refused(&|d| d.senders = 1));
        assert!(refused(&|d| d.id = "xyz".into()));
    }

    #[test]
    fn a_graph_is_installed_once_and_only_for_its_hash() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/onnx/cnn.onnx");
        let bytes = std::fs::read(path).unwrap();
        let id = model_id(&bytes);
        assert!(loaded(&id, 16).is_err());
        // A file that is not the id's: refused, nothing installed.
        assert!(install(&model_id(b"other"), bytes.len() as u64, 16, &bytes).is_err());
        let g = install(&id, bytes.len() as u64, 16, &bytes).unwrap();
        assert!(Arc::ptr_eq(&g, &loaded(&id, 16).unwrap()));
        // Installed already: not imported again (the same graph, whatever bytes come along).
        assert!(Arc::ptr_eq(&g, &install(&id, 1, 16, b"").unwrap()));
        assert!(loaded(&id, 12).is_err());
    }
}
