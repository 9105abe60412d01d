//! `veil chat PROMPT`: a chat turn with SmolLM2-135M-Instruct.
//!
//! By default the turn runs privately on the local demo network: `--parties` execution parties (threads of
//! this process, over the in-memory mesh) fed by a dealer, under semi2k. The client (this command) renders
//! the chat template, tokenises, looks the tokens up in the public embedding table and secret-shares the
//! vectors; the committee runs every block on shares and keeps the key/value cache as shares between
//! decode steps; for each token the client reconstructs the last position's logits, samples, and shares
//! the next token's embedding. The parties learn the prompt's length and the number of generated tokens.
//!
//! `--plaintext` runs the same turn with burn alone.
//!
//! `--coordinator ADDR --coordinator-key KEY` runs the turn on a committee the coordinator picks (one job;
//! `veil_client::chat`): the coordinator relays only each party's sealed ticket, and this command drives
//! the turn on its own QUIC streams to the parties. `veil deploy --model smollm2-135m-instruct` deploys the
//! model there first ([`deploy`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_engine::kernel::RingGemm;
use veil_engine::llama::private::{PrivateConfig, PrivateLlama};
use veil_engine::llama::run::{generate_private, LocalSession, PREFILL_CHUNK};
use veil_engine::llama::{generate_plaintext, ChatModel, Sampler, Sampling};
use veil_engine::local::{LocalOptions, Protocol};
use veil_protocols::ring::FixedPoint;

use super::models::{SMOLLM2_FILE, SMOLLM2_NAME};

/// `veil chat`
#[derive(Args)]
pub struct ChatArgs {
    /// The user's message.
    prompt: String,
    /// A system message (the template's default when absent).
    #[arg(long)]
    system: Option<String>,
    /// Run with burn alone, in the clear.
    #[arg(long)]
    plaintext: bool,
    /// Most tokens generated.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature (greedy when absent).
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus mass kept when sampling.
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object: {"prompt_tokens": [...], "tokens": [...], "text": "...", "mode": ...} (the
    /// private path adds parties, protocol, prefill_ms, ms_per_token, bytes_per_party).
    #[arg(long)]
    json: bool,
    /// The GGUF file (`veil models fetch smollm2-135m-instruct` puts it there).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Protocol of the private path (semi2k).
    #[arg(long, default_value = "semi2k")]
    protocol: Protocol,
    /// Execution parties of the local demo network, or of the coordinator's committee (at least 2).
    #[arg(long, default_value_t = 3)]
    parties: usize,
    /// Run the turn through this coordinator (host:port) on a committee it picks.
    #[arg(long)]
    coordinator: Option<String>,
    /// The coordinator's public key (hex), pinned.
    #[arg(long)]
    coordinator_key: Option<veil_node::PublicKey>,
    /// Data directory of this client's identity (created if missing); a fresh identity if omitted.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Stop strings (through a coordinator): the turn ends when the text contains one.
    #[arg(long)]
    stop: Vec<String>,
    /// Longest the whole turn may take through a coordinator, seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

/// The default model path (under `VEIL_MODELS_DIR`, else `models/`).
pub fn default_model() -> PathBuf {
    veil_engine::bert::pretrained::model_dir(SMOLLM2_NAME).join(SMOLLM2_FILE)
}

/// Runs `veil chat`.
pub fn run(args: ChatArgs) -> Result<()> {
    let path = args.model.clone().unwrap_or_else(default_model);
    if !path.exists() {
        bail!(
            "no model at {}: run `veil models fetch {SMOLLM2_NAME}` first",
            path.display()
        );
    }
    if args.max_tokens == 0 || args.max_tokens > 1024 {
        bail!("--max-tokens must be in 1..=1024");
    }
    let sampling = match args.temperature {
        None => Sampling::Greedy,
        Some(t) => Sampling::Nucleus {
            temperature: t,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    let Some(mut sampler) = Sampler::new(sampling) else {
        bail!("--temperature must be positive and --top-p in (0, 1]");
    };
    if let Some(coordinator) = args.coordinator.clone() {
        return run_network(&args, &path, coordinator, sampling);
    }
    if !args.stop.is_empty() {
        bail!("--stop applies to turns through a coordinator (--coordinator)");
    }
    let model = ChatModel::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let prompt = model.prompt_ids(args.system.as_deref(), &args.prompt)?;
    if prompt.len() + args.max_tokens > model.weights.config.context {
        bail!("the prompt and --max-tokens exceed the model's context");
    }
    let eos = model.tokenizer.eos;
    let mut shown = String::new();
    let mut generated = Vec::new();
    let mut stream = |t: u32, json: bool| {
        generated.push(t);
        if !json {
            if let Ok(text) = model.tokenizer.decode(&generated) {
                if let Some(new) = text.strip_prefix(shown.as_str()) {
                    print!("{new}");
                    let _ = std::io::stdout().flush();
                }
                shown = text;
            }
        }
    };
    if args.plaintext {
        let device = burn::tensor::Device::flex();
        let llama = model.plaintext(&device);
        let started = Instant::now();
        let generation =
            generate_plaintext(&llama, &prompt, args.max_tokens, eos, &mut sampler, |t| {
                stream(t, args.json)
            })?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let text = model.tokenizer.decode(&generation.tokens)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "prompt_tokens": generation.prompt_tokens,
                    "tokens": generation.tokens,
                    "text": text,
                    "mode": "plaintext",
                    "ms": ms,
                })
            );
        } else {
            println!(
                "\n[plaintext: {} tokens in {ms:.0} ms]",
                generation.tokens.len()
            );
        }
        return Ok(());
    }
    let protocol = args.protocol;
    if args.parties < 2 {
        bail!("--parties must be at least 2");
    }
    let private = PrivateLlama::new(&model.weights, PrivateConfig::new(FixedPoint::default())?)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut options = LocalOptions::new(
        args.parties,
        Arc::new(RingGemm::new((cores / args.parties).max(1))),
    );
    options.protocol = protocol;
    let mut session = LocalSession::new(&private, &options)?;
    let generation = generate_private(
        &mut session,
        &prompt,
        args.max_tokens,
        eos,
        &mut sampler,
        |t| stream(t, args.json),
    )?;
    let text = model.tokenizer.decode(&generation.tokens)?;
    let costs = &session.costs;
    let prefill_steps = prompt.len().div_ceil(PREFILL_CHUNK);
    let prefill_ms: f64 = costs[..prefill_steps.min(costs.len())]
        .iter()
        .map(|c| c.elapsed.as_secs_f64() * 1e3)
        .sum();
    let decode: Vec<f64> = costs
        .iter()
        .skip(prefill_steps)
        .map(|c| c.elapsed.as_secs_f64() * 1e3)
        .collect();
    let ms_per_token = crate::cli::chat::median(&decode);
    let bytes: Vec<u64> = (0..args.parties)
        .map(|p| costs.iter().map(|c| c.online[p].bytes_sent).sum())
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "prompt_tokens": generation.prompt_tokens,
                "tokens": generation.tokens,
                "text": text,
                "mode": "private",
                "protocol": args.protocol,
                "parties": args.parties,
                "prefill_ms": prefill_ms,
                "ms_per_token": ms_per_token,
                "bytes_per_party": bytes,
            })
        );
    } else {
        println!(
            "\n[private, {} parties, {}: prompt of {} tokens prefilled in {prefill_ms:.0} ms; {} tokens, median {ms_per_token:.0} ms per decode step; {} bytes sent per party]",
            args.parties,
            args.protocol,
            prompt.len(),
            generation.tokens.len(),
            bytes.iter().max().copied().unwrap_or(0)
        );
    }
    Ok(())
}

/// The median of `v` (0 for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `veil chat --coordinator ADDR`: one turn on a committee the coordinator picks.
fn run_network(
    args: &ChatArgs,
    path: &std::path::Path,
    coordinator: String,
    sampling: Sampling,
) -> Result<()> {
    use veil_client::{ChatModelFile, ChatOptions, FinishReason};
    let Some(key) = args.coordinator_key else {
        bail!("--coordinator needs --coordinator-key");
    };
    if args.plaintext {
        bail!("--plaintext runs locally: drop --coordinator");
    }
    if args.protocol != Protocol::Semi2k {
        bail!("private generation runs semi2k");
    }
    let parties = u8::try_from(args.parties).context("--parties")?;
    // One identity for the coordinator's HTTPS and the parties' QUIC links: the parties admit its key.
    let (identity, opening) = match &args.identity {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            (
                veil_node::Identity::load_or_create(dir)?.0,
                veil_node::envelope::OpeningKey::load_or_create(
                    &dir.join(veil_node::inbox::KEY_FILE),
                )?,
            )
        }
        None => (
            veil_node::Identity::generate()?,
            veil_node::envelope::OpeningKey::generate(),
        ),
    };
    let api = veil_client::ApiClient::new(
        &identity,
        key,
        coordinator,
        std::time::Duration::from_secs(30),
    )?;
    let client = veil_client::Client::new(api, key, opening);
    let quic =
        veil_node::client::Client::new(identity, veil_node::client::ClientOptions::default())?;
    let file = ChatModelFile::load(path)?;
    let prompt = file
        .model
        .prompt_ids(args.system.as_deref(), &args.prompt)?;
    let options = ChatOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop: args.stop.clone(),
        parties,
        timeout: std::time::Duration::from_secs(args.timeout_s),
    };
    let json = args.json;
    let turn = client.chat(&quic, &file, &prompt, &options, |_, text| {
        if !json {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        std::ops::ControlFlow::Continue(())
    })?;
    let finish = match turn.finish {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "prompt_tokens": turn.prompt_tokens,
                "tokens": turn.tokens,
                "text": turn.text,
                "mode": "network",
                "protocol": Protocol::Semi2k,
                "parties": parties,
                "model": file.id,
                "job": turn.job,
                "run": turn.run,
                "committee": {"parties": turn.committee.parties, "dealer": turn.committee.dealer},
                "finish": finish,
                "receipt": turn.receipt,
                "prefill_ms": turn.prefill_ms,
                "ms_per_token": turn.ms_per_token,
                "bytes_per_party": turn.bytes_per_party,
                "seconds": turn.seconds,
            })
        );
    } else {
        println!(
            "\n[network, job {} on parties of {} (dealer {}), semi2k: prompt of {} tokens prefilled in {:.0} ms; {} tokens, median {:.0} ms per decode step; {} bytes sent per party; {:.1} s in all]",
            turn.job,
            turn.committee.parties.join(", "),
            turn.committee.dealer,
            turn.prompt_tokens.len(),
            turn.prefill_ms,
            turn.tokens.len(),
            turn.ms_per_token,
            turn.bytes_per_party.iter().max().copied().unwrap_or(0),
            turn.seconds
        );
    }
    Ok(())
}

/// `veil deploy --model smollm2-135m-instruct`: deploys the fetched chat model under its id, the SHA-256
/// of its GGUF file (every party checks its own copy against it). Private generation runs semi2k with
/// public weights, whatever `--protocol` and `--weights` say.
pub fn deploy(args: &super::client::DeployArgs) -> Result<()> {
    let path = default_model();
    let id = veil_node::generation::file_id(&path).with_context(|| {
        format!(
            "hashing {} (run `veil models fetch {SMOLLM2_NAME}` first)",
            path.display()
        )
    })?;
    if Protocol::parse(&args.protocol) != Some(Protocol::Semi2k) {
        eprintln!(
            "note: {SMOLLM2_NAME} is deployed for semi2k (private generation has no {} yet)",
            args.protocol
        );
    }
    let client = args.connect.session()?;
    let view = client.deploy_pretrained(
        SMOLLM2_NAME,
        &id,
        args.parties,
        FixedPoint::default().frac_bits(),
        Protocol::Semi2k.name(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        println!(
            "deployed chat model {SMOLLM2_NAME} as model {}\n  weights: public ({} parties, semi2k); every party checks its GGUF file against the id\n  run: veil chat PROMPT --coordinator {} --coordinator-key {}",
            view.id, args.parties, args.connect.coordinator, args.connect.coordinator_key
        );
    }
    Ok(())
}
