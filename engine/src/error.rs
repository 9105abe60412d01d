//! Errors of the engine, as precise enums.

use thiserror::Error;
use veil_protocols::ProtocolError;

/// Why a model could not be built, checked or run.
#[derive(Debug, Error)]
pub enum EngineError {
    /// A layer's input does not have the shape the layer needs.
    #[error("layer {index} ({layer}) expects {expected}, but receives shape {got:?}")]
    LayerShape {
        /// Position of the layer in the model.
        index: usize,
        /// Layer kind.
        layer: &'static str,
        /// What the layer expects.
        expected: String,
        /// The shape it would receive.
        got: Vec<usize>,
    },
    /// An input of the wrong size or shape for the model.
    #[error("input has {got} values, but the model takes a batch of {batch} items of shape {item:?} ({expected} values)")]
    InputShape {
        /// Values given.
        got: usize,
        /// Values expected.
        expected: usize,
        /// Batch size.
        batch: usize,
        /// Per-item shape.
        item: Vec<usize>,
    },
    /// A layer configuration that private inference does not support.
    #[error("layer {index} ({layer}): {what} is not supported")]
    Unsupported {
        /// Position of the layer.
        index: usize,
        /// Layer kind.
        layer: &'static str,
        /// The unsupported setting.
        what: String,
    },
    /// Weights that do not match the plan (count or size).
    #[error("weights: {0}")]
    Weights(String),
    /// An ONNX model that cannot be imported or run.
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    /// A batch of zero items.
    #[error("batch size must be at least 1")]
    EmptyBatch,
    /// A protocol failure while running privately.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A chat model (Llama) refused its input or failed.
    #[error("chat model: {0}")]
    Llama(Box<crate::llama::LlamaError>),
    /// Reading a tensor back from burn failed.
    #[error("burn: {0}")]
    Burn(String),
    /// A model file that cannot be read, or that does not describe a valid model.
    #[error("model file: {0}")]
    ModelFile(String),
    /// An input value that is NaN or infinite.
    #[error("input value {index} is not a finite number")]
    NonFinite {
        /// Position of the first such value.
        index: usize,
    },
}

/// Shorthand for engine results.
pub type Result<T> = std::result::Result<T, EngineError>;

impl From<veil_protocols::ring::RingError> for EngineError {
    fn from(e: veil_protocols::ring::RingError) -> Self {
        EngineError::Protocol(ProtocolError::Ring(e))
    }
}
