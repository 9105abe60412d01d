//! The veil node daemon: QUIC transport implementing `Net`, the party runtime, and the dealer and verifier
//! roles. Nothing is implemented yet; see the QUIC nodes issue and DESIGN.md.
