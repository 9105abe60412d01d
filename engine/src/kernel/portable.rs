//! Portable kernels: plain wrapping `u64` arithmetic, for any target (the compiler may auto-vectorise).

use super::driver::Kernel;

/// Rows of the portable micro-tile.
const TILE_MR: usize = 4;
/// Columns of the portable micro-tile.
const TILE_NR: usize = 4;
/// Columns of one block of the row kernel.
const ROW_NR: usize = 8;

/// Portable kernel set, with Winograd pairing when `WINO`; always available.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PortableTile<const WINO: bool>;

/// The portable kernel set the dispatcher uses.
pub(crate) type Portable = PortableTile<true>;

impl<const WINO: bool> Kernel for PortableTile<WINO> {
    const MR: usize = TILE_MR;
    const NR: usize = TILE_NR;
    const WINOGRAD: bool = WINO;

    fn tile(
        self,
        kc: usize,
        a: &[u64],
        b: &[u64],
        c: &mut [&mut [u64]],
        col: usize,
        accumulate: bool,
    ) {
        let (a, b) = (&a[..kc * TILE_MR], &b[..kc * TILE_NR]);
        let acc = if WINO {
            wino_sums(a, b)
        } else {
            plain_sums(a, b)
        };
        for (row, acc_row) in c[..TILE_MR].iter_mut().zip(&acc) {
            store(&mut row[col..col + TILE_NR], acc_row, accumulate);
        }
    }

    fn row(self, x: &[u64], b: &[u64], ldb: usize, c: &mut [u64]) {
        assert!(!x.is_empty() && c.len() <= ldb && b.len() >= (x.len() - 1) * ldb + c.len());
        for (j, out) in (0..c.len()).step_by(ROW_NR).zip(c.chunks_mut(ROW_NR)) {
            let mut acc = [0u64; ROW_NR];
            for (p, &xp) in x.iter().enumerate() {
                let brow = &b[p * ldb + j..p * ldb + j + out.len()];
                for (s, &y) in acc.iter_mut().zip(brow) {
                    *s = s.wrapping_add(xp.wrapping_mul(y));
                }
            }
            out.copy_from_slice(&acc[..out.len()]);
        }
    }
}

/// Plain micro-tile sums `sum_p a[p][r] · b[p][j]` of packed panels (`a`: rows of `MR`, `b`: rows of `NR`).
fn plain_sums(a: &[u64], b: &[u64]) -> [[u64; TILE_NR]; TILE_MR] {
    let mut acc = [[0u64; TILE_NR]; TILE_MR];
    for (ap, bp) in a.chunks_exact(TILE_MR).zip(b.chunks_exact(TILE_NR)) {
        for (acc_row, &x) in acc.iter_mut().zip(ap) {
            for (s, &y) in acc_row.iter_mut().zip(bp) {
                *s = s.wrapping_add(x.wrapping_mul(y));
            }
        }
    }
    acc
}

/// Winograd micro-tile sums `sum_q (a[2q][r] + b[2q+1][j]) · (a[2q+1][r] + b[2q][j])` of packed panels (an odd
/// last row, never passed by the driver, would be ignored).
fn wino_sums(a: &[u64], b: &[u64]) -> [[u64; TILE_NR]; TILE_MR] {
    let mut acc = [[0u64; TILE_NR]; TILE_MR];
    for (ap, bp) in a.chunks_exact(2 * TILE_MR).zip(b.chunks_exact(2 * TILE_NR)) {
        let (a_even, a_odd) = ap.split_at(TILE_MR);
        let (b_even, b_odd) = bp.split_at(TILE_NR);
        for ((acc_row, &x_even), &x_odd) in acc.iter_mut().zip(a_even).zip(a_odd) {
            for ((s, &y_even), &y_odd) in acc_row.iter_mut().zip(b_even).zip(b_odd) {
                *s = s.wrapping_add(
                    x_even
                        .wrapping_add(y_odd)
                        .wrapping_mul(x_odd.wrapping_add(y_even)),
                );
            }
        }
    }
    acc
}

/// `dst = src` or, when `accumulate`, `dst += src` (wrapping).
fn store(dst: &mut [u64], src: &[u64], accumulate: bool) {
    if accumulate {
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, &s)| *d = d.wrapping_add(s));
    } else {
        dst.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_kernel;
    use super::*;

    #[test]
    fn portable_matches_naive() {
        check_kernel(Portable::default());
        check_kernel(PortableTile::<false>);
    }
}
