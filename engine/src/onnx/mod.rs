//! Bring your own model: ONNX import (issue 22).
//!
//! An ONNX file is parsed by `onnx-ir` (the burn project's ONNX parser and typed intermediate
//! representation, same release line as our burn), then mapped to veil's own DAG ([`graph::Graph`]): named
//! tensors with static shapes, one typed op per node, in topological order. Shapes are public, so
//! shape-only subgraphs (Shape, Gather on shapes, Cast, Constant, Identity, Unsqueeze, Concat of constants)
//! are folded at import; BatchNormalization is folded into the Conv or Gemm before it (or becomes a public
//! affine map); GELU written with Erf is recognised and becomes one GELU.
//!
//! | module | one job |
//! | --- | --- |
//! | [`error`] | [`OnnxError`] |
//! | [`graph`] | the DAG: tensors, ops, shapes, the plaintext f32 forward pass |
//! | [`import`] | bytes -> [`graph::Graph`]: parsing, bounds, operator mapping, constants |
//! | `import::layout` | the layout operators as index maps, folded on constants (shape-only subgraphs) |
//! | `passes` | rewrites: BatchNorm (per-channel affine) folding, GELU fusion, dead nodes |
//! | [`private`] | the graph on secret shares, written once over [`veil_protocols::ops::MpcOps`], and its dealer material |
//! | [`run`] | a local committee (in memory) under `semi2k`, `spdz2k` or `rep3` |

pub mod error;
pub mod graph;
pub mod import;
mod passes;
pub mod private;
pub mod run;

pub use error::OnnxError;
pub use graph::{Graph, Node, Op};
pub use import::{import, import_file, looks_like_onnx, looks_like_onnx_file};
pub use private::{PrivateConfig, PrivateGraph};
