//! `veil bench`: one measured run of a workload, reported as a table or as one JSON object.
//!
//! Every figure comes from this run: latency is the median of `--reps` private inferences after one warm-up,
//! each inference's latency being its slowest party's wall time; bytes and rounds are per inference; the
//! plaintext time is the same model in burn in the same process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use veil_engine::kernel::{bench::measure_gemm, detected_isa, RingGemm};
use veil_engine::local::{run_private, LocalOptions};
use veil_engine::{workloads, Plan, WeightMode};
use veil_protocols::ring::FixedPoint;

/// Arguments of `veil bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workload: gemm, network-a or lenet.
    #[arg(long, default_value = "network-a")]
    pub workload: String,
    /// Protocol.
    #[arg(long, default_value = "semi2k")]
    pub protocol: String,
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
}

/// Transports.
#[derive(Clone, Copy, Debug, ValueEnum, Serialize, PartialEq, Eq)]
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

#[derive(Serialize)]
struct LayerReport {
    label: String,
    ms: f64,
    wait_ms: f64,
    bytes: u64,
    rounds: u64,
}

#[derive(Serialize)]
struct ModelReport {
    workload: String,
    protocol: String,
    parties: usize,
    batch: usize,
    transport: Transport,
    weights: &'static str,
    frac_bits: u32,
    threads: usize,
    isa: &'static str,
    reps: usize,
    latency_ms: f64,
    compute_ms: f64,
    wait_ms: f64,
    plaintext_ms: f64,
    bytes_per_party: u64,
    bytes_all_parties: u64,
    rounds: u64,
    dealer_bytes: u64,
    dealer_ms: f64,
    setup_bytes_per_party: u64,
    max_abs_err: f64,
    /// QUIC only: the most UDP bytes a party sent its peers in one inference (payload, framing, QUIC and
    /// UDP headers, acknowledgements); `bytes_per_party` counts protocol payload only, on every transport.
    #[serde(skip_serializing_if = "Option::is_none")]
    quic_udp_bytes_per_party: Option<u64>,
    layers: Vec<LayerReport>,
}

fn median(mut xs: Vec<f64>) -> f64 {
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
    if args.protocol != "semi2k" {
        bail!(
            "unknown protocol {:?}: this build offers semi2k",
            args.protocol
        );
    }
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.workload == "gemm" {
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
        return Ok(());
    }
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
    let (report, quic_udp_bytes_per_party) = match args.transport {
        Transport::Mem => (
            run_private(&model, &plan, &inputs, args.batch, &options)?,
            None,
        ),
        Transport::Quic => {
            let q = super::node::bench_quic(&args, &model, &plan, &inputs, threads)?;
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
    let per_inference_max = |f: &dyn Fn(&veil_protocols::net::NetStats) -> u64| {
        online
            .iter()
            .map(|parties| parties.iter().map(f).max().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let wait_ms = median(
        online
            .iter()
            .map(|p| p.iter().map(|s| ms(s.wait)).sum::<f64>() / p.len() as f64)
            .collect(),
    );
    let latency_ms = median(report.latencies[measured].iter().map(|d| ms(*d)).collect());
    let layers = layer_reports(&report.profiles);
    let result = ModelReport {
        workload: args.workload.clone(),
        protocol: args.protocol.clone(),
        parties: args.parties,
        batch: args.batch,
        transport: args.transport,
        weights: if mode == WeightMode::Shared {
            "shared"
        } else {
            "public"
        },
        frac_bits: args.frac_bits,
        threads,
        isa: detected_isa(),
        reps: args.reps,
        latency_ms,
        compute_ms: (latency_ms - wait_ms).max(0.0),
        wait_ms,
        plaintext_ms: median(plain_times),
        bytes_per_party: per_inference_max(&|s| s.bytes_sent),
        bytes_all_parties: online
            .iter()
            .map(|p| p.iter().map(|s| s.bytes_sent).sum::<u64>())
            .max()
            .unwrap_or(0),
        rounds: per_inference_max(&|s| s.rounds),
        dealer_bytes: report.dealer_bytes / report.latencies.len() as u64,
        dealer_ms: ms(report.dealer_elapsed) / report.latencies.len() as f64,
        setup_bytes_per_party: report.setup.iter().map(|s| s.bytes_sent).max().unwrap_or(0),
        max_abs_err,
        quic_udp_bytes_per_party,
        layers,
    };
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_table(&result);
    }
    Ok(())
}

/// Per step: the slowest party's time and the largest party's bytes and rounds.
fn layer_reports(profiles: &[Vec<veil_engine::private::StepProfile>]) -> Vec<LayerReport> {
    let steps = profiles.first().map_or(0, Vec::len);
    (0..steps)
        .map(|i| {
            let at = |f: &dyn Fn(&veil_engine::private::StepProfile) -> f64| {
                profiles.iter().map(|p| f(&p[i])).fold(0.0, f64::max)
            };
            LayerReport {
                label: profiles[0][i].label.clone(),
                ms: at(&|s| ms(s.elapsed)),
                wait_ms: at(&|s| ms(s.net.wait)),
                bytes: profiles
                    .iter()
                    .map(|p| p[i].net.bytes_sent)
                    .max()
                    .unwrap_or(0),
                rounds: profiles.iter().map(|p| p[i].net.rounds).max().unwrap_or(0),
            }
        })
        .collect()
}

fn print_table(r: &ModelReport) {
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
    if let Some(udp) = r.quic_udp_bytes_per_party {
        println!(
            "  quic on wire   {:>10.1} KB/party (UDP, with framing and QUIC overhead)",
            udp as f64 / 1e3
        );
    }
    println!(
        "  latency        {:>10.2} ms (median of {}; compute {:.2} ms, waiting {:.2} ms)",
        r.latency_ms, r.reps, r.compute_ms, r.wait_ms
    );
    println!("  plaintext burn {:>10.3} ms", r.plaintext_ms);
    println!(
        "  bytes/party    {:>10.1} KB online (all parties {:.1} KB)",
        r.bytes_per_party as f64 / 1e3,
        r.bytes_all_parties as f64 / 1e3
    );
    println!("  rounds         {:>10}", r.rounds);
    println!(
        "  dealer         {:>10.1} KB, {:.2} ms per inference",
        r.dealer_bytes as f64 / 1e3,
        r.dealer_ms
    );
    println!(
        "  model setup    {:>10.1} KB/party, once per model",
        r.setup_bytes_per_party as f64 / 1e3
    );
    println!("  max |err|      {:>10.2e}", r.max_abs_err);
    println!(
        "  {:<28} {:>9} {:>9} {:>10} {:>7}",
        "step", "ms", "wait ms", "KB", "rounds"
    );
    for l in &r.layers {
        println!(
            "  {:<28} {:>9.3} {:>9.3} {:>10.1} {:>7}",
            l.label,
            l.ms,
            l.wait_ms,
            l.bytes as f64 / 1e3,
            l.rounds
        );
    }
}
