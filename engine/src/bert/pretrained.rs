//! Pretrained encoders as models a committee runs: their public id and where a node finds them.
//!
//! A pretrained model's weights are public; what a job must pin is *which* weights. Its id is the SHA-256 of
//! a domain tag, the model's name, its `config.json` and its `model.safetensors` (each length-prefixed), so a
//! client and every party that hold byte-identical files compute the same id, and a party whose files differ
//! refuses the job instead of computing with other weights.
//!
//! Invariant: [`load_checked`] returns an encoder only if the files it read hash to the expected id.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::private::{PrivateBert, PrivateConfig};
use super::{Bert, BertConfig};
use crate::error::{EngineError, Result};
use veil_protocols::ring::FixedPoint;

/// The pretrained models a committee can run, by name.
pub const NAMES: [&str; 1] = ["all-minilm-l6-v2"];

/// Environment variable naming the directory that holds pretrained models (`DIR/NAME`); `models` if unset.
pub const MODELS_DIR_VAR: &str = "VEIL_MODELS";

/// Domain separation of the model id.
const ID_DOMAIN: &[u8] = b"veil pretrained encoder v1\0";

/// Whether `name` is a pretrained model's name.
pub fn is_pretrained(name: &str) -> bool {
    NAMES.contains(&name)
}

/// Where this process looks for the model `name`: `$VEIL_MODELS/NAME`, or `models/NAME`.
pub fn model_dir(name: &str) -> PathBuf {
    let base =
        std::env::var_os(MODELS_DIR_VAR).map_or_else(|| PathBuf::from("models"), PathBuf::from);
    base.join(name)
}

/// The id of the model `name` whose files are in `dir` (64 hex digits; see the module doc).
pub fn model_id(name: &str, dir: &Path) -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(ID_DOMAIN);
    hash.update((name.len() as u64).to_le_bytes());
    hash.update(name.as_bytes());
    for file in ["config.json", "model.safetensors"] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path)
            .map_err(|e| EngineError::ModelFile(format!("{}: {e}", path.display())))?;
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hex::encode(hash.finalize()))
}

/// Loads the model `name` from `dir` for private inference with `frac_bits` fractional bits, after checking
/// that its files hash to `id`.
pub fn load_checked(name: &str, dir: &Path, id: &str, frac_bits: u32) -> Result<PrivateBert> {
    let actual = model_id(name, dir)?;
    if actual != id {
        return Err(EngineError::ModelFile(format!(
            "{} holds model {actual}, not the job's {id}",
            dir.display()
        )));
    }
    // The parties need the encoder only: the tokeniser is the client's.
    let config_path = dir.join("config.json");
    let config = std::fs::read_to_string(&config_path)
        .map_err(|e| EngineError::ModelFile(format!("{}: {e}", config_path.display())))?;
    let device = burn::tensor::Device::flex();
    let bert = Bert::load(
        &dir.join("model.safetensors"),
        BertConfig::parse(&config)?,
        &device,
    )?;
    let fixed_point = FixedPoint::new(frac_bits)?;
    PrivateBert::new(&bert, PrivateConfig::new(fixed_point)?)
}
