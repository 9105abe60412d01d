//! ONNX models deployed on the network (issue 22): public weights, secret inputs and outputs.
//!
//! The deployment carries the ONNX file itself (hex, in the deployment's and the manifest's
//! `architecture`), and the model id is the SHA-256 of the file's bytes. The coordinator imports it once
//! at deploy to refuse what veil cannot run; every member (parties and dealer) decodes the file from the
//! signed manifest, checks its hash against the id and imports it, so all derive the same graph and the
//! same dealer requests. The client imports it too (to encode the inputs and decode the outputs).
//!
//! Invariant: a file that reaches the importer is at most [`MAX_ONNX_BYTES`] bytes and hashes to the id.

use sha2::{Digest, Sha256};
use veil_engine::onnx::{Graph, PrivateConfig, PrivateGraph};
use veil_protocols::ring::FixedPoint;

use crate::error::{NodeError, Result};
use crate::manifest::MAX_ARCHITECTURE_BYTES;

/// The workload name of a job on a deployed ONNX model.
pub const ONNX_WORKLOAD: &str = "onnx";

/// Largest deployable ONNX file, bytes (its hex fills a manifest's architecture).
pub const MAX_ONNX_BYTES: usize = MAX_ARCHITECTURE_BYTES / 2;

/// The model id of an ONNX file: the hex SHA-256 of its bytes.
pub fn model_id(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The deployment's `architecture` of an ONNX file (its hex), refusing a file over [`MAX_ONNX_BYTES`].
pub fn encode(bytes: &[u8]) -> Result<String> {
    if bytes.len() > MAX_ONNX_BYTES {
        return Err(NodeError::Manifest(format!(
            "ONNX file of {} bytes (at most {MAX_ONNX_BYTES} deploy)",
            bytes.len()
        )));
    }
    Ok(hex::encode(bytes))
}

/// The file of a deployment's `architecture`: bounded, hex, and hashing to `id`.
pub fn decode_checked(architecture: &str, id: &str) -> Result<Vec<u8>> {
    if architecture.len() > 2 * MAX_ONNX_BYTES {
        return Err(NodeError::Manifest(format!(
            "ONNX model of {} hex digits (at most {})",
            architecture.len(),
            2 * MAX_ONNX_BYTES
        )));
    }
    let bytes = hex::decode(architecture)
        .map_err(|e| NodeError::Manifest(format!("ONNX model hex: {e}")))?;
    if model_id(&bytes) != id.to_ascii_lowercase() {
        return Err(NodeError::Manifest(
            "the ONNX model does not hash to its model id".into(),
        ));
    }
    Ok(bytes)
}

/// The imported graph of an ONNX file (refuses unsupported operators, dynamic shapes, external data).
pub fn import(bytes: &[u8]) -> Result<Graph> {
    Ok(veil_engine::onnx::import(bytes).map_err(veil_engine::EngineError::from)?)
}

/// The graph of `bytes` prepared for private inference at `frac_bits` fractional bits.
pub fn private_graph(bytes: &[u8], frac_bits: u32) -> Result<PrivateGraph> {
    let graph = import(bytes)?;
    let fp = FixedPoint::new(frac_bits).map_err(|e| NodeError::Manifest(e.to_string()))?;
    Ok(PrivateGraph::new(graph, PrivateConfig::new(fp)?)?)
}

/// The private graph of a deployment (`architecture` the file's hex, `id` its hash), checked.
pub fn load_checked(architecture: &str, id: &str, frac_bits: u32) -> Result<PrivateGraph> {
    private_graph(&decode_checked(architecture, id)?, frac_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_pins_the_file() {
        let bytes = b"not really onnx";
        let hexed = encode(bytes).unwrap();
        let id = model_id(bytes);
        assert_eq!(decode_checked(&hexed, &id).unwrap(), bytes);
        let other = model_id(b"another file");
        assert!(decode_checked(&hexed, &other).is_err());
        assert!(encode(&vec![0u8; MAX_ONNX_BYTES + 1]).is_err());
        assert!(decode_checked("zz", &id).is_err());
    }
}
