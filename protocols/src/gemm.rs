//! The local matrix-product interface the protocols call.
//!
//! Protocols are pure logic: they never pick a kernel. Whoever builds a party (the engine, a test) injects an
//! implementation of [`Gemm`]; [`NaiveGemm`] is the reference one, slow and obviously correct.

/// A wrapping matrix product over the ring Z_2^64.
///
/// Invariant every implementation keeps: `c = a · b mod 2^64` exactly, bit for bit equal to [`NaiveGemm`],
/// for row-major `a` (m×k), `b` (k×n) and `c` (m×n). Callers guarantee the slice lengths.
pub trait Gemm: Send + Sync {
    /// Overwrites `c` with `a · b` (wrapping).
    fn gemm(&self, m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]);
}

/// Reference i-k-j triple loop. Correct by inspection; used in unit tests of the protocols.
#[derive(Debug, Default, Clone, Copy)]
pub struct NaiveGemm;

impl Gemm for NaiveGemm {
    fn gemm(&self, m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
        debug_assert_eq!(a.len(), m * k);
        debug_assert_eq!(b.len(), k * n);
        debug_assert_eq!(c.len(), m * n);
        c.fill(0);
        for i in 0..m {
            let row = &mut c[i * n..(i + 1) * n];
            for p in 0..k {
                let x = a[i * k + p];
                if x == 0 {
                    continue;
                }
                let brow = &b[p * n..(p + 1) * n];
                for (out, &y) in row.iter_mut().zip(brow) {
                    *out = out.wrapping_add(x.wrapping_mul(y));
                }
            }
        }
    }
}
