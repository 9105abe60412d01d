//! Subcommands of the `veil` binary.

pub mod bench;
pub mod coordinator;
pub mod demo;
pub mod jobs;
pub mod node;
pub mod report;
pub mod nodes;
pub mod sim;
pub mod sweep;
