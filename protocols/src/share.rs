//! Additive n-party sharing over Z_2^64, and share tensors.
//!
//! Invariant: a secret `x` is held as `x = sum_i x_i mod 2^64`; any `n - 1` shares are uniformly random and
//! independent of `x`.

use rand::RngCore;

use crate::error::{ensure_shape, ProtocolError, Result};

/// One party's share of a tensor: a shape and its elements in row-major order.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareTensor {
    shape: Vec<usize>,
    data: Vec<u64>,
}

impl std::fmt::Debug for ShareTensor {
    /// Shows the shape only: a share's values are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShareTensor{:?}", self.shape)
    }
}

impl ShareTensor {
    /// A share with `shape`; fails unless the element count matches.
    pub fn new(shape: Vec<usize>, data: Vec<u64>) -> Result<Self> {
        let count: usize = shape.iter().product();
        ensure_shape(count == data.len(), "ShareTensor::new", || {
            format!(
                "shape {shape:?} holds {count} elements, data has {}",
                data.len()
            )
        })?;
        Ok(Self { shape, data })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements of this share.
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    /// Consumes the share into its elements.
    pub fn into_data(self) -> Vec<u64> {
        self.data
    }

    /// Same elements, another shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self> {
        Self::new(shape, self.data)
    }
}

/// Splits `secret` into `n` additive shares using `rng`.
pub fn share(secret: &[u64], n: usize, rng: &mut impl RngCore) -> Result<Vec<Vec<u64>>> {
    if n < 2 {
        return Err(ProtocolError::Committee(format!(
            "sharing needs at least 2 parties, got {n}"
        )));
    }
    let mut shares: Vec<Vec<u64>> = Vec::with_capacity(n);
    let mut last = secret.to_vec();
    for _ in 0..n - 1 {
        let s: Vec<u64> = (0..secret.len()).map(|_| rng.next_u64()).collect();
        crate::ring::sub_assign(&mut last, &s);
        shares.push(s);
    }
    shares.push(last);
    Ok(shares)
}

/// Adds up shares; fails if they differ in length or there are fewer than two.
pub fn reconstruct(shares: &[Vec<u64>]) -> Result<Vec<u64>> {
    let first = shares
        .first()
        .ok_or_else(|| ProtocolError::Committee("nothing to reconstruct".into()))?;
    let mut out = first.clone();
    for s in &shares[1..] {
        ensure_shape(s.len() == out.len(), "reconstruct", || {
            format!("shares of lengths {} and {}", out.len(), s.len())
        })?;
        crate::ring::add_assign(&mut out, s);
    }
    Ok(out)
}
