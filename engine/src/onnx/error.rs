//! What can go wrong importing or running an ONNX model.

use thiserror::Error;

/// An ONNX model that cannot be imported or run. Never a panic: every count, size and dimension read from
/// the file is bounded and every arithmetic on them checked.
#[derive(Debug, Error)]
pub enum OnnxError {
    /// The file is larger than the importer reads.
    #[error("the ONNX file has {bytes} bytes, more than the {limit} the importer reads")]
    TooLarge {
        /// Size of the file.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The parser refused the file (not ONNX, truncated, inconsistent).
    #[error("not a readable ONNX model: {0}")]
    Parse(String),
    /// An operator veil does not run privately (or not with these attributes).
    #[error("unsupported operator {op} at node {node:?}: {detail}")]
    Unsupported {
        /// The ONNX operator.
        op: String,
        /// The node's name.
        node: String,
        /// What is missing.
        detail: String,
    },
    /// A node whose inputs, attributes or shapes do not fit together.
    #[error("node {node:?} ({op}): {detail}")]
    Invalid {
        /// The ONNX operator.
        op: String,
        /// The node's name.
        node: String,
        /// What is wrong.
        detail: String,
    },
    /// A graph-level problem (inputs, outputs, sizes).
    #[error("ONNX graph: {0}")]
    Graph(String),
    /// A limit on what is read from the file was exceeded.
    #[error("ONNX graph exceeds a limit: {what} is {got}, at most {limit}")]
    Limit {
        /// The bounded quantity.
        what: &'static str,
        /// Its value.
        got: usize,
        /// The bound.
        limit: usize,
    },
    /// An input of the wrong length for the graph.
    #[error("the input has {got} values, the graph takes {expected}")]
    Input {
        /// Values given.
        got: usize,
        /// Values the graph's input shape holds.
        expected: usize,
    },
}
