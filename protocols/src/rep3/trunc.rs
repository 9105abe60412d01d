//! Truncation by `2^f` (ABY3, Mohassel and Rindal, CCS 2018, section 5.1.1, "Π_trunc1"): with
//! `y = x_0 + x_1` (party 0 holds both) and `x_2` (parties 1 and 2 hold it), `x = y + x_2` is a two-out-of-two
//! sharing between party 0 and the pair. Each side truncates its part locally (SecureML, Mohassel and Zhang,
//! S&P 2017): `y >> f` and `-((-x_2) >> f)`. Party 0 then reshares its part: component 1 is drawn from `k_1`
//! (parties 0 and 1), component 0 is `(y >> f) - F(k_1)`, which party 0 sends to party 2 (uniform to it:
//! it misses `k_1`); component 2 is the pair's part. One round; party 0 sends one element per value, the
//! others nothing.
//!
//! Error: for `|x| < 2^l` the result is `floor(x / 2^f)` or one more, except with probability at most
//! `2^(l + 1 - 64)` over the sharing's randomness, when the two parts wrap differently and the result is off
//! by about `2^(64 - f)` (SecureML's bound). With `f = 16` and values below `2^15` in magnitude (`l = 47`)
//! that is `2^-16` per element... see the tests for the bound checked; values in our models stay far below:
//! products of activations and weights of magnitude below 2^8 have `l <= 40` (`2^-23`).

use crate::error::Result;
use crate::net::Net;

use super::{Party, RepShare};

/// Party 0's part of a truncation before communication.
pub(crate) struct TruncStart {
    /// This party's share, except that party 2's `next` (component 0) arrives from party 0.
    pub(crate) share: RepShare,
    /// Party 0: component 0, for party 2.
    pub(crate) to_send: Option<Vec<u64>>,
}

impl<N: Net> Party<N> {
    /// The local part of a truncation of `z` (see the module doc).
    pub(crate) fn trunc_start(&mut self, z: &RepShare) -> TruncStart {
        let f = self.fixed_point.frac_bits();
        let n = z.len();
        let pair_part = |x2: &[u64]| -> Vec<u64> {
            x2.iter()
                .map(|&w| (w.wrapping_neg() >> f).wrapping_neg())
                .collect()
        };
        match self.me {
            0 => {
                let c1 = self.keys.component(1, n);
                let c0: Vec<u64> = z
                    .own
                    .iter()
                    .zip(&z.next)
                    .zip(&c1)
                    .map(|((&a, &b), &r)| (a.wrapping_add(b) >> f).wrapping_sub(r))
                    .collect();
                TruncStart {
                    share: RepShare {
                        own: c0.clone(),
                        next: c1,
                    },
                    to_send: Some(c0),
                }
            }
            1 => TruncStart {
                share: RepShare {
                    own: self.keys.component(1, n),
                    next: pair_part(&z.next),
                },
                to_send: None,
            },
            _ => TruncStart {
                share: RepShare {
                    own: pair_part(&z.own),
                    next: vec![0; n],
                },
                to_send: None,
            },
        }
    }

    /// Divides a shared value with `2f` fractional bits by `2^f` (one round; see the module doc for the
    /// error).
    pub fn trunc(&mut self, z: &RepShare) -> Result<RepShare> {
        let mut t = self.trunc_start(z);
        match self.me {
            0 => {
                let c0 = t.to_send.take().unwrap_or_default();
                self.send(2, crate::ring::to_bytes(&c0))?;
            }
            2 => t.share.next = self.recv_words(0, z.len())?,
            _ => {}
        }
        Ok(t.share)
    }
}
