//! Errors of the node library, as precise enums.

use std::path::PathBuf;

use thiserror::Error;

use crate::frame::FrameError;

/// Why a node operation failed.
#[derive(Debug, Error)]
pub enum NodeError {
    /// Reading or writing a file of the node's state.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A secret file (a key) could not be written, or is not private.
    #[error(transparent)]
    SecretFile(#[from] crate::secret_file::SecretFileError),
    /// A socket or process operation failed.
    #[error("{0}: {1}")]
    System(&'static str, std::io::Error),
    /// The configuration file is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A key could not be created, read or used.
    #[error("identity: {0}")]
    Identity(String),
    /// TLS setup failed.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// A QUIC connection could not be made or was lost.
    #[error("quic: {0}")]
    Quic(String),
    /// A peer sent a frame that does not decode.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A peer sent a well-formed message that makes no sense at this point of the exchange.
    #[error("protocol violation: {0}")]
    Unexpected(String),
    /// The committee manifest failed a check.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A peer did not answer in time.
    #[error("timed out after {0:?} {1}")]
    Timeout(std::time::Duration, &'static str),
    /// The client of a job broke off its part (went silent, sent something out of turn, or closed its
    /// stream): the fault is the client's, not a node's.
    #[error("the client broke off the job: {0}")]
    Client(String),
    /// The job failed at a party or at the dealer (the message says where and why).
    #[error("job failed: {0}")]
    Job(String),
    /// The engine or the protocols failed.
    #[error(transparent)]
    Engine(#[from] veil_engine::EngineError),
    /// A protocol-level failure (transport timeouts and disconnections included).
    #[error(transparent)]
    Protocol(#[from] veil_protocols::ProtocolError),
}

/// Shorthand for node results.
pub type Result<T> = std::result::Result<T, NodeError>;

impl NodeError {
    /// Wraps a QUIC-level error.
    pub(crate) fn quic(e: impl std::fmt::Display) -> Self {
        NodeError::Quic(e.to_string())
    }
}
