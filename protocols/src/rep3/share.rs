//! Replicated 2-out-of-3 shares and their local operations.
//!
//! A value `x` of Z_2^64 is split into three components `x = x_0 + x_1 + x_2`; party `i` holds
//! `(x_i, x_{i+1})` (indices modulo 3), so any two parties hold all three components and any one party holds
//! two uniformly random-looking words. Bits are shared the same way with XOR. Every linear operation with
//! public coefficients is local: it applies to both components.

use crate::error::Result;
use crate::gemm::Gemm;
use crate::lowering::Lowering;

/// A party's replicated share of a vector of ring elements.
///
/// Invariant: `own.len() == next.len()`; at party `i`, `own` is component `i` and `next` component `i + 1`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RepShare {
    pub(crate) own: Vec<u64>,
    pub(crate) next: Vec<u64>,
}

impl std::fmt::Debug for RepShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepShare[{}]", self.own.len())
    }
}

/// A party's replicated XOR share of packed bits (64 per word), laid out like [`RepShare`].
///
/// Invariant: `own.len() == next.len()`.
#[derive(Clone, Default)]
pub(crate) struct RepBits {
    pub(crate) own: Vec<u64>,
    pub(crate) next: Vec<u64>,
}

fn zip_map(a: &[u64], b: &[u64], f: impl Fn(u64, u64) -> u64) -> Vec<u64> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

impl RepShare {
    /// A share from its two components (own, next); `None` if their lengths differ.
    pub fn from_components(own: Vec<u64>, next: Vec<u64>) -> Option<Self> {
        (own.len() == next.len()).then_some(Self { own, next })
    }

    /// The components (own, next).
    pub fn components(&self) -> (&[u64], &[u64]) {
        (&self.own, &self.next)
    }

    /// Splits `values` into the three parties' shares (the client's or model owner's side), with the
    /// components drawn from `random`.
    pub fn split(values: &[u64], mut random: impl FnMut() -> u64) -> [RepShare; 3] {
        let c0: Vec<u64> = values.iter().map(|_| random()).collect();
        let c1: Vec<u64> = values.iter().map(|_| random()).collect();
        let c2: Vec<u64> = values
            .iter()
            .zip(c0.iter().zip(&c1))
            .map(|(&v, (&a, &b))| v.wrapping_sub(a).wrapping_sub(b))
            .collect();
        let comps = [c0, c1, c2];
        std::array::from_fn(|i| RepShare {
            own: comps[i].clone(),
            next: comps[(i + 1) % 3].clone(),
        })
    }

    /// The value from the three parties' shares (component `i` read from party `i`'s `own`); `None` if the
    /// shares are inconsistent (a component held by two parties differs) or of different lengths.
    pub fn reconstruct(shares: &[RepShare; 3]) -> Option<Vec<u64>> {
        let n = shares[0].own.len();
        for i in 0..3 {
            let s = &shares[i];
            if s.own.len() != n || s.next.len() != n || s.next != shares[(i + 1) % 3].own {
                return None;
            }
        }
        Some(
            (0..n)
                .map(|k| {
                    shares[0].own[k]
                        .wrapping_add(shares[1].own[k])
                        .wrapping_add(shares[2].own[k])
                })
                .collect(),
        )
    }

    pub(crate) fn len(&self) -> usize {
        self.own.len()
    }

    pub(crate) fn add(&self, y: &Self) -> Self {
        Self {
            own: zip_map(&self.own, &y.own, u64::wrapping_add),
            next: zip_map(&self.next, &y.next, u64::wrapping_add),
        }
    }

    pub(crate) fn sub(&self, y: &Self) -> Self {
        Self {
            own: zip_map(&self.own, &y.own, u64::wrapping_sub),
            next: zip_map(&self.next, &y.next, u64::wrapping_sub),
        }
    }

    pub(crate) fn add_assign(&mut self, y: &Self) {
        crate::ring::add_assign(&mut self.own, &y.own);
        crate::ring::add_assign(&mut self.next, &y.next);
    }

    pub(crate) fn mul_public(&self, p: &[u64]) -> Self {
        Self {
            own: crate::ring::mul(&self.own, p),
            next: crate::ring::mul(&self.next, p),
        }
    }

    pub(crate) fn map(&self, f: impl Fn(&[u64]) -> Vec<u64>) -> Self {
        Self {
            own: f(&self.own),
            next: f(&self.next),
        }
    }

    pub(crate) fn try_map(&self, f: impl Fn(&[u64]) -> Result<Vec<u64>>) -> Result<Self> {
        Ok(Self {
            own: f(&self.own)?,
            next: f(&self.next)?,
        })
    }

    pub(crate) fn concat(parts: &[Self]) -> Self {
        Self {
            own: parts.iter().flat_map(|p| p.own.iter().copied()).collect(),
            next: parts.iter().flat_map(|p| p.next.iter().copied()).collect(),
        }
    }

    /// `x · f` for public `f` (k x n).
    pub(crate) fn gemm_right(&self, gemm: &dyn Gemm, [m, k, n]: [usize; 3], f: &[u64]) -> Self {
        self.map(|c| {
            let mut out = vec![0u64; m * n];
            gemm.gemm(m, k, n, c, f, &mut out);
            out
        })
    }

    pub(crate) fn lower(&self, lowering: &Lowering, batch: usize) -> Result<Self> {
        self.try_map(|c| lowering.lower(c, batch))
    }
}
