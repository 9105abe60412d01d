//! Helpers shared by the integration tests that drive real processes.

#![allow(dead_code)]

pub mod devnet;
