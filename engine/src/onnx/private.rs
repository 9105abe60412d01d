//! An imported graph on secret shares: one forward pass written once over
//! [`veil_protocols::ops::MpcOps`] (and the approximations of [`veil_protocols::approx`]), so it runs
//! under `semi2k`, `spdz2k` and `rep3`, and the exact list of dealer material it consumes.
//!
//! The weights are public to the parties (fixed point with `f` fractional bits, biases at `2f`); the input
//! and every activation are secret. What each op becomes:
//!
//! | op | on shares | rounds | material (`semi2k`/`spdz2k`) |
//! | --- | --- | --- | --- |
//! | Linear, Conv | local product by the public weight (im2col gather for Conv, per group), bias at `2f`, one truncation | 1 | `Trunc` of the output |
//! | Affine (Add/Sub/Mul/Div by constants, unfolded BatchNorm) | local; one truncation unless it only adds | 0 or 1 | `Trunc` |
//! | Add, Sub of activations; layout ops (Reshape, Transpose, Slice, Concat, Split, ...) | local | 0 | none |
//! | Mul of activations | Beaver product, truncation | 2 | `Triples`, `Trunc` |
//! | MatMul of activations | one matrix triple per batch item, all in one round, truncation | 2 | `MatTriple` each, `Trunc` |
//! | Relu | sign test | 7 | `Sign` |
//! | LeakyRelu | sign test, `alpha x + (1 - alpha) relu(x)`, truncation | 8 | `Sign`, `Trunc` |
//! | MaxPool (padding: [`super::graph::PADDING`] in the padded positions) | tournament of sign tests | 7 per level | `Sign` per level |
//! | AveragePool, GlobalAveragePool, ReduceMean | local window sums, public `1/size`, truncation | 1 | `Trunc` |
//! | Sigmoid, Tanh, GELU | piecewise polynomials ([`veil_protocols::approx::piecewise`]) | see there | its `requests` |
//! | Softmax | row max, one-piece exp, Newton reciprocal ([`veil_protocols::approx::rows`]) | see there | its `requests` |
//! | LayerNorm | Newton rsqrt ([`veil_protocols::approx::rows`]), public gain and bias, truncation | see there | its `requests`, `Trunc` |
//!
//! Invariant: [`PrivateGraph::requests`] lists exactly the dealer material [`PrivateGraph::forward`]
//! consumes, in order (the material reader rejects any drift; the tests run both protocols that use it).

use std::time::Instant;

use veil_protocols::approx::functions::{gelu, gelu_exact};
use veil_protocols::approx::rows::{layer_norm_requests, softmax_fast_requests};
use veil_protocols::approx::{
    ExpNeg, LayerNormConfig, Linear, NewtonConfig, Piecewise, PiecewiseConfig, Segment,
    SoftmaxFastConfig,
};
use veil_protocols::material::Request;
use veil_protocols::ops::prelude::*;
use veil_protocols::ring::FixedPoint;
use veil_protocols::semi2k::requests;

use super::error::OnnxError;
use super::graph::{Graph, Op};
use crate::error::{EngineError, Result};
use crate::private::StepProfile;

/// The approximations' knobs of a private graph.
#[derive(Debug, Clone)]
pub struct PrivateConfig {
    /// Fixed-point encoding of every shared value and public weight.
    pub fixed_point: FixedPoint,
    /// GELU: the piecewise polynomial of [`veil_protocols::approx::functions::gelu`] (error 1.3e-4 fitted,
    /// 4e-4 on shares).
    pub gelu: Piecewise,
    /// Sigmoid: 0 below -8, 1 above 8, degree 6 on four segments between (see [`sigmoid_config`]).
    pub sigmoid: Piecewise,
    /// Tanh: -1 below -4, 1 above 4, degree 6 on four segments between (see [`tanh_config`]).
    pub tanh: Piecewise,
    /// Softmax (one-piece exp on `[-8, 0]`, 3 Newton iterations).
    pub softmax: SoftmaxFastConfig,
    /// LayerNorm's reciprocal square root (variances in `[2^-14, 2^14)`, 3 iterations); epsilon is each
    /// node's own.
    pub layer_norm: NewtonConfig,
}

/// Sigmoid's default piecewise configuration: `|sigmoid(x) - p(x)| < 3.4e-4` everywhere (the tails:
/// `sigmoid(-8) = 3.4e-4`), tested in this module.
pub fn sigmoid_config() -> PiecewiseConfig {
    let seg = |start, end| Segment {
        start,
        end,
        degree: 6,
    };
    PiecewiseConfig {
        low: Linear {
            constant: 0.0,
            slope: 0.0,
        },
        segments: vec![
            seg(-8.0, -4.0),
            seg(-4.0, 0.0),
            seg(0.0, 4.0),
            seg(4.0, 8.0),
        ],
        high: Linear {
            constant: 1.0,
            slope: 0.0,
        },
        fit_nodes: 256,
    }
}

/// Tanh's default piecewise configuration: `|tanh(x) - p(x)| < 6.8e-4` everywhere (the tails:
/// `1 - tanh(4) = 6.7e-4`), tested in this module.
pub fn tanh_config() -> PiecewiseConfig {
    let seg = |start, end| Segment {
        start,
        end,
        degree: 6,
    };
    PiecewiseConfig {
        low: Linear {
            constant: -1.0,
            slope: 0.0,
        },
        segments: vec![
            seg(-4.0, -2.0),
            seg(-2.0, 0.0),
            seg(0.0, 2.0),
            seg(2.0, 4.0),
        ],
        high: Linear {
            constant: 1.0,
            slope: 0.0,
        },
        fit_nodes: 256,
    }
}

fn sigmoid_exact(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl PrivateConfig {
    /// The defaults (see each field).
    pub fn new(fixed_point: FixedPoint) -> Result<Self> {
        Ok(Self {
            fixed_point,
            gelu: gelu()?,
            sigmoid: Piecewise::fit(sigmoid_config(), sigmoid_exact)?,
            tanh: Piecewise::fit(tanh_config(), f64::tanh)?,
            softmax: SoftmaxFastConfig {
                exp: ExpNeg::default_fit()?,
                iterations: 3,
            },
            layer_norm: NewtonConfig {
                lo: -14,
                hi: 14,
                iterations: 3,
            },
        })
    }
}

/// A graph prepared for private inference (public fixed-point weights, the approximations).
#[derive(Debug, Clone)]
pub struct PrivateGraph {
    graph: Graph,
    config: PrivateConfig,
    /// Per node, its public constants encoded and its index maps built once (see [`Prepared`]).
    prepared: Vec<Prepared>,
    /// Per tensor, the last node that reads it (`usize::MAX` for the output and unread tensors).
    last_use: Vec<usize>,
}

/// A convolution's index maps and encoded weights.
#[derive(Debug, Clone)]
struct PreparedConv {
    /// Per batch item and group (item-major): the im2col indices, the zero at the input's length.
    cols: Vec<Vec<usize>>,
    /// Per group: the `[inner, out_c / groups]` weight, `f` fractional bits.
    weights: Vec<Vec<u64>>,
    /// Output element `i` is element `inverse[i]` of the groups' products concatenated.
    inverse: Vec<usize>,
    /// The bias at `2f`, per output element.
    bias: Vec<u64>,
}

/// A node's public constants in fixed point, built once by [`PrivateGraph::new`].
#[derive(Debug, Clone)]
enum Prepared {
    /// Nothing to prepare.
    None,
    /// Weight at `f`, bias tiled over the rows at `2f`.
    Linear {
        weight: Vec<u64>,
        bias: Vec<u64>,
    },
    Conv(Box<PreparedConv>),
    /// `scale` at `f` with `shift` at `2f`; or no scale (it only adds) with `shift` at `f`.
    Affine {
        scale: Option<Vec<u64>>,
        shift: Vec<u64>,
    },
    /// `1 - alpha` and `alpha` at `f`, per element.
    LeakyRelu {
        keep: Vec<u64>,
        slope: Vec<u64>,
    },
    /// Gain at `f` and bias at `2f`, per element.
    LayerNorm {
        gamma: Vec<u64>,
        beta: Vec<u64>,
    },
    /// `columns[j][i]`: the `j`-th element of output `i`'s window (the zero past the input); `1/size` at `f`
    /// unless every window has size 1.
    Mean {
        columns: Vec<Vec<usize>>,
        inverse: Option<Vec<u64>>,
    },
}

fn prepare(op: &Op, input_len: usize, len: usize, f: u32) -> Prepared {
    match op {
        Op::Linear {
            rows,
            outputs,
            weight,
            bias,
            ..
        } => Prepared::Linear {
            weight: encode(weight, f),
            bias: (0..rows * outputs)
                .map(|i| enc(bias[i % outputs], 2 * f))
                .collect(),
        },
        Op::Conv(c) => {
            let [oc, oh, ow] = c.output;
            let mut cols = Vec::new();
            let mut dest = Vec::new();
            for n in 0..c.batch {
                for g in 0..c.groups {
                    cols.push(c.im2col(n, g, input_len));
                    dest.extend(c.scatter(n, g));
                }
            }
            let mut inverse = vec![0; dest.len()];
            for (k, d) in dest.iter().enumerate() {
                inverse[*d] = k;
            }
            Prepared::Conv(Box::new(PreparedConv {
                cols,
                weights: (0..c.groups)
                    .map(|g| encode(&c.group_weight(g), f))
                    .collect(),
                inverse,
                bias: (0..len)
                    .map(|i| enc(c.bias[(i / (oh * ow)) % oc], 2 * f))
                    .collect(),
            }))
        }
        Op::Affine { scale, shift } => {
            if only_adds(scale) {
                Prepared::Affine {
                    scale: None,
                    shift: encode(shift, f),
                }
            } else {
                Prepared::Affine {
                    scale: Some(encode(scale, f)),
                    shift: encode(shift, 2 * f),
                }
            }
        }
        Op::LeakyRelu { alpha } => Prepared::LeakyRelu {
            keep: vec![enc(1.0 - alpha, f); len],
            slope: vec![enc(*alpha, f); len],
        },
        Op::LayerNorm {
            cols, gamma, beta, ..
        } => Prepared::LayerNorm {
            gamma: (0..len).map(|i| enc(gamma[i % cols], f)).collect(),
            beta: (0..len).map(|i| enc(beta[i % cols], 2 * f)).collect(),
        },
        Op::Mean { windows, divisors } => {
            let width = windows.iter().map(Vec::len).max().unwrap_or(0);
            Prepared::Mean {
                columns: (0..width)
                    .map(|j| {
                        windows
                            .iter()
                            .map(|w| w.get(j).copied().unwrap_or(input_len))
                            .collect()
                    })
                    .collect(),
                inverse: (!divisors.iter().all(|d| *d == 1))
                    .then(|| divisors.iter().map(|d| enc(1.0 / *d as f32, f)).collect()),
            }
        }
        _ => Prepared::None,
    }
}

fn enc(v: f32, bits: u32) -> u64 {
    (f64::from(v) * f64::from(bits).exp2()).round() as i64 as u64
}

fn encode(v: &[f32], bits: u32) -> Vec<u64> {
    v.iter().map(|x| enc(*x, bits)).collect()
}

/// Whether every element of an affine scale is exactly 1 (then the affine map only adds).
fn only_adds(scale: &[f32]) -> bool {
    scale.iter().all(|s| *s == 1.0)
}

fn conv_requests(op: &Op) -> usize {
    match op {
        Op::Conv(c) => c.batch * c.output.iter().product::<usize>(),
        _ => 0,
    }
}

impl PrivateGraph {
    /// Prepares `graph` under `config`. Refuses a weight that does not fit the fixed-point range.
    pub fn new(graph: Graph, config: PrivateConfig) -> Result<Self> {
        graph.validate()?;
        let limit = config.fixed_point.input_limit() as f32;
        let too_big = |v: &[f32]| v.iter().any(|x| !x.is_finite() || x.abs() >= limit);
        for n in &graph.nodes {
            let bad = match &n.op {
                Op::Linear { weight, bias, .. } => too_big(weight) || too_big(bias),
                Op::Conv(c) => too_big(&c.weight) || too_big(&c.bias),
                Op::Affine { scale, shift } => too_big(scale) || too_big(shift),
                Op::LayerNorm { gamma, beta, .. } => too_big(gamma) || too_big(beta),
                _ => false,
            };
            if bad {
                return Err(EngineError::Onnx(OnnxError::Invalid {
                    op: n.onnx_op.clone(),
                    node: n.name.clone(),
                    detail: format!(
                        "a weight is not finite or beyond the fixed-point range {limit}"
                    ),
                }));
            }
        }
        let f = config.fixed_point.frac_bits();
        let prepared = graph
            .nodes
            .iter()
            .map(|n| {
                let input_len = n.inputs.first().map_or(0, |&t| graph.tensors[t].len());
                prepare(&n.op, input_len, graph.tensors[n.output].len(), f)
            })
            .collect();
        let mut last_use = vec![usize::MAX; graph.tensors.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            for &t in &n.inputs {
                last_use[t] = i;
            }
        }
        last_use[graph.output] = usize::MAX;
        Ok(Self {
            graph,
            config,
            prepared,
            last_use,
        })
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The configuration.
    pub fn config(&self) -> &PrivateConfig {
        &self.config
    }

    /// The dealer material one node consumes, in order.
    pub fn node_requests(&self, op: &Op, len: usize) -> Vec<Request> {
        let f = self.config.fixed_point.frac_bits();
        match op {
            Op::Linear { rows, outputs, .. } => requests::trunc(rows * outputs, f),
            Op::Conv(_) => requests::trunc(conv_requests(op), f),
            Op::Affine { scale, .. } => {
                if only_adds(scale) {
                    Vec::new()
                } else {
                    requests::trunc(len, f)
                }
            }
            Op::Add | Op::Sub | Op::Gather { .. } => Vec::new(),
            Op::Mul => [requests::mul(len), requests::trunc(len, f)].concat(),
            Op::Relu => requests::relu(len),
            Op::LeakyRelu { .. } => [requests::relu(len), requests::trunc(len, f)].concat(),
            Op::Sigmoid => self.config.sigmoid.requests(len, f),
            Op::Tanh => self.config.tanh.requests(len, f),
            Op::Gelu | Op::Erf => self.config.gelu.requests(len, f),
            Op::Softmax { rows, cols } => {
                softmax_fast_requests(&self.config.softmax, *rows, *cols, f)
            }
            Op::LayerNorm {
                rows,
                cols,
                epsilon,
                ..
            } => {
                let mut out = layer_norm_requests(&self.layer_norm(*epsilon), *rows, *cols, f);
                out.extend(requests::trunc(len, f));
                out
            }
            Op::MaxPool { pool, batch } => requests::max_pool2d(pool, *batch),
            Op::MaxPoolPadded { candidates } => {
                let mut out = Vec::new();
                let mut c = candidates.len();
                while c > 1 {
                    out.extend(requests::relu(c / 2 * len));
                    c = c / 2 + c % 2;
                }
                out
            }
            Op::Mean { divisors, .. } => {
                if divisors.iter().all(|d| *d == 1) {
                    Vec::new()
                } else {
                    requests::trunc(len, f)
                }
            }
            Op::MatMul { batch, m, k, n } => {
                let mut out: Vec<Request> = (0..*batch)
                    .flat_map(|_| requests::matmul(*m, *k, *n))
                    .collect();
                out.extend(requests::trunc(batch * m * n, f));
                out
            }
        }
    }

    fn layer_norm(&self, epsilon: f32) -> LayerNormConfig {
        LayerNormConfig {
            epsilon: f64::from(epsilon),
            rsqrt: self.config.layer_norm,
        }
    }

    /// The dealer material of one private inference, in the order [`Self::forward`] consumes it. `items`
    /// must be 1 (the graph's shapes are fixed at export); any other count has no material.
    pub fn requests(&self, items: usize) -> Vec<Request> {
        if items != 1 {
            return Vec::new();
        }
        self.graph
            .nodes
            .iter()
            .flat_map(|n| self.node_requests(&n.op, self.graph.tensors[n.output].len()))
            .collect()
    }

    /// The client's part: the input encoded in fixed point.
    pub fn client_input(&self, input: &[f32]) -> Result<Vec<u64>> {
        if input.len() != self.graph.input_len() {
            return Err(EngineError::Onnx(OnnxError::Input {
                got: input.len(),
                expected: self.graph.input_len(),
            }));
        }
        Ok(self.config.fixed_point.encode(input)?)
    }

    /// One party's side: from its share of the input (`f` fractional bits) to its share of the output.
    /// `items` must be 1. `profile`, if given, receives one entry per node, labelled `NAME/KIND`.
    pub fn forward<P: Approximations>(
        &self,
        party: &mut P,
        input: P::Share,
        items: usize,
        mut profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<P::Share> {
        let expected = self.graph.input_len();
        if items != 1 || P::len(&input) != expected {
            return Err(EngineError::InputShape {
                got: P::len(&input),
                expected,
                batch: items,
                item: self.graph.input_shape().to_vec(),
            });
        }
        let mut values: Vec<Option<P::Share>> = vec![None; self.graph.tensors.len()];
        values[self.graph.input] = Some(input);
        let mut step = Step::new(party);
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let args: Vec<&P::Share> = node
                .inputs
                .iter()
                .map(|&t| {
                    values[t].as_ref().ok_or_else(|| {
                        EngineError::Onnx(OnnxError::Graph(format!(
                            "node {:?} reads an unset tensor",
                            node.name
                        )))
                    })
                })
                .collect::<Result<_>>()?;
            let len = self.graph.tensors[node.output].len();
            let x = args[0];
            let out = match (&node.op, &self.prepared[i]) {
                (
                    Op::Linear {
                        rows,
                        inner,
                        outputs,
                        ..
                    },
                    Prepared::Linear { weight, bias },
                ) => party.linear_trunc([*rows, *inner, *outputs], x, weight, bias, None)?,
                (Op::Conv(c), Prepared::Conv(pc)) => {
                    let xz = P::concat(&[x.clone(), party.share_public(&[0])]);
                    let [oc, oh, ow] = c.output;
                    let ocg = oc / c.groups;
                    let inner = c.input[0] / c.groups * c.kernel[0] * c.kernel[1];
                    let pieces: Vec<P::Share> = pc
                        .cols
                        .iter()
                        .enumerate()
                        .map(|(k, cols)| {
                            let w = &pc.weights[k % c.groups];
                            P::gemm_right(
                                party.gemm(),
                                [oh * ow, inner, ocg],
                                &P::gather(&xz, cols),
                                w,
                            )
                        })
                        .collect();
                    let mut z = P::gather(&P::concat(&pieces), &pc.inverse);
                    party.add_public(&mut z, &pc.bias);
                    party.trunc(&z)?
                }
                (Op::Affine { .. }, Prepared::Affine { scale, shift }) => match scale {
                    None => {
                        let mut y = x.clone();
                        party.add_public(&mut y, shift);
                        y
                    }
                    Some(scale) => {
                        let mut y = P::mul_public(x, scale);
                        party.add_public(&mut y, shift);
                        party.trunc(&y)?
                    }
                },
                (Op::Add, _) => P::add(x, args[1]),
                (Op::Sub, _) => P::sub(x, args[1]),
                (Op::Mul, _) => party.mul_fixed(x, args[1])?,
                (Op::Relu, _) => party.relu(x)?,
                (Op::LeakyRelu { .. }, Prepared::LeakyRelu { keep, slope }) => {
                    // alpha x + (1 - alpha) relu(x), both at 2f, one truncation.
                    let r = party.relu(x)?;
                    let mut y = P::mul_public(&r, keep);
                    P::add_assign(&mut y, &P::mul_public(x, slope));
                    party.trunc(&y)?
                }
                (Op::Sigmoid, _) => party.piecewise(x, &self.config.sigmoid)?,
                (Op::Tanh, _) => party.piecewise(x, &self.config.tanh)?,
                (Op::Gelu | Op::Erf, _) => party.piecewise(x, &self.config.gelu)?,
                (Op::Softmax { rows, cols }, _) => {
                    party.softmax_fast(x, *rows, *cols, &self.config.softmax)?
                }
                (
                    Op::LayerNorm {
                        rows,
                        cols,
                        epsilon,
                        ..
                    },
                    Prepared::LayerNorm { gamma, beta },
                ) => {
                    let n = party.layer_norm(x, *rows, *cols, &self.layer_norm(*epsilon))?;
                    let mut y = P::mul_public(&n, gamma);
                    party.add_public(&mut y, beta);
                    party.trunc(&y)?
                }
                (Op::MaxPool { pool, batch }, _) => party.max_pool2d(x, *batch, pool)?,
                (Op::MaxPoolPadded { candidates }, _) => {
                    let padding = enc(super::graph::PADDING, self.config.fixed_point.frac_bits());
                    let xz = P::concat(&[x.clone(), party.share_public(&[padding])]);
                    let mut level: Vec<P::Share> =
                        candidates.iter().map(|c| P::gather(&xz, c)).collect();
                    // A tournament: one sign test per level over every pair (as MpcOps::max_pool2d).
                    while level.len() > 1 {
                        let pairs = level.len() / 2;
                        let diff = P::concat(
                            &(0..pairs)
                                .map(|j| P::sub(&level[2 * j], &level[2 * j + 1]))
                                .collect::<Vec<_>>(),
                        );
                        let selected = party.relu(&diff)?;
                        let mut next: Vec<P::Share> = (0..pairs)
                            .map(|j| {
                                P::add(
                                    &P::slice(&selected, j * len..(j + 1) * len),
                                    &level[2 * j + 1],
                                )
                            })
                            .collect();
                        if level.len() % 2 == 1 {
                            next.extend(level.pop());
                        }
                        level = next;
                    }
                    level.pop().unwrap_or_default()
                }
                (Op::Mean { .. }, Prepared::Mean { columns, inverse }) => {
                    let xz = P::concat(&[x.clone(), party.share_public(&[0])]);
                    let mut sum = party.share_public(&vec![0; len]);
                    for idx in columns {
                        P::add_assign(&mut sum, &P::gather(&xz, idx));
                    }
                    match inverse {
                        None => sum,
                        Some(inv) => party.trunc(&P::mul_public(&sum, inv))?,
                    }
                }
                (Op::Gather { indices }, _) => {
                    if args.len() == 1 {
                        P::gather(x, indices)
                    } else {
                        let all: Vec<P::Share> = args.iter().map(|a| (*a).clone()).collect();
                        P::gather(&P::concat(&all), indices)
                    }
                }
                (Op::MatMul { batch, m, k, n }, _) => {
                    let (a, b) = (x, args[1]);
                    let lefts: Vec<P::Share> = (0..*batch)
                        .map(|t| P::slice(a, t * m * k..(t + 1) * m * k))
                        .collect();
                    let rights: Vec<P::Share> = (0..*batch)
                        .map(|t| P::slice(b, t * k * n..(t + 1) * k * n))
                        .collect();
                    let pairs: Vec<(&P::Share, &P::Share)> = lefts.iter().zip(&rights).collect();
                    let prods = party.matmuls(&pairs, &vec![[*m, *k, *n]; *batch])?;
                    party.trunc(&P::concat(&prods))?
                }
                _ => {
                    return Err(EngineError::Onnx(OnnxError::Graph(format!(
                        "node {:?} was not prepared for its op",
                        node.name
                    ))))
                }
            };
            if P::len(&out) != len {
                return Err(EngineError::Onnx(OnnxError::Invalid {
                    op: node.onnx_op.clone(),
                    node: node.name.clone(),
                    detail: format!("computed {} values for {len}", P::len(&out)),
                }));
            }
            values[node.output] = Some(out);
            // Activations nothing reads any more are dropped (memory of a deep graph).
            for &t in &node.inputs {
                if self.last_use[t] == i {
                    values[t] = None;
                }
            }
            step.done(
                party,
                &mut profile,
                &format!("{}/{}", node.name, node.op.kind()),
            );
        }
        values[self.graph.output]
            .take()
            .ok_or_else(|| EngineError::Onnx(OnnxError::Graph("no node writes the output".into())))
    }
}

/// Per-step accounting: time, traffic and material since the last step.
struct Step {
    started: Instant,
    net: veil_protocols::net::NetStats,
    material: veil_protocols::material::MaterialUse,
}

impl Step {
    fn new<P: MpcOps>(party: &P) -> Self {
        Self {
            started: Instant::now(),
            net: party.stats().clone(),
            material: party.material_use(),
        }
    }

    fn done<P: MpcOps>(
        &mut self,
        party: &P,
        profile: &mut Option<&mut Vec<StepProfile>>,
        label: &str,
    ) {
        if let Some(p) = profile.as_deref_mut() {
            p.push(StepProfile {
                label: label.to_string(),
                elapsed: self.started.elapsed(),
                net: party.stats().since(&self.net),
                material: party.material_use().since(&self.material),
            });
        }
        *self = Self::new(party);
    }
}

/// The largest error of each default approximation against its function over a range (plain, fitted):
/// the bounds the module doc and the models README state.
pub fn approximation_errors(config: &PrivateConfig) -> [(&'static str, f64); 3] {
    let sup = |p: &Piecewise, f: fn(f64) -> f64, lo: f64, hi: f64| {
        (0..=20_000)
            .map(|i| lo + (hi - lo) * f64::from(i) / 20_000.0)
            .map(|x| (p.eval_plain(x) - f(x)).abs())
            .fold(0.0, f64::max)
    };
    [
        ("gelu", sup(&config.gelu, gelu_exact, -20.0, 20.0)),
        ("sigmoid", sup(&config.sigmoid, sigmoid_exact, -20.0, 20.0)),
        ("tanh", sup(&config.tanh, f64::tanh, -20.0, 20.0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_approximations_are_within_their_stated_bounds() {
        let c = PrivateConfig::new(FixedPoint::default()).unwrap();
        let [(_, gelu), (_, sigmoid), (_, tanh)] = approximation_errors(&c);
        assert!(gelu < 1.4e-4, "gelu {gelu}");
        assert!(sigmoid < 3.4e-4, "sigmoid {sigmoid}");
        assert!(tanh < 6.8e-4, "tanh {tanh}");
        // Real approximations: the tails dominate.
        assert!(sigmoid > 3.0e-4 && tanh > 6.0e-4);
    }
}
