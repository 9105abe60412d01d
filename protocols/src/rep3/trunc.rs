//! Truncation by `2^f` with the wrap corrected, for any `|z| < 2^62` (the range `semi2k` allows too).
//!
//! With `z' = z + 2^62` in `[0, 2^63)`, write `z' = y + x mod 2^64` with `y = z_0 + z_1 + 2^62` (party 0
//! knows it) and `x = z_2` (parties 1 and 2 know it): a two-out-of-two sharing between party 0 and the pair,
//! as in ABY3's truncation (Mohassel and Rindal, CCS 2018, section 5.1.1). Truncating each part locally
//! (SecureML) fails when `y + x` wraps past `2^64`; here the wrap is computed instead. Because `z' < 2^63`,
//! the sum wraps exactly when `msb(y)` or `msb(x)` is set: `wrap = a + b - a b` with `a = msb(y)` (party 0's)
//! and `b = msb(x)` (the pair's). So, with `K = 2^(64 - f)`,
//!
//! `trunc(z) = [(y >> f) - K a - 2^(62 - f)] + [(x >> f) - K b] + K a b`,
//!
//! party 0's part, the pair's part, and one cross term. Party 0 sends party 2 its part and `a`, each masked by
//! `F(k_1)` (parties 0 and 1 draw it, party 2 lacks it); party 1 computes `K r_a b` from the mask, party 2
//! `K (a - r_a) b` from the masked bit; they reshare the two summands ([`Party::reshare_pair`]). Two hops
//! (party 0 -> party 2 -> party 1, with party 1 -> party 0 alongside); party 0 sends 2 words per element,
//! parties 1 and 2 one each.
//!
//! Error: the low bits' carry `[(y mod 2^f) + (x mod 2^f) >= 2^f]` is dropped, so the result is
//! `floor(z / 2^f)` or one less, never anything else, for every `|z| < 2^62` (no probabilistic failure).

use crate::error::Result;
use crate::net::Net;

use super::{Party, RepShare};

/// `2^62`, the offset that makes `z + 2^62` non-negative.
const OFFSET: u64 = 1 << 62;

/// A truncation between its local start and the pair's reshare (see the module doc).
pub(crate) struct TruncJob {
    n: usize,
    /// Party 0: its part and `a`, masked, for party 2.
    pub(crate) to_send: Option<Vec<u64>>,
    /// Party 1's or party 2's summand of the cross term (party 2's once party 0's message is in).
    pub(crate) pair_summand: Option<Vec<u64>>,
    /// What this party adds to its components after the reshare.
    add_own: Vec<u64>,
    add_next: Vec<u64>,
    /// At the pair: `K b` per element.
    k_b: Vec<u64>,
}

impl TruncJob {
    /// Words party 0 sends party 2.
    pub(crate) fn message_words(&self) -> usize {
        2 * self.n
    }
}

impl<N: Net> Party<N> {
    /// The local part of a truncation of `z` (see the module doc).
    pub(crate) fn trunc_start(&mut self, z: &RepShare) -> TruncJob {
        let part = match self.me {
            0 => z
                .own
                .iter()
                .zip(&z.next)
                .map(|(&a, &b)| a.wrapping_add(b))
                .collect(),
            1 => z.next.clone(),
            _ => z.own.clone(),
        };
        self.trunc_start_split(part)
    }

    /// [`Self::trunc_start`] from the two-out-of-two split itself: `part` is `y = z_0 + z_1` at party 0 and
    /// `x = z_2` at parties 1 and 2 (any split with `z = y + x` where the pair agrees on `x` will do).
    pub(crate) fn trunc_start_split(&mut self, part: Vec<u64>) -> TruncJob {
        let f = self.fixed_point.frac_bits();
        let k = 1u64 << (64 - f);
        let n = part.len();
        if self.me == 0 {
            let r1 = self.keys.component(1, n);
            let r_a = self.keys.component(1, n);
            let mut message = Vec::with_capacity(2 * n);
            let mut own_part = Vec::with_capacity(n);
            let mut masked_a = Vec::with_capacity(n);
            for i in 0..n {
                let y = part[i].wrapping_add(OFFSET);
                let a = y >> 63;
                let p = (y >> f)
                    .wrapping_sub(k.wrapping_mul(a))
                    .wrapping_sub(OFFSET >> f)
                    .wrapping_sub(r1[i]);
                own_part.push(p);
                masked_a.push(a.wrapping_sub(r_a[i]));
            }
            message.extend_from_slice(&own_part);
            message.extend(masked_a);
            return TruncJob {
                n,
                to_send: Some(message),
                pair_summand: None,
                add_own: own_part,
                add_next: r1,
                k_b: Vec::new(),
            };
        }
        let x = &part;
        let k_b: Vec<u64> = x.iter().map(|&w| k.wrapping_mul(w >> 63)).collect();
        let pair_part: Vec<u64> = x
            .iter()
            .zip(&k_b)
            .map(|(&w, &kb)| (w >> f).wrapping_sub(kb))
            .collect();
        if self.me == 1 {
            let r1 = self.keys.component(1, n);
            let r_a = self.keys.component(1, n);
            let f1 = r_a
                .iter()
                .zip(&k_b)
                .map(|(&r, &kb)| r.wrapping_mul(kb))
                .collect();
            TruncJob {
                n,
                to_send: None,
                pair_summand: Some(f1),
                add_own: r1,
                add_next: pair_part,
                k_b,
            }
        } else {
            TruncJob {
                n,
                to_send: None,
                pair_summand: None,
                add_own: pair_part,
                add_next: vec![0; n],
                k_b,
            }
        }
    }

    /// Party 2: takes party 0's message (`2n` words) into the job.
    pub(crate) fn trunc_receive(&self, job: &mut TruncJob, mut message: Vec<u64>) {
        let masked_a = message.split_off(job.n);
        job.pair_summand = Some(
            masked_a
                .iter()
                .zip(&job.k_b)
                .map(|(&m, &kb)| m.wrapping_mul(kb))
                .collect(),
        );
        job.add_next = message;
    }

    /// The result from the reshared cross term.
    pub(crate) fn trunc_finish(job: TruncJob, mut cross: RepShare) -> RepShare {
        crate::ring::add_assign(&mut cross.own, &job.add_own);
        crate::ring::add_assign(&mut cross.next, &job.add_next);
        cross
    }

    /// Divides a shared value with `2f` fractional bits by `2^f` (two hops; see the module doc). Requires
    /// `|z| < 2^62`.
    pub fn trunc(&mut self, z: &RepShare) -> Result<RepShare> {
        self.refuse_unproven("truncation")?;
        let job = self.trunc_start(z);
        self.trunc_run(job)
    }

    /// `trunc(x · W + bias + addend)` for public `W` (`[m, k, n]`), public `bias` and a shared `addend`
    /// (both `m x n`, at the product's scale): the product is taken on the two-out-of-two split directly,
    /// `(x_0 + x_1) W` at party 0 and `x_2 W` at the pair, one local product per party instead of one per
    /// component, and truncated from there (the same two hops and bytes as [`Self::trunc`]).
    pub fn linear_trunc(
        &mut self,
        [m, k, n]: [usize; 3],
        x: &RepShare,
        w: &[u64],
        bias: &[u64],
        addend: Option<&RepShare>,
    ) -> Result<RepShare> {
        self.refuse_unproven("linear truncation")?;
        crate::error::ensure_shape(
            x.len() == m * k
                && w.len() == k * n
                && bias.len() == m * n
                && addend.is_none_or(|a| a.len() == m * n),
            "linear_trunc",
            || {
                format!(
                    "{} and {} elements for {m}x{k} by {k}x{n}",
                    x.len(),
                    w.len()
                )
            },
        )?;
        let (input, add): (Vec<u64>, Option<Vec<u64>>) = match self.me {
            0 => {
                let sum = |s: &RepShare| -> Vec<u64> {
                    s.own
                        .iter()
                        .zip(&s.next)
                        .map(|(&a, &b)| a.wrapping_add(b))
                        .collect()
                };
                (sum(x), addend.map(sum))
            }
            1 => (x.next.clone(), addend.map(|a| a.next.clone())),
            _ => (x.own.clone(), addend.map(|a| a.own.clone())),
        };
        let mut part = vec![0u64; m * n];
        self.gemm.gemm(m, k, n, &input, w, &mut part);
        if let Some(a) = add {
            crate::ring::add_assign(&mut part, &a);
        }
        if self.me == 0 {
            crate::ring::add_assign(&mut part, bias);
        }
        let job = self.trunc_start_split(part);
        self.trunc_run(job)
    }

    /// The communication and finish of a started truncation.
    fn trunc_run(&mut self, mut job: TruncJob) -> Result<RepShare> {
        let len = job.n;
        match self.me {
            0 => {
                let message = job.to_send.take().unwrap_or_default();
                self.send(2, crate::ring::to_bytes(&message))?;
            }
            2 => {
                let message = self.recv_words(0, job.message_words())?;
                self.trunc_receive(&mut job, message);
            }
            _ => {}
        }
        let cross = self.reshare_pair(job.pair_summand.take(), len)?;
        Ok(Self::trunc_finish(job, cross))
    }
}
