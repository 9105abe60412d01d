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

use crate::domain::Domain;
use crate::error::Result;
use crate::material::TruncMaterial;
use crate::net::Net;

use super::{open::Round, Party, SIGN_OFFSET};

impl<N: Net, D: Domain> Party<N, D> {
    /// Shares of `z + 2^62` (party 0 adds the offset).
    pub(crate) fn offset_for_sign(&self, z: &D::Arith) -> D::Arith {
        let mut shifted = z.clone();
        self.add_public(&mut shifted, &vec![SIGN_OFFSET; D::len(z)]);
        shifted
    }

    /// Shares of `trunc(z)` from the opened `c = z + 2^62 + r` and the dealt truncation material:
    /// `(c >> f) - (2^62 >> f) - (r >> f) + 2^(64-f) * msb(r) * [msb(c) = 0]`.
    pub(crate) fn finish_trunc(&self, opened: &[u64], mask: &TruncMaterial<D::Arith>) -> D::Arith {
        let f = self.fixed_point.frac_bits();
        let wrap: Vec<u64> = opened
            .iter()
            .map(|&c| if c >> 63 == 0 { 1u64 << (64 - f) } else { 0 })
            .collect();
        let mut t = D::sub(&D::mul_public(&mask.r_msb, &wrap), &mask.r_shift);
        let public: Vec<u64> = opened
            .iter()
            .map(|&c| (c >> f).wrapping_sub(SIGN_OFFSET >> f))
            .collect();
        self.add_public(&mut t, &public);
        t
    }

    /// Divides a shared fixed-point value carrying `2f` fractional bits by `2^f` (one round, at most 1 ulp off).
    /// Requires `|z| < 2^62`.
    pub fn trunc(&mut self, z: &D::Arith) -> Result<D::Arith> {
        let f = self.fixed_point.frac_bits();
        let mask = self.material.trunc(D::len(z), f)?;
        let masked = D::add(&self.offset_for_sign(z), &mask.r);
        let mut round = Round::default();
        round.words(masked);
        let opened = self.open_round(round)?;
        Ok(self.finish_trunc(&opened[0], &mask))
    }
}
