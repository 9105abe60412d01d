//! TEST ONLY (cargo feature `insecure-test-hooks`, never in a release build): a coordinator that tampers
//! with the blobs it relays, to show that the evidence signatures catch it (`tests/tamper_evidence.rs`).
//!
//! With `VEIL_INSECURE_TAMPER` set to `owner`, `output` or `transcript`, every download of that kind of blob
//! (party 0's, for outputs and transcripts) comes back with its last byte flipped: the body of a signed blob
//! (`veil_node::evidence`), substituted while its record still names the producer's digest and signature.

use crate::blobs::{BlobKey, Direction};

/// The environment variable that turns tampering on.
pub const ENV: &str = "VEIL_INSECURE_TAMPER";

/// `bytes` of blob `key`, changed if the environment asks for it.
pub fn apply(key: &BlobKey, mut bytes: Vec<u8>) -> Vec<u8> {
    let Ok(what) = std::env::var(ENV) else {
        return bytes;
    };
    let hit = matches!(
        (what.as_str(), key.dir, key.index),
        ("owner", Direction::Owner, _)
            | ("output", Direction::Output, 0)
            | ("transcript", Direction::Transcript, 0)
    );
    if hit {
        if let Some(last) = bytes.last_mut() {
            tracing::warn!(?key, "TEST ONLY: tampering with a relayed blob");
            *last ^= 1;
        }
    }
    bytes
}
