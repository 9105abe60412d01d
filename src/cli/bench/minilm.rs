//! `veil bench --workload minilm --seq-len L`: private all-MiniLM-L6-v2 sentence embeddings of one
//! `L`-token sequence (special tokens included) on a local committee, against the plaintext burn encoder.
//!
//! Each inference is its own job (the dealer deals one embedding's material, the parties embed), so memory
//! holds one job's material at a time; `--transport quic` runs the same jobs on `veil node` processes (each
//! loads the encoder itself, pinned by its model id) with the same party program, bytes and rounds; latency is the median over `--reps` inferences after one warm-up.
//! Besides the usual fields, the report has `cosine` (the lowest over the measured inferences, private
//! against plaintext burn) and `plaintext_ms` (burn's embedding of the same ids, same process). `layers`
//! gives every step of the profiled party (embedding LayerNorm, per layer: qkv, scores, softmax, context,
//! attention-out, layernorm1, ffn-in, gelu, ffn-out, layernorm2; then mean-pool and l2-normalize), and
//! `ops` sums them per kind of step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use veil_engine::bert::pretrained;
use veil_engine::bert::private::{PrivateBert, PrivateConfig};
use veil_engine::bert::run::embed_private;
use veil_engine::bert::{cosine, SentenceEncoder};
use veil_engine::kernel::{detected_isa, RingGemm};
use veil_engine::local::{LocalOptions, LocalRunReport, Protocol};
use veil_node::client::{
    embed_private as embed_over_quic, Client, ClientOptions, Committee, EmbedJob,
};
use veil_node::cluster::{ClusterOptions, LocalCluster};
use veil_node::Identity;
use veil_protocols::ring::FixedPoint;

use super::{
    check_protocol, median, ms, per_op, BenchArgs, LayerReport, ModelReport, NetworkReport,
    Offline, Traffic, Transport,
};

/// Text the benchmark sequence is cut from (any long English text; its tokens are realistic inputs).
const TEXT: &str = "Secure multi-party computation lets several parties jointly compute a function over \
    their inputs while keeping those inputs private. In private inference, a company embeds its \
    confidential documents with a public language model run by independent nodes, none of which sees the \
    text, the token ids or the resulting embedding; only the length of the sequence is public. The nodes \
    hold additive shares of every intermediate value, multiply shares by the public weights locally, and \
    use correlated randomness from a dealer for the products of shares, the comparisons and the \
    truncations that the attention, the layer normalisation and the GELU activation need.";

/// The benchmark's token ids: `[CLS]`, the first `len - 2` word pieces of [`TEXT`], `[SEP]`.
fn sequence(encoder: &SentenceEncoder, len: usize) -> Result<Vec<u32>> {
    let ids = encoder.tokenizer.ids(TEXT)?;
    if len < 2 || len > ids.len() {
        bail!(
            "--seq-len must be in 2..={} for this benchmark (special tokens included)",
            ids.len()
        );
    }
    let (Some(&cls), Some(&sep)) = (ids.first(), ids.last()) else {
        bail!("the tokenizer returned no ids");
    };
    let mut out = vec![cls];
    out.extend_from_slice(&ids[1..len - 1]);
    out.push(sep);
    Ok(out)
}

/// Measures private MiniLM as `args` says.
pub fn measure(args: &BenchArgs) -> Result<ModelReport> {
    check_protocol(args.protocol)?;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if !args.model.join("model.safetensors").exists() {
        bail!(
            "no model at {}: run `veil models fetch all-minilm-l6-v2` first (or pass --model DIR)",
            args.model.display()
        );
    }
    let shaping = args.shaping()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or((cores / args.parties.max(1)).max(1));
    let device = burn::tensor::Device::flex();
    let encoder = SentenceEncoder::load(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let ids = sequence(&encoder, args.seq_len)?;
    let fixed_point = FixedPoint::new(args.frac_bits)?;
    let model = PrivateBert::new(&encoder.bert, PrivateConfig::new(fixed_point)?)?;

    let mut options = LocalOptions::new(args.parties, Arc::new(RingGemm::new(threads)));
    options.profile = true;
    options.shaping = shaping;
    options.protocol = args.protocol;
    options.seed = Some(args.seed);
    let mut runs: Vec<LocalRunReport> = Vec::with_capacity(args.reps + 1);
    let mut quic_udp_bytes_per_party = None;
    match args.transport {
        Transport::Mem => {
            for _ in 0..=args.reps {
                runs.push(embed_private(&model, std::slice::from_ref(&ids), &options)?);
            }
        }
        Transport::Quic => {
            let quic = over_quic(args, &model, &ids, threads, options.protocol)?;
            runs = quic.reports;
            quic_udp_bytes_per_party = Some(quic.udp_bytes_per_party);
        }
    }

    let reference = encoder.bert.embed(&ids)?;
    let mut plain_times = Vec::new();
    for _ in 0..=args.reps {
        let t = Instant::now();
        encoder.bert.embed(&ids)?;
        plain_times.push(ms(t.elapsed()));
    }
    plain_times.remove(0);

    let measured = &runs[1..];
    let outputs: Vec<&Vec<f32>> = measured.iter().filter_map(|r| r.outputs.first()).collect();
    let max_abs_err = outputs
        .iter()
        .flat_map(|o| {
            o.iter()
                .zip(&reference)
                .map(|(a, b)| f64::from((a - b).abs()))
        })
        .fold(0.0, f64::max);
    let cosine = outputs
        .iter()
        .map(|o| f64::from(cosine(o, &reference)))
        .fold(1.0, f64::min);
    let online: Vec<_> = measured
        .iter()
        .filter_map(|r| r.online.first().cloned())
        .collect();
    let latency_ms = median(
        measured
            .iter()
            .filter_map(|r| r.latencies.first())
            .map(|d| ms(*d))
            .collect(),
    );
    let Traffic {
        bytes_per_party,
        bytes_all_parties,
        rounds,
        wait_ms,
    } = Traffic::of(&online);
    let Some(last) = measured.last() else {
        bail!("no measured inference");
    };
    let profile_party = busiest(last);
    let layers = layers(last, profile_party);
    let dealer_bytes = median(measured.iter().map(|r| r.dealer_bytes as f64).collect()) as u64;
    let dealer_ms = median(measured.iter().map(|r| ms(r.dealer_elapsed)).collect());
    let compute_ms = (latency_ms - wait_ms).max(0.0);
    let data_sent_bytes = last
        .online
        .first()
        .and_then(|p| p.get(profile_party))
        .map_or(0, |s| s.bytes_sent);
    let include = args.offline == Offline::Include;
    let protocol = options.protocol;
    Ok(ModelReport {
        workload: "minilm".into(),
        protocol: args.protocol.to_string(),
        parties: args.parties,
        batch: 1,
        transport: args.transport,
        weights: "public".into(),
        frac_bits: args.frac_bits,
        threads,
        isa: detected_isa().into(),
        reps: args.reps,
        latency_ms,
        compute_ms,
        wait_ms,
        plaintext_ms: median(plain_times),
        bytes_per_party,
        bytes_all_parties,
        rounds,
        dealer_bytes,
        dealer_ms,
        preprocess_ms: 0.0,
        dealer_bytes_job: dealer_bytes,
        inferences: runs.len(),
        setup_bytes_per_party: 0,
        max_abs_err,
        verified: protocol.verifies().then_some(true),
        quic_udp_bytes_per_party,
        offline: args.offline,
        online_ms: latency_ms,
        offline_ms: dealer_ms,
        time_ms: latency_ms + if include { dealer_ms } else { 0.0 },
        data_sent_bytes,
        global_data_sent_bytes: bytes_all_parties + if include { dealer_bytes } else { 0 },
        network: shaping.as_ref().map(NetworkReport::of),
        estimated_ms: shaping
            .as_ref()
            .map(|s| super::estimate_ms(compute_ms, rounds, bytes_per_party, s)),
        profile_party,
        note: Some(format!(
            "{} tokens; each inference is one job (its own dealer material)",
            ids.len()
        )),
        ops: per_op(&layers),
        layers,
        cosine: Some(cosine),
    })
}

/// What the QUIC runs measured.
struct QuicRuns {
    /// One report per job, the warm-up first.
    reports: Vec<LocalRunReport>,
    /// The most UDP bytes any party sent its peers in one measured embedding (QUIC overhead included).
    udp_bytes_per_party: u64,
}

/// `reps + 1` embeddings of `ids`, each its own job (as in memory), on `args.parties` `veil node` processes
/// and a dealer process started from this executable on 127.0.0.1 (stopped at the end, also on error). The
/// nodes load the encoder from the directory above `args.model` and check it against the model id the
/// manifest pins.
fn over_quic(
    args: &BenchArgs,
    model: &PrivateBert,
    ids: &[u32],
    threads: usize,
    protocol: Protocol,
) -> Result<QuicRuns> {
    let name = pretrained::NAMES[0];
    let dir = std::fs::canonicalize(&args.model)
        .with_context(|| format!("locating {}", args.model.display()))?;
    if dir.file_name().and_then(|n| n.to_str()) != Some(name) {
        bail!("--model must be a directory named {name} for --transport quic (the nodes load it by name)");
    }
    let id = pretrained::model_id(name, &dir)?;
    let exe = std::env::current_exe().context("locating the veil executable")?;
    let client_identity = Identity::generate()?;
    let mut cluster_options = ClusterOptions::new(args.parties, client_identity.public_key());
    cluster_options.models_dir = dir.parent().map(Into::into);
    cluster_options.dealer = protocol.has_dealer();
    let cluster = LocalCluster::spawn(&exe, &cluster_options).context("starting node processes")?;
    let committee = Committee {
        parties: cluster.parties(),
        dealer: cluster.dealer(),
    };
    let client = Client::new(
        client_identity,
        ClientOptions {
            bind: ([127, 0, 0, 1], 0).into(),
            shaping: args.shaping()?,
            ..ClientOptions::default()
        },
    )?;
    let job = EmbedJob {
        model,
        name: name.into(),
        id,
        threads,
        seed: Some(args.seed),
        profile: true,
    };
    let mut reports = Vec::with_capacity(args.reps + 1);
    let mut udp_bytes_per_party = 0;
    for rep in 0..=args.reps {
        let run = match embed_over_quic(&client, &committee, &job, &[ids.to_vec()], protocol) {
            Ok(run) => run,
            Err(e) => {
                eprintln!("{}", cluster.log_tails());
                bail!("private embedding over QUIC failed: {e}");
            }
        };
        if rep > 0 {
            let most = run
                .udp_tx_bytes
                .iter()
                .flatten()
                .copied()
                .max()
                .unwrap_or(0);
            udp_bytes_per_party = udp_bytes_per_party.max(most);
        }
        reports.push(run.report);
    }
    drop(cluster);
    Ok(QuicRuns {
        reports,
        udp_bytes_per_party,
    })
}

/// The party that sent the most (the lowest index among equals).
pub(super) fn busiest(report: &LocalRunReport) -> usize {
    let Some(parties) = report.online.first() else {
        return 0;
    };
    let most = parties.iter().map(|s| s.bytes_sent).max().unwrap_or(0);
    parties
        .iter()
        .position(|s| s.bytes_sent == most)
        .unwrap_or(0)
}

/// Per step of `party`, with an `after steps` entry (spdz2k's MAC check) so that the entries add up.
pub(super) fn layers(report: &LocalRunReport, party: usize) -> Vec<LayerReport> {
    let Some(mine) = report.profiles.get(party) else {
        return Vec::new();
    };
    let mut out: Vec<LayerReport> = mine
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let op = step.label.rsplit('/').next().unwrap_or("?");
            let (elapsed, wait) = (ms(step.elapsed), ms(step.net.wait));
            LayerReport {
                label: step.label.clone(),
                op: op.into(),
                ms: elapsed,
                compute_ms: (elapsed - wait).max(0.0),
                wait_ms: wait,
                bytes_sent: step.net.bytes_sent,
                bytes_received: step.net.bytes_received,
                bytes_all_parties: report
                    .profiles
                    .iter()
                    .filter_map(|p| p.get(i))
                    .map(|s| s.net.bytes_sent)
                    .sum(),
                rounds: step.net.rounds,
                material_requests: step.material.requests,
                material_words: step.material.words,
                dealer_bytes: report
                    .profiles
                    .iter()
                    .filter_map(|p| p.get(i))
                    .map(|s| s.material.dealer_words * 8)
                    .sum(),
            }
        })
        .collect();
    let Some(total) = report.online.first().and_then(|o| o.get(party)) else {
        return out;
    };
    let sent: u64 = out.iter().map(|l| l.bytes_sent).sum();
    let received: u64 = out.iter().map(|l| l.bytes_received).sum();
    let rounds: u64 = out.iter().map(|l| l.rounds).sum();
    if total.bytes_sent > sent || total.rounds > rounds {
        let steps_ms: f64 = out.iter().map(|l| l.ms).sum();
        let steps_wait: Duration = mine.iter().map(|s| s.net.wait).sum();
        let wait_ms = ms(total.wait.saturating_sub(steps_wait));
        let elapsed = report
            .latencies
            .first()
            .map_or(0.0, |d| (ms(*d) - steps_ms).max(wait_ms));
        out.push(LayerReport {
            label: "after steps".into(),
            op: "verify".into(),
            ms: elapsed,
            compute_ms: (elapsed - wait_ms).max(0.0),
            wait_ms,
            bytes_sent: total.bytes_sent - sent,
            bytes_received: total.bytes_received.saturating_sub(received),
            bytes_all_parties: 0,
            rounds: total.rounds.saturating_sub(rounds),
            material_requests: 0,
            material_words: 0,
            dealer_bytes: 0,
        });
    }
    out
}
