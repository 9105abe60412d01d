//! The share domain: what a party holds for a shared value, and the local operations on it.
//!
//! Every protocol operation (open, Beaver products, truncation, the sign test, pooling) is written once over
//! [`Domain`]; the MAC is a property of the share type, not of the protocol code. [`Semi2k`] shares are bare
//! words (no MAC); `spdz2k` shares (see [`crate::spdz2k::Spdz2k`]) carry a MAC on every arithmetic element and
//! every bit, and record every opened value for the batched MAC check.
//!
//! Public values (opened values, constants) are always `u64` words: only the value modulo 2^64 matters, and
//! any linear combination with public coefficients keeps a MAC valid, so using the low 64 bits of an opened
//! value as a coefficient is both correct (modulo 2^64) and consistent with the MACs.

use crate::error::Result;
use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::material::generator::{Generator, Hidden, PartyGenerator};
use crate::material::{ProductCheck, ShareWords};

/// A family of share types and their local operations. Implementations are zero-sized markers.
pub trait Domain: Sized + Send + Sync + 'static {
    /// A party's share of a vector of ring elements.
    type Arith: Clone + Default + Send + Sync + std::fmt::Debug + ShareWords;
    /// A party's share of packed bits (64 per word).
    type Bits: Clone + Default + Send + Sync + std::fmt::Debug + ShareWords;
    /// The party side of this domain's dealer material.
    type Gen: Generator<Plain = Hidden, Share = Self::Arith, BitShare = Self::Bits> + Send;
    /// Per-party protocol state: key shares and the record of opened values (nothing for `semi2k`).
    type State: Send;
    /// A fixed weight's shares laid out for [`Domain::weight_gemm_left`] and
    /// [`Domain::masked_product_values`], prepared once at model setup (nothing for `semi2k`).
    type WeightValues: Send + Sync;
    /// Protocol name, as `veil bench --protocol` spells it.
    const NAME: &'static str;
    /// Bytes one arithmetic element takes on the wire when opened.
    const WIRE_BYTES: usize;

    /// Fresh state from the party's generator (reads its key shares).
    fn state(generator: &Self::Gen) -> Self::State;

    /// Number of elements.
    fn len(x: &Self::Arith) -> usize;
    /// A sharing of public `values`; `constants` is true on the one party that holds public constants.
    fn public(state: &Self::State, values: &[u64], constants: bool) -> Self::Arith;
    /// `x + y`.
    fn add(x: &Self::Arith, y: &Self::Arith) -> Self::Arith;
    /// `x - y`.
    fn sub(x: &Self::Arith, y: &Self::Arith) -> Self::Arith;
    /// `x += y` (as long as `x`), in place.
    fn add_assign(x: &mut Self::Arith, y: &Self::Arith) {
        *x = Self::add(x, y);
    }
    /// `x += public values`.
    fn add_public(state: &Self::State, x: &mut Self::Arith, values: &[u64], constants: bool);
    /// `x * p`, elementwise, by public `p`.
    fn mul_public(x: &Self::Arith, p: &[u64]) -> Self::Arith;
    /// `e · y` for public `e` (m x k) and shared `y` (k x n).
    fn gemm_left(gemm: &dyn Gemm, mkn: [usize; 3], e: &[u64], y: &Self::Arith) -> Self::Arith;
    /// The sign test's last step (see `semi2k/sign.rs`), elementwise: with `vu = u * delta + au`, the result
    /// is `vu + e * (v - 2 vu)`, i.e. `v - vu` where the public bit `e` is 1 and `vu` where it is 0. `u` and
    /// `au` are shared, `delta` and `e` (0 or 1 per element) public; all are as long as `v`.
    fn select_by_opened_bit(
        u: &Self::Arith,
        delta: &[u64],
        au: &Self::Arith,
        v: &Self::Arith,
        e: &[u64],
    ) -> Self::Arith {
        let vu = Self::add(&Self::mul_public(u, delta), au);
        let two_vu = Self::add(&vu, &vu);
        Self::add(&vu, &Self::mul_public(&Self::sub(v, &two_vu), e))
    }
    /// `x · f` for shared `x` (m x k) and public `f` (k x n).
    fn gemm_right(gemm: &dyn Gemm, mkn: [usize; 3], x: &Self::Arith, f: &[u64]) -> Self::Arith;
    /// The lowering of a share (a share of the lowering).
    fn lower(lowering: &Lowering, x: &Self::Arith, batch: usize) -> Result<Self::Arith>;
    /// Elements `range` of `x`.
    fn slice(x: &Self::Arith, range: std::ops::Range<usize>) -> Self::Arith;
    /// The elements of `x` at `indices`, in that order.
    fn gather(x: &Self::Arith, indices: &[usize]) -> Self::Arith;
    /// Concatenation.
    fn concat(parts: &[Self::Arith]) -> Self::Arith;
    /// Adds `delta` to element `index` of this party's value share (an adversary's deviation; no MAC change).
    fn corrupt(x: &mut Self::Arith, index: usize, delta: u64);
    /// Adds `delta` to this party's MAC share of element `index` (an adversary's deviation; no-op without MACs).
    fn corrupt_mac(x: &mut Self::Arith, index: usize, delta: u64);
    /// Flips bit `bit` of this party's value share (an adversary's deviation; no MAC change).
    fn flip_bit(x: &mut Self::Bits, bit: usize);

    /// The prepared form of a fixed `inner x outputs` weight's shares `w` (see [`Self::WeightValues`]).
    fn weight_values(w: &Self::Arith, inner_outputs: [usize; 2]) -> Self::WeightValues;
    /// [`Domain::gemm_left`] for a fixed weight `w` whose prepared form is `values`.
    fn weight_gemm_left(
        gemm: &dyn Gemm,
        mkn: [usize; 3],
        e: &[u64],
        w: &Self::Arith,
        values: &Self::WeightValues,
    ) -> Self::Arith {
        let _ = values;
        Self::gemm_left(gemm, mkn, e, w)
    }
    /// `e · w - r` for public `e` (m x k), in the value shares only: what a product check opens (see
    /// [`ProductCheck`] and `spdz2k::product_check`). `values` is `w` as [`Self::weight_values`] prepared it.
    /// Domains without MACs compute the plain product.
    fn masked_product_values(
        gemm: &dyn Gemm,
        mkn: [usize; 3],
        e: &[u64],
        w: &Self::Arith,
        values: &Self::WeightValues,
        r: &Self::Arith,
    ) -> Self::Arith {
        let _ = values;
        Self::sub(&Self::gemm_left(gemm, mkn, e, w), r)
    }
    /// Opens like [`Domain::open`], but records nothing for a MAC check (the value opened carries no MAC;
    /// a product check covers it instead) and returns the full width: two words per element, low first, for
    /// `spdz2k`; the plain words for domains without MACs.
    fn open_unchecked(state: &mut Self::State, own: &Self::Arith, received: &[&[u8]]) -> Vec<u64> {
        Self::open(state, own, received)
    }
    /// A product check's `W · rho = B · rho + F · rho` from the dealt `B · rho` and `rho` and the public
    /// `F = W - B` (`inner x outputs`). `spdz2k` computes only the MAC shares: its check needs nothing else.
    fn weight_projection(
        gemm: &dyn Gemm,
        [inner, outputs]: [usize; 2],
        f: &[u64],
        rho: &Self::Arith,
        b_rho: &Self::Arith,
    ) -> Self::Arith {
        Self::add(b_rho, &Self::gemm_left(gemm, [inner, outputs, 1], f, rho))
    }
    /// Completes a checked product `U = e · W` (public `e`, m x k; fixed `W`, k x n) from the opened
    /// `U - R` (`opened`, as [`Domain::open_unchecked`] returns it): `U = (U - R) + R`, whose MACs are `R`'s
    /// shifted by the public `U - R`, and in `spdz2k` records the projection check of every row as an opened
    /// zero (see `spdz2k::product_check`). `weight_rho` is the share of `W · rho`.
    fn finish_checked_product(
        state: &mut Self::State,
        mkn: [usize; 3],
        e: &[u64],
        opened: &[u64],
        check: &ProductCheck<Self::Arith>,
        weight_rho: &Self::Arith,
        constants: bool,
    ) -> Result<Self::Arith> {
        let _ = (mkn, e, weight_rho);
        let mut u = check.r.clone();
        Self::add_public(state, &mut u, opened, constants);
        Ok(u)
    }

    /// Appends the wire form of this party's share.
    fn encode(x: &Self::Arith, out: &mut Vec<u8>);
    /// Opens: adds this party's share and the peers' wire chunks (lengths already checked), records what the
    /// domain's check needs, and returns the opened values modulo 2^64.
    fn open(state: &mut Self::State, own: &Self::Arith, received: &[&[u8]]) -> Vec<u64>;

    /// The packed value-share words of bits.
    fn bit_words(x: &Self::Bits) -> &[u64];
    /// `x ^ y`.
    fn xor(x: &Self::Bits, y: &Self::Bits) -> Self::Bits;
    /// `x & mask` for public `mask` words.
    fn and_public(x: &Self::Bits, mask: &[u64]) -> Self::Bits;
    /// `x ^ mask` for public `mask` words.
    fn xor_public(state: &Self::State, x: &Self::Bits, mask: &[u64], constants: bool)
        -> Self::Bits;
    /// Words `range` of `x`.
    fn bit_slice(x: &Self::Bits, range: std::ops::Range<usize>) -> Self::Bits;
    /// Concatenation.
    fn bit_concat(parts: &[Self::Bits]) -> Self::Bits;
    /// Nodes `nodes` of `x` (each `words` words long), concatenated.
    fn bit_nodes(x: &Self::Bits, nodes: &[usize], words: usize) -> Self::Bits {
        Self::bit_concat(
            &nodes
                .iter()
                .map(|&i| Self::bit_slice(x, i * words..(i + 1) * words))
                .collect::<Vec<_>>(),
        )
    }
    /// Appends words `range` of `y` to `x`.
    fn bit_extend(x: &mut Self::Bits, y: &Self::Bits, range: std::ops::Range<usize>) {
        *x = Self::bit_concat(&[x.clone(), Self::bit_slice(y, range)]);
    }
    /// Appends `words` words of zero bits (a valid sharing of zeros, MACs included) to `x`.
    fn bit_extend_zeros(x: &mut Self::Bits, words: usize);
    /// The first level of the comparison tree, straight from dealt bits: for each pair `j`, with `h, l =
    /// highs[j], lows[j]` the planes of `r` (in `layout`), `rr` node `j` the dealt `r_h & r_l`, and the public
    /// complements `nh, nl` (planes of `not_c`, indexed like `r`), the merged node of the two leaves
    /// `(G_x, P_x) = (r_x & n_x, r_x ^ n_x)`:
    /// `G = G_h ^ P_h & G_l = (r_h & nh) ^ (rr & nl) ^ (r_l & nh & nl)` and
    /// `P = P_h & P_l = rr ^ (r_h & nl) ^ (r_l & nh) ^ (nh & nl)`,
    /// both linear in dealt bits, so no AND gate is needed. The results only take part in the comparison's
    /// XORs, openings and appends, never in a selection or an AND gate's operands, so a domain may keep them
    /// in a reduced form (`spdz2k`: folded MACs, see [`Self::and_gate`]).
    #[allow(clippy::too_many_arguments)]
    fn pair_leaves(
        state: &Self::State,
        r: &Self::Bits,
        rr: &Self::Bits,
        [highs, lows]: [&[usize]; 2],
        layout: crate::bits::Layout,
        not_c: &[u64],
        constants: bool,
    ) -> (Self::Bits, Self::Bits) {
        let words = layout.words;
        let planes = |nodes: &[usize]| -> Vec<u64> {
            nodes
                .iter()
                .flat_map(|&i| not_c[i * words..(i + 1) * words].iter().copied())
                .collect()
        };
        let (nh, nl) = (planes(highs), planes(lows));
        let both = crate::bits::and(&nh, &nl);
        let (rh, rl) = (
            Self::bit_nodes(r, highs, words),
            Self::bit_nodes(r, lows, words),
        );
        let g = Self::xor(
            &Self::xor(&Self::and_public(&rh, &nh), &Self::and_public(rr, &nl)),
            &Self::and_public(&rl, &both),
        );
        let p = Self::xor_public(
            state,
            &Self::xor(
                rr,
                &Self::xor(&Self::and_public(&rh, &nl), &Self::and_public(&rl, &nh)),
            ),
            &both,
            constants,
        );
        (g, p)
    }
    /// `y ^= ` nodes `nodes` of `x` (each `words` words long), concatenated (as long as `y`).
    fn bit_nodes_xor_into(y: &mut Self::Bits, x: &Self::Bits, nodes: &[usize], words: usize) {
        *y = Self::bit_nodes_xor(x, nodes, words, y);
    }
    /// Nodes `nodes` of `x` (each `words` words long), concatenated, XORed with `y` (as long as the result).
    fn bit_nodes_xor(x: &Self::Bits, nodes: &[usize], words: usize, y: &Self::Bits) -> Self::Bits {
        Self::xor(&Self::bit_nodes(x, nodes, words), y)
    }
    /// [`Self::bit_nodes_xor`] for a value that is opened (`nodes` vectors of `len` bits) and then dropped: the
    /// result is only valid as a part of an opening round, where the domain may keep just what its check
    /// needs of the MACs.
    fn bit_nodes_xor_to_open(
        x: &Self::Bits,
        nodes: &[usize],
        words: usize,
        y: &Self::Bits,
        _len: usize,
    ) -> Self::Bits {
        Self::bit_nodes_xor(x, nodes, words, y)
    }
    /// `x & y` from an AND triple `(a, b, c)` and the opened `d = x ^ a`, `e = y ^ b` (Beaver on bits):
    /// `c ^ (d & b) ^ (e & a) ^ (d & e)`, the last term added by the party holding constants. The result is as
    /// long as `c`; `a` and `b` may be longer (a pair's two ANDs share `a`), and only their first words are read.
    /// `spare_words`: room the result should have for words the caller appends to it (a capacity hint). The
    /// result, laid out in `layout`, only takes part in XORs, openings and appends, like [`Self::pair_leaves`]'.
    fn and_gate(
        state: &Self::State,
        [a, b, c]: [&Self::Bits; 3],
        [d, e]: [&[u64]; 2],
        constants: bool,
        _spare_words: usize,
        _layout: crate::bits::Layout,
    ) -> Self::Bits {
        let z = Self::xor(
            &Self::xor(c, &Self::and_public(b, d)),
            &Self::and_public(a, e),
        );
        Self::xor_public(state, &z, &crate::bits::and(d, e), constants)
    }
    /// A prefix level's two AND gates, which share the mask `a` and the opened `d`: G's with `(b, c)` and `e`,
    /// and P's with `(b2, c2)` and `e2` over the first `e2.len()` words. Returns `(G, P)`, each with the spare
    /// room `spare_words` asks for. The same as two [`Self::and_gate`]s; a domain may do both in one pass.
    #[allow(clippy::too_many_arguments)]
    fn and_gate_pair(
        state: &Self::State,
        a: &Self::Bits,
        [(b, c), (b2, c2)]: [(&Self::Bits, &Self::Bits); 2],
        [d, e, e2]: [&[u64]; 3],
        constants: bool,
        spare_words: [usize; 2],
        layout: crate::bits::Layout,
    ) -> (Self::Bits, Self::Bits) {
        (
            Self::and_gate(state, [a, b, c], [d, e], constants, spare_words[0], layout),
            Self::and_gate(
                state,
                [a, b2, c2],
                [&d[..e2.len()], e2],
                constants,
                spare_words[1],
                layout,
            ),
        )
    }
    /// Preprocessing of dealt bits in `layout` that will be XORed into an opening (by
    /// [`Self::bit_nodes_xor_to_open`] or [`Self::xor`]): lets the domain cache what its openings need ahead
    /// of the input. Nothing for bare shares.
    fn preprocess_bits(_x: &mut Self::Bits, _layout: crate::bits::Layout) {}
    /// Records an opening of `nodes` vectors of `len` bits: this party's share and the opened words.
    fn record_bits(
        state: &mut Self::State,
        own: &Self::Bits,
        opened: &[u64],
        nodes: usize,
        len: usize,
    );
}

/// `semi2k`: bare additive shares of Z_2^64 and XOR shares of bits; nothing to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Semi2k;

impl Domain for Semi2k {
    type Arith = Vec<u64>;
    type Bits = Vec<u64>;
    type Gen = PartyGenerator;
    type State = ();
    type WeightValues = ();
    const NAME: &'static str = "semi2k";
    const WIRE_BYTES: usize = 8;

    fn state(_generator: &PartyGenerator) {}

    fn len(x: &Vec<u64>) -> usize {
        x.len()
    }
    fn public(_state: &(), values: &[u64], constants: bool) -> Vec<u64> {
        if constants {
            values.to_vec()
        } else {
            vec![0; values.len()]
        }
    }
    fn add(x: &Vec<u64>, y: &Vec<u64>) -> Vec<u64> {
        x.iter().zip(y).map(|(a, b)| a.wrapping_add(*b)).collect()
    }
    fn sub(x: &Vec<u64>, y: &Vec<u64>) -> Vec<u64> {
        crate::ring::sub(x, y)
    }
    fn add_assign(x: &mut Vec<u64>, y: &Vec<u64>) {
        crate::ring::add_assign(x, y);
    }
    fn weight_values(_w: &Vec<u64>, _inner_outputs: [usize; 2]) {}
    fn add_public(_state: &(), x: &mut Vec<u64>, values: &[u64], constants: bool) {
        if constants {
            crate::ring::add_assign(x, values);
        }
    }
    fn mul_public(x: &Vec<u64>, p: &[u64]) -> Vec<u64> {
        crate::ring::mul(x, p)
    }
    fn select_by_opened_bit(
        u: &Vec<u64>,
        delta: &[u64],
        au: &Vec<u64>,
        v: &Vec<u64>,
        e: &[u64],
    ) -> Vec<u64> {
        // One pass; `e` is public, so choosing by it reveals nothing.
        u.iter()
            .zip(delta)
            .zip(au)
            .zip(v.iter().zip(e))
            .map(|(((&u, &d), &au), (&v, &e))| {
                let vu = u.wrapping_mul(d).wrapping_add(au);
                if e == 1 {
                    v.wrapping_sub(vu)
                } else {
                    vu
                }
            })
            .collect()
    }
    fn gemm_left(gemm: &dyn Gemm, [m, k, n]: [usize; 3], e: &[u64], y: &Vec<u64>) -> Vec<u64> {
        let mut out = vec![0u64; m * n];
        gemm.gemm(m, k, n, e, y, &mut out);
        out
    }
    fn gemm_right(gemm: &dyn Gemm, [m, k, n]: [usize; 3], x: &Vec<u64>, f: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; m * n];
        gemm.gemm(m, k, n, x, f, &mut out);
        out
    }
    fn lower(lowering: &Lowering, x: &Vec<u64>, batch: usize) -> Result<Vec<u64>> {
        lowering.lower(x, batch)
    }
    fn slice(x: &Vec<u64>, range: std::ops::Range<usize>) -> Vec<u64> {
        x[range].to_vec()
    }
    fn gather(x: &Vec<u64>, indices: &[usize]) -> Vec<u64> {
        indices.iter().map(|&i| x[i]).collect()
    }
    fn concat(parts: &[Vec<u64>]) -> Vec<u64> {
        parts.concat()
    }
    fn corrupt(x: &mut Vec<u64>, index: usize, delta: u64) {
        if let Some(v) = x.get_mut(index) {
            *v = v.wrapping_add(delta);
        }
    }
    fn corrupt_mac(_x: &mut Vec<u64>, _index: usize, _delta: u64) {}
    fn flip_bit(x: &mut Vec<u64>, bit: usize) {
        if let Some(w) = x.get_mut(bit / 64) {
            *w ^= 1 << (bit % 64);
        }
    }
    fn encode(x: &Vec<u64>, out: &mut Vec<u8>) {
        for w in x {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    fn open(_state: &mut (), own: &Vec<u64>, received: &[&[u8]]) -> Vec<u64> {
        let mut sum = own.clone();
        for chunk in received {
            for (s, c) in sum.iter_mut().zip(chunk.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                *s = s.wrapping_add(u64::from_le_bytes(b));
            }
        }
        sum
    }
    fn bit_words(x: &Vec<u64>) -> &[u64] {
        x
    }
    fn xor(x: &Vec<u64>, y: &Vec<u64>) -> Vec<u64> {
        crate::bits::xor(x, y)
    }
    fn and_public(x: &Vec<u64>, mask: &[u64]) -> Vec<u64> {
        crate::bits::and(x, mask)
    }
    fn xor_public(_state: &(), x: &Vec<u64>, mask: &[u64], constants: bool) -> Vec<u64> {
        if constants {
            crate::bits::xor(x, mask)
        } else {
            x.clone()
        }
    }
    fn bit_slice(x: &Vec<u64>, range: std::ops::Range<usize>) -> Vec<u64> {
        x[range].to_vec()
    }
    fn bit_concat(parts: &[Vec<u64>]) -> Vec<u64> {
        parts.concat()
    }
    fn bit_extend(x: &mut Vec<u64>, y: &Vec<u64>, range: std::ops::Range<usize>) {
        x.extend_from_slice(&y[range]);
    }
    fn bit_extend_zeros(x: &mut Vec<u64>, words: usize) {
        x.resize(x.len() + words, 0);
    }
    fn record_bits(_state: &mut (), _own: &Vec<u64>, _opened: &[u64], _nodes: usize, _len: usize) {}
}
