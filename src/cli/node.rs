//! `veil node` (the daemon), `veil keygen` (a node's public identity), and the QUIC branch of `veil bench`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_engine::local::LocalRunReport;
use veil_engine::{Model, Plan};
use veil_node::client::{run_private_protocol, Client, ClientOptions, Committee, QuicJob};
use veil_node::cluster::{ClusterOptions, LocalCluster};
use veil_node::manifest::ModelSpec;
use veil_node::{Identity, Node, NodeConfig};

/// Arguments of `veil node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node's TOML configuration (see node/README.md).
    #[arg(long)]
    pub config: PathBuf,
}

/// Arguments of `veil keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The data directory of a node or a client (`veil-client/` is what deploy and infer use by default);
    /// the keys are created there if missing.
    #[arg(long, default_value = "veil-node-data")]
    pub data_dir: PathBuf,
}

/// Runs the node daemon until the process is stopped.
pub fn run_node(args: NodeArgs) -> Result<()> {
    super::signals::install();
    let mut config = NodeConfig::load(&args.config)?;
    veil_node::logging::init(&config.log);
    let (identity, created) = Identity::load_or_create(&config.data_dir)?;
    veil_node::record::init(&format!("node-{}", identity.public_key()));
    if created {
        tracing::info!(data_dir = %config.data_dir.display(), "created a new node identity");
    }
    // A node that joins a coordinator accepts the manifests it signs.
    let link = config.coordinator.clone();
    if let Some(link) = &link {
        if !config.trusted_submitters.contains(&link.public_key) {
            config.trusted_submitters.push(link.public_key);
        }
    }
    let (operator, submit_timeout) = (config.operator.clone(), config.submit_timeout());
    let inbox = match &link {
        Some(_) => Some(
            veil_node::inbox::Inbox::open(&config.data_dir)
                .with_context(|| format!("sealing key in {}", config.data_dir.display()))?,
        ),
        None => None,
    };
    let metrics = match config.metrics_listen {
        Some(address) => Some(veil_node::metrics::serve(address)?),
        None => None,
    };
    let node = std::sync::Arc::new(Node::start(config, &identity)?);
    let mut ready = serde_json::to_value(node.ready_line())?;
    if let (Some(address), Some(line)) = (metrics, ready.as_object_mut()) {
        line.insert("metrics".into(), address.to_string().into());
    }
    println!("{ready}");
    use std::io::Write;
    std::io::stdout().flush()?;
    let agent = match (link, inbox) {
        (Some(link), Some(inbox)) => Some(veil_node::agent::spawn(
            node.clone(),
            inbox,
            identity,
            link,
            operator,
            submit_timeout,
        )?),
        _ => None,
    };
    // Until SIGTERM or SIGINT: then the agent hands its live tasks back (reported failed as this node's
    // fault, so the coordinator reschedules them now) and the process exits. What the node keeps
    // (receipts, replay records) is committed as it is written, so nothing is left to flush.
    super::signals::wait();
    tracing::info!(signal = super::signals::name(), "stopping");
    if let Some(agent) = agent {
        agent.hand_off(Duration::from_secs(5));
    }
    Ok(())
}

/// Prints a node's (or a client's) public keys, creating them if needed: the Ed25519 identity on the first
/// line, the X25519 sealing key (shares or outputs are sealed to it) on the second.
pub fn run_keygen(args: KeygenArgs) -> Result<()> {
    let (identity, created) = Identity::load_or_create(&args.data_dir)
        .with_context(|| format!("identity in {}", args.data_dir.display()))?;
    let sealing = veil_node::envelope::OpeningKey::load_or_create(
        &args.data_dir.join(veil_node::inbox::KEY_FILE),
    )
    .with_context(|| format!("sealing key in {}", args.data_dir.display()))?;
    if created {
        eprintln!("created a new identity in {}", args.data_dir.display());
    }
    println!("{}", identity.public_key());
    println!("{}", sealing.public());
    Ok(())
}

/// What the QUIC benchmark measured beyond the in-memory report.
pub struct QuicBench {
    /// The report, in the in-memory run's shape.
    pub report: LocalRunReport,
    /// The most UDP bytes any party sent its peers in one measured inference (QUIC overhead included).
    pub udp_bytes_per_party: u64,
}

/// Runs the benchmark's private inferences over QUIC between `parties` `veil node` processes and a dealer
/// process, started from this executable on 127.0.0.1 and stopped at the end (also on error).
pub fn bench_quic(
    args: &super::bench::BenchArgs,
    model: &Model,
    plan: &Plan,
    inputs: &[Vec<f32>],
    threads: usize,
) -> Result<QuicBench> {
    let (cluster, outcome) = run_quic(args, model, plan, inputs, threads, None)?;
    let run = match outcome {
        Ok(run) => run,
        Err(e) => {
            eprintln!("{}", cluster.log_tails());
            bail!("private inference over QUIC failed: {e}");
        }
    };
    let udp_bytes_per_party = run
        .udp_tx_bytes
        .iter()
        .skip(1)
        .flat_map(|p| p.iter().copied())
        .max()
        .unwrap_or(0);
    drop(cluster);
    Ok(QuicBench {
        report: run.report,
        udp_bytes_per_party,
    })
}

/// `veil bench --adversary A --transport quic`: one job over `veil node` processes in which the party that
/// `adversary` names deviates (the nodes' test-only setting). Returns the job's outcome: `Ok` if it verified
/// and its outputs were released, else why it stopped. Every process is stopped before this returns.
pub fn adversary_quic(
    args: &super::bench::BenchArgs,
    model: &Model,
    plan: &Plan,
    input: &[f32],
    adversary: veil_protocols::adversary::Adversary,
) -> Result<std::result::Result<(), String>> {
    let (cluster, outcome) = run_quic(args, model, plan, &[input.to_vec()], 1, Some(adversary))?;
    drop(cluster);
    Ok(outcome.map(|_| ()).map_err(|e| e.to_string()))
}

/// Starts a node process per party and a dealer (none for `rep3`), and runs `inputs` through them as one job. A silent party
/// (`skip-round`) is noticed by the others' receive timeout, shortened for adversary runs.
fn run_quic(
    args: &super::bench::BenchArgs,
    model: &Model,
    plan: &Plan,
    inputs: &[Vec<f32>],
    threads: usize,
    adversary: Option<veil_protocols::adversary::Adversary>,
) -> Result<(
    LocalCluster,
    std::result::Result<veil_node::client::QuicRun, veil_node::NodeError>,
)> {
    let (workload, seed, batch, parties) = (&args.workload, args.seed, args.batch, args.parties);
    if parties < 2 {
        bail!("--parties must be at least 2");
    }
    let exe = std::env::current_exe().context("locating the veil executable")?;
    let client_identity = Identity::generate()?;
    let mut options = ClusterOptions::new(parties, client_identity.public_key());
    // Nodes act out a deviation only in builds with the test hooks; a release build runs the lab's
    // adversaries in memory (`--transport mem`) only.
    if !options.set_test_adversary(adversary) {
        bail!(
            "--adversary over QUIC needs node processes built with the insecure-test-hooks feature \
             (cargo build --release --features insecure-test-hooks); --transport mem runs it in memory"
        );
    }
    if adversary.is_some() {
        options.recv_timeout_ms = 3_000;
        options.log = "error".into();
    }
    let protocol = args.protocol;
    // A protocol without a dealer runs on the parties alone: no dealer process.
    options.dealer = protocol.has_dealer();
    let cluster = LocalCluster::spawn(&exe, &options).context("starting node processes")?;
    let committee = Committee {
        parties: cluster.parties(),
        dealer: cluster.dealer(),
    };
    let client_options = ClientOptions {
        bind: ([127, 0, 0, 1], 0).into(),
        job_timeout: Duration::from_secs(if adversary.is_some() { 60 } else { 600 }),
        shaping: args.shaping()?,
        ..ClientOptions::default()
    };
    let client = Client::new(client_identity, client_options)?;
    let job = QuicJob {
        model,
        plan,
        spec: ModelSpec {
            workload: workload.clone(),
            seed,
            weights: plan.mode,
            frac_bits: plan.fixed_point.frac_bits(),
            deployed: None,
        },
        batch,
        threads,
        seed: None,
        profile: true,
    };
    let outcome = run_private_protocol(&client, &committee, &job, inputs, protocol);
    Ok((cluster, outcome))
}
