//! Model files: a model's architecture and weights in one safetensors file, the format PyTorch users bring.
//!
//! Layout of a veil model file:
//! - tensors named after the layer's position in the chain, as PyTorch's `nn.Sequential` names them in its
//!   `state_dict`: `"{i}.weight"` and `"{i}.bias"`, in PyTorch's layout (Linear weight `[out, in]`, Conv2d
//!   weight `[out, in, kh, kw]`), dtype F32 (F64 and F16/BF16 are read and converted);
//! - the architecture (an [`Architecture`], JSON) in the file's metadata under [`ARCHITECTURE_KEY`]. A
//!   safetensors file exported from PyTorch has no such entry: give the architecture separately with
//!   [`ModelFile::from_safetensors`].
//!
//! Invariants: a loaded [`ModelFile`] has passed [`crate::Model::new`]'s shape checks, every weight has the
//! shape its layer declares and is finite, the preprocessing (if any) matches the input size with positive
//! finite scales, and nothing in a file (sizes, offsets, names, shapes) can make loading panic: the
//! `safetensors` parser bounds every offset, and every shape is checked here before burn sees it.
//!
//! The model id ([`ModelFile::id`]) is the SHA-256 of the canonical architecture JSON and every weight's
//! name, shape and little-endian f32 bytes, in layer order: two files with the same id compute the same
//! function, whatever their byte layout.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::model::{symmetric_padding, values, Layer, Model};

/// Metadata key of the architecture JSON in a veil model file.
pub const ARCHITECTURE_KEY: &str = "veil.architecture";

/// Largest model file read, bytes (a guard against reading a wrong path into memory).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Largest layer dimension accepted (inputs, outputs, channels, kernel, stride, padding).
const MAX_DIM: usize = 1 << 20;

/// Largest activation accepted per item, values: the input and every layer's output (2^24 values, 128 MiB
/// of 8-byte shares per item). Bounds what a deployed architecture can ask of a party per item.
pub const MAX_ACTIVATION_VALUES: u64 = 1 << 24;

/// One layer of an [`Architecture`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// Fully connected, `inputs -> outputs`, with bias.
    Linear {
        /// Input features.
        inputs: usize,
        /// Output features.
        outputs: usize,
    },
    /// 2-D convolution with bias, symmetric padding, no dilation or groups.
    Conv2d {
        /// `[in, out]` channels.
        channels: [usize; 2],
        /// `[height, width]` of the kernel.
        kernel: [usize; 2],
        /// `[height, width]` stride.
        stride: [usize; 2],
        /// `[height, width]` zero padding on each side.
        padding: [usize; 2],
    },
    /// Rectified linear unit.
    Relu,
    /// 2-D max pooling without padding.
    MaxPool2d {
        /// `[height, width]` window.
        kernel: [usize; 2],
        /// `[height, width]` stride.
        stride: [usize; 2],
    },
    /// `[c, h, w] -> [c * h * w]`.
    Flatten,
}

/// Public preprocessing the client applies to a raw input before encoding it: `x' = (x - mean) / scale`,
/// per feature. It is part of the model (and of its id), never of the private computation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standardize {
    /// Per-feature offset.
    pub mean: Vec<f32>,
    /// Per-feature divisor (positive).
    pub scale: Vec<f32>,
}

/// A model's public description: everything but the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Human-readable name.
    pub name: String,
    /// Shape of one input item: `[features]` or `[channels, height, width]`.
    pub input: Vec<usize>,
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
    /// Names of the output classes, if the model is a classifier (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Preprocessing of raw inputs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Standardize>,
}

/// A model with its public description, as read from or written to a model file.
#[derive(Debug)]
pub struct ModelFile {
    architecture: Architecture,
    model: Model,
    id: String,
}

pub(crate) fn invalid(what: impl Into<String>) -> EngineError {
    EngineError::ModelFile(what.into())
}

impl ModelFile {
    /// Wraps a model built in code; the architecture is read off its layers.
    pub fn from_model(
        model: Model,
        labels: Vec<String>,
        preprocess: Option<Standardize>,
    ) -> Result<Self> {
        let layers = model
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| spec_of(i, l))
            .collect::<Result<Vec<_>>>()?;
        let architecture = Architecture {
            name: model.name().to_string(),
            input: model.input_shape().to_vec(),
            layers,
            labels,
            preprocess,
        };
        check_extras(&architecture, &model)?;
        let id = model_id(&architecture, &weights_of(&model)?)?;
        Ok(Self {
            architecture,
            model,
            id,
        })
    }

    /// Reads a model file: a safetensors file or a burn record ([`crate::burn_record`]), told apart by content,
    /// never by name. The architecture is the one in the file's metadata or in its sidecar
    /// ([`crate::burn_record::sidecar_path`]); when both exist they must be equal.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = read_bounded(path, MAX_FILE_BYTES)?;
        crate::burn_record::parse_file(path, &bytes, device)
    }

    /// Reads a safetensors file exported from PyTorch (`nn.Sequential` names) with a separate architecture.
    pub fn from_safetensors(
        path: &Path,
        architecture: Architecture,
        device: &Device,
    ) -> Result<Self> {
        let bytes = read_bounded(path, MAX_FILE_BYTES)?;
        Self::parse(&bytes, Some(architecture), device)
    }

    /// Parses a model file's bytes; `architecture` overrides (or supplies) the one in the metadata.
    pub fn parse(
        bytes: &[u8],
        architecture: Option<Architecture>,
        device: &Device,
    ) -> Result<Self> {
        let (_, metadata) = SafeTensors::read_metadata(bytes)
            .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
        let architecture = match architecture {
            Some(a) => a,
            None => {
                let text = metadata
                    .metadata()
                    .as_ref()
                    .and_then(|m| m.get(ARCHITECTURE_KEY))
                    .ok_or_else(|| {
                        invalid(format!(
                            "the file has no `{ARCHITECTURE_KEY}` metadata: give the architecture separately"
                        ))
                    })?;
                serde_json::from_str(text)
                    .map_err(|e| invalid(format!("architecture metadata: {e}")))?
            }
        };
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
        let mut weights = Vec::new();
        let mut layers = Vec::with_capacity(architecture.layers.len());
        let mut used = 0usize;
        for (i, spec) in architecture.layers.iter().enumerate() {
            check_spec(i, spec)?;
            let layer = match *spec {
                LayerSpec::Linear { inputs, outputs } => {
                    let w = read_tensor(&tensors, &format!("{i}.weight"), &[outputs, inputs])?;
                    let b = read_tensor(&tensors, &format!("{i}.bias"), &[outputs])?;
                    used += 2;
                    // PyTorch stores [out, in]; burn's Linear holds [in, out].
                    let transposed = transpose(&w, outputs, inputs);
                    let mut l = LinearConfig::new(inputs, outputs).init(device);
                    l.weight = Param::from_tensor(Tensor::from_data(
                        TensorData::new(transposed, [inputs, outputs]),
                        device,
                    ));
                    l.bias = Some(Param::from_tensor(Tensor::from_data(
                        TensorData::new(b.clone(), [outputs]),
                        device,
                    )));
                    weights.push((format!("{i}.weight"), vec![outputs, inputs], w));
                    weights.push((format!("{i}.bias"), vec![outputs], b));
                    Layer::Linear(l)
                }
                LayerSpec::Conv2d {
                    channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    let shape = [channels[1], channels[0], kernel[0], kernel[1]];
                    let w = read_tensor(&tensors, &format!("{i}.weight"), &shape)?;
                    let b = read_tensor(&tensors, &format!("{i}.bias"), &[channels[1]])?;
                    used += 2;
                    let mut c = Conv2dConfig::new(channels, kernel)
                        .with_stride(stride)
                        .with_padding(PaddingConfig2d::Explicit(
                            padding[0], padding[1], padding[0], padding[1],
                        ))
                        .init(device);
                    c.weight = Param::from_tensor(Tensor::from_data(
                        TensorData::new(w.clone(), shape),
                        device,
                    ));
                    c.bias = Some(Param::from_tensor(Tensor::from_data(
                        TensorData::new(b.clone(), [channels[1]]),
                        device,
                    )));
                    weights.push((format!("{i}.weight"), shape.to_vec(), w));
                    weights.push((format!("{i}.bias"), vec![channels[1]], b));
                    Layer::Conv2d(c)
                }
                LayerSpec::Relu => Layer::Relu(Relu::new()),
                LayerSpec::MaxPool2d { kernel, stride } => {
                    Layer::MaxPool2d(MaxPool2dConfig::new(kernel).with_strides(stride).init())
                }
                LayerSpec::Flatten => Layer::Flatten,
            };
            layers.push(layer);
        }
        let extra = tensors.len().saturating_sub(used);
        if extra > 0 {
            let mut names: Vec<String> = tensors
                .names()
                .into_iter()
                .filter(|n| !weights.iter().any(|(w, _, _)| w == *n))
                .map(str::to_string)
                .collect();
            names.sort();
            names.truncate(5);
            return Err(invalid(format!(
                "{extra} tensor(s) belong to no layer of the architecture (e.g. {names:?})"
            )));
        }
        let model = Model::new(
            architecture.name.clone(),
            architecture.input.clone(),
            layers,
            device.clone(),
        )?;
        check_extras(&architecture, &model)?;
        let id = model_id(&architecture, &weights)?;
        Ok(Self {
            architecture,
            model,
            id,
        })
    }

    /// Writes the model as a veil model file (architecture in the metadata).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|e| invalid(format!("writing {}: {e}", path.display())))
    }

    /// The bytes of the veil model file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let weights = weights_of(&self.model)?;
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = weights
            .iter()
            .map(|(name, shape, v)| (name.clone(), shape.clone(), le_bytes(v)))
            .collect();
        let architecture = serde_json::to_string(&self.architecture)
            .map_err(|e| invalid(format!("architecture: {e}")))?;
        let metadata = HashMap::from([(ARCHITECTURE_KEY.to_string(), architecture)]);
        serialize_f32(&raw, Some(metadata))
    }

    /// Layers `range` of this model, with their weights, as a model of their own (see
    /// [`stage_architecture`]).
    pub fn stage(&self, range: std::ops::Range<usize>, device: &Device) -> Result<ModelFile> {
        let architecture = stage_architecture(&self.architecture, range.clone())?;
        let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, shape, values) in weights_of(&self.model)? {
            let Some((index, rest)) = name.split_once('.') else {
                continue;
            };
            let Ok(i) = index.parse::<usize>() else {
                continue;
            };
            if range.contains(&i) {
                raw.push((
                    format!("{}.{rest}", i - range.start),
                    shape,
                    le_bytes(&values),
                ));
            }
        }
        ModelFile::parse(&serialize_f32(&raw, None)?, Some(architecture), device)
    }

    /// The model's public description.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, consuming the file.
    pub fn into_model(self) -> Model {
        self.model
    }

    /// The model id: hex SHA-256 of the architecture and weights (see the module doc).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Applies the public preprocessing to `batch` raw items and checks them: the right size, every value
    /// finite before and after. This is the client's check before anything is encoded or sent.
    pub fn prepare_input(&self, raw: &[f32], batch: usize) -> Result<Vec<f32>> {
        self.model.check_input(raw, batch)?;
        if let Some(i) = raw.iter().position(|x| !x.is_finite()) {
            return Err(EngineError::NonFinite { index: i });
        }
        let Some(p) = &self.architecture.preprocess else {
            return Ok(raw.to_vec());
        };
        // One entry per feature, or per channel of an image (channel-major items): `group` consecutive values
        // of an item share an entry. check_extras made `input_len` a multiple of the entry count.
        let item = self.model.input_len();
        let group = item / p.mean.len();
        let out: Vec<f32> = raw
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let k = (i % item) / group;
                (x - p.mean[k]) / p.scale[k]
            })
            .collect();
        if let Some(i) = out.iter().position(|x| !x.is_finite()) {
            return Err(EngineError::NonFinite { index: i });
        }
        Ok(out)
    }

    /// The label of output class `class`, or its number if the model names no classes.
    pub fn label(&self, class: usize) -> String {
        self.architecture
            .labels
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }
}

/// Index of the largest value (the first one on ties); `None` for an empty slice.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The bytes of `path`, refused when the file is larger than `max` bytes (a guard against reading a wrong
/// path into memory).
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
    if meta.len() > max {
        return Err(invalid(format!(
            "{} is {} bytes, more than the {max} allowed",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| invalid(format!("reading {}: {e}", path.display())))
}

fn check_spec(i: usize, spec: &LayerSpec) -> Result<()> {
    let ok = |d: usize, zero_ok: bool| (zero_ok || d > 0) && d <= MAX_DIM;
    let good = match spec {
        LayerSpec::Linear { inputs, outputs } => ok(*inputs, false) && ok(*outputs, false),
        LayerSpec::Conv2d {
            channels,
            kernel,
            stride,
            padding,
        } => {
            channels
                .iter()
                .chain(kernel)
                .chain(stride)
                .all(|d| ok(*d, false))
                && padding.iter().all(|d| ok(*d, true))
        }
        LayerSpec::MaxPool2d { kernel, stride } => {
            kernel.iter().chain(stride).all(|d| ok(*d, false))
        }
        LayerSpec::Relu | LayerSpec::Flatten => true,
    };
    if good {
        Ok(())
    } else {
        Err(invalid(format!(
            "layer {i}: sizes must be positive (padding may be 0) and at most {MAX_DIM}: {spec:?}"
        )))
    }
}

/// Checks what [`Model::new`] does not: labels and preprocessing against the model's sizes.
fn check_extras(a: &Architecture, model: &Model) -> Result<()> {
    if !a.labels.is_empty() && a.labels.len() != model.output_len() {
        return Err(invalid(format!(
            "{} labels for {} outputs",
            a.labels.len(),
            model.output_len()
        )));
    }
    if let Some(p) = &a.preprocess {
        let n = model.input_len();
        // One value per feature, or one per channel of an image input (broadcast over its pixels).
        if p.mean.len() != p.scale.len() || p.mean.is_empty() || !n.is_multiple_of(p.mean.len()) {
            return Err(invalid(format!(
                "preprocessing has {} means and {} scales for an input of {n} values",
                p.mean.len(),
                p.scale.len()
            )));
        }
        if p.mean.iter().any(|m| !m.is_finite())
            || p.scale.iter().any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(invalid(
                "preprocessing needs finite means and positive finite scales",
            ));
        }
    }
    Ok(())
}

fn spec_of(i: usize, layer: &Layer) -> Result<LayerSpec> {
    Ok(match layer {
        Layer::Linear(l) => {
            let [inputs, outputs] = l.weight.val().dims();
            if l.bias.is_none() {
                return Err(invalid(format!(
                    "layer {i}: a Linear layer without bias cannot be saved"
                )));
            }
            LayerSpec::Linear { inputs, outputs }
        }
        Layer::Conv2d(c) => {
            let [out, inp, kh, kw] = c.weight.val().dims();
            let padding = symmetric_padding(&c.padding).ok_or_else(|| {
                invalid(format!(
                    "layer {i}: only symmetric explicit padding is saved"
                ))
            })?;
            if c.bias.is_none() || c.groups != 1 || c.dilation != [1, 1] {
                return Err(invalid(format!(
                    "layer {i}: only Conv2d with bias, one group and no dilation is saved"
                )));
            }
            LayerSpec::Conv2d {
                channels: [inp, out],
                kernel: [kh, kw],
                stride: c.stride,
                padding,
            }
        }
        Layer::Relu(_) => LayerSpec::Relu,
        Layer::MaxPool2d(p) => pool_spec(i, p)?,
        Layer::Flatten => LayerSpec::Flatten,
    })
}

fn pool_spec(i: usize, p: &MaxPool2d) -> Result<LayerSpec> {
    if symmetric_padding(&p.padding) != Some([0, 0]) || p.dilation != [1, 1] || p.ceil_mode {
        return Err(invalid(format!(
            "layer {i}: only max pooling without padding, dilation or ceil mode is saved"
        )));
    }
    Ok(LayerSpec::MaxPool2d {
        kernel: p.kernel_size,
        stride: p.stride,
    })
}

type NamedWeights = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Every weight in PyTorch layout and file order.
fn weights_of(model: &Model) -> Result<NamedWeights> {
    let mut out = Vec::new();
    for (i, layer) in model.layers().iter().enumerate() {
        let (w, shape, b) = match layer {
            Layer::Linear(l) => {
                let [inputs, outputs] = l.weight.val().dims();
                let w = transpose(&values(l.weight.val())?, inputs, outputs);
                (w, vec![outputs, inputs], bias(&l.bias)?)
            }
            Layer::Conv2d(c) => {
                let shape = c.weight.val().dims().to_vec();
                (values(c.weight.val())?, shape, bias(&c.bias)?)
            }
            _ => continue,
        };
        let n = b.len();
        out.push((format!("{i}.weight"), shape, w));
        out.push((format!("{i}.bias"), vec![n], b));
    }
    Ok(out)
}

fn bias(b: &Option<Param<Tensor<1>>>) -> Result<Vec<f32>> {
    match b {
        Some(b) => values(b.val()),
        None => Err(invalid("a layer without bias cannot be saved")),
    }
}

/// `rows x cols` row-major -> `cols x rows` row-major.
pub(crate) fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

pub(crate) fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reads tensor `name`, checks its shape and finiteness, and converts it to f32.
fn read_tensor(tensors: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = tensors
        .tensor(name)
        .map_err(|_| invalid(format!("missing tensor `{name}`")))?;
    if t.shape() != shape {
        return Err(invalid(format!(
            "tensor `{name}` has shape {:?}, the architecture needs {shape:?}",
            t.shape()
        )));
    }
    let kind = match t.dtype() {
        Dtype::F32 => FloatKind::F32,
        Dtype::F64 => FloatKind::F64,
        Dtype::F16 => FloatKind::F16,
        Dtype::BF16 => FloatKind::BF16,
        other => {
            return Err(invalid(format!(
                "tensor `{name}` has dtype {other:?}; F32, F64, F16 and BF16 are read"
            )))
        }
    };
    decode_floats(name, kind, t.data(), shape)
}

/// The float encodings a weight file may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatKind {
    F32,
    F64,
    F16,
    BF16,
}

impl FloatKind {
    fn width(self) -> usize {
        match self {
            FloatKind::F32 => 4,
            FloatKind::F64 => 8,
            FloatKind::F16 | FloatKind::BF16 => 2,
        }
    }
}

/// Tensor `name`'s little-endian `data` of `kind` as f32 values, checked: exactly the byte length its
/// `shape` needs (without overflow) and every value finite.
pub(crate) fn decode_floats(
    name: &str,
    kind: FloatKind,
    data: &[u8],
    shape: &[usize],
) -> Result<Vec<f32>> {
    let count = shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or_else(|| invalid(format!("tensor `{name}`: shape {shape:?} is too large")))?;
    let width = kind.width();
    if count.checked_mul(width) != Some(data.len()) {
        return Err(invalid(format!(
            "tensor `{name}` has {} bytes, its shape {shape:?} needs {count} values of {width} bytes",
            data.len()
        )));
    }
    let values: Vec<f32> = match kind {
        FloatKind::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        FloatKind::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        FloatKind::F16 => data
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        FloatKind::BF16 => data
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect(),
    };
    if let Some(i) = values.iter().position(|x| !x.is_finite()) {
        return Err(invalid(format!(
            "tensor `{name}` holds a non-finite value at {i}"
        )));
    }
    Ok(values)
}

/// A safetensors file of f32 tensors given as (name, shape, little-endian bytes), with `metadata`.
pub(crate) fn serialize_f32(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| invalid(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata).map_err(|e| invalid(format!("serialising: {e}")))
}

/// IEEE 754 half -> single precision (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            let f = (f << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (f << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// The values in a shape, with checked arithmetic, at most [`MAX_ACTIVATION_VALUES`].
fn activation_values(what: &str, shape: &[usize]) -> Result<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= MAX_ACTIVATION_VALUES)
        .ok_or_else(|| {
            invalid(format!(
                "{what} has shape {shape:?}, more than {MAX_ACTIVATION_VALUES} values per item"
            ))
        })
}

/// The weights (and biases) of one layer, from its spec; `None` when the count overflows.
fn spec_weights(spec: &LayerSpec) -> Option<u64> {
    match *spec {
        LayerSpec::Linear { inputs, outputs } => (inputs as u64)
            .checked_mul(outputs as u64)?
            .checked_add(outputs as u64),
        LayerSpec::Conv2d {
            channels, kernel, ..
        } => [channels[1], kernel[0], kernel[1]]
            .iter()
            .try_fold(channels[0] as u64, |acc, &d| acc.checked_mul(d as u64))?
            .checked_add(channels[1] as u64),
        LayerSpec::Relu | LayerSpec::MaxPool2d { .. } | LayerSpec::Flatten => Some(0),
    }
}

/// The shape one layer of spec `spec` produces from `input`, with checked arithmetic (the same rules as
/// [`Model::new`] applies to the built layer).
fn spec_output(i: usize, spec: &LayerSpec, input: &[usize]) -> Result<Vec<usize>> {
    let mismatch = |expected: &str| {
        invalid(format!(
            "layer {i} ({spec:?}) expects {expected}, got {input:?}"
        ))
    };
    match *spec {
        LayerSpec::Linear { inputs, outputs } => match input {
            [f] if *f == inputs => Ok(vec![outputs]),
            _ => Err(mismatch(&format!("[{inputs}]"))),
        },
        LayerSpec::Conv2d {
            channels,
            kernel,
            stride,
            padding,
        } => {
            let [ch, h, w] = input else {
                return Err(mismatch("[channels, height, width]"));
            };
            if *ch != channels[0] {
                return Err(mismatch(&format!("[{}, height, width]", channels[0])));
            }
            let fit = |size: usize, k: usize, s: usize, p: usize| {
                let padded = size.checked_add(p.checked_mul(2)?)?;
                (s > 0 && k <= padded).then(|| (padded - k) / s + 1)
            };
            match (
                fit(*h, kernel[0], stride[0], padding[0]),
                fit(*w, kernel[1], stride[1], padding[1]),
            ) {
                (Some(oh), Some(ow)) => Ok(vec![channels[1], oh, ow]),
                _ => Err(mismatch(
                    "an image at least the kernel's size after padding",
                )),
            }
        }
        LayerSpec::Relu => Ok(input.to_vec()),
        LayerSpec::MaxPool2d { kernel, stride } => {
            let [ch, h, w] = input else {
                return Err(mismatch("[channels, height, width]"));
            };
            if kernel.contains(&0) || stride.contains(&0) || kernel[0] > *h || kernel[1] > *w {
                return Err(mismatch("an image at least the window's size"));
            }
            Ok(vec![
                *ch,
                (h - kernel[0]) / stride[0] + 1,
                (w - kernel[1]) / stride[1] + 1,
            ])
        }
        LayerSpec::Flatten => {
            let n = activation_values(&format!("layer {i}'s input"), input)?;
            Ok(vec![usize::try_from(n).map_err(|_| {
                mismatch("a flattened size that fits in memory")
            })?])
        }
    }
}

/// Checks `architecture` from its specs alone, building no tensor (cheap for any architecture, so it may
/// run on every request): every spec in bounds, the layers chain from the input, the input and every
/// activation at most [`MAX_ACTIVATION_VALUES`] values per item, the weights at most `MAX_FILE_BYTES` as
/// f32, labels and preprocessing matching the sizes. Returns each layer's output shape (one item).
/// Invariant: an architecture this accepts is one [`skeleton`] builds, with the same shapes.
pub fn layer_shapes(architecture: &Architecture) -> Result<Vec<Vec<usize>>> {
    let input = &architecture.input;
    if input.is_empty() || input.contains(&0) || !(input.len() == 1 || input.len() == 3) {
        return Err(invalid(format!(
            "the input must have shape [features] or [channels, height, width], no zero size: {input:?}"
        )));
    }
    let input_len = activation_values("the input", input)?;
    let mut shapes = Vec::with_capacity(architecture.layers.len());
    let mut current = input.clone();
    let mut weights: u64 = 0;
    for (i, spec) in architecture.layers.iter().enumerate() {
        check_spec(i, spec)?;
        weights = spec_weights(spec)
            .and_then(|n| weights.checked_add(n))
            .filter(|&n| n.saturating_mul(4) <= MAX_FILE_BYTES)
            .ok_or_else(|| {
                invalid(format!(
                    "the architecture's weights up to layer {i} are more than a model file may hold"
                ))
            })?;
        current = spec_output(i, spec, &current)?;
        activation_values(&format!("layer {i}'s output"), &current)?;
        shapes.push(current.clone());
    }
    if architecture.layers.is_empty() {
        return Err(invalid("the architecture has no layers"));
    }
    let output_len = activation_values("the output", &current)?;
    if !architecture.labels.is_empty() && architecture.labels.len() as u64 != output_len {
        return Err(invalid(format!(
            "{} labels for {output_len} outputs",
            architecture.labels.len()
        )));
    }
    if let Some(p) = &architecture.preprocess {
        if p.mean.len() != p.scale.len()
            || p.mean.is_empty()
            || !input_len.is_multiple_of(p.mean.len() as u64)
        {
            return Err(invalid(format!(
                "preprocessing has {} means and {} scales for an input of {input_len} values",
                p.mean.len(),
                p.scale.len()
            )));
        }
        if p.mean.iter().any(|m| !m.is_finite())
            || p.scale.iter().any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(invalid(
                "preprocessing needs finite means and positive finite scales",
            ));
        }
    }
    Ok(shapes)
}

/// The weights (and biases) of `architecture`, from its specs (checked by [`layer_shapes`]).
pub fn weight_count(architecture: &Architecture) -> Result<u64> {
    layer_shapes(architecture)?;
    Ok(architecture
        .layers
        .iter()
        .map(|s| spec_weights(s).unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add))
}

/// A model with `architecture`'s layers and every weight zero: what a party that holds only weight shares
/// (or receives public weights per job) needs to compile the public plan. The architecture passes the same
/// checks as in a model file, and its weights may total at most `MAX_FILE_BYTES` as f32 (so a hostile
/// architecture cannot make this allocate without bound).
pub fn skeleton(architecture: &Architecture, device: &Device) -> Result<Model> {
    layer_shapes(architecture)?;
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, spec) in architecture.layers.iter().enumerate() {
        check_spec(i, spec)?;
        match *spec {
            LayerSpec::Linear { inputs, outputs } => {
                shapes.push((format!("{i}.weight"), vec![outputs, inputs]));
                shapes.push((format!("{i}.bias"), vec![outputs]));
            }
            LayerSpec::Conv2d {
                channels, kernel, ..
            } => {
                shapes.push((
                    format!("{i}.weight"),
                    vec![channels[1], channels[0], kernel[0], kernel[1]],
                ));
                shapes.push((format!("{i}.bias"), vec![channels[1]]));
            }
            _ => {}
        }
    }
    let mut total: u64 = 0;
    for (_, shape) in &shapes {
        let n = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| invalid("the architecture's weights overflow"))?;
        total = total.saturating_add(n);
    }
    if total.saturating_mul(4) > MAX_FILE_BYTES {
        return Err(invalid(format!(
            "the architecture has {total} weights, more than a model file may hold"
        )));
    }
    let zeros: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let bytes = vec![0u8; 4 * shape.iter().product::<usize>()];
            (name, shape, bytes)
        })
        .collect();
    let bytes = serialize_f32(&zeros, None)?;
    Ok(ModelFile::parse(&bytes, Some(architecture.clone()), device)?.into_model())
}

/// The architecture of layers `range` of `architecture`, as a model of its own (one stage of a model split
/// across committees): its input is the shape entering layer `range.start`; the preprocessing stays with
/// the first stage and the labels with the last. Chaining the stages computes the whole model.
pub fn stage_architecture(
    architecture: &Architecture,
    range: std::ops::Range<usize>,
) -> Result<Architecture> {
    let n = architecture.layers.len();
    if range.start >= range.end || range.end > n {
        return Err(invalid(format!(
            "stage {range:?} is not a non-empty range of the model's {n} layers"
        )));
    }
    let shapes = layer_shapes(architecture)?;
    Ok(Architecture {
        name: format!(
            "{} [layers {}..{}]",
            architecture.name, range.start, range.end
        ),
        input: match range.start {
            0 => architecture.input.clone(),
            k => shapes[k - 1].clone(),
        },
        labels: if range.end == n {
            architecture.labels.clone()
        } else {
            Vec::new()
        },
        preprocess: if range.start == 0 {
            architecture.preprocess.clone()
        } else {
            None
        },
        layers: architecture.layers[range].to_vec(),
    })
}

/// The memory one execution party holds per layer of `architecture`, bytes (for partitioning into stages):
/// three words per weight (its share, mask and opened masked value) plus its output activations, 8 bytes
/// each. Computed from the specs ([`layer_shapes`]): no tensor is built, and no product can wrap.
pub fn layer_memory(architecture: &Architecture) -> Result<Vec<u64>> {
    let shapes = layer_shapes(architecture)?;
    architecture
        .layers
        .iter()
        .zip(&shapes)
        .map(|(spec, shape)| {
            let weights = spec_weights(spec).unwrap_or(u64::MAX);
            let activations = activation_values("an activation", shape)?;
            Ok(weights
                .saturating_mul(24)
                .saturating_add(activations.saturating_mul(8)))
        })
        .collect()
}

fn model_id(architecture: &Architecture, weights: &NamedWeights) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"veil-model-v1\0");
    let arch =
        serde_json::to_vec(architecture).map_err(|e| invalid(format!("architecture: {e}")))?;
    h.update((arch.len() as u64).to_le_bytes());
    h.update(&arch);
    for (name, shape, values) in weights {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(le_bytes(values));
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads;

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn save_and_load_round_trip_keeps_function_and_id() {
        let d = device();
        for name in ["network-a", "lenet"] {
            let model = workloads::by_name(name, 3, &d).unwrap().unwrap();
            let file = ModelFile::from_model(model, Vec::new(), None).unwrap();
            let bytes = file.to_bytes().unwrap();
            let back = ModelFile::parse(&bytes, None, &d).unwrap();
            assert_eq!(back.id(), file.id());
            assert_eq!(back.architecture(), file.architecture());
            let x = workloads::sample_input(file.model(), 2, 9);
            assert_eq!(
                back.model().forward_plain(&x, 2).unwrap(),
                file.model().forward_plain(&x, 2).unwrap()
            );
        }
    }

    #[test]
    fn a_skeleton_compiles_to_the_plan_of_the_real_model_and_huge_architectures_are_refused() {
        let d = device();
        for name in ["network-a", "lenet"] {
            let file = ModelFile::from_model(
                workloads::by_name(name, 3, &d).unwrap().unwrap(),
                vec![],
                None,
            )
            .unwrap();
            let skeleton = skeleton(file.architecture(), &d).unwrap();
            let fp = veil_protocols::ring::FixedPoint::new(16).unwrap();
            let real = crate::Plan::compile(file.model(), fp, crate::WeightMode::Shared).unwrap();
            let bare = crate::Plan::compile(&skeleton, fp, crate::WeightMode::Shared).unwrap();
            assert_eq!(real.mask_shapes(), bare.mask_shapes());
            assert_eq!(real.requests(2), bare.requests(2));
            assert!(bare
                .weights
                .iter()
                .all(|w| w.matrix.iter().all(|&v| v == 0)));
        }
        let huge = Architecture {
            name: "huge".into(),
            input: vec![1 << 20],
            layers: vec![LayerSpec::Linear {
                inputs: 1 << 20,
                outputs: 1 << 20,
            }],
            labels: vec![],
            preprocess: None,
        };
        let err = skeleton(&huge, &d).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn shapes_from_specs_match_the_built_model_and_hostile_shapes_are_refused() {
        let d = device();
        for name in ["network-a", "lenet"] {
            let model = workloads::by_name(name, 3, &d).unwrap().unwrap();
            let file = ModelFile::from_model(model, vec![], None).unwrap();
            let shapes = layer_shapes(file.architecture()).unwrap();
            let n = file.architecture().layers.len();
            assert_eq!(shapes.len(), n);
            for (i, shape) in shapes.iter().enumerate() {
                assert_eq!(
                    shape.as_slice(),
                    file.model().layer_input(i + 1),
                    "{name} {i}"
                );
            }
            assert_eq!(
                weight_count(file.architecture()).unwrap(),
                file.architecture()
                    .layers
                    .iter()
                    .map(|s| spec_weights(s).unwrap())
                    .sum::<u64>()
            );
        }
        // The audit's probe: an input of 2^40 values per item is refused before anything is allocated.
        let wide = Architecture {
            name: "wide".into(),
            input: vec![1, 1 << 20, 1 << 20],
            layers: vec![
                LayerSpec::Flatten,
                LayerSpec::Linear {
                    inputs: 1,
                    outputs: 1,
                },
            ],
            labels: vec![],
            preprocess: None,
        };
        let err = layer_shapes(&wide).unwrap_err().to_string();
        assert!(err.contains("more than 16777216 values"), "{err}");
        assert!(layer_memory(&wide).is_err());
        assert!(skeleton(&wide, &d).is_err());
        // A Flatten whose product would wrap a 64-bit word is refused, not wrapped.
        let wrap = Architecture {
            name: "wrap".into(),
            input: vec![1 << 22, 1 << 21, 1 << 21],
            layers: vec![LayerSpec::Flatten],
            labels: vec![],
            preprocess: None,
        };
        assert!(layer_shapes(&wrap).is_err());
        // A chain that does not fit is refused with the layer's index.
        let broken = Architecture {
            name: "broken".into(),
            input: vec![4],
            layers: vec![LayerSpec::Linear {
                inputs: 5,
                outputs: 1,
            }],
            labels: vec![],
            preprocess: None,
        };
        assert!(layer_shapes(&broken)
            .unwrap_err()
            .to_string()
            .contains("layer 0"));
    }

    #[test]
    fn stages_chain_to_the_whole_model() {
        let d = device();
        let file = ModelFile::from_model(
            workloads::by_name("lenet", 3, &d).unwrap().unwrap(),
            vec![],
            None,
        )
        .unwrap();
        let a = file.architecture();
        let n = a.layers.len();
        let memory = layer_memory(a).unwrap();
        assert_eq!(memory.len(), n);
        assert!(memory.iter().all(|&m| m > 0));
        let k = n / 2;
        let first = stage_architecture(a, 0..k).unwrap();
        let second = stage_architecture(a, k..n).unwrap();
        assert_eq!(first.input, a.input);
        assert_eq!(first.layers.len() + second.layers.len(), n);
        // The second stage takes what the first produces.
        let m1 = skeleton(&first, &d).unwrap();
        assert_eq!(m1.output_shape(), second.input.as_slice());
        // With weights: the stages chained compute the whole model.
        let (s1, s2) = (file.stage(0..k, &d).unwrap(), file.stage(k..n, &d).unwrap());
        let x = workloads::sample_input(file.model(), 1, 4);
        let mid = s1.model().forward_plain(&x, 1).unwrap();
        assert_eq!(
            s2.model().forward_plain(&mid, 1).unwrap(),
            file.model().forward_plain(&x, 1).unwrap()
        );
        assert!(stage_architecture(a, k..k).is_err());
        assert!(stage_architecture(a, 0..n + 1).is_err());
    }

    #[test]
    fn ids_differ_when_one_weight_differs() {
        let d = device();
        let a = ModelFile::from_model(workloads::network_a(1, &d).unwrap(), vec![], None).unwrap();
        let b = ModelFile::from_model(workloads::network_a(2, &d).unwrap(), vec![], None).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().len(), 64);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let d = device();
        let file =
            ModelFile::from_model(workloads::network_a(1, &d).unwrap(), vec![], None).unwrap();
        let bytes = file.to_bytes().unwrap();
        // Truncations at many points, and garbage.
        for cut in [0, 1, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                ModelFile::parse(&bytes[..cut], None, &d).is_err(),
                "cut {cut}"
            );
        }
        assert!(ModelFile::parse(&[0xff; 64], None, &d).is_err());
        // A wrong architecture: shapes do not match the tensors.
        let mut arch = file.architecture().clone();
        arch.layers[0] = LayerSpec::Linear {
            inputs: 784,
            outputs: 64,
        };
        let err = ModelFile::parse(&bytes, Some(arch), &d).unwrap_err();
        assert!(err.to_string().contains("shape"), "{err}");
        // Architecture that does not chain.
        let mut arch = file.architecture().clone();
        arch.input = vec![10];
        assert!(ModelFile::parse(&bytes, Some(arch), &d).is_err());
        // Zero sizes are rejected before burn sees them.
        let mut arch = file.architecture().clone();
        arch.layers[0] = LayerSpec::Linear {
            inputs: 0,
            outputs: 128,
        };
        assert!(ModelFile::parse(&bytes, Some(arch), &d).is_err());
    }

    #[test]
    fn non_finite_weights_and_extra_tensors_are_rejected() {
        let d = device();
        let arch = Architecture {
            name: "tiny".into(),
            input: vec![2],
            layers: vec![LayerSpec::Linear {
                inputs: 2,
                outputs: 1,
            }],
            labels: vec![],
            preprocess: None,
        };
        let make = |w: [f32; 2], extra: bool| {
            let wb = le_bytes(&w);
            let bb = le_bytes(&[0.5]);
            let xb = le_bytes(&[1.0]);
            let mut views = vec![
                (
                    "0.weight".to_string(),
                    TensorView::new(Dtype::F32, vec![1, 2], &wb).unwrap(),
                ),
                (
                    "0.bias".to_string(),
                    TensorView::new(Dtype::F32, vec![1], &bb).unwrap(),
                ),
            ];
            if extra {
                views.push((
                    "9.weight".to_string(),
                    TensorView::new(Dtype::F32, vec![1], &xb).unwrap(),
                ));
            }
            safetensors::serialize(views, None).unwrap()
        };
        let ok = ModelFile::parse(&make([1.0, -2.0], false), Some(arch.clone()), &d).unwrap();
        assert_eq!(ok.model().forward_plain(&[3.0, 1.0], 1).unwrap(), vec![1.5]);
        let err =
            ModelFile::parse(&make([f32::NAN, 1.0], false), Some(arch.clone()), &d).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
        let err = ModelFile::parse(&make([1.0, 1.0], true), Some(arch.clone()), &d).unwrap_err();
        assert!(err.to_string().contains("belong to no layer"), "{err}");
        // Without architecture metadata the file needs one given.
        let err = ModelFile::parse(&make([1.0, 1.0], false), None, &d).unwrap_err();
        assert!(err.to_string().contains(ARCHITECTURE_KEY), "{err}");
    }

    #[test]
    fn prepare_input_standardises_and_rejects_bad_values() {
        let d = device();
        let model = workloads::network_a(1, &d).unwrap();
        let pre = Standardize {
            mean: vec![0.5; 784],
            scale: vec![2.0; 784],
        };
        let file = ModelFile::from_model(model, vec![], Some(pre)).unwrap();
        let x = vec![1.5f32; 784];
        assert_eq!(file.prepare_input(&x, 1).unwrap(), vec![0.5f32; 784]);
        let mut bad = x.clone();
        bad[3] = f32::NAN;
        assert!(matches!(
            file.prepare_input(&bad, 1),
            Err(EngineError::NonFinite { index: 3 })
        ));
        bad[3] = f32::INFINITY;
        assert!(file.prepare_input(&bad, 1).is_err());
        assert!(file.prepare_input(&x[..100], 1).is_err());
    }

    #[test]
    fn per_channel_preprocessing_applies_to_each_channel_plane() {
        let d = device();
        let model = workloads::lenet(1, &d).unwrap(); // input [1, 28, 28]: one channel
        let pre = Standardize {
            mean: vec![1.0],
            scale: vec![4.0],
        };
        let file = ModelFile::from_model(model, vec![], Some(pre)).unwrap();
        let x = vec![5.0f32; 2 * 784];
        assert_eq!(file.prepare_input(&x, 2).unwrap(), vec![1.0f32; 2 * 784]);
        // Two entries for 784 values: the first 392 use entry 0, the rest entry 1.
        let model = workloads::network_a(1, &d).unwrap();
        let pre = Standardize {
            mean: vec![0.0, 10.0],
            scale: vec![1.0, 2.0],
        };
        let file = ModelFile::from_model(model, vec![], Some(pre)).unwrap();
        let out = file.prepare_input(&vec![10.0f32; 784], 1).unwrap();
        assert_eq!(out[391], 10.0);
        assert_eq!(out[392], 0.0);
    }

    #[test]
    fn half_precision_converts_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
    }
}
