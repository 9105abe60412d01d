//! Converts a model file between veil's two formats: a burn record (burnpack, `.bpk`) and a veil safetensors
//! file. The input's format is told by its content; the output's by its extension (`.bpk` writes a burn record,
//! anything else safetensors). Both carry the architecture in their metadata, and the model id does not change.
//!
//! ```text
//! cargo run --release -p veil-engine --example convert_model -- models/breast-cancer/model.safetensors /tmp/bc.bpk
//! cargo run --release -p veil-engine --example convert_model -- mlp.bpk mlp.safetensors --architecture arch.json
//! ```
//!
//! `--architecture FILE` supplies (or overrides) the architecture JSON, for a file without one: a safetensors
//! file exported from PyTorch, or a record written by burn's `Module::save_file`. Without it, a sidecar
//! `<input>.architecture.json` is used when present.

use std::error::Error;
use std::path::PathBuf;

use burn::tensor::Device;
use veil_engine::model_file::{Architecture, ModelFile};

fn main() -> Result<(), Box<dyn Error>> {
    let usage = "usage: convert_model INPUT OUTPUT [--architecture FILE]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, output, architecture) = match args.as_slice() {
        [i, o] => (PathBuf::from(i), PathBuf::from(o), None),
        [i, o, flag, a] if flag == "--architecture" => {
            (PathBuf::from(i), PathBuf::from(o), Some(PathBuf::from(a)))
        }
        _ => return Err(usage.into()),
    };
    let device = Device::flex();
    let file = match architecture {
        Some(a) => {
            let text =
                std::fs::read_to_string(&a).map_err(|e| format!("reading {}: {e}", a.display()))?;
            let architecture: Architecture =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", a.display()))?;
            ModelFile::load_with_architecture(&input, architecture, &device)?
        }
        None => ModelFile::load(&input, &device)?,
    };
    let burn_record = output.extension().is_some_and(|e| e == "bpk");
    if burn_record {
        file.save_burn_record(&output)?;
    } else {
        file.save(&output)?;
    }
    println!(
        "{} -> {} ({}), model id {}",
        input.display(),
        output.display(),
        if burn_record {
            "burn record"
        } else {
            "safetensors"
        },
        file.id()
    );
    Ok(())
}
