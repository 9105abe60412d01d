//! AVX-512 kernels (AVX-512F for the vectors, AVX-512DQ for `vpmullq`, the 64-bit low multiply).
//!
//! Deliberately simple: every multiply-add is `acc = acc + _mm512_mullo_epi64(a, b)`, which is already the
//! wrapping product mod 2^64 in each lane.

use std::arch::x86_64::{
    __m512i, _mm512_add_epi64, _mm512_loadu_si512, _mm512_mullo_epi64, _mm512_set1_epi64,
    _mm512_setzero_si512, _mm512_storeu_si512,
};

use super::driver::Kernel;

/// Rows of the AVX-512 micro-tile.
const TILE_MR: usize = 4;
/// 8-lane vectors per row of the AVX-512 micro-tile (16 columns).
const TILE_NV: usize = 2;
/// 8-lane vectors per column block of the row kernel (32 columns).
const ROW_NV: usize = 4;

/// Token proving the CPU supports AVX-512F and AVX-512DQ.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512 {
    _proof: (),
}

impl Avx512 {
    /// `Some` exactly when the running CPU supports AVX-512F and AVX-512DQ.
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq"))
            .then_some(Self { _proof: () })
    }
}

impl Kernel for Avx512 {
    const MR: usize = TILE_MR;
    const NR: usize = 8 * TILE_NV;
    const WINOGRAD: bool = false;

    fn tile(
        self,
        kc: usize,
        a: &[u64],
        b: &[u64],
        c: &mut [&mut [u64]],
        col: usize,
        accumulate: bool,
    ) {
        assert!(a.len() >= kc * Self::MR && b.len() >= kc * Self::NR && c.len() >= Self::MR);
        let mut out = [std::ptr::null_mut::<u64>(); TILE_MR];
        for (ptr, row) in out.iter_mut().zip(c.iter_mut()) {
            assert!(row.len() >= col + Self::NR);
            *ptr = row[col..].as_mut_ptr();
        }
        // SAFETY: `self` proves AVX-512F/DQ; the asserts give the lengths `tile` reads and writes; the rows are
        // distinct `&mut` slices, so they overlap neither each other nor `a`, `b`.
        unsafe { tile(kc, a.as_ptr(), b.as_ptr(), out, accumulate) }
    }

    fn row(self, x: &[u64], b: &[u64], ldb: usize, c: &mut [u64]) {
        assert!(!x.is_empty() && c.len() <= ldb && b.len() >= (x.len() - 1) * ldb + c.len());
        // SAFETY: `self` proves AVX-512F/DQ; the assert is `row`'s length precondition.
        unsafe { row(x, b, ldb, c) }
    }
}

/// `acc + x·y` per 64-bit lane, wrapping.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn mac(acc: __m512i, x: __m512i, y: __m512i) -> __m512i {
    _mm512_add_epi64(acc, _mm512_mullo_epi64(x, y))
}

/// Micro-tile: `c[r][j] (=|+=) sum_{p < kc} a[p * MR + r] * b[p * NR + j]` for `r < MR`, `j < NR`.
///
/// # Safety
/// Requires AVX-512F and AVX-512DQ. `a` valid for reads of `kc * MR` `u64`, `b` for reads of `kc * NR`; each
/// `c[r]` valid for reads and writes of `NR` `u64`, these ranges disjoint from each other and from `a`, `b`.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn tile(kc: usize, a: *const u64, b: *const u64, c: [*mut u64; TILE_MR], accumulate: bool) {
    let mut acc = [[_mm512_setzero_si512(); TILE_NV]; TILE_MR];
    for p in 0..kc {
        // SAFETY: `p < kc`, so `b[p*NR .. (p+1)*NR]` and `a[p*MR .. (p+1)*MR]` are in bounds.
        unsafe {
            let bp = b.add(p * 8 * TILE_NV);
            let mut bv = [_mm512_setzero_si512(); TILE_NV];
            for (v, bvv) in bv.iter_mut().enumerate() {
                *bvv = _mm512_loadu_si512(bp.add(8 * v).cast());
            }
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi64(*a.add(p * TILE_MR + r) as i64);
                for (s, &y) in acc_row.iter_mut().zip(&bv) {
                    *s = mac(*s, x, y);
                }
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        for (v, &s) in acc_row.iter().enumerate() {
            // SAFETY: `c[r]` is valid for `NR` values and `8 * v + 8 <= NR`.
            unsafe {
                let dst = c[r].add(8 * v);
                let s = if accumulate {
                    _mm512_add_epi64(_mm512_loadu_si512(dst.cast()), s)
                } else {
                    s
                };
                _mm512_storeu_si512(dst.cast(), s);
            }
        }
    }
}

/// `c[j] = sum_{p < k} x[p] * b[p * ldb + j]` for `j < 8 * NV`, wrapping.
///
/// # Safety
/// Requires AVX-512F and AVX-512DQ. `x` valid for reads of `k` `u64`; `b` for reads of `b[p * ldb + j]`,
/// `p < k`, `j < 8 * NV`; `c` for writes of `8 * NV` `u64`, disjoint from `x` and `b`.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn row_block<const NV: usize>(
    k: usize,
    x: *const u64,
    b: *const u64,
    ldb: usize,
    c: *mut u64,
) {
    let mut acc = [_mm512_setzero_si512(); NV];
    for p in 0..k {
        // SAFETY: `p < k`; the caller guarantees these reads are in bounds.
        unsafe {
            let xv = _mm512_set1_epi64(*x.add(p) as i64);
            let bp = b.add(p * ldb);
            for (v, s) in acc.iter_mut().enumerate() {
                *s = mac(*s, xv, _mm512_loadu_si512(bp.add(8 * v).cast()));
            }
        }
    }
    for (v, &s) in acc.iter().enumerate() {
        // SAFETY: `c` is valid for `8 * NV` writes.
        unsafe { _mm512_storeu_si512(c.add(8 * v).cast(), s) }
    }
}

/// Row times matrix, see [`Kernel::row`]: 32-column blocks, then 8-column blocks, then scalar columns.
///
/// # Safety
/// Requires AVX-512F and AVX-512DQ, `x` non-empty, `c.len() <= ldb`,
/// `b.len() >= (x.len() - 1) * ldb + c.len()`.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn row(x: &[u64], b: &[u64], ldb: usize, c: &mut [u64]) {
    let (k, w) = (x.len(), c.len());
    let mut j = 0;
    // SAFETY (both loops): `j + 8·NV <= w`, so column `j + 8·NV - 1` of row `k - 1` lies at
    // `(k - 1) * ldb + j + 8·NV - 1 < b.len()`, and `c[j..j + 8·NV]` is in bounds.
    while j + 8 * ROW_NV <= w {
        unsafe {
            row_block::<ROW_NV>(k, x.as_ptr(), b.as_ptr().add(j), ldb, c.as_mut_ptr().add(j))
        };
        j += 8 * ROW_NV;
    }
    while j + 8 <= w {
        unsafe { row_block::<1>(k, x.as_ptr(), b.as_ptr().add(j), ldb, c.as_mut_ptr().add(j)) };
        j += 8;
    }
    for (jj, out) in c.iter_mut().enumerate().skip(j) {
        *out = x.iter().enumerate().fold(0u64, |s, (p, &xp)| {
            s.wrapping_add(xp.wrapping_mul(b[p * ldb + jj]))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_kernel;
    use super::*;

    #[test]
    fn avx512_matches_naive() {
        let Some(kern) = Avx512::detect() else {
            eprintln!("AVX-512F/DQ not detected: skipping");
            return;
        };
        check_kernel(kern);
    }
}
