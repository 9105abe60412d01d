//! The private execution plan of a model: its layers compiled into protocol steps, and its weights encoded.
//!
//! Compilation rules (each keeps the result equal to the plaintext model, up to the stated rounding):
//! - A product (Linear, Conv2d) leaves `2f` fractional bits; the rescale by `2^f` is deferred to the next
//!   nonlinearity, so a ReLU after a product is one fused step (truncation and sign test share one opening).
//! - Max pooling commutes with ReLU (`max(relu a, relu b) = relu(max(a, b))`) and with rescaling (both are
//!   monotone), so `ReLU, MaxPool` runs as `MaxPool, ReLU`: the expensive sign tests of the ReLU then run on the
//!   pooled (4x smaller for 2x2) tensor, and max pooling runs before the deferred rescale.
//! - Flatten is free: shares are already flat.
//!
//! The material a plan needs is a function of the plan and the batch size only (see [`Plan::requests`]).

use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::Tensor;
use veil_protocols::lowering::{Conv2dGeometry, Lowering};
use veil_protocols::material::Request;
use veil_protocols::ring::FixedPoint;
use veil_protocols::semi2k::{requests, Pool2d};

use crate::error::Result;
use crate::model::{symmetric_padding, values, Layer, Model};

/// Who may see a model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum WeightMode {
    /// Secret-shared among the parties (the default): no party sees the weights.
    #[default]
    Shared,
    /// Public to the parties: products are local, only nonlinearities communicate.
    Public,
}

/// One protocol step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Product with weight number `weight`, plus its bias; leaves `2f` fractional bits.
    Product {
        /// Index into the plan's weights.
        weight: usize,
        /// How the input is lowered.
        lowering: Lowering,
        /// Output columns.
        outputs: usize,
        /// For a convolution, the output height times width (rows per item).
        conv_positions: Option<usize>,
    },
    /// Truncation by `2^f`.
    Rescale,
    /// Truncation by `2^f` fused with ReLU.
    RescaleRelu,
    /// ReLU on values with `f` fractional bits.
    Relu,
    /// Max pooling.
    MaxPool(Pool2d),
}

/// A step and what it costs to describe: the layers it implements and its input size per item.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What runs.
    pub kind: StepKind,
    /// Human label, e.g. `linear#0` or `relu#1+rescale`.
    pub label: String,
    /// Elements of the step's input per batch item.
    pub input_len: usize,
    /// Elements of the step's output per batch item.
    pub output_len: usize,
}

/// A weight matrix and bias in ring form.
#[derive(Clone)]
pub struct PlanWeight {
    /// Inner dimension.
    pub inner: usize,
    /// Output columns.
    pub outputs: usize,
    /// `inner x outputs`, `f` fractional bits.
    pub matrix: Vec<u64>,
    /// `outputs`, `2f` fractional bits (added to the product before rescaling).
    pub bias: Option<Vec<u64>>,
}

impl std::fmt::Debug for PlanWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlanWeight[{}x{}]", self.inner, self.outputs)
    }
}

/// A compiled model.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Steps in execution order.
    pub steps: Vec<Step>,
    /// Encoded weights (plaintext: the model owner's view; parties get shares or, if public, these).
    pub weights: Vec<PlanWeight>,
    /// Elements per input item.
    pub input_len: usize,
    /// Elements per output item.
    pub output_len: usize,
    /// Fixed-point parameters.
    pub fixed_point: FixedPoint,
    /// Weight visibility.
    pub mode: WeightMode,
}

/// Encodes a weight already laid out `inner x outputs` and its optional bias (at `2f` fractional bits).
fn encode_weight(
    matrix: &[f32],
    [inner, outputs]: [usize; 2],
    bias: Option<Tensor<1>>,
    fp: FixedPoint,
) -> Result<PlanWeight> {
    let matrix = fp.encode(matrix)?;
    let bias = bias
        .map(|b| -> Result<Vec<u64>> { Ok(fp.encode_double(&values(b)?)?) })
        .transpose()?;
    Ok(PlanWeight {
        inner,
        outputs,
        matrix,
        bias,
    })
}

fn encode_linear(l: &Linear, fp: FixedPoint) -> Result<PlanWeight> {
    let w = l.weight.val();
    let dims = w.dims();
    encode_weight(&values(w)?, dims, l.bias.as_ref().map(|b| b.val()), fp)
}

fn encode_conv(c: &Conv2d, fp: FixedPoint) -> Result<PlanWeight> {
    let w = c.weight.val();
    let [outputs, c_in, kh, kw] = w.dims();
    let inner = c_in * kh * kw;
    let flat = values(w)?; // [outputs, inner]
    let mut transposed = vec![0f32; inner * outputs];
    for o in 0..outputs {
        for i in 0..inner {
            transposed[i * outputs + o] = flat[o * inner + i];
        }
    }
    encode_weight(
        &transposed,
        [inner, outputs],
        c.bias.as_ref().map(|b| b.val()),
        fp,
    )
}

/// Layer order after the ReLU/MaxPool swap (see the module doc).
fn execution_order(layers: &[Layer]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..layers.len()).collect();
    let mut i = 0;
    while i + 1 < order.len() {
        if matches!(layers[order[i]], Layer::Relu(_))
            && matches!(layers[order[i + 1]], Layer::MaxPool2d(_))
        {
            order.swap(i, i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    order
}

impl Plan {
    /// Compiles `model` for private execution.
    pub fn compile(model: &Model, fixed_point: FixedPoint, mode: WeightMode) -> Result<Plan> {
        let layers = model.layers();
        let mut steps = Vec::new();
        let mut weights = Vec::new();
        let mut pending_rescale = false;
        let mut shape = model.input_shape().to_vec();
        let len = |s: &[usize]| s.iter().product::<usize>();
        for index in execution_order(layers) {
            let layer = &layers[index];
            let label = format!("{}#{index}", layer.kind());
            // After the swap a pool may run before its ReLU, so elementwise and pooling steps take their shape
            // from the running shape; products and flatten end where the model says.
            let out_shape = match layer {
                Layer::MaxPool2d(_) => pooled_shape(layer, &shape),
                Layer::Relu(_) => shape.clone(),
                _ => model.shapes()[index].clone(),
            };
            match layer {
                Layer::Linear(_) | Layer::Conv2d(_) => {
                    if pending_rescale {
                        steps.push(Step {
                            kind: StepKind::Rescale,
                            label: "rescale".into(),
                            input_len: len(&shape),
                            output_len: len(&shape),
                        });
                    }
                    let (weight, lowering, conv_positions) = match layer {
                        Layer::Linear(l) => (
                            encode_linear(l, fixed_point)?,
                            Lowering::Dense {
                                features: len(&shape),
                            },
                            None,
                        ),
                        Layer::Conv2d(c) => {
                            let [kh, kw] = c.kernel_size;
                            let geometry = Conv2dGeometry {
                                in_channels: shape[0],
                                height: shape[1],
                                width: shape[2],
                                kernel: [kh, kw],
                                stride: c.stride,
                                padding: symmetric_padding(&c.padding).unwrap_or([0, 0]),
                            };
                            (
                                encode_conv(c, fixed_point)?,
                                Lowering::Conv2d(geometry),
                                Some(out_shape[1] * out_shape[2]),
                            )
                        }
                        _ => continue,
                    };
                    let outputs = weight.outputs;
                    weights.push(weight);
                    steps.push(Step {
                        kind: StepKind::Product {
                            weight: weights.len() - 1,
                            lowering,
                            outputs,
                            conv_positions,
                        },
                        label,
                        input_len: len(&shape),
                        output_len: len(&out_shape),
                    });
                    pending_rescale = true;
                }
                Layer::Relu(_) => {
                    let (kind, label) = if pending_rescale {
                        (StepKind::RescaleRelu, format!("{label}+rescale"))
                    } else {
                        (StepKind::Relu, label)
                    };
                    steps.push(Step {
                        kind,
                        label,
                        input_len: len(&shape),
                        output_len: len(&shape),
                    });
                    pending_rescale = false;
                }
                Layer::MaxPool2d(p) => {
                    let pool = Pool2d {
                        channels: shape[0],
                        height: shape[1],
                        width: shape[2],
                        kernel: p.kernel_size,
                        stride: p.stride,
                    };
                    steps.push(Step {
                        kind: StepKind::MaxPool(pool),
                        label,
                        input_len: len(&shape),
                        output_len: len(&out_shape),
                    });
                }
                Layer::Flatten => {}
            }
            shape = out_shape;
        }
        if pending_rescale {
            steps.push(Step {
                kind: StepKind::Rescale,
                label: "rescale".into(),
                input_len: len(&shape),
                output_len: len(&shape),
            });
        }
        Ok(Plan {
            steps,
            weights,
            input_len: model.input_len(),
            output_len: model.output_len(),
            fixed_point,
            mode,
        })
    }

    /// The dealer material one inference of `batch` items consumes, in order.
    pub fn requests(&self, batch: usize) -> Vec<Request> {
        let f = self.fixed_point.frac_bits();
        let mut out = Vec::new();
        for step in &self.steps {
            let n = batch * step.input_len;
            match &step.kind {
                StepKind::Product {
                    weight,
                    lowering,
                    outputs,
                    ..
                } => {
                    if self.mode == WeightMode::Shared {
                        out.extend(requests::weight_product(
                            *weight, *lowering, batch, *outputs,
                        ));
                    }
                }
                StepKind::Rescale => out.extend(requests::trunc(n, f)),
                StepKind::RescaleRelu => out.extend(requests::trunc_relu(n, f)),
                StepKind::Relu => out.extend(requests::relu(n)),
                StepKind::MaxPool(pool) => out.extend(requests::max_pool2d(pool, batch)),
            }
        }
        out
    }

    /// The material a model setup from published weights consumes (`spdz2k`, see
    /// [`crate::private::setup_published`]): per shared weight its mask, then its bias's input mask.
    pub fn setup_requests(&self) -> Vec<Request> {
        if self.mode == WeightMode::Public {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (weight, w) in self.weights.iter().enumerate() {
            out.push(Request::WeightMask {
                weight,
                len: w.inner * w.outputs,
            });
            if let Some(b) = &w.bias {
                out.push(Request::Input { len: b.len() });
            }
        }
        out
    }

    /// Where an adversary of the protocol lab can strike in one inference of `batch` items: the number of
    /// opening rounds (one per product with a shared weight and per plain rescale, 7 per sign test) and of
    /// dealt triples used (one per such product, one AND triple set per level of AND gates of a sign test).
    /// With `authenticated` (`spdz2k`), a large product with a shared weight opens twice (its product check;
    /// see `veil_protocols::material::kinds::uses_product_check`).
    pub fn deviation_sites(&self, batch: usize, authenticated: bool) -> (usize, usize) {
        let levels = veil_protocols::material::kinds::sign_levels().len();
        let (mut openings, mut triples) = (0, 0);
        for r in self.requests(batch) {
            match r {
                Request::WeightTriple {
                    lowering,
                    batch,
                    outputs,
                    ..
                } => {
                    let rows = batch * lowering.rows_per_item();
                    let checked = authenticated
                        && veil_protocols::material::kinds::uses_product_check(
                            rows,
                            lowering.inner(),
                            outputs,
                        );
                    openings += 1 + usize::from(checked);
                    triples += 1;
                }
                Request::Triples { .. } | Request::MatTriple { .. } => {
                    openings += 1;
                    triples += 1;
                }
                Request::Trunc { .. } => openings += 1,
                Request::Sign { .. } => {
                    openings += levels + 2;
                    triples += levels;
                }
                Request::Input { .. } | Request::WeightMask { .. } => {}
            }
        }
        (openings, triples)
    }

    /// Element counts of the weight masks dealt at model setup (none for public weights).
    pub fn mask_shapes(&self) -> Vec<usize> {
        match self.mode {
            WeightMode::Shared => self.weights.iter().map(|w| w.inner * w.outputs).collect(),
            WeightMode::Public => Vec::new(),
        }
    }
}

fn pooled_shape(layer: &Layer, input: &[usize]) -> Vec<usize> {
    match (layer, input) {
        (Layer::MaxPool2d(p), [c, h, w]) => vec![
            *c,
            (h.saturating_sub(p.kernel_size[0])) / p.stride[0].max(1) + 1,
            (w.saturating_sub(p.kernel_size[1])) / p.stride[1].max(1) + 1,
        ],
        _ => input.to_vec(),
    }
}
