//! TEST ONLY: a record of every byte a process receives, for the end-to-end privacy test.
//!
//! When the environment variable `ENV` names a directory at start, [`init`] opens
//! `{dir}/{role}-{pid}.rec` and from then on the process appends every application-level payload it
//! receives: each QUIC frame a node reads (header and body), each HTTP body the coordinator receives, each
//! HTTP response body a node or client receives, each plaintext a node opens from a sealed envelope (what it
//! then holds), and, in a client, the encoded plaintext inputs and each party's shares (the reference the
//! test searches for). Off by default; turning it on writes secrets to disk, so a process warns loudly.
//!
//! Format: records of `[kind: u8][len: u64 LE][bytes]`, kinds [`Kind`]. Invariant: with `ENV` unset,
//! every function here is a no-op that allocates nothing.
//!
//! Only builds with the `insecure-test-hooks` feature can record (the tests enable it; release builds do
//! not): without it [`init`] reads no environment variable and never starts recording, and the variable's
//! name is not in the binary.

use std::fs::File;
use std::io::Write;

use std::sync::{Mutex, OnceLock};

/// The environment variable that turns recording on (a directory).
#[cfg(feature = "insecure-test-hooks")]
pub const ENV: &str = "VEIL_INSECURE_RECORD_DIR";

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Bytes received from the network (after TLS).
    Received = 1,
    /// A plaintext opened from a sealed envelope (held by the process).
    Opened = 2,
    /// Client only: an encoded plaintext input (little-endian ring words).
    ClientInput = 3,
    /// Client only: a party's share; the first 32 bytes are the party node's public key, then the words.
    ClientShare = 4,
}

static SINK: OnceLock<Option<Mutex<File>>> = OnceLock::new();

/// Without the `insecure-test-hooks` feature: nothing (recording never starts).
#[cfg(not(feature = "insecure-test-hooks"))]
pub fn init(_role: &str) {}

/// Starts recording for a process of `role` if `ENV` is set (see the module doc). Idempotent.
#[cfg(feature = "insecure-test-hooks")]
pub fn init(role: &str) {
    SINK.get_or_init(|| {
        let dir = std::path::PathBuf::from(std::env::var_os(ENV)?);
        let safe: String = role
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let path = dir.join(format!("{safe}-{}.rec", std::process::id()));
        let opened = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::secret_file::create_new_private(&path).map_err(|e| e.to_string())
            });
        match opened {
            Ok(f) => {
                tracing::warn!(
                    "{ENV} is set: recording every byte this process receives to {} (TEST ONLY: it writes \
                     secrets to disk)",
                    path.display()
                );
                Some(Mutex::new(f))
            }
            Err(e) => {
                tracing::error!("{ENV}: cannot record to {}: {e}", path.display());
                None
            }
        }
    });
}

/// Whether this process records.
pub fn enabled() -> bool {
    matches!(SINK.get(), Some(Some(_)))
}

/// Appends one record of `kind` made of `parts` (concatenated), if recording.
pub fn write(kind: Kind, parts: &[&[u8]]) {
    let Some(Some(sink)) = SINK.get() else {
        return;
    };
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let Ok(mut f) = sink.lock() else {
        return;
    };
    let mut ok =
        f.write_all(&[kind as u8]).is_ok() && f.write_all(&(len as u64).to_le_bytes()).is_ok();
    for p in parts {
        ok = ok && f.write_all(p).is_ok();
    }
    if !ok {
        tracing::error!("the test recorder could not write a record");
    }
}

/// Records bytes received from the network.
pub fn received(bytes: &[u8]) {
    write(Kind::Received, &[bytes]);
}

/// Reads a record file back as (kind byte, bytes) pairs; a truncated tail is ignored.
pub fn read_file(path: &std::path::Path) -> std::io::Result<Vec<(u8, Vec<u8>)>> {
    let bytes = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 9 <= bytes.len() {
        let kind = bytes[at];
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[at + 1..at + 9]);
        let len = u64::from_le_bytes(len) as usize;
        let Some(body) = bytes.get(at + 9..at.saturating_add(9).saturating_add(len)) else {
            break;
        };
        out.push((kind, body.to_vec()));
        at += 9 + len;
    }
    Ok(out)
}
