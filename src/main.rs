//! The `veil` command line: `veil demo`, `veil bench`, `veil node`, `veil keygen`, `veil sim`, and the
//! coordinator's `veil coordinator`, `veil nodes`, `veil jobs`, `veil job`, `veil submit`, and `veil verify`.

mod allocator;
mod cli;
mod lab;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// veil: private inference on secret-shared data.
#[derive(Parser)]
#[command(name = "veil", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr: `text`, or `json` (one object per line; the processes a command starts
    /// inherit it through `VEIL_LOG_FORMAT`).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the main job: a local coordinator and nodes, a deployed model, private predictions next to plaintext.
    Demo(cli::demo::DemoArgs),
    /// Measures a workload (time, bytes, rounds, error); `--json` prints one JSON object as the last line.
    Bench(cli::bench::BenchArgs),
    /// Runs a node daemon: `veil node --config node.toml` (see node/README.md).
    Node(cli::node::NodeArgs),
    /// Prints a node's public identity, creating its key pair in the data directory if needed.
    Keygen(cli::node::KeygenArgs),
    /// An operator's key and its certificates: `veil operator keygen|certify|admit`.
    Operator(cli::operator::OperatorArgs),
    /// Simulates MetaInf's committee selection over a synthetic registry; `--json` prints one JSON object.
    Sim(cli::sim::SimArgs),
    /// Turns a sweep file (`veil bench --sweep --out FILE`) into an HTML page of SVG charts.
    Report(cli::report::ReportArgs),
    /// Runs the MetaInf coordinator: `veil coordinator --config coordinator.toml`.
    Coordinator(cli::coordinator::CoordinatorArgs),
    /// Fetches a pretrained model: `veil models fetch all-minilm-l6-v2`.
    Models(cli::models::ModelsArgs),
    /// Embeds a sentence with all-MiniLM-L6-v2 (`--plaintext`: burn alone).
    Embed(cli::embed::EmbedArgs),
    /// A chat turn with SmolLM2-135M-Instruct, privately on a local committee (`--plaintext`: burn alone).
    Chat(cli::chat::ChatArgs),
    /// Lists the nodes registered with a coordinator.
    Nodes(cli::nodes::NodesArgs),
    /// Lists a coordinator's jobs.
    Jobs(cli::jobs::JobsArgs),
    /// Shows one job's status and lifecycle history.
    Job(cli::jobs::JobArgs),
    /// Runs a private inference through a coordinator and compares it with the plaintext model.
    Submit(cli::jobs::SubmitArgs),
    /// Runs a local network (a coordinator and nodes in processes) until stdin closes or Ctrl-C.
    Devnet(cli::devnet::DevnetArgs),
    /// Chaos run: a local network, jobs in flight, a random node SIGKILLed and restarted periodically.
    Soak(cli::soak::SoakArgs),
    /// Lists the coordinator's audit log of receipts.
    Receipts(cli::jobs::ReceiptsArgs),
    /// The coordinator's draw beacon: the chain's anchor and the last revealed epoch secret.
    Beacon(cli::jobs::BeaconArgs),
    /// Deploys a model's public part to a coordinator (the weights stay with you): prints its id.
    Deploy(cli::client::DeployArgs),
    /// Private predictions through a coordinator: `veil infer --model ID --input ROWS.csv`.
    Infer(cli::client::InferArgs),
    /// Checks a job's receipt: `veil verify RECEIPT --coordinator-key HEX` (exit 0: valid).
    Verify(cli::verify::VerifyArgs),
    /// An OpenAI-compatible gateway: `/v1/embeddings`, `/v1/veil/predict`, ... as verified private jobs.
    Gateway(cli::gateway::GatewayArgs),
}

fn main() -> Result<()> {
    allocator::tune();
    let cli = Cli::parse();
    if let Some(format) = &cli.log_format {
        // Before any thread is started: children and `veil_node::logging::init` read it.
        std::env::set_var(veil_node::logging::FORMAT_VAR, format);
    }
    match cli.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Node(args) => cli::node::run_node(args),
        Command::Keygen(args) => cli::node::run_keygen(args),
        Command::Operator(args) => cli::operator::run(args),
        Command::Devnet(args) => cli::devnet::run(args),
        Command::Soak(args) => cli::soak::run(args),
        Command::Deploy(args) => cli::client::deploy(args),
        Command::Receipts(args) => cli::jobs::receipts(args),
        Command::Beacon(args) => cli::jobs::beacon(args),
        Command::Infer(args) => cli::client::infer(args),
        Command::Sim(args) => cli::sim::run(args),
        Command::Report(args) => cli::report::run(args),
        Command::Coordinator(args) => cli::coordinator::run(args),
        Command::Models(args) => cli::models::run(args),
        Command::Embed(args) => cli::embed::run(args),
        Command::Chat(args) => cli::chat::run(args),
        Command::Nodes(args) => cli::nodes::run(args),
        Command::Jobs(args) => cli::jobs::list(args),
        Command::Job(args) => cli::jobs::show(args),
        Command::Submit(args) => cli::jobs::submit(args),
        Command::Verify(args) => cli::verify::run(args),
        Command::Gateway(args) => cli::gateway::run(args),
    }
}
