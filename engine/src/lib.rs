//! veil's engine: models built from burn modules, their plaintext reference forward pass, the ring kernels for
//! linear layers over shares, and private execution plans that drive the protocols.
//!
//! burn defines and imports models and computes the plaintext reference; share arithmetic runs on the ring
//! kernels in [`kernel`], which are several times faster than burn's integer tensors for wrapping u64 (see
//! `veil bench --workload gemm`). The engine knows nothing of transports: it runs over any `Net`.

pub mod bert;
pub mod burn_record;
pub mod error;
pub mod gguf;
pub mod kernel;
pub mod lab;
pub mod llama;
pub mod local;
pub mod local_program;
mod local_rep3;
mod local_rep3m;
pub mod model;
pub mod model_file;
pub mod onnx;
pub mod plan;
pub mod private;
pub mod session;
pub mod start_line;
pub mod workloads;

pub use error::{EngineError, Result};
pub use model::{Layer, Model};
pub use plan::{Plan, WeightMode};
