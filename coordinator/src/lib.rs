//! MetaInf as a service: the coordinator of a veil network (`veil coordinator`). Shaped like quinn-proto
//! and quinn: a sans-IO [`core`] takes every decision and returns what to persist; a driver
//! ([`Coordinator`]) applies that to a [`store::StateStore`] and the [`blobs`] directory; the [`http`] edge
//! maps requests and errors. Selection, lifecycle and persistence primitives are `veil-scheduler`'s; the
//! API it serves (paths, JSON bodies) is `veil_node::api`, which nodes (`veil_node::agent`) and clients
//! (`veil-client`) speak.
//!
//! Layering: `protocols` <- `engine` <- `node`, and `scheduler` <- `coordinator` (which also uses `node`'s
//! identities, manifests and API types); the `veil` binary sits on both.
//!
//! | module | one job |
//! | --- | --- |
//! | [`core`] | the state and its decisions, one module per phase (sans IO) |
//! | [`service`] | the driver: core + store + blobs, persisting after every call |
//! | [`store`] | the store trait and its redb implementation |
//! | [`blobs`] | opaque per-node blobs on disk |
//! | [`config`] | `coordinator.toml` |
//! | [`error`] | the coordinator's errors and their kinds |
//! | [`trial`] | checking a node's known-answer trial |
//! | [`holds`] | long polls: held heartbeats and job statuses, woken by changes |
//! | [`http`] | the axum routers per resource, TLS, the accept loop, the timer |

#![forbid(unsafe_code)]

pub mod blobs;
pub mod config;
pub mod core;
pub mod error;
pub mod holds;
pub mod http;
pub mod metrics;
pub mod model_files;
pub mod service;
pub mod store;
#[cfg(feature = "insecure-test-hooks")]
pub mod tamper;
pub mod trial;

pub use config::CoordinatorConfig;
pub use error::{Error, ErrorKind};
pub use service::Coordinator;
