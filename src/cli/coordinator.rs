//! `veil coordinator --config coordinator.toml`: the MetaInf coordinator daemon, and the arguments every
//! command that talks to it shares (`--coordinator`, `--coordinator-key`, `--identity`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use veil_node::{Identity, PublicKey};

use veil_client::ApiClient;
use veil_coordinator::http::{self as server, tls, ReadyLine};
use veil_coordinator::{Coordinator, CoordinatorConfig};

/// Arguments of `veil coordinator`.
#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// The coordinator's TOML configuration (see the README's Coordinator section).
    #[arg(long)]
    pub config: PathBuf,
}

/// Where the coordinator is and who the caller is, for `veil nodes`, `veil jobs`.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The coordinator's address, host:port.
    #[arg(long)]
    pub coordinator: String,
    /// The coordinator's public key (hex), pinned: its TLS certificate must carry it.
    #[arg(long)]
    pub coordinator_key: PublicKey,
    /// Data directory of the caller's identity (created if missing); a fresh identity if omitted. Jobs
    /// belong to the identity that submitted them: only it can upload inputs and read outputs.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Timeout of each call to the coordinator, seconds.
    #[arg(long, default_value_t = 30)]
    pub call_timeout_s: u64,
}

impl ConnectArgs {
    /// A client SDK session: the API client plus the X25519 key outputs are sealed to (kept beside the
    /// identity, `sealing.key`, or fresh when no identity directory is given).
    pub fn session(&self) -> Result<veil_client::Client> {
        let key = match &self.identity {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                veil_node::envelope::OpeningKey::load_or_create(
                    &dir.join(veil_node::inbox::KEY_FILE),
                )?
            }
            None => veil_node::envelope::OpeningKey::generate(),
        };
        Ok(veil_client::Client::new(
            self.client()?,
            self.coordinator_key,
            key,
        ))
    }

    /// A client of the coordinator.
    pub fn client(&self) -> Result<ApiClient> {
        let identity = match &self.identity {
            Some(dir) => Identity::load_or_create(dir)?.0,
            None => Identity::generate()?,
        };
        Ok(ApiClient::new(
            &identity,
            self.coordinator_key,
            self.coordinator.clone(),
            Duration::from_secs(self.call_timeout_s.max(1)),
        )?)
    }
}

/// Runs the coordinator until the process is stopped.
pub fn run(args: CoordinatorArgs) -> Result<()> {
    super::signals::install();
    let config = CoordinatorConfig::load(&args.config)?;
    veil_node::logging::init(&config.log);
    veil_node::record::init("coordinator");
    let (identity, created) = Identity::load_or_create(&config.data_dir)
        .with_context(|| format!("identity in {}", config.data_dir.display()))?;
    if created {
        tracing::info!(data_dir = %config.data_dir.display(), "created a new coordinator identity");
    }
    let tls_config = Arc::new(tls::server_config(&identity)?);
    let public_key = identity.public_key();
    let tick = Duration::from_millis(config.tick_ms);
    let max_blob = config.max_blob_bytes;
    let limits = config.limits.clone();
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    let state = Coordinator::open(config, identity, server::now_ms())?;
    let state = Arc::new(Mutex::new(state));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("veil-coordinator")
        .enable_all()
        .build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("binding {listen}"))?;
    let metrics_listener = runtime
        .block_on(tokio::net::TcpListener::bind(metrics_listen))
        .with_context(|| format!("binding {metrics_listen} (metrics)"))?;
    let ready = ReadyLine {
        event: "ready".into(),
        address: listener.local_addr()?,
        public_key: public_key.to_string(),
        metrics: Some(metrics_listener.local_addr()?),
    };
    tracing::info!(address = %ready.address, key = %ready.public_key, "coordinator listening");
    println!("{}", serde_json::to_string(&ready)?);
    use std::io::Write;
    std::io::stdout().flush()?;
    let edge = Arc::new(server::limits::Edge::new(&limits));
    let app = server::router(state.clone(), edge.clone(), max_blob);
    runtime.spawn(veil_coordinator::metrics::serve(
        metrics_listener,
        state.clone(),
        edge,
    ));
    runtime.spawn(server::watch_admission(
        state.clone(),
        args.config.clone(),
        Duration::from_secs(2),
    ));
    runtime.spawn(server::timer(state.clone(), tick));
    // Serve until SIGTERM or SIGINT; then stop accepting, let the request being committed finish (it
    // holds the state lock) and close the store.
    runtime.block_on(async {
        tokio::select! {
            () = server::serve(listener, tls_config, app, &limits) => {}
            () = super::signals::stopped() => {}
        }
    });
    tracing::info!(signal = super::signals::name(), "stopping");
    runtime.shutdown_timeout(Duration::from_secs(3));
    match Arc::try_unwrap(state) {
        Ok(state) => drop(state.into_inner()),
        Err(state) => drop(state.lock()),
    }
    Ok(())
}
