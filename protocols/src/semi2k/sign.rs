//! The sign test: from a shared `z` (|z| < 2^62), shares of the bit `b = [z >= 0]`, multiplied into payload
//! vectors. ReLU, fused truncation + ReLU, DReLU and comparisons are all this one protocol.
//!
//! 1. Open `c = z + 2^62 + r` for a dealt uniform `r` (reveals nothing). With `z' = z + 2^62` in `[0, 2^63)`,
//!    `b` is bit 62 of `z' = c - r`, i.e. `b = c_62 ^ r_62 ^ borrow`, where `borrow = [c mod 2^62 < r mod 2^62]`.
//!    The same opening also truncates `z` when asked (see `trunc.rs`), which saves a round after a product.
//! 2. `borrow` compares a public number with an XOR-shared one, bit-sliced over the whole batch: per bit `i`,
//!    `G_i = r_i & !c_i` (r is larger here) and `P_i = !(r_i ^ c_i)` (equal here); a prefix tree merges
//!    `(G, P)` pairs from the most significant end, `G = G_hi ^ (P_hi & G_lo)`, `P = P_hi & P_lo`. Its first
//!    level only multiplies dealt bits by public ones once the dealer supplies `r_hi & r_lo` for each pair of
//!    adjacent bits, so it is local (see `Domain::pair_leaves`). The other 5 levels (over 31 nodes) take one
//!    round of AND gates (Beaver triples on bits) each. A pair's two ANDs share the operand `P_hi`, so the pair
//!    opens three masked bit vectors, not four.
//! 3. Multiply payloads `v` by `b` with a daBit `u` (XOR- and additively shared): open `e = b ^ u`, and with the
//!    dealt `alpha` and `alpha * u` (opened `delta = v - alpha` earlier, for free, in rounds 1 or 2),
//!    `b * v = e * v + (1 - 2e) * (delta * u + alpha * u)`.
//!
//! Rounds: 1 + 5 + 1 = 7. Every opened value is masked by fresh dealt randomness: `c` by `r`, the AND inputs by
//! their triples' `a`, `b`, `b2`, `e` by `u`, `delta` by `alpha`.

use crate::bits;
use crate::domain::Domain;
use crate::error::{ensure_shape, Result};
use crate::material::kinds::{compared_pair, sign_levels, COMPARED_BITS, COMPARED_PAIRS};
use crate::material::{Material, Request};
use crate::net::Net;

use super::{open::Round, Party};

/// What the sign test multiplies by `b = [z >= 0]`.
pub(crate) struct SignJob<'a, D: Domain> {
    /// The value tested.
    pub z: &'a D::Arith,
    /// Truncate `z` by `f` in the same opening (only meaningful with `select_self`).
    pub truncate: bool,
    /// Include `z` itself (or its truncation) as the first payload.
    pub select_self: bool,
    /// Further payloads, each as long as `z`.
    pub extras: Vec<D::Arith>,
}

impl<N: Net, D: Domain> Party<N, D> {
    /// Runs the sign test; returns `b * payload` for every payload (self first, then extras).
    pub(crate) fn sign_select(&mut self, job: SignJob<'_, D>) -> Result<Vec<D::Arith>> {
        let len = D::len(job.z);
        for extra in &job.extras {
            ensure_shape(D::len(extra) == len, "sign_select", || {
                format!("payload {} vs value {len}", D::len(extra))
            })?;
        }
        let f = self.fixed_point.frac_bits();
        let payloads = usize::from(job.select_self) + job.extras.len();
        let mut m = self
            .material
            .sign(len, job.truncate.then_some(f), payloads)?;
        for level in &mut m.levels {
            self.deviate_bit_triple(&mut level.c);
        }
        let layout = bits::Layout::new(len);
        let words = layout.words;
        let alpha = |j: usize| D::slice(&m.alpha, j * len..(j + 1) * len);
        let first_extra = usize::from(job.select_self);

        // Round 1: the masked value, and every payload's delta already known.
        let masked = D::add(&self.offset_for_sign(job.z), &m.mask.r);
        let mut round = Round::default();
        round.words(masked);
        for (j, extra) in job.extras.iter().enumerate() {
            round.words(D::sub(extra, &alpha(first_extra + j)));
        }
        let self_delta_now = job.select_self && !job.truncate;
        if self_delta_now {
            round.words(D::sub(job.z, &alpha(0)));
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
            job.z.clone()
        };

        // The comparison's first level, local and bit-sliced: node j merges the bits of `compared_pair(j)`
        // (most significant first) from the leaves G = r & !c (r is larger here), P = !(r ^ c) = r ^ !c (equal
        // here), with the dealt products `r_high & r_low`.
        let c_planes = bits::to_planes(&c);
        let public_plane = |bit: usize| c_planes[bit * words..(bit + 1) * words].to_vec();
        let constants = self.holds_constants();
        let not_c: Vec<u64> = c_planes[..COMPARED_BITS * words]
            .iter()
            .map(|&c| !c)
            .collect();
        let (highs, lows): (Vec<usize>, Vec<usize>) =
            (0..COMPARED_PAIRS).map(compared_pair).unzip();
        let (mut g, mut p) = D::pair_leaves(
            &self.state,
            &m.r_planes,
            &m.r_pairs,
            [&highs, &lows],
            layout,
            &not_c,
            constants,
        );

        // The other levels: one round each. G = G_hi ^ (P_hi & G_lo), P = P_hi & P_lo.
        let mut self_delta_pending = job.select_self && job.truncate;
        for (level, t) in sign_levels().iter().zip(&m.levels) {
            let highs: Vec<usize> = (0..level.pairs).map(|j| 2 * j).collect();
            let lows: Vec<usize> = (0..level.pairs).map(|j| 2 * j + 1).collect();
            let mut round = Round::default();
            let to_open = |x: &D::Bits, nodes: &[usize], y: &D::Bits| {
                D::bit_nodes_xor_to_open(x, nodes, words, y, len)
            };
            round.bits(to_open(&p, &highs, &t.a), level.pairs, len);
            round.bits(to_open(&g, &lows, &t.b), level.pairs, len);
            round.bits(to_open(&p, &lows[..level.with_p], &t.b2), level.with_p, len);
            if self_delta_pending {
                round.words(D::sub(&self_value, &alpha(0)));
            }
            let mut opened = self.open_round(round)?.into_iter();
            let d = opened.next().unwrap_or_default();
            let e = opened.next().unwrap_or_default();
            let e2 = opened.next().unwrap_or_default();
            if self_delta_pending {
                deltas[0] = opened.next().unwrap_or_default();
                self_delta_pending = false;
            }
            // x & y from a triple (a, b, c) and opened d = x ^ a, e = y ^ b: c ^ (d & b) ^ (e & a) ^ (d & e).
            // The P products use the first `with_p` pairs of `a` (and_gate reads only as much of it as `c2`).
            // Each result is allocated with room for what is appended to it below.
            let with_p_words = level.with_p * words;
            let odd_words = if level.nodes % 2 == 1 { words } else { 0 };
            let (mut g_next, mut p_next) = D::and_gate_pair(
                &self.state,
                &t.a,
                [(&t.b, &t.c), (&t.b2, &t.c2)],
                [&d, &e, &e2[..with_p_words.min(e2.len())]],
                constants,
                [odd_words, (level.pairs - level.with_p) * words + odd_words],
                layout,
            );
            D::bit_nodes_xor_into(&mut g_next, &g, &highs, words);
            if level.pairs > level.with_p {
                // The least significant pair's P is never read again: keep the node count aligned.
                D::bit_extend_zeros(&mut p_next, (level.pairs - level.with_p) * words);
            }
            if level.nodes % 2 == 1 {
                let last = (level.nodes - 1) * words..level.nodes * words;
                D::bit_extend(&mut g_next, &g, last.clone());
                D::bit_extend(&mut p_next, &p, last);
            }
            g = g_next;
            p = p_next;
        }

        // b = c_62 ^ r_62 ^ borrow, then open e = b ^ u.
        // The dealt bits XORed into the (possibly folded) tree value carry their folds.
        let mut r62 = D::bit_slice(
            &m.r_planes,
            COMPARED_BITS * words..(COMPARED_BITS + 1) * words,
        );
        D::preprocess_bits(&mut r62, layout);
        D::preprocess_bits(&mut m.u_bits, layout);
        // The public plane is zero beyond the `len` valid bits (the padding of a value never opened).
        let c62: Vec<u64> = public_plane(COMPARED_BITS)
            .iter()
            .enumerate()
            .map(|(i, &w)| w & layout.valid(i))
            .collect();
        let b = D::xor_public(
            &self.state,
            &D::xor(&r62, &D::bit_slice(&g, 0..words)),
            &c62,
            constants,
        );
        let mut round = Round::default();
        round.bits(D::xor(&b, &m.u_bits), 1, len);
        let e = self
            .open_round(round)?
            .into_iter()
            .next()
            .unwrap_or_default();
        let e_int: Vec<u64> = (0..len).map(|i| u64::from(bits::get(&e, i))).collect();

        // b * v = e * v + (1 - 2e) * (delta * u + alpha * u) = vu + e * (v - 2 vu), vu = delta * u + alpha * u.
        let mut values: Vec<D::Arith> = Vec::with_capacity(payloads);
        if job.select_self {
            values.push(self_value);
        }
        values.extend(job.extras);
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(j, v)| {
                let au = D::slice(&m.alpha_u, j * len..(j + 1) * len);
                D::select_by_opened_bit(&m.u, &deltas[j], &au, &v, &e_int)
            })
            .collect())
    }

    /// Preprocessing of the comparisons whose material is already prepared (see `PartyMaterial::prepare`):
    /// the AND triples' masks that the prefix levels open go through [`Domain::preprocess_bits`] (for
    /// `spdz2k`, their MAC shares are folded ahead, so an opening folds only the value it masks).
    pub fn precompute_comparisons(&mut self) {
        for (request, material) in self.material.prepared_mut() {
            if let (Request::Sign { len, .. }, Material::Sign(sign)) = (request, material) {
                let layout = bits::Layout::new(*len);
                for level in &mut sign.levels {
                    for dealt in [
                        &mut level.a,
                        &mut level.b,
                        &mut level.b2,
                        &mut level.c,
                        &mut level.c2,
                    ] {
                        D::preprocess_bits(dealt, layout);
                    }
                }
                D::preprocess_bits(&mut sign.r_planes, layout);
                D::preprocess_bits(&mut sign.r_pairs, layout);
                D::preprocess_bits(&mut sign.u_bits, layout);
            }
        }
    }

    /// `max(z, 0)` of a shared vector (7 rounds). Requires `|z| < 2^62`.
    pub fn relu(&mut self, z: &D::Arith) -> Result<D::Arith> {
        let mut out = self.sign_select(SignJob {
            z,
            truncate: false,
            select_self: true,
            extras: Vec::new(),
        })?;
        Ok(out.swap_remove(0))
    }

    /// `max(trunc(z), 0)`: truncation and ReLU from one opening (7 rounds), for a product's `2f` fractional bits.
    pub fn trunc_relu(&mut self, z: &D::Arith) -> Result<D::Arith> {
        let mut out = self.sign_select(SignJob {
            z,
            truncate: true,
            select_self: true,
            extras: Vec::new(),
        })?;
        Ok(out.swap_remove(0))
    }

    /// DReLU: additive shares of the integer bit `[z >= 0]` (7 rounds).
    pub fn drelu(&mut self, z: &D::Arith) -> Result<D::Arith> {
        let ones = self.share_public(&vec![1; D::len(z)]);
        let mut out = self.sign_select(SignJob {
            z,
            truncate: false,
            select_self: false,
            extras: vec![ones],
        })?;
        Ok(out.swap_remove(0))
    }

    /// Comparison: additive shares of the integer bit `[x >= y]` (7 rounds). Requires `|x - y| < 2^62`.
    pub fn greater_equal(&mut self, x: &D::Arith, y: &D::Arith) -> Result<D::Arith> {
        ensure_shape(D::len(x) == D::len(y), "greater_equal", || {
            format!("lengths {} and {}", D::len(x), D::len(y))
        })?;
        self.drelu(&D::sub(x, y))
    }
}
