//! `veil bench --sweep --out FILE`: a grid of benchmarks (protocols x parties x workloads x batch sizes x
//! network settings), one JSON object per run, appended to FILE as each run finishes (so an interrupted sweep
//! keeps what it measured). `veil report FILE` turns the file into charts.
//!
//! Protocols default to every protocol `veil bench` measures ([`super::bench::PROTOCOLS`]: semi2k, spdz2k,
//! rep3 and rep3m, each at the party counts it runs with): a default protocol this build cannot measure yet
//! is skipped with a message; one named with `--sweep-protocols` that it cannot is an error, and a name that
//! is no protocol is refused when the arguments are parsed. A run that fails (a combination this build cannot
//! run, such as a protocol over a transport it does not support yet) is reported and skipped; the sweep then
//! ends with an error listing the failed runs, after writing every run that succeeded.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_engine::lab::shaping::ShapingConfig;

use veil_protocols::protocol::Protocol;

use super::bench::{self, BenchArgs};

/// Protocols the default sweep compares, if this build measures them: every protocol, the dealer ones
/// first, so that the table shows where each wins.
pub const DEFAULT_PROTOCOLS: &[Protocol] = &Protocol::ALL;

/// The grid of a sweep.
#[derive(Args, Debug, Clone)]
pub struct GridArgs {
    /// Sweep: protocols (default: semi2k, spdz2k, rep3 and rep3m, each if this build measures it; rep3 and
    /// rep3m run only at 3 parties, so their other party counts are left out of the grid).
    #[arg(long, value_delimiter = ',')]
    pub sweep_protocols: Vec<Protocol>,
    /// Sweep: party counts.
    #[arg(long, value_delimiter = ',', default_values_t = [2usize, 3, 5])]
    pub sweep_parties: Vec<usize>,
    /// Sweep: workloads.
    #[arg(long, value_delimiter = ',', default_values_t = ["network-a".to_string(), "lenet".to_string()])]
    pub sweep_workloads: Vec<String>,
    /// Sweep: batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
    pub sweep_batches: Vec<usize>,
    /// Sweep: network settings: `none` (unshaped), `lan` (0.1 ms, 10 Gbit/s), `wan` (40 ms, 100 Mbit/s) or
    /// `LATENCY_MS:MBPS` (e.g. `10:1000`).
    #[arg(long, value_delimiter = ',', default_values_t = ["lan".to_string(), "wan".to_string()])]
    pub sweep_networks: Vec<String>,
    /// Sweep: measured repetitions of runs whose latency is 1 ms or more (WAN runs are slow and steady).
    #[arg(long, default_value_t = 2)]
    pub wan_reps: usize,
}

/// Named network settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkPreset {
    /// Unshaped.
    None,
    /// 0.1 ms one-way, 10 Gbit/s.
    Lan,
    /// 40 ms one-way, 100 Mbit/s.
    Wan,
}

impl NetworkPreset {
    /// Every preset.
    pub const ALL: [NetworkPreset; 3] =
        [NetworkPreset::None, NetworkPreset::Lan, NetworkPreset::Wan];

    /// The preset's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            NetworkPreset::None => "none",
            NetworkPreset::Lan => "lan",
            NetworkPreset::Wan => "wan",
        }
    }

    /// Its shaping (`None`: unshaped).
    pub fn config(self) -> Option<ShapingConfig> {
        let (latency, mbps) = match self {
            NetworkPreset::None => return None,
            NetworkPreset::Lan => (0.1, 10_000.0),
            NetworkPreset::Wan => (40.0, 100.0),
        };
        ShapingConfig::new(latency, Some(mbps)).ok()
    }
}

/// Parses a network setting (see [`GridArgs::sweep_networks`]).
pub fn parse_network(text: &str) -> Result<Option<ShapingConfig>> {
    if let Some(p) = NetworkPreset::ALL.iter().find(|p| p.name() == text) {
        return Ok(p.config());
    }
    let Some((latency, mbps)) = text.split_once(':') else {
        bail!("network {text:?}: use none, lan, wan or LATENCY_MS:MBPS");
    };
    let latency: f64 = latency
        .parse()
        .with_context(|| format!("network {text:?}: latency"))?;
    let mbps: f64 = mbps
        .parse()
        .with_context(|| format!("network {text:?}: bandwidth"))?;
    Ok(Some(ShapingConfig::new(latency, Some(mbps))?))
}

/// The protocols to sweep: the ones asked for (each must be measurable), or the measurable defaults.
pub fn protocols(asked: &[Protocol]) -> Result<Vec<Protocol>> {
    if !asked.is_empty() {
        for &p in asked {
            bench::check_protocol(p)?;
        }
        return Ok(asked.to_vec());
    }
    let mut out: Vec<Protocol> = Vec::new();
    for p in DEFAULT_PROTOCOLS.iter().chain(bench::PROTOCOLS) {
        if out.contains(p) {
            continue;
        }
        if bench::PROTOCOLS.contains(p) {
            out.push(*p);
        } else {
            eprintln!("sweep: skipping protocol {p}: this build's bench does not measure it yet");
        }
    }
    Ok(out)
}

/// One point of the grid.
#[derive(Debug, Clone)]
pub struct Point {
    /// Protocol.
    pub protocol: Protocol,
    /// Parties.
    pub parties: usize,
    /// Workload.
    pub workload: String,
    /// Batch.
    pub batch: usize,
    /// Shaping.
    pub network: Option<ShapingConfig>,
}

/// Every point of the grid, networks innermost (so LAN and WAN runs of one configuration sit together).
pub fn grid(args: &GridArgs) -> Result<Vec<Point>> {
    let networks = args
        .sweep_networks
        .iter()
        .map(|n| parse_network(n))
        .collect::<Result<Vec<_>>>()?;
    let protocols = protocols(&args.sweep_protocols)?;
    let mut points = Vec::new();
    for workload in &args.sweep_workloads {
        if workload == "gemm" {
            bail!("sweep: gemm is a kernel benchmark, not a private workload");
        }
        for &protocol in &protocols {
            for &parties in args
                .sweep_parties
                .iter()
                .filter(|&&n| protocol.supports_parties(n))
            {
                for &batch in &args.sweep_batches {
                    for network in &networks {
                        points.push(Point {
                            protocol,
                            parties,
                            workload: workload.clone(),
                            batch,
                            network: *network,
                        });
                    }
                }
            }
        }
    }
    Ok(points)
}

/// Runs the sweep.
pub fn run(args: &BenchArgs) -> Result<()> {
    let out_path = args
        .out
        .as_ref()
        .context("--sweep needs --out FILE for its JSON lines")?;
    if args.grid.wan_reps == 0 || args.reps == 0 {
        bail!("--reps and --wan-reps must be at least 1");
    }
    let points = grid(&args.grid)?;
    let mut out = std::fs::File::create(out_path)
        .with_context(|| format!("creating {}", out_path.display()))?;
    let started = Instant::now();
    let mut failed = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let slow = point.network.is_some_and(|n| n.latency_ms >= 1.0);
        let mut run_args = args.clone();
        run_args.sweep = false;
        run_args.protocol = point.protocol;
        run_args.parties = point.parties;
        run_args.workload = point.workload.clone();
        run_args.batch = point.batch;
        run_args.latency = point.network.map(|n| n.latency_ms);
        run_args.bandwidth = point.network.and_then(|n| n.bandwidth_mbps);
        if slow {
            run_args.reps = args.grid.wan_reps;
        }
        let label = format!(
            "{} {} {}p batch {} {}",
            point.workload,
            point.protocol,
            point.parties,
            point.batch,
            point
                .network
                .map_or("unshaped".to_string(), |n| bench::NetworkReport::of(&n)
                    .name)
        );
        eprintln!("sweep [{}/{}] {label}", i + 1, points.len());
        let run_started = Instant::now();
        let mut report = match bench::measure(&run_args) {
            Ok(r) => r,
            Err(e) => {
                // One configuration this build cannot run (say a transport or protocol an older build lacks) must not cost the others.
                eprintln!("      failed: {e:#}");
                failed.push(format!("{label}: {e:#}"));
                continue;
            }
        };
        if slow && args.grid.wan_reps != args.reps {
            report.note = Some(format!(
                "{} repetitions under a shaped latency of {} ms (sweep --wan-reps)",
                run_args.reps,
                point.network.map_or(0.0, |n| n.latency_ms)
            ));
        }
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        out.flush()?;
        eprintln!(
            "      latency {:.2} ms, {:.1} KB/party, {} rounds ({:.1} s)",
            report.latency_ms,
            report.bytes_per_party as f64 / 1e3,
            report.rounds,
            run_started.elapsed().as_secs_f64()
        );
    }
    println!(
        "sweep: {} of {} runs in {:.1} s, written to {}",
        points.len() - failed.len(),
        points.len(),
        started.elapsed().as_secs_f64(),
        out_path.display()
    );
    if !failed.is_empty() {
        bail!(
            "{} sweep run(s) failed (the others are in the file):\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_custom_networks_parse() {
        let lan = parse_network("lan").unwrap().unwrap();
        assert_eq!((lan.latency_ms, lan.bandwidth_mbps), (0.1, Some(10_000.0)));
        let wan = parse_network("wan").unwrap().unwrap();
        assert_eq!((wan.latency_ms, wan.bandwidth_mbps), (40.0, Some(100.0)));
        assert!(parse_network("none").unwrap().is_none());
        let custom = parse_network("5:250").unwrap().unwrap();
        assert_eq!(
            (custom.latency_ms, custom.bandwidth_mbps),
            (5.0, Some(250.0))
        );
        assert!(parse_network("fast").is_err());
        assert!(parse_network("-1:10").is_err());
        assert!(parse_network("1:0").is_err());
    }

    #[test]
    fn unknown_protocols_are_refused_and_the_default_sweeps_every_protocol() {
        assert!("no-such-protocol".parse::<Protocol>().is_err());
        assert_eq!(protocols(&[]).unwrap(), Protocol::ALL);
        assert_eq!(protocols(&[Protocol::Rep3m]).unwrap(), [Protocol::Rep3m]);
    }

    #[test]
    fn the_bench_measures_every_protocol_the_enum_names() {
        assert_eq!(bench::PROTOCOLS, Protocol::ALL.as_slice());
    }

    /// The default grid: every protocol at the party counts it runs with (rep3 and rep3m at 3 only), each
    /// under LAN and WAN, network-a then lenet.
    #[test]
    fn the_default_grid_has_lan_and_wan_rows_for_every_protocol() {
        let args = GridArgs {
            sweep_protocols: Vec::new(),
            sweep_parties: vec![2, 3, 5],
            sweep_workloads: vec!["network-a".into(), "lenet".into()],
            sweep_batches: vec![1],
            sweep_networks: vec!["lan".into(), "wan".into()],
            wan_reps: 2,
        };
        let points = grid(&args).unwrap();
        // (3 + 3 + 1 + 1) configurations x 2 networks x 2 workloads.
        assert_eq!(points.len(), 32);
        for p in Protocol::ALL {
            let rows: Vec<&Point> = points.iter().filter(|x| x.protocol == p).collect();
            let parties: Vec<usize> = if p.supports_parties(2) {
                vec![2, 3, 5]
            } else {
                vec![3]
            };
            assert_eq!(rows.len(), parties.len() * 4, "{p}");
            assert!(rows.iter().all(|x| parties.contains(&x.parties)), "{p}");
            let lan = rows
                .iter()
                .filter(|x| x.network.is_some_and(|n| n.latency_ms < 1.0))
                .count();
            assert_eq!(lan * 2, rows.len(), "{p}: as many LAN rows as WAN rows");
        }
    }
}
