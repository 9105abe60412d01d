//! The sign test with no one-sided message, for `rep3m` (see `protocols/src/rep3m/mod.rs`): every message
//! is a replicated AND gate's or product's reshare, so the product proof `rep3m` needs can cover all of them.
//! The `rep3` sign test ([`super::sign`]) is cheaper but has party 0 send bits of `z_0 + z_1`, which only it
//! knows and so no other party can vouch for.
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
//! Rounds: 11 at every party (12 with `truncate`, which runs `rep3`'s truncation first and so still has
//! its one-sided messages). AND gates per element: 63 + 62 + 62 + 32 + 16 + 8 + 4 + 1 = 248 bits, plus two
//! products; words sent per party for `n` values, `w = ceil(n / 64)` words per bit plane and `k` payloads:
//! `248 w + (2 + k) n`; per element (`n` a multiple of 64) `31 + 16 + 8k` bytes, the same at every party.
//!
//! Privacy: every message is an AND gate's or product's reshare, masked by the zero sharing
//! ([`super::keys`]).

use crate::bits;
use crate::error::{ensure_shape, Result};
use crate::net::Net;
use crate::ops::SignSelect;

use super::share::RepBits;
use super::{Party, RepShare};

/// Leaves of the carry tree: bits 0..=62.
const LEAVES: usize = 63;

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

    /// The sign test with no one-sided message (see the module doc): `[z >= 0] * payload` for every payload.
    pub fn sign_select_injected(&mut self, job: SignSelect<'_, RepShare>) -> Result<Vec<RepShare>> {
        let n = job.z.len();
        for extra in &job.extras {
            ensure_shape(extra.len() == n, "sign_select_injected", || {
                format!("payload {} vs value {n}", extra.len())
            })?;
        }
        let truncated = if job.truncate {
            Some(self.trunc(job.z)?)
        } else {
            None
        };
        let z = job.z;
        let layout = bits::Layout::new(n);
        let w = layout.words;

        // Step 1: S = A ^ B ^ C is the planes of the components themselves.
        let s = RepBits {
            own: bits::to_planes(&z.own),
            next: bits::to_planes(&z.next),
        };
        let component = |party: &Self, j: usize| -> RepBits {
            let (own, next) = party.inject(j, &s.own, &s.next);
            RepBits { own, next }
        };
        let (a, b, c) = (component(self, 0), component(self, 1), component(self, 2));

        // Step 2: M = ((A ^ C) & (B ^ C)) ^ C on bits 0..=62.
        let ac = planes(&xor(&a, &c), 0, LEAVES, w);
        let bc = planes(&xor(&b, &c), 0, LEAVES, w);
        let m = xor(&self.and_bits(&ac, &bc)?, &planes(&c, 0, LEAVES, w));

        // Step 3: leaves G_j = S_j & M_{j-1}, P_j = S_j ^ M_{j-1} (j >= 1); G_0 = 0, P_0 = S_0.
        let s_hi = planes(&s, 1, LEAVES, w);
        let m_lo = planes(&m, 0, LEAVES - 1, w);
        let g_tail = self.and_bits(&s_hi, &m_lo)?;
        let p_tail = xor(&s_hi, &m_lo);
        let zero = RepBits {
            own: vec![0; w],
            next: vec![0; w],
        };
        let mut g: Vec<RepBits> = std::iter::once(zero)
            .chain((0..LEAVES - 1).map(|j| planes(&g_tail, j, j + 1, w)))
            .collect();
        let mut p: Vec<RepBits> = std::iter::once(planes(&s, 0, 1, w))
            .chain((0..LEAVES - 1).map(|j| planes(&p_tail, j, j + 1, w)))
            .collect();

        // Step 4: the tree, nodes ordered from the low bits up; pair (2t + 1, 2t) merges, an odd top node
        // passes up as it is.
        while g.len() > 1 {
            let pairs = g.len() / 2;
            let need_p = g.len() > 2;
            let p_hi: Vec<&RepBits> = (0..pairs).map(|t| &p[2 * t + 1]).collect();
            let g_lo: Vec<&RepBits> = (0..pairs).map(|t| &g[2 * t]).collect();
            let p_lo: Vec<&RepBits> = (0..pairs).map(|t| &p[2 * t]).collect();
            let left = if need_p {
                concat(&[p_hi.as_slice(), p_hi.as_slice()].concat())
            } else {
                concat(&p_hi)
            };
            let right = if need_p {
                concat(&[g_lo.as_slice(), p_lo.as_slice()].concat())
            } else {
                concat(&g_lo)
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
        let carry = g.pop().unwrap_or_default();

        // [z >= 0] = !(S_63 ^ M_62 ^ c): the negation flips component 0.
        let mut sign = xor(
            &xor(&planes(&s, 63, 64, w), &planes(&m, LEAVES - 1, LEAVES, w)),
            &carry,
        );
        let ones: Vec<u64> = (0..w).map(|i| layout.valid(i)).collect();
        let (flip_own, flip_next) = self.inject(0, &ones, &ones);
        bits::xor_assign(&mut sign.own, &flip_own);
        bits::xor_assign(&mut sign.next, &flip_next);

        // Step 5: bit to ring, s = s_0 ^ s_1 ^ s_2 with two products.
        let unpack = |plane: &[u64]| -> Vec<u64> {
            (0..n).map(|i| u64::from(bits::get(plane, i))).collect()
        };
        let (own_bits, next_bits) = (unpack(&sign.own), unpack(&sign.next));
        let ring = |party: &Self, j: usize| -> RepShare {
            let (own, next) = party.inject(j, &own_bits, &next_bits);
            RepShare { own, next }
        };
        let xor_ring = |party: &mut Self, x: &RepShare, y: &RepShare| -> Result<RepShare> {
            let xy = party.mul(x, y)?;
            Ok(x.add(y).sub(&xy.add(&xy)))
        };
        let (s0, s1, s2) = (ring(self, 0), ring(self, 1), ring(self, 2));
        let u = xor_ring(self, &s0, &s1)?;
        let bit = xor_ring(self, &u, &s2)?;

        // Step 6: the payloads.
        let mut payloads: Vec<RepShare> = Vec::with_capacity(1 + job.extras.len());
        if job.select_self {
            payloads.push(truncated.unwrap_or_else(|| z.clone()));
        }
        payloads.extend(job.extras);
        let k = payloads.len();
        if k == 0 {
            return Ok(Vec::new());
        }
        let bits_k = RepShare::concat(&vec![bit; k]);
        let selected = self.mul(&bits_k, &RepShare::concat(&payloads))?;
        Ok((0..k)
            .map(|j| selected.map(|c| c[j * n..(j + 1) * n].to_vec()))
            .collect())
    }
}
