//! `spdz2k`: the `semi2k` protocol logic over MAC-authenticated shares, secure with abort against up to n-1
//! malicious parties given a dealer that colludes with none of them (Cramer, Damgard, Escudero, Scholl, Xing,
//! "SPDZ2k: Efficient MPC mod 2^k with Active Security for Dishonest Majority", CRYPTO 2018; k = 64, s = 64).
//!
//! The protocol code is the one in `semi2k/` (generic over [`crate::domain::Domain`]); this module supplies the
//! share type and what the MACs add:
//! - arithmetic shares and MACs in Z_2^128 (see `material/auth.rs`); an opening sends the full 128-bit share
//!   (16 bytes per element, twice `semi2k`), as the SPDZ2k paper's partial opening does, and every opened
//!   value is masked by a dealt value uniform in all 128 bits;
//! - bits XOR-shared with GF(2^64) MACs (field SPDZ over the subfield GF(2)): opening a bit sends one bit, as
//!   in `semi2k`; the daBits that join the two worlds are dealt consistent by the trusted dealer;
//! - every opened value (with this party's MAC share) is recorded, and [`check`] runs the batched MAC check
//!   over all of them before any output is released.
//!
//! Cost against `semi2k`: arithmetic openings take twice the bytes, bit openings the same, plus 4 rounds and
//! about 200 bytes per party for each check. Local work grows more (128-bit arithmetic, a 64-bit MAC per bit).

pub mod check;
pub mod gf2;
pub mod local;
pub mod transcript;

use sha2::{Digest, Sha256};

use crate::domain::Domain;
use crate::error::Result;
use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::material::auth::{AuthBits, AuthPartyGenerator, AuthVec, KeyShares};

pub use crate::material::auth::{AuthBits as Bits, AuthVec as Shares};

/// The authenticated share domain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spdz2k;

/// A `spdz2k` party.
pub type Party<N> = crate::semi2k::Party<N, Spdz2k>;

/// A party's MAC keys and the record of everything it opened since the last check.
pub struct State {
    pub(crate) keys: KeyShares,
    /// Opened arithmetic values, full width.
    pub(crate) opened: Vec<u128>,
    /// This party's MAC shares of them.
    pub(crate) macs: Vec<u128>,
    /// Opened bits, 64 per word (positions beyond an opening's length are zero).
    pub(crate) bit_words: Vec<u64>,
    /// This party's MAC shares of them folded per word: entry `w` is `sum_b x^b m_wb` in GF(2^64) over the
    /// word's bits (MAC shares beyond an opening's length count as zero). See [`gf2::fold`].
    pub(crate) bit_macs: Vec<u64>,
    /// Hash of every opened value in order: all parties must have seen the same.
    pub(crate) view: Sha256,
}

impl State {
    /// Values recorded since the last check (arithmetic elements, bit words).
    pub fn pending(&self) -> (usize, usize) {
        (self.opened.len(), self.bit_words.len())
    }
}

fn mul_wide(x: &[u128], p: &[u64]) -> Vec<u128> {
    x.iter().zip(p).map(|(&a, &b)| mul_64_128(b, a)).collect()
}

/// `x * y mod 2^128` for a 64-bit `x`: one widening and one low product (the `x_hi * y_hi` term vanishes).
#[inline(always)]
fn mul_64_128(x: u64, y: u128) -> u128 {
    let low = u128::from(x) * u128::from(y as u64);
    low.wrapping_add(u128::from(x.wrapping_mul((y >> 64) as u64)) << 64)
}

/// `e · y` over Z_2^128 for public `e` (m x k, words) and wide `y` (k x n), for the value and the MAC
/// shares together (one pass over `e`).
fn gemm_public_left([m, k, n]: [usize; 3], e: &[u64], y: [&[u128]; 2]) -> [Vec<u128>; 2] {
    let mut out = [vec![0u128; m * n], vec![0u128; m * n]];
    for i in 0..m {
        for p in 0..k {
            let x = e[i * k + p];
            if x == 0 {
                continue;
            }
            for (c, b) in out.iter_mut().zip(y) {
                let row = &mut c[i * n..(i + 1) * n];
                for (o, &v) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                    *o = o.wrapping_add(mul_64_128(x, v));
                }
            }
        }
    }
    out
}

/// `x · f` over Z_2^128 for wide `x` (m x k) and public `f` (k x n, words), values and MACs together (one
/// pass over `f`).
fn gemm_public_right([m, k, n]: [usize; 3], [xv, xm]: [&[u128]; 2], f: &[u64]) -> [Vec<u128>; 2] {
    let (mut ov, mut om) = (vec![0u128; m * n], vec![0u128; m * n]);
    for i in 0..m {
        let (rv, rm) = (&mut ov[i * n..(i + 1) * n], &mut om[i * n..(i + 1) * n]);
        for p in 0..k {
            let (v, mac) = (xv[i * k + p], xm[i * k + p]);
            let (vl, vh, ml, mh) = (v as u64, (v >> 64) as u64, mac as u64, (mac >> 64) as u64);
            for ((ov, om), &y) in rv.iter_mut().zip(rm.iter_mut()).zip(&f[p * n..(p + 1) * n]) {
                let (wide, low_v, low_m) = (u128::from(y), u128::from(vl), u128::from(ml));
                *ov = ov
                    .wrapping_add(low_v * wide)
                    .wrapping_add(u128::from(vh.wrapping_mul(y)) << 64);
                *om = om
                    .wrapping_add(low_m * wide)
                    .wrapping_add(u128::from(mh.wrapping_mul(y)) << 64);
            }
        }
    }
    [ov, om]
}

fn read_u128(c: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(c);
    u128::from_le_bytes(b)
}

impl Domain for Spdz2k {
    type Arith = AuthVec;
    type Bits = AuthBits;
    type Gen = AuthPartyGenerator;
    type State = State;
    const NAME: &'static str = "spdz2k";
    const WIRE_BYTES: usize = 16;

    fn state(generator: &AuthPartyGenerator) -> State {
        State {
            keys: generator.keys(),
            opened: Vec::new(),
            macs: Vec::new(),
            bit_words: Vec::new(),
            bit_macs: Vec::new(),
            view: Sha256::new(),
        }
    }

    fn len(x: &AuthVec) -> usize {
        x.v.len()
    }
    fn public(state: &State, values: &[u64], constants: bool) -> AuthVec {
        let mut out = AuthVec {
            v: vec![0; values.len()],
            m: vec![0; values.len()],
        };
        Self::add_public(state, &mut out, values, constants);
        out
    }
    fn add(x: &AuthVec, y: &AuthVec) -> AuthVec {
        let add =
            |a: &[u128], b: &[u128]| a.iter().zip(b).map(|(p, q)| p.wrapping_add(*q)).collect();
        AuthVec {
            v: add(&x.v, &y.v),
            m: add(&x.m, &y.m),
        }
    }
    fn sub(x: &AuthVec, y: &AuthVec) -> AuthVec {
        let sub =
            |a: &[u128], b: &[u128]| a.iter().zip(b).map(|(p, q)| p.wrapping_sub(*q)).collect();
        AuthVec {
            v: sub(&x.v, &y.v),
            m: sub(&x.m, &y.m),
        }
    }
    fn add_public(state: &State, x: &mut AuthVec, values: &[u64], constants: bool) {
        let alpha = state.keys.alpha;
        for (m, &c) in x.m.iter_mut().zip(values) {
            *m = m.wrapping_add(alpha.wrapping_mul(u128::from(c)));
        }
        if constants {
            for (v, &c) in x.v.iter_mut().zip(values) {
                *v = v.wrapping_add(u128::from(c));
            }
        }
    }
    fn mul_public(x: &AuthVec, p: &[u64]) -> AuthVec {
        AuthVec {
            v: mul_wide(&x.v, p),
            m: mul_wide(&x.m, p),
        }
    }
    fn gemm_left(_gemm: &dyn Gemm, mkn: [usize; 3], e: &[u64], y: &AuthVec) -> AuthVec {
        let [v, m] = gemm_public_left(mkn, e, [&y.v, &y.m]);
        AuthVec { v, m }
    }
    fn gemm_right(_gemm: &dyn Gemm, mkn: [usize; 3], x: &AuthVec, f: &[u64]) -> AuthVec {
        let [v, m] = gemm_public_right(mkn, [&x.v, &x.m], f);
        AuthVec { v, m }
    }
    fn lower(lowering: &Lowering, x: &AuthVec, batch: usize) -> Result<AuthVec> {
        Ok(AuthVec {
            v: lowering.lower_any(&x.v, batch)?,
            m: lowering.lower_any(&x.m, batch)?,
        })
    }
    fn slice(x: &AuthVec, range: std::ops::Range<usize>) -> AuthVec {
        AuthVec {
            v: x.v[range.clone()].to_vec(),
            m: x.m[range].to_vec(),
        }
    }
    fn gather(x: &AuthVec, indices: &[usize]) -> AuthVec {
        AuthVec {
            v: indices.iter().map(|&i| x.v[i]).collect(),
            m: indices.iter().map(|&i| x.m[i]).collect(),
        }
    }
    fn concat(parts: &[AuthVec]) -> AuthVec {
        AuthVec {
            v: parts.iter().flat_map(|p| p.v.iter().copied()).collect(),
            m: parts.iter().flat_map(|p| p.m.iter().copied()).collect(),
        }
    }
    fn corrupt(x: &mut AuthVec, index: usize, delta: u64) {
        if let Some(v) = x.v.get_mut(index) {
            *v = v.wrapping_add(u128::from(delta));
        }
    }
    fn corrupt_mac(x: &mut AuthVec, index: usize, delta: u64) {
        if let Some(m) = x.m.get_mut(index) {
            *m = m.wrapping_add(u128::from(delta));
        }
    }
    fn flip_bit(x: &mut AuthBits, bit: usize) {
        if let Some(w) = x.w.get_mut(bit / 64) {
            *w ^= 1 << (bit % 64);
        }
    }
    fn encode(x: &AuthVec, out: &mut Vec<u8>) {
        for v in &x.v {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn open(state: &mut State, own: &AuthVec, received: &[&[u8]]) -> Vec<u64> {
        let mut sum = own.v.clone();
        for chunk in received {
            for (s, c) in sum.iter_mut().zip(chunk.chunks_exact(16)) {
                *s = s.wrapping_add(read_u128(c));
            }
        }
        // One hash update for the whole opening (the same bytes, in order, as one per element).
        let bytes: Vec<u8> = sum.iter().flat_map(|y| y.to_le_bytes()).collect();
        state.view.update(&bytes);
        state.opened.extend_from_slice(&sum);
        state.macs.extend_from_slice(&own.m);
        sum.into_iter().map(|y| y as u64).collect()
    }
    fn bit_words(x: &AuthBits) -> &[u64] {
        &x.w
    }
    fn xor(x: &AuthBits, y: &AuthBits) -> AuthBits {
        let mut m = Vec::with_capacity(x.m.len().min(y.m.len()));
        gf2::xor_append(&x.m, &y.m, &mut m);
        AuthBits::new(crate::bits::xor(&x.w, &y.w), m)
    }
    fn and_public(x: &AuthBits, mask: &[u64]) -> AuthBits {
        // Branch-free: the mask is public, but keep the MAC path uniform anyway.
        let w = crate::bits::and(&x.w, mask);
        let mut m = Vec::with_capacity(64 * w.len());
        gf2::select_and(&x.m, mask, &mut m);
        AuthBits::new(w, m)
    }
    fn xor_public(state: &State, x: &AuthBits, mask: &[u64], constants: bool) -> AuthBits {
        let words = x.w.len().min(mask.len());
        let mut m = Vec::with_capacity(64 * words);
        gf2::select_xor(&x.m, mask, state.keys.beta, &mut m);
        let w = if constants {
            crate::bits::xor(&x.w, mask)
        } else {
            x.w[..words].to_vec()
        };
        AuthBits::new(w, m)
    }
    fn bit_slice(x: &AuthBits, range: std::ops::Range<usize>) -> AuthBits {
        AuthBits {
            w: x.w[range.clone()].to_vec(),
            m: x.m[64 * range.start..64 * range.end].to_vec(),
            f: if x.has_folds() {
                x.f[range].to_vec()
            } else {
                Vec::new()
            },
        }
    }
    fn bit_concat(parts: &[AuthBits]) -> AuthBits {
        AuthBits::new(
            parts.iter().flat_map(|p| p.w.iter().copied()).collect(),
            parts.iter().flat_map(|p| p.m.iter().copied()).collect(),
        )
    }
    fn bit_nodes(x: &AuthBits, nodes: &[usize], words: usize) -> AuthBits {
        let mut out = AuthBits::new(
            Vec::with_capacity(nodes.len() * words),
            Vec::with_capacity(64 * nodes.len() * words),
        );
        for &i in nodes {
            out.w.extend_from_slice(&x.w[i * words..(i + 1) * words]);
            out.m
                .extend_from_slice(&x.m[64 * i * words..64 * (i + 1) * words]);
        }
        out
    }
    fn bit_extend(x: &mut AuthBits, y: &AuthBits, range: std::ops::Range<usize>) {
        let folds = x.has_folds() && y.has_folds();
        x.w.extend_from_slice(&y.w[range.clone()]);
        x.m.extend_from_slice(&y.m[64 * range.start..64 * range.end]);
        if folds {
            x.f.extend_from_slice(&y.f[range]);
        } else {
            x.f.clear();
        }
    }
    fn bit_extend_zeros(x: &mut AuthBits, words: usize) {
        let folds = x.has_folds();
        x.w.resize(x.w.len() + words, 0);
        x.m.resize(x.m.len() + 64 * words, 0);
        if folds {
            x.f.resize(x.w.len(), 0);
        } else {
            x.f.clear();
        }
    }
    fn leaves(
        state: &State,
        r: &AuthBits,
        nodes: &[usize],
        words: usize,
        mask: &[u64],
        constants: bool,
    ) -> (AuthBits, AuthBits) {
        // One pass over the selected nodes' MACs, writing both results and their folds (no gathered copy
        // of `r`, and no second pass when the leaves are opened).
        let total = nodes.len() * words;
        let empty = || AuthBits {
            w: Vec::with_capacity(total),
            m: Vec::with_capacity(64 * total),
            f: Vec::with_capacity(total),
        };
        let (mut g, mut p) = (empty(), empty());
        for (j, &i) in nodes.iter().enumerate() {
            let (src, dst) = (i * words..(i + 1) * words, j * words..(j + 1) * words);
            for (&r, &c) in r.w[src.clone()].iter().zip(&mask[dst.clone()]) {
                g.w.push(r & c);
                p.w.push(if constants { r ^ c } else { r });
            }
            gf2::leaf_macs(
                &r.m[64 * src.start..64 * src.end],
                &mask[dst],
                state.keys.beta,
                [&mut g.m, &mut p.m],
                [&mut g.f, &mut p.f],
            );
        }
        (g, p)
    }
    fn bit_nodes_xor_into(y: &mut AuthBits, x: &AuthBits, nodes: &[usize], words: usize) {
        let folds = y.has_folds() && x.has_folds();
        for (j, &i) in nodes.iter().enumerate() {
            let (src, dst) = (i * words..(i + 1) * words, j * words..(j + 1) * words);
            for (o, a) in y.w[dst.clone()].iter_mut().zip(&x.w[src.clone()]) {
                *o ^= a;
            }
            if folds {
                // Folding is linear: the fold of a XOR is the XOR of the folds.
                for (o, a) in y.f[dst.clone()].iter_mut().zip(&x.f[src.clone()]) {
                    *o ^= a;
                }
            }
            gf2::xor_into(
                &mut y.m[64 * dst.start..64 * dst.end],
                &x.m[64 * src.start..64 * src.end],
            );
        }
        if !folds {
            y.f.clear();
        }
    }
    fn bit_nodes_xor(x: &AuthBits, nodes: &[usize], words: usize, y: &AuthBits) -> AuthBits {
        // One pass per node: gather and XOR without an intermediate copy (or zero-fill).
        let mut out = AuthBits::new(
            Vec::with_capacity(nodes.len() * words),
            Vec::with_capacity(64 * nodes.len() * words),
        );
        for (j, &i) in nodes.iter().enumerate() {
            let (src, dst) = (i * words..(i + 1) * words, j * words..(j + 1) * words);
            out.w.extend(
                x.w[src.clone()]
                    .iter()
                    .zip(&y.w[dst.clone()])
                    .map(|(a, b)| a ^ b),
            );
            let (src, dst) = (64 * src.start..64 * src.end, 64 * dst.start..64 * dst.end);
            gf2::xor_append(&x.m[src], &y.m[dst], &mut out.m);
        }
        out
    }
    fn bit_nodes_xor_to_open(
        x: &AuthBits,
        nodes: &[usize],
        words: usize,
        y: &AuthBits,
        len: usize,
    ) -> AuthBits {
        // The opened value's MACs only enter the check folded per word (see `record_bits`), so fold them
        // here, once, instead of writing 64 MAC words per word: the result holds one folded MAC share per
        // word (`m.len() == w.len()`), over the `len` valid bits of each node (the rest count as zero,
        // exactly as `record_bits` folds a full share). Full words take the cached folds where both
        // operands have them (fold is linear); a node's partial last word is always folded from its MACs,
        // since only its valid positions count.
        let mut out = AuthBits::new(
            Vec::with_capacity(nodes.len() * words),
            Vec::with_capacity(nodes.len() * words),
        );
        if words == 0 {
            return out;
        }
        let cached = x.has_folds() && y.has_folds();
        let valid_last = len - (words - 1) * 64;
        let full = if valid_last == 64 { words } else { words - 1 };
        let mut tail = [0u64; 64];
        for (j, &i) in nodes.iter().enumerate() {
            let (src, dst) = (i * words..(i + 1) * words, j * words..(j + 1) * words);
            out.w.extend(
                x.w[src.clone()]
                    .iter()
                    .zip(&y.w[dst.clone()])
                    .map(|(a, b)| a ^ b),
            );
            if cached {
                out.m.extend(
                    x.f[src.start..src.start + full]
                        .iter()
                        .zip(&y.f[dst.start..dst.start + full])
                        .map(|(a, b)| a ^ b),
                );
            } else {
                let (xs, ys) = (64 * src.start, 64 * dst.start);
                gf2::xor_fold(
                    &x.m[xs..xs + 64 * full],
                    &y.m[ys..ys + 64 * full],
                    &mut out.m,
                );
            }
            if full < words {
                let (xs, ys) = (64 * (src.start + full), 64 * (dst.start + full));
                for (b, t) in tail.iter_mut().enumerate() {
                    *t = if b < valid_last {
                        x.m[xs + b] ^ y.m[ys + b]
                    } else {
                        0
                    };
                }
                out.m.push(gf2::fold(&tail));
            }
        }
        out
    }
    fn and_gate(
        state: &State,
        [a, b, c]: [&AuthBits; 3],
        d: &[u64],
        e: &[u64],
        constants: bool,
    ) -> AuthBits {
        // One pass over the value words, one over the MAC words:
        // c ^ [d] b ^ [e] a ^ [d & e] beta_i (public bits select whole MAC words), folding each output word's
        // MACs while they are at hand (the next level opens most of them).
        // `a` may be longer than `c` (a pair's two ANDs share it); only its first words are read.
        let words = c.w.len();
        let mut w = Vec::with_capacity(words);
        for i in 0..words {
            let (dw, ew) = (d[i], e[i]);
            let mut v = c.w[i] ^ (dw & b.w[i]) ^ (ew & a.w[i]);
            if constants {
                v ^= dw & ew;
            }
            w.push(v);
        }
        let mut m = Vec::with_capacity(64 * words);
        let mut f = Vec::with_capacity(words);
        gf2::and_gate_macs(
            [&a.m[..64 * words], &b.m[..64 * words], &c.m],
            [&d[..words], &e[..words]],
            state.keys.beta,
            &mut m,
            &mut f,
        );
        AuthBits { w, m, f }
    }
    fn preprocess_bits(x: &mut AuthBits) {
        x.fill_folds();
    }
    fn record_bits(state: &mut State, own: &AuthBits, opened: &[u64], nodes: usize, len: usize) {
        let words = crate::bits::words_for(len);
        if words == 0 {
            return;
        }
        let valid_last = len - (words - 1) * 64;
        let mut tail = [0u64; 64];
        for node in 0..nodes {
            let first = node * words;
            for i in 0..words {
                let index = first + i;
                let valid = if i + 1 == words { valid_last } else { 64 };
                let keep = if valid == 64 {
                    u64::MAX
                } else {
                    (1u64 << valid) - 1
                };
                let word = opened.get(index).copied().unwrap_or(0) & keep;
                state.bit_words.push(word);
            }
            let recorded = &state.bit_words[state.bit_words.len() - words..];
            let bytes: Vec<u8> = recorded.iter().flat_map(|w| w.to_le_bytes()).collect();
            state.view.update(&bytes);
            if own.m.len() == own.w.len() {
                // Already folded by `bit_nodes_xor_to_open`.
                match own.m.get(first..first + words) {
                    Some(folded) => state.bit_macs.extend_from_slice(folded),
                    None => state.bit_macs.extend(std::iter::repeat_n(0, words)),
                }
                continue;
            }
            // Fold the node's MAC shares, 64 per word; a partial last word's unused positions count as zero.
            let start = state.bit_macs.len();
            state.bit_macs.resize(start + words, 0);
            let macs = own.m.get(64 * first..64 * (first + words));
            let full = if valid_last == 64 { words } else { words - 1 };
            if let Some(macs) = macs {
                gf2::fold_words(&macs[..64 * full], &mut state.bit_macs[start..start + full]);
                if full < words {
                    tail[..valid_last].copy_from_slice(&macs[64 * full..64 * full + valid_last]);
                    tail[valid_last..].fill(0);
                    state.bit_macs[start + full] = gf2::fold(&tail);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_bits(rng: &mut rand::rngs::StdRng, words: usize) -> AuthBits {
        AuthBits::new(
            (0..words).map(|_| rng.random()).collect(),
            (0..64 * words).map(|_| rng.random()).collect(),
        )
    }

    /// The cache invariant of `AuthBits::f`: absent, or every word's fold of its MAC shares.
    fn folds_are_right(x: &AuthBits) -> bool {
        x.f.is_empty() || x.f == x.m.chunks_exact(64).map(gf2::fold).collect::<Vec<_>>()
    }

    #[test]
    fn cached_folds_stay_exact_and_openings_do_not_depend_on_them() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let (nodes, words, len) = (5, 3, 150);
        let state = State {
            keys: KeyShares {
                alpha: rng.random(),
                beta: rng.random(),
            },
            opened: Vec::new(),
            macs: Vec::new(),
            bit_words: Vec::new(),
            bit_macs: Vec::new(),
            view: Sha256::new(),
        };
        let r = random_bits(&mut rng, nodes * words);
        let mask: Vec<u64> = (0..nodes * words).map(|_| rng.random()).collect();
        let order: Vec<usize> = (0..nodes).rev().collect();
        let (g, p) = Spdz2k::leaves(&state, &r, &order, words, &mask, true);
        assert!(g.has_folds() && p.has_folds());
        assert!(folds_are_right(&g) && folds_are_right(&p));
        let gathered = Spdz2k::bit_nodes(&r, &order, words);
        assert_eq!(
            (g.w.clone(), g.m.clone()),
            (
                Spdz2k::and_public(&gathered, &mask).w,
                Spdz2k::and_public(&gathered, &mask).m
            )
        );
        assert_eq!(
            p.m,
            Spdz2k::xor_public(&state, &gathered, &mask, true).m,
            "the fused leaves equal gather, then and/xor"
        );

        let pairs = 2;
        let (mut a, mut b) = (
            random_bits(&mut rng, pairs * words),
            random_bits(&mut rng, pairs * words),
        );
        let c = random_bits(&mut rng, pairs * words);
        let (d, e): (Vec<u64>, Vec<u64>) = (
            (0..pairs * words).map(|_| rng.random()).collect(),
            (0..pairs * words).map(|_| rng.random()).collect(),
        );
        let mut gate = Spdz2k::and_gate(&state, [&a, &b, &c], &d, &e, true);
        assert!(gate.has_folds() && folds_are_right(&gate));
        Spdz2k::bit_nodes_xor_into(&mut gate, &g, &[0, 2], words);
        assert!(gate.has_folds() && folds_are_right(&gate));
        Spdz2k::bit_extend(&mut gate, &p, 0..words);
        Spdz2k::bit_extend_zeros(&mut gate, words);
        assert!(gate.has_folds() && folds_are_right(&gate));
        assert!(folds_are_right(&Spdz2k::bit_slice(&gate, words..2 * words)));

        // An opening folds the same values whether or not the operands carry cached folds.
        Spdz2k::preprocess_bits(&mut a);
        assert!(a.has_folds() && folds_are_right(&a));
        let cached = Spdz2k::bit_nodes_xor_to_open(&p, &[0, 3], words, &a, len);
        let (mut p_bare, a_bare) = (p.clone(), AuthBits::new(a.w.clone(), a.m.clone()));
        p_bare.f.clear();
        let bare = Spdz2k::bit_nodes_xor_to_open(&p_bare, &[0, 3], words, &a_bare, len);
        assert_eq!(cached, bare);
        b.f = vec![0; b.w.len()];
        assert!(
            !folds_are_right(&b),
            "a wrong cache is detectable by the invariant check"
        );
    }

    #[test]
    fn wide_products_with_public_words_match_full_u128_arithmetic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let [m, k, n] = [3, 5, 7];
        let e: Vec<u64> = (0..m * k).map(|_| rng.random()).collect();
        let f: Vec<u64> = (0..k * n).map(|_| rng.random()).collect();
        let wide = |len: usize, rng: &mut rand::rngs::StdRng| -> Vec<u128> {
            (0..len).map(|_| rng.random()).collect()
        };
        let (y, y2, x, x2) = (
            wide(k * n, &mut rng),
            wide(k * n, &mut rng),
            wide(m * k, &mut rng),
            wide(m * k, &mut rng),
        );
        let naive = |a: &dyn Fn(usize, usize) -> u128, b: &dyn Fn(usize, usize) -> u128| {
            let mut c = vec![0u128; m * n];
            for i in 0..m {
                for j in 0..n {
                    for p in 0..k {
                        c[i * n + j] = c[i * n + j].wrapping_add(a(i, p).wrapping_mul(b(p, j)));
                    }
                }
            }
            c
        };
        let [l1, l2] = gemm_public_left([m, k, n], &e, [&y, &y2]);
        assert_eq!(
            l1,
            naive(&|i, p| u128::from(e[i * k + p]), &|p, j| y[p * n + j])
        );
        assert_eq!(
            l2,
            naive(&|i, p| u128::from(e[i * k + p]), &|p, j| y2[p * n + j])
        );
        let [r1, r2] = gemm_public_right([m, k, n], [&x, &x2], &f);
        assert_eq!(
            r1,
            naive(&|i, p| x[i * k + p], &|p, j| u128::from(f[p * n + j]))
        );
        assert_eq!(
            r2,
            naive(&|i, p| x2[i * k + p], &|p, j| u128::from(f[p * n + j]))
        );
        assert_eq!(
            mul_wide(&x, &e),
            x.iter()
                .zip(&e)
                .map(|(&a, &b)| a.wrapping_mul(u128::from(b)))
                .collect::<Vec<_>>()
        );
    }
}
