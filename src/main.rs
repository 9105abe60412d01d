//! The `veil` command line: `veil demo`, `veil bench`.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// veil: private inference on secret-shared data.
#[derive(Parser)]
#[command(name = "veil", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the main job: a private inference of network-a next to its plaintext reference.
    Demo(cli::demo::DemoArgs),
    /// Measures a workload (time, bytes, rounds, error); `--json` prints one JSON object as the last line.
    Bench(cli::bench::BenchArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Bench(args) => cli::bench::run(args),
    }
}
