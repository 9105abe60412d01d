//! `veil bench --workload smollm2`: private generation with SmolLM2-135M-Instruct on a local committee.
//!
//! The prompt is a fixed English text shipped with veil (`smollm2_prompt.txt`), tokenised and cut to
//! `--prompt-len` tokens. The committee prefills it (returning the logits of every prompt position, for the
//! agreement check), then runs `--gen` greedy decode steps over its cached keys and values. Reported:
//! `prefill_ms`; the median decode step (`ms_per_token`) and its bytes (most any party sent), rounds and
//! dealer bytes; the plaintext burn model's median decode step on the same machine
//! (`plaintext_ms_per_token`); the process's peak resident memory (`peak_rss_bytes`: every in-memory party,
//! the client and the plaintext model live in this one process, so it bounds each party's); and
//! `top1_agreement`: teacher-forced over the prompt and generated positions, the fraction where the private
//! next-token argmax equals the plaintext one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use veil_engine::kernel::RingGemm;
use veil_engine::llama::private::{PrivateConfig, PrivateLlama};
use veil_engine::llama::run::{LocalSession, StepCost, PREFILL_CHUNK};
use veil_engine::llama::sample::argmax;
use veil_engine::llama::{ChatModel, KvCache};
use veil_engine::local::{LocalOptions, Protocol};
use veil_protocols::ring::FixedPoint;

use super::{BenchArgs, Transport};
use crate::cli::chat::{default_model, median};

/// The shipped English prompt text.
const PROMPT_TEXT: &str = include_str!("smollm2_prompt.txt");

/// One row of the per-step table: a step kind summed over the blocks of the median decode step.
#[derive(Debug, Serialize)]
struct StepRow {
    step: String,
    ms: f64,
    bytes: u64,
    rounds: u64,
}

/// The report.
#[derive(Debug, Serialize)]
struct Smollm2Report {
    workload: &'static str,
    protocol: String,
    parties: usize,
    transport: &'static str,
    prompt_len: usize,
    gen: usize,
    prefill_ms: f64,
    ms_per_token: f64,
    bytes_per_token: u64,
    rounds_per_token: u64,
    dealer_bytes_per_token: u64,
    plaintext_ms_per_token: f64,
    peak_rss_bytes: u64,
    top1_agreement: f64,
    positions_compared: usize,
    generated: Vec<u32>,
    profile: Vec<StepRow>,
}

/// The process's peak resident set (VmHWM), bytes; 0 where /proc is not readable.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs the workload and prints its report.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.protocol != Protocol::Semi2k {
        bail!("--workload smollm2 runs under semi2k");
    }
    if args.parties < 2 || args.prompt_len == 0 || args.gen == 0 {
        bail!("--parties must be at least 2, --prompt-len and --gen at least 1");
    }
    let path = if args.model.extension().is_some_and(|e| e == "gguf") {
        args.model.clone()
    } else {
        default_model()
    };
    let model = ChatModel::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let mut prompt = model.tokenizer.encode(PROMPT_TEXT.trim())?;
    if prompt.len() < args.prompt_len {
        bail!("the shipped prompt has only {} tokens", prompt.len());
    }
    prompt.truncate(args.prompt_len);
    let (p, g) = (args.prompt_len, args.gen);
    if p + g > model.weights.config.context {
        bail!("--prompt-len plus --gen exceed the model's context");
    }
    let private = PrivateLlama::new(
        &model.weights,
        PrivateConfig::new(FixedPoint::new(args.frac_bits)?)?,
    )?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or((cores / args.parties).max(1));
    let mut options = LocalOptions::new(args.parties, Arc::new(RingGemm::new(threads)));
    options.profile = args.profile;
    options.seed = Some(args.seed);
    let measured = match args.transport {
        Transport::Mem => in_memory(&private, &options, &prompt, g)?,
        Transport::Quic => over_quic(args, &path, &private, threads, &prompt, g)?,
    };
    let Measured {
        prefill_ms,
        mut private_top,
        generated,
        decode,
        peak_rss_bytes,
    } = measured;
    private_top.truncate(p + g - 1);
    // The private model goes before the plaintext one is built: one model's weights at a time.
    drop(private);
    let ms_per_token = median(
        &decode
            .iter()
            .map(|c| c.elapsed.as_secs_f64() * 1e3)
            .collect::<Vec<_>>(),
    );
    let median_u64 = |v: Vec<u64>| -> u64 {
        let mut v = v;
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let bytes_per_token = median_u64(
        decode
            .iter()
            .map(|c| c.online.iter().map(|s| s.bytes_sent).max().unwrap_or(0))
            .collect(),
    );
    let rounds_per_token = median_u64(
        decode
            .iter()
            .map(|c| c.online.iter().map(|s| s.rounds).max().unwrap_or(0))
            .collect(),
    );
    let dealer_bytes_per_token = median_u64(decode.iter().map(|c| c.dealer_bytes).collect());
    let decode = &decode[..];
    // The plaintext reference: teacher-forced over the same sequence, and its own decode-step time.
    let device = burn::tensor::Device::flex();
    let llama = model.plaintext(&device);
    let mut sequence = prompt.clone();
    sequence.extend_from_slice(&generated[..g - 1]);
    let vocab = model.weights.config.vocab;
    let plain = llama.forward(&sequence, &mut KvCache::default(), sequence.len())?;
    let plain_top: Vec<u32> = plain
        .chunks_exact(vocab)
        .map(|r| argmax(&r.iter().map(|v| f64::from(*v)).collect::<Vec<_>>()) as u32)
        .collect();
    let agree = plain_top
        .iter()
        .zip(&private_top)
        .filter(|(a, b)| a == b)
        .count();
    let mut cache = KvCache::default();
    llama.forward(&prompt, &mut cache, 1)?;
    let mut plain_ms = Vec::new();
    for &t in &generated[..g - 1] {
        let s = Instant::now();
        llama.forward(&[t], &mut cache, 1)?;
        plain_ms.push(s.elapsed().as_secs_f64() * 1e3);
    }
    // Profile: the median decode step's entries summed by step kind.
    let mut profile = Vec::new();
    if args.profile {
        let mut by_time: Vec<&veil_engine::llama::run::StepCost> = decode.iter().collect();
        by_time.sort_by_key(|c| c.elapsed);
        if let Some(step) = by_time.get(by_time.len() / 2) {
            let mut rows: BTreeMap<&str, (f64, u64, u64)> = BTreeMap::new();
            for e in &step.profile {
                let r = rows.entry(e.label.as_str()).or_default();
                r.0 += e.elapsed.as_secs_f64() * 1e3;
                r.1 += e.net.bytes_sent;
                r.2 += e.net.rounds;
            }
            let order = [
                "rmsnorm", "qkv", "rope", "scores", "softmax", "context", "attn-out", "gate-up",
                "silu", "down", "lm-head",
            ];
            for name in order {
                if let Some((ms, bytes, rounds)) = rows.get(name) {
                    profile.push(StepRow {
                        step: name.to_string(),
                        ms: *ms,
                        bytes: *bytes,
                        rounds: *rounds,
                    });
                }
            }
        }
    }
    let report = Smollm2Report {
        workload: "smollm2",
        protocol: args.protocol.to_string(),
        parties: args.parties,
        transport: match args.transport {
            Transport::Mem => "mem",
            Transport::Quic => "quic",
        },
        prompt_len: p,
        gen: g,
        prefill_ms,
        ms_per_token,
        bytes_per_token,
        rounds_per_token,
        dealer_bytes_per_token,
        plaintext_ms_per_token: median(&plain_ms),
        peak_rss_bytes,
        top1_agreement: agree as f64 / plain_top.len().max(1) as f64,
        positions_compared: plain_top.len(),
        generated,
        profile,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "smollm2, {} parties, {}: prompt {p}, gen {g}\n  prefill_ms        {:10.1}\n  ms_per_token      {:10.1}\n  bytes_per_token   {:10}\n  rounds_per_token  {:10}\n  dealer_bytes/tok  {:10}\n  plaintext ms/tok  {:10.2}\n  peak_rss_bytes    {:10}\n  top1_agreement    {:10.3} ({} positions)",
            args.parties,
            args.protocol,
            report.prefill_ms,
            report.ms_per_token,
            report.bytes_per_token,
            report.rounds_per_token,
            report.dealer_bytes_per_token,
            report.plaintext_ms_per_token,
            report.peak_rss_bytes,
            report.top1_agreement,
            report.positions_compared
        );
        if args.profile {
            println!(
                "  {:<10} {:>9} {:>10} {:>7}",
                "step", "ms", "bytes", "rounds"
            );
            for r in &report.profile {
                println!(
                    "  {:<10} {:>9.2} {:>10} {:>7}",
                    r.step, r.ms, r.bytes, r.rounds
                );
            }
        }
    }
    Ok(())
}

/// What the private run measured, on either transport.
struct Measured {
    /// Online time of the prefill's steps, summed (each step: its slowest party).
    prefill_ms: f64,
    /// The private next-token argmax of every prompt position, then of each decode step.
    private_top: Vec<u32>,
    /// The greedy tokens (the first from the prefill).
    generated: Vec<u32>,
    /// Each decode step's costs.
    decode: Vec<StepCost>,
    /// Peak resident memory: this process's (in memory), or the largest party process's (QUIC).
    peak_rss_bytes: u64,
}

/// The prefill and `g - 1` greedy decode steps on an in-memory committee.
fn in_memory(
    private: &PrivateLlama,
    options: &LocalOptions,
    prompt: &[u32],
    g: usize,
) -> Result<Measured> {
    let mut session = LocalSession::new(private, options)?;
    // Prefill (logits of every prompt position), then greedy decode steps on the private logits.
    let prefill = session.prefill(prompt, true, PREFILL_CHUNK)?;
    let prefill_steps = session.costs.len();
    // Online time of the prefill steps (the dealer's time is apart, as for the decode steps).
    let prefill_ms: f64 = session
        .costs
        .iter()
        .map(|c| c.elapsed.as_secs_f64() * 1e3)
        .sum();
    let mut private_top: Vec<u32> = prefill.iter().map(|r| argmax(r) as u32).collect();
    let mut generated = vec![*private_top.last().context("no logits")?];
    for _ in 1..g {
        let last = *generated.last().context("no token")?;
        let logits = session.step(&[last], 1)?;
        let t = argmax(logits.first().context("no logits")?) as u32;
        private_top.push(t);
        generated.push(t);
    }
    let mut costs = std::mem::take(&mut session.costs);
    Ok(Measured {
        prefill_ms,
        private_top,
        generated,
        decode: costs.split_off(prefill_steps),
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// The same run as one generation job on `veil node` processes over QUIC (a dealer and `--parties`
/// parties started from this executable, stopped at the end): the parties keep the cache between steps.
fn over_quic(
    args: &BenchArgs,
    path: &std::path::Path,
    private: &PrivateLlama,
    threads: usize,
    prompt: &[u32],
    g: usize,
) -> Result<Measured> {
    use veil_node::client::chat::ChatJob;
    use veil_node::client::{Client, ClientOptions, Committee};
    use veil_node::cluster::{ClusterOptions, LocalCluster};
    use veil_node::identity::Identity;

    let path =
        std::fs::canonicalize(path).with_context(|| format!("locating {}", path.display()))?;
    if path.file_name().and_then(|n| n.to_str()) != Some(veil_node::generation::SMOLLM2_FILE) {
        bail!(
            "--transport quic needs the model file named {}",
            veil_node::generation::SMOLLM2_FILE
        );
    }
    let dir = path.parent().context("the model's directory")?;
    if dir.file_name().and_then(|n| n.to_str()) != Some(veil_node::generation::SMOLLM2) {
        bail!(
            "--transport quic needs the model in a directory named {} (the nodes load it by name)",
            veil_node::generation::SMOLLM2
        );
    }
    let id = veil_node::generation::file_id(&path)?;
    let exe = std::env::current_exe().context("locating the veil executable")?;
    let client_identity = Identity::generate()?;
    let mut cluster_options = ClusterOptions::new(args.parties, client_identity.public_key());
    cluster_options.models_dir = dir.parent().map(Into::into);
    let cluster = LocalCluster::spawn(&exe, &cluster_options).context("starting node processes")?;
    let committee = Committee {
        parties: cluster.parties(),
        dealer: Some(cluster.dealer().context("no dealer")?),
    };
    let client = Client::new(
        client_identity,
        ClientOptions {
            bind: ([127, 0, 0, 1], 0).into(),
            shaping: args.shaping()?,
            ..ClientOptions::default()
        },
    )?;
    let mut job = ChatJob::smollm2(private, id);
    job.threads = threads;
    job.seed = Some(args.seed);
    job.profile = args.profile;
    let mut private_top = Vec::new();
    let run = client.generate(&committee, &job, prompt, g, |rows| {
        private_top.extend(rows.iter().map(|r| argmax(r) as u32));
        private_top.last().copied()
    });
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            eprintln!("{}", cluster.log_tails());
            bail!("private generation over QUIC failed: {e}");
        }
    };
    let peak_rss_bytes = (0..args.parties)
        .filter_map(|i| cluster.node(i))
        .map(|node| process_peak_rss(node.pid()))
        .max()
        .unwrap_or(0);
    drop(cluster);
    let (prefill, decode_reports) = run.steps.split_first().context("no prefill")?;
    let chunks = prefill.first().map_or(0, |r| r.latencies.len());
    let prefill_ms: f64 = (0..chunks)
        .map(|k| {
            prefill
                .iter()
                .filter_map(|r| r.latencies.get(k))
                .fold(0.0f64, |a, &b| a.max(b))
                * 1e3
        })
        .sum();
    // The job's material is dealt at once; a decode step's share of it is what the in-memory dealer ships
    // for that step (dealt here from its requests).
    let gemm = RingGemm::new(threads);
    let mut decode = Vec::with_capacity(decode_reports.len());
    for (k, reports) in decode_reports.iter().enumerate() {
        let requests = private.requests(prompt.len() + k, 1, 1);
        let seeds: Vec<veil_protocols::prg::Seed> = (0..args.parties)
            .map(|i| veil_protocols::prg::Seed::random_from(i as u64))
            .collect();
        let masks = veil_protocols::material::deal_masks(&seeds, &Vec::new())?;
        let corrections = veil_protocols::material::deal(&seeds, &requests, &masks, &gemm)?;
        decode.push(StepCost {
            positions: 1,
            elapsed: std::time::Duration::from_secs_f64(
                reports
                    .iter()
                    .filter_map(|r| r.latencies.first())
                    .fold(0.0f64, |a, &b| a.max(b)),
            ),
            online: reports
                .iter()
                .map(|r| r.online.first().map(Into::into).unwrap_or_default())
                .collect(),
            dealer_bytes: veil_protocols::material::dealer_bytes(args.parties, corrections.len()),
            dealer_elapsed: std::time::Duration::ZERO,
            profile: reports
                .first()
                .map(|r| {
                    r.profile
                        .iter()
                        .map(|s| veil_engine::private::StepProfile {
                            label: s.label.clone(),
                            elapsed: std::time::Duration::from_secs_f64(s.seconds.max(0.0)),
                            net: (&s.net).into(),
                            material: s.material,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(Measured {
        prefill_ms,
        generated: run.tokens,
        private_top,
        decode,
        peak_rss_bytes,
    })
}

/// A process's peak resident set (VmHWM), bytes; 0 where it cannot be read.
fn process_peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
