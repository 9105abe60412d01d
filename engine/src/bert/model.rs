//! A BERT encoder built from burn modules, loaded from a Hugging Face `model.safetensors`, and its plaintext
//! forward pass with sentence-transformers' mean pooling and L2 normalisation.
//!
//! Parameter names follow `BertModel` (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, ...). PyTorch stores a Linear weight as `[out, in]`; burn's
//! [`Linear`] holds `[in, out]`, so weights are transposed on load. LayerNorm `weight`/`bias` become burn's
//! `gamma`/`beta`.
//!
//! Invariants: every tensor has the shape the configuration implies and only finite values (checked before
//! burn sees it); a loaded [`Bert`] runs any token sequence of length `1..=max_positions` with ids below the
//! vocabulary size and token type 0, and [`Bert::embed`] checks both instead of letting burn panic.

use std::path::Path;

use burn::module::Param;
use burn::nn::{
    Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use super::config::BertConfig;
use crate::error::{EngineError, Result};
use crate::model::values;

/// Largest `model.safetensors` read, bytes.
const MAX_WEIGHTS_BYTES: u64 = 2 << 30;

/// Self-attention and feed-forward block of one encoder layer.
#[derive(Debug)]
pub struct EncoderLayer {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Attention output projection.
    pub attention_out: Linear,
    /// LayerNorm after attention (with residual).
    pub attention_norm: LayerNorm,
    /// FFN up-projection.
    pub intermediate: Linear,
    /// FFN down-projection.
    pub output: Linear,
    /// LayerNorm after the FFN (with residual).
    pub output_norm: LayerNorm,
}

/// A BERT encoder.
#[derive(Debug)]
pub struct Bert {
    /// The configuration it was built from.
    pub config: BertConfig,
    /// Word table.
    pub word_embeddings: Embedding,
    /// Position table.
    pub position_embeddings: Embedding,
    /// Token-type table.
    pub token_type_embeddings: Embedding,
    /// LayerNorm of the embeddings.
    pub embeddings_norm: LayerNorm,
    /// Encoder layers.
    pub layers: Vec<EncoderLayer>,
    device: Device,
}

/// Reads named f32 tensors of a safetensors file with shape checks.
struct Weights<'a> {
    file: SafeTensors<'a>,
    device: Device,
}

fn invalid(what: impl Into<String>) -> EngineError {
    EngineError::ModelFile(what.into())
}

impl Weights<'_> {
    fn raw(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .file
            .tensor(name)
            .map_err(|_| invalid(format!("missing tensor `{name}`")))?;
        if t.shape() != shape {
            return Err(invalid(format!(
                "tensor `{name}` has shape {:?}, the configuration needs {shape:?}",
                t.shape()
            )));
        }
        if t.dtype() != Dtype::F32 {
            return Err(invalid(format!(
                "tensor `{name}` is {:?}; F32 is read",
                t.dtype()
            )));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if v.len() != shape.iter().product::<usize>() || v.iter().any(|x| !x.is_finite()) {
            return Err(invalid(format!(
                "tensor `{name}` has a wrong length or a non-finite value"
            )));
        }
        Ok(v)
    }

    fn vector(&self, name: &str, n: usize) -> Result<Tensor<1>> {
        Ok(Tensor::from_data(
            TensorData::new(self.raw(name, &[n])?, [n]),
            &self.device,
        ))
    }

    fn linear(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        let w = self.raw(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let mut t = vec![0f32; w.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = w[o * d_in + i];
            }
        }
        let mut l = LinearConfig::new(d_in, d_out).init(&self.device);
        l.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(t, [d_in, d_out]),
            &self.device,
        ));
        l.bias = Some(Param::from_tensor(
            self.vector(&format!("{prefix}.bias"), d_out)?,
        ));
        Ok(l)
    }

    fn norm(&self, prefix: &str, d: usize, eps: f64) -> Result<LayerNorm> {
        let mut n = LayerNormConfig::new(d).with_epsilon(eps).init(&self.device);
        n.gamma = Param::from_tensor(self.vector(&format!("{prefix}.weight"), d)?);
        n.beta = Some(Param::from_tensor(
            self.vector(&format!("{prefix}.bias"), d)?,
        ));
        Ok(n)
    }

    fn embedding(&self, name: &str, rows: usize, d: usize) -> Result<Embedding> {
        let mut e = EmbeddingConfig::new(rows, d).init(&self.device);
        e.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(self.raw(name, &[rows, d])?, [rows, d]),
            &self.device,
        ));
        Ok(e)
    }
}

impl Bert {
    /// Loads `model.safetensors` for `config`.
    pub fn load(path: &Path, config: BertConfig, device: &Device) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
        if meta.len() > MAX_WEIGHTS_BYTES {
            return Err(invalid(format!("{} is too large", path.display())));
        }
        let bytes =
            std::fs::read(path).map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
        Self::from_bytes(&bytes, config, device)
    }

    /// Builds the encoder from the bytes of a safetensors file.
    pub fn from_bytes(bytes: &[u8], config: BertConfig, device: &Device) -> Result<Self> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
        let w = Weights {
            file,
            device: device.clone(),
        };
        let (d, ff, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(EncoderLayer {
                    query: w.linear(&format!("{p}.attention.self.query"), d, d)?,
                    key: w.linear(&format!("{p}.attention.self.key"), d, d)?,
                    value: w.linear(&format!("{p}.attention.self.value"), d, d)?,
                    attention_out: w.linear(&format!("{p}.attention.output.dense"), d, d)?,
                    attention_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), d, eps)?,
                    intermediate: w.linear(&format!("{p}.intermediate.dense"), d, ff)?,
                    output: w.linear(&format!("{p}.output.dense"), ff, d)?,
                    output_norm: w.norm(&format!("{p}.output.LayerNorm"), d, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: w.embedding(
                "embeddings.word_embeddings.weight",
                config.vocab_size,
                d,
            )?,
            position_embeddings: w.embedding(
                "embeddings.position_embeddings.weight",
                config.max_position_embeddings,
                d,
            )?,
            token_type_embeddings: w.embedding(
                "embeddings.token_type_embeddings.weight",
                config.type_vocab_size,
                d,
            )?,
            embeddings_norm: w.norm("embeddings.LayerNorm", d, eps)?,
            layers,
            config,
            device: device.clone(),
        })
    }

    /// The hidden states after the embeddings, `[1, len, hidden]`.
    fn embeddings(&self, ids: &[u32]) -> Tensor<3> {
        let len = ids.len();
        let int =
            |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [1, len]), &self.device);
        let words = self
            .word_embeddings
            .forward(int(ids.iter().map(|&i| i64::from(i)).collect()));
        let positions = self
            .position_embeddings
            .forward(int((0..len as i64).collect()));
        let types = self.token_type_embeddings.forward(int(vec![0; len]));
        self.embeddings_norm.forward(words + positions + types)
    }

    /// One encoder layer on `[1, len, hidden]`.
    fn layer(&self, l: &EncoderLayer, x: Tensor<3>) -> Tensor<3> {
        let [_, len, d] = x.dims();
        let heads = self.config.num_attention_heads;
        let hs = self.config.head_size();
        let split = |t: Tensor<3>| t.reshape([len, heads, hs]).swap_dims(0, 1); // [heads, len, hs]
        let q = split(l.query.forward(x.clone()));
        let k = split(l.key.forward(x.clone()));
        let v = split(l.value.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(1, 2)).div_scalar((hs as f32).sqrt());
        let probs = softmax(scores, 2);
        let context = probs.matmul(v).swap_dims(0, 1).reshape([1, len, d]);
        let attended = l
            .attention_norm
            .forward(x + l.attention_out.forward(context));
        let hidden = Gelu::new().forward(l.intermediate.forward(attended.clone()));
        l.output_norm.forward(attended + l.output.forward(hidden))
    }

    /// Checks a token sequence against the model's tables.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() || ids.len() > self.config.max_position_embeddings {
            return Err(EngineError::InputShape {
                got: ids.len(),
                expected: self.config.max_position_embeddings,
                batch: 1,
                item: vec![self.config.max_position_embeddings],
            });
        }
        if let Some(i) = ids
            .iter()
            .position(|&t| t as usize >= self.config.vocab_size)
        {
            return Err(EngineError::ModelFile(format!(
                "token {i} has id {} outside the vocabulary of {}",
                ids[i], self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// The last hidden states of a sequence, `[len, hidden]` row-major.
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.check_ids(ids)?;
        let mut x = self.embeddings(ids);
        for l in &self.layers {
            x = self.layer(l, x);
        }
        values(x)
    }

    /// The sentence embedding: mean of the last hidden states over the tokens, L2-normalised.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let hidden = self.hidden_states(ids)?;
        let d = self.config.hidden_size;
        Ok(mean_pool_normalise(&hidden, ids.len(), d))
    }

    /// The device the encoder lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// Mean over `len` rows of width `d`, then divided by its L2 norm (sentence-transformers clamps the norm at
/// 1e-12, as here).
pub fn mean_pool_normalise(hidden: &[f32], len: usize, d: usize) -> Vec<f32> {
    let mut mean = vec![0f32; d];
    for row in hidden.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= len as f32;
    }
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    mean.iter().map(|v| v / norm).collect()
}

/// Cosine similarity of two vectors of one length (0 if either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
