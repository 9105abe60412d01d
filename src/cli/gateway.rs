//! `veil gateway`: the OpenAI-compatible gateway (the `veil-gateway` crate) in front of a coordinator. It
//! runs on the enterprise's side, next to its applications: texts and rows are tokenised and shared here,
//! and answers are opened here (after the receipt checks, under spdz2k).
//!
//! It prints one JSON line `{"event":"ready","address":ADDR,"models":[IDS]}` once it listens, then serves
//! until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use veil_gateway::network::{NetworkBackend, NetworkConfig, StartError};
use veil_gateway::network_chat::NetworkChat;
use veil_gateway::{ApiKeys, Gateway, Limits};
use veil_protocols::protocol::Protocol;

/// Arguments of `veil gateway`.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address to listen on (plain HTTP: keep it on loopback or behind a TLS proxy).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The coordinator's address, host:port.
    #[arg(long)]
    pub coordinator: String,
    /// The coordinator's public key (hex), pinned.
    #[arg(long)]
    pub coordinator_key: veil_node::PublicKey,
    /// The gateway's identity directory (created if missing): jobs belong to it; the classifiers it
    /// deployed (`veil deploy --identity DIR`) are served.
    #[arg(long)]
    pub identity: PathBuf,
    /// Accepted bearer keys, one per line: the key, or `sha256:HEX` of it (`#` comments).
    #[arg(long)]
    pub api_key_file: PathBuf,
    /// A model to serve (repeatable): a fetched pretrained name (`all-minilm-l6-v2`) or the id of a
    /// model this identity deployed. Default: all of them.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Protocol of the pretrained deployments it uses, or makes when the coordinator lacks them: spdz2k
    /// (MAC-checked, every answer's receipt checked) or semi2k.
    #[arg(long, default_value = "spdz2k")]
    pub protocol: Protocol,
    /// Parties of the pretrained deployments it makes.
    #[arg(long, default_value_t = 3)]
    pub parties: u8,
    /// Longest a request's jobs may take, seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Requests served at once (429 beyond).
    #[arg(long, default_value_t = Limits::default().max_concurrent)]
    pub max_concurrent: usize,
    /// Most texts in one embeddings request.
    #[arg(long, default_value_t = Limits::default().max_inputs)]
    pub max_inputs: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
}

/// Runs `veil gateway`.
pub fn run(args: GatewayArgs) -> Result<()> {
    if !matches!(args.protocol, Protocol::Semi2k | Protocol::Spdz2k) {
        bail!("--protocol {}: use semi2k or spdz2k", args.protocol);
    }
    super::signals::install();
    veil_node::logging::init("info");
    let keys = ApiKeys::load(&args.api_key_file)?;
    let config = NetworkConfig {
        coordinator: args.coordinator.clone(),
        coordinator_key: args.coordinator_key,
        identity: args.identity.clone(),
        models: args.models.clone(),
        protocol: args.protocol,
        parties: args.parties,
        job_timeout: Duration::from_secs(args.timeout_s.max(1)),
        call_timeout: Duration::from_secs(30),
    };
    // Before the server's runtime: the SDK runs a runtime of its own.
    let backend = NetworkBackend::connect(&config).context("starting the gateway's backend")?;
    let limits = Limits {
        max_concurrent: args.max_concurrent.max(1),
        max_inputs: args.max_inputs.max(1),
        max_body_bytes: args.max_body_bytes.max(1024),
        ..Limits::default()
    };
    // The chat model: when asked for, or by default when it is fetched.
    let chat: Option<std::sync::Arc<dyn veil_gateway::ChatBackend>> = if args
        .models
        .iter()
        .any(|m| veil_gateway::CHAT_MODEL_NAMES.contains(&m.as_str()))
        || (args.models.is_empty() && NetworkChat::fetched())
    {
        Some(std::sync::Arc::new(
            NetworkChat::connect(&config).context("starting the gateway's chat backend")?,
        ))
    } else {
        None
    };
    let gateway = Gateway::new(std::sync::Arc::new(backend), chat, keys, limits);
    let models: Vec<String> = gateway.models().into_iter().map(|m| m.id).collect();
    if models.is_empty() {
        return Err(StartError::NoModels.into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("veil-gateway")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let address = listener.local_addr()?;
        if !address.ip().is_loopback() {
            tracing::warn!(
                "listening on {address} in plain HTTP: texts and answers cross the network in the clear; keep the gateway on loopback or put a TLS proxy in front"
            );
        }
        println!(
            "{}",
            serde_json::json!({ "event": "ready", "address": address.to_string(), "models": models })
        );
        tracing::info!("veil gateway on http://{address}/v1 (models: {})", models.join(", "));
        veil_gateway::serve(listener, veil_gateway::router(gateway), async {
            while !super::signals::requested() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .context("serving")
    })
}
