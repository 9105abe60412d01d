//! MetaInf as a service: the coordinator process (`veil coordinator`), the agent that joins a `veil node`
//! to it, and the client SDK that runs jobs through it. The selection, lifecycle and persistence logic is
//! `veil-scheduler`'s; this module adds the network, the clock and the glue to the node daemon (which is
//! why it lives in the `veil` crate: `node` and `scheduler` do not depend on each other).
//!
//! | module | one job |
//! | --- | --- |
//! | [`api`] | routes and JSON bodies of the HTTPS API |
//! | [`config`] | `coordinator.toml` |
//! | [`error`] | API errors and their HTTP statuses |
//! | [`state`] | the coordinator's state and decisions (registry, jobs, attempts, persistence) |
//! | [`blobs`] | opaque per-node blobs on disk |
//! | [`trial`] | the known-answer trial job |
//! | [`tls`] | pinned-key TLS for the API |
//! | [`server`] | the axum router, the TLS accept loop, the timer |
//! | [`http`] | the API's HTTPS client |
//! | [`agent`] | the node side: register, heartbeat, run tasks |
//! | [`sdk`] | the client side: deploy, submit, share and seal per attempt, open and reconstruct |
//! | [`local`] | a whole network in local processes (`veil demo`, tests) |

pub mod agent;
pub mod api;
pub mod blobs;
pub mod config;
pub mod error;
pub mod http;
pub mod local;
pub mod sdk;
pub mod server;
pub mod state;
pub mod tls;
pub mod trial;
