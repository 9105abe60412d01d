//! `veil bench --model X.onnx`: an imported ONNX model (issue 22) run privately in memory on a local
//! committee, against its own plaintext forward pass. The input is random (fixed by `--seed`) in
//! `[-1, 1)`; latency is the median over `--reps` inferences after one warm-up, each its own job. `layers`
//! has one entry per graph node (`NAME/KIND`), `ops` sums them per kind. Weights are public to the parties.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use veil_engine::kernel::{detected_isa, RingGemm};
use veil_engine::local::{LocalOptions, LocalRunReport};
use veil_engine::onnx::run::infer_private;
use veil_engine::onnx::{import_file, PrivateConfig, PrivateGraph};
use veil_protocols::ring::FixedPoint;

use super::minilm::{busiest, layers};
use super::{
    check_protocol, median, ms, per_op, BenchArgs, ModelReport, NetworkReport, Offline, Traffic,
    Transport,
};

/// Measures the ONNX model at `args.model` as `args` says (in memory only).
pub fn measure(args: &BenchArgs) -> Result<ModelReport> {
    check_protocol(args.protocol)?;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if args.transport != Transport::Mem {
        bail!("an ONNX model runs in memory only for now (--transport mem)");
    }
    if args.batch != 1 {
        bail!("an ONNX model runs one input of its exported shape (--batch 1)");
    }
    let shaping = args.shaping()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or((cores / args.parties.max(1)).max(1));
    let graph =
        import_file(&args.model).with_context(|| format!("importing {}", args.model.display()))?;
    let model = PrivateGraph::new(graph, PrivateConfig::new(FixedPoint::new(args.frac_bits)?)?)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let input: Vec<f32> = (0..model.graph().input_len())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();

    let mut options = LocalOptions::new(args.parties, Arc::new(RingGemm::new(threads)));
    options.profile = true;
    options.shaping = shaping;
    options.protocol = args.protocol;
    options.seed = Some(args.seed);
    let mut runs: Vec<LocalRunReport> = Vec::with_capacity(args.reps + 1);
    for _ in 0..=args.reps {
        runs.push(infer_private(
            &model,
            std::slice::from_ref(&input),
            &options,
        )?);
    }

    let reference = model.graph().forward(&input)?;
    let mut plain_times = Vec::new();
    for _ in 0..=args.reps {
        let t = Instant::now();
        model.graph().forward(&input)?;
        plain_times.push(ms(t.elapsed()));
    }
    plain_times.remove(0);

    let measured = &runs[1..];
    let max_abs_err = measured
        .iter()
        .filter_map(|r| r.outputs.first())
        .flat_map(|o| {
            o.iter()
                .zip(&reference)
                .map(|(a, b)| f64::from((a - b).abs()))
        })
        .fold(0.0, f64::max);
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
    let preprocess_ms = median(
        measured
            .iter()
            .filter_map(|r| r.preparation.first())
            .map(|d| ms(*d))
            .collect(),
    );
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
    let offline_ms = dealer_ms + preprocess_ms;
    let name = args
        .model
        .file_name()
        .map_or_else(|| "onnx".into(), |n| n.to_string_lossy().into_owned());
    Ok(ModelReport {
        workload: name,
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
        preprocess_ms,
        dealer_bytes_job: dealer_bytes,
        inferences: runs.len(),
        setup_bytes_per_party: 0,
        max_abs_err,
        verified: options.protocol.verifies().then_some(true),
        quic_udp_bytes_per_party: None,
        offline: args.offline,
        online_ms: latency_ms,
        offline_ms,
        time_ms: latency_ms + if include { offline_ms } else { 0.0 },
        data_sent_bytes,
        global_data_sent_bytes: bytes_all_parties + if include { dealer_bytes } else { 0 },
        network: shaping.as_ref().map(NetworkReport::of),
        estimated_ms: shaping
            .as_ref()
            .map(|s| super::estimate_ms(compute_ms, rounds, bytes_per_party, s)),
        profile_party,
        note: Some(format!(
            "ONNX graph of {} nodes, input {:?}; plaintext is the imported graph's f32 forward pass; each inference is one job",
            model.graph().nodes.len(),
            model.graph().input_shape()
        )),
        ops: per_op(&layers),
        layers,
        cosine: None,
    })
}
