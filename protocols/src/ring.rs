//! The ring Z_2^64 (wrapping `u64`) and fixed-point encoding of reals into it.
//!
//! A real `x` is encoded as `round(x * 2^f)` in two's complement. Products of two encodings carry `2f`
//! fractional bits until they are truncated. The protocols need every signed value they compare or truncate to
//! lie in `(-2^62, 2^62)`, so a product's integer part must fit in `62 - 2f` bits; [`FixedPoint::new`] refuses
//! an `f` that leaves fewer than [`MIN_PRODUCT_INTEGER_BITS`] of them.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default number of fractional bits.
pub const DEFAULT_FRAC_BITS: u32 = 16;
/// Signed values that the protocols compare or truncate must lie strictly inside `±2^SIGNED_BOUND_BITS`.
pub const SIGNED_BOUND_BITS: u32 = 62;
/// Integer bits a product with `2f` fractional bits must keep below the signed bound.
pub const MIN_PRODUCT_INTEGER_BITS: u32 = 10;

/// Fixed-point encoding problems.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RingError {
    /// `f` is zero or leaves too few integer bits for products.
    #[error(
        "fixed-point f = {frac_bits} is too large for the ring Z_2^64: a product carries 2f fractional bits and must keep \
         {MIN_PRODUCT_INTEGER_BITS} integer bits below 2^{SIGNED_BOUND_BITS}, so f must be in 1..={max}"
    )]
    FracBits {
        /// The rejected `f`.
        frac_bits: u32,
        /// The largest accepted `f`.
        max: u32,
    },
    /// NaN or infinity cannot be encoded.
    #[error("value at index {index} is not finite ({value})")]
    NotFinite {
        /// Position in the input.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The value's encoding would not fit in the signed range the protocols need.
    #[error("value at index {index} ({value}) is outside the encodable range ±{limit}")]
    OutOfRange {
        /// Position in the input.
        index: usize,
        /// The value.
        value: f64,
        /// The largest magnitude accepted.
        limit: f64,
    },
}

/// Fixed-point parameters: `f` fractional bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedPoint {
    frac_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        Self {
            frac_bits: DEFAULT_FRAC_BITS,
        }
    }
}

impl FixedPoint {
    /// The largest `f` accepted.
    pub const MAX_FRAC_BITS: u32 = (SIGNED_BOUND_BITS - MIN_PRODUCT_INTEGER_BITS) / 2;

    /// Checks `f` against the ring (see the module doc).
    pub fn new(frac_bits: u32) -> Result<Self, RingError> {
        if frac_bits == 0 || frac_bits > Self::MAX_FRAC_BITS {
            return Err(RingError::FracBits {
                frac_bits,
                max: Self::MAX_FRAC_BITS,
            });
        }
        Ok(Self { frac_bits })
    }

    /// The number of fractional bits `f`.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// `2^f` as a float.
    pub fn scale(&self) -> f64 {
        (1u64 << self.frac_bits) as f64
    }

    /// Largest magnitude an input may have: its square must still fit a product's integer bits.
    pub fn input_limit(&self) -> f64 {
        2f64.powi(((SIGNED_BOUND_BITS - 2 * self.frac_bits) / 2) as i32)
    }

    /// Encodes one value with `f` fractional bits; `index` only labels errors.
    pub fn encode_one(&self, index: usize, value: f64) -> Result<u64, RingError> {
        if !value.is_finite() {
            return Err(RingError::NotFinite { index, value });
        }
        let limit = self.input_limit();
        if value.abs() >= limit {
            return Err(RingError::OutOfRange {
                index,
                value,
                limit,
            });
        }
        Ok((value * self.scale()).round() as i64 as u64)
    }

    /// Encodes a slice; the first bad value is reported with its index.
    pub fn encode(&self, values: &[f32]) -> Result<Vec<u64>, RingError> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| self.encode_one(i, v as f64))
            .collect()
    }

    /// Encodes with `2f` fractional bits (a bias added to a product before truncation).
    pub fn encode_double(&self, values: &[f32]) -> Result<Vec<u64>, RingError> {
        let scale = self.scale() * self.scale();
        values
            .iter()
            .enumerate()
            .map(|(index, &v)| {
                let value = v as f64;
                self.encode_one(index, value)?;
                Ok((value * scale).round() as i64 as u64)
            })
            .collect()
    }

    /// Decodes a ring element with `f` fractional bits as a signed real.
    pub fn decode_one(&self, x: u64) -> f64 {
        (x as i64) as f64 / self.scale()
    }

    /// Decodes a slice.
    pub fn decode(&self, xs: &[u64]) -> Vec<f32> {
        xs.iter().map(|&x| self.decode_one(x) as f32).collect()
    }
}

/// `a += b` elementwise, wrapping.
pub fn add_assign(a: &mut [u64], b: &[u64]) {
    debug_assert_eq!(a.len(), b.len());
    for (x, &y) in a.iter_mut().zip(b) {
        *x = x.wrapping_add(y);
    }
}

/// `a -= b` elementwise, wrapping.
pub fn sub_assign(a: &mut [u64], b: &[u64]) {
    debug_assert_eq!(a.len(), b.len());
    for (x, &y) in a.iter_mut().zip(b) {
        *x = x.wrapping_sub(y);
    }
}

/// `a - b` elementwise, wrapping.
pub fn sub(a: &[u64], b: &[u64]) -> Vec<u64> {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x.wrapping_sub(y)).collect()
}

/// `a * b` elementwise, wrapping.
pub fn mul(a: &[u64], b: &[u64]) -> Vec<u64> {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x.wrapping_mul(y)).collect()
}

/// Arithmetic shift right of every element read as signed: the plaintext truncation the protocols mirror.
pub fn shr_signed(a: &[u64], bits: u32) -> Vec<u64> {
    a.iter().map(|&x| ((x as i64) >> bits) as u64).collect()
}

/// Little-endian bytes of a slice of ring elements (the wire form of a message).
pub fn to_bytes(xs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xs.len() * 8);
    for x in xs {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Reads ring elements from little-endian bytes; `None` unless the length is a multiple of 8.
pub fn from_bytes(bytes: &[u8]) -> Option<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_within_half_ulp() {
        let fp = FixedPoint::default();
        for v in [-3.25f32, -1e-3, 0.0, 0.5, 1.0, 123.456] {
            let e = fp.encode_one(0, v as f64).expect("encodable");
            assert!(
                (fp.decode_one(e) - v as f64).abs() <= 0.5 / fp.scale() + 1e-6 * v.abs() as f64
            );
        }
    }

    #[test]
    fn rejects_bad_parameters_and_values() {
        assert!(matches!(
            FixedPoint::new(0),
            Err(RingError::FracBits { .. })
        ));
        assert!(matches!(
            FixedPoint::new(40),
            Err(RingError::FracBits { max: 26, .. })
        ));
        let fp = FixedPoint::default();
        assert!(matches!(
            fp.encode(&[1.0, f32::NAN]),
            Err(RingError::NotFinite { index: 1, .. })
        ));
        assert!(matches!(
            fp.encode(&[f32::INFINITY]),
            Err(RingError::NotFinite { index: 0, .. })
        ));
        assert!(matches!(
            fp.encode(&[1e9]),
            Err(RingError::OutOfRange { .. })
        ));
    }
}
