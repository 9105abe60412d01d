//! The protocol lab's building blocks that are not subcommands: charts for `veil report`.

pub mod charts;
