//! Models built from burn modules, their shape checking, and the plaintext reference forward pass in burn.
//!
//! Invariant: a [`Model`] that [`Model::new`] accepted has layers that chain: every layer's input shape is the
//! previous layer's output shape, starting from the per-item input shape, and every layer's configuration is
//! one private inference supports. Nothing later re-checks this, and nothing later panics on shapes.

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Linear, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{EngineError, Result};

/// One layer, as a burn module.
#[derive(Debug)]
pub enum Layer {
    /// Fully connected: `[features] -> [outputs]`.
    Linear(Linear),
    /// 2-D convolution over `[channels, height, width]`.
    Conv2d(Conv2d),
    /// Rectified linear unit.
    Relu(Relu),
    /// 2-D max pooling.
    MaxPool2d(MaxPool2d),
    /// `[c, h, w] -> [c * h * w]`.
    Flatten,
}

impl Layer {
    /// The layer's kind, for messages and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "linear",
            Layer::Conv2d(_) => "conv2d",
            Layer::Relu(_) => "relu",
            Layer::MaxPool2d(_) => "maxpool2d",
            Layer::Flatten => "flatten",
        }
    }
}

/// A model: a per-item input shape and a chain of layers, on a burn device.
#[derive(Debug)]
pub struct Model {
    name: String,
    input: Vec<usize>,
    layers: Vec<Layer>,
    /// Output shape of every layer, checked at construction.
    shapes: Vec<Vec<usize>>,
    device: Device,
}

/// Padding of a convolution as `[height, width]`, if symmetric and explicit (or none).
pub(crate) fn symmetric_padding(padding: &PaddingConfig2d) -> Option<[usize; 2]> {
    match *padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    }
}

fn layer_output(index: usize, layer: &Layer, input: &[usize]) -> Result<Vec<usize>> {
    let shape_err = |expected: String| EngineError::LayerShape {
        index,
        layer: layer.kind(),
        expected,
        got: input.to_vec(),
    };
    let unsupported = |what: String| EngineError::Unsupported {
        index,
        layer: layer.kind(),
        what,
    };
    match layer {
        Layer::Linear(l) => {
            let [d_in, d_out] = l.weight.val().dims();
            match input {
                [f] if *f == d_in => Ok(vec![d_out]),
                _ => Err(shape_err(format!("[{d_in}]"))),
            }
        }
        Layer::Conv2d(c) => {
            let [out, inp, kh, kw] = c.weight.val().dims();
            if c.groups != 1 {
                return Err(unsupported(format!("groups = {}", c.groups)));
            }
            if c.dilation != [1, 1] {
                return Err(unsupported(format!("dilation {:?}", c.dilation)));
            }
            let padding = symmetric_padding(&c.padding).ok_or_else(|| {
                unsupported(format!(
                    "padding {:?} (use Valid or symmetric Explicit)",
                    c.padding
                ))
            })?;
            let [ch, h, w] = input else {
                return Err(shape_err(format!("[{inp}, height, width]")));
            };
            if *ch != inp {
                return Err(shape_err(format!("[{inp}, height, width]")));
            }
            let fit = |size: usize, k: usize, s: usize, p: usize| {
                (s > 0 && k <= size + 2 * p).then(|| (size + 2 * p - k) / s + 1)
            };
            match (
                fit(*h, kh, c.stride[0], padding[0]),
                fit(*w, kw, c.stride[1], padding[1]),
            ) {
                (Some(oh), Some(ow)) => Ok(vec![out, oh, ow]),
                _ => Err(shape_err(format!(
                    "an image of at least {kh}x{kw} after padding"
                ))),
            }
        }
        Layer::Relu(_) => Ok(input.to_vec()),
        Layer::MaxPool2d(p) => {
            if p.dilation != [1, 1] || p.ceil_mode || symmetric_padding(&p.padding) != Some([0, 0])
            {
                return Err(unsupported("padding, dilation or ceil mode".into()));
            }
            let [ch, h, w] = input else {
                return Err(shape_err("[channels, height, width]".into()));
            };
            let [kh, kw] = p.kernel_size;
            if kh == 0 || kw == 0 || kh > *h || kw > *w || p.stride.contains(&0) {
                return Err(shape_err(format!("an image of at least {kh}x{kw}")));
            }
            Ok(vec![
                *ch,
                (h - kh) / p.stride[0] + 1,
                (w - kw) / p.stride[1] + 1,
            ])
        }
        Layer::Flatten => input
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .map(|n| vec![n])
            .ok_or_else(|| shape_err("a shape whose size fits in a machine word".into())),
    }
}

/// A batch in flight through burn: flat features or images.
enum Activation {
    Flat(Tensor<2>),
    Image(Tensor<4>),
}

impl Model {
    /// Checks that `layers` chain from `input` (the shape of one item) and that private inference supports
    /// each of them.
    pub fn new(
        name: impl Into<String>,
        input: Vec<usize>,
        layers: Vec<Layer>,
        device: Device,
    ) -> Result<Self> {
        if input.is_empty() || input.contains(&0) || !(input.len() == 1 || input.len() == 3) {
            return Err(EngineError::LayerShape {
                index: 0,
                layer: layers.first().map_or("input", Layer::kind),
                expected: "an input of shape [features] or [channels, height, width], no zero size"
                    .into(),
                got: input,
            });
        }
        let mut shapes = Vec::with_capacity(layers.len());
        let mut current = input.clone();
        for (index, layer) in layers.iter().enumerate() {
            current = layer_output(index, layer, &current)?;
            shapes.push(current.clone());
        }
        Ok(Self {
            name: name.into(),
            input,
            layers,
            shapes,
            device,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shape of one input item.
    pub fn input_shape(&self) -> &[usize] {
        &self.input
    }

    /// Shape of one output item.
    pub fn output_shape(&self) -> &[usize] {
        self.shapes.last().map_or(&self.input, Vec::as_slice)
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Output shape of layer `i`; input shape of layer `i + 1`.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// Input shape of layer `i`.
    pub fn layer_input(&self, i: usize) -> &[usize] {
        if i == 0 {
            &self.input
        } else {
            &self.shapes[i - 1]
        }
    }

    /// Values in one input item.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Values in one output item.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    /// The burn device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks that `input` holds a batch of `batch` items.
    pub fn check_input(&self, input: &[f32], batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(EngineError::EmptyBatch);
        }
        if input.len() != batch * self.input_len() {
            return Err(EngineError::InputShape {
                got: input.len(),
                expected: batch * self.input_len(),
                batch,
                item: self.input.clone(),
            });
        }
        Ok(())
    }

    /// The plaintext reference: the forward pass in burn, in f32. Returns `batch * output_len` values.
    pub fn forward_plain(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        self.check_input(input, batch)?;
        let data = input.to_vec();
        let mut x = match self.input.as_slice() {
            [f] => Activation::Flat(Tensor::from_data(
                TensorData::new(data, [batch, *f]),
                &self.device,
            )),
            [c, h, w] => Activation::Image(Tensor::from_data(
                TensorData::new(data, [batch, *c, *h, *w]),
                &self.device,
            )),
            other => return Err(mismatch(0, self.layers.first(), other)),
        };
        for (index, layer) in self.layers.iter().enumerate() {
            x = match (layer, x) {
                (Layer::Linear(l), Activation::Flat(t)) => Activation::Flat(l.forward(t)),
                (Layer::Conv2d(c), Activation::Image(t)) => Activation::Image(c.forward(t)),
                (Layer::Relu(r), Activation::Flat(t)) => Activation::Flat(r.forward(t)),
                (Layer::Relu(r), Activation::Image(t)) => Activation::Image(r.forward(t)),
                (Layer::MaxPool2d(p), Activation::Image(t)) => Activation::Image(p.forward(t)),
                (Layer::Flatten, Activation::Image(t)) => Activation::Flat(t.flatten(1, 3)),
                (Layer::Flatten, flat @ Activation::Flat(_)) => flat,
                // Model::new checked that the layers chain, so this arm is never taken.
                (layer, _) => return Err(mismatch(index, Some(layer), self.layer_input(index))),
            };
        }
        let data = match x {
            Activation::Flat(t) => t.try_into_data(),
            Activation::Image(t) => t.try_into_data(),
        }
        .map_err(|e| EngineError::Burn(format!("{e:?}")))?;
        data.try_into_vec::<f32>()
            .map_err(|e| EngineError::Burn(format!("{e:?}")))
    }
}

fn mismatch(index: usize, layer: Option<&Layer>, got: &[usize]) -> EngineError {
    EngineError::LayerShape {
        index,
        layer: layer.map_or("input", Layer::kind),
        expected: "the shape its kind takes".into(),
        got: got.to_vec(),
    }
}

/// Reads a burn tensor's values as f32.
pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_data()
        .map_err(|e| EngineError::Burn(format!("{e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| EngineError::Burn(format!("{e:?}")))
}
