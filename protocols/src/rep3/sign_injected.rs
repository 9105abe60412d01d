//! The sign test and truncation with no one-sided message, for `rep3m` (see `protocols/src/rep3m/mod.rs`):
//! every message is a replicated AND gate's or product's reshare (a degree-2 function of the sender's two
//! components), so the product proof `rep3m` needs can cover all of them. The `rep3` versions
//! ([`super::sign`], [`super::trunc`]) are cheaper but have party 0 send values of `z_0 + z_1`, which only
//! it knows and so no other party can vouch for.
//!
//! # Sign test
//!
//! 1. **Local injection**: component `j` of a binary sharing of `bits(z_j)` is held by exactly the two
//!    holders of `z_j`, so `A = bits(z_0)`, `B = bits(z_1)`, `C = bits(z_2)` are replicated XOR sharings with
//!    no message, and so is their sum `S = A ^ B ^ C` (component `j` is `bits(z_j)`).
//! 2. **Carry-save** (1 round): the carries `M = maj(A, B, C) = ((A ^ C) & (B ^ C)) ^ C` on all 64 bits,
//!    so `z = S + 2M` modulo 2^64.
//! 3. **Leaves** (1 round): `G_j = S_j & M_{j-1}` and `P_j = S_j ^ M_{j-1}` for bits 1..=62; `G_0 = 0`,
//!    `P_0 = S_0`.
//! 4. **Carry tree** (6 rounds): pairs merge as `G = G_hi ^ P_hi & G_lo`, `P = P_hi & P_lo` (the last merge
//!    computes `G` only), 63 leaves down to the carry `c` into bit 63; `[z >= 0] = !(S_63 ^ M_62 ^ c)`.
//! 5. **Selection with the bit to the ring** (2 rounds): with the bit's components `s_0, s_1, s_2` injected
//!    as ring sharings as in step 1, round one computes `u = s_0 ^ s_1 = s_0 + s_1 - 2 s_0 s_1` and
//!    `B = s_2 v` for every payload `v`, round two `u v` and `u B`; `bit * v = u v + B - 2 u B`.
//!
//! Rounds: 10 at every party. AND gates per element: 64 + 62 + (62 + 32 + 16 + 8 + 4 + 1) = 249 bits; words
//! sent per party for `n` values, `w = ceil(n / 64)` words per bit plane and `k` payloads:
//! `249 w + (1 + 3k) n`; per element (`n` a multiple of 64) about `31 + 8 + 24k` bytes, the same at every
//! party (`rep3`: 8 hops, `27 + 16k` bytes at party 0 and `16 + 8k` at the others).
//!
//! # Truncation
//!
//! For `|z| < 2^62`, with `z' = z + 2^62` in `[0, 2^63)` and its components `z'_j` (component 0 carries
//! the offset), the integer sum `Z = z'_0 + z'_1 + z'_2 = z' + W 2^64` and, with `L` the carries out of the
//! low `f` bits,
//!
//! `floor(z / 2^f) = sum_j (z'_j >> f) + L - 2^(64 - f) W - 2^(62 - f)`   (mod 2^64, exactly).
//!
//! `sum_j (z'_j >> f)` is local (each component shifted). With the carry-save form `Z = S + 2M` of steps 1
//! and 2: `L = M_{f-1} + c_f`, `c_f` the carry out of `(S + 2M) mod 2^f` without `M_{f-1}`, and
//! `W = M_63 + (S_63 | M_62)`, because bit 63 of `z'` is zero, so the carry into bit 63 is `S_63 ^ M_62` and
//! the carry out is their OR (one AND gate).
//!
//! [`Party::trunc_injected`] drops `c_f` (in `{0, 1}`): the result is `floor(z / 2^f)` or one less, the
//! bound of `rep3`'s truncation, for 4 rounds: the carry-save carries `M_{f-1}, M_62, M_63` (1), the OR's
//! AND (1), and the ring sharing of `M_{f-1} - 2^(64 - f) (M_63 + c_64)` (2: `u_k = s_0 ^ s_1` for each of
//! the three bits, then the one sum `sum_k c_k (u_k ^ s_2)`, whose three products are added up before a
//! single reshare). Words sent per party: `4 w + 4 n`, about 33 bytes per element at every party (`rep3`'s
//! truncation: 2 hops, 16 / 8 / 8 bytes).
//!
//! **Fused with the sign test** (`truncate`, ReLU after a layer), exact: `z >= 0` exactly when bit 62 of
//! `z'` is set, so one carry-save form of `z'` serves both; the sign's tree (62 leaves, the carry into bit
//! 62) and a tree for `c_f` (`f` leaves) run side by side, so the truncation is `floor(z / 2^f)` exactly at
//! no extra round; five bits go to the ring together, then one product selects. Rounds:
//! 1 + 1 + 6 + 2 + 1 = 11; AND gates per element 64 + 62 + 121 + 29 = 276 bits; words `276 w + (7 + k) n`.
//!
//! Privacy: every message is an AND gate's or product's reshare, masked by the zero sharing
//! ([`super::keys`]).

use crate::bits;
use crate::error::{ensure_shape, Result};
use crate::net::Net;
use crate::ops::SignSelect;

use crate::rep3m::proof::Claim;

use super::share::RepBits;
use super::{Party, RepShare};

/// Leaves of the sign test's carry tree: bits 0..=62.
const LEAVES: usize = 63;

/// `2^62`, the offset that makes `z + 2^62` non-negative for the truncation.
const OFFSET: u64 = 1 << 62;

/// Planes `from..to` (`w` words each) of replicated bits.
fn planes(x: &RepBits, from: usize, to: usize, w: usize) -> RepBits {
    RepBits {
        own: x.own[from * w..to * w].to_vec(),
        next: x.next[from * w..to * w].to_vec(),
    }
}

fn xor(x: &RepBits, y: &RepBits) -> RepBits {
    RepBits {
        own: bits::xor(&x.own, &y.own),
        next: bits::xor(&x.next, &y.next),
    }
}

fn concat(parts: &[&RepBits]) -> RepBits {
    RepBits {
        own: parts.iter().flat_map(|p| p.own.iter().copied()).collect(),
        next: parts.iter().flat_map(|p| p.next.iter().copied()).collect(),
    }
}

impl<N: Net> Party<N> {
    /// A sharing whose component `comp` is `values` (held by its two holders) and whose other components
    /// are zero: `own` and `next` are this party's components `me` and `me + 1` of some shared value, and
    /// the result keeps the one that is component `comp`.
    fn inject(&self, comp: usize, own: &[u64], next: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let pick = |holds: bool, v: &[u64]| if holds { v.to_vec() } else { vec![0; v.len()] };
        (
            pick(comp == self.me, own),
            pick(comp == super::next_party(self.me), next),
        )
    }

    /// The bit planes of `z`'s components, `S = A ^ B ^ C` (component `j` is `bits(z_j)`), and the three
    /// injected sharings `A`, `B`, `C` (step 1).
    fn injected_planes(&self, z: &RepShare) -> (RepBits, [RepBits; 3]) {
        let s = RepBits {
            own: bits::to_planes(&z.own),
            next: bits::to_planes(&z.next),
        };
        let components = std::array::from_fn(|j| {
            let (own, next) = self.inject(j, &s.own, &s.next);
            RepBits { own, next }
        });
        (s, components)
    }

    /// The carry-save form `z = S + 2M` of a shared `z`: the planes `S` of its components and the carries
    /// `M = maj(A, B, C) = ((A ^ C) & (B ^ C)) ^ C` on all 64 bits (one round).
    fn carry_save_form(&mut self, z: &RepShare) -> Result<(RepBits, RepBits)> {
        let (s, [a, b, c]) = self.injected_planes(z);
        let m = xor(&self.and_bits(&xor(&a, &c), &xor(&b, &c))?, &c);
        Ok((s, m))
    }

    /// In one round: `S_j & M_{j-1}` for `1 <= j < count` (planes `0..count - 1`), then, with `or`,
    /// `S_63 & M_62` (plane `count - 1`).
    fn leaf_products(
        &mut self,
        s: &RepBits,
        m: &RepBits,
        count: usize,
        or: bool,
        w: usize,
    ) -> Result<RepBits> {
        let (s_hi, m_lo) = (planes(s, 1, count, w), planes(m, 0, count - 1, w));
        if or {
            let (s_63, m_62) = (planes(s, 63, 64, w), planes(m, 62, 63, w));
            self.and_bits(&concat(&[&s_hi, &s_63]), &concat(&[&m_lo, &m_62]))
        } else {
            self.and_bits(&s_hi, &m_lo)
        }
    }

    /// The generate bit of each carry tree of `trees` (leaves `(g, p)` ordered from the low bits up), the
    /// trees' levels side by side (one round per level of the tallest): pairs `(2t + 1, 2t)` merge as
    /// `G = G_hi ^ P_hi & G_lo`, `P = P_hi & P_lo` (a tree's last merge computes `G` only); an odd top node
    /// passes up as it is.
    fn carry_outs(
        &mut self,
        mut trees: Vec<(Vec<RepBits>, Vec<RepBits>)>,
        w: usize,
    ) -> Result<Vec<RepBits>> {
        while trees.iter().any(|(g, _)| g.len() > 1) {
            let shape: Vec<(usize, bool)> = trees
                .iter()
                .map(|(g, _)| (g.len() / 2, g.len() > 2))
                .collect();
            let (mut left, mut right): (Vec<&RepBits>, Vec<&RepBits>) = (Vec::new(), Vec::new());
            for ((g, p), &(pairs, need_p)) in trees.iter().zip(&shape) {
                left.extend((0..pairs).map(|t| &p[2 * t + 1]));
                right.extend((0..pairs).map(|t| &g[2 * t]));
                if need_p {
                    left.extend((0..pairs).map(|t| &p[2 * t + 1]));
                    right.extend((0..pairs).map(|t| &p[2 * t]));
                }
            }
            let product = self.and_bits(&concat(&left), &concat(&right))?;
            let mut at = 0;
            for ((g, p), (pairs, need_p)) in trees.iter_mut().zip(shape) {
                if pairs == 0 {
                    continue;
                }
                let mut next_g: Vec<RepBits> = (0..pairs)
                    .map(|t| xor(&g[2 * t + 1], &planes(&product, at + t, at + t + 1, w)))
                    .collect();
                at += pairs;
                let mut next_p: Vec<RepBits> = Vec::new();
                if need_p {
                    next_p = (0..pairs)
                        .map(|t| planes(&product, at + t, at + t + 1, w))
                        .collect();
                    at += pairs;
                }
                if g.len() % 2 == 1 {
                    next_g.extend(g.pop());
                    next_p.extend(p.pop());
                }
                *g = next_g;
                *p = next_p;
            }
        }
        Ok(trees
            .into_iter()
            .map(|(mut g, _)| g.pop().unwrap_or_default())
            .collect())
    }

    /// The leaves of the carry tree of `S + (M << 1)` over bits `0..count`: `G_j = S_j & M_{j-1}` (plane
    /// `j - 1` of `products`), `P_j = S_j ^ M_{j-1}`, `G_0 = 0`, `P_0 = S_0`.
    fn leaves(
        s: &RepBits,
        m: &RepBits,
        products: &RepBits,
        count: usize,
        w: usize,
    ) -> (Vec<RepBits>, Vec<RepBits>) {
        let zero = RepBits {
            own: vec![0; w],
            next: vec![0; w],
        };
        let g = std::iter::once(zero)
            .chain((1..count).map(|j| planes(products, j - 1, j, w)))
            .collect();
        let p = std::iter::once(planes(s, 0, 1, w))
            .chain((1..count).map(|j| xor(&planes(s, j, j + 1, w), &planes(m, j - 1, j, w))))
            .collect();
        (g, p)
    }

    /// `bit * v` for every payload `v` (two rounds, the bit to the ring on the way): with the bit's
    /// components `s_0, s_1, s_2` injected, round one gives `u = s_0 ^ s_1` and `B = s_2 v`, round two `u v`
    /// and `u B`, and `bit * v = (u ^ s_2) v = u v + B - 2 u B`.
    fn select_by_bit(
        &mut self,
        bit: &RepBits,
        payloads: &[RepShare],
        n: usize,
    ) -> Result<Vec<RepShare>> {
        let k = payloads.len();
        let unpack = |plane: &[u64]| -> Vec<u64> {
            (0..n).map(|i| u64::from(bits::get(plane, i))).collect()
        };
        let (own, next) = (unpack(&bit.own), unpack(&bit.next));
        let component = |party: &Self, j: usize| -> RepShare {
            let (own, next) = party.inject(j, &own, &next);
            RepShare { own, next }
        };
        let (s0, s1, s2) = (component(self, 0), component(self, 1), component(self, 2));
        let v = RepShare::concat(payloads);
        let first = self.mul(
            &RepShare::concat(&[s0.clone(), RepShare::concat(&vec![s2; k])]),
            &RepShare::concat(&[s1.clone(), v.clone()]),
        )?;
        let s01 = first.map(|c| c[..n].to_vec());
        let b = first.map(|c| c[n..].to_vec());
        let u = s0.add(&s1).sub(&s01.add(&s01));
        let u_k = RepShare::concat(&vec![u; k]);
        let second = self.mul(
            &RepShare::concat(&[u_k.clone(), u_k]),
            &RepShare::concat(&[v, b.clone()]),
        )?;
        let uv = second.map(|c| c[..k * n].to_vec());
        let ub = second.map(|c| c[k * n..].to_vec());
        let selected = uv.add(&b).sub(&ub.add(&ub));
        Ok((0..k)
            .map(|j| selected.map(|c| c[j * n..(j + 1) * n].to_vec()))
            .collect())
    }

    /// For each group of bits with public coefficients, the ring sharing of `sum_k c_k b_k` over its `n`
    /// bits (two rounds for all groups): each bit's components `s_0, s_1, s_2` are injected, round one
    /// computes `u_k = s_0 ^ s_1 = s_0 + s_1 - 2 s_0 s_1` for every bit, and round two reshares one word per
    /// element per group, the summands of `sum_k c_k u_k s_2` added up before the reshare; then
    /// `sum_k c_k b_k = sum_k c_k (u_k + s_2 - 2 u_k s_2)`.
    fn bits_to_ring(&mut self, groups: &[(&[RepBits], &[u64])], n: usize) -> Result<Vec<RepShare>> {
        // This party's components of the bits: `own` is component `me`, `next` component `me + 1`.
        let unpack = |plane: &[u64]| -> Vec<u64> {
            (0..n).map(|i| u64::from(bits::get(plane, i))).collect()
        };
        let all: Vec<&RepBits> = groups.iter().flat_map(|(b, _)| b.iter()).collect();
        let own: Vec<u64> = all.iter().flat_map(|b| unpack(&b.own)).collect();
        let next: Vec<u64> = all.iter().flat_map(|b| unpack(&b.next)).collect();
        let me = self.me;
        let zeros = || vec![0u64; own.len()];
        // The injected ring sharings' components here: s_j's `own` is `own` at party j, its `next` is
        // `next` at party j - 1; zero elsewhere.
        let holds = |j: usize, v: &[u64], at: usize| if at == j { v.to_vec() } else { zeros() };
        // Round one: s_0 s_1, whose only non-zero summand is party 0's (it holds both components).
        let summand = if me == 0 {
            own.iter().zip(&next).map(|(a, b)| a & b).collect()
        } else {
            zeros()
        };
        let (s0_own, s0_next) = (holds(0, &own, me), holds(2, &next, me));
        let (s1_own, s1_next) = (holds(1, &own, me), holds(0, &next, me));
        let s01 = self.reshare(summand, || {
            vec![Claim::elementwise(
                RepShare {
                    own: s0_own.clone(),
                    next: s0_next.clone(),
                },
                RepShare {
                    own: s1_own.clone(),
                    next: s1_next.clone(),
                },
            )]
        })?;
        let u = RepShare {
            own: (0..own.len())
                .map(|i| {
                    s0_own[i]
                        .wrapping_add(s1_own[i])
                        .wrapping_sub(s01.own[i].wrapping_mul(2))
                })
                .collect(),
            next: (0..own.len())
                .map(|i| {
                    s0_next[i]
                        .wrapping_add(s1_next[i])
                        .wrapping_sub(s01.next[i].wrapping_mul(2))
                })
                .collect(),
        };
        let (s2_own, s2_next) = (holds(2, &own, me), holds(1, &next, me));
        // Round two: per group, this party's summand of sum_k c_k u_k s_2 and the linear part
        // sum_k c_k (u_k + s_2).
        let mut summands = Vec::with_capacity(groups.len() * n);
        let mut linear = Vec::with_capacity(groups.len());
        let mut at = 0;
        for (bits, coefficients) in groups {
            let mut summand = vec![0u64; n];
            let mut sum = RepShare {
                own: vec![0; n],
                next: vec![0; n],
            };
            for (k, &c) in coefficients.iter().enumerate().take(bits.len()) {
                let base = (at + k) * n;
                for i in 0..n {
                    let (ua, ub) = (u.own[base + i], u.next[base + i]);
                    let (sa, sb) = (s2_own[base + i], s2_next[base + i]);
                    let product = ua
                        .wrapping_mul(sa.wrapping_add(sb))
                        .wrapping_add(ub.wrapping_mul(sa));
                    summand[i] = summand[i].wrapping_add(c.wrapping_mul(product));
                    sum.own[i] = sum.own[i].wrapping_add(c.wrapping_mul(ua.wrapping_add(sa)));
                    sum.next[i] = sum.next[i].wrapping_add(c.wrapping_mul(ub.wrapping_add(sb)));
                }
            }
            at += bits.len();
            summands.extend(summand);
            linear.push(sum);
        }
        let products = self.reshare(summands, || {
            // Term (group g, bit k, element i): x = c_k u_k, y = s_2, into output g n + i.
            let (mut x, mut y) = (RepShare::default(), RepShare::default());
            let mut out = Vec::new();
            let mut at = 0;
            for (g, (bits, coefficients)) in groups.iter().enumerate() {
                for (k, &c) in coefficients.iter().enumerate().take(bits.len()) {
                    let base = (at + k) * n;
                    for i in 0..n {
                        x.own.push(c.wrapping_mul(u.own[base + i]));
                        x.next.push(c.wrapping_mul(u.next[base + i]));
                        y.own.push(s2_own[base + i]);
                        y.next.push(s2_next[base + i]);
                        out.push(g * n + i);
                    }
                }
                at += bits.len();
            }
            vec![Claim::Elementwise {
                x,
                y,
                out: Some(out),
                outputs: groups.len() * n,
            }]
        })?;
        Ok(linear
            .into_iter()
            .enumerate()
            .map(|(g, sum)| {
                let p = products.map(|c| c[g * n..(g + 1) * n].to_vec());
                sum.sub(&p.add(&p))
            })
            .collect())
    }

    /// `floor(z / 2^f)` or one less, for `|z| < 2^62`, with no one-sided message (see the module doc).
    pub fn trunc_injected(&mut self, z: &RepShare) -> Result<RepShare> {
        let f = self.fixed_point.frac_bits() as usize;
        let w = bits::Layout::new(z.len()).words;
        let shifted = self.offset(z);
        // M_{f-1}, M_62 and M_63 (planes 0, 1, 2 of `m`), then S_63 & M_62 for the wrap's OR.
        let (s, abc) = self.injected_planes(&shifted);
        let pick = |x: &RepBits| {
            let parts: Vec<RepBits> = [f - 1, 62, 63]
                .iter()
                .map(|&i| planes(x, i, i + 1, w))
                .collect();
            concat(&parts.iter().collect::<Vec<_>>())
        };
        let [a, b, c] = &abc;
        let m = xor(
            &self.and_bits(&pick(&xor(a, c)), &pick(&xor(b, c)))?,
            &pick(c),
        );
        let (s_63, m_62) = (planes(&s, 63, 64, w), planes(&m, 1, 2, w));
        let or_and = self.and_bits(&s_63, &m_62)?;
        let c_64 = xor(&xor(&s_63, &m_62), &or_and);
        let wrap = (1u64 << (64 - f)).wrapping_neg();
        let bits = [planes(&m, 0, 1, w), planes(&m, 2, 3, w), c_64];
        let carries = self
            .bits_to_ring(&[(&bits, &[1, wrap, wrap])], z.len())?
            .pop()
            .unwrap_or_default();
        Ok(self.trunc_from_carries(&shifted, &carries))
    }

    /// `z + 2^62`, the offset on component 0.
    fn offset(&self, z: &RepShare) -> RepShare {
        let mut shifted = z.clone();
        self.add_public(&mut shifted, &vec![OFFSET; z.len()]);
        shifted
    }

    /// The truncation's four bits `M_{f-1}`, `c_f`, `M_63` and `c_64 = S_63 | M_62`, from `S_63 & M_62`.
    fn trunc_bits(
        s: &RepBits,
        m: &RepBits,
        c_f: RepBits,
        or_and: &RepBits,
        f: usize,
        w: usize,
    ) -> [RepBits; 4] {
        let c_64 = xor(&xor(&planes(s, 63, 64, w), &planes(m, 62, 63, w)), or_and);
        [planes(m, f - 1, f, w), c_f, planes(m, 63, 64, w), c_64]
    }

    /// The coefficients of the truncation's four bits in `L - 2^(64 - f) W` (see [`Self::trunc_bits`]).
    fn trunc_coefficients(&self) -> [u64; 4] {
        let wrap = (1u64 << (64 - self.fixed_point.frac_bits())).wrapping_neg();
        [1, 1, wrap, wrap]
    }

    /// `sum_j (z'_j >> f) + (L - 2^(64 - f) W) - 2^(62 - f)` from the shifted value `z'` and the ring sharing
    /// of the carries' part `L - 2^(64 - f) W`.
    fn trunc_from_carries(&self, shifted: &RepShare, carries: &RepShare) -> RepShare {
        let f = self.fixed_point.frac_bits() as usize;
        let mut out = shifted.map(|c| c.iter().map(|&v| v >> f).collect());
        out.add_assign(carries);
        self.add_public(&mut out, &vec![(OFFSET >> f).wrapping_neg(); shifted.len()]);
        out
    }

    /// The sign test with no one-sided message (see the module doc): `[z >= 0] * payload` for every payload.
    pub fn sign_select_injected(&mut self, job: SignSelect<'_, RepShare>) -> Result<Vec<RepShare>> {
        let n = job.z.len();
        for extra in &job.extras {
            ensure_shape(extra.len() == n, "sign_select_injected", || {
                format!("payload {} vs value {n}", extra.len())
            })?;
        }
        if job.truncate {
            return self.trunc_sign_select(job);
        }
        let z = job.z;
        let layout = bits::Layout::new(n);
        let w = layout.words;
        let (s, m) = self.carry_save_form(z)?;
        let products = self.leaf_products(&s, &m, LEAVES, false, w)?;
        let tree = Self::leaves(&s, &m, &products, LEAVES, w);
        let carry = self.carry_outs(vec![tree], w)?.pop().unwrap_or_default();
        // [z >= 0] = !(S_63 ^ M_62 ^ c): the negation flips component 0.
        let mut sign = xor(&xor(&planes(&s, 63, 64, w), &planes(&m, 62, 63, w)), &carry);
        let ones: Vec<u64> = (0..w).map(|i| layout.valid(i)).collect();
        let (flip_own, flip_next) = self.inject(0, &ones, &ones);
        bits::xor_assign(&mut sign.own, &flip_own);
        bits::xor_assign(&mut sign.next, &flip_next);

        let mut payloads: Vec<RepShare> = Vec::with_capacity(1 + job.extras.len());
        if job.select_self {
            payloads.push(z.clone());
        }
        payloads.extend(job.extras);
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        self.select_by_bit(&sign, &payloads, n)
    }

    /// The sign test of `trunc(z)` fused with the truncation (`|z| < 2^62`; see the module doc): one
    /// carry-save form of `z' = z + 2^62` serves both, since `z >= 0` exactly when bit 62 of `z'` is set
    /// (`floor(z / 2^f)` has the sign of `z`), and the truncation's tree runs beside the sign's.
    fn trunc_sign_select(&mut self, job: SignSelect<'_, RepShare>) -> Result<Vec<RepShare>> {
        let f = self.fixed_point.frac_bits() as usize;
        let n = job.z.len();
        let w = bits::Layout::new(n).words;
        let shifted = self.offset(job.z);
        let (s, m) = self.carry_save_form(&shifted)?;
        let products = self.leaf_products(&s, &m, 62, true, w)?;
        let sign_tree = Self::leaves(&s, &m, &products, 62, w);
        let low_tree = Self::leaves(&s, &m, &products, f, w);
        let mut carries = self.carry_outs(vec![sign_tree, low_tree], w)?;
        let c_f = carries.pop().unwrap_or_default();
        let c_62 = carries.pop().unwrap_or_default();
        let positive = xor(&xor(&planes(&s, 62, 63, w), &planes(&m, 61, 62, w)), &c_62);
        let bits = Self::trunc_bits(&s, &m, c_f, &planes(&products, 61, 62, w), f, w);
        let coefficients = self.trunc_coefficients();
        let mut rings = self.bits_to_ring(
            &[
                (std::slice::from_ref(&positive), &[1]),
                (&bits, &coefficients),
            ],
            n,
        )?;
        let carries = rings.pop().unwrap_or_default();
        let bit = rings.pop().unwrap_or_default();
        let mut payloads: Vec<RepShare> = Vec::with_capacity(1 + job.extras.len());
        if job.select_self {
            payloads.push(self.trunc_from_carries(&shifted, &carries));
        }
        payloads.extend(job.extras);
        let k = payloads.len();
        if k == 0 {
            return Ok(Vec::new());
        }
        let selected = self.mul(
            &RepShare::concat(&vec![bit; k]),
            &RepShare::concat(&payloads),
        )?;
        Ok((0..k)
            .map(|j| selected.map(|c| c[j * n..(j + 1) * n].to_vec()))
            .collect())
    }
}
