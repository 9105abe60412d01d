//! The protocol lab's tools that are not protocols: link shaping of local and QUIC runs. The protocols see
//! only a [`veil_protocols::net::Net`]; what happens on the wire between them belongs here.

pub mod shaping;
