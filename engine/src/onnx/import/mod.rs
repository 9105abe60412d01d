//! ONNX bytes -> [`Graph`]: parse with `onnx-ir`, bound what the file says, map each operator to an
//! [`Op`] with static shapes, fold constants and shape-only subgraphs, fold BatchNormalization (and any
//! per-channel constant affine map) into the Conv or Linear before it, and recognise GELU written with Erf.
//!
//! Every error names the operator and the node ([`OnnxError::Unsupported`], [`OnnxError::Invalid`]);
//! nothing read from the file can make the importer panic (the parser itself runs under `catch_unwind` as a
//! last line of defence) or allocate more than the stated limits.

use std::collections::HashMap;
use std::path::Path;

use onnx_ir::node::padding::{AutoPad, PaddingConfig2d};
use onnx_ir::{ArgType, Argument};
use veil_protocols::semi2k::Pool2d;

use crate::onnx::error::OnnxError;
use crate::onnx::graph::{Conv, Graph, Node, Op, Tensor, MAX_ELEMENTS};
use crate::onnx::passes;

mod layout;

/// Largest ONNX file read (bytes).
pub const MAX_FILE_BYTES: usize = 256 << 20;
/// Most nodes in a graph.
pub const MAX_NODES: usize = 4096;
/// Highest tensor rank.
pub const MAX_RANK: usize = 8;
/// Most weight elements over the whole graph.
pub const MAX_TOTAL_WEIGHTS: usize = 1 << 26;

/// Whether `bytes` start like an ONNX `ModelProto`: field 1 (`ir_version`, a varint between 3 and 15), then
/// the key of one of the fields that follow it in ONNX writers (producer name or version, domain, model
/// version, doc string, graph, opset import). How model files are told apart by content: a safetensors file
/// starts with its little-endian header length (byte 2 is 0 below 64 KiB), a burnpack with its magic. A hint
/// only; [`import`] decides.
pub fn looks_like_onnx(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [
            0x08,
            3..=15,
            0x12 | 0x1a | 0x22 | 0x28 | 0x32 | 0x3a | 0x42,
            ..
        ]
    )
}

/// Whether the file at `path` starts like an ONNX model (see [`looks_like_onnx`]); `false` if it cannot be
/// read or is a directory.
pub fn looks_like_onnx_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 3];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
        && looks_like_onnx(&head)
}

/// Reads and imports an ONNX file (refused before reading if larger than [`MAX_FILE_BYTES`]).
pub fn import_file(path: &Path) -> Result<Graph, OnnxError> {
    let size = std::fs::metadata(path)
        .map_err(|e| OnnxError::Parse(format!("{}: {e}", path.display())))?
        .len();
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > MAX_FILE_BYTES {
        return Err(OnnxError::TooLarge {
            bytes: size,
            limit: MAX_FILE_BYTES,
        });
    }
    // The parser reads the file itself so that weights stored beside it (external data, as the
    // `torch.onnx` dynamo exporter writes `model.onnx.data`) are found; it refuses absolute paths and `..`.
    let parsed = std::panic::catch_unwind(|| onnx_ir::OnnxGraphBuilder::new().parse_file(path))
        .map_err(|_| OnnxError::Parse("the ONNX parser failed on this file".into()))?
        .map_err(|e| OnnxError::Parse(e.to_string()))?;
    convert(&parsed)
}

/// Imports an ONNX model from its bytes (see the module doc). Weights in external data files need
/// [`import_file`].
pub fn import(bytes: &[u8]) -> Result<Graph, OnnxError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(OnnxError::TooLarge {
            bytes: bytes.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let parsed = std::panic::catch_unwind(|| onnx_ir::OnnxGraphBuilder::new().parse_bytes(bytes))
        .map_err(|_| OnnxError::Parse("the ONNX parser failed on this file".into()))?
        .map_err(|e| OnnxError::Parse(e.to_string()))?;
    convert(&parsed)
}

/// The parsed graph as veil's [`Graph`] (see the module doc).
fn convert(parsed: &onnx_ir::OnnxGraph) -> Result<Graph, OnnxError> {
    if parsed.nodes.len() > MAX_NODES {
        return Err(OnnxError::Limit {
            what: "the node count",
            got: parsed.nodes.len(),
            limit: MAX_NODES,
        });
    }
    let mut b = Builder::default();
    let inputs: Vec<&Argument> = parsed
        .inputs
        .iter()
        .filter(|a| !a.is_constant() && !a.is_static())
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(OnnxError::Graph(format!(
            "veil runs graphs of one input, this one has {}",
            inputs.len()
        )));
    };
    let shape = static_shape(input).ok_or_else(|| {
        OnnxError::Graph(format!(
            "input {:?} has no static shape (export with fixed input dimensions)",
            input.name
        ))
    })?;
    let input_id = b.tensor(&input.name, shape)?;
    for node in &parsed.nodes {
        b.node(node)?;
    }
    let [output] = parsed.outputs.as_slice() else {
        return Err(OnnxError::Graph(format!(
            "veil runs graphs of one output, this one has {}",
            parsed.outputs.len()
        )));
    };
    let output_id = *b.ids.get(&output.name).ok_or_else(|| {
        OnnxError::Graph(format!(
            "output {:?} is not computed from the input",
            output.name
        ))
    })?;
    let mut graph = Graph {
        tensors: b.tensors,
        nodes: b.nodes,
        input: input_id,
        output: output_id,
    };
    passes::fold_affines(&mut graph);
    passes::fuse_gelu(&mut graph);
    passes::prune(&mut graph);
    graph.validate()?;
    if let Some(n) = graph.nodes.iter().find(|n| n.op == Op::Erf) {
        return Err(OnnxError::Unsupported {
            op: "Erf".into(),
            node: n.name.clone(),
            detail: "Erf is supported only inside GELU (x * 0.5 * (1 + erf(x / sqrt 2)))".into(),
        });
    }
    Ok(graph)
}

/// The graph input's shape; a dynamic first (batch) dimension is fixed to 1, as veil runs one input of the
/// exported shape per inference. Any other dynamic dimension leaves the shape unknown.
fn static_shape(a: &Argument) -> Option<Vec<usize>> {
    match &a.ty {
        ArgType::Tensor(t) => {
            let dims = t.static_shape.as_ref()?;
            dims.iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Some(d) => Some(*d),
                    None if i == 0 => Some(1),
                    None => None,
                })
                .collect()
        }
        ArgType::ScalarTensor(_) | ArgType::ScalarNative(_) => Some(Vec::new()),
        ArgType::Shape(_) => None,
    }
}

/// A constant (initialiser, Constant node or folded subgraph), as f32.
#[derive(Debug, Clone)]
struct Const {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// An input of a node: computed from the graph input, or constant.
enum Arg {
    Act(usize),
    Const(Const),
}

#[derive(Default)]
struct Builder {
    tensors: Vec<Tensor>,
    ids: HashMap<String, usize>,
    consts: HashMap<String, Const>,
    nodes: Vec<Node>,
    weights: usize,
}

/// Element count of `shape`, refusing ranks above [`MAX_RANK`], zero-sized dimensions and counts above
/// [`MAX_ELEMENTS`] (so every later division by a dimension is safe).
fn count(shape: &[usize]) -> Result<usize, OnnxError> {
    if shape.contains(&0) {
        return Err(OnnxError::Graph(format!(
            "a tensor of shape {shape:?} has a zero-sized dimension"
        )));
    }
    if shape.len() > MAX_RANK {
        return Err(OnnxError::Limit {
            what: "a tensor's rank",
            got: shape.len(),
            limit: MAX_RANK,
        });
    }
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX);
    if n > MAX_ELEMENTS {
        return Err(OnnxError::Limit {
            what: "a tensor's element count",
            got: n,
            limit: MAX_ELEMENTS,
        });
    }
    Ok(n)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Resolves a possibly negative axis against `rank`.
fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

/// `data` (of `from`) broadcast numpy-style to `to`.
fn broadcast(data: &[f32], from: &[usize], to: &[usize]) -> Option<Vec<f32>> {
    if from.len() > to.len() {
        return None;
    }
    let pad = to.len() - from.len();
    let full: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(from.iter().copied())
        .collect();
    if full.iter().zip(to).any(|(f, t)| *f != 1 && f != t) {
        return None;
    }
    let fs = strides(&full);
    let ts = strides(to);
    let n: usize = to.iter().product();
    Some(
        (0..n)
            .map(|i| {
                let mut src = 0;
                for d in 0..to.len() {
                    let c = (i / ts[d]) % to[d];
                    if full[d] != 1 {
                        src += c * fs[d];
                    }
                }
                data[src]
            })
            .collect(),
    )
}

/// The numpy broadcast of two shapes.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

impl Builder {
    fn tensor(&mut self, name: &str, shape: Vec<usize>) -> Result<usize, OnnxError> {
        count(&shape)?;
        let id = self.tensors.len();
        self.tensors.push(Tensor {
            name: name.to_string(),
            shape,
        });
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }

    fn shape(&self, id: usize) -> &[usize] {
        &self.tensors[id].shape
    }

    fn constant(&mut self, a: &Argument) -> Result<Option<Const>, OnnxError> {
        if let Some(c) = self.consts.get(&a.name) {
            return Ok(Some(c.clone()));
        }
        let Some(td) = a.value() else {
            return Ok(None);
        };
        let shape = td.shape().to_vec();
        // An empty constant (an absent optional value) is fine; others are bounded like every tensor.
        let n = if shape.contains(&0) {
            0
        } else {
            count(&shape)?
        };
        self.weights = self.weights.saturating_add(n);
        if self.weights > MAX_TOTAL_WEIGHTS {
            return Err(OnnxError::Limit {
                what: "the weights' element count",
                got: self.weights,
                limit: MAX_TOTAL_WEIGHTS,
            });
        }
        let data: Vec<f32> = td.iter::<f32>().take(n).collect();
        if data.len() != n {
            return Err(OnnxError::Graph(format!(
                "constant {:?} holds {} values for shape {shape:?}",
                a.name,
                data.len()
            )));
        }
        let c = Const { shape, data };
        if !a.name.is_empty() {
            self.consts.insert(a.name.clone(), c.clone());
        }
        Ok(Some(c))
    }

    fn arg(&mut self, a: &Argument, ctx: &Ctx) -> Result<Arg, OnnxError> {
        if let Some(&id) = self.ids.get(&a.name) {
            return Ok(Arg::Act(id));
        }
        match self.constant(a)? {
            Some(c) => Ok(Arg::Const(c)),
            None => Err(ctx.invalid(format!(
                "input {:?} is neither computed before this node nor a constant",
                a.name
            ))),
        }
    }

    fn const_arg(&mut self, a: &Argument, ctx: &Ctx, what: &str) -> Result<Const, OnnxError> {
        match self.arg(a, ctx)? {
            Arg::Const(c) => Ok(c),
            Arg::Act(_) => Err(ctx.unsupported(format!("{what} must be a constant"))),
        }
    }

    fn ints(&mut self, a: &Argument, ctx: &Ctx, what: &str) -> Result<Vec<i64>, OnnxError> {
        Ok(self
            .const_arg(a, ctx, what)?
            .data
            .iter()
            .map(|v| *v as i64)
            .collect())
    }

    fn push(
        &mut self,
        ctx: &Ctx,
        op: Op,
        inputs: Vec<usize>,
        out: &Argument,
        shape: Vec<usize>,
    ) -> Result<(), OnnxError> {
        let output = self.tensor(&out.name, shape)?;
        self.nodes.push(Node {
            name: ctx.node.clone(),
            onnx_op: ctx.op.clone(),
            op,
            inputs,
            output,
        });
        Ok(())
    }

    /// A layout op: output element `i` is `indices[i]` of the inputs concatenated. Folded if every input
    /// is constant; a [`Op::Gather`] if every input is computed.
    fn layout(
        &mut self,
        ctx: &Ctx,
        args: Vec<Arg>,
        indices: Vec<usize>,
        out: &Argument,
        shape: Vec<usize>,
    ) -> Result<(), OnnxError> {
        count(&shape)?;
        if args.iter().all(|a| matches!(a, Arg::Const(_))) {
            let all: Vec<f32> = args
                .iter()
                .flat_map(|a| match a {
                    Arg::Const(c) => c.data.clone(),
                    Arg::Act(_) => Vec::new(),
                })
                .collect();
            let data = indices
                .iter()
                .map(|&i| all.get(i).copied())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ctx.invalid("an index is out of range".into()))?;
            self.consts.insert(out.name.clone(), Const { shape, data });
            return Ok(());
        }
        let ids =
            args.iter()
                .map(|a| match a {
                    Arg::Act(id) => Ok(*id),
                    Arg::Const(_) => Err(ctx.unsupported(
                        "mixing constants and computed tensors in a layout op".into(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
        let total: usize = ids.iter().map(|&i| self.tensors[i].len()).sum();
        if indices.iter().any(|&i| i >= total) {
            return Err(ctx.invalid("an index is out of range".into()));
        }
        self.push(ctx, Op::Gather { indices }, ids, out, shape)
    }

    fn arg_shape(&self, a: &Arg) -> Vec<usize> {
        match a {
            Arg::Act(id) => self.shape(*id).to_vec(),
            Arg::Const(c) => c.shape.clone(),
        }
    }

    fn input(&mut self, n: &onnx_ir::Node, i: usize, ctx: &Ctx) -> Result<Arg, OnnxError> {
        let a = n
            .inputs()
            .get(i)
            .ok_or_else(|| ctx.invalid(format!("missing input {i}")))?;
        self.arg(a, ctx)
    }

    fn act(&mut self, n: &onnx_ir::Node, i: usize, ctx: &Ctx) -> Result<usize, OnnxError> {
        match self.input(n, i, ctx)? {
            Arg::Act(id) => Ok(id),
            Arg::Const(_) => Err(ctx.unsupported(format!(
                "input {i} is a constant where a computed tensor is expected"
            ))),
        }
    }

    fn node(&mut self, n: &onnx_ir::Node) -> Result<(), OnnxError> {
        use onnx_ir::Node as N;
        let ctx = Ctx {
            op: format!("{:?}", n.node_type()),
            node: n.name().to_string(),
        };
        let out = n
            .outputs()
            .first()
            .ok_or_else(|| ctx.invalid("no output".into()))?
            .clone();
        match n {
            N::Constant(_) => {
                for o in n.outputs() {
                    self.constant(o)?;
                }
                Ok(())
            }
            N::Identity(_) | N::Cast(_) | N::Dropout(_) => match self.input(n, 0, &ctx)? {
                Arg::Act(id) => {
                    self.ids.insert(out.name.clone(), id);
                    Ok(())
                }
                Arg::Const(c) => {
                    self.consts.insert(out.name.clone(), c);
                    Ok(())
                }
            },
            N::Shape(s) => {
                let a = self.input(n, 0, &ctx)?;
                let shape = self.arg_shape(&a);
                let end = s.config.end.min(shape.len());
                let start = s.config.start.min(end);
                let dims: Vec<f32> = shape[start..end].iter().map(|&d| d as f32).collect();
                self.consts.insert(
                    out.name.clone(),
                    Const {
                        shape: vec![dims.len()],
                        data: dims,
                    },
                );
                Ok(())
            }
            N::Add(_) | N::Sub(_) | N::Mul(_) | N::Div(_) | N::Mod(_) => self.arith(n, &ctx, &out),
            N::Relu(_) => self.unary(n, &ctx, &out, Op::Relu),
            N::LeakyRelu(l) => {
                let alpha = l.config.alpha as f32;
                self.unary(n, &ctx, &out, Op::LeakyRelu { alpha })
            }
            N::Sigmoid(_) => self.unary(n, &ctx, &out, Op::Sigmoid),
            N::Tanh(_) => self.unary(n, &ctx, &out, Op::Tanh),
            N::Erf(_) => self.unary(n, &ctx, &out, Op::Erf),
            N::Gelu(g) => {
                if g.config.approximate != onnx_ir::node::gelu::GeluApproximate::Exact {
                    return Err(ctx.unsupported("only the exact (erf) GELU is supported".into()));
                }
                self.unary(n, &ctx, &out, Op::Gelu)
            }
            N::Softmax(s) => {
                let x = self.act(n, 0, &ctx)?;
                let shape = self.shape(x).to_vec();
                if s.config.axis + 1 != shape.len() {
                    return Err(ctx.unsupported("softmax over an axis other than the last".into()));
                }
                let cols = *shape.last().unwrap_or(&1);
                let rows = count(&shape)? / cols.max(1);
                self.push(&ctx, Op::Softmax { rows, cols }, vec![x], &out, shape)
            }
            N::LayerNormalization(l) => {
                let x = self.act(n, 0, &ctx)?;
                let shape = self.shape(x).to_vec();
                if axis(l.config.axis, shape.len()) != Some(shape.len().saturating_sub(1)) {
                    return Err(
                        ctx.unsupported("LayerNormalization over more than the last axis".into())
                    );
                }
                let cols = *shape.last().unwrap_or(&1);
                let rows = count(&shape)? / cols.max(1);
                let gamma = match n.inputs().get(1) {
                    Some(a) => self.const_arg(a, &ctx, "the scale")?.data,
                    None => vec![1.0; cols],
                };
                let beta = match n.inputs().get(2).filter(|a| !a.is_optional()) {
                    Some(a) => self.const_arg(a, &ctx, "the bias")?.data,
                    None => vec![0.0; cols],
                };
                if gamma.len() != cols || beta.len() != cols {
                    return Err(ctx.invalid("scale or bias does not match the last axis".into()));
                }
                let op = Op::LayerNorm {
                    rows,
                    cols,
                    gamma,
                    beta,
                    epsilon: l.config.epsilon as f32,
                };
                self.push(&ctx, op, vec![x], &out, shape)
            }
            N::BatchNormalization(_) => {
                let x = self.act(n, 0, &ctx)?;
                let shape = self.shape(x).to_vec();
                let eps = match n {
                    N::BatchNormalization(b) => match &b.config {
                        onnx_ir::node::batch_norm::BatchNormConfig::Static(c) => c.epsilon,
                        onnx_ir::node::batch_norm::BatchNormConfig::Runtime(c) => c.epsilon,
                    },
                    _ => 1e-5,
                };
                let mut p = Vec::new();
                for (i, what) in ["scale", "bias", "mean", "variance"].iter().enumerate() {
                    let a = n
                        .inputs()
                        .get(i + 1)
                        .ok_or_else(|| ctx.invalid(format!("no {what}")))?;
                    p.push(self.const_arg(a, &ctx, what)?.data);
                }
                let channels = *shape.get(1).ok_or_else(|| ctx.invalid("rank < 2".into()))?;
                if p.iter().any(|v| v.len() != channels) {
                    return Err(ctx.invalid("parameters do not match the channels".into()));
                }
                let inner: usize = shape[2..].iter().product();
                let len = count(&shape)?;
                let (mut scale, mut shift) = (vec![0.0; len], vec![0.0; len]);
                for (i, (s, b)) in scale.iter_mut().zip(shift.iter_mut()).enumerate() {
                    let c = (i / inner.max(1)) % channels;
                    let k = f64::from(p[0][c]) / (f64::from(p[3][c]) + eps).sqrt();
                    *s = k as f32;
                    *b = (f64::from(p[1][c]) - f64::from(p[2][c]) * k) as f32;
                }
                self.push(&ctx, Op::Affine { scale, shift }, vec![x], &out, shape)
            }
            N::Linear(l) => {
                let x = self.act(n, 0, &ctx)?;
                let w = self.const_arg(&nth(n, 1, &ctx)?, &ctx, "the weight")?;
                let [a, b] = w.shape[..] else {
                    return Err(ctx.invalid("the weight is not a matrix".into()));
                };
                let (inner, outputs) = if l.config.transpose_weight {
                    (b, a)
                } else {
                    (a, b)
                };
                let weight = if l.config.transpose_weight {
                    transpose2(&w.data, a, b)
                } else {
                    w.data
                };
                let bias = match n.inputs().get(2).filter(|a| !a.is_optional()) {
                    Some(a) => self.const_arg(a, &ctx, "the bias")?.data,
                    None => vec![0.0; outputs],
                };
                self.linear(&ctx, x, inner, outputs, weight, bias, &out)
            }
            N::Gemm(g) => {
                let c = &g.config;
                if c.trans_a != 0 {
                    return Err(ctx.unsupported("Gemm with transA".into()));
                }
                let x = self.act(n, 0, &ctx)?;
                let w = self.const_arg(&nth(n, 1, &ctx)?, &ctx, "the weight")?;
                let [a, b] = w.shape[..] else {
                    return Err(ctx.invalid("the weight is not a matrix".into()));
                };
                let (inner, outputs, weight) = if c.trans_b != 0 {
                    (b, a, transpose2(&w.data, a, b))
                } else {
                    (a, b, w.data)
                };
                let weight = weight.iter().map(|v| v * c.alpha).collect();
                let bias = match n.inputs().get(2).filter(|a| !a.is_optional()) {
                    Some(a) => {
                        let b = self.const_arg(a, &ctx, "the bias")?;
                        broadcast(&b.data, &b.shape, &[outputs])
                            .ok_or_else(|| ctx.unsupported("a bias that is not per column".into()))?
                            .iter()
                            .map(|v| v * c.beta)
                            .collect()
                    }
                    None => vec![0.0; outputs],
                };
                self.linear(&ctx, x, inner, outputs, weight, bias, &out)
            }
            N::MatMul(_) => {
                let a = self.act(n, 0, &ctx)?;
                match self.input(n, 1, &ctx)? {
                    Arg::Const(w) => {
                        let [inner, outputs] = w.shape[..] else {
                            return Err(
                                ctx.unsupported("a constant right operand of rank != 2".into())
                            );
                        };
                        self.linear(&ctx, a, inner, outputs, w.data, vec![0.0; outputs], &out)
                    }
                    Arg::Act(b) => {
                        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
                        if sa.len() < 2
                            || sa.len() != sb.len()
                            || sa[..sa.len() - 2] != sb[..sb.len() - 2]
                        {
                            return Err(ctx.unsupported(format!(
                                "a product of activations of shapes {sa:?} and {sb:?} (batch dimensions must match)"
                            )));
                        }
                        let r = sa.len();
                        let (m, k, k2, nn) = (sa[r - 2], sa[r - 1], sb[r - 2], sb[r - 1]);
                        if k != k2 {
                            return Err(ctx.invalid(format!("inner dimensions {k} and {k2}")));
                        }
                        let batch: usize = sa[..r - 2].iter().product();
                        let mut shape = sa[..r - 2].to_vec();
                        shape.extend([m, nn]);
                        self.push(
                            &ctx,
                            Op::MatMul { batch, m, k, n: nn },
                            vec![a, b],
                            &out,
                            shape,
                        )
                    }
                }
            }
            N::Conv2d(c) => {
                let x = self.act(n, 0, &ctx)?;
                let cfg = &c.config;
                let shape = self.shape(x).to_vec();
                let [batch, ch, h, w] = shape[..] else {
                    return Err(ctx.invalid("input is not NCHW".into()));
                };
                let weight = self.const_arg(&nth(n, 1, &ctx)?, &ctx, "the weight")?;
                let [oc, icg, kh, kw] = weight.shape[..] else {
                    return Err(ctx.invalid("weight is not [oc, ic/g, kh, kw]".into()));
                };
                let groups = cfg.groups;
                if groups == 0 || ch % groups != 0 || oc % groups != 0 || icg * groups != ch {
                    return Err(ctx.invalid(format!(
                        "{groups} groups for {ch} input and {oc} output channels"
                    )));
                }
                let bias = match n.inputs().get(2).filter(|a| !a.is_optional()) {
                    Some(a) => self.const_arg(a, &ctx, "the bias")?.data,
                    None => vec![0.0; oc],
                };
                if bias.len() != oc {
                    return Err(ctx.invalid("bias does not match the output channels".into()));
                }
                let (pt, pl, pb, pr) = pads(&cfg.padding, &cfg.auto_pad, &ctx)?;
                let out_dim = |size: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize| {
                    let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
                    let full = size.checked_add(p0)?.checked_add(p1)?;
                    (s > 0 && full >= span).then(|| (full - span) / s + 1)
                };
                let oh = out_dim(h, kh, cfg.stride[0], cfg.dilation[0], pt, pb);
                let ow = out_dim(w, kw, cfg.stride[1], cfg.dilation[1], pl, pr);
                let (Some(oh), Some(ow)) = (oh, ow) else {
                    return Err(ctx.invalid("the kernel does not fit the input".into()));
                };
                count(&[batch, oc, oh, ow])?;
                count(&[batch, oh * ow, icg * kh * kw])?;
                let conv = Conv {
                    batch,
                    input: [ch, h, w],
                    output: [oc, oh, ow],
                    kernel: [kh, kw],
                    stride: cfg.stride,
                    pad: [pt, pl],
                    dilation: cfg.dilation,
                    groups,
                    weight: weight.data,
                    bias,
                };
                self.push(
                    &ctx,
                    Op::Conv(Box::new(conv)),
                    vec![x],
                    &out,
                    vec![batch, oc, oh, ow],
                )
            }
            N::MaxPool2d(p) => {
                let x = self.act(n, 0, &ctx)?;
                let c = &p.config;
                let (pt, pl, pb, pr) = pads(&c.padding, &c.auto_pad, &ctx)?;
                if c.dilation != [1, 1] || c.ceil_mode {
                    return Err(ctx.unsupported("MaxPool with dilation or ceil_mode".into()));
                }
                let [batch, channels, height, width] = self.shape(x)[..] else {
                    return Err(ctx.invalid("input is not NCHW".into()));
                };
                if pt + pl + pb + pr != 0 {
                    let [kh, kw] = c.kernel_size;
                    let [sh, sw] = c.strides;
                    if kh == 0
                        || kw == 0
                        || sh == 0
                        || sw == 0
                        || height + pt + pb < kh
                        || width + pl + pr < kw
                    {
                        return Err(ctx.invalid("the window does not fit".into()));
                    }
                    let (oh, ow) = (
                        (height + pt + pb - kh) / sh + 1,
                        (width + pl + pr - kw) / sw + 1,
                    );
                    count(&[batch, channels, oh, ow, kh, kw])?;
                    let pad = count(&[batch, channels, height, width])?;
                    let mut candidates = vec![Vec::new(); kh * kw];
                    for nc in 0..batch * channels {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let y = (oy * sh + ky) as isize - pt as isize;
                                        let xx = (ox * sw + kx) as isize - pl as isize;
                                        let inside = y >= 0
                                            && xx >= 0
                                            && (y as usize) < height
                                            && (xx as usize) < width;
                                        candidates[ky * kw + kx].push(if inside {
                                            (nc * height + y as usize) * width + xx as usize
                                        } else {
                                            pad
                                        });
                                    }
                                }
                            }
                        }
                    }
                    let op = Op::MaxPoolPadded { candidates };
                    return self.push(&ctx, op, vec![x], &out, vec![batch, channels, oh, ow]);
                }
                let pool = Pool2d {
                    channels,
                    height,
                    width,
                    kernel: c.kernel_size,
                    stride: c.strides,
                };
                let [oh, ow] = pool
                    .output_hw()
                    .ok_or_else(|| ctx.invalid("the window does not fit".into()))?;
                let op = Op::MaxPool { pool, batch };
                self.push(&ctx, op, vec![x], &out, vec![batch, channels, oh, ow])
            }
            N::AveragePool2d(p) => {
                let x = self.act(n, 0, &ctx)?;
                let c = &p.config;
                let (pt, pl, pb, pr) = pads(&c.padding, &c.auto_pad, &ctx)?;
                if c.dilation != [1, 1] || c.ceil_mode {
                    return Err(ctx.unsupported("AveragePool with dilation or ceil_mode".into()));
                }
                let [batch, ch, h, w] = self.shape(x)[..] else {
                    return Err(ctx.invalid("input is not NCHW".into()));
                };
                let [kh, kw] = c.kernel_size;
                let [sh, sw] = c.strides;
                if kh == 0 || kw == 0 || sh == 0 || sw == 0 || h + pt + pb < kh || w + pl + pr < kw
                {
                    return Err(ctx.invalid("the window does not fit".into()));
                }
                let (oh, ow) = ((h + pt + pb - kh) / sh + 1, (w + pl + pr - kw) / sw + 1);
                count(&[batch, ch, oh, ow, kh, kw])?;
                let (mut windows, mut divisors) = (Vec::new(), Vec::new());
                for nc in 0..batch * ch {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut win = Vec::new();
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let y = (oy * sh + ky) as isize - pt as isize;
                                    let xx = (ox * sw + kx) as isize - pl as isize;
                                    if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                        win.push((nc * h + y as usize) * w + xx as usize);
                                    }
                                }
                            }
                            divisors.push(if c.count_include_pad {
                                kh * kw
                            } else {
                                win.len().max(1)
                            });
                            windows.push(win);
                        }
                    }
                }
                let op = Op::Mean { windows, divisors };
                self.push(&ctx, op, vec![x], &out, vec![batch, ch, oh, ow])
            }
            N::GlobalAveragePool(_) => {
                let x = self.act(n, 0, &ctx)?;
                let shape = self.shape(x).to_vec();
                if shape.len() < 3 {
                    return Err(ctx.invalid("input of rank < 3".into()));
                }
                let inner: usize = shape[2..].iter().product();
                let windows: Vec<Vec<usize>> = (0..shape[0] * shape[1])
                    .map(|i| (i * inner..(i + 1) * inner).collect())
                    .collect();
                let divisors = vec![inner.max(1); windows.len()];
                let mut oshape = shape[..2].to_vec();
                oshape.extend(std::iter::repeat_n(1, shape.len() - 2));
                self.push(&ctx, Op::Mean { windows, divisors }, vec![x], &out, oshape)
            }
            N::ReduceMean(r) => {
                let x = self.act(n, 0, &ctx)?;
                let shape = self.shape(x).to_vec();
                let axes: Vec<usize> = match &r.config.axes {
                    onnx_ir::node::reduce::ReduceAxes::Static(a) => a.clone(),
                    onnx_ir::node::reduce::ReduceAxes::Runtime(rt) => {
                        let a = nth(n, rt.input_index, &ctx)?;
                        self.ints(&a, &ctx, "the axes")?
                            .iter()
                            .map(|&v| axis(v, shape.len()))
                            .collect::<Option<_>>()
                            .ok_or_else(|| ctx.invalid("an axis is out of range".into()))?
                    }
                };
                let axes: Vec<usize> = if axes.is_empty() {
                    (0..shape.len()).collect()
                } else {
                    axes
                };
                if axes.iter().any(|&a| a >= shape.len()) {
                    return Err(ctx.invalid("an axis is out of range".into()));
                }
                let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
                let st = strides(&shape);
                let out_dims: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
                let red_dims: Vec<usize> = axes.iter().map(|&d| shape[d]).collect();
                let (on, rn) = (count(&out_dims)?, count(&red_dims)?);
                let (os, rs) = (strides(&out_dims), strides(&red_dims));
                let windows: Vec<Vec<usize>> = (0..on)
                    .map(|o| {
                        let base: usize = kept
                            .iter()
                            .enumerate()
                            .map(|(j, &d)| (o / os[j]) % out_dims[j] * st[d])
                            .sum();
                        (0..rn)
                            .map(|q| {
                                base + axes
                                    .iter()
                                    .enumerate()
                                    .map(|(j, &d)| (q / rs[j]) % red_dims[j] * st[d])
                                    .sum::<usize>()
                            })
                            .collect()
                    })
                    .collect();
                let oshape = if r.config.keepdims {
                    (0..shape.len())
                        .map(|d| if axes.contains(&d) { 1 } else { shape[d] })
                        .collect()
                } else {
                    out_dims
                };
                let divisors = vec![rn.max(1); on];
                self.push(&ctx, Op::Mean { windows, divisors }, vec![x], &out, oshape)
            }
            N::Flatten(_)
            | N::Reshape(_)
            | N::Squeeze(_)
            | N::Unsqueeze(_)
            | N::Transpose(_)
            | N::Concat(_)
            | N::Gather(_)
            | N::Slice(_)
            | N::Split(_) => self.layout_node(n, &ctx, &out),
            _ => Err(ctx.unsupported("no private implementation of this operator".into())),
        }
    }

    fn unary(
        &mut self,
        n: &onnx_ir::Node,
        ctx: &Ctx,
        out: &Argument,
        op: Op,
    ) -> Result<(), OnnxError> {
        let x = self.act(n, 0, ctx)?;
        let shape = self.shape(x).to_vec();
        self.push(ctx, op, vec![x], out, shape)
    }

    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        ctx: &Ctx,
        x: usize,
        inner: usize,
        outputs: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        out: &Argument,
    ) -> Result<(), OnnxError> {
        let shape = self.shape(x).to_vec();
        if shape.last() != Some(&inner) || weight.len() != inner * outputs || bias.len() != outputs
        {
            return Err(ctx.invalid(format!(
                "input {shape:?} against a [{inner}, {outputs}] weight"
            )));
        }
        let rows = count(&shape)? / inner.max(1);
        let mut new = shape;
        if let Some(l) = new.last_mut() {
            *l = outputs;
        }
        count(&new)?;
        let op = Op::Linear {
            rows,
            inner,
            outputs,
            weight,
            bias,
        };
        self.push(ctx, op, vec![x], out, new)
    }

    fn arith(&mut self, n: &onnx_ir::Node, ctx: &Ctx, out: &Argument) -> Result<(), OnnxError> {
        use onnx_ir::Node as N;
        let a = self.input(n, 0, ctx)?;
        let b = self.input(n, 1, ctx)?;
        let f: fn(f32, f32) -> f32 = match n {
            N::Add(_) => |x, y| x + y,
            N::Sub(_) => |x, y| x - y,
            N::Mul(_) => |x, y| x * y,
            N::Div(_) => |x, y| x / y,
            _ => |x, y| x % y,
        };
        match (a, b) {
            (Arg::Const(x), Arg::Const(y)) => {
                let shape = broadcast_shape(&x.shape, &y.shape)
                    .ok_or_else(|| ctx.invalid("shapes do not broadcast".into()))?;
                count(&shape)?;
                let (xs, ys) = (
                    broadcast(&x.data, &x.shape, &shape),
                    broadcast(&y.data, &y.shape, &shape),
                );
                let (Some(xs), Some(ys)) = (xs, ys) else {
                    return Err(ctx.invalid("shapes do not broadcast".into()));
                };
                let data = xs.iter().zip(&ys).map(|(p, q)| f(*p, *q)).collect();
                self.consts.insert(out.name.clone(), Const { shape, data });
                Ok(())
            }
            (Arg::Act(x), Arg::Const(c)) | (Arg::Const(c), Arg::Act(x))
                if matches!(n, N::Mod(_)) =>
            {
                let _ = (x, c);
                Err(ctx.unsupported("Mod of a computed tensor".into()))
            }
            (Arg::Act(x), Arg::Const(c)) => {
                let shape = self.shape(x).to_vec();
                let k = broadcast(&c.data, &c.shape, &shape).ok_or_else(|| {
                    ctx.unsupported(format!(
                        "a constant of shape {:?} that does not broadcast to {shape:?}",
                        c.shape
                    ))
                })?;
                let len = k.len();
                let (scale, shift) = match n {
                    N::Add(_) => (vec![1.0; len], k),
                    N::Sub(_) => (vec![1.0; len], k.iter().map(|v| -v).collect()),
                    N::Mul(_) => (k, vec![0.0; len]),
                    _ => {
                        if k.contains(&0.0) {
                            return Err(ctx.invalid("division by zero".into()));
                        }
                        (k.iter().map(|v| 1.0 / v).collect(), vec![0.0; len])
                    }
                };
                self.push(ctx, Op::Affine { scale, shift }, vec![x], out, shape)
            }
            (Arg::Const(c), Arg::Act(x)) => {
                let shape = self.shape(x).to_vec();
                let k = broadcast(&c.data, &c.shape, &shape).ok_or_else(|| {
                    ctx.unsupported(format!(
                        "a constant of shape {:?} that does not broadcast to {shape:?}",
                        c.shape
                    ))
                })?;
                let len = k.len();
                let (scale, shift) = match n {
                    N::Add(_) => (vec![1.0; len], k),
                    N::Sub(_) => (vec![-1.0; len], k),
                    N::Mul(_) => (k, vec![0.0; len]),
                    _ => return Err(ctx.unsupported("division by a computed tensor".into())),
                };
                self.push(ctx, Op::Affine { scale, shift }, vec![x], out, shape)
            }
            (Arg::Act(x), Arg::Act(y)) => {
                let (sx, sy) = (self.shape(x).to_vec(), self.shape(y).to_vec());
                if sx != sy {
                    return Err(ctx.unsupported(format!(
                        "broadcasting between computed tensors ({sx:?} and {sy:?})"
                    )));
                }
                let op = match n {
                    N::Add(_) => Op::Add,
                    N::Sub(_) => Op::Sub,
                    N::Mul(_) => Op::Mul,
                    _ => return Err(ctx.unsupported("division of computed tensors".into())),
                };
                self.push(ctx, op, vec![x, y], out, sx)
            }
        }
    }
}

/// Input `i` of `n`, or an error naming the node.
fn nth(n: &onnx_ir::Node, i: usize, ctx: &Ctx) -> Result<Argument, OnnxError> {
    n.inputs()
        .get(i)
        .cloned()
        .ok_or_else(|| ctx.invalid(format!("missing input {i}")))
}

/// The node an error is about.
struct Ctx {
    op: String,
    node: String,
}

impl Ctx {
    fn unsupported(&self, detail: String) -> OnnxError {
        OnnxError::Unsupported {
            op: self.op.clone(),
            node: self.node.clone(),
            detail,
        }
    }
    fn invalid(&self, detail: String) -> OnnxError {
        OnnxError::Invalid {
            op: self.op.clone(),
            node: self.node.clone(),
            detail,
        }
    }
}

fn pads(
    p: &PaddingConfig2d,
    auto: &AutoPad,
    ctx: &Ctx,
) -> Result<(usize, usize, usize, usize), OnnxError> {
    if !matches!(auto, AutoPad::NotSet | AutoPad::Valid) {
        return Err(ctx.unsupported("auto_pad SAME_UPPER/SAME_LOWER".into()));
    }
    Ok(match p {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(t, l, b, r) => (*t, *l, *b, *r),
    })
}

fn transpose2(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

/// ONNX Reshape semantics (0 copies the input's dimension, one -1 is inferred).
fn reshape(shape: &[usize], target: &[i64]) -> Option<Vec<usize>> {
    let len: usize = shape.iter().product();
    let mut new = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                new.push(1);
            }
            0 => new.push(*shape.get(i)?),
            t if t > 0 => new.push(usize::try_from(t).ok()?),
            _ => return None,
        }
    }
    let known = new.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    if let Some(i) = infer {
        if known == 0 || !len.is_multiple_of(known) {
            return None;
        }
        new[i] = len / known;
    }
    (new.iter().try_fold(1usize, |a, &d| a.checked_mul(d))? == len).then_some(new)
}
