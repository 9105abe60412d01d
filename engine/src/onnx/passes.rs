//! Rewrites of an imported [`Graph`] that keep its function: folding per-channel affine maps
//! (BatchNormalization) into the Conv or Linear before them, fusing GELU written with Erf, and removing dead
//! nodes. Each keeps the graph invariants of [`super::graph`].

use super::graph::{Graph, Op};

/// How many nodes read each tensor.
fn readers(graph: &Graph) -> Vec<usize> {
    let mut r = vec![0; graph.tensors.len()];
    for n in &graph.nodes {
        for &i in &n.inputs {
            r[i] += 1;
        }
    }
    r[graph.output] += 1;
    r
}

/// Folds an [`Op::Affine`] that is constant over each output channel into the Conv or Linear that alone
/// feeds it (BatchNormalization after a convolution, a scale after a linear layer): the affine node becomes
/// the producer with scaled weights and shifted bias.
pub(crate) fn fold_affines(graph: &mut Graph) {
    loop {
        let r = readers(graph);
        let mut folded = false;
        for i in 0..graph.nodes.len() {
            let Op::Affine { scale, shift } = &graph.nodes[i].op else {
                continue;
            };
            let src = graph.nodes[i].inputs[0];
            let Some(p) = graph.nodes.iter().position(|n| n.output == src) else {
                continue;
            };
            if r[src] != 1 {
                continue;
            }
            let (scale, shift) = (scale.clone(), shift.clone());
            let new_op = match &graph.nodes[p].op {
                Op::Conv(c) => {
                    let [oc, oh, ow] = c.output;
                    let plane = oh * ow;
                    let per = |v: &[f32], o: usize| v[o * plane];
                    let uniform = (0..c.batch * oc * plane).all(|k| {
                        let o = (k / plane) % oc;
                        scale[k] == per(&scale, o) && shift[k] == per(&shift, o)
                    });
                    if !uniform || plane == 0 {
                        continue;
                    }
                    let mut c = c.clone();
                    let inner = c.weight.len() / oc.max(1);
                    for o in 0..oc {
                        let (s, b) = (per(&scale, o), per(&shift, o));
                        for w in &mut c.weight[o * inner..(o + 1) * inner] {
                            *w *= s;
                        }
                        c.bias[o] = c.bias[o] * s + b;
                    }
                    Op::Conv(c)
                }
                Op::Linear {
                    rows,
                    inner,
                    outputs,
                    weight,
                    bias,
                } => {
                    let uniform = (0..rows * outputs)
                        .all(|k| scale[k] == scale[k % outputs] && shift[k] == shift[k % outputs]);
                    if !uniform {
                        continue;
                    }
                    let mut weight = weight.clone();
                    let mut bias = bias.clone();
                    for (k, w) in weight.iter_mut().enumerate() {
                        *w *= scale[k % outputs];
                    }
                    for (o, b) in bias.iter_mut().enumerate() {
                        *b = *b * scale[o] + shift[o];
                    }
                    Op::Linear {
                        rows: *rows,
                        inner: *inner,
                        outputs: *outputs,
                        weight,
                        bias,
                    }
                }
                _ => continue,
            };
            let input = graph.nodes[p].inputs.clone();
            let name = format!("{}+{}", graph.nodes[p].onnx_op, graph.nodes[i].onnx_op);
            let node = &mut graph.nodes[i];
            node.op = new_op;
            node.inputs = input;
            node.onnx_op = name;
            graph.nodes.remove(p);
            folded = true;
            break;
        }
        if !folded {
            return;
        }
    }
}

fn uniform(v: &[f32]) -> Option<f32> {
    let first = *v.first()?;
    v.iter().all(|x| *x == first).then_some(first)
}

fn is_affine(op: &Op, scale: f32, shift: f32, tol: f32) -> bool {
    match op {
        Op::Affine { scale: s, shift: b } => {
            uniform(s).is_some_and(|s| (s - scale).abs() <= tol)
                && uniform(b).is_some_and(|b| (b - shift).abs() <= tol)
        }
        _ => false,
    }
}

/// Replaces `0.5 * (x * (1 + erf(x / sqrt 2)))` (the order PyTorch exports GELU in; the 0.5 may also come
/// first or be folded) by one [`Op::Gelu`] of `x`.
pub(crate) fn fuse_gelu(graph: &mut Graph) {
    let producer = |g: &Graph, t: usize| g.nodes.iter().position(|n| n.output == t);
    let consumers = |g: &Graph, t: usize| -> Vec<usize> {
        g.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.inputs.contains(&t))
            .map(|(i, _)| i)
            .collect()
    };
    let mut i = 0;
    while i < graph.nodes.len() {
        if graph.nodes[i].op != Op::Erf {
            i += 1;
            continue;
        }
        let erf = &graph.nodes[i];
        let Some(div) = producer(graph, erf.inputs[0]) else {
            i += 1;
            continue;
        };
        if !is_affine(
            &graph.nodes[div].op,
            std::f32::consts::FRAC_1_SQRT_2,
            0.0,
            1e-4,
        ) {
            i += 1;
            continue;
        }
        let x = graph.nodes[div].inputs[0];
        let c = consumers(graph, erf.output);
        let [add] = c[..] else {
            i += 1;
            continue;
        };
        if !is_affine(&graph.nodes[add].op, 1.0, 1.0, 1e-6) {
            i += 1;
            continue;
        }
        let c = consumers(graph, graph.nodes[add].output);
        let [mul] = c[..] else {
            i += 1;
            continue;
        };
        let m = &graph.nodes[mul];
        let a_out = graph.nodes[add].output;
        if m.op != Op::Mul || !(m.inputs == [x, a_out] || m.inputs == [a_out, x]) {
            i += 1;
            continue;
        }
        let c = consumers(graph, m.output);
        let last = match c[..] {
            [half] if is_affine(&graph.nodes[half].op, 0.5, 0.0, 1e-6) => half,
            _ => {
                i += 1;
                continue;
            }
        };
        let node = &mut graph.nodes[last];
        node.op = Op::Gelu;
        node.inputs = vec![x];
        node.onnx_op = "Gelu(Div+Erf+Add+Mul+Mul)".into();
        // The pattern's inner nodes are now dead; `prune` removes them.
        graph.nodes[i].op = Op::Gather {
            indices: Vec::new(),
        };
        i += 1;
    }
}

/// Removes nodes whose output nothing needs.
pub(crate) fn prune(graph: &mut Graph) {
    let mut needed = vec![false; graph.tensors.len()];
    needed[graph.output] = true;
    let mut keep = vec![false; graph.nodes.len()];
    for (k, n) in graph.nodes.iter().enumerate().rev() {
        if needed[n.output] {
            keep[k] = true;
            for &i in &n.inputs {
                needed[i] = true;
            }
        }
    }
    let mut k = 0;
    graph.nodes.retain(|_| {
        k += 1;
        keep[k - 1]
    });
}
