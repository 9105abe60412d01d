//! The veil node daemon: a QUIC transport implementing [`veil_protocols::net::Net`] with pinned-key mutual TLS,
//! and the roles a node plays in a job: execution party, dealer or verifier. The client side (submitting a
//! job to a committee of nodes) and a launcher for local node processes live here too, so that the CLI, the
//! benchmark and the end-to-end tests share one implementation.
//!
//! Layering (DESIGN.md): `protocols` <- `engine` <- `node`. Nothing here is depended on by the engine or the
//! protocols; the protocols run over [`quic_net::QuicNet`] exactly as they run over the in-memory mesh, with
//! the same results and the same byte and round counts (accounting is `CountedNet`'s, around either).
//!
//! Modules, one job each:
//! - [`identity`]: a node's Ed25519 identity key, persisted under its data directory, and its self-signed cert.
//! - [`envelope`]: shares sealed to one recipient's X25519 key (HKDF-SHA256, AES-256-GCM), bound to a job.
//! - [`inbox`]: a node's sealing key, its attestation, and the once-per-job opening of sealed inputs.
//! - [`tls`]: rustls configurations whose verifiers accept only pinned keys.
//! - [`frame`]: the versioned, length-bounded frame format and its decoder.
//! - [`wire`]: the messages that travel in frames.
//! - [`manifest`]: the signed committee manifest every member checks before it computes.
//! - [`config`]: the node's TOML configuration.
//! - [`peers`]: the QUIC endpoint, one connection per pair of nodes, and the allow-list of keys.
//! - [`quic_net`]: the `Net` implementation, one stream per job and direction.
//! - [`jobs`]: the registry of a node's live jobs.
//! - [`party`], [`dealer`]: the two computing roles.
//! - [`verifier`]: the verifier role's check of a `spdz2k` job's MAC-check transcripts.
//! - [`receipt`]: the verifier's signed receipt, its JSON file form and its check.
//! - [`secret_file`]: owner-only secret files, written with exclusive create and read only when private.
//! - [`record`]: TEST ONLY recording of every byte a process receives (off unless an env variable is set).
//! - [`stage`]: re-randomised hand-over of shares between the stages of a model split across committees.
//! - [`node`]: the daemon that ties them together.
//! - [`client`]: submits a job to a committee and collects the results.
//! - [`cluster`]: starts local `veil node` processes (benchmarks, tests).
//! - [`api`]: the coordinator's HTTPS API (paths and JSON bodies), as nodes and clients speak it.
//! - [`api_client`]: the HTTPS client of that API (pinned coordinator key, the caller's identity).
//! - [`agent`]: joins a node to a coordinator: registers, heartbeats, runs its trial and its tasks.
//! - [`trial`]: the node's side of the known-answer trial job.
//! - [`operator`]: operator keys and the certificates that bind a node to its operator.

#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod api_client;
pub mod client;
pub mod cluster;
pub mod config;
pub mod dealer;
pub mod envelope;
pub mod error;
pub mod evidence;
pub mod frame;
pub mod generation;
pub mod identity;
pub mod inbox;
pub mod jobs;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod model_cache;
pub mod node;
pub mod onnx_model;
pub mod operator;
pub mod party;
pub mod peers;
pub mod quic_net;
pub mod receipt;
pub mod record;
pub mod secret_file;
pub mod stage;
pub mod tls;
pub mod trial;
pub mod verifier;
pub mod wire;

pub use config::NodeConfig;
pub use error::{NodeError, Result};
pub use identity::{Identity, PublicKey};
pub use node::{Node, ReadyLine};
