//! Llama in burn: the plaintext reference, with a key/value cache so a decode step is one position.
//!
//! Weights come from [`LlamaWeights`] (GGUF's `out` rows of `in` become burn's `[in, out]` Linear weights).
//! RoPE rotates adjacent pairs `(2i, 2i + 1)` of each head, matching GGUF's permuted query and key rows.
//!
//! Invariant: a [`Llama`] runs any ids below the vocabulary size at positions below the context length;
//! [`Llama::forward`] checks both instead of letting burn panic.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use super::config::LlamaConfig;
use super::weights::LlamaWeights;
use super::{LlamaError, Result};
use crate::model::values;

/// One block.
#[derive(Debug)]
struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The rotated keys and the values of the positions seen so far, per block: `[kv_heads, len, head_dim]`.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<(Tensor<3>, Tensor<3>)>,
    len: usize,
}

impl KvCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A Llama model in burn.
#[derive(Debug)]
pub struct Llama {
    /// The configuration.
    pub config: LlamaConfig,
    embed: Tensor<2>,
    /// `[hidden, vocab]`.
    head: Tensor<2>,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    device: Device,
}

fn tensor2(v: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), [rows, cols]), device)
}

/// A Linear `[in, out]` from GGUF's `out` rows of `in`.
fn linear(w: &[f32], inputs: usize, outputs: usize, device: &Device) -> Linear {
    let mut l = LinearConfig::new(inputs, outputs)
        .with_bias(false)
        .init(device);
    l.weight = Param::from_tensor(tensor2(w, outputs, inputs, device).transpose());
    l
}

fn norm(gain: &[f32], eps: f64, device: &Device) -> RmsNorm {
    let mut n = RmsNormConfig::new(gain.len())
        .with_epsilon(eps)
        .init(device);
    n.gamma = Param::from_tensor(Tensor::from_data(
        TensorData::new(gain.to_vec(), [gain.len()]),
        device,
    ));
    n
}

impl Llama {
    /// Builds the model from `w`.
    pub fn new(w: &LlamaWeights, device: &Device) -> Self {
        let c = &w.config;
        let (d, ff, kv) = (c.hidden, c.ffn, c.kv_width());
        let blocks = w
            .blocks
            .iter()
            .map(|b| Block {
                attn_norm: norm(&b.attn_norm, c.rms_eps, device),
                q: linear(&b.q, d, d, device),
                k: linear(&b.k, d, kv, device),
                v: linear(&b.v, d, kv, device),
                o: linear(&b.o, d, d, device),
                ffn_norm: norm(&b.ffn_norm, c.rms_eps, device),
                gate: linear(&b.gate, d, ff, device),
                up: linear(&b.up, d, ff, device),
                down: linear(&b.down, ff, d, device),
            })
            .collect();
        Self {
            config: c.clone(),
            embed: tensor2(&w.embed, c.vocab, d, device),
            head: tensor2(w.head(), c.vocab, d, device).transpose(),
            blocks,
            final_norm: norm(&w.final_norm, c.rms_eps, device),
            device: device.clone(),
        }
    }

    /// RoPE on `[heads, len, head_dim]` for positions `start..start + len`.
    fn rope(&self, x: Tensor<3>, start: usize) -> Tensor<3> {
        let [heads, len, hd] = x.dims();
        let half = hd / 2;
        let (mut cos, mut sin) = (
            Vec::with_capacity(len * half),
            Vec::with_capacity(len * half),
        );
        for p in start..start + len {
            for i in 0..half {
                let (c, s) = self.config.rope(p, i);
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        let table = |v: Vec<f32>| {
            Tensor::<3>::from_data(TensorData::new(v, [1, len, half]), &self.device)
                .reshape([1, len, half, 1])
        };
        let (cos, sin) = (table(cos), table(sin));
        let pairs = x.reshape([heads, len, half, 2]);
        let even = pairs.clone().narrow(3, 0, 1);
        let odd = pairs.narrow(3, 1, 1);
        let a = even.clone() * cos.clone() - odd.clone() * sin.clone();
        let b = even * sin + odd * cos;
        Tensor::cat(vec![a, b], 3).reshape([heads, len, hd])
    }

    /// Runs `ids` at positions `cache.len()..` and returns the logits of the last `logits_rows` positions,
    /// row-major `[logits_rows, vocab]`; the cache grows by `ids.len()`.
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits_rows: usize,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (len, start) = (ids.len(), cache.len);
        if len == 0 || start + len > c.context || logits_rows > len {
            return Err(if len == 0 || logits_rows > len {
                LlamaError::StepShape {
                    len,
                    values: len,
                    logits_rows,
                }
            } else {
                LlamaError::ContextExceeded {
                    positions: start + len,
                    context: c.context,
                }
            });
        }
        if let Some(t) = ids.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(LlamaError::TokenOutOfVocabulary {
                id: *t,
                vocab: c.vocab,
            });
        }
        let (d, hd, heads, kvh) = (c.hidden, c.head_dim, c.heads, c.kv_heads);
        let idx = Tensor::<1, burn::tensor::Int>::from_data(
            TensorData::new(ids.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [len]),
            &self.device,
        );
        let mut x = self.embed.clone().select(0, idx);
        // Causal mask over the new rows and every cached plus new column.
        let total = start + len;
        let mask: Vec<f32> = (0..len)
            .flat_map(|r| {
                (0..total).map(move |s| {
                    if s > start + r {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::<3>::from_data(TensorData::new(mask, [1, len, total]), &self.device);
        let split = |t: Tensor<2>, h: usize| t.reshape([len, h, hd]).swap_dims(0, 1);
        let first = cache.layers.is_empty();
        for (i, b) in self.blocks.iter().enumerate() {
            let n = b.attn_norm.forward(x.clone());
            let q = self.rope(split(b.q.forward(n.clone()), heads), start);
            let k = self.rope(split(b.k.forward(n.clone()), kvh), start);
            let v = split(b.v.forward(n), kvh);
            let (k, v) = if first {
                (k, v)
            } else {
                let (pk, pv) = cache.layers[i].clone();
                (Tensor::cat(vec![pk, k], 1), Tensor::cat(vec![pv, v], 1))
            };
            if first {
                cache.layers.push((k.clone(), v.clone()));
            } else {
                cache.layers[i] = (k.clone(), v.clone());
            }
            let group = c.group();
            let expand = |t: Tensor<3>| {
                t.reshape([kvh, 1, total, hd])
                    .repeat_dim(1, group)
                    .reshape([heads, total, hd])
            };
            let scores = q
                .matmul(expand(k).swap_dims(1, 2))
                .div_scalar((hd as f32).sqrt())
                + mask.clone();
            let ctx = softmax(scores, 2)
                .matmul(expand(v))
                .swap_dims(0, 1)
                .reshape([len, d]);
            x = x + b.o.forward(ctx);
            let n = b.ffn_norm.forward(x.clone());
            let h = silu(b.gate.forward(n.clone())) * b.up.forward(n);
            x = x + b.down.forward(h);
        }
        cache.len = total;
        let last = x.narrow(0, len - logits_rows, logits_rows);
        let logits = self.final_norm.forward(last).matmul(self.head.clone());
        Ok(values(logits)?)
    }
}
