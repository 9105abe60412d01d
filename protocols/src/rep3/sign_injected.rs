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
//! 2. **Carry-save** (1 round): the carries `M = maj(A, B, C) = ((A ^ C) & (B ^ C)) ^ C`, bits 0..=62, so
//!    `z = S + 2M` modulo 2^64.
//! 3. **Leaves** (1 round): `G_j = S_j & M_{j-1}` and `P_j = S_j ^ M_{j-1}` for bits 1..=62; `G_0 = 0`,
//!    `P_0 = S_0`.
//! 4. **Carry tree** (6 rounds): pairs merge as `G = G_hi ^ P_hi & G_lo`, `P = P_hi & P_lo` (the last merge
//!    computes `G` only), 63 leaves down to the carry `c` into bit 63; `[z >= 0] = !(S_63 ^ M_62 ^ c)`.
//! 5. **Bit to ring** (2 rounds): the bit's components `s_0, s_1, s_2` are injected as ring sharings as in
//!    step 1, then `u = s_0 + s_1 - 2 s_0 s_1` and `s = u + s_2 - 2 u s_2`, two products.
//! 6. **Payloads** (1 round): `s * v` for every payload, one product.
//!
//! Rounds: 11 at every party (19 with `truncate`: the truncation below runs first). AND gates per element: 63 + 62 + 62 + 32 + 16 + 8 + 4 + 1 = 248 bits, plus two
//! products; words sent per party for `n` values, `w = ceil(n / 64)` words per bit plane and `k` payloads:
//! `248 w + (2 + k) n`; per element (`n` a multiple of 64) `31 + 16 + 8k` bytes, the same at every party.
//!
//! # Truncation, exact
//!
//! For `|z| < 2^62`, with `z' = z + 2^62` in `[0, 2^63)` and its components `z'_j` (component 0 carries
//! the offset), the integer sum `Z = z'_0 + z'_1 + z'_2 = z' + W 2^64` and, with `L` the carries out of the
//! low `f` bits,
//!
//! `floor(z / 2^f) = sum_j (z'_j >> f) + L - 2^(64 - f) W - 2^(62 - f)`   (mod 2^64, exactly).
//!
//! `sum_j (z'_j >> f)` is local (each component shifted). With the carry-save form `Z = S + 2M` of step 1
//! and 2 above: `L = M_{f-1} + c_f`, `c_f` the carry out of `(S + 2M) mod 2^f` without `M_{f-1}` (a carry
//! tree over `f` leaves), and `W = M_63 + (S_63 | M_62)`, because bit 63 of `z'` is zero, so the carry into
//! bit 63 is `S_63 ^ M_62` and the carry out is their OR (one AND gate). The four bits go to the ring as
//! in step 5.
//!
//! Rounds: 1 (carries `M_0..M_{f-1}`, `M_62`, `M_63`) + 1 (leaves and the OR) + `ceil(log2 f)` (the tree) + 2
//! (bits to ring) = 8 for f = 16. AND gates per element for f = 16: 18 + 16 + 29 = 63 bits; words sent per
//! party: `63 w + 8 n`, about 72 bytes per element at every party (`rep3`'s truncation: 16 / 8 / 8). No
//! error: the result is `floor(z / 2^f)` exactly.
//!
//! Privacy: every message is an AND gate's or product's reshare, masked by the zero sharing
//! ([`super::keys`]).

use crate::bits;
use crate::error::{ensure_shape, Result};
use crate::net::Net;
use crate::ops::SignSelect;

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

    /// The carry-save carries `M = maj(A, B, C)` on the bit planes `indices` (one round).
    fn carry_save(
        &mut self,
        [a, b, c]: &[RepBits; 3],
        indices: &[usize],
        w: usize,
    ) -> Result<RepBits> {
        let pick = |x: &RepBits| {
            concat(
                &indices
                    .iter()
                    .map(|&i| planes(x, i, i + 1, w))
                    .collect::<Vec<_>>()
                    .iter()
                    .collect::<Vec<_>>(),
            )
        };
        let (ac, bc) = (pick(&xor(a, c)), pick(&xor(b, c)));
        Ok(xor(&self.and_bits(&ac, &bc)?, &pick(c)))
    }

    /// The generate bit of a carry tree over `(g, p)` leaves ordered from the low bits up (one round per
    /// level): pairs `(2t + 1, 2t)` merge as `G = G_hi ^ P_hi & G_lo`, `P = P_hi & P_lo` (the last merge
    /// computes `G` only); an odd top node passes up as it is.
    fn carry_out(&mut self, mut g: Vec<RepBits>, mut p: Vec<RepBits>, w: usize) -> Result<RepBits> {
        while g.len() > 1 {
            let pairs = g.len() / 2;
            let need_p = g.len() > 2;
            let p_hi: Vec<&RepBits> = (0..pairs).map(|t| &p[2 * t + 1]).collect();
            let g_lo: Vec<&RepBits> = (0..pairs).map(|t| &g[2 * t]).collect();
            let p_lo: Vec<&RepBits> = (0..pairs).map(|t| &p[2 * t]).collect();
            let (left, right) = if need_p {
                (
                    concat(&[p_hi.as_slice(), p_hi.as_slice()].concat()),
                    concat(&[g_lo.as_slice(), p_lo.as_slice()].concat()),
                )
            } else {
                (concat(&p_hi), concat(&g_lo))
            };
            let product = self.and_bits(&left, &right)?;
            let mut next_g: Vec<RepBits> = (0..pairs)
                .map(|t| xor(&g[2 * t + 1], &planes(&product, t, t + 1, w)))
                .collect();
            let mut next_p: Vec<RepBits> = if need_p {
                (0..pairs)
                    .map(|t| planes(&product, pairs + t, pairs + t + 1, w))
                    .collect()
            } else {
                Vec::new()
            };
            if g.len() % 2 == 1 {
                next_g.extend(g.pop());
                next_p.extend(p.pop());
            }
            g = next_g;
            p = next_p;
        }
        Ok(g.pop().unwrap_or_default())
    }

    /// Ring sharings of the `n` bits of each of `bits` (two rounds for all of them): each bit's components
    /// `s_0, s_1, s_2` injected, then `u = s_0 ^ s_1` and `s = u ^ s_2` with `x ^ y = x + y - 2 x y`.
    fn bits_to_ring(&mut self, bits: &[RepBits], n: usize) -> Result<Vec<RepShare>> {
        let unpack = |plane: &[u64]| -> Vec<u64> {
            (0..n).map(|i| u64::from(bits::get(plane, i))).collect()
        };
        let own: Vec<u64> = bits.iter().flat_map(|b| unpack(&b.own)).collect();
        let next: Vec<u64> = bits.iter().flat_map(|b| unpack(&b.next)).collect();
        let component = |party: &Self, j: usize| -> RepShare {
            let (own, next) = party.inject(j, &own, &next);
            RepShare { own, next }
        };
        let xor_ring = |party: &mut Self, x: &RepShare, y: &RepShare| -> Result<RepShare> {
            let xy = party.mul(x, y)?;
            Ok(x.add(y).sub(&xy.add(&xy)))
        };
        let (s0, s1, s2) = (component(self, 0), component(self, 1), component(self, 2));
        let u = xor_ring(self, &s0, &s1)?;
        let all = xor_ring(self, &u, &s2)?;
        Ok((0..bits.len())
            .map(|k| all.map(|c| c[k * n..(k + 1) * n].to_vec()))
            .collect())
    }

    /// `floor(z / 2^f)` exactly, for `|z| < 2^62`, with no one-sided message (see the module doc).
    pub fn trunc_injected(&mut self, z: &RepShare) -> Result<RepShare> {
        let n = z.len();
        let f = self.fixed_point.frac_bits() as usize;
        let w = bits::Layout::new(n).words;
        let mut shifted = z.clone();
        self.add_public(&mut shifted, &vec![OFFSET; n]);
        let (s, abc) = self.injected_planes(&shifted);

        // M on bits 0..f, 62 and 63: index k < f is bit k, then 62 (at f) and 63 (at f + 1).
        let indices: Vec<usize> = (0..f).chain([62, 63]).collect();
        let m = self.carry_save(&abc, &indices, w)?;
        let m_at = |k: usize| planes(&m, k, k + 1, w);

        // Leaves G_j = S_j & M_{j-1} (1 <= j < f) and the OR's AND, S_63 & M_62, in one round.
        let s_at = |k: usize| planes(&s, k, k + 1, w);
        let left: Vec<RepBits> = (1..f).map(s_at).chain([s_at(63)]).collect();
        let right: Vec<RepBits> = (0..f - 1).map(m_at).chain([m_at(f)]).collect();
        let product = self.and_bits(
            &concat(&left.iter().collect::<Vec<_>>()),
            &concat(&right.iter().collect::<Vec<_>>()),
        )?;
        let zero = RepBits {
            own: vec![0; w],
            next: vec![0; w],
        };
        let g: Vec<RepBits> = std::iter::once(zero)
            .chain((0..f - 1).map(|j| planes(&product, j, j + 1, w)))
            .collect();
        let p: Vec<RepBits> = std::iter::once(s_at(0))
            .chain((1..f).map(|j| xor(&s_at(j), &m_at(j - 1))))
            .collect();
        let c_f = self.carry_out(g, p, w)?;
        let c_64 = xor(&xor(&s_at(63), &m_at(f)), &planes(&product, f - 1, f, w));

        let counts = self.bits_to_ring(&[m_at(f - 1), c_f, m_at(f + 1), c_64], n)?;
        let low = counts[0].add(&counts[1]);
        let wraps = counts[2].add(&counts[3]);
        let mut out = shifted.map(|c| c.iter().map(|&v| v >> f).collect());
        out.add_assign(&low);
        out = out.sub(&wraps.mul_public(&vec![1u64 << (64 - f); n]));
        self.add_public(&mut out, &vec![(OFFSET >> f).wrapping_neg(); n]);
        Ok(out)
    }

    /// The sign test with no one-sided message (see the module doc): `[z >= 0] * payload` for every payload.
    pub fn sign_select_injected(&mut self, job: SignSelect<'_, RepShare>) -> Result<Vec<RepShare>> {
        let n = job.z.len();
        for extra in &job.extras {
            ensure_shape(extra.len() == n, "sign_select_injected", || {
                format!("payload {} vs value {n}", extra.len())
            })?;
        }
        let truncated = if job.truncate {
            Some(self.trunc_injected(job.z)?)
        } else {
            None
        };
        let z = job.z;
        let layout = bits::Layout::new(n);
        let w = layout.words;

        // Steps 1 and 2: S, and M = maj(A, B, C) on bits 0..=62.
        let (s, abc) = self.injected_planes(z);
        let m = self.carry_save(&abc, &(0..LEAVES).collect::<Vec<_>>(), w)?;

        // Step 3: leaves G_j = S_j & M_{j-1}, P_j = S_j ^ M_{j-1} (j >= 1); G_0 = 0, P_0 = S_0.
        let s_hi = planes(&s, 1, LEAVES, w);
        let m_lo = planes(&m, 0, LEAVES - 1, w);
        let g_tail = self.and_bits(&s_hi, &m_lo)?;
        let p_tail = xor(&s_hi, &m_lo);
        let zero = RepBits {
            own: vec![0; w],
            next: vec![0; w],
        };
        let g: Vec<RepBits> = std::iter::once(zero)
            .chain((0..LEAVES - 1).map(|j| planes(&g_tail, j, j + 1, w)))
            .collect();
        let p: Vec<RepBits> = std::iter::once(planes(&s, 0, 1, w))
            .chain((0..LEAVES - 1).map(|j| planes(&p_tail, j, j + 1, w)))
            .collect();

        // Step 4: the carry into bit 63; [z >= 0] = !(S_63 ^ M_62 ^ c), the negation flipping component 0.
        let carry = self.carry_out(g, p, w)?;
        let mut sign = xor(
            &xor(&planes(&s, 63, 64, w), &planes(&m, LEAVES - 1, LEAVES, w)),
            &carry,
        );
        let ones: Vec<u64> = (0..w).map(|i| layout.valid(i)).collect();
        let (flip_own, flip_next) = self.inject(0, &ones, &ones);
        bits::xor_assign(&mut sign.own, &flip_own);
        bits::xor_assign(&mut sign.next, &flip_next);

        // Steps 5 and 6: the bit in the ring, then the payloads.
        let mut payloads: Vec<RepShare> = Vec::with_capacity(1 + job.extras.len());
        if job.select_self {
            payloads.push(truncated.unwrap_or_else(|| z.clone()));
        }
        payloads.extend(job.extras);
        let k = payloads.len();
        if k == 0 {
            return Ok(Vec::new());
        }
        let bit = self.bits_to_ring(&[sign], n)?.pop().unwrap_or_default();
        let bits_k = RepShare::concat(&vec![bit; k]);
        let selected = self.mul(&bits_k, &RepShare::concat(&payloads))?;
        Ok((0..k)
            .map(|j| selected.map(|c| c[j * n..(j + 1) * n].to_vec()))
            .collect())
    }
}
