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
//!   over all of them before any output is released;
//! - a large product with a fixed weight is computed in its value shares only and checked by projection
//!   (`product_check`): it opens its masked result without a MAC (one more round) and records its check as
//!   opened zeros, so the same batched MAC check covers it.
//!
//! Cost against `semi2k`: arithmetic openings take twice the bytes, bit openings the same, plus 4 rounds (3
//! when the seed commitments were exchanged ahead, see `Party::commit_check_seed`) and about 200 bytes per
//! party for each check, and one round per checked product. Local work grows more (128-bit arithmetic, a 64-bit MAC per dealt
//! bit). The comparison's intermediate bits keep only one folded MAC share per 64-bit word (see
//! [`AuthBits`]): the check needs no more of a value that is only XORed and opened, so an AND gate reads its
//! dealt operands' per-bit MACs and writes 1/64 of what it reads.

pub mod check;
pub mod gf2;
pub mod local;
mod product_check;
mod split_gemm;
pub mod transcript;

use sha2::{Digest, Sha256};

use crate::bits::Layout;
use crate::domain::Domain;
use crate::error::Result;
use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::material::auth::{AuthBits, AuthPartyGenerator, AuthVec, KeyShares};
use crate::material::ProductCheck;

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
    /// The next check's seed commitments, if exchanged ahead (see `Party::commit_check_seed`).
    pub(crate) seed_commitment: Option<check::SeedCommitment>,
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

/// Output columns that [`gemm_public_left`] sums in registers when `y` is small.
const LEFT_BLOCK: usize = 4;

/// Largest `y` (bytes of one of its two arrays) for which [`gemm_public_left`] walks it column block by
/// column block: then it stays in the L2 cache across the blocks. Larger ones stream row by row once.
const LEFT_BLOCKED_BYTES: usize = 128 << 10;

/// `e · y` over Z_2^128 for public `e` (m x k, words) and wide `y` (k x n), for each of the `P` arrays of `y`
/// (the value and the MAC shares together, or the value shares alone).
fn gemm_public_left<const P: usize>(mkn: [usize; 3], e: &[u64], y: [&[u128]; P]) -> [Vec<u128>; P] {
    let [_, k, n] = mkn;
    if k * n * 16 <= LEFT_BLOCKED_BYTES && n >= LEFT_BLOCK {
        gemm_public_left_blocked(mkn, e, y)
    } else {
        gemm_public_left_rows(mkn, e, y)
    }
}

/// [`gemm_public_left`] for a small `y`: each output row in blocks of [`LEFT_BLOCK`] columns whose sums stay
/// in registers over the whole inner dimension (no read-modify-write of the output).
fn gemm_public_left_blocked<const P: usize>(
    [m, k, n]: [usize; 3],
    e: &[u64],
    y: [&[u128]; P],
) -> [Vec<u128>; P] {
    let mut out: [Vec<u128>; P] = std::array::from_fn(|_| vec![0u128; m * n]);
    let full = n - n % LEFT_BLOCK;
    for (c, b) in out.iter_mut().zip(y) {
        for (row, out_row) in e.chunks_exact(k).zip(c.chunks_exact_mut(n)).take(m) {
            for j in (0..full).step_by(LEFT_BLOCK) {
                let mut acc = [0u128; LEFT_BLOCK];
                for (p, &x) in row.iter().enumerate() {
                    let ys = &b[p * n + j..p * n + j + LEFT_BLOCK];
                    for (a, &v) in acc.iter_mut().zip(ys) {
                        *a = a.wrapping_add(mul_64_128(x, v));
                    }
                }
                out_row[j..j + LEFT_BLOCK].copy_from_slice(&acc);
            }
            for j in full..n {
                out_row[j] = row.iter().enumerate().fold(0u128, |a, (p, &x)| {
                    a.wrapping_add(mul_64_128(x, b[p * n + j]))
                });
            }
        }
    }
    out
}

/// [`gemm_public_left`] for a large `y`: streams it row by row once per output row, accumulating into the
/// output row (which stays in L1).
fn gemm_public_left_rows<const P: usize>(
    [m, k, n]: [usize; 3],
    e: &[u64],
    y: [&[u128]; P],
) -> [Vec<u128>; P] {
    let mut out: [Vec<u128>; P] = std::array::from_fn(|_| vec![0u128; m * n]);
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

/// Adds the peers' wire shares (16 bytes per element, little-endian; lengths already checked) into `sum`.
fn add_received(sum: &mut [u128], received: &[&[u8]]) {
    for chunk in received {
        for (s, c) in sum.iter_mut().zip(chunk.chunks_exact(16)) {
            *s = s.wrapping_add(read_u128(c));
        }
    }
}

/// Hashes opened values into the view, through a small buffer: the same bytes, in order, as one update per
/// element (16 bytes, little-endian).
fn hash_opened(view: &mut Sha256, opened: &[u128]) {
    let mut bytes = [0u8; 16 * 256];
    for block in opened.chunks(256) {
        for (b, y) in bytes.chunks_exact_mut(16).zip(block) {
            b.copy_from_slice(&y.to_le_bytes());
        }
        view.update(&bytes[..16 * block.len()]);
    }
}

fn read_u128(c: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(c);
    u128::from_le_bytes(b)
}

/// A value's per-word folds: its MAC words if folded, else its cached folds (a full value XORed into a folded
/// one must carry them: see `Domain::preprocess_bits`), else folds over all 64 positions of each word.
fn folds_of(x: &AuthBits) -> std::borrow::Cow<'_, [u64]> {
    if x.is_folded() {
        std::borrow::Cow::Borrowed(&x.m)
    } else if x.has_folds() {
        std::borrow::Cow::Borrowed(&x.f)
    } else {
        debug_assert!(
            false,
            "a full value without cached folds XORed into a folded one"
        );
        let mut out = vec![0; x.w.len()];
        gf2::fold_words(&x.m, &mut out);
        std::borrow::Cow::Owned(out)
    }
}

/// A value's per-word folds over the valid positions of `layout`: as they are if folded or cached, else
/// computed from its MAC shares.
fn valid_folds(x: &AuthBits, layout: Layout) -> std::borrow::Cow<'_, [u64]> {
    if x.is_folded() {
        return std::borrow::Cow::Borrowed(&x.m);
    }
    if x.has_folds() {
        return std::borrow::Cow::Borrowed(&x.f);
    }
    let mut tail = [0u64; 64];
    let out =
        x.m.chunks_exact(64)
            .enumerate()
            .map(|(i, macs)| match layout.valid(i) {
                u64::MAX => gf2::fold(macs),
                keep => {
                    // Bit-sliced MAC words: the kept positions are the kept bits of each word.
                    for (t, m) in tail.iter_mut().zip(macs) {
                        *t = m & keep;
                    }
                    gf2::fold(&tail)
                }
            })
            .collect();
    std::borrow::Cow::Owned(out)
}

/// The value words of an AND gate from its triple and the opened `d`, `e` (as long as `c`), with room for
/// `spare` more: `c ^ (d & b) ^ (e & a) ^ (d & e)`, the last term on the party holding constants.
fn gate_values(
    [a, b, c]: [&AuthBits; 3],
    [d, e]: [&[u64]; 2],
    constants: bool,
    spare: usize,
) -> Vec<u64> {
    let mut w = Vec::with_capacity(c.w.len() + spare);
    for (i, &cw) in c.w.iter().enumerate() {
        let (dw, ew) = (d[i], e[i]);
        let mut v = cw ^ (dw & b.w[i]) ^ (ew & a.w[i]);
        if constants {
            v ^= dw & ew;
        }
        w.push(v);
    }
    w
}

impl Domain for Spdz2k {
    type Arith = AuthVec;
    type Bits = AuthBits;
    type Gen = AuthPartyGenerator;
    type State = State;
    type WeightValues = split_gemm::SplitWeight;
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
            seed_commitment: None,
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
    fn add_assign(x: &mut AuthVec, y: &AuthVec) {
        for (a, b) in x.v.iter_mut().zip(&y.v) {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in x.m.iter_mut().zip(&y.m) {
            *a = a.wrapping_add(*b);
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
    fn select_by_opened_bit(
        u: &AuthVec,
        delta: &[u64],
        au: &AuthVec,
        v: &AuthVec,
        e: &[u64],
    ) -> AuthVec {
        // Values and MACs alike (the combination is linear with public coefficients), one pass each; `e` is
        // public, so choosing by it reveals nothing.
        let select = |u: &[u128], au: &[u128], v: &[u128]| -> Vec<u128> {
            u.iter()
                .zip(delta)
                .zip(au)
                .zip(v.iter().zip(e))
                .map(|(((&u, &d), &au), (&v, &e))| {
                    let vu = mul_64_128(d, u).wrapping_add(au);
                    if e == 1 {
                        v.wrapping_sub(vu)
                    } else {
                        vu
                    }
                })
                .collect()
        };
        AuthVec {
            v: select(&u.v, &au.v, &v.v),
            m: select(&u.m, &au.m, &v.m),
        }
    }
    fn gemm_left(_gemm: &dyn Gemm, mkn: [usize; 3], e: &[u64], y: &AuthVec) -> AuthVec {
        let [v, m] = gemm_public_left(mkn, e, [&y.v, &y.m]);
        AuthVec { v, m }
    }
    fn weight_values(w: &AuthVec, inner_outputs: [usize; 2]) -> split_gemm::SplitWeight {
        split_gemm::SplitWeight::new(w, inner_outputs)
    }
    fn weight_gemm_left(
        gemm: &dyn Gemm,
        mkn: [usize; 3],
        e: &[u64],
        w: &AuthVec,
        split: &split_gemm::SplitWeight,
    ) -> AuthVec {
        match (split.values.product(mkn, e), split.macs.product(mkn, e)) {
            (Some(v), Some(m)) => AuthVec { v, m },
            _ => Self::gemm_left(gemm, mkn, e, w),
        }
    }
    fn masked_product_values(
        _gemm: &dyn Gemm,
        mkn: [usize; 3],
        e: &[u64],
        w: &AuthVec,
        values: &split_gemm::SplitWeight,
        r: &AuthVec,
    ) -> AuthVec {
        product_check::masked_values(mkn, e, w, values, r)
    }
    fn weight_projection(
        _gemm: &dyn Gemm,
        inner_outputs: [usize; 2],
        f: &[u64],
        rho: &AuthVec,
        b_rho: &AuthVec,
    ) -> AuthVec {
        product_check::weight_projection(inner_outputs, f, rho, b_rho)
    }
    fn open_unchecked(state: &mut State, own: &AuthVec, received: &[&[u8]]) -> Vec<u64> {
        product_check::open_unchecked(state, own, received)
    }
    fn finish_checked_product(
        state: &mut State,
        mkn: [usize; 3],
        e: &[u64],
        opened: &[u64],
        check: &ProductCheck<AuthVec>,
        weight_rho: &AuthVec,
        constants: bool,
    ) -> Result<AuthVec> {
        product_check::finish(state, mkn, e, opened, check, weight_rho, constants)
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
        // The sums go straight into the record of opened values.
        let start = state.opened.len();
        state.opened.extend_from_slice(&own.v);
        let sum = &mut state.opened[start..];
        add_received(sum, received);
        hash_opened(&mut state.view, sum);
        state.macs.extend_from_slice(&own.m);
        state.opened[start..].iter().map(|&y| y as u64).collect()
    }
    fn bit_words(x: &AuthBits) -> &[u64] {
        &x.w
    }
    fn xor(x: &AuthBits, y: &AuthBits) -> AuthBits {
        let w = crate::bits::xor(&x.w, &y.w);
        if x.is_folded() || y.is_folded() {
            let (fx, fy) = (folds_of(x), folds_of(y));
            let m = fx.iter().zip(fy.iter()).map(|(a, b)| a ^ b).collect();
            return AuthBits::new(w, m);
        }
        let mut m = Vec::with_capacity(x.m.len().min(y.m.len()));
        gf2::xor_append(&x.m, &y.m, &mut m);
        AuthBits::new(w, m)
    }
    fn and_public(x: &AuthBits, mask: &[u64]) -> AuthBits {
        debug_assert!(!x.is_folded(), "a folded value cannot be selected");
        // Branch-free: the mask is public, but keep the MAC path uniform anyway.
        let w = crate::bits::and(&x.w, mask);
        let mut m = Vec::with_capacity(64 * w.len());
        gf2::select_and(&x.m, mask, &mut m);
        AuthBits::new(w, m)
    }
    fn xor_public(state: &State, x: &AuthBits, mask: &[u64], constants: bool) -> AuthBits {
        let words = x.w.len().min(mask.len());
        let w = if constants {
            crate::bits::xor(&x.w, mask)
        } else {
            x.w[..words].to_vec()
        };
        if x.is_folded() {
            // The MAC shares of public bits c are beta_i * c, whose fold is beta_i times the word read as a
            // field element (the mask must be zero on padding positions, as the caller guarantees).
            let beta = state.keys.beta;
            let m = x.m[..words]
                .iter()
                .zip(mask)
                .map(|(&f, &c)| f ^ check::gf_mul(beta, c))
                .collect();
            return AuthBits::new(w, m);
        }
        let mut m = Vec::with_capacity(64 * words);
        gf2::select_xor(&x.m, mask, state.keys.beta, &mut m);
        AuthBits::new(w, m)
    }
    fn bit_slice(x: &AuthBits, range: std::ops::Range<usize>) -> AuthBits {
        let per_word = if x.is_folded() { 1 } else { 64 };
        AuthBits {
            w: x.w[range.clone()].to_vec(),
            m: x.m[per_word * range.start..per_word * range.end].to_vec(),
            f: if x.has_folds() {
                x.f[range].to_vec()
            } else {
                Vec::new()
            },
        }
    }
    fn bit_concat(parts: &[AuthBits]) -> AuthBits {
        let w: Vec<u64> = parts.iter().flat_map(|p| p.w.iter().copied()).collect();
        let m = if parts.iter().any(AuthBits::is_folded) {
            parts
                .iter()
                .flat_map(|p| folds_of(p).into_owned())
                .collect()
        } else {
            parts.iter().flat_map(|p| p.m.iter().copied()).collect()
        };
        AuthBits::new(w, m)
    }
    fn bit_nodes(x: &AuthBits, nodes: &[usize], words: usize) -> AuthBits {
        let per_word = if x.is_folded() { 1 } else { 64 };
        let mut out = AuthBits::new(
            Vec::with_capacity(nodes.len() * words),
            Vec::with_capacity(per_word * nodes.len() * words),
        );
        for &i in nodes {
            out.w.extend_from_slice(&x.w[i * words..(i + 1) * words]);
            out.m
                .extend_from_slice(&x.m[per_word * i * words..per_word * (i + 1) * words]);
        }
        out
    }
    fn bit_extend(x: &mut AuthBits, y: &AuthBits, range: std::ops::Range<usize>) {
        if x.is_folded() {
            x.w.extend_from_slice(&y.w[range.clone()]);
            x.m.extend_from_slice(&folds_of(y)[range]);
            return;
        }
        debug_assert!(!y.is_folded(), "a folded value appended to a full one");
        x.w.extend_from_slice(&y.w[range.clone()]);
        x.m.extend_from_slice(&y.m[64 * range.start..64 * range.end]);
        x.f.clear();
    }
    fn bit_extend_zeros(x: &mut AuthBits, words: usize) {
        let per_word = if x.is_folded() { 1 } else { 64 };
        x.w.resize(x.w.len() + words, 0);
        x.m.resize(x.m.len() + per_word * words, 0);
        x.f.clear();
    }
    fn pair_leaves(
        state: &State,
        r: &AuthBits,
        rr: &AuthBits,
        [highs, lows]: [&[usize]; 2],
        layout: Layout,
        not_c: &[u64],
        constants: bool,
    ) -> (AuthBits, AuthBits) {
        // One pass over the three dealt MAC arrays per pair, writing only the results' folds (they are
        // only XORed, appended and opened from here on; see `AuthBits`).
        debug_assert!(!r.is_folded() && !rr.is_folded());
        let words = layout.words;
        let total = highs.len() * words;
        let valid = layout.masks(words);
        let rr_folds = valid_folds(rr, layout);
        let empty = || AuthBits::new(Vec::with_capacity(total), Vec::with_capacity(total));
        let (mut g, mut p) = (empty(), empty());
        for (j, (&h, &l)) in highs.iter().zip(lows).enumerate() {
            let (hs, ls, js) = (
                h * words..(h + 1) * words,
                l * words..(l + 1) * words,
                j * words..(j + 1) * words,
            );
            let (nh, nl) = (&not_c[hs.clone()], &not_c[ls.clone()]);
            for (((&rh, &rl), &both), (&ch, &cl)) in r.w[hs.clone()]
                .iter()
                .zip(&r.w[ls.clone()])
                .zip(&rr.w[js.clone()])
                .zip(nh.iter().zip(nl))
            {
                g.w.push((rh & ch) ^ (both & cl) ^ (rl & ch & cl));
                let pw = both ^ (rh & cl) ^ (rl & ch);
                p.w.push(if constants { pw ^ (ch & cl) } else { pw });
            }
            gf2::pair_leaf_folds(
                [
                    &r.m[64 * hs.start..64 * hs.end],
                    &r.m[64 * ls.start..64 * ls.end],
                    &rr.m[64 * js.start..64 * js.end],
                ],
                &rr_folds[js],
                [nh, nl, &valid],
                state.keys.beta,
                [&mut g.m, &mut p.m],
            );
        }
        (g, p)
    }
    fn bit_nodes_xor_into(y: &mut AuthBits, x: &AuthBits, nodes: &[usize], words: usize) {
        let folded = y.is_folded();
        let x_folds = if folded { Some(folds_of(x)) } else { None };
        for (j, &i) in nodes.iter().enumerate() {
            let (src, dst) = (i * words..(i + 1) * words, j * words..(j + 1) * words);
            for (o, a) in y.w[dst.clone()].iter_mut().zip(&x.w[src.clone()]) {
                *o ^= a;
            }
            match &x_folds {
                Some(f) => {
                    for (o, a) in y.m[dst].iter_mut().zip(&f[src]) {
                        *o ^= a;
                    }
                }
                None => gf2::xor_into(
                    &mut y.m[64 * dst.start..64 * dst.end],
                    &x.m[64 * src.start..64 * src.end],
                ),
            }
        }
        y.f.clear();
    }
    fn bit_nodes_xor(x: &AuthBits, nodes: &[usize], words: usize, y: &AuthBits) -> AuthBits {
        let mut out = Self::bit_nodes(x, nodes, words);
        Self::bit_nodes_xor_into(&mut out, y, &(0..nodes.len()).collect::<Vec<_>>(), words);
        out
    }
    fn bit_nodes_xor_to_open(
        x: &AuthBits,
        nodes: &[usize],
        words: usize,
        y: &AuthBits,
        len: usize,
    ) -> AuthBits {
        // The opened value's MACs only enter the check folded per word over its valid positions (see
        // `record_bits`): the result is folded. Folded operands and cached folds are used as they are; a
        // full operand without them is folded here.
        let layout = Layout { words, len };
        let mut out = AuthBits::new(
            Vec::with_capacity(nodes.len() * words),
            Vec::with_capacity(nodes.len() * words),
        );
        if words == 0 {
            return out;
        }
        let (xf, yf) = (valid_folds(x, layout), valid_folds(y, layout));
        for (j, &i) in nodes.iter().enumerate() {
            let (src, dst) = (i * words..(i + 1) * words, j * words..(j + 1) * words);
            out.w.extend(
                x.w[src.clone()]
                    .iter()
                    .zip(&y.w[dst.clone()])
                    .map(|(a, b)| a ^ b),
            );
            out.m
                .extend(xf[src].iter().zip(&yf[dst]).map(|(a, b)| a ^ b));
        }
        out
    }
    fn and_gate(
        state: &State,
        [a, b, c]: [&AuthBits; 3],
        [d, e]: [&[u64]; 2],
        constants: bool,
        spare_words: usize,
        layout: Layout,
    ) -> AuthBits {
        // One pass over the value words, one over the operands' MAC words:
        // c ^ [d] b ^ [e] a ^ [d & e] beta_i (public bits select whole MAC words), keeping only each output
        // word's fold over its valid positions (the result is folded; see `AuthBits`).
        // `a` may be longer than `c` (a pair's two ANDs share it); only its first words are read.
        debug_assert!(!a.is_folded() && !b.is_folded() && !c.is_folded());
        let words = c.w.len();
        let w = gate_values([a, b, c], [d, e], constants, spare_words);
        let mut m = Vec::with_capacity(words + spare_words);
        // The pair kernel with no P words is the single gate.
        gf2::and_gate_pair_folds(
            [&a.m[..64 * words], &b.m[..64 * words], &[]],
            [&valid_folds(c, layout), &[]],
            [&d[..words], &e[..words], &[]],
            &layout.masks(words),
            state.keys.beta,
            [&mut m, &mut Vec::new()],
        );
        AuthBits {
            w,
            m,
            f: Vec::new(),
        }
    }
    fn and_gate_pair(
        state: &State,
        a: &AuthBits,
        [(b, c), (b2, c2)]: [(&AuthBits, &AuthBits); 2],
        [d, e, e2]: [&[u64]; 3],
        constants: bool,
        spare_words: [usize; 2],
        layout: Layout,
    ) -> (AuthBits, AuthBits) {
        // Values as two gates; MACs in one pass that reads `a`'s per-bit MACs once for both.
        let (g_words, p_words) = (c.w.len(), c2.w.len());
        let (gw, pw) = (
            gate_values([a, b, c], [d, e], constants, spare_words[0]),
            gate_values([a, b2, c2], [d, e2], constants, spare_words[1]),
        );
        let (mut gm, mut pm) = (
            Vec::with_capacity(g_words + spare_words[0]),
            Vec::with_capacity(p_words + spare_words[1]),
        );
        gf2::and_gate_pair_folds(
            [
                &a.m[..64 * g_words],
                &b.m[..64 * g_words],
                &b2.m[..64 * p_words],
            ],
            [&valid_folds(c, layout), &valid_folds(c2, layout)],
            [&d[..g_words], &e[..g_words], &e2[..p_words]],
            &layout.masks(g_words),
            state.keys.beta,
            [&mut gm, &mut pm],
        );
        (AuthBits::new(gw, gm), AuthBits::new(pw, pm))
    }
    fn preprocess_bits(x: &mut AuthBits, layout: Layout) {
        if !x.is_folded() && !x.has_folds() && x.m.len() == 64 * x.w.len() {
            x.f = valid_folds(x, layout).into_owned();
        }
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
            let mut bytes = Vec::with_capacity(8 * recorded.len());
            for w in recorded {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
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
                    // Bit-sliced MAC words: the valid positions are the low bits of each word.
                    let keep = (1u64 << valid_last) - 1;
                    for (t, m) in tail.iter_mut().zip(&macs[64 * full..64 * (full + 1)]) {
                        *t = m & keep;
                    }
                    state.bit_macs[start + full] = gf2::fold(&tail);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Semi2k;
    use rand::{Rng, SeedableRng};

    fn random_bits(rng: &mut rand::rngs::StdRng, words: usize) -> AuthBits {
        AuthBits::new(
            (0..words).map(|_| rng.random()).collect(),
            (0..64 * words).map(|_| rng.random()).collect(),
        )
    }

    /// The reference: a full value's folds over the valid positions of `layout`, from its per-bit MACs.
    fn reference_folds(x: &AuthBits, layout: Layout) -> Vec<u64> {
        x.m.chunks_exact(64)
            .enumerate()
            .map(|(i, macs)| {
                let keep = layout.valid(i);
                let kept: Vec<u64> = macs.iter().map(|m| m & keep).collect();
                gf2::fold(&kept)
            })
            .collect()
    }

    fn test_state(rng: &mut rand::rngs::StdRng) -> State {
        State {
            keys: KeyShares {
                alpha: rng.random(),
                beta: rng.random(),
            },
            opened: Vec::new(),
            macs: Vec::new(),
            bit_words: Vec::new(),
            bit_macs: Vec::new(),
            view: Sha256::new(),
            seed_commitment: None,
        }
    }

    #[test]
    fn folded_tree_values_equal_the_folds_of_the_full_computation() {
        // Every folded result must equal the valid-position folds of the same operation done with full
        // per-bit MACs (the default implementations over `and_public`, `xor_public` and `xor`).
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let layout = Layout::new(150); // 3 words per node, 22 valid bits in the last one
        let (nodes, words) = (5, layout.words);
        let state = test_state(&mut rng);
        // The first level from dealt bits: 5 pairs over 10 planes, most significant first.
        let (r, rr) = (
            random_bits(&mut rng, 2 * nodes * words),
            random_bits(&mut rng, nodes * words),
        );
        let not_c: Vec<u64> = (0..2 * nodes * words).map(|_| rng.random()).collect();
        let highs: Vec<usize> = (0..nodes).rev().map(|j| 2 * j + 1).collect();
        let lows: Vec<usize> = highs.iter().map(|h| h - 1).collect();
        let planes = |nodes: &[usize]| -> Vec<u64> {
            nodes
                .iter()
                .flat_map(|&i| not_c[i * words..(i + 1) * words].to_vec())
                .collect()
        };
        let (nh, nl) = (planes(&highs), planes(&lows));
        let both = crate::bits::and(&nh, &nl);
        let (rh, rl) = (
            Spdz2k::bit_nodes(&r, &highs, words),
            Spdz2k::bit_nodes(&r, &lows, words),
        );
        let full_g = Spdz2k::xor(
            &Spdz2k::xor(&Spdz2k::and_public(&rh, &nh), &Spdz2k::and_public(&rr, &nl)),
            &Spdz2k::and_public(&rl, &both),
        );
        let unshifted_p = Spdz2k::xor(
            &rr,
            &Spdz2k::xor(&Spdz2k::and_public(&rh, &nl), &Spdz2k::and_public(&rl, &nh)),
        );
        for constants in [false, true] {
            let (g, p) =
                Spdz2k::pair_leaves(&state, &r, &rr, [&highs, &lows], layout, &not_c, constants);
            let full_p = Spdz2k::xor_public(&state, &unshifted_p, &both, constants);
            assert!(g.is_folded() && p.is_folded());
            assert_eq!(g.w, full_g.w);
            assert_eq!(p.w, full_p.w);
            assert_eq!(g.m, reference_folds(&full_g, layout));
            assert_eq!(p.m, reference_folds(&full_p, layout));
        }
        let (g, p) = Spdz2k::pair_leaves(&state, &r, &rr, [&highs, &lows], layout, &not_c, true);
        let full_p = Spdz2k::xor_public(&state, &unshifted_p, &both, true);

        // An AND gate, then the carried G XORed in, an odd node appended and zeros appended.
        let pairs = 2;
        let (a, b, c) = (
            random_bits(&mut rng, pairs * words),
            random_bits(&mut rng, pairs * words),
            random_bits(&mut rng, pairs * words),
        );
        let (d, e): (Vec<u64>, Vec<u64>) = (
            (0..pairs * words).map(|_| rng.random()).collect(),
            (0..pairs * words).map(|_| rng.random()).collect(),
        );
        let mut gate = Spdz2k::and_gate(&state, [&a, &b, &c], [&d, &e], true, 2 * words, layout);
        let full_gate = FullMacGate::and_gate(&state, [&a, &b, &c], [&d, &e]);
        // The fused pair equals the two gates it replaces (P over the first pair only).
        let (b2, c2) = (
            random_bits(&mut rng, pairs * words),
            random_bits(&mut rng, words),
        );
        let e2: Vec<u64> = (0..words).map(|_| rng.random()).collect();
        let (pair_g, pair_p) = Spdz2k::and_gate_pair(
            &state,
            &a,
            [(&b, &c), (&b2, &c2)],
            [&d, &e, &e2],
            true,
            [0, 0],
            layout,
        );
        assert_eq!(
            pair_g,
            Spdz2k::and_gate(&state, [&a, &b, &c], [&d, &e], true, 0, layout)
        );
        assert_eq!(
            pair_p,
            Spdz2k::and_gate(&state, [&a, &b2, &c2], [&d[..words], &e2], true, 0, layout)
        );
        assert_eq!(gate.w, full_gate.w);
        assert_eq!(gate.m, reference_folds(&full_gate, layout));
        Spdz2k::bit_nodes_xor_into(&mut gate, &g, &[0, 2], words);
        let mut full = Spdz2k::bit_nodes_xor(&full_g, &[0, 2], words, &full_gate);
        assert_eq!(gate.m, reference_folds(&full, layout));
        Spdz2k::bit_extend(&mut gate, &p, 4 * words..5 * words);
        Spdz2k::bit_extend(&mut full, &full_p, 4 * words..5 * words);
        Spdz2k::bit_extend_zeros(&mut gate, words);
        Spdz2k::bit_extend_zeros(&mut full, words);
        assert_eq!(gate.w, full.w);
        assert_eq!(gate.m, reference_folds(&full, layout));
        let slice = Spdz2k::bit_slice(&gate, words..2 * words);
        assert_eq!(slice.m, gate.m[words..2 * words]);

        // Openings: a folded value XOR a dealt one with cached folds, against the full computation.
        let mut dealt = random_bits(&mut rng, 2 * words);
        Spdz2k::preprocess_bits(&mut dealt, layout);
        assert_eq!(dealt.f, reference_folds(&dealt, layout));
        let opened = Spdz2k::bit_nodes_xor_to_open(&p, &[0, 3], words, &dealt, layout.len);
        let full_opened = Spdz2k::bit_nodes_xor(&full_p, &[0, 3], words, &dealt);
        assert_eq!(opened.w, full_opened.w);
        assert_eq!(opened.m, reference_folds(&full_opened, layout));
        // And a public XOR of a folded value (the mask is zero on padding positions).
        let public: Vec<u64> = (0..words)
            .map(|i| rng.random::<u64>() & layout.valid(i))
            .collect();
        let root = Spdz2k::bit_slice(&gate, 0..words);
        let full_root = Spdz2k::bit_slice(&full, 0..words);
        let x = Spdz2k::xor_public(
            &state,
            &Spdz2k::xor(&root, &dealt_slice(&dealt, words)),
            &public,
            true,
        );
        let full_x = Spdz2k::xor_public(
            &state,
            &Spdz2k::xor(&full_root, &dealt_slice(&dealt, words)),
            &public,
            true,
        );
        assert!(x.is_folded());
        assert_eq!(x.w, full_x.w);
        assert_eq!(x.m, reference_folds(&full_x, layout));
    }

    fn dealt_slice(x: &AuthBits, words: usize) -> AuthBits {
        Spdz2k::bit_slice(x, 0..words)
    }

    /// The AND gate with full per-bit MACs, from the domain's selections (the trait's default body).
    struct FullMacGate;
    impl FullMacGate {
        fn and_gate(state: &State, [a, b, c]: [&AuthBits; 3], [d, e]: [&[u64]; 2]) -> AuthBits {
            let words = c.w.len();
            let (a, b) = (
                Spdz2k::bit_slice(a, 0..words),
                Spdz2k::bit_slice(b, 0..words),
            );
            let z = Spdz2k::xor(
                &Spdz2k::xor(c, &Spdz2k::and_public(&b, d)),
                &Spdz2k::and_public(&a, e),
            );
            Spdz2k::xor_public(state, &z, &crate::bits::and(d, e), true)
        }
    }

    #[test]
    fn selecting_by_an_opened_bit_equals_the_linear_formula_in_both_domains() {
        // vu + e (v - 2 vu), vu = u delta + au, from the generic operations, against the one-pass overrides.
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let len = 37;
        let wide = |rng: &mut rand::rngs::StdRng| AuthVec {
            v: (0..len).map(|_| rng.random()).collect(),
            m: (0..len).map(|_| rng.random()).collect(),
        };
        let (u, au, v) = (wide(&mut rng), wide(&mut rng), wide(&mut rng));
        let delta: Vec<u64> = (0..len).map(|_| rng.random()).collect();
        let e: Vec<u64> = (0..len).map(|_| rng.random::<u64>() & 1).collect();
        assert_eq!(
            Spdz2k::select_by_opened_bit(&u, &delta, &au, &v, &e),
            select_formula::<Spdz2k>([&u, &au, &v], &delta, &e)
        );
        let low = |x: &AuthVec| -> Vec<u64> { x.v.iter().map(|&w| w as u64).collect() };
        let (su, sau, sv) = (low(&u), low(&au), low(&v));
        assert_eq!(
            Semi2k::select_by_opened_bit(&su, &delta, &sau, &sv, &e),
            select_formula::<Semi2k>([&su, &sau, &sv], &delta, &e)
        );
    }

    /// `vu + e (v - 2 vu)` with `vu = u delta + au`, from a domain's generic operations.
    fn select_formula<D: Domain>([u, au, v]: [&D::Arith; 3], delta: &[u64], e: &[u64]) -> D::Arith {
        let vu = D::add(&D::mul_public(u, delta), au);
        let two_vu = D::add(&vu, &vu);
        D::add(&vu, &D::mul_public(&D::sub(v, &two_vu), e))
    }

    #[test]
    fn wide_products_with_public_words_match_full_u128_arithmetic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // A small `y` (column blocks and a tail) and a large one (row streaming).
        for [m, k, n] in [[3, 5, 7], [2, 90, 100]] {
            check_wide_products([m, k, n], &mut rng);
        }
    }

    fn check_wide_products([m, k, n]: [usize; 3], rng: &mut rand::rngs::StdRng) {
        assert_eq!(
            k * n * 16 <= LEFT_BLOCKED_BYTES,
            k < 10,
            "both strategies are covered"
        );
        let e: Vec<u64> = (0..m * k).map(|_| rng.random()).collect();
        let f: Vec<u64> = (0..k * n).map(|_| rng.random()).collect();
        let wide = |len: usize, rng: &mut rand::rngs::StdRng| -> Vec<u128> {
            (0..len).map(|_| rng.random()).collect()
        };
        let (y, y2, x, x2) = (
            wide(k * n, rng),
            wide(k * n, rng),
            wide(m * k, rng),
            wide(m * k, rng),
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
