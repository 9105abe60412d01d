//! The layout operators (Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Concat, Gather, Slice, Split):
//! each is an index map, folded when its inputs are constant (shape-only subgraphs: shapes are public) and
//! an [`Op::Gather`](crate::onnx::Op::Gather) of computed tensors otherwise.

use onnx_ir::Argument;

use super::{axis, count, nth, reshape, strides, Arg, Builder, Ctx};
use crate::onnx::error::OnnxError;

impl Builder {
    /// Maps one layout node (see the module doc).
    pub(super) fn layout_node(
        &mut self,
        n: &onnx_ir::Node,
        ctx: &Ctx,
        out: &Argument,
    ) -> Result<(), OnnxError> {
        use onnx_ir::Node as N;
        let out = out.clone();
        match n {
            N::Flatten(f) => {
                let a = self.input(n, 0, ctx)?;
                let shape = self.arg_shape(&a);
                let k = f.config.axis.min(shape.len());
                let outer: usize = shape[..k].iter().product();
                let inner: usize = shape[k..].iter().product();
                let len = count(&shape)?;
                self.layout(ctx, vec![a], (0..len).collect(), &out, vec![outer, inner])
            }
            N::Reshape(r) => {
                let a = self.input(n, 0, ctx)?;
                let shape = self.arg_shape(&a);
                let target = match &r.config.shape {
                    onnx_ir::node::reshape::ReshapeInput::Static(s) => s.clone(),
                    onnx_ir::node::reshape::ReshapeInput::Runtime(rt) => {
                        let s = nth(n, rt.input_index, ctx)?;
                        self.ints(&s, ctx, "the shape")?
                    }
                };
                let len = count(&shape)?;
                let new = reshape(&shape, &target).ok_or_else(|| {
                    ctx.invalid(format!("cannot reshape {shape:?} to {target:?}"))
                })?;
                self.layout(ctx, vec![a], (0..len).collect(), &out, new)
            }
            N::Squeeze(s) => {
                let a = self.input(n, 0, ctx)?;
                let shape = self.arg_shape(&a);
                let axes: Vec<i64> = match &s.config.axes {
                    Some(onnx_ir::node::squeeze::SqueezeInput::Static(v)) => v.clone(),
                    Some(onnx_ir::node::squeeze::SqueezeInput::Runtime(rt)) => {
                        let x = nth(n, rt.input_index, ctx)?;
                        self.ints(&x, ctx, "the axes")?
                    }
                    None => (0..shape.len() as i64)
                        .filter(|&d| shape[d as usize] == 1)
                        .collect(),
                };
                let axes: Vec<usize> = axes
                    .iter()
                    .map(|&v| axis(v, shape.len()))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ctx.invalid("an axis is out of range".into()))?;
                let new: Vec<usize> = (0..shape.len())
                    .filter(|d| !axes.contains(d))
                    .map(|d| shape[d])
                    .collect();
                let len = count(&shape)?;
                self.layout(ctx, vec![a], (0..len).collect(), &out, new)
            }
            N::Unsqueeze(u) => {
                let a = self.input(n, 0, ctx)?;
                let shape = self.arg_shape(&a);
                let axes: Vec<i64> = match &u.config {
                    onnx_ir::node::unsqueeze::UnsqueezeConfig::Static(v) => v.clone(),
                    onnx_ir::node::unsqueeze::UnsqueezeConfig::Runtime(rt) => {
                        let x = nth(n, rt.input_index, ctx)?;
                        self.ints(&x, ctx, "the axes")?
                    }
                };
                let rank = shape.len() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&v| axis(v, rank))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ctx.invalid("an axis is out of range".into()))?;
                axes.sort_unstable();
                let mut new = shape.clone();
                for &d in &axes {
                    if d > new.len() {
                        return Err(ctx.invalid("an axis is out of range".into()));
                    }
                    new.insert(d, 1);
                }
                let len = count(&shape)?;
                self.layout(ctx, vec![a], (0..len).collect(), &out, new)
            }
            N::Transpose(t) => {
                let a = self.input(n, 0, ctx)?;
                let shape = self.arg_shape(&a);
                let perm: Vec<usize> = if t.config.perm.is_empty() {
                    (0..shape.len()).rev().collect()
                } else {
                    t.config
                        .perm
                        .iter()
                        .map(|&p| axis(p, shape.len()))
                        .collect::<Option<_>>()
                        .ok_or_else(|| ctx.invalid("bad permutation".into()))?
                };
                let mut seen = vec![false; shape.len()];
                if perm.len() != shape.len()
                    || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true))
                {
                    return Err(ctx.invalid("bad permutation".into()));
                }
                let new: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
                let (is, os) = (strides(&shape), strides(&new));
                let len = count(&shape)?;
                let indices = (0..len)
                    .map(|o| {
                        (0..new.len())
                            .map(|d| (o / os[d]) % new[d] * is[perm[d]])
                            .sum()
                    })
                    .collect();
                self.layout(ctx, vec![a], indices, &out, new)
            }
            N::Concat(c) => {
                let mut args = Vec::new();
                for i in 0..n.inputs().len() {
                    args.push(self.input(n, i, ctx)?);
                }
                let shapes: Vec<Vec<usize>> = args.iter().map(|a| self.arg_shape(a)).collect();
                let first = shapes
                    .first()
                    .ok_or_else(|| ctx.invalid("no inputs".into()))?;
                let ax = c.config.axis;
                if ax >= first.len()
                    || shapes.iter().any(|s| {
                        s.len() != first.len()
                            || s.iter().enumerate().any(|(d, v)| d != ax && *v != first[d])
                    })
                {
                    return Err(ctx.invalid(format!("shapes {shapes:?} along axis {ax}")));
                }
                let outer: usize = first[..ax].iter().product();
                let inner: usize = first[ax + 1..].iter().product();
                let mut new = first.clone();
                new[ax] = shapes.iter().map(|s| s[ax]).sum();
                count(&new)?;
                let mut offsets = Vec::new();
                let mut acc = 0;
                for s in &shapes {
                    offsets.push(acc);
                    acc += s.iter().product::<usize>();
                }
                let mut indices = Vec::new();
                for o in 0..outer {
                    for (s, off) in shapes.iter().zip(&offsets) {
                        for j in 0..s[ax] * inner {
                            indices.push(off + o * s[ax] * inner + j);
                        }
                    }
                }
                self.layout(ctx, args, indices, &out, new)
            }
            N::Gather(g) => {
                let a = self.input(n, 0, ctx)?;
                let shape = self.arg_shape(&a);
                let idx = self.const_arg(&nth(n, 1, ctx)?, ctx, "the indices")?;
                let ax = g.config.axis;
                if ax >= shape.len() {
                    return Err(ctx.invalid("axis out of range".into()));
                }
                let dim = shape[ax] as i64;
                let picks: Vec<usize> = idx
                    .data
                    .iter()
                    .map(|&v| {
                        let v = v as i64;
                        let v = if v < 0 { v + dim } else { v };
                        (0..dim).contains(&v).then_some(v as usize)
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| ctx.invalid("an index is out of range".into()))?;
                let outer: usize = shape[..ax].iter().product();
                let inner: usize = shape[ax + 1..].iter().product();
                let mut new = shape[..ax].to_vec();
                new.extend(&idx.shape);
                new.extend(&shape[ax + 1..]);
                count(&new)?;
                let mut indices = Vec::new();
                for o in 0..outer {
                    for &p in &picks {
                        for j in 0..inner {
                            indices.push((o * shape[ax] + p) * inner + j);
                        }
                    }
                }
                self.layout(ctx, vec![a], indices, &out, new)
            }
            N::Slice(_) => {
                let a = self.input(n, 0, ctx)?;
                let shape = self.arg_shape(&a);
                let get = |b: &mut Self, i: usize| -> Result<Option<Vec<i64>>, OnnxError> {
                    match n.inputs().get(i).filter(|a| !a.is_optional()) {
                        Some(x) => Ok(Some(b.ints(&x.clone(), ctx, "slice parameters")?)),
                        None => Ok(None),
                    }
                };
                let starts = get(self, 1)?
                    .ok_or_else(|| ctx.unsupported("Slice without starts input".into()))?;
                let ends = get(self, 2)?.ok_or_else(|| ctx.invalid("no ends".into()))?;
                let axes = get(self, 3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = get(self, 4)?.unwrap_or_else(|| vec![1; starts.len()]);
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return Err(ctx.invalid("starts, ends, axes and steps differ in length".into()));
                }
                let mut ranges: Vec<Vec<usize>> = shape.iter().map(|&d| (0..d).collect()).collect();
                for i in 0..starts.len() {
                    let d = axis(axes[i], shape.len())
                        .ok_or_else(|| ctx.invalid("an axis is out of range".into()))?;
                    if steps[i] != 1 {
                        return Err(ctx.unsupported("Slice with a step other than 1".into()));
                    }
                    let dim = shape[d] as i64;
                    let clamp = |v: i64| if v < 0 { (v + dim).max(0) } else { v.min(dim) };
                    let (s, e) = (clamp(starts[i]), clamp(ends[i]));
                    ranges[d] = (s.max(0) as usize..e.max(s) as usize).collect();
                }
                let new: Vec<usize> = ranges.iter().map(Vec::len).collect();
                let len = count(&new)?;
                let (is, os) = (strides(&shape), strides(&new));
                let indices = (0..len)
                    .map(|o| {
                        (0..new.len())
                            .map(|d| ranges[d][(o / os[d]) % new[d]] * is[d])
                            .sum()
                    })
                    .collect();
                self.layout(ctx, vec![a], indices, &out, new)
            }
            N::Split(s) => {
                let x = self.input(n, 0, ctx)?;
                let shape = self.arg_shape(&x);
                let ax = s.config.axis;
                if ax >= shape.len() {
                    return Err(ctx.invalid("axis out of range".into()));
                }
                let parts = n.outputs().len();
                let sizes: Vec<usize> = match (&s.config.split_sizes, s.config.split_size) {
                    (Some(onnx_ir::node::split::SplitSizesInput::Static(v)), _) => v.clone(),
                    (Some(onnx_ir::node::split::SplitSizesInput::Runtime(rt)), _) => {
                        let a = nth(n, rt.input_index, ctx)?;
                        self.ints(&a, ctx, "the split sizes")?
                            .iter()
                            .map(|&v| usize::try_from(v).unwrap_or(usize::MAX))
                            .collect()
                    }
                    (None, Some(size)) => {
                        let mut v = vec![size; shape[ax] / size.max(1)];
                        if !shape[ax].is_multiple_of(size.max(1)) {
                            v.push(shape[ax] % size.max(1));
                        }
                        v
                    }
                    (None, None) => vec![shape[ax] / parts.max(1); parts],
                };
                if sizes.len() != parts
                    || sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(shape[ax])
                {
                    return Err(
                        ctx.invalid(format!("split sizes {sizes:?} for axis of {}", shape[ax]))
                    );
                }
                let outer: usize = shape[..ax].iter().product();
                let inner: usize = shape[ax + 1..].iter().product();
                let mut from = 0;
                for (o, &size) in n.outputs().iter().zip(&sizes) {
                    let mut new = shape.clone();
                    new[ax] = size;
                    let mut indices = Vec::new();
                    for q in 0..outer {
                        for j in 0..size * inner {
                            indices.push((q * shape[ax] + from) * inner + j);
                        }
                    }
                    from += size;
                    let again = match &x {
                        Arg::Act(id) => Arg::Act(*id),
                        Arg::Const(c) => Arg::Const(c.clone()),
                    };
                    self.layout(ctx, vec![again], indices, o, new)?;
                }
                Ok(())
            }
            _ => Err(ctx.unsupported("not a layout operator".into())),
        }
    }
}
