//! `veil embed TEXT`: a sentence embedding with all-MiniLM-L6-v2.
//!
//! By default the embedding is computed privately on the local demo network: `--parties` execution parties
//! (threads of this process, over the in-memory mesh) fed by a dealer, under `--protocol semi2k` or
//! `spdz2k`. The client (this command) tokenises the text, looks the tokens up in the public embedding
//! tables and secret-shares the embedded vectors; the parties run the encoder, mean pooling and L2
//! normalisation on shares and learn nothing but the number of tokens; the client reconstructs the result
//! (under spdz2k only after the MAC checks pass). The plaintext embedding is computed too, for the cosine.
//!
//! `--plaintext` computes it with burn alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_engine::bert::private::{PrivateBert, PrivateConfig};
use veil_engine::bert::run::embed_private;
use veil_engine::bert::{cosine, SentenceEncoder};
use veil_engine::kernel::RingGemm;
use veil_engine::local::{LocalOptions, Protocol};
use veil_protocols::ring::FixedPoint;

/// `veil embed`
#[derive(Args)]
pub struct EmbedArgs {
    /// The texts to embed (one, unless `--coordinator` is given).
    pub(super) texts: Vec<String>,
    /// A file of texts to embed, one per line (with `--coordinator`).
    #[arg(long)]
    pub(super) input: Option<PathBuf>,
    /// Embed on a committee chosen by this coordinator (host:port) instead of in this process.
    #[arg(long, requires = "coordinator_key")]
    pub(super) coordinator: Option<String>,
    /// The coordinator's public key (hex), pinned.
    #[arg(long)]
    pub(super) coordinator_key: Option<veil_node::PublicKey>,
    /// Data directory of the client's identity (as for `veil deploy` and `veil infer`).
    #[arg(long)]
    pub(super) identity: Option<PathBuf>,
    /// With `--coordinator`: compute the plaintext embeddings too and print their cosines.
    #[arg(long)]
    pub(super) check: bool,
    /// With `--coordinator`: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub(super) timeout_s: u64,
    /// Compute with burn alone, in the clear.
    #[arg(long)]
    pub(super) plaintext: bool,
    /// Print one JSON object: {"embedding": [...], "tokens": N, "ms": T, "mode": "private" or "plaintext",
    /// and for the private path protocol, parties, cosine, bytes_per_party, rounds, dealer_bytes}.
    #[arg(long)]
    pub(super) json: bool,
    /// The model directory (`veil models fetch all-minilm-l6-v2` puts it there).
    #[arg(long, default_value = "models/all-minilm-l6-v2")]
    pub(super) model: PathBuf,
    /// Protocol of the private path: semi2k or spdz2k.
    #[arg(long, default_value = "semi2k")]
    pub(super) protocol: String,
    /// Execution parties of the local demo network (at least 2).
    #[arg(long, default_value_t = 3)]
    pub(super) parties: usize,
}

/// Runs `veil embed`.
pub fn run(args: EmbedArgs) -> Result<()> {
    if !args.model.join("model.safetensors").exists() {
        bail!(
            "no model at {}: run `veil models fetch all-minilm-l6-v2` first",
            args.model.display()
        );
    }
    let device = burn::tensor::Device::flex();
    let encoder = SentenceEncoder::load(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    if let Some(coordinator) = args.coordinator.clone() {
        return super::embed_job::run(&args, coordinator, &encoder);
    }
    if args.input.is_some() || args.texts.len() != 1 {
        bail!("without --coordinator, veil embed takes exactly one text");
    }
    if args.plaintext {
        return plaintext(&args, &encoder);
    }
    let Some(protocol) = Protocol::parse(&args.protocol) else {
        bail!("unknown protocol {:?}: use semi2k or spdz2k", args.protocol);
    };
    if args.parties < 2 {
        bail!("--parties must be at least 2");
    }
    let ids = encoder.tokenizer.ids(&args.texts[0])?;
    let model = PrivateBert::new(&encoder.bert, PrivateConfig::new(FixedPoint::default())?)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut options = LocalOptions::new(
        args.parties,
        Arc::new(RingGemm::new((cores / args.parties).max(1))),
    );
    options.protocol = protocol;
    let started = Instant::now();
    let report = embed_private(&model, std::slice::from_ref(&ids), &options)?;
    let total_ms = started.elapsed().as_secs_f64() * 1e3;
    let Some(embedding) = report.outputs.first() else {
        bail!("the committee returned no embedding");
    };
    let reference = encoder.bert.embed(&ids)?;
    let similarity = cosine(embedding, &reference);
    let online_ms = report
        .latencies
        .first()
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let online = report.online.first().cloned().unwrap_or_default();
    let bytes_per_party = online.iter().map(|s| s.bytes_sent).max().unwrap_or(0);
    let rounds = online.iter().map(|s| s.rounds).max().unwrap_or(0);
    let dealer_ms = report.dealer_elapsed.as_secs_f64() * 1e3;
    if args.json {
        let out = serde_json::json!({
            "embedding": embedding,
            "tokens": ids.len(),
            "ms": online_ms,
            "total_ms": total_ms,
            "mode": "private",
            "protocol": protocol.name(),
            "parties": args.parties,
            "cosine": similarity,
            "bytes_per_party": bytes_per_party,
            "rounds": rounds,
            "dealer_bytes": report.dealer_bytes,
            "dealer_ms": dealer_ms,
        });
        println!("{out}");
    } else {
        println!(
            "embedding (private, {}, {} parties + dealer in memory, {} dims, {} tokens): [{}, ...]",
            protocol.name(),
            args.parties,
            embedding.len(),
            ids.len(),
            head(embedding)
        );
        println!("  cosine with plaintext  {similarity:.6}");
        println!(
            "  time                   {online_ms:.1} ms online, {dealer_ms:.1} ms dealer, {total_ms:.1} ms in all"
        );
        println!(
            "  bytes                  {:.1} MB sent by the busiest party in {rounds} rounds; dealer {:.1} MB",
            bytes_per_party as f64 / 1e6,
            report.dealer_bytes as f64 / 1e6
        );
    }
    Ok(())
}

fn head(embedding: &[f32]) -> String {
    embedding
        .iter()
        .take(8)
        .map(|v| format!("{v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plaintext(args: &EmbedArgs, encoder: &SentenceEncoder) -> Result<()> {
    let started = Instant::now();
    let ids = encoder.tokenizer.ids(&args.texts[0])?;
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
        println!(
            "embedding (plaintext, {} dims, {} tokens, {ms:.1} ms): [{}, ...]",
            embedding.len(),
            ids.len(),
            head(&embedding)
        );
    }
    Ok(())
}
