//! The node's configuration file (TOML). Every field is documented in `node/README.md`.
//!
//! Invariant: a loaded [`NodeConfig`] has passed [`NodeConfig::validate`] (positive timeouts, a frame limit
//! large enough for the protocol's messages, parseable keys).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};
use crate::identity::PublicKey;

/// A node's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// UDP address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Directory of the node's state (its identity key); created on first start.
    pub data_dir: PathBuf,
    /// Operator of the node, as it names itself (shown to operators; a coordinator that admits operators
    /// takes the collusion domain from the certificate's verified operator key instead).
    #[serde(default)]
    pub operator: String,
    /// Keys allowed to submit jobs (sign manifests), hex.
    #[serde(default)]
    pub trusted_submitters: Vec<PublicKey>,
    /// Largest frame body accepted, bytes.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// How long a party waits for a message from a peer before the job fails, ms.
    #[serde(default = "default_recv_timeout")]
    pub recv_timeout_ms: u64,
    /// How long a submitted job may wait for its run request (party) or for every party's material request
    /// (dealer) before it is dropped, and how long a party waits for the dealer's material, ms.
    #[serde(default = "default_submit_timeout")]
    pub submit_timeout_ms: u64,
    /// How long a handshake (or waiting for a peer's connection) may take, ms.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// QUIC idle timeout: a connection silent this long is closed, ms.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Threads of the node's async runtime (QUIC I/O); computation runs on its own threads.
    #[serde(default = "default_io_threads")]
    pub io_threads: usize,
    /// Log level: error, warn, info, debug or trace (the `VEIL_LOG` environment variable overrides it).
    #[serde(default = "default_log")]
    pub log: String,
    /// TEST ONLY, off by default: when this node deals, it derives every job's seeds from this number
    /// instead of fresh randomness, exactly as the in-memory runner does with a seed. Anyone who knows it
    /// can strip the masks from every opened value, so a node refuses nothing but logs a warning at start.
    /// It exists so that tests can show a QUIC run equals an in-memory run bit for bit.
    /// Only in builds with the `insecure-test-hooks` feature (release builds lack it, and refuse the key).
    #[cfg(feature = "insecure-test-hooks")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_dealer_seed: Option<u64>,
    /// TEST ONLY, off by default: when this node is the named party of a `spdz2k` job, it deviates as the
    /// protocol lab's adversary says (`veil_protocols::adversary`), so that tests can show the job aborts
    /// over QUIC too. Logged as a warning at start.
    /// Only in builds with the `insecure-test-hooks` feature (release builds lack it, and refuse the key).
    #[cfg(feature = "insecure-test-hooks")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_adversary: Option<veil_protocols::adversary::Adversary>,
    /// Plain-HTTP address serving Prometheus text at `/metrics` (`crate::metrics`); none (the default):
    /// no listener. Bind it to localhost: it has no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// The MetaInf coordinator this node joins (`[coordinator]` section); none: the node serves only
    /// clients that submit to it directly. The `veil` binary's agent reads it (the node library does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorLink>,
}

/// How a node joins a coordinator: where it is, the key it must present (pinned), and what the node
/// reports about itself at registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorLink {
    /// The coordinator's HTTPS address, `host:port`.
    pub address: String,
    /// The coordinator's Ed25519 public key (hex): its TLS certificate must carry it, and it signs the
    /// committee manifests this node accepts (it is added to the trusted submitters).
    pub public_key: PublicKey,
    /// The node's region, e.g. "eu-west".
    pub region: String,
    /// The autonomous system of the node's address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Interval between heartbeats (which also fetch the node's assignments), ms.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// CPU cores offered (default: the machine's available parallelism).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Memory offered, bytes.
    #[serde(default = "default_offered_memory")]
    pub memory_bytes: u64,
    /// Measured network bandwidth, bytes per second.
    #[serde(default = "default_bandwidth")]
    pub bandwidth_bytes_per_s: u64,
    /// GPU model, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// GPU memory, bytes (with `gpu_model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_bytes: Option<u64>,
    /// The operator's certificate of this node (`veil operator certify`): a coordinator that admits
    /// operators refuses a node without one (HTTP 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
}

fn default_heartbeat() -> u64 {
    1_000
}
fn default_offered_memory() -> u64 {
    8 << 30
}
fn default_bandwidth() -> u64 {
    125_000_000
}

fn default_max_frame() -> usize {
    crate::frame::DEFAULT_MAX_FRAME
}
fn default_recv_timeout() -> u64 {
    60_000
}
fn default_submit_timeout() -> u64 {
    120_000
}
fn default_connect_timeout() -> u64 {
    10_000
}
fn default_idle_timeout() -> u64 {
    30_000
}
fn default_io_threads() -> usize {
    1
}
fn default_log() -> String {
    "info".into()
}

impl NodeConfig {
    /// TEST ONLY: the dealer's fixed seed (`insecure_dealer_seed`); always `None` in builds without the
    /// `insecure-test-hooks` feature.
    pub fn test_dealer_seed(&self) -> Option<u64> {
        #[cfg(feature = "insecure-test-hooks")]
        return self.insecure_dealer_seed;
        #[cfg(not(feature = "insecure-test-hooks"))]
        None
    }

    /// TEST ONLY: the deviation this node acts out (`insecure_adversary`); always `None` in builds without
    /// the `insecure-test-hooks` feature.
    pub fn test_adversary(&self) -> Option<veil_protocols::adversary::Adversary> {
        #[cfg(feature = "insecure-test-hooks")]
        return self.insecure_adversary;
        #[cfg(not(feature = "insecure-test-hooks"))]
        None
    }

    /// A configuration with defaults, listening on `listen`, state in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            operator: String::new(),
            trusted_submitters: Vec::new(),
            max_frame_bytes: default_max_frame(),
            recv_timeout_ms: default_recv_timeout(),
            submit_timeout_ms: default_submit_timeout(),
            connect_timeout_ms: default_connect_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            io_threads: default_io_threads(),
            log: default_log(),
            #[cfg(feature = "insecure-test-hooks")]
            insecure_dealer_seed: None,
            #[cfg(feature = "insecure-test-hooks")]
            insecure_adversary: None,
            metrics_listen: None,
            coordinator: None,
        }
    }

    /// Parses and validates a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: NodeConfig =
            toml::from_str(text).map_err(|e| NodeError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::Io {
            what: "reading configuration",
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| NodeError::Config(e.to_string()))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: &str| Err(NodeError::Config(s.into()));
        if self.max_frame_bytes < 1024 {
            return bad("max_frame_bytes must be at least 1024");
        }
        if self.max_frame_bytes > u32::MAX as usize {
            return bad("max_frame_bytes must fit in 32 bits");
        }
        if self.recv_timeout_ms == 0
            || self.submit_timeout_ms == 0
            || self.connect_timeout_ms == 0
            || self.idle_timeout_ms == 0
        {
            return bad("timeouts must be positive");
        }
        if self.io_threads == 0 {
            return bad("io_threads must be at least 1");
        }
        if let Some(c) = &self.coordinator {
            if c.heartbeat_ms == 0 || c.memory_bytes == 0 || c.bandwidth_bytes_per_s == 0 {
                return bad(
                    "coordinator: heartbeat_ms, memory_bytes and bandwidth must be positive",
                );
            }
        }
        Ok(())
    }

    /// [`Self::recv_timeout_ms`] as a duration.
    pub fn recv_timeout(&self) -> Duration {
        Duration::from_millis(self.recv_timeout_ms)
    }

    /// [`Self::submit_timeout_ms`] as a duration.
    pub fn submit_timeout(&self) -> Duration {
        Duration::from_millis(self.submit_timeout_ms)
    }

    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`Self::idle_timeout_ms`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_defaults() {
        let c = NodeConfig::from_toml(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\nrecv_timeout_ms = 500\n",
        )
        .unwrap();
        assert_eq!(c.recv_timeout(), Duration::from_millis(500));
        assert_eq!(c.max_frame_bytes, default_max_frame());
        let back = NodeConfig::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(
            NodeConfig::from_toml("listen = \"127.0.0.1:0\"\ndata_dir = \"x\"\nbogus = 1\n")
                .is_err()
        );
        assert!(NodeConfig::from_toml(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"x\"\nio_threads = 0\n"
        )
        .is_err());
    }
}
