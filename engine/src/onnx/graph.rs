//! veil's model graph: a DAG of typed ops over named tensors with static shapes, and its plaintext (f32)
//! forward pass, the reference the private pass is checked against.
//!
//! Invariants (established by [`crate::onnx::import`], relied on by the forward passes):
//! - `nodes` are in topological order: every input of node `i` is the graph input or the output of a node
//!   before `i`; every node has exactly one output tensor, written by no other node.
//! - every tensor's shape is static and its element count is at most [`MAX_ELEMENTS`];
//! - every index an op holds (gathers, windows, convolution geometry) is within its input, and every weight
//!   has the length its op's dimensions say.

use veil_protocols::semi2k::Pool2d;

use super::error::OnnxError;

/// The value padded positions of a max pooling take on shares: below any activation the fixed-point
/// range is meant for, far inside the sign test's range.
pub const PADDING: f32 = -1.0e4;

/// Largest element count of one tensor (activation or weight).
pub const MAX_ELEMENTS: usize = 1 << 24;

/// One tensor of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its ONNX name.
    pub name: String,
    /// Its static shape.
    pub shape: Vec<usize>,
}

impl Tensor {
    /// Element count.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A 2-D convolution with public weights, NCHW, batch items one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    /// Batch items.
    pub batch: usize,
    /// Input channels, height, width.
    pub input: [usize; 3],
    /// Output channels, height, width.
    pub output: [usize; 3],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding: top, left (bottom and right are implied by the output size).
    pub pad: [usize; 2],
    /// Dilation along height and width.
    pub dilation: [usize; 2],
    /// Groups (input and output channels each divide by it).
    pub groups: usize,
    /// `[out_c, in_c / groups, kh, kw]`.
    pub weight: Vec<f32>,
    /// `[out_c]`.
    pub bias: Vec<f32>,
}

impl Conv {
    /// For batch item `n` and group `g`: the im2col matrix `[oh * ow, (in_c / groups) * kh * kw]` as
    /// indices into the input tensor, with `zero` standing for a padded position.
    pub fn im2col(&self, n: usize, g: usize, zero: usize) -> Vec<usize> {
        let [c, h, w] = self.input;
        let [_, oh, ow] = self.output;
        let icg = c / self.groups;
        let [kh, kw] = self.kernel;
        let mut out = Vec::with_capacity(oh * ow * icg * kh * kw);
        for oy in 0..oh {
            for ox in 0..ow {
                for ci in 0..icg {
                    let channel = g * icg + ci;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let y = (oy * self.stride[0] + ky * self.dilation[0]) as isize
                                - self.pad[0] as isize;
                            let x = (ox * self.stride[1] + kx * self.dilation[1]) as isize
                                - self.pad[1] as isize;
                            if y < 0 || x < 0 || y as usize >= h || x as usize >= w {
                                out.push(zero);
                            } else {
                                out.push(((n * c + channel) * h + y as usize) * w + x as usize);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Group `g`'s weights as a `[(in_c / groups) kh kw, out_c / groups]` matrix (the im2col product's
    /// right operand).
    pub fn group_weight(&self, g: usize) -> Vec<f32> {
        let [oc, _, _] = self.output;
        let ocg = oc / self.groups;
        let inner = self.input[0] / self.groups * self.kernel[0] * self.kernel[1];
        let mut out = vec![0.0; inner * ocg];
        for o in 0..ocg {
            for i in 0..inner {
                out[i * ocg + o] = self.weight[(g * ocg + o) * inner + i];
            }
        }
        out
    }

    /// Where the product of batch item `n`, group `g` (`[oh * ow, oc / groups]`, row-major) lands in the
    /// NCHW output: one output index per element of the product.
    pub fn scatter(&self, n: usize, g: usize) -> Vec<usize> {
        let [oc, oh, ow] = self.output;
        let ocg = oc / self.groups;
        (0..oh * ow)
            .flat_map(|p| (0..ocg).map(move |o| ((n * oc + g * ocg + o) * oh * ow) + p))
            .collect()
    }
}

/// What a node computes. Every shape-dependent quantity is resolved at import.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `x [rows, inner] · W [inner, outputs] + b` (Gemm, MatMul with a constant right operand).
    Linear {
        /// Rows of the input viewed as a matrix.
        rows: usize,
        /// Inner dimension.
        inner: usize,
        /// Output columns.
        outputs: usize,
        /// `[inner, outputs]`.
        weight: Vec<f32>,
        /// `[outputs]`.
        bias: Vec<f32>,
    },
    /// A 2-D convolution (with BatchNormalization folded in where it followed).
    Conv(Box<Conv>),
    /// `x * scale + shift`, elementwise with public constants as long as `x` (Add, Sub, Mul, Div by a
    /// constant; a BatchNormalization that could not be folded).
    Affine {
        /// Per-element factor.
        scale: Vec<f32>,
        /// Per-element offset.
        shift: Vec<f32>,
    },
    /// Sum of two activations of the same shape (a residual connection).
    Add,
    /// Difference of two activations of the same shape.
    Sub,
    /// Elementwise product of two activations of the same shape.
    Mul,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x >= 0`, `alpha x` below.
    LeakyRelu {
        /// Slope below 0.
        alpha: f32,
    },
    /// The logistic function.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// GELU, exact (erf) form.
    Gelu,
    /// Erf: only inside the GELU pattern, which import replaces by [`Op::Gelu`]; never in a finished graph.
    Erf,
    /// Softmax of each row of `[rows, cols]` (the last axis).
    Softmax {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// LayerNorm of each row of `[rows, cols]` with its gain and bias.
    LayerNorm {
        /// Rows.
        rows: usize,
        /// Columns (the normalised axis).
        cols: usize,
        /// Gain, `[cols]`.
        gamma: Vec<f32>,
        /// Bias, `[cols]`.
        beta: Vec<f32>,
        /// Variance epsilon.
        epsilon: f32,
    },
    /// Max pooling without padding (2-D, NCHW).
    MaxPool {
        /// Geometry.
        pool: Pool2d,
        /// Batch items.
        batch: usize,
    },
    /// Max pooling with padding: output `i` is the largest of `candidates[j][i]` over `j`, where an index
    /// equal to the input's length stands for padding (never the maximum: [`PADDING`] on shares).
    MaxPoolPadded {
        /// Per window position, the input index (or the padding) for every output.
        candidates: Vec<Vec<usize>>,
    },
    /// Output `i` is the mean of the input's elements `windows[i]` (AveragePool, GlobalAveragePool,
    /// ReduceMean), divided by `divisors[i]` (the window's size, or the padded kernel's).
    Mean {
        /// Input indices per output.
        windows: Vec<Vec<usize>>,
        /// Divisor per output.
        divisors: Vec<usize>,
    },
    /// Output `i` is element `indices[i]` of the inputs concatenated (Reshape, Flatten, Squeeze,
    /// Unsqueeze, Transpose, Slice, Concat, Split, Identity): free on shares.
    Gather {
        /// Index into the concatenated inputs per output element.
        indices: Vec<usize>,
    },
    /// Batched product of two activations `[batch, m, k] · [batch, k, n]` (attention's share x share).
    MatMul {
        /// Batch.
        batch: usize,
        /// Rows of the left.
        m: usize,
        /// Inner.
        k: usize,
        /// Columns of the right.
        n: usize,
    },
}

impl Op {
    /// A short name for listings.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Linear { .. } => "linear",
            Op::Conv(_) => "conv",
            Op::Affine { .. } => "affine",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Relu => "relu",
            Op::LeakyRelu { .. } => "leaky-relu",
            Op::Sigmoid => "sigmoid",
            Op::Tanh => "tanh",
            Op::Gelu => "gelu",
            Op::Erf => "erf",
            Op::Softmax { .. } => "softmax",
            Op::LayerNorm { .. } => "layernorm",
            Op::MaxPool { .. } | Op::MaxPoolPadded { .. } => "maxpool",
            Op::Mean { .. } => "mean",
            Op::Gather { .. } => "gather",
            Op::MatMul { .. } => "matmul",
        }
    }
}

impl Op {
    /// What the op becomes on shares (the table of [`crate::onnx::private`]).
    pub fn protocol_step(&self) -> &'static str {
        match self {
            Op::Linear { .. } => "local product by the public weight, 1 truncation",
            Op::Conv(_) => "im2col gather, local product by the public weight, 1 truncation",
            Op::Affine { scale, .. } if scale.iter().all(|s| *s == 1.0) => "local public add",
            Op::Affine { .. } => "local public affine map, 1 truncation",
            Op::Add | Op::Sub => "local",
            Op::Mul => "Beaver product, 1 truncation",
            Op::Relu => "sign test",
            Op::LeakyRelu { .. } => "sign test, local public affine map, 1 truncation",
            Op::Sigmoid | Op::Tanh | Op::Gelu | Op::Erf => {
                "piecewise polynomial (sign tests, products)"
            }
            Op::Softmax { .. } => "row max (sign tests), exp polynomial, Newton reciprocal",
            Op::LayerNorm { .. } => "Newton rsqrt, public gain and bias, 1 truncation",
            Op::MaxPool { .. } | Op::MaxPoolPadded { .. } => "tournament of sign tests",
            Op::Mean { .. } => "local window sums, public 1/size, 1 truncation",
            Op::Gather { .. } => "local gather (free)",
            Op::MatMul { .. } => "matrix triples (one round), 1 truncation",
        }
    }
}

/// One node: an op, the tensors it reads and the one it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The ONNX node's name (or the name of the last node of a fused pattern).
    pub name: String,
    /// The ONNX operator (or pattern) it came from.
    pub onnx_op: String,
    /// What it computes.
    pub op: Op,
    /// Input tensors (indices into [`Graph::tensors`]).
    pub inputs: Vec<usize>,
    /// Output tensor.
    pub output: usize,
}

/// An imported model (see the module invariants).
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Every tensor that flows between nodes.
    pub tensors: Vec<Tensor>,
    /// The nodes, in topological order.
    pub nodes: Vec<Node>,
    /// The graph's single input tensor.
    pub input: usize,
    /// The graph's single output tensor.
    pub output: usize,
}

impl Graph {
    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.tensors[self.input].len()
    }
    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.tensors[self.output].len()
    }
    /// The input's shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.tensors[self.input].shape
    }
    /// The output's shape.
    pub fn output_shape(&self) -> &[usize] {
        &self.tensors[self.output].shape
    }

    /// Checks the module invariants, so that the forward passes cannot index out of bounds on a graph built
    /// by hand (import establishes them; [`crate::onnx::PrivateGraph::new`] and [`Self::forward`] check).
    pub fn validate(&self) -> Result<(), OnnxError> {
        let t = self.tensors.len();
        if self.input >= t || self.output >= t {
            return Err(OnnxError::Graph(
                "the input or output is not a tensor".into(),
            ));
        }
        if self.tensors.iter().any(|x| {
            x.shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_none_or(|n| n > MAX_ELEMENTS)
        }) {
            return Err(OnnxError::Graph("a tensor is too large".into()));
        }
        let mut set = vec![false; t];
        set[self.input] = true;
        for n in &self.nodes {
            let bad = |detail: String| OnnxError::Invalid {
                op: n.onnx_op.clone(),
                node: n.name.clone(),
                detail,
            };
            if n.output >= t || set[n.output] {
                return Err(bad("its output is not a fresh tensor".into()));
            }
            if n.inputs.is_empty() || n.inputs.iter().any(|&i| i >= t || !set[i]) {
                return Err(bad("an input is not computed before the node".into()));
            }
            let lens: Vec<usize> = n.inputs.iter().map(|&i| self.tensors[i].len()).collect();
            let (x, out) = (lens[0], self.tensors[n.output].len());
            let ok = match &n.op {
                Op::Linear {
                    rows,
                    inner,
                    outputs,
                    weight,
                    bias,
                } => {
                    rows.checked_mul(*inner) == Some(x)
                        && rows.checked_mul(*outputs) == Some(out)
                        && inner.checked_mul(*outputs) == Some(weight.len())
                        && bias.len() == *outputs
                }
                Op::Conv(c) => conv_fits(c, x, out),
                Op::Affine { scale, shift } => scale.len() == x && shift.len() == x && out == x,
                Op::Add | Op::Sub | Op::Mul => lens.len() == 2 && lens[1] == x && out == x,
                Op::Relu | Op::LeakyRelu { .. } | Op::Sigmoid | Op::Tanh | Op::Gelu | Op::Erf => {
                    out == x
                }
                Op::Softmax { rows, cols } => rows.checked_mul(*cols) == Some(x) && out == x,
                Op::LayerNorm {
                    rows,
                    cols,
                    gamma,
                    beta,
                    ..
                } => {
                    rows.checked_mul(*cols) == Some(x)
                        && out == x
                        && gamma.len() == *cols
                        && beta.len() == *cols
                }
                Op::MaxPool { pool, batch } => pool
                    .candidate_indices(x, *batch)
                    .is_ok_and(|c| c.iter().all(|w| w.len() == out && w.iter().all(|&i| i < x))),
                Op::MaxPoolPadded { candidates } => {
                    !candidates.is_empty()
                        && candidates
                            .iter()
                            .all(|c| c.len() == out && c.iter().all(|&i| i <= x))
                }
                Op::Mean { windows, divisors } => {
                    windows.len() == out
                        && divisors.len() == out
                        && divisors.iter().all(|&d| d > 0)
                        && windows.iter().flatten().all(|&i| i < x)
                }
                Op::Gather { indices } => {
                    let total: usize = lens.iter().sum();
                    indices.len() == out && indices.iter().all(|&i| i < total)
                }
                Op::MatMul { batch, m, k, n } => {
                    lens.len() == 2
                        && [*batch, *m, *k]
                            .iter()
                            .try_fold(1usize, |a, &d| a.checked_mul(d))
                            == Some(x)
                        && [*batch, *k, *n]
                            .iter()
                            .try_fold(1usize, |a, &d| a.checked_mul(d))
                            == Some(lens[1])
                        && [*batch, *m, *n]
                            .iter()
                            .try_fold(1usize, |a, &d| a.checked_mul(d))
                            == Some(out)
                }
            };
            if !ok {
                return Err(bad(format!(
                    "its sizes do not fit (inputs of {lens:?} elements, output of {out})"
                )));
            }
            set[n.output] = true;
        }
        if set[self.output] {
            Ok(())
        } else {
            Err(OnnxError::Graph("no node writes the output".into()))
        }
    }

    /// The plaintext forward pass in f32 (products accumulated in f64): the reference for the private pass
    /// and for the ONNX model's own outputs.
    pub fn forward(&self, input: &[f32]) -> Result<Vec<f32>, OnnxError> {
        self.validate()?;
        if input.len() != self.input_len() {
            return Err(OnnxError::Input {
                got: input.len(),
                expected: self.input_len(),
            });
        }
        let mut values: Vec<Option<Vec<f32>>> = vec![None; self.tensors.len()];
        values[self.input] = Some(input.to_vec());
        for node in &self.nodes {
            let args: Vec<&[f32]> = node
                .inputs
                .iter()
                .map(|&t| {
                    values[t].as_deref().ok_or_else(|| {
                        OnnxError::Graph(format!("node {:?} reads an unset tensor", node.name))
                    })
                })
                .collect::<Result<_, _>>()?;
            let out = plain_op(&node.op, &args).map_err(|detail| OnnxError::Invalid {
                op: node.onnx_op.clone(),
                node: node.name.clone(),
                detail,
            })?;
            values[node.output] = Some(out);
        }
        values[self.output]
            .take()
            .ok_or_else(|| OnnxError::Graph("no node writes the output".into()))
    }
}

/// Whether a convolution's geometry, weights and bias fit an input of `x` and an output of `out` elements
/// (every im2col index within the input or the padding).
fn conv_fits(c: &Conv, x: usize, out: usize) -> bool {
    let [ic, h, w] = c.input;
    let [oc, oh, ow] = c.output;
    let [kh, kw] = c.kernel;
    let dims = |v: &[usize]| v.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if c.groups == 0
        || ic % c.groups != 0
        || oc % c.groups != 0
        || dims(&[c.batch, ic, h, w]) != Some(x)
        || dims(&[c.batch, oc, oh, ow]) != Some(out)
        || dims(&[oc, ic / c.groups, kh, kw]) != Some(c.weight.len())
        || c.bias.len() != oc
        || kh == 0
        || kw == 0
        || oh == 0
        || ow == 0
    {
        return false;
    }
    // Window positions stay far from overflow (im2col bounds-checks each against the input itself).
    let last = |o: usize, s: usize, k: usize, d: usize, pad: usize| {
        (o - 1)
            .checked_mul(s)
            .and_then(|v| v.checked_add((k - 1).checked_mul(d)?))
            .is_some_and(|end| end < isize::MAX as usize / 2 && pad < isize::MAX as usize / 2)
    };
    last(oh, c.stride[0], kh, c.dilation[0], c.pad[0])
        && last(ow, c.stride[1], kw, c.dilation[1], c.pad[1])
}

fn erf(x: f64) -> f64 {
    // Abramowitz and Stegun 7.1.26 is too coarse for a reference; use the normal CDF the approximations
    // are fitted against.
    2.0 * veil_protocols::approx::fit::normal_cdf(x * std::f64::consts::SQRT_2) - 1.0
}

/// GELU, exact form.
pub fn gelu(x: f64) -> f64 {
    x * veil_protocols::approx::fit::normal_cdf(x)
}

fn binary(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Result<Vec<f32>, String> {
    if a.len() != b.len() {
        return Err(format!("operands of {} and {} elements", a.len(), b.len()));
    }
    Ok(a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect())
}

fn first<'a>(args: &[&'a [f32]]) -> Result<&'a [f32], String> {
    args.first().copied().ok_or_else(|| "no input".to_string())
}

fn second<'a>(args: &[&'a [f32]]) -> Result<&'a [f32], String> {
    args.get(1)
        .copied()
        .ok_or_else(|| "no second input".to_string())
}

/// One op in plaintext.
fn plain_op(op: &Op, args: &[&[f32]]) -> Result<Vec<f32>, String> {
    let map = |f: fn(f64) -> f64| -> Result<Vec<f32>, String> {
        Ok(first(args)?
            .iter()
            .map(|&v| f(f64::from(v)) as f32)
            .collect())
    };
    match op {
        Op::Linear {
            rows,
            inner,
            outputs,
            weight,
            bias,
        } => {
            let x = first(args)?;
            let mut out = vec![0.0f32; rows * outputs];
            for r in 0..*rows {
                for o in 0..*outputs {
                    let mut acc = f64::from(bias[o]);
                    for i in 0..*inner {
                        acc += f64::from(x[r * inner + i]) * f64::from(weight[i * outputs + o]);
                    }
                    out[r * outputs + o] = acc as f32;
                }
            }
            Ok(out)
        }
        Op::Conv(c) => {
            let x = first(args)?;
            let [oc, oh, ow] = c.output;
            let mut out = vec![0.0f32; c.batch * oc * oh * ow];
            let inner = c.input[0] / c.groups * c.kernel[0] * c.kernel[1];
            let ocg = oc / c.groups;
            for n in 0..c.batch {
                for g in 0..c.groups {
                    let cols = c.im2col(n, g, x.len());
                    let w = c.group_weight(g);
                    let dest = c.scatter(n, g);
                    for p in 0..oh * ow {
                        for o in 0..ocg {
                            let mut acc = f64::from(c.bias[g * ocg + o]);
                            for i in 0..inner {
                                let idx = cols[p * inner + i];
                                if idx < x.len() {
                                    acc += f64::from(x[idx]) * f64::from(w[i * ocg + o]);
                                }
                            }
                            out[dest[p * ocg + o]] = acc as f32;
                        }
                    }
                }
            }
            Ok(out)
        }
        Op::Affine { scale, shift } => {
            let x = first(args)?;
            Ok(x.iter()
                .zip(scale.iter().zip(shift))
                .map(|(v, (s, b))| v * s + b)
                .collect())
        }
        Op::Add => binary(first(args)?, second(args)?, |a, b| a + b),
        Op::Sub => binary(first(args)?, second(args)?, |a, b| a - b),
        Op::Mul => binary(first(args)?, second(args)?, |a, b| a * b),
        Op::Relu => map(|v| v.max(0.0)),
        Op::LeakyRelu { alpha } => Ok(first(args)?
            .iter()
            .map(|&v| if v >= 0.0 { v } else { alpha * v })
            .collect()),
        Op::Sigmoid => map(|v| 1.0 / (1.0 + (-v).exp())),
        Op::Tanh => map(f64::tanh),
        Op::Gelu => map(gelu),
        Op::Erf => map(erf),
        Op::Softmax { rows, cols } => {
            let x = first(args)?;
            let mut out = Vec::with_capacity(x.len());
            for r in 0..*rows {
                let row = &x[r * cols..(r + 1) * cols];
                let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                let e: Vec<f64> = row.iter().map(|v| f64::from(v - max).exp()).collect();
                let s: f64 = e.iter().sum();
                out.extend(e.iter().map(|v| (v / s) as f32));
            }
            Ok(out)
        }
        Op::LayerNorm {
            rows,
            cols,
            gamma,
            beta,
            epsilon,
        } => {
            let x = first(args)?;
            let mut out = Vec::with_capacity(x.len());
            for r in 0..*rows {
                let row = &x[r * cols..(r + 1) * cols];
                let mean = row.iter().map(|v| f64::from(*v)).sum::<f64>() / *cols as f64;
                let var = row
                    .iter()
                    .map(|v| (f64::from(*v) - mean).powi(2))
                    .sum::<f64>()
                    / *cols as f64;
                let inv = 1.0 / (var + f64::from(*epsilon)).sqrt();
                out.extend(row.iter().enumerate().map(|(j, v)| {
                    ((f64::from(*v) - mean) * inv * f64::from(gamma[j]) + f64::from(beta[j])) as f32
                }));
            }
            Ok(out)
        }
        Op::MaxPool { pool, batch } => {
            let x = first(args)?;
            let candidates = pool
                .candidate_indices(x.len(), *batch)
                .map_err(|e| e.to_string())?;
            let width = candidates.first().map_or(0, Vec::len);
            Ok((0..width)
                .map(|i| {
                    candidates
                        .iter()
                        .map(|c| x[c[i]])
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect())
        }
        Op::MaxPoolPadded { candidates } => {
            let x = first(args)?;
            let width = candidates.first().map_or(0, Vec::len);
            Ok((0..width)
                .map(|i| {
                    candidates
                        .iter()
                        .filter_map(|c| x.get(c[i]).copied())
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect())
        }
        Op::Mean { windows, divisors } => {
            let x = first(args)?;
            Ok(windows
                .iter()
                .zip(divisors)
                .map(|(w, d)| (w.iter().map(|&i| f64::from(x[i])).sum::<f64>() / *d as f64) as f32)
                .collect())
        }
        Op::Gather { indices } => {
            let all: Vec<f32> = args.iter().flat_map(|a| a.iter().copied()).collect();
            indices
                .iter()
                .map(|&i| all.get(i).copied().ok_or_else(|| format!("index {i}")))
                .collect()
        }
        Op::MatMul { batch, m, k, n } => {
            let (a, b) = (first(args)?, second(args)?);
            let mut out = vec![0.0f32; batch * m * n];
            for t in 0..*batch {
                for i in 0..*m {
                    for j in 0..*n {
                        let mut acc = 0.0f64;
                        for l in 0..*k {
                            acc += f64::from(a[(t * m + i) * k + l])
                                * f64::from(b[(t * k + l) * n + j]);
                        }
                        out[(t * m + i) * n + j] = acc as f32;
                    }
                }
            }
            Ok(out)
        }
    }
}
