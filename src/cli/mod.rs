//! Subcommands of the `veil` binary.

pub mod bench;
pub mod demo;
pub mod node;
pub mod report;
pub mod sim;
pub mod sweep;
