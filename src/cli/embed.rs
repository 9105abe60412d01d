//! `veil embed TEXT`: a sentence embedding with all-MiniLM-L6-v2.
//!
//! `--plaintext` computes it with burn alone. The private path (token ids secret-shared, the encoder under
//! MPC) is not built yet: without `--plaintext` the command says so and exits with an error rather than
//! printing a plaintext result as if it were private.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_engine::bert::SentenceEncoder;

/// `veil embed`
#[derive(Args)]
pub struct EmbedArgs {
    /// The text to embed.
    text: String,
    /// Compute with burn alone, in the clear.
    #[arg(long)]
    plaintext: bool,
    /// Print one JSON object: {"embedding": [...], "tokens": N, "ms": T, "mode": "plaintext"}.
    #[arg(long)]
    json: bool,
    /// The model directory (`veil models fetch all-minilm-l6-v2` puts it there).
    #[arg(long, default_value = "models/all-minilm-l6-v2")]
    model: PathBuf,
}

/// Runs `veil embed`.
pub fn run(args: EmbedArgs) -> Result<()> {
    if !args.plaintext {
        bail!(
            "private embeddings are not available yet (the MPC transformer is a pending part of issue 7); \
             use --plaintext for the burn reference"
        );
    }
    if !args.model.join("model.safetensors").exists() {
        bail!(
            "no model at {}: run `veil models fetch all-minilm-l6-v2` first",
            args.model.display()
        );
    }
    let device = burn::tensor::Device::flex();
    let encoder = SentenceEncoder::load(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let started = Instant::now();
    let ids = encoder.tokenizer.ids(&args.text)?;
    let embedding = encoder.bert.embed(&ids)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if args.json {
        let out = serde_json::json!({
            "embedding": embedding,
            "tokens": ids.len(),
            "ms": ms,
            "mode": "plaintext",
        });
        println!("{out}");
    } else {
        let head: Vec<String> = embedding
            .iter()
            .take(8)
            .map(|v| format!("{v:.4}"))
            .collect();
        println!(
            "embedding (plaintext, {} dims, {} tokens, {ms:.1} ms): [{}, ...]",
            embedding.len(),
            ids.len(),
            head.join(", ")
        );
    }
    Ok(())
}
