//! The sign test: from a shared `z` (|z| < 2^62), shares of the bit `b = [z >= 0]`, multiplied into payload
//! vectors. ReLU, fused truncation + ReLU, DReLU and comparisons are all this one protocol.
//!
//! 1. Open `c = z + 2^62 + r` for a dealt uniform `r` (reveals nothing). With `z' = z + 2^62` in `[0, 2^63)`,
//!    `b` is bit 62 of `z' = c - r`, i.e. `b = c_62 ^ r_62 ^ borrow`, where `borrow = [c mod 2^62 < r mod 2^62]`.
//!    The same opening also truncates `z` when asked (see `trunc.rs`), which saves a round after a product.
//! 2. `borrow` compares a public number with an XOR-shared one, bit-sliced over the whole batch: per bit `i`,
//!    `G_i = r_i & !c_i` (r is larger here) and `P_i = !(r_i ^ c_i)` (equal here) are local; a prefix tree
//!    merges `(G, P)` pairs from the most significant end, `G = G_hi ^ (P_hi & G_lo)`, `P = P_hi & P_lo`, with
//!    one round of AND gates (Beaver triples on bits) per level: 6 levels for 62 bits. A pair's two ANDs share
//!    the operand `P_hi`, so the pair opens three masked bit vectors, not four.
//! 3. Multiply payloads `v` by `b` with a daBit `u` (XOR- and additively shared): open `e = b ^ u`, and with the
//!    dealt `alpha` and `alpha * u` (opened `delta = v - alpha` earlier, for free, in rounds 1 or 2),
//!    `b * v = e * v + (1 - 2e) * (delta * u + alpha * u)`.
//!
//! Rounds: 1 + 6 + 1 = 8. Every opened value is masked by fresh dealt randomness: `c` by `r`, the AND inputs by
//! their triples' `a`, `b`, `b2`, `e` by `u`, `delta` by `alpha`.

use crate::bits;
use crate::error::{ensure_shape, Result};
use crate::material::kinds::{prefix_levels, COMPARED_BITS};
use crate::net::Net;
use crate::ring;

use super::{open::Round, Party};

/// What the sign test multiplies by `b = [z >= 0]`.
pub(crate) struct SignJob<'a> {
    /// The value tested.
    pub z: &'a [u64],
    /// Truncate `z` by `f` in the same opening (only meaningful with `select_self`).
    pub truncate: bool,
    /// Include `z` itself (or its truncation) as the first payload.
    pub select_self: bool,
    /// Further payloads, each as long as `z`.
    pub extras: Vec<Vec<u64>>,
}

impl<N: Net> Party<N> {
    /// Runs the sign test; returns `b * payload` for every payload (self first, then extras).
    pub(crate) fn sign_select(&mut self, job: SignJob<'_>) -> Result<Vec<Vec<u64>>> {
        let len = job.z.len();
        for extra in &job.extras {
            ensure_shape(extra.len() == len, "sign_select", || {
                format!("payload {} vs value {len}", extra.len())
            })?;
        }
        let f = self.fixed_point.frac_bits();
        let payloads = usize::from(job.select_self) + job.extras.len();
        let m = self
            .material
            .sign(len, job.truncate.then_some(f), payloads)?;
        let words = bits::words_for(len);
        let alpha = |j: usize| &m.alpha[j * len..(j + 1) * len];
        let first_extra = usize::from(job.select_self);

        // Round 1: the masked value, and every payload's delta already known.
        let mut masked = self.offset_for_sign(job.z);
        ring::add_assign(&mut masked, &m.mask.r);
        let mut round = Round::default();
        round.words(masked);
        for (j, extra) in job.extras.iter().enumerate() {
            round.words(ring::sub(extra, alpha(first_extra + j)));
        }
        let self_delta_now = job.select_self && !job.truncate;
        if self_delta_now {
            round.words(ring::sub(job.z, alpha(0)));
        }
        let mut opened = self.open_round(round)?.into_iter();
        let c = opened.next().unwrap_or_default();
        let mut deltas: Vec<Vec<u64>> = vec![Vec::new(); payloads];
        for j in 0..job.extras.len() {
            deltas[first_extra + j] = opened.next().unwrap_or_default();
        }
        if self_delta_now {
            deltas[0] = opened.next().unwrap_or_default();
        }
        let self_value = if job.truncate {
            self.finish_trunc(&c, &m.mask)
        } else {
            job.z.to_vec()
        };

        // Level 0 of the comparison, bit-sliced: node q holds bit 61 - q (most significant first).
        let c_planes = bits::to_planes(&c);
        let plane = |planes: &[u64], bit: usize| planes[bit * words..(bit + 1) * words].to_vec();
        let constants = self.holds_constants();
        let mut g = Vec::with_capacity(COMPARED_BITS * words);
        let mut p = Vec::with_capacity(COMPARED_BITS * words);
        for q in 0..COMPARED_BITS {
            let bit = COMPARED_BITS - 1 - q;
            let (r, cp) = (plane(&m.r_planes, bit), plane(&c_planes, bit));
            g.extend(r.iter().zip(&cp).map(|(&r, &c)| r & !c));
            p.extend(
                r.iter()
                    .zip(&cp)
                    .map(|(&r, &c)| if constants { r ^ !c } else { r }),
            );
        }

        // Prefix levels: one round each.
        let mut self_delta_pending = job.select_self && job.truncate;
        for (level, t) in prefix_levels(COMPARED_BITS).iter().zip(&m.levels) {
            let node = |v: &[u64], i: usize| v[i * words..(i + 1) * words].to_vec();
            let mut p_hi = Vec::with_capacity(level.pairs * words);
            let mut g_lo = Vec::with_capacity(level.pairs * words);
            let mut p_lo = Vec::with_capacity(level.with_p * words);
            for j in 0..level.pairs {
                p_hi.extend(node(&p, 2 * j));
                g_lo.extend(node(&g, 2 * j + 1));
                if j < level.with_p {
                    p_lo.extend(node(&p, 2 * j + 1));
                }
            }
            let mut round = Round::default();
            round.bits(bits::xor(&p_hi, &t.a), level.pairs, len);
            round.bits(bits::xor(&g_lo, &t.b), level.pairs, len);
            round.bits(bits::xor(&p_lo, &t.b2), level.with_p, len);
            if self_delta_pending {
                round.words(ring::sub(&self_value, alpha(0)));
            }
            let mut opened = self.open_round(round)?.into_iter();
            let d = opened.next().unwrap_or_default();
            let e = opened.next().unwrap_or_default();
            let e2 = opened.next().unwrap_or_default();
            if self_delta_pending {
                deltas[0] = opened.next().unwrap_or_default();
                self_delta_pending = false;
            }
            // x & y from a triple (a, b, c) and opened d = x ^ a, e = y ^ b: c ^ (d & b) ^ (e & a) ^ [d & e].
            let and = |c: u64, d: u64, b: u64, e: u64, a: u64| {
                let mut z = c ^ (d & b) ^ (e & a);
                if constants {
                    z ^= d & e;
                }
                z
            };
            let new_nodes = level.nodes.div_ceil(2);
            let mut g_next = vec![0u64; new_nodes * words];
            let mut p_next = vec![0u64; new_nodes * words];
            for j in 0..level.pairs {
                for w in 0..words {
                    let i = j * words + w;
                    let hi = 2 * j * words + w;
                    g_next[i] = g[hi] ^ and(t.c[i], d[i], t.b[i], e[i], t.a[i]);
                    if j < level.with_p {
                        p_next[i] = and(t.c2[i], d[i], t.b2[i], e2[i], t.a[i]);
                    }
                }
            }
            if level.nodes % 2 == 1 {
                let last = level.nodes - 1;
                g_next[level.pairs * words..].copy_from_slice(&g[last * words..(last + 1) * words]);
                p_next[level.pairs * words..].copy_from_slice(&p[last * words..(last + 1) * words]);
            }
            g = g_next;
            p = p_next;
        }

        // b = c_62 ^ r_62 ^ borrow, then open e = b ^ u.
        let mut b = plane(&m.r_planes, COMPARED_BITS);
        bits::xor_assign(&mut b, &g[..words]);
        if constants {
            bits::xor_assign(&mut b, &plane(&c_planes, COMPARED_BITS));
        }
        let mut round = Round::default();
        round.bits(bits::xor(&b, &m.u_bits), 1, len);
        let e = self
            .open_round(round)?
            .into_iter()
            .next()
            .unwrap_or_default();

        // b * v = e * v + (1 - 2e) * (delta * u + alpha * u).
        let mut values: Vec<Vec<u64>> = Vec::with_capacity(payloads);
        if job.select_self {
            values.push(self_value);
        }
        values.extend(job.extras);
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(j, v)| {
                let au = &m.alpha_u[j * len..(j + 1) * len];
                (0..len)
                    .map(|i| {
                        let vu = deltas[j][i].wrapping_mul(m.u[i]).wrapping_add(au[i]);
                        if bits::get(&e, i) {
                            v[i].wrapping_sub(vu)
                        } else {
                            vu
                        }
                    })
                    .collect()
            })
            .collect())
    }

    /// `max(z, 0)` of a shared vector (8 rounds). Requires `|z| < 2^62`.
    pub fn relu(&mut self, z: &[u64]) -> Result<Vec<u64>> {
        let mut out = self.sign_select(SignJob {
            z,
            truncate: false,
            select_self: true,
            extras: Vec::new(),
        })?;
        Ok(out.swap_remove(0))
    }

    /// `max(trunc(z), 0)`: truncation and ReLU from one opening (8 rounds), for a product's `2f` fractional bits.
    pub fn trunc_relu(&mut self, z: &[u64]) -> Result<Vec<u64>> {
        let mut out = self.sign_select(SignJob {
            z,
            truncate: true,
            select_self: true,
            extras: Vec::new(),
        })?;
        Ok(out.swap_remove(0))
    }

    /// DReLU: additive shares of the integer bit `[z >= 0]` (8 rounds).
    pub fn drelu(&mut self, z: &[u64]) -> Result<Vec<u64>> {
        let ones = self.share_public(&vec![1; z.len()]);
        let mut out = self.sign_select(SignJob {
            z,
            truncate: false,
            select_self: false,
            extras: vec![ones],
        })?;
        Ok(out.swap_remove(0))
    }

    /// Comparison: additive shares of the integer bit `[x >= y]` (8 rounds). Requires `|x - y| < 2^62`.
    pub fn greater_equal(&mut self, x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
        ensure_shape(x.len() == y.len(), "greater_equal", || {
            format!("lengths {} and {}", x.len(), y.len())
        })?;
        self.drelu(&ring::sub(x, y))
    }
}
