//! Llama generation on secret shares: the prefill of a prompt and one-position decode steps over a key/value
//! cache that the committee holds as shares. The weights are public (SmolLM2 is a public model) and the
//! text is secret.
//!
//! # Who learns what
//! - The client renders the chat template, tokenises, looks each token up in the public embedding table and
//!   secret-shares the `len x hidden` matrix of embedded vectors. For each new token it receives every
//!   party's share of the last position's logits, reconstructs them, samples, and shares the next token's
//!   embedding. Nothing about the ids leaves the client except their number.
//! - Each party sees its shares and values opened under fresh dealt masks (uniform): it learns the prompt's
//!   length and the number of generated tokens (they set the shapes, rounds and bytes), nothing else. The
//!   dealer sees no online message.
//!
//! # The computation (per block, `L` new positions after `S` cached ones, `T = S + L`)
//! - RMSNorm without its gain (the gain is folded into the next product's weights): `x` is pre-scaled by
//!   `2^-p` (one truncation; `p` per norm, public, see [`NormSpec`]) so that squares of large residual
//!   values stay far below the truncation's `2^62` bound, then `mean(x'^2)` (one product, one truncation),
//!   its reciprocal square root by Newton ([`veil_protocols::approx::newton`]), and `x * rsqrt` (one
//!   product); the factor `2^p` of the result is folded into the weights.
//! - Query, key and value in one local product by public weights, one truncation; `1/sqrt(head_dim)` is
//!   folded into the query weights. RoPE is a public rotation per position: local products by public
//!   `cos`/`sin` and one truncation.
//! - The new keys and values are appended to the party's cache shares. Scores: one share-by-share matrix
//!   product per key/value head (the query heads of a group stacked), a causal mask added as a public
//!   constant (`-128` on future positions; only in a prefill), the softmax of
//!   [`veil_protocols::approx::rows`] with the one-piece exp, and the context product per group.
//! - Output projection plus residual (added at `2f`), one truncation. The feed-forward layer: gate and up
//!   in one local product (SiLU's input scale folded into the gate weights), SiLU by the even polynomial of
//!   [`veil_protocols::approx::silu`], the product `silu(gate) * up` on shares, down projection plus
//!   residual, one truncation.
//! - The final RMSNorm and the output head (a local product by the public, tied embedding table with the
//!   final gain folded in) on the positions the client asks for: its logits carry `2f` fractional bits and
//!   go to the client untruncated.
//!
//! Invariant: [`PrivateLlama::requests`] lists exactly the dealer material [`PrivateLlama::step`] consumes,
//! in order, for the same `(start, len, logits_rows)` (the material reader rejects any drift).

use std::time::Instant;

use veil_protocols::approx::rows::softmax_fast_requests;
use veil_protocols::approx::silu::SiluEven;
use veil_protocols::approx::{ExpNeg, NewtonConfig, SoftmaxFastConfig};
use veil_protocols::domain::Domain;
use veil_protocols::material::Request;
use veil_protocols::net::Net;
use veil_protocols::ring::FixedPoint;
use veil_protocols::semi2k::Party;

use super::config::LlamaConfig;
use super::weights::LlamaWeights;
use super::{inconsistent, LlamaError, Result};
use crate::private::StepProfile;

/// One RMSNorm's public knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormSpec {
    /// `p`: the input is multiplied by `2^-p` before squaring. Its squares at `2f` fractional bits must stay
    /// below `2^62`: `|x| 2^-p < 2^(31 - f)`.
    pub prescale_bits: u32,
    /// The range and iterations of `rsqrt(mean((x 2^-p)^2) + eps 2^-2p)`.
    pub rsqrt: NewtonConfig,
}

/// The approximations' knobs of a private Llama.
#[derive(Debug, Clone)]
pub struct PrivateConfig {
    /// Fixed-point encoding of every shared value and public weight.
    pub fixed_point: FixedPoint,
    /// SiLU of the feed-forward layers.
    pub silu: SiluEven,
    /// softmax of the attention scores.
    pub softmax: SoftmaxFastConfig,
    /// Both norms of the first block (the embeddings and their first update: small values).
    pub first_norm: NormSpec,
    /// Every other norm (the residual stream: mean squares up to about `2^20` in SmolLM2).
    pub norm: NormSpec,
}

impl PrivateConfig {
    /// Defaults calibrated on SmolLM2-135M-Instruct's activations (measured in f64 on English text): the
    /// embeddings' mean squares lie in `[0.007, 0.03]`, the residual stream's in `[1.3, 9e5]` with single
    /// values up to 22,600 (the first position's); gate inputs in `[-31, 50]`; scores in `[-47, 17]`.
    /// `f = 16`; norms: `p = 0` on `[2^-10, 2^3)` for the embeddings, `p = 2` on `[2^-6, 2^18)` elsewhere
    /// (inputs up to `2^17`), 3 Newton iterations; SiLU with `T = 8`, degree 8; softmax with the one-piece
    /// exp and 3 iterations.
    pub fn new(fixed_point: FixedPoint) -> Result<Self> {
        // Squares at 2f must stay below 2^62 for inputs up to 2^15: |x| 2^-p < 2^(31 - f).
        let p = fixed_point.frac_bits().saturating_sub(16);
        let p = (p + 2).max(2);
        let p = p as i32;
        Ok(Self {
            fixed_point,
            silu: SiluEven::default_fit()?,
            softmax: SoftmaxFastConfig {
                exp: ExpNeg::default_fit()?,
                iterations: 3,
            },
            first_norm: NormSpec {
                prescale_bits: 0,
                rsqrt: NewtonConfig {
                    lo: -10,
                    hi: 2,
                    iterations: 3,
                },
            },
            norm: NormSpec {
                prescale_bits: p as u32,
                // Mean squares in [2^-2, 2^22) scaled by 2^-2p.
                rsqrt: NewtonConfig {
                    lo: -2 - 2 * p,
                    hi: 21 - 2 * p,
                    iterations: 3,
                },
            },
        })
    }
}

/// The causal mask's value on future positions (scores are at most tens).
const MASK: f64 = -128.0;

/// One block's public weights, folded and encoded (`[in, out]` row-major, `f` fractional bits).
#[derive(Debug, Clone)]
struct BlockWeights {
    /// `[d, d + 2 kv]`: query (scaled by `1/sqrt(head_dim)`), key, value, with the attention norm's gain
    /// and `2^-p` folded in.
    qkv: Vec<u64>,
    /// `[d, d]`.
    o: Vec<u64>,
    /// `[d, 2 ff]`: gate (scaled by SiLU's input scale), up, with the FFN norm's gain and `2^-p` folded in.
    gate_up: Vec<u64>,
    /// `[ff, d]`.
    down: Vec<u64>,
}

/// A Llama prepared for private generation: public folded fixed-point weights (one copy, shared by every
/// in-memory party), the client's embedding table, and the approximations.
#[derive(Debug)]
pub struct PrivateLlama {
    config: LlamaConfig,
    pcfg: PrivateConfig,
    blocks: Vec<BlockWeights>,
    /// `[d, vocab]`, the final norm's gain and `2^-p` folded in.
    head: Vec<u64>,
    /// The client's lookup table, `[vocab rows of d]`, f32.
    embed: Vec<f32>,
}

fn enc(v: f64, bits: u32) -> u64 {
    (v * f64::from(bits).exp2()).round() as i64 as u64
}

/// `[in, out]` row-major fixed point from GGUF's `out` rows of `in`, with per-input and per-output scales.
fn fold(
    w: &[f32],
    inputs: usize,
    outputs: usize,
    in_scale: &dyn Fn(usize) -> f64,
    out_scale: &dyn Fn(usize) -> f64,
    f: u32,
) -> Vec<u64> {
    let mut out = vec![0u64; inputs * outputs];
    for o in 0..outputs {
        let so = out_scale(o);
        for i in 0..inputs {
            out[i * outputs + o] = enc(f64::from(w[o * inputs + i]) * in_scale(i) * so, f);
        }
    }
    out
}

/// A party's share of the cache: per block, per key/value head, the rotated keys and the values of every
/// position so far, `[positions, head_dim]` row-major each.
#[derive(Debug, Clone)]
pub struct CacheShare<A> {
    keys: Vec<Vec<A>>,
    values: Vec<Vec<A>>,
    len: usize,
}

impl<A> CacheShare<A> {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The public shape of a private Llama's steps, without its weights: what a dealer needs to derive the
/// material of a step (or of a whole generation job) from the model's configuration alone.
#[derive(Debug, Clone)]
pub struct StepShape {
    /// The architecture.
    pub config: LlamaConfig,
    /// The approximations.
    pub pcfg: PrivateConfig,
}

impl StepShape {
    fn norm_requests(&self, spec: &NormSpec, rows: usize) -> Vec<Request> {
        let (d, f) = (self.config.hidden, self.pcfg.fixed_point.frac_bits());
        let mut out = Vec::new();
        if spec.prescale_bits > 0 {
            out.push(Request::Trunc {
                len: rows * d,
                frac_bits: f,
            });
        }
        out.push(Request::Triples { len: rows * d });
        out.push(Request::Trunc {
            len: rows * d,
            frac_bits: f,
        });
        out.push(Request::Trunc {
            len: rows,
            frac_bits: f,
        });
        out.extend(spec.rsqrt.rsqrt_requests(rows, f));
        out.push(Request::Triples { len: rows * d });
        out.push(Request::Trunc {
            len: rows * d,
            frac_bits: f,
        });
        out
    }

    /// The dealer material of one [`PrivateLlama::step`] of `len` positions after `start` cached ones, returning
    /// the logits of the last `logits_rows` positions.
    pub fn requests(&self, start: usize, len: usize, logits_rows: usize) -> Vec<Request> {
        let c = &self.config;
        let (d, ff, kv, hd, heads) = (c.hidden, c.ffn, c.kv_width(), c.head_dim, c.heads);
        let f = self.pcfg.fixed_point.frac_bits();
        let total = start + len;
        let group = c.group();
        let trunc = |n| Request::Trunc {
            len: n,
            frac_bits: f,
        };
        let mut out = Vec::new();
        for i in 0..c.layers {
            let spec = if i == 0 {
                self.pcfg.first_norm
            } else {
                self.pcfg.norm
            };
            out.extend(self.norm_requests(&spec, len));
            out.push(trunc(len * (d + 2 * kv)));
            out.push(trunc(len * (d + kv)));
            out.extend((0..c.kv_heads).map(|_| Request::MatTriple {
                m: group * len,
                k: hd,
                n: total,
            }));
            out.push(trunc(heads * len * total));
            out.extend(softmax_fast_requests(
                &self.pcfg.softmax,
                heads * len,
                total,
                f,
            ));
            out.extend((0..c.kv_heads).map(|_| Request::MatTriple {
                m: group * len,
                k: total,
                n: hd,
            }));
            out.push(trunc(len * d));
            out.push(trunc(len * d));
            out.extend(self.norm_requests(&spec, len));
            out.push(trunc(len * 2 * ff));
            out.extend(self.pcfg.silu.scaled_requests(len * ff, f));
            out.push(trunc(len * ff));
            out.push(Request::Triples { len: len * ff });
            out.push(trunc(len * ff));
            out.push(trunc(len * d));
        }
        out.extend(self.norm_requests(&self.pcfg.norm, logits_rows));
        out
    }

    /// The dealer material of a generation job, in the order its steps consume it: a prompt of
    /// `prompt_len` positions prefilled in steps of at most `chunk` positions, each returning the logits of
    /// every position it runs, then `decode_steps` steps of one position each over the growing cache.
    pub fn generation_requests(
        &self,
        prompt_len: usize,
        decode_steps: usize,
        chunk: usize,
    ) -> Vec<Request> {
        let chunk = chunk.max(1);
        let mut out = Vec::new();
        let mut start = 0;
        while start < prompt_len {
            let len = chunk.min(prompt_len - start);
            out.extend(self.requests(start, len, len));
            start += len;
        }
        for k in 0..decode_steps {
            out.extend(self.requests(prompt_len + k, 1, 1));
        }
        out
    }
}

impl PrivateLlama {
    /// Prepares `w` (its weights become public fixed-point constants of the computation).
    pub fn new(w: &LlamaWeights, pcfg: PrivateConfig) -> Result<Self> {
        let c = w.config.clone();
        let (d, ff, kv) = (c.hidden, c.ffn, c.kv_width());
        let f = pcfg.fixed_point.frac_bits();
        let qscale = 1.0 / (c.head_dim as f64).sqrt();
        let silu_scale = pcfg.silu.input_scale();
        let blocks = w
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let spec = if i == 0 { pcfg.first_norm } else { pcfg.norm };
                let pa = (-f64::from(spec.prescale_bits)).exp2();
                let pf = pa;
                let mut qkv_rows = b.q.clone();
                qkv_rows.extend_from_slice(&b.k);
                qkv_rows.extend_from_slice(&b.v);
                let mut gu_rows = b.gate.clone();
                gu_rows.extend_from_slice(&b.up);
                BlockWeights {
                    qkv: fold(
                        &qkv_rows,
                        d,
                        d + 2 * kv,
                        &|i| f64::from(b.attn_norm[i]) * pa,
                        &|o| if o < d { qscale } else { 1.0 },
                        f,
                    ),
                    o: fold(&b.o, d, d, &|_| 1.0, &|_| 1.0, f),
                    gate_up: fold(
                        &gu_rows,
                        d,
                        2 * ff,
                        &|i| f64::from(b.ffn_norm[i]) * pf,
                        &|o| if o < ff { silu_scale } else { 1.0 },
                        f,
                    ),
                    down: fold(&b.down, ff, d, &|_| 1.0, &|_| 1.0, f),
                }
            })
            .collect();
        let pf = (-f64::from(pcfg.norm.prescale_bits)).exp2();
        let head = fold(
            w.head(),
            d,
            c.vocab,
            &|i| f64::from(w.final_norm[i]) * pf,
            &|_| 1.0,
            f,
        );
        Ok(Self {
            config: c,
            pcfg,
            blocks,
            head,
            embed: w.embed.clone(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The approximations.
    pub fn private_config(&self) -> &PrivateConfig {
        &self.pcfg
    }

    /// The client's part: the embedded vectors of `ids`, `[len, hidden]`, in fixed point.
    pub fn client_input(&self, ids: &[u32]) -> Result<Vec<u64>> {
        let d = self.config.hidden;
        let mut x = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let id = id as usize;
            if id >= self.config.vocab {
                return Err(LlamaError::TokenOutOfVocabulary {
                    id: id as u32,
                    vocab: self.config.vocab,
                });
            }
            x.extend_from_slice(&self.embed[id * d..(id + 1) * d]);
        }
        Ok(self.pcfg.fixed_point.encode(&x)?)
    }

    /// An empty cache share for a party.
    pub fn empty_cache<A>(&self) -> CacheShare<A> {
        let c = &self.config;
        let per = || (0..c.layers).map(|_| Vec::new()).collect::<Vec<Vec<A>>>();
        CacheShare {
            keys: per(),
            values: per(),
            len: 0,
        }
    }

    /// The public shape of this model's steps (what the dealer derives their material from).
    pub fn shape(&self) -> StepShape {
        StepShape {
            config: self.config.clone(),
            pcfg: self.pcfg.clone(),
        }
    }

    /// The dealer material of one [`Self::step`] of `len` positions after `start` cached ones, returning
    /// the logits of the last `logits_rows` positions (see [`StepShape::requests`]).
    pub fn requests(&self, start: usize, len: usize, logits_rows: usize) -> Vec<Request> {
        self.shape().requests(start, len, logits_rows)
    }

    /// RMSNorm without its gain: `x 2^-p rsqrt(mean((x 2^-p)^2) + eps 2^-2p)` for `rows` rows.
    fn rms_norm<N: Net, D: Domain>(
        &self,
        party: &mut Party<N, D>,
        x: &D::Arith,
        rows: usize,
        spec: &NormSpec,
    ) -> Result<D::Arith> {
        let d = self.config.hidden;
        let f = self.pcfg.fixed_point.frac_bits();
        let p = spec.prescale_bits;
        let xs = if p > 0 {
            party.trunc(&D::mul_public(
                x,
                &vec![enc((-f64::from(p)).exp2(), f); rows * d],
            ))?
        } else {
            x.clone()
        };
        let squares = party.mul_fixed(&xs, &xs)?;
        let sums = row_sums::<D>(&squares, rows, d);
        let mut ms = party.trunc(&D::mul_public(&sums, &vec![enc(1.0 / d as f64, f); rows]))?;
        let eps = enc(self.config.rms_eps * (-2.0 * f64::from(p)).exp2(), f).max(1);
        party.add_public(&mut ms, &vec![eps; rows]);
        let r = party.rsqrt(&ms, &spec.rsqrt)?;
        let r = D::gather(&r, &(0..rows * d).map(|i| i / d).collect::<Vec<_>>());
        Ok(party.mul_fixed(x, &r)?)
    }

    /// RoPE on `rows` rows of `width` values (heads of `head_dim`) at positions `start..`: local products by
    /// public `cos`/`sin`, then one truncation (the caller's).
    fn rope_wide<D: Domain>(
        &self,
        x: &D::Arith,
        start: usize,
        rows: usize,
        width: usize,
    ) -> D::Arith {
        let c = &self.config;
        let f = self.pcfg.fixed_point.frac_bits();
        let hd = c.head_dim;
        let mut cos = Vec::with_capacity(rows * width);
        let mut sin = Vec::with_capacity(rows * width);
        for t in 0..rows {
            for j in 0..width {
                let (co, si) = c.rope(start + t, (j % hd) / 2);
                cos.push(enc(co, f));
                // even element: a cos - b sin; odd element: a sin + b cos (partner b = the other of the pair).
                sin.push(enc(if j % 2 == 0 { -si } else { si }, f));
            }
        }
        let partner: Vec<usize> = (0..rows * width).map(|i| i ^ 1).collect();
        D::add(
            &D::mul_public(x, &cos),
            &D::mul_public(&D::gather(x, &partner), &sin),
        )
    }

    /// One party's side of one step: `x` is its share of `len` embedded positions (`[len, hidden]`, `f`
    /// bits) after the `cache.len()` positions it holds; appends them to `cache` and returns its share of the
    /// logits of the last `logits_rows` positions (`[logits_rows, vocab]`, `2f` fractional bits).
    pub fn step<N: Net, D: Domain>(
        &self,
        party: &mut Party<N, D>,
        cache: &mut CacheShare<D::Arith>,
        x: D::Arith,
        len: usize,
        logits_rows: usize,
        mut profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<D::Arith> {
        let c = &self.config;
        let (d, ff, kv, hd, heads) = (c.hidden, c.ffn, c.kv_width(), c.head_dim, c.heads);
        let f = self.pcfg.fixed_point.frac_bits();
        let start = cache.len;
        let total = start + len;
        let group = c.group();
        if len == 0 || D::len(&x) != len * d || logits_rows == 0 || logits_rows > len {
            return Err(LlamaError::StepShape {
                len,
                values: D::len(&x),
                logits_rows,
            });
        }
        if total > c.context {
            return Err(LlamaError::ContextExceeded {
                positions: total,
                context: c.context,
            });
        }
        if cache.keys.len() != c.layers {
            return Err(inconsistent("the cache share is for another model"));
        }
        let lift = vec![1u64 << f; len * d];
        let mut step = Step::new(party);
        let mut x = x;
        for (i, w) in self.blocks.iter().enumerate() {
            let spec = if i == 0 {
                self.pcfg.first_norm
            } else {
                self.pcfg.norm
            };
            let n = self.rms_norm(party, &x, len, &spec)?;
            step.done(party, &mut profile, "rmsnorm");
            let width = d + 2 * kv;
            let qkv = party.trunc(&D::gemm_right(party.gemm(), [len, d, width], &n, &w.qkv))?;
            step.done(party, &mut profile, "qkv");
            // Q | K rotated (one truncation), V as is.
            let qk_idx: Vec<usize> = (0..len)
                .flat_map(|t| (0..d + kv).map(move |j| t * width + j))
                .collect();
            let qk = D::gather(&qkv, &qk_idx);
            let qk = party.trunc(&self.rope_wide::<D>(&qk, start, len, d + kv))?;
            step.done(party, &mut profile, "rope");
            let qw = d + kv;
            for g in 0..c.kv_heads {
                let k_new = D::gather(
                    &qk,
                    &(0..len)
                        .flat_map(|t| (0..hd).map(move |j| t * qw + d + g * hd + j))
                        .collect::<Vec<_>>(),
                );
                let v_new = D::gather(
                    &qkv,
                    &(0..len)
                        .flat_map(|t| (0..hd).map(move |j| t * width + d + kv + g * hd + j))
                        .collect::<Vec<_>>(),
                );
                let keys = &mut cache.keys[i];
                if keys.len() <= g {
                    keys.push(k_new);
                    cache.values[i].push(v_new);
                } else {
                    keys[g] = D::concat(&[keys[g].clone(), k_new]);
                    cache.values[i][g] = D::concat(&[cache.values[i][g].clone(), v_new]);
                }
            }
            // Per group: the group's query heads stacked, [group len, hd], against the keys transposed.
            let queries: Vec<D::Arith> = (0..c.kv_heads)
                .map(|g| {
                    D::gather(
                        &qk,
                        &(0..group)
                            .flat_map(|h| {
                                let head = g * group + h;
                                (0..len)
                                    .flat_map(move |t| (0..hd).map(move |j| t * qw + head * hd + j))
                            })
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let keys_t: Vec<D::Arith> = cache.keys[i]
                .iter()
                .map(|k| {
                    D::gather(
                        k,
                        &(0..hd)
                            .flat_map(|j| (0..total).map(move |s| s * hd + j))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let pairs: Vec<(&D::Arith, &D::Arith)> = queries.iter().zip(&keys_t).collect();
            let scores = party.matmuls(&pairs, &vec![[group * len, hd, total]; c.kv_heads])?;
            // Rows ordered (group, head in group, position) = (head, position).
            let mut scores = party.trunc(&D::concat(&scores))?;
            if len > 1 {
                let mask: Vec<u64> = (0..heads * len)
                    .flat_map(|r| {
                        let t = r % len;
                        (0..total).map(move |s| if s > start + t { enc(MASK, f) } else { 0 })
                    })
                    .collect();
                party.add_public(&mut scores, &mask);
            }
            step.done(party, &mut profile, "scores");
            let probs = party.softmax_fast(&scores, heads * len, total, &self.pcfg.softmax)?;
            step.done(party, &mut profile, "softmax");
            let per_group = group * len * total;
            let probs: Vec<D::Arith> = (0..c.kv_heads)
                .map(|g| D::slice(&probs, g * per_group..(g + 1) * per_group))
                .collect();
            let pairs: Vec<(&D::Arith, &D::Arith)> = probs.iter().zip(&cache.values[i]).collect();
            let ctx = party.matmuls(&pairs, &vec![[group * len, total, hd]; c.kv_heads])?;
            // (head, position, j) -> (position, head, j).
            let ctx = D::gather(
                &D::concat(&ctx),
                &(0..len)
                    .flat_map(|t| {
                        (0..heads).flat_map(move |h| (0..hd).map(move |j| (h * len + t) * hd + j))
                    })
                    .collect::<Vec<_>>(),
            );
            let ctx = party.trunc(&ctx)?;
            step.done(party, &mut profile, "context");
            let z = D::add(
                &D::gemm_right(party.gemm(), [len, d, d], &ctx, &w.o),
                &D::mul_public(&x, &lift),
            );
            x = party.trunc(&z)?;
            step.done(party, &mut profile, "attn-out");
            let n = self.rms_norm(party, &x, len, &spec)?;
            step.done(party, &mut profile, "rmsnorm");
            let gu = party.trunc(&D::gemm_right(
                party.gemm(),
                [len, d, 2 * ff],
                &n,
                &w.gate_up,
            ))?;
            let gate = D::gather(
                &gu,
                &(0..len)
                    .flat_map(|t| (0..ff).map(move |j| t * 2 * ff + j))
                    .collect::<Vec<_>>(),
            );
            let up = D::gather(
                &gu,
                &(0..len)
                    .flat_map(|t| (0..ff).map(move |j| t * 2 * ff + ff + j))
                    .collect::<Vec<_>>(),
            );
            step.done(party, &mut profile, "gate-up");
            let s = party.silu_even_scaled(&gate, &self.pcfg.silu)?;
            let s = party.trunc(&s)?;
            let h = party.mul_fixed(&s, &up)?;
            step.done(party, &mut profile, "silu");
            let z = D::add(
                &D::gemm_right(party.gemm(), [len, ff, d], &h, &w.down),
                &D::mul_public(&x, &lift),
            );
            x = party.trunc(&z)?;
            step.done(party, &mut profile, "down");
        }
        cache.len = total;
        let last = D::slice(&x, (len - logits_rows) * d..len * d);
        let n = self.rms_norm(party, &last, logits_rows, &self.pcfg.norm)?;
        let logits = D::gemm_right(party.gemm(), [logits_rows, d, c.vocab], &n, &self.head);
        step.done(party, &mut profile, "lm-head");
        Ok(logits)
    }
}

/// Each row's sum (local).
fn row_sums<D: Domain>(x: &D::Arith, rows: usize, cols: usize) -> D::Arith {
    let columns: Vec<D::Arith> = (0..cols)
        .map(|c| D::gather(x, &(0..rows).map(|r| r * cols + c).collect::<Vec<_>>()))
        .collect();
    columns
        .iter()
        .skip(1)
        .fold(columns[0].clone(), |acc, c| D::add(&acc, c))
}

/// Per-step accounting: time, traffic and material since the last step.
struct Step {
    started: Instant,
    net: veil_protocols::net::NetStats,
    material: veil_protocols::material::MaterialUse,
}

impl Step {
    fn new<N: Net, D: Domain>(party: &Party<N, D>) -> Self {
        Self {
            started: Instant::now(),
            net: party.stats().clone(),
            material: party.material_use(),
        }
    }

    fn done<N: Net, D: Domain>(
        &mut self,
        party: &Party<N, D>,
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
