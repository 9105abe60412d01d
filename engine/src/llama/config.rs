//! The Llama architecture as a GGUF file's metadata states it (`llama.*` keys), checked.

use crate::gguf::Gguf;

use super::{inconsistent, LlamaError, Result};

/// Largest accepted dimensions (generous for small chat models; they bound allocations made from a file).
const MAX_LAYERS: usize = 256;
const MAX_HIDDEN: usize = 16_384;
const MAX_VOCAB: usize = 1 << 20;

/// A Llama model's shape and constants.
///
/// Invariants (checked by [`LlamaConfig::validate`]): every size is positive and bounded;
/// `heads * head_dim == hidden`; `kv_heads` divides `heads`; `head_dim` is even (RoPE rotates pairs).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub ffn: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention: `heads / kv_heads` query heads share one).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm's epsilon.
    pub rms_eps: f64,
    /// RoPE's base frequency.
    pub rope_theta: f64,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
    /// Longest context the model was trained for.
    pub context: usize,
}

impl LlamaConfig {
    /// The shape of the `llama-tiny` workload: 2 blocks, hidden 32, 4 query heads sharing 2 key/value heads
    /// of 8, feed-forward 40, a 50-token vocabulary, context 64. Its weights are random from a seed
    /// ([`super::weights::LlamaWeights::random`]): a network workload whose costs are pinned in tests.
    pub fn tiny() -> Self {
        LlamaConfig {
            layers: 2,
            hidden: 32,
            ffn: 40,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            rms_eps: f64::from(1e-5f32),
            rope_theta: 10_000.0,
            vocab: 50,
            context: 64,
        }
    }

    /// Reads the `llama.*` metadata of `g` (the vocabulary size from the token list when
    /// `llama.vocab_size` is absent).
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" {
            return Err(LlamaError::Unsupported {
                what: "general.architecture",
                value: arch.to_string(),
            });
        }
        let n = |k: &str| -> Result<usize> {
            usize::try_from(g.u64(&format!("llama.{k}"))?)
                .map_err(|_| inconsistent("a llama.* size does not fit in memory"))
        };
        let hidden = n("embedding_length")?;
        let heads = n("attention.head_count")?;
        let kv_heads = match g.u64("llama.attention.head_count_kv") {
            Ok(v) => usize::try_from(v).map_err(|_| inconsistent("head_count_kv does not fit"))?,
            Err(_) => heads,
        };
        let vocab = match g.u64("llama.vocab_size") {
            Ok(v) => usize::try_from(v).map_err(|_| inconsistent("vocab_size does not fit"))?,
            Err(_) => g.strings("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = hidden.checked_div(heads).unwrap_or(0);
        let c = Self {
            layers: n("block_count")?,
            hidden,
            ffn: n("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            rms_eps: g.f64("llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: g.f64("llama.rope.freq_base").unwrap_or(10_000.0),
            vocab,
            context: n("context_length")?,
        };
        if let Ok(rot) = g.u64("llama.rope.dimension_count") {
            if rot != c.head_dim as u64 {
                return Err(LlamaError::Unsupported {
                    what: "llama.rope.dimension_count other than the head width",
                    value: rot.to_string(),
                });
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the invariants.
    pub fn validate(&self) -> Result<()> {
        let ok = (1..=MAX_LAYERS).contains(&self.layers)
            && (1..=MAX_HIDDEN).contains(&self.hidden)
            && (1..=4 * MAX_HIDDEN).contains(&self.ffn)
            && (1..=MAX_VOCAB).contains(&self.vocab)
            && self.heads > 0
            && self.kv_heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && self.head_dim * self.heads == self.hidden
            && self.head_dim.is_multiple_of(2)
            && self.context > 0
            && self.rms_eps.is_finite()
            && self.rms_eps > 0.0
            && self.rope_theta.is_finite()
            && self.rope_theta > 1.0;
        if ok {
            Ok(())
        } else {
            Err(inconsistent(
                "the llama.* sizes are out of range or do not fit together",
            ))
        }
    }

    /// Width of the keys (and of the values): `kv_heads * head_dim`.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// RoPE's `(cos, sin)` at `position` for pair `i` of a head (pairs are adjacent elements `2i, 2i + 1`:
    /// GGUF stores Llama's query and key rows permuted so that rotated pairs are adjacent).
    pub fn rope(&self, position: usize, i: usize) -> (f64, f64) {
        let freq = self
            .rope_theta
            .powf(-((2 * i) as f64) / self.head_dim as f64);
        let angle = position as f64 * freq;
        (angle.cos(), angle.sin())
    }
}
