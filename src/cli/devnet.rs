//! `veil devnet`: a whole network on this machine for trying the enterprise path (`veil deploy`, `veil
//! infer`, `veil jobs`) and for the end-to-end tests: a coordinator and `--nodes` nodes of as many
//! operators, in processes, on 127.0.0.1.
//!
//! It prints one JSON line once every node passed its trial (`{"event":"ready","coordinator":ADDR,
//! "coordinator_key":KEY,"dir":DIR,"nodes":[KEYS],"metrics":URL}`, URL the coordinator's Prometheus
//! endpoint) and runs until its standard input closes or it gets
//! SIGTERM or SIGINT (also when not on a terminal); then every process it started is stopped, gracefully
//! first.

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
    super::signals::install();
    let exe = std::env::current_exe().context("locating the veil executable")?;
    let options = LocalOptions {
        nodes: args.nodes,
        log: args.log.clone(),
        max_stage_memory_bytes: args.max_stage_memory_bytes,
    };
    let mut net = LocalNetwork::start(&exe, &options)?;
    let client = net.client(None)?;
    net.wait_active(&client, args.nodes, Duration::from_secs(90), |_| {})?;
    let ready = serde_json::json!({
        "event": "ready",
        "coordinator": net.address(),
        "coordinator_key": net.coordinator_key().to_string(),
        "dir": net.dir().display().to_string(),
        "nodes": net.node_keys(),
        "metrics": net.metrics_url(),
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
    // Until standard input ends (EOF or error), or SIGTERM or SIGINT arrives: then every process is
    // stopped (SIGTERM, then SIGKILL after 4 s per group), also when not on a terminal.
    let stdin_closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let closed = stdin_closed.clone();
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    while !super::signals::requested() && !stdin_closed.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("veil devnet: stopping ({})", super::signals::name());
    net.stop(Duration::from_secs(4));
    drop(net);
    Ok(())
}
