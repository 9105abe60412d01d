//! `veil devnet`: a whole network on this machine for trying the enterprise path (`veil deploy`, `veil
//! infer`, `veil jobs`) and for the end-to-end tests: a coordinator and `--nodes` nodes of as many
//! operators, in processes, on 127.0.0.1.
//!
//! It prints one JSON line once every node passed its trial (`{"event":"ready","coordinator":ADDR,
//! "coordinator_key":KEY,"dir":DIR,"nodes":[KEYS]}`) and runs until its standard input closes or it is
//! interrupted (Ctrl-C stops the whole process group); then every process it started is stopped.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::local::{LocalNetwork, LocalOptions};

/// Arguments of `veil devnet`.
#[derive(Args, Debug)]
pub struct DevnetArgs {
    /// Node processes (each its own operator).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Log level of the processes (their logs are under the printed directory).
    #[arg(long, default_value = "info")]
    pub log: String,
    /// The coordinator splits a model whose party memory exceeds this into stages run by successive
    /// committees (0: never).
    #[arg(long, default_value_t = 0)]
    pub max_stage_memory_bytes: u64,
}

/// Runs `veil devnet`.
pub fn run(args: DevnetArgs) -> Result<()> {
    let exe = std::env::current_exe().context("locating the veil executable")?;
    let options = LocalOptions {
        nodes: args.nodes,
        log: args.log.clone(),
        max_stage_memory_bytes: args.max_stage_memory_bytes,
    };
    let net = LocalNetwork::start(&exe, &options)?;
    let client = net.client(None)?;
    net.wait_active(&client, args.nodes, Duration::from_secs(90), |_| {})?;
    let ready = serde_json::json!({
        "event": "ready",
        "coordinator": net.address(),
        "coordinator_key": net.coordinator_key().to_string(),
        "dir": net.dir().display().to_string(),
        "nodes": net.node_keys(),
    });
    println!("{ready}");
    eprintln!(
        "veil devnet: coordinator {} (key {}), {} nodes; logs in {}\n  try: veil deploy --model \
         models/breast-cancer/model.safetensors --coordinator {} --coordinator-key {}\n  stop: Ctrl-C (or close \
         standard input)",
        net.address(),
        net.coordinator_key(),
        args.nodes,
        net.dir().display(),
        net.address(),
        net.coordinator_key()
    );
    // Until standard input ends (EOF or error): then `net` drops and stops every process.
    let mut sink = [0u8; 256];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    drop(net);
    Ok(())
}
