//! Subcommands of the `veil` binary.

pub mod bench;
pub mod chat;
pub mod client;
pub mod coordinator;
pub mod demo;
pub mod devnet;
pub mod embed;
pub mod embed_job;
pub mod gateway;
pub mod jobs;
pub mod local;
pub mod models;
pub mod node;
pub mod nodes;
pub mod onnx_job;
pub mod operator;
pub mod report;
pub mod signals;
pub mod sim;
pub mod soak;
pub mod sweep;
pub mod verify;
