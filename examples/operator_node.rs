//! An operator runs a veil node: a key pair in a data directory, a TOML configuration, a QUIC endpoint.
//!
//! Run: `cargo run --release --example operator_node -- [--config node.toml] [--seconds N]`
//!
//! Without `--config`, the example writes a configuration for a node on 127.0.0.1 with its state under
//! `veil-node-data/`, prints it (copy it to a file and edit `listen`, `operator` and
//! `trusted_submitters` for a real deployment), starts the node, prints its ready line (address and public
//! key: what the operator registers with a coordinator or gives to the enterprises it serves), checks that
//! it answers a ping over mutually authenticated QUIC, and serves until stopped (or for `--seconds N`).
//! The same daemon ships as `veil node --config node.toml`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use veil_node::client::{Client, ClientOptions};
use veil_node::manifest::Member;
use veil_node::{Identity, Node, NodeConfig};

struct Args {
    config: Option<PathBuf>,
    seconds: Option<u64>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        config: None,
        seconds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => args.config = Some(it.next().context("--config needs a path")?.into()),
            "--seconds" => {
                args.seconds = Some(
                    it.next()
                        .context("--seconds needs a number")?
                        .parse()
                        .context("--seconds")?,
                )
            }
            other => bail!("unknown argument {other:?}: use --config FILE and --seconds N"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // The operator's monitoring key: the node will answer pings from it (any admitted key may ping).
    let monitor = Identity::generate()?;
    let mut config = match &args.config {
        Some(path) => NodeConfig::load(path)?,
        None => {
            let mut c = NodeConfig::new(([127, 0, 0, 1], 0).into(), "veil-node-data".into());
            c.operator = "example-operator".into();
            println!("# node.toml\n{}", c.to_toml()?);
            c
        }
    };
    if !config.trusted_submitters.contains(&monitor.public_key()) {
        config.trusted_submitters.push(monitor.public_key());
    }
    let (identity, created) = Identity::load_or_create(&config.data_dir)?;
    if created {
        println!("created a node identity in {}", config.data_dir.display());
    }
    let node = Node::start(config, &identity)?;
    println!("{}", serde_json::to_string(node.ready_line())?);

    let client = Client::new(
        monitor,
        ClientOptions {
            bind: ([127, 0, 0, 1], 0).into(),
            ..ClientOptions::default()
        },
    )?;
    let me = Member {
        address: node.address(),
        public_key: node.public_key(),
    };
    let jobs = client.ping(&me)?;
    println!(
        "node {} at {} answers over QUIC; {jobs} active job(s)",
        node.public_key().short(),
        node.address()
    );
    match args.seconds {
        Some(s) => {
            std::thread::sleep(Duration::from_secs(s));
            println!("stopping after {s} s");
        }
        None => node.run_forever(),
    }
    Ok(())
}
