//! Errors of the protocol layer, as precise enums.

use thiserror::Error;

use crate::net::NetError;

/// Why a protocol operation could not run or finish.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The transport failed: a peer vanished, a timeout, a malformed message.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// Two operands (or an operand and the operation) disagree on shape.
    #[error("shape mismatch in {op}: {detail}")]
    Shape {
        /// The operation that found the mismatch.
        op: &'static str,
        /// What did not match.
        detail: String,
    },
    /// The dealer material does not match what the operation needs (wrong kind or size, or it ran out).
    #[error("dealer material: {0}")]
    Material(String),
    /// A committee must have at least two parties, and the party index must be below the party count.
    #[error("invalid committee: {0}")]
    Committee(String),
    /// A peer sent a message of a length the protocol did not expect.
    #[error("party {from} sent {got} bytes where {expected} were expected")]
    MessageLength {
        /// The sender.
        from: usize,
        /// Bytes received.
        got: usize,
        /// Bytes the protocol step requires.
        expected: usize,
    },
    /// The MAC check (spdz2k) failed: some party deviated. No output may be released.
    #[error("verification failed: {0}")]
    Verification(String),
    /// This party deviated on purpose (the protocol lab's adversaries) and stopped.
    #[error("adversary: {0}")]
    Deviated(String),
    /// This party stopped because another party of its in-process committee left the run first (the other
    /// party's error is the cause).
    #[error("run abandoned: {0}")]
    Abandoned(String),
    /// Fixed-point parameters or values that the ring cannot hold.
    #[error(transparent)]
    Ring(#[from] crate::ring::RingError),
}

/// Shorthand for results of protocol operations.
pub type Result<T> = std::result::Result<T, ProtocolError>;

/// Returns a [`ProtocolError::Shape`] unless `cond` holds.
pub(crate) fn ensure_shape(
    cond: bool,
    op: &'static str,
    detail: impl FnOnce() -> String,
) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(ProtocolError::Shape {
            op,
            detail: detail(),
        })
    }
}
