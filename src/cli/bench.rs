//! `veil bench`: one measured run of a workload, reported as a table or as one JSON object; with `--sweep`, a
//! grid of runs written as JSON lines (see [`super::sweep`]).
//!
//! Every figure comes from this run: latency is the median of `--reps` private inferences after one warm-up,
//! each inference's latency being its slowest party's wall time; bytes and rounds are per inference; the
//! plaintext time is the same model in burn in the same process.
//!
//! Summary convention (MP-SPDZ's, so numbers compare across tools): `time_ms` (online, plus the dealer phase
//! with `--offline include`), `data_sent_bytes` and `rounds` of one party (the one that sends the most),
//! `global_data_sent_bytes` of all parties (plus the dealer's bytes with `--offline include`). Online and
//! offline times are always both reported (`online_ms`, `offline_ms`).
//!
//! Per-step accounting (`layers`): every figure of a step is the *profiled party's* (the party that sends the
//! most, `profile_party`), taken from the last measured inference, so a step's bytes, rounds and dealer
//! material add up exactly to that party's totals; `bytes_all_parties` adds every party's bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use veil_engine::kernel::{bench::measure_gemm, detected_isa, RingGemm};
use veil_engine::lab::shaping::ShapingConfig;
use veil_engine::local::{run_private, LocalOptions, LocalRunReport, Protocol};
use veil_engine::plan::StepKind;
use veil_engine::{workloads, Plan, WeightMode};
use veil_protocols::net::NetStats;
use veil_protocols::ring::FixedPoint;

mod minilm;
mod onnx;
mod smollm2;

/// The protocols `veil bench` can measure. A protocol joins this list when [`measure`] can run it; the sweep
/// takes its default protocols from here, so a new protocol shows up in sweeps and reports by itself.
pub const PROTOCOLS: &[Protocol] = &Protocol::ALL;

/// Arguments of `veil bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Workload: gemm, network-a, lenet or minilm (private all-MiniLM-L6-v2 embeddings; needs --model).
    #[arg(long, default_value = "network-a")]
    pub workload: String,
    /// Protocol: semi2k, spdz2k, rep3 or rep3m.
    #[arg(long, default_value = "semi2k")]
    pub protocol: Protocol,
    /// Execution parties.
    #[arg(long, default_value_t = 3)]
    pub parties: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Transport between parties.
    #[arg(long, value_enum, default_value_t = Transport::Mem)]
    pub transport: Transport,
    /// Measured repetitions (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// minilm: tokens of the embedded sequence, special tokens included.
    #[arg(long, default_value_t = 32)]
    pub seq_len: usize,
    /// smollm2: prompt tokens (the shipped English text cut to this length).
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// smollm2: tokens generated (greedy decode steps).
    #[arg(long, default_value_t = 16)]
    pub gen: usize,
    /// minilm: the model directory (`veil models fetch all-minilm-l6-v2` puts it there). An ONNX file
    /// (told apart by content) is benchmarked itself, whatever the workload.
    #[arg(long, default_value = "models/all-minilm-l6-v2")]
    pub model: std::path::PathBuf,
    /// Weight visibility.
    #[arg(long, value_enum, default_value_t = Weights::Shared)]
    pub weights: Weights,
    /// Fractional bits of the fixed-point encoding.
    #[arg(long, default_value_t = veil_protocols::ring::DEFAULT_FRAC_BITS)]
    pub frac_bits: u32,
    /// Threads of the ring kernel per party (default: cores / parties, at least 1; gemm: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the workload's random weights and input.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print one JSON object as the last line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the per-step table (layer, op, ms, KB, rounds, dealer material); the JSON always has `layers`.
    #[arg(long)]
    pub profile: bool,
    /// Whether `time_ms` and `global_data_sent_bytes` include the dealer (preprocessing) phase.
    #[arg(long, value_enum, default_value_t = Offline::Exclude)]
    pub offline: Offline,
    /// Shaped links: one-way latency of every link, milliseconds (mem and quic alike).
    #[arg(long)]
    pub latency: Option<f64>,
    /// Shaped links: uplink rate of every party, Mbit/s (token bucket).
    #[arg(long)]
    pub bandwidth: Option<f64>,
    /// Run a grid of benchmarks instead of one (see the sweep options) and write JSON lines to `--out`.
    #[arg(long)]
    pub sweep: bool,
    /// Sweep output file (one JSON object per line).
    #[arg(long, requires = "sweep")]
    pub out: Option<std::path::PathBuf>,
    /// Sweep grid.
    #[command(flatten)]
    pub grid: super::sweep::GridArgs,
    /// spdz2k and rep3m: one random party deviates once, at a random point of the job: flip-share,
    /// wrong-triple, bad-mac, skip-round or wrong-output (spdz2k); wrong-product (one of the first reshares)
    /// or wrong-output (rep3m). The run must end with `verified: false` and no output. In memory
    /// or over QUIC (`--transport quic`: the node processes get the deviation through their test-only setting).
    #[arg(long)]
    pub adversary: Option<String>,
}

impl BenchArgs {
    /// The link shaping asked for, checked; `None` without `--latency` and `--bandwidth`.
    pub fn shaping(&self) -> Result<Option<ShapingConfig>> {
        if self.latency.is_none() && self.bandwidth.is_none() {
            return Ok(None);
        }
        Ok(Some(ShapingConfig::new(
            self.latency.unwrap_or(0.0),
            self.bandwidth,
        )?))
    }
}

/// Transports.
#[derive(Clone, Copy, Debug, ValueEnum, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// In-memory channels between threads.
    Mem,
    /// QUIC between `veil node` processes on 127.0.0.1 (one process per party and one for the dealer).
    Quic,
}

/// Weight visibility.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Weights {
    /// Secret-shared weights.
    Shared,
    /// Weights public to the parties.
    Public,
}

/// Whether the summary includes the preprocessing (dealer) phase.
#[derive(Clone, Copy, Debug, ValueEnum, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Offline {
    /// Online phase only (the dealer's time and bytes are still reported on their own).
    #[default]
    Exclude,
    /// Online plus the dealer phase, timed separately and added.
    Include,
}

#[derive(Serialize)]
struct GemmReport {
    workload: &'static str,
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    isa: &'static str,
    ring_gops: f64,
    f32_gops: f64,
    ring_over_f32: f64,
}

/// One step of the plan at the profiled party.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// The step's label, e.g. `linear#0` or `relu#1+rescale`.
    pub label: String,
    /// The operation: `matmul` (product with a shared weight), `matmul-public`, `trunc`, `trunc-relu`,
    /// `relu`, `maxpool`.
    pub op: String,
    /// Wall time of the step.
    pub ms: f64,
    /// Of which local computation (wall time minus waiting).
    pub compute_ms: f64,
    /// Of which blocked waiting for messages.
    pub wait_ms: f64,
    /// Payload bytes the profiled party sent.
    pub bytes_sent: u64,
    /// Payload bytes the profiled party received.
    pub bytes_received: u64,
    /// Payload bytes all parties sent.
    pub bytes_all_parties: u64,
    /// Rounds.
    pub rounds: u64,
    /// Dealer material the profiled party consumed: requests, and ring words (8 bytes each).
    pub material_requests: u64,
    /// See `material_requests`.
    pub material_words: u64,
    /// Bytes of dealer corrections this step consumed (they go to the last party; seeds are per job).
    pub dealer_bytes: u64,
}

/// Link shaping of a run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NetworkReport {
    /// `lan`, `wan` or `custom`.
    pub name: String,
    /// One-way latency, ms.
    pub latency_ms: f64,
    /// Uplink rate, Mbit/s (absent: unlimited).
    pub bandwidth_mbps: Option<f64>,
}

impl NetworkReport {
    /// The report of `config`, named after the sweep preset it matches.
    pub fn of(config: &ShapingConfig) -> Self {
        let name = super::sweep::NetworkPreset::ALL
            .iter()
            .find(|p| p.config().is_some_and(|c| c == *config))
            .map_or("custom", |p| p.name());
        Self {
            name: name.into(),
            latency_ms: config.latency_ms,
            bandwidth_mbps: config.bandwidth_mbps,
        }
    }
}

/// One measured model run: the JSON object `veil bench --json` prints and a sweep line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ModelReport {
    /// Workload.
    pub workload: String,
    /// Protocol.
    pub protocol: String,
    /// Execution parties.
    pub parties: usize,
    /// Batch size.
    pub batch: usize,
    /// Transport.
    pub transport: Transport,
    /// `shared` or `public`.
    pub weights: String,
    /// Fractional bits.
    pub frac_bits: u32,
    /// Kernel threads per party.
    pub threads: usize,
    /// SIMD level of the ring kernel.
    pub isa: String,
    /// Measured repetitions.
    pub reps: usize,
    /// Median online latency (the slowest party's wall time per inference).
    pub latency_ms: f64,
    /// Latency minus the mean party's waiting time.
    pub compute_ms: f64,
    /// The mean party's time blocked in receives.
    pub wait_ms: f64,
    /// The same model in plaintext burn.
    pub plaintext_ms: f64,
    /// The most payload bytes any party sends in one inference.
    pub bytes_per_party: u64,
    /// Payload bytes all parties send in one inference.
    pub bytes_all_parties: u64,
    /// Rounds of one inference (the most any party has).
    pub rounds: u64,
    /// Dealer bytes per inference (seeds and corrections of the whole job, divided by its inferences).
    pub dealer_bytes: u64,
    /// Dealer time per inference.
    pub dealer_ms: f64,
    /// Party preprocessing per inference: the slowest party's expansion of its dealt material before the
    /// input arrives (median). Zero where a workload expands its material during the online phase.
    #[serde(default)]
    pub preprocess_ms: f64,
    /// Dealer bytes of the whole job.
    #[serde(default)]
    pub dealer_bytes_job: u64,
    /// Inferences of the job (warm-up included).
    #[serde(default)]
    pub inferences: usize,
    /// Model setup bytes per party (shared weights; once per model).
    pub setup_bytes_per_party: u64,
    /// Largest absolute error against plaintext over the measured inferences.
    pub max_abs_err: f64,
    /// spdz2k: every output passed the MAC check (a failed check ends the run without output; see
    /// `--adversary`). Absent for semi2k, which cannot tell.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verified: Option<bool>,
    /// QUIC only: the most UDP bytes a party sent its peers in one inference (payload, framing, QUIC and
    /// UDP headers, acknowledgements); `bytes_per_party` counts protocol payload only, on every transport.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quic_udp_bytes_per_party: Option<u64>,
    /// `include` or `exclude`: whether `time_ms` and `global_data_sent_bytes` include the dealer phase.
    #[serde(default)]
    pub offline: Offline,
    /// Online time (`latency_ms`).
    #[serde(default)]
    pub online_ms: f64,
    /// Offline time per inference: the dealer's (`dealer_ms`) plus the parties' preprocessing
    /// (`preprocess_ms`).
    #[serde(default)]
    pub offline_ms: f64,
    /// The summary time: online, plus offline when included.
    #[serde(default)]
    pub time_ms: f64,
    /// Data sent by one party (the profiled party) in one inference.
    #[serde(default)]
    pub data_sent_bytes: u64,
    /// Data sent by all parties in one inference, plus the dealer's when offline is included.
    #[serde(default)]
    pub global_data_sent_bytes: u64,
    /// Link shaping (absent: unshaped).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub network: Option<NetworkReport>,
    /// Shaped runs: local compute plus rounds x latency plus bytes / bandwidth (see `estimate_ms`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub estimated_ms: Option<f64>,
    /// The party whose steps `layers` shows.
    #[serde(default)]
    pub profile_party: usize,
    /// Free-form remark (e.g. fewer repetitions under WAN in a sweep).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    /// Per-step accounting of the profiled party's last measured inference.
    pub layers: Vec<LayerReport>,
    /// The same entries summed per operation (`label` is the op), in order of first use.
    #[serde(default)]
    pub ops: Vec<LayerReport>,
    /// Embeddings (minilm): the lowest cosine similarity of a private result with the plaintext burn one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cosine: Option<f64>,
}

/// The traffic figures of a run's measured inferences, from `online[i][p]`, party `p`'s counters during
/// inference `i` (every bench path reports them the same way).
struct Traffic {
    /// The most bytes one party sent in one inference.
    bytes_per_party: u64,
    /// The most bytes all parties together sent in one inference.
    bytes_all_parties: u64,
    /// The rounds of the party that sends the most (the summary convention; parties differ under rep3), the
    /// most of any inference.
    rounds: u64,
    /// The median over inferences of the parties' mean wait for messages, milliseconds.
    wait_ms: f64,
}

impl Traffic {
    /// The figures of `online` (all zero when it is empty).
    fn of(online: &[Vec<NetStats>]) -> Traffic {
        let most = |f: &dyn Fn(&[NetStats]) -> u64| online.iter().map(|p| f(p)).max().unwrap_or(0);
        Traffic {
            bytes_per_party: most(&|p| p.iter().map(|s| s.bytes_sent).max().unwrap_or(0)),
            bytes_all_parties: most(&|p| p.iter().map(|s| s.bytes_sent).sum()),
            rounds: most(&|p| {
                p.iter()
                    .rev()
                    .max_by_key(|s| s.bytes_sent)
                    .map_or(0, |s| s.rounds)
            }),
            wait_ms: median(
                online
                    .iter()
                    .map(|p| p.iter().map(|s| ms(s.wait)).sum::<f64>() / p.len().max(1) as f64)
                    .collect(),
            ),
        }
    }
}

/// The network model's estimate of a shaped inference: the measured local compute, plus one latency per
/// round, plus the profiled party's bytes at the uplink rate. Ignores overlap of computation with
/// communication and the token bucket's burst, so it errs high for large messages and low for congested
/// links.
pub fn estimate_ms(compute_ms: f64, rounds: u64, bytes: u64, shaping: &ShapingConfig) -> f64 {
    let serialise_ms = shaping
        .bytes_per_second()
        .map_or(0.0, |rate| bytes as f64 / rate * 1e3);
    compute_ms + rounds as f64 * shaping.latency_ms + serialise_ms
}

/// The median of `xs` (0 for none).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `veil bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.sweep {
        return super::sweep::run(&args);
    }
    if args.workload == "smollm2" {
        return smollm2::run(&args);
    }
    if args.workload == "gemm" {
        return run_gemm(&args);
    }
    if args.adversary.is_some() {
        return run_adversary(&args);
    }
    let result = measure(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_summary(&result);
        if args.profile {
            print_layers(&result);
        }
    }
    Ok(())
}

fn run_gemm(args: &BenchArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores);
    let t = measure_gemm(128, 384, 384, threads, args.reps.max(5));
    let report = GemmReport {
        workload: "gemm",
        m: 128,
        k: 384,
        n: 384,
        threads,
        isa: detected_isa(),
        ring_gops: t.ring_gops,
        f32_gops: t.f32_gops,
        ring_over_f32: t.ring_gops / t.f32_gops,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "gemm 128x384 x 384x384, {threads} thread(s), {}",
            report.isa
        );
        println!("  ring (wrapping u64): {:8.1} GOPS", report.ring_gops);
        println!("  burn f32 matmul:     {:8.1} GOPS", report.f32_gops);
        println!("  ratio ring / f32:    {:8.2}", report.ring_over_f32);
    }
    Ok(())
}

/// Checks that `protocol` is one `veil bench` can measure.
pub fn check_protocol(protocol: Protocol) -> Result<()> {
    if !PROTOCOLS.contains(&protocol) {
        let names: Vec<&str> = PROTOCOLS.iter().map(|p| p.name()).collect();
        bail!(
            "protocol {protocol}: this build's bench measures {}",
            names.join(", ")
        );
    }
    Ok(())
}

/// Measures one model workload as `args` says.
pub fn measure(args: &BenchArgs) -> Result<ModelReport> {
    if veil_engine::onnx::looks_like_onnx_file(&args.model) {
        return onnx::measure(args);
    }
    if args.workload == "minilm" {
        return minilm::measure(args);
    }
    check_protocol(args.protocol)?;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let shaping = args.shaping()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fixed_point = FixedPoint::new(args.frac_bits)?;
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name(&args.workload, args.seed, &device).with_context(|| {
        format!(
            "unknown workload {:?}: use gemm, network-a or lenet",
            args.workload
        )
    })??;
    let mode = match args.weights {
        Weights::Shared => WeightMode::Shared,
        Weights::Public => WeightMode::Public,
    };
    let plan = Plan::compile(&model, fixed_point, mode)?;
    let threads = args.threads.unwrap_or((cores / args.parties.max(1)).max(1));
    let input = workloads::sample_input(&model, args.batch, args.seed);
    let inputs = vec![input.clone(); args.reps + 1];
    let mut options = LocalOptions::new(args.parties, Arc::new(RingGemm::new(threads)));
    options.profile = true;
    options.shaping = shaping;
    options.protocol = args.protocol;
    if !options.protocol.supports_parties(args.parties) {
        bail!(
            "{} runs with {}, not {}",
            options.protocol,
            options.protocol.party_requirement(),
            args.parties
        );
    }
    if !veil_node::manifest::runs_on_nodes(options.protocol) && args.transport == Transport::Quic {
        bail!("{} runs in memory only in this build", options.protocol);
    }
    let (report, quic_udp_bytes_per_party) = match args.transport {
        Transport::Mem => (
            run_private(&model, &plan, &inputs, args.batch, &options)?,
            None,
        ),
        Transport::Quic => {
            let q = super::node::bench_quic(args, &model, &plan, &inputs, threads)?;
            (q.report, Some(q.udp_bytes_per_party))
        }
    };

    let reference = model.forward_plain(&input, args.batch)?;
    let mut plain_times = Vec::new();
    for _ in 0..=args.reps {
        let t = Instant::now();
        model.forward_plain(&input, args.batch)?;
        plain_times.push(ms(t.elapsed()));
    }
    plain_times.remove(0);

    let measured = 1..report.latencies.len();
    let max_abs_err = report.outputs[measured.clone()]
        .iter()
        .flat_map(|o| {
            o.iter()
                .zip(&reference)
                .map(|(a, b)| f64::from((a - b).abs()))
        })
        .fold(0.0, f64::max);
    let online = &report.online[measured.clone()];
    let Traffic {
        bytes_per_party,
        bytes_all_parties,
        rounds,
        wait_ms,
    } = Traffic::of(online);
    let latency_ms = median(
        report.latencies[measured.clone()]
            .iter()
            .map(|d| ms(*d))
            .collect(),
    );
    let profile_party = busiest_party(&report);
    let layers = layer_reports(&plan, &report, profile_party);
    let inferences = report.latencies.len();
    let dealer_bytes = report.dealer_bytes / inferences as u64;
    let dealer_ms = ms(report.dealer_elapsed) / inferences as f64;
    let preprocess_ms = report
        .preparation
        .get(measured.clone())
        .filter(|p| !p.is_empty())
        .map_or(0.0, |p| median(p.iter().map(|d| ms(*d)).collect()));
    let offline_ms = dealer_ms + preprocess_ms;
    let compute_ms = (latency_ms - wait_ms).max(0.0);
    let data_sent_bytes = report
        .online
        .last()
        .and_then(|p| p.get(profile_party))
        .map_or(0, |s| s.bytes_sent);
    let include = args.offline == Offline::Include;
    Ok(ModelReport {
        workload: args.workload.clone(),
        protocol: args.protocol.to_string(),
        parties: args.parties,
        batch: args.batch,
        transport: args.transport,
        weights: if mode == WeightMode::Shared {
            "shared"
        } else {
            "public"
        }
        .into(),
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
        preprocess_ms,
        dealer_bytes_job: report.dealer_bytes,
        inferences,
        setup_bytes_per_party: report.setup.iter().map(|s| s.bytes_sent).max().unwrap_or(0),
        max_abs_err,
        verified: options.protocol.verifies().then_some(true),
        quic_udp_bytes_per_party,
        offline: args.offline,
        online_ms: latency_ms,
        offline_ms,
        time_ms: latency_ms + if include { offline_ms } else { 0.0 },
        data_sent_bytes,
        global_data_sent_bytes: bytes_all_parties + if include { dealer_bytes } else { 0 },
        network: shaping.as_ref().map(NetworkReport::of),
        estimated_ms: shaping
            .as_ref()
            .map(|s| estimate_ms(compute_ms, rounds, bytes_per_party, s)),
        profile_party,
        note: None,
        ops: per_op(&layers),
        layers,
        cosine: None,
    })
}

/// `layers` summed per operation, in order of first use.
fn per_op(layers: &[LayerReport]) -> Vec<LayerReport> {
    let mut ops: Vec<LayerReport> = Vec::new();
    for l in layers {
        match ops.iter_mut().find(|o| o.op == l.op) {
            Some(o) => {
                o.ms += l.ms;
                o.compute_ms += l.compute_ms;
                o.wait_ms += l.wait_ms;
                o.bytes_sent += l.bytes_sent;
                o.bytes_received += l.bytes_received;
                o.bytes_all_parties += l.bytes_all_parties;
                o.rounds += l.rounds;
                o.material_requests += l.material_requests;
                o.material_words += l.material_words;
                o.dealer_bytes += l.dealer_bytes;
            }
            None => ops.push(LayerReport {
                label: l.op.clone(),
                ..l.clone()
            }),
        }
    }
    ops
}

/// The party that sent the most in the last inference (the lowest index among equals).
fn busiest_party(report: &LocalRunReport) -> usize {
    let Some(last) = report.online.last() else {
        return 0;
    };
    let most = last.iter().map(|s| s.bytes_sent).max().unwrap_or(0);
    last.iter().position(|s| s.bytes_sent == most).unwrap_or(0)
}

/// The operation a plan step runs.
fn op_name(kind: &StepKind, mode: WeightMode) -> &'static str {
    match kind {
        StepKind::Product { .. } if mode == WeightMode::Shared => "matmul",
        StepKind::Product { .. } => "matmul-public",
        StepKind::Rescale => "trunc",
        StepKind::RescaleRelu => "trunc-relu",
        StepKind::Relu => "relu",
        StepKind::MaxPool(_) => "maxpool",
    }
}

/// Per step: the profiled party's costs, all parties' bytes and the dealer corrections the step consumed.
///
/// Work of the inference outside the plan's steps (spdz2k's closing MAC check of the opened values) becomes
/// one more entry, `after steps` (op `verify`), the difference between the party's totals and its steps, so
/// the entries still add up to the totals. semi2k does nothing outside its steps, so it has no such entry.
/// Its time is the inference's latency (the slowest party's) minus the profiled party's steps, so it also
/// holds any time the profiled party finished ahead of the slowest one.
fn layer_reports(plan: &Plan, report: &LocalRunReport, party: usize) -> Vec<LayerReport> {
    let mut layers = step_reports(plan, report, party);
    let totals = |p: usize| report.online.last().and_then(|o| o.get(p)).cloned();
    let Some(total) = totals(party) else {
        return layers;
    };
    let in_steps = |p: usize, f: &dyn Fn(&NetStats) -> u64| -> u64 {
        report
            .profiles
            .get(p)
            .map_or(0, |steps| steps.iter().map(|s| f(&s.net)).sum())
    };
    let sent = total
        .bytes_sent
        .saturating_sub(in_steps(party, &|n| n.bytes_sent));
    let received = total
        .bytes_received
        .saturating_sub(in_steps(party, &|n| n.bytes_received));
    let rounds = total.rounds.saturating_sub(in_steps(party, &|n| n.rounds));
    if sent == 0 && received == 0 && rounds == 0 {
        return layers;
    }
    let steps_wait: Duration = report.profiles.get(party).map_or(Duration::ZERO, |steps| {
        steps.iter().map(|s| s.net.wait).sum()
    });
    let steps_ms: f64 = layers.iter().map(|l| l.ms).sum();
    let wait_ms = ms(total.wait.saturating_sub(steps_wait));
    let elapsed_ms = report
        .latencies
        .last()
        .map_or(0.0, |d| (ms(*d) - steps_ms).max(wait_ms));
    let all_parties = (0..report.online.last().map_or(0, Vec::len))
        .map(|p| {
            totals(p)
                .map_or(0, |t| t.bytes_sent)
                .saturating_sub(in_steps(p, &|n| n.bytes_sent))
        })
        .sum();
    layers.push(LayerReport {
        label: "after steps".into(),
        op: "verify".into(),
        ms: elapsed_ms,
        compute_ms: (elapsed_ms - wait_ms).max(0.0),
        wait_ms,
        bytes_sent: sent,
        bytes_received: received,
        bytes_all_parties: all_parties,
        rounds,
        material_requests: 0,
        material_words: 0,
        dealer_bytes: 0,
    });
    layers
}

/// One entry per plan step.
fn step_reports(plan: &Plan, report: &LocalRunReport, party: usize) -> Vec<LayerReport> {
    let profiles = &report.profiles;
    let Some(mine) = profiles.get(party) else {
        return Vec::new();
    };
    mine.iter()
        .enumerate()
        .map(|(i, step)| {
            let op = plan
                .steps
                .get(i)
                .map_or("?", |s| op_name(&s.kind, plan.mode));
            let wait_ms = ms(step.net.wait);
            let elapsed_ms = ms(step.elapsed);
            LayerReport {
                label: step.label.clone(),
                op: op.into(),
                ms: elapsed_ms,
                compute_ms: (elapsed_ms - wait_ms).max(0.0),
                wait_ms,
                bytes_sent: step.net.bytes_sent,
                bytes_received: step.net.bytes_received,
                bytes_all_parties: profiles
                    .iter()
                    .filter_map(|p| p.get(i))
                    .map(|s| s.net.bytes_sent)
                    .sum(),
                rounds: step.net.rounds,
                material_requests: step.material.requests,
                material_words: step.material.words,
                dealer_bytes: profiles
                    .iter()
                    .filter_map(|p| p.get(i))
                    .map(|s| s.material.dealer_words * 8)
                    .sum(),
            }
        })
        .collect()
}

fn print_summary(r: &ModelReport) {
    println!(
        "{} | {} | {} parties | batch {} | {} | weights {} | f = {}",
        r.workload,
        r.protocol,
        r.parties,
        r.batch,
        match r.transport {
            Transport::Mem => "mem",
            Transport::Quic => "quic",
        },
        r.weights,
        r.frac_bits
    );
    if let Some(n) = &r.network {
        println!(
            "  network        {} (latency {} ms, bandwidth {})",
            n.name,
            n.latency_ms,
            n.bandwidth_mbps
                .map_or("unlimited".into(), |b| format!("{b} Mbit/s"))
        );
    }
    if let Some(udp) = r.quic_udp_bytes_per_party {
        println!(
            "  quic on wire   {:>10.1} KB/party (UDP, with framing and QUIC overhead)",
            udp as f64 / 1e3
        );
    }
    println!(
        "  time           {:>10.2} ms (offline {}: online {:.2} ms, offline {:.2} ms)",
        r.time_ms,
        match r.offline {
            Offline::Include => "included",
            Offline::Exclude => "excluded",
        },
        r.online_ms,
        r.offline_ms
    );
    println!(
        "  latency        {:>10.2} ms (median of {}; compute {:.2} ms, waiting {:.2} ms)",
        r.latency_ms, r.reps, r.compute_ms, r.wait_ms
    );
    if let Some(e) = r.estimated_ms {
        println!("  estimated      {e:>10.2} ms (compute + rounds x latency + bytes / bandwidth)");
    }
    println!("  plaintext burn {:>10.3} ms", r.plaintext_ms);
    println!(
        "  data sent      {:>10.1} KB by party {} in {} rounds; global {:.1} KB",
        r.data_sent_bytes as f64 / 1e3,
        r.profile_party,
        r.rounds,
        r.global_data_sent_bytes as f64 / 1e3
    );
    println!(
        "  dealer         {:>10.1} KB, {:.2} ms per inference",
        r.dealer_bytes as f64 / 1e3,
        r.dealer_ms
    );
    if r.preprocess_ms > 0.0 {
        println!(
            "  preprocessing  {:>10.2} ms per inference (parties expand their material before the input)",
            r.preprocess_ms
        );
    }
    println!(
        "  model setup    {:>10.1} KB/party, once per model",
        r.setup_bytes_per_party as f64 / 1e3
    );
    println!("  max |err|      {:>10.2e}", r.max_abs_err);
    if let Some(c) = r.cosine {
        println!("  cosine         {c:>10.6} (private vs plaintext burn)");
    }
}

fn print_layers(r: &ModelReport) {
    println!("  steps of party {} (last inference):", r.profile_party);
    println!(
        "  {:<24} {:<13} {:>9} {:>9} {:>10} {:>7} {:>12}",
        "layer", "op", "ms", "wait ms", "KB", "rounds", "material KB"
    );
    for l in &r.layers {
        println!(
            "  {:<24} {:<13} {:>9.3} {:>9.3} {:>10.1} {:>7} {:>12.1}",
            l.label,
            l.op,
            l.ms,
            l.wait_ms,
            l.bytes_sent as f64 / 1e3,
            l.rounds,
            l.material_words as f64 * 8.0 / 1e3
        );
    }
    println!("  per operation:");
    for o in &r.ops {
        println!(
            "  {:<24} {:<13} {:>9.3} {:>9.3} {:>10.1} {:>7} {:>12.1}",
            "",
            o.op,
            o.ms,
            o.wait_ms,
            o.bytes_sent as f64 / 1e3,
            o.rounds,
            o.material_words as f64 * 8.0 / 1e3
        );
    }
    let sum = |f: &dyn Fn(&LayerReport) -> f64| r.layers.iter().map(f).sum::<f64>();
    println!(
        "  {:<24} {:<13} {:>9.3} {:>9.3} {:>10.1} {:>7} {:>12.1}",
        "total",
        "",
        sum(&|l| l.ms),
        sum(&|l| l.wait_ms),
        sum(&|l| l.bytes_sent as f64) / 1e3,
        r.layers.iter().map(|l| l.rounds).sum::<u64>(),
        sum(&|l| l.material_words as f64) * 8.0 / 1e3
    );
}

/// What `veil bench --adversary` prints: whether the job verified, and that it released no output.
#[derive(Serialize, Debug)]
struct AdversaryReport {
    workload: String,
    protocol: String,
    parties: usize,
    batch: usize,
    adversary: String,
    /// The deviating party and where it struck (an opening round, a triple use or an output element).
    party: usize,
    at: usize,
    verified: bool,
    /// Whether any output reached the client.
    output_released: bool,
    /// Why the job stopped.
    outcome: String,
}

/// `veil bench --adversary A`: one private inference under spdz2k (or rep3m) with one deviating party.
fn run_adversary(args: &BenchArgs) -> Result<()> {
    use rand::Rng;
    use veil_protocols::adversary::{Adversary, Deviation};
    let name = args.adversary.as_deref().unwrap_or_default();
    let kind = Deviation::EVERY
        .into_iter()
        .find(|d| d.name() == name)
        .with_context(|| {
            format!(
                "unknown adversary {name:?}: use flip-share, wrong-triple, bad-mac, skip-round, \
                 wrong-output (spdz2k) or wrong-product, wrong-output (rep3m)"
            )
        })?;
    let protocol = match args.protocol {
        p @ Protocol::Spdz2k if kind != Deviation::WrongProduct => p,
        Protocol::Spdz2k => bail!("--protocol spdz2k has no reshare for wrong-product"),
        // rep3m inference opens nothing: a reshare (caught by the product proof) or an output share.
        p @ Protocol::Rep3m if matches!(kind, Deviation::WrongProduct | Deviation::WrongOutput) => p,
        Protocol::Rep3m => {
            bail!("--protocol rep3m: inference has a site for wrong-product and wrong-output only")
        }
        Protocol::Semi2k | Protocol::Rep3 => bail!(
            "--adversary needs --protocol spdz2k or rep3m (semi2k and rep3 cannot detect a deviation)"
        ),
    };
    let device = burn::tensor::Device::flex();
    let model = workloads::by_name(&args.workload, args.seed, &device).with_context(|| {
        format!(
            "unknown workload {:?}: use network-a or lenet",
            args.workload
        )
    })??;
    let mode = match args.weights {
        Weights::Shared => WeightMode::Shared,
        Weights::Public => WeightMode::Public,
    };
    let plan = Plan::compile(&model, FixedPoint::new(args.frac_bits)?, mode)?;
    let (openings, triples) = plan.deviation_sites(args.batch, true);
    let mut rng = rand::rng();
    let at = match kind {
        Deviation::WrongTriple => rng.random_range(0..triples.max(1)),
        Deviation::WrongOutput => rng.random_range(0..(args.batch * plan.output_len).max(1)),
        // One of the first reshares (every workload's first layer has several).
        Deviation::WrongProduct => rng.random_range(0..4),
        _ => rng.random_range(0..openings.max(1)),
    };
    let adversary = Adversary {
        kind,
        party: rng.random_range(0..args.parties.max(1)),
        at,
        delta: rng.random_range(1..u64::MAX),
    };
    let input = workloads::sample_input(&model, args.batch, args.seed);
    let (verified, released, outcome) = if args.transport == Transport::Quic {
        match super::node::adversary_quic(args, &model, &plan, &input, adversary)? {
            Ok(()) => (true, true, "verified".to_string()),
            Err(why) => (false, false, why),
        }
    } else {
        let mut options = LocalOptions::new(args.parties, Arc::new(RingGemm::new(1)));
        options.protocol = protocol;
        options.adversary = Some(adversary);
        if kind == Deviation::SkipRound {
            options.timeout = Duration::from_secs(2);
        }
        match run_private(&model, &plan, &[input], args.batch, &options) {
            Ok(report) => (true, !report.outputs.is_empty(), "verified".to_string()),
            Err(e) => (false, false, e.to_string()),
        }
    };
    let report = AdversaryReport {
        workload: args.workload.clone(),
        protocol: args.protocol.to_string(),
        parties: args.parties,
        batch: args.batch,
        adversary: kind.name().into(),
        party: adversary.party,
        at,
        verified,
        output_released: released,
        outcome,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} | {} | {} parties | adversary {} (party {}, at {})",
            report.workload,
            report.protocol,
            report.parties,
            report.adversary,
            report.party,
            report.at
        );
        println!("  verified       {}", report.verified);
        println!(
            "  output         {}",
            if released {
                "released"
            } else {
                "none released"
            }
        );
        println!("  outcome        {}", report.outcome);
    }
    Ok(())
}
