//! Every kind of dealer material, each written once over [`Generator`] (see `generator.rs`).
//!
//! For each kind the doc comment says what the dealt values satisfy; the online protocols rely on exactly that.

use crate::bits;
use crate::error::Result;
use crate::gemm::Gemm;
use crate::lowering::Lowering;
use crate::material::generator::Generator;

/// Elementwise Beaver triples: `c = a * b`.
#[derive(Debug, Default)]
pub struct Triples<S = Vec<u64>> {
    /// Share of `a`.
    pub a: S,
    /// Share of `b`.
    pub b: S,
    /// Share of `c = a * b`.
    pub c: S,
}

/// Deals `len` Beaver triples.
pub fn triples<G: Generator>(g: &mut G, len: usize) -> Result<Triples<G::Share>> {
    let (a, pa) = g.random(len);
    let (b, pb) = g.random(len);
    let pc = G::derive([&pa, &pb], |[a, b]| crate::ring::mul(a, b));
    let c = g.fixed(&pc, len)?;
    Ok(Triples { a, b, c })
}

/// A matrix triple for `m x k` by `k x n`: `C = A · B`.
#[derive(Debug, Default)]
pub struct MatTriple<S = Vec<u64>> {
    /// Share of `A` (m x k).
    pub a: S,
    /// Share of `B` (k x n).
    pub b: S,
    /// Share of `C = A · B` (m x n).
    pub c: S,
}

/// Deals one matrix triple.
pub fn mat_triple<G: Generator>(
    g: &mut G,
    [m, k, n]: [usize; 3],
    gemm: &dyn Gemm,
) -> Result<MatTriple<G::Share>> {
    let (a, pa) = g.random(m * k);
    let (b, pb) = g.random(k * n);
    let pc = G::derive([&pa, &pb], |[a, b]| {
        let mut c = vec![0u64; m * n];
        gemm.gemm(m, k, n, a, b, &mut c);
        c
    });
    let c = g.fixed(&pc, m * n)?;
    Ok(MatTriple { a, b, c })
}

/// The mask `B` of a fixed weight matrix, dealt once per model: uniformly random, so no corrections.
pub fn weight_mask<G: Generator>(g: &mut G, len: usize) -> (G::Share, G::Plain) {
    g.random(len)
}

/// Per-inference material for a product with a masked fixed weight: `C = lower(A) · B` for the model's mask
/// `B` (inner x outputs).
#[derive(Debug, Default)]
pub struct WeightTriple<S = Vec<u64>> {
    /// Share of `A`, shaped like the activation (batch x input_len).
    pub a: S,
    /// Share of `C` (rows x outputs).
    pub c: S,
    /// Share of `lower(A) · F` for the weight's public `F = W - B`, when a party computed it ahead of the
    /// input (preprocessing: `A` is dealt and `F` is public after model setup); `None` until then, and the
    /// online product computes it.
    pub a_times_opened: Option<S>,
    /// The product check that replaces the product's MACs (`spdz2k` only, for large products; see
    /// [`uses_product_check`]); `None` otherwise.
    pub check: Option<ProductCheck<S>>,
}

/// Material that lets an authenticated product `U = E · W` (public `E`, rows x inner; shared `W`, inner x
/// outputs) skip the product of `E` with `W`'s MAC shares (see `spdz2k::product_check`): the parties compute
/// `U`'s value shares only, open `U - R` and take `R`'s MACs, then check `U` with the secret projection `rho`.
///
/// Dealt values (all authenticated, exact modulo 2^128): `R` uniform (rows x outputs), `rho` uniform
/// (outputs), `R · rho` (rows) and `B · rho` (inner) for the weight's mask `B`.
#[derive(Debug, Default)]
pub struct ProductCheck<S = Vec<u64>> {
    /// Share of `R`, which masks the product's value shares when they are opened.
    pub r: S,
    /// Share of the projection `rho`.
    pub rho: S,
    /// Share of `R · rho`.
    pub r_rho: S,
    /// Share of `B · rho`.
    pub b_rho: S,
    /// Share of `W · rho = B · rho + F · rho` (under `spdz2k`, its MAC shares only) once a party computed it
    /// (`F = W - B` is public after model setup, so preprocessing can); `None` until then, and the online
    /// product computes it.
    pub weight_rho: Option<S>,
}

/// The shortest inner dimension of a product checked by projection (see [`uses_product_check`]).
pub const PRODUCT_CHECK_MIN_INNER: usize = 128;

/// Whether an authenticated product of a `rows x inner` public matrix with a fixed `inner x outputs` weight
/// is checked by projection instead of carrying MACs through the product. The check costs one more round,
/// `rows x outputs` more opened elements and `rows x (inner + outputs)` multiplications; it saves the
/// `rows x inner x outputs` multiplications of the MAC shares. So only for a long inner dimension and a
/// large product, where the saving dwarfs a round.
pub fn uses_product_check(rows: usize, inner: usize, outputs: usize) -> bool {
    inner >= PRODUCT_CHECK_MIN_INNER
        && rows.saturating_mul(inner).saturating_mul(outputs) >= 1 << 16
}

/// Deals the material for one product of a batch with a fixed, masked weight.
pub fn weight_triple<G: Generator>(
    g: &mut G,
    lowering: &Lowering,
    batch: usize,
    outputs: usize,
    mask: &G::Plain,
    gemm: &dyn Gemm,
) -> Result<WeightTriple<G::Share>> {
    let rows = batch * lowering.rows_per_item();
    let inner = lowering.inner();
    let (a, pa) = g.random(batch * lowering.input_len());
    let mut failure = None;
    let pc = G::derive([&pa, mask], |[a, b]| {
        let mut c = vec![0u64; rows * outputs];
        match lowering.lower(a, batch) {
            Ok(lowered) if b.len() == inner * outputs => {
                gemm.gemm(rows, inner, outputs, &lowered, b, &mut c)
            }
            Ok(_) => {
                failure = Some(format!(
                    "mask holds {} elements, weight is {inner}x{outputs}",
                    b.len()
                ))
            }
            Err(e) => failure = Some(e.to_string()),
        }
        c
    });
    if let Some(why) = failure {
        return Err(crate::ProtocolError::Material(why));
    }
    let c = g.fixed(&pc, rows * outputs)?;
    let check = if uses_product_check(rows, inner, outputs) {
        g.product_check([rows, inner, outputs], mask)?
    } else {
        None
    };
    Ok(WeightTriple {
        a,
        c,
        a_times_opened: None,
        check,
    })
}

/// Truncation material: a uniform mask `r`, `r >> f` and `msb(r)`, all additively shared.
#[derive(Debug, Default)]
pub struct TruncMaterial<S = Vec<u64>> {
    /// Share of `r`.
    pub r: S,
    /// Share of `r >> f` (logical shift of `r mod 2^64` read as unsigned).
    pub r_shift: S,
    /// Share of `msb(r mod 2^64)` in {0, 1}.
    pub r_msb: S,
}

/// Deals truncation material for `len` values; also returns the plaintext mask for kinds that extend it.
pub fn trunc<G: Generator>(
    g: &mut G,
    len: usize,
    frac_bits: u32,
) -> Result<(TruncMaterial<G::Share>, G::Plain)> {
    let (r, pr) = g.random(len);
    let p_shift = G::derive([&pr], |[r]| r.iter().map(|x| x >> frac_bits).collect());
    let p_msb = G::derive([&pr], |[r]| r.iter().map(|x| x >> 63).collect());
    let r_shift = g.fixed(&p_shift, len)?;
    let r_msb = g.fixed(&p_msb, len)?;
    Ok((TruncMaterial { r, r_shift, r_msb }, pr))
}

/// Number of bit positions the sign protocol compares: bits 0..=61 of the masked value.
pub const COMPARED_BITS: usize = 62;

/// Pairs of adjacent compared bits whose product the dealer supplies (see [`SignMaterial::r_pairs`]): the
/// first level of the comparison tree is then local, and the AND gates start one level up.
pub const COMPARED_PAIRS: usize = COMPARED_BITS / 2;
const _: () = assert!(COMPARED_BITS.is_multiple_of(2), "the compared bits pair up");

/// The bit positions of pair `j` (most significant pair first): `(high, low) = (61 - 2j, 60 - 2j)`.
pub fn compared_pair(j: usize) -> (usize, usize) {
    let high = COMPARED_BITS - 1 - 2 * j;
    (high, high - 1)
}

/// The levels of AND gates a sign test runs: the prefix tree over the [`COMPARED_PAIRS`] pair nodes (5
/// levels, one round each).
pub fn sign_levels() -> Vec<PrefixLevel> {
    prefix_levels(COMPARED_PAIRS)
}

/// Shape of one level of the prefix (carry) tree over `nodes` nodes, most significant first.
///
/// Nodes `2j` (high) and `2j+1` (low) merge into node `j`; an odd last node passes through. The merged node
/// needs its "all equal so far" bit `P` unless it is the least significant node of its level, whose `P` is never
/// read again (it is never the high half of a pair). `with_p` counts the pairs that need it; they are the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLevel {
    /// Nodes entering the level.
    pub nodes: usize,
    /// Pairs merged.
    pub pairs: usize,
    /// Pairs whose `P` is computed.
    pub with_p: usize,
}

/// The levels of the prefix tree over `nodes` leaves.
pub fn prefix_levels(mut nodes: usize) -> Vec<PrefixLevel> {
    let mut levels = Vec::new();
    while nodes > 1 {
        let pairs = nodes / 2;
        let with_p = if nodes % 2 == 1 { pairs } else { pairs - 1 };
        levels.push(PrefixLevel {
            nodes,
            pairs,
            with_p,
        });
        nodes = nodes.div_ceil(2);
    }
    levels
}

/// AND triples of one prefix level, bit-sliced `words` words per node. One operand is shared by the two ANDs
/// of a pair (`c = a & b`, `c2 = a & b2`), so the pair opens three vectors, not four.
#[derive(Debug, Default)]
pub struct AndLevel<B = Vec<u64>> {
    /// Share of `a` (pairs x words).
    pub a: B,
    /// Share of `b` (pairs x words).
    pub b: B,
    /// Share of `a & b`.
    pub c: B,
    /// Share of `b2` (with_p x words).
    pub b2: B,
    /// Share of `a & b2` over the first `with_p` pairs.
    pub c2: B,
}

fn and_level<G: Generator>(
    g: &mut G,
    level: &PrefixLevel,
    words: usize,
) -> Result<AndLevel<G::BitShare>> {
    let (a, pa) = g.random_bits(level.pairs * words);
    let (b, pb) = g.random_bits(level.pairs * words);
    let (b2, pb2) = g.random_bits(level.with_p * words);
    let pc = G::derive([&pa, &pb], |[a, b]| bits::and(a, b));
    let pc2 = G::derive([&pa, &pb2], |[a, b2]| bits::and(&a[..b2.len()], b2));
    let c = g.fixed_bits(&pc, level.pairs * words)?;
    let c2 = g.fixed_bits(&pc2, level.with_p * words)?;
    Ok(AndLevel { a, b, c, b2, c2 })
}

/// Everything one sign test needs, for `len` values and `payloads` vectors to multiply by the resulting bit.
///
/// Dealt values: a uniform mask `r` (with `r >> f` and `msb(r)` when truncating), the bits 0..=62 of `r` as
/// XOR-shared bit planes, the product of each pair of adjacent compared bits, AND triples for every level of
/// [`sign_levels`], a random bit `u` both XOR-shared and additively shared (a daBit), and per payload a uniform
/// `alpha` with `alpha * u`.
#[derive(Debug, Default)]
pub struct SignMaterial<S = Vec<u64>, B = Vec<u64>> {
    /// Mask and truncation parts (`r_shift`, `r_msb` empty unless truncating).
    pub mask: TruncMaterial<S>,
    /// Bit planes 0..=62 of `r` (63 x words).
    pub r_planes: B,
    /// Per pair `j` of [`compared_pair`], the plane `r_high & r_low` (COMPARED_PAIRS x words).
    pub r_pairs: B,
    /// AND triples, one entry per level of [`sign_levels`].
    pub levels: Vec<AndLevel<B>>,
    /// XOR share of the daBit `u` (words).
    pub u_bits: B,
    /// Additive share of `u` (len).
    pub u: S,
    /// Shares of `alpha` (payloads x len).
    pub alpha: S,
    /// Shares of `alpha * u` (payloads x len).
    pub alpha_u: S,
}

/// Deals sign-test material.
pub fn sign<G: Generator>(
    g: &mut G,
    len: usize,
    truncate: Option<u32>,
    payloads: usize,
) -> Result<SignMaterial<G::Share, G::BitShare>> {
    let words = bits::words_for(len);
    let (mask, pr) = match truncate {
        Some(f) => trunc(g, len, f)?,
        None => {
            let (r, pr) = g.random(len);
            (
                TruncMaterial {
                    r,
                    ..Default::default()
                },
                pr,
            )
        }
    };
    let p_planes = G::derive([&pr], |[r]| {
        let mut planes = bits::to_planes(r);
        planes.truncate((COMPARED_BITS + 1) * words);
        planes
    });
    let r_planes = g.fixed_bits(&p_planes, (COMPARED_BITS + 1) * words)?;
    let p_pairs = G::derive([&p_planes], |[planes]| {
        let plane = |bit: usize| &planes[bit * words..(bit + 1) * words];
        (0..COMPARED_PAIRS)
            .flat_map(|j| {
                let (high, low) = compared_pair(j);
                bits::and(plane(high), plane(low))
            })
            .collect()
    });
    let r_pairs = g.fixed_bits(&p_pairs, COMPARED_PAIRS * words)?;
    let levels = sign_levels()
        .iter()
        .map(|level| and_level(g, level, words))
        .collect::<Result<Vec<_>>>()?;
    let (u_bits, pu_bits) = g.random_bits(words);
    let pu = G::derive([&pu_bits], |[ub]| {
        (0..len).map(|i| u64::from(bits::get(ub, i))).collect()
    });
    let u = g.fixed(&pu, len)?;
    let (alpha, palpha) = g.random(payloads * len);
    let palpha_u = G::derive([&palpha, &pu], |[al, u]| {
        al.iter()
            .enumerate()
            .map(|(i, &x)| x.wrapping_mul(u[i % len.max(1)]))
            .collect()
    });
    let alpha_u = g.fixed(&palpha_u, payloads * len)?;
    Ok(SignMaterial {
        mask,
        r_planes,
        r_pairs,
        levels,
        u_bits,
        u,
        alpha,
        alpha_u,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compared_pairs_cover_every_compared_bit_once_most_significant_first() {
        let covered: Vec<usize> = (0..COMPARED_PAIRS)
            .flat_map(|j| {
                let (high, low) = compared_pair(j);
                [high, low]
            })
            .collect();
        assert_eq!(covered, (0..COMPARED_BITS).rev().collect::<Vec<_>>());
        assert_eq!(sign_levels().len(), 5);
        assert_eq!(sign_levels()[0].nodes, COMPARED_PAIRS);
    }

    #[test]
    fn prefix_tree_over_62_leaves_has_6_levels_and_skips_unneeded_p() {
        let levels = prefix_levels(COMPARED_BITS);
        assert_eq!(levels.len(), 6);
        assert_eq!(
            levels[0],
            PrefixLevel {
                nodes: 62,
                pairs: 31,
                with_p: 30
            }
        );
        assert_eq!(
            levels[1],
            PrefixLevel {
                nodes: 31,
                pairs: 15,
                with_p: 15
            }
        );
        assert_eq!(
            levels.last(),
            Some(&PrefixLevel {
                nodes: 2,
                pairs: 1,
                with_p: 0
            })
        );
        assert!(prefix_levels(1).is_empty());
    }
}
