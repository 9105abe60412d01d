//! `veil sim`: MetaInf's committee selection over a synthetic registry, without a network. Prints a summary,
//! or with `--json` one JSON object as the last line of stdout (see `veil_scheduler::sim` for every figure).

use anyhow::{bail, Result};
use clap::Args;
use veil_scheduler::sim::synth::Adversary;
use veil_scheduler::sim::{self, SimConfig, SimReport};
use veil_scheduler::{DomainKey, SelectionMode, SelectionTuning};

/// The operator cap of an adversarial run when none is given: twice the mean operator size of the
/// synthetic world (20 nodes).
pub const DEFAULT_MAX_NODES_PER_OPERATOR: usize = 40;

/// Arguments of `veil sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Nodes in the synthetic registry.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Jobs to place.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Seed of the world and the workload.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Execution parties per committee.
    #[arg(long, default_value_t = 3)]
    pub parties: u8,
    /// Collusion keys, comma-separated: operator, region, asn.
    #[arg(long, default_value = "operator")]
    pub collusion: String,
    /// Mean load the arrival rate aims at, as a fraction of capacity.
    #[arg(long, default_value_t = 0.5)]
    pub load: f64,
    /// Fraction of the operators that are adversarial: each runs as many nodes as allowed, claims maximal
    /// hardware and near-zero RTTs among its nodes. The JSON then reports `captured_committees` and
    /// `capture_bound`.
    #[arg(long, default_value_t = 0.0)]
    pub adversary_operators: f64,
    /// The most nodes one operator may run (0: no limit; 40 when there is an adversary and this is 0).
    #[arg(long, default_value_t = 0)]
    pub max_nodes_per_operator: usize,
    /// How committees are chosen: draw (weighted random, from a seed) or cheapest (deterministic).
    #[arg(long, default_value = "draw")]
    pub selection: String,
    /// Print one JSON object as the last line instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs `veil sim`.
pub fn run(args: SimArgs) -> Result<()> {
    let mut keys = Vec::new();
    for k in args.collusion.split(',').filter(|k| !k.trim().is_empty()) {
        match DomainKey::parse(k) {
            Some(key) if !keys.contains(&key) => keys.push(key),
            Some(_) => {}
            None => bail!("unknown collusion key {k:?} (operator, region, asn)"),
        }
    }
    if keys.is_empty() {
        bail!("at least one collusion key is required");
    }
    if !(0.0..1.0).contains(&args.adversary_operators) {
        bail!("--adversary-operators is a fraction in [0, 1)");
    }
    let mode = match args.selection.as_str() {
        "draw" => SelectionMode::Draw,
        "cheapest" => SelectionMode::Cheapest,
        other => bail!("unknown --selection {other:?} (draw, cheapest)"),
    };
    let max_nodes_per_operator = match args.max_nodes_per_operator {
        0 if args.adversary_operators > 0.0 => DEFAULT_MAX_NODES_PER_OPERATOR,
        m => m,
    };
    let cfg = SimConfig {
        tuning: SelectionTuning {
            mode,
            ..SelectionTuning::default()
        },
        adversary: Adversary {
            fraction: args.adversary_operators,
            max_nodes_per_operator,
        },
        nodes: args.nodes,
        jobs: args.jobs,
        seed: args.seed,
        parties: args.parties,
        collusion_keys: keys,
        target_load: args.load,
        ..SimConfig::default()
    };
    let report = sim::run(&cfg)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

fn print_summary(r: &SimReport) {
    println!(
        "veil sim: {} nodes ({} operators, {} eligible), {} jobs, {} parties + dealer + verifier, collusion keys {}, selection {}",
        r.nodes,
        r.operators,
        r.eligible_nodes_at_start,
        r.jobs,
        r.parties,
        r.collusion_keys.join(","),
        r.selection
    );
    println!(
        "  decisions      {} ({} placed, {} retries, {} jobs unplaced{})",
        r.decisions,
        r.placed,
        r.retries,
        r.unplaced,
        if r.unplaced_reasons.is_empty() {
            String::new()
        } else {
            format!(": {:?}", r.unplaced_reasons)
        }
    );
    println!(
        "  decision time  {:.0} decisions/s, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        r.decisions_per_s, r.p50_decision_us, r.p99_decision_us, r.max_decision_us
    );
    println!(
        "  whole loop     {:.2} s wall ({:.0} decisions/s), {:.0} s simulated",
        r.wall_s, r.wall_decisions_per_s, r.simulated_s
    );
    println!(
        "  utilisation    max/mean {:.3} (mean {:.3}, over {} nodes eligible throughout)",
        r.max_over_mean_utilisation, r.mean_utilisation, r.utilisation_nodes
    );
    println!(
        "  latency        largest party RTT {:.1} ms on average (random committees: {:.1} ms)",
        r.mean_party_rtt_ms, r.random_party_rtt_ms
    );
    println!(
        "  jobs           {} done, {} failed; distrusted at the end: {} honest, {} flaky, {}/{} malicious",
        r.done_jobs, r.failed_jobs, r.distrusted_honest, r.distrusted_flaky, r.distrusted_malicious, r.malicious_nodes
    );
    if r.adversary_operators > 0.0 {
        println!(
            "  capture        {:.4} of committees captured (bound for a uniform draw {:.4}); adversary: {:.0}% of operators, {} nodes, {:.1}% of the eligible",
            r.captured_committees,
            r.capture_bound,
            r.adversary_operators * 100.0,
            r.adversarial_nodes,
            r.adversarial_eligible_share * 100.0
        );
    }
    println!(
        "  checker        {} committees: {} collusion violations, {} memory violations, {} ineligible members",
        r.committees_checked, r.collusion_violations, r.memory_violations, r.ineligible_selections
    );
}
