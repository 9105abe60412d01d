//! The sign test: from a shared `z` (any `z` of Z_2^64 read as two's complement), shares of the bit
//! `b = [z >= 0]` multiplied into payload vectors. ReLU, fused truncation + ReLU, DReLU, max and every
//! comparison are this one protocol. No dealer: the only randomness is the pairwise PRF streams.
//!
//! Bit decomposition over binary replicated shares with a parallel-prefix carry tree (ABY3 section 5.3):
//! write `z = y + x` with `y = z_0 + z_1` (party 0 knows it) and `x = z_2` (parties 1 and 2 know it). Then
//! `msb(z) = y_63 ^ x_63 ^ c`, where `c` is the carry into bit 63 of `y + x`: the generate bit of the
//! prefix tree over bits 62..0 with leaves `G_i = y_i & x_i`, `P_i = y_i ^ x_i` and merges
//! `G = G_hi ^ P_hi & G_lo`, `P = P_hi & P_lo`. Everything is bit-sliced over the batch (one word carries a bit
//! plane of 64 elements).
//!
//! 1. **Party 0's input** (party 0 -> party 2): the 63 planes `y_0..y_62` and the 31 products `y_h & y_l`
//!    of the first level's pairs, masked by `F(k_1)` (parties 0 and 1 draw it): 94 planes.
//! 2. **First level, bilinear** (party 1 -> 0, party 2 -> 1): a first-level node of the pair `(h, l)` is
//!    `G = y_h x_h ^ (y_h y_l) x_l ^ y_l (x_h x_l)` and `P = (y_h y_l) ^ y_h x_l ^ y_l x_h ^ x_h x_l`:
//!    each term is a monomial party 0 knows times one the pair knows, so with party 0's monomials masked,
//!    party 1 computes its XOR summand from the masks and party 2 from the masked values; they reshare it
//!    into replicated form ([`Party::reshare_pair`] on bits). 32 nodes (31 pairs and bit 0).
//! 3. **Four levels** of AND gates on replicated bits (32 -> 2 nodes), one round each, one bit per AND per
//!    party, `2 * pairs` ANDs per level; then **the last AND** (`G = G_0 ^ P_0 & G_1`) without a reshare:
//!    each party keeps its summand of the gate, parties 1 and 2 swap theirs (one bit each), and the result bit
//!    `b = [z >= 0] = d ^ e` is split as `d` known to party 0 (its two components of the carry, its summand,
//!    `y_63` and the negation) and `e` known to the pair (component 2, their summands and `x_63`). `d` is
//!    uniform to each of parties 1 and 2 (party 0's summand carries `F(k_0) ^ F(k_1)`), so `e` reveals nothing.
//! 4. **Payloads** (party 0 -> party 2 in the same hop as the swap, then parties 1 -> 0 and 2 -> 1): with each
//!    payload `v = p + q` (`p = v_0 + v_1` party 0's, `q = v_2` the pair's):
//!    `b v = (d p)(1 - 2e) + d (q - 2 e q) + p e + e q`, party 0's values times the pair's. Party 0 sends `d`,
//!    `p` and `d p` masked by `F(k_1)`; parties 1 and 2 compute the two summands and reshare them
//!    ([`Party::reshare_pair`]).
//!
//! With `truncate`, party 0's truncation message ([`super::trunc`]) rides in step 1 and the pair's reshare
//! of its cross term in step 2, and the truncated value is the first payload: no extra hop, `2n` more words
//! from party 0 and `n` more from each of parties 1 and 2.
//!
//! Sequential message hops: 8 (1 + 1 + 4 + 1 + 1). Words sent, for `n` values, `w = ceil(n / 64)` words per
//! bit plane and `k` payloads: party 0 `94 w + 60 w + (1 + 2k) n` (plus `2n` with `truncate`), parties 1 and
//! 2 `64 w + 61 w + k n` each (plus `n`). Per element (`n` a multiple of 64): party 0 `19.25 + 8 + 16k`
//! bytes, parties 1 and 2 `15.6 + 8k`.
//!
//! Privacy: party 2 sees party 0's monomials and values masked by `F(k_1)`, which it lacks; the reshares
//! and AND gates mask every message with a stream its receiver lacks (see [`super::keys`]).

use crate::bits;
use crate::error::{ensure_shape, Result};
use crate::net::Net;
use crate::ops::SignSelect;

use super::share::RepBits;
use super::{next_party, prev_party, Party, RepShare};

/// Leaves of the carry tree: bits 0..=62.
const LEAF_BITS: usize = 63;
/// First-level pairs `(62, 61), (60, 59), .., (2, 1)`; bit 0 is a node of its own.
const PAIRS: usize = 31;
/// First-level nodes.
const NODES: usize = PAIRS + 1;
/// Party 0's masked planes: 63 bits and 31 pair products.
const INPUT_PLANES: usize = LEAF_BITS + PAIRS;

/// The bits `(high, low)` of first-level pair `j`.
fn pair_bits(j: usize) -> (usize, usize) {
    (62 - 2 * j, 61 - 2 * j)
}

fn and(a: &[u64], b: &[u64]) -> Vec<u64> {
    bits::and(a, b)
}

fn plane(planes: &[u64], i: usize, w: usize) -> &[u64] {
    &planes[i * w..(i + 1) * w]
}

/// Plane (node) `i` of replicated bits, `w` words per plane.
fn plane_bits(x: &RepBits, i: usize, w: usize) -> RepBits {
    RepBits {
        own: plane(&x.own, i, w).to_vec(),
        next: plane(&x.next, i, w).to_vec(),
    }
}

impl<N: Net> Party<N> {
    /// Sends `words` to `to` as little-endian bytes.
    fn send_words(&mut self, to: usize, words: &[u64]) -> Result<()> {
        self.send(to, crate::ring::to_bytes(words))
    }

    /// `x & y` on replicated bits (one round, `x.own.len()` words sent).
    pub(super) fn and_bits(&mut self, x: &RepBits, y: &RepBits) -> Result<RepBits> {
        let mut z: Vec<u64> = (0..x.own.len())
            .map(|k| (x.own[k] & (y.own[k] ^ y.next[k])) ^ (x.next[k] & y.own[k]))
            .collect();
        if self.log.is_some() {
            return self.and_bits_logged(x, y, z);
        }
        let alpha = self.keys.zero_bits(z.len());
        bits::xor_assign(&mut z, &alpha);
        self.send_words(prev_party(self.me), &z)?;
        let next = self.recv_words(next_party(self.me), z.len())?;
        Ok(RepBits { own: z, next })
    }

    /// The sign test (see the module doc): `[z >= 0] * payload` for every payload.
    pub fn sign_select(&mut self, job: SignSelect<'_, RepShare>) -> Result<Vec<RepShare>> {
        self.refuse_unproven("sign test")?;
        let z = job.z;
        let n = z.len();
        for extra in &job.extras {
            ensure_shape(extra.len() == n, "sign_select", || {
                format!("payload {} vs value {n}", extra.len())
            })?;
        }
        let layout = bits::Layout::new(n);
        let w = layout.words;
        let mut trunc = job.truncate.then(|| self.trunc_start(z));

        // Step 1: party 0's masked monomials (and its truncation component) to party 2.
        let mut y_top = Vec::new();
        let mut x_planes = Vec::new();
        let monomials: Option<Vec<u64>> = match self.me {
            0 => {
                let y: Vec<u64> = z
                    .own
                    .iter()
                    .zip(&z.next)
                    .map(|(&a, &b)| a.wrapping_add(b))
                    .collect();
                let planes = bits::to_planes(&y);
                y_top = plane(&planes, 63, w).to_vec();
                let mut m = planes[..LEAF_BITS * w].to_vec();
                for j in 0..PAIRS {
                    let (h, l) = pair_bits(j);
                    m.extend(and(plane(&planes, h, w), plane(&planes, l, w)));
                }
                let mask = self.keys.component(1, INPUT_PLANES * w);
                bits::xor_assign(&mut m, &mask);
                let mut message = m;
                if let Some(t) = trunc.as_mut() {
                    message.extend(t.to_send.take().unwrap_or_default());
                }
                self.send_words(2, &message)?;
                None
            }
            1 => {
                x_planes = bits::to_planes(&z.next);
                Some(self.keys.component(1, INPUT_PLANES * w))
            }
            _ => {
                x_planes = bits::to_planes(&z.own);
                let extra = trunc.as_ref().map_or(0, |t| t.message_words());
                let mut got = self.recv_words(0, INPUT_PLANES * w + extra)?;
                if let Some(t) = trunc.as_mut() {
                    let message = got.split_off(INPUT_PLANES * w);
                    self.trunc_receive(t, message);
                }
                Some(got)
            }
        };

        // Step 2: the first level from the bilinear forms, reshared into replicated bits.
        let summand = monomials.map(|m| self.first_level(&m, &x_planes, w));
        let cross = trunc.as_mut().and_then(|t| t.pair_summand.take());
        let (level, cross) = self.reshare_pair_both(
            summand,
            2 * NODES * w,
            cross,
            if job.truncate { n } else { 0 },
        )?;
        let truncated = trunc.map(|t| Self::trunc_finish(t, cross));
        let (mut g, mut p) = (
            RepBits {
                own: level.own[..NODES * w].to_vec(),
                next: level.next[..NODES * w].to_vec(),
            },
            RepBits {
                own: level.own[NODES * w..].to_vec(),
                next: level.next[NODES * w..].to_vec(),
            },
        );

        // Step 3: the tree, G = G_hi ^ P_hi & G_lo, P = P_hi & P_lo.
        let mut nodes = NODES;
        while nodes > 2 {
            let pairs = nodes / 2;
            let pick = |x: &RepBits, odd: usize, count: usize| -> RepBits {
                let take = |c: &[u64]| -> Vec<u64> {
                    (0..count)
                        .flat_map(|j| plane(c, 2 * j + odd, w).iter().copied())
                        .collect()
                };
                RepBits {
                    own: take(&x.own),
                    next: take(&x.next),
                }
            };
            let p_hi = pick(&p, 0, pairs);
            let (left, right) = (
                concat_bits(&[p_hi.clone(), p_hi]),
                concat_bits(&[pick(&g, 1, pairs), pick(&p, 1, pairs)]),
            );
            let product = self.and_bits(&left, &right)?;
            let g_hi = pick(&g, 0, pairs);
            let split = pairs * w;
            g = RepBits {
                own: bits::xor(&g_hi.own, &product.own[..split]),
                next: bits::xor(&g_hi.next, &product.next[..split]),
            };
            p = RepBits {
                own: product.own[split..].to_vec(),
                next: product.next[split..].to_vec(),
            };
            nodes = pairs;
        }

        // The last level, G = G_0 ^ P_0 & G_1, without a reshare: party i's summand z_i of the AND stays
        // with it, and parties 1 and 2 swap theirs. Then party 0 knows d = !(c_0 ^ c_1 ^ y_63) with
        // c_i = G_0's component i ^ z_0, and the pair knows e = G_0's component 2 ^ z_1 ^ z_2 ^ x_63, and
        // d ^ e = [z >= 0]. Party 0 sends nothing here and its payload message leaves in the same hop.
        let valid: Vec<u64> = (0..w).map(|i| layout.valid(i)).collect();
        let (g_hi, g_lo, p_hi) = (
            plane_bits(&g, 0, w),
            plane_bits(&g, 1, w),
            plane_bits(&p, 0, w),
        );
        let mut last: Vec<u64> = (0..w)
            .map(|k| (p_hi.own[k] & (g_lo.own[k] ^ g_lo.next[k])) ^ (p_hi.next[k] & g_lo.own[k]))
            .collect();
        let alpha = self.keys.zero_bits(w);
        bits::xor_assign(&mut last, &alpha);
        let own_part: Vec<u64> = match self.me {
            0 => (0..w)
                .map(|i| !(g_hi.own[i] ^ g_hi.next[i] ^ y_top[i] ^ last[i]) & valid[i])
                .collect(),
            me => {
                let other = 3 - me;
                self.send_words(other, &last)?;
                let theirs = self.recv_words(other, w)?;
                let c2 = if me == 1 { &g_hi.next } else { &g_hi.own };
                let x_top = plane(&x_planes, 63, w);
                (0..w)
                    .map(|i| (c2[i] ^ x_top[i] ^ last[i] ^ theirs[i]) & valid[i])
                    .collect()
            }
        };

        // Step 4: the payloads.
        let mut payloads: Vec<RepShare> = Vec::with_capacity(1 + job.extras.len());
        if job.select_self {
            payloads.push(match truncated {
                Some(t) => t,
                None => z.clone(),
            });
        }
        payloads.extend(job.extras);
        let k = payloads.len();
        if k == 0 {
            return Ok(Vec::new());
        }
        let summand = match self.me {
            0 => {
                let d: Vec<u64> = (0..n).map(|i| u64::from(bits::get(&own_part, i))).collect();
                let mut message = d.clone();
                for v in &payloads {
                    let pv: Vec<u64> = v
                        .own
                        .iter()
                        .zip(&v.next)
                        .map(|(&a, &b)| a.wrapping_add(b))
                        .collect();
                    let dp: Vec<u64> = pv
                        .iter()
                        .zip(&d)
                        .map(|(&a, &b)| a.wrapping_mul(b))
                        .collect();
                    message.extend(pv);
                    message.extend(dp);
                }
                let mask = self.keys.component(1, message.len());
                crate::ring::sub_assign(&mut message, &mask);
                self.send_words(2, &message)?;
                None
            }
            me => {
                let e: Vec<u64> = (0..n).map(|i| u64::from(bits::get(&own_part, i))).collect();
                let total = (1 + 2 * k) * n;
                let masked = if me == 1 {
                    self.keys.component(1, total)
                } else {
                    self.recv_words(0, total)?
                };
                let md = &masked[..n];
                let mut f = Vec::with_capacity(k * n);
                for (j, v) in payloads.iter().enumerate() {
                    let q = if me == 1 { &v.next } else { &v.own };
                    let mp = &masked[(1 + 2 * j) * n..(2 + 2 * j) * n];
                    let mdp = &masked[(2 + 2 * j) * n..(3 + 2 * j) * n];
                    for i in 0..n {
                        let (e, q) = (e[i], q[i]);
                        // (d p)(1 - 2e) + d (q - 2 e q) + p e [+ e q at party 2].
                        let sign = 1u64.wrapping_sub(e.wrapping_mul(2));
                        let mut t = mdp[i]
                            .wrapping_mul(sign)
                            .wrapping_add(md[i].wrapping_mul(q.wrapping_mul(sign)))
                            .wrapping_add(mp[i].wrapping_mul(e));
                        if me == 2 {
                            t = t.wrapping_add(e.wrapping_mul(q));
                        }
                        f.push(t);
                    }
                }
                Some(f)
            }
        };
        let selected = self.reshare_pair(summand, k * n)?;
        Ok((0..k)
            .map(|j| selected.map(|c| c[j * n..(j + 1) * n].to_vec()))
            .collect())
    }

    /// Party 1's or party 2's XOR summand of the first level's `[G | P]` (32 nodes each), from party 0's
    /// monomials `m` (masks at party 1, masked values at party 2) and the pair's planes `x`.
    fn first_level(&self, m: &[u64], x: &[u64], w: usize) -> Vec<u64> {
        let pair_only = self.me == 2;
        let mut g = Vec::with_capacity(NODES * w);
        let mut p = Vec::with_capacity(NODES * w);
        for j in 0..PAIRS {
            let (h, l) = pair_bits(j);
            let (mh, ml, mhl) = (plane(m, h, w), plane(m, l, w), plane(m, LEAF_BITS + j, w));
            let (xh, xl) = (plane(x, h, w), plane(x, l, w));
            for i in 0..w {
                let xhl = xh[i] & xl[i];
                g.push((mh[i] & xh[i]) ^ (mhl[i] & xl[i]) ^ (ml[i] & xhl));
                let mut pp = (mh[i] & xl[i]) ^ (ml[i] & xh[i]) ^ mhl[i];
                if pair_only {
                    pp ^= xhl;
                }
                p.push(pp);
            }
        }
        let (m0, x0) = (plane(m, 0, w), plane(x, 0, w));
        for i in 0..w {
            g.push(m0[i] & x0[i]);
            p.push(if pair_only { m0[i] ^ x0[i] } else { m0[i] });
        }
        g.extend(p);
        g
    }
}

fn concat_bits(parts: &[RepBits]) -> RepBits {
    RepBits {
        own: parts.iter().flat_map(|p| p.own.iter().copied()).collect(),
        next: parts.iter().flat_map(|p| p.next.iter().copied()).collect(),
    }
}
