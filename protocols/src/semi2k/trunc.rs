//! Probabilistic-free truncation with one opening (DESIGN.md, "known-MSB" method).
//!
//! For a shared `z` with `|z| < 2^62`, let `z' = z + 2^62`, so `z'` lies in `[0, 2^63)` and its MSB is 0. With a
//! dealt uniform mask `r`, open `c = z' + r mod 2^64`. Then `z' = c - r + 2^64 * w` where the wrap bit is
//! `w = msb(r) * (1 - msb(c))` (if `msb(r) = 0` nothing wraps; if `msb(r) = 1` the sum wraps exactly when
//! `msb(c) = 0`), which is linear in the dealt shares of `msb(r)` because `c` is public. Hence
//!
//! `z' >> f = (c >> f) - (r >> f) + 2^(64-f) * w - borrow`, with `borrow = [c mod 2^f < r mod 2^f]` in {0, 1}
//!
//! from the dropped low bits, which the protocol ignores. The result is `(z' >> f) - 2^(62-f)`: it equals
//! `floor(z / 2^f)` or exceeds it by one unit in the last place, never more, never less. `c` is uniformly distributed
//! whatever `z` is, so the opening reveals nothing.

use crate::error::Result;
use crate::material::TruncMaterial;
use crate::net::Net;

use super::{open::Round, Party, SIGN_OFFSET};

impl<N: Net> Party<N> {
    /// Shares of `z + 2^62` (party 0 adds the offset).
    pub(crate) fn offset_for_sign(&self, z: &[u64]) -> Vec<u64> {
        let mut shifted = z.to_vec();
        if self.holds_constants() {
            for x in &mut shifted {
                *x = x.wrapping_add(SIGN_OFFSET);
            }
        }
        shifted
    }

    /// Shares of `trunc(z)` from the opened `c = z + 2^62 + r` and the dealt truncation material.
    pub(crate) fn finish_trunc(&self, opened: &[u64], mask: &TruncMaterial) -> Vec<u64> {
        let f = self.fixed_point.frac_bits();
        let constants = self.holds_constants();
        opened
            .iter()
            .zip(mask.r_shift.iter().zip(&mask.r_msb))
            .map(|(&c, (&r_shift, &r_msb))| {
                let mut t = 0u64.wrapping_sub(r_shift);
                if c >> 63 == 0 {
                    t = t.wrapping_add(r_msb << (64 - f));
                }
                if constants {
                    t = t.wrapping_add(c >> f).wrapping_sub(SIGN_OFFSET >> f);
                }
                t
            })
            .collect()
    }

    /// Divides a shared fixed-point value carrying `2f` fractional bits by `2^f` (one round, at most 1 ulp off).
    /// Requires `|z| < 2^62`.
    pub fn trunc(&mut self, z: &[u64]) -> Result<Vec<u64>> {
        let f = self.fixed_point.frac_bits();
        let mask = self.material.trunc(z.len(), f)?;
        let mut masked = self.offset_for_sign(z);
        crate::ring::add_assign(&mut masked, &mask.r);
        let mut round = Round::default();
        round.words(masked);
        let opened = self.open_round(round)?;
        Ok(self.finish_trunc(&opened[0], &mask))
    }
}
