//! ISA-independent half of the ring GEMM: packing, cache blocking, edge tiles and threading.
//!
//! The driver is safe code. It hands each [`Kernel`] method slices whose lengths meet the method's documented
//! preconditions; the kernels assert them before touching memory through raw pointers.
//!
//! Two paths:
//! - *direct* (by default fewer than [`DIRECT_MAX_M`] rows, e.g. batch-1 inference): every output row is
//!   computed from the unpacked `b` by a vectorised row kernel; nothing is packed, since each element of `b`
//!   is used only `m` times.
//! - *blocked* (the rest): `b` is packed into column panels of `NR` columns, `a` into row panels of `MR`
//!   rows (both zero-padded), and an `MR x NR` register-blocked micro-kernel runs over cache-sized blocks of
//!   the shared dimension.
//!
//! With several threads, the work is cut into a few parts per thread and each thread takes the next part as
//! it gets free ([`run_queue`]): on a machine shared with other work, a thread that gets less CPU does fewer
//! parts instead of holding everyone up.
//!
//! # Winograd pairing
//! A kernel may declare [`Kernel::WINOGRAD`]. Its micro-kernel then sums, over pairs `(2q, 2q + 1)` of the
//! shared dimension, `(a[2q] + b[2q+1]) · (a[2q+1] + b[2q])`, which is
//! `a[2q]·b[2q] + a[2q+1]·b[2q+1] + a[2q]·a[2q+1] + b[2q]·b[2q+1]`: half the multiplications of the plain
//! sum, plus terms that depend on the row of `a` only (`xi`) or on the column of `b` only (`eta`). That
//! identity holds in any commutative ring, so in Z_2^64 the result stays exact. The packers pad the shared
//! dimension to even length with zeros and append one extra pair, `(1, -xi)` to each row of `a` and
//! `(-eta, 0)` to each column of `b`, whose pair product is `1 · (-xi - eta)`: the micro-kernel's sum is then
//! exactly `a · b`, with no correction pass.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};
use std::thread;

/// Rows of `a` below which the direct (unpacked) path is used.
pub(crate) const DIRECT_MAX_M: usize = 5;
/// Largest block of the (packed) shared dimension per micro-kernel call (keeps a `b` panel in L1).
const KC_MAX: usize = 192;
/// Rows of `a` packed at a time (keeps the packed block of `a` in L2); rounded down to a multiple of `MR`.
const MC: usize = 64;
/// Work (`m * k * n` multiply-adds) below which one thread is used.
const PARALLEL_MIN_WORK: usize = 1 << 18;
/// Least work given to each thread once the problem is parallel.
const WORK_PER_THREAD: usize = 1 << 17;
/// Columns of one part of the direct path come in multiples of this.
const DIRECT_COL_UNIT: usize = 16;
/// Parts per thread once the work is split (see [`run_queue`]).
const PARTS_PER_THREAD: usize = 4;

/// The compute kernels of one instruction set.
///
/// Implementors are zero-sized tokens that can only be constructed once the CPU is known to support their
/// instruction set; that is what makes these safe methods sound when they call `#[target_feature]` code.
/// Every method must compute exactly the wrapping (mod 2^64) sums it documents.
pub(crate) trait Kernel: Copy + Send + Sync {
    /// Rows of one micro-tile.
    const MR: usize;
    /// Columns of one micro-tile.
    const NR: usize;
    /// Whether [`Kernel::tile`] sums Winograd pair products (see the module docs) instead of plain products.
    const WINOGRAD: bool;

    /// Micro-tile. For `r < MR`, `j < NR`, with `A(p) = a[p * MR + r]` and `B(p) = b[p * NR + j]`,
    /// `t = sum_{p < kc} A(p)·B(p)`, or when `WINOGRAD` (then `kc` is even)
    /// `t = sum_{q < kc/2} (A(2q) + B(2q+1))·(A(2q+1) + B(2q))`; then `c[r][col + j] = t` (or `+= t` when
    /// `accumulate`), all wrapping.
    ///
    /// Panics unless `a.len() >= kc * MR`, `b.len() >= kc * NR`, `c.len() >= MR` and every
    /// `c[r].len() >= col + NR` for `r < MR`.
    fn tile(
        self,
        kc: usize,
        a: &[u64],
        b: &[u64],
        c: &mut [&mut [u64]],
        col: usize,
        accumulate: bool,
    );

    /// Row times matrix: for `j < c.len()`, `c[j] = sum_{p < x.len()} x[p] * b[p * ldb + j]`, wrapping.
    ///
    /// Panics unless `x` is non-empty, `c.len() <= ldb` and `b.len() >= (x.len() - 1) * ldb + c.len()`.
    fn row(self, x: &[u64], b: &[u64], ldb: usize, c: &mut [u64]);

    /// `acc[j] += x[j] * y[j]` for `j < acc.len()`, wrapping. Panics if `x` or `y` is shorter than `acc`.
    fn mul_acc(self, acc: &mut [u64], x: &[u64], y: &[u64]) {
        let len = acc.len();
        for ((s, &u), &v) in acc.iter_mut().zip(&x[..len]).zip(&y[..len]) {
            *s = s.wrapping_add(u.wrapping_mul(v));
        }
    }
}

/// Shape of one product: `a` is m×k, `b` k×n, `c` m×n, all row-major.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
}

/// How one product is carried out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Threads to use (at least 1), as far as the problem splits.
    pub(crate) threads: usize,
    /// Largest block of the packed shared dimension per micro-kernel call (at least 2).
    pub(crate) kc: usize,
    /// Rows of `a` packed at a time (rounded down to a multiple of `MR`, at least `MR`).
    pub(crate) mc: usize,
    /// Products with fewer rows than this take the direct path.
    pub(crate) direct_below: usize,
}

impl Plan {
    /// `threads` threads (0 is taken as 1) and the default cache blocking.
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            kc: KC_MAX,
            mc: MC,
            direct_below: DIRECT_MAX_M,
        }
    }
}

/// `c = a · b mod 2^64` for row-major `a` (m×k), `b` (k×n), `c` (m×n) on up to `threads` threads.
///
/// Panics if a slice length does not match its shape.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<K: Kernel>(
    kern: K,
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[u64],
    b: &[u64],
    c: &mut [u64],
) {
    let d = Dims { m, k, n };
    gemm_with(kern, Plan::new(plan_threads(threads, d)), d, a, b, c);
}

/// As [`gemm`], following `plan` exactly (no size threshold for threads).
pub(crate) fn gemm_with<K: Kernel>(
    kern: K,
    plan: Plan,
    d: Dims,
    a: &[u64],
    b: &[u64],
    c: &mut [u64],
) {
    assert_eq!(Some(a.len()), d.m.checked_mul(d.k), "a must be m*k");
    assert_eq!(Some(b.len()), d.k.checked_mul(d.n), "b must be k*n");
    assert_eq!(Some(c.len()), d.m.checked_mul(d.n), "c must be m*n");
    if d.m == 0 || d.n == 0 {
        return;
    }
    if d.k == 0 {
        c.fill(0);
        return;
    }
    let plan = Plan {
        threads: plan.threads.max(1),
        kc: plan.kc.max(2),
        ..plan
    };
    if d.m < plan.direct_below {
        direct(kern, plan.threads, d, a, b, c);
    } else {
        blocked(kern, plan, d, a, b, c);
    }
}

/// Threads worth using for an `m x k x n` product: 1 below [`PARALLEL_MIN_WORK`], else at most one per
/// [`WORK_PER_THREAD`] multiply-adds, capped by `threads` (and at least 1).
fn plan_threads(threads: usize, d: Dims) -> usize {
    let work = d.m.saturating_mul(d.k).saturating_mul(d.n);
    if work < PARALLEL_MIN_WORK {
        return 1;
    }
    threads.min(work / WORK_PER_THREAD).max(1)
}

/// Splits `0..units` into at most `parts` contiguous non-empty ranges whose sizes differ by at most one.
fn split_even(units: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, units.max(1));
    let (base, extra) = (units / parts, units % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// Splits `0..units` as [`split_even`] into at most `parts` ranges, then scales them by `unit` and clamps
/// them to `0..limit`.
fn split_scaled(units: usize, parts: usize, unit: usize, limit: usize) -> Vec<Range<usize>> {
    split_even(units, parts)
        .into_iter()
        .map(|r| (r.start * unit).min(limit)..(r.end * unit).min(limit))
        .collect()
}

/// Cuts every `n`-wide row of `c` at the column ranges `cols` (which tile `0..n` in order) and returns, per
/// range, that range's piece of every row.
fn column_pieces<'c>(c: &'c mut [u64], n: usize, cols: &[Range<usize>]) -> Vec<Vec<&'c mut [u64]>> {
    let mut pieces: Vec<Vec<&mut [u64]>> = cols.iter().map(|_| Vec::new()).collect();
    for row in c.chunks_exact_mut(n) {
        let mut rest = row;
        for (range, piece) in cols.iter().zip(pieces.iter_mut()) {
            let (head, tail) = rest.split_at_mut(range.len());
            piece.push(head);
            rest = tail;
        }
    }
    pieces
}

/// Runs `work(state, part)` for every part on up to `threads` threads, the calling thread included. Each
/// thread takes the next part in order as soon as it is free, so a thread slowed down by other load on the
/// machine simply does fewer parts; `init` makes each thread's scratch `state`. A panic propagates.
fn run_queue<P, S, I, F>(threads: usize, parts: Vec<P>, init: I, work: F)
where
    P: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, P) + Sync,
{
    let helpers = threads.min(parts.len()).saturating_sub(1);
    let queue = Mutex::new(parts.into_iter().rev().collect::<Vec<P>>());
    // The lock is released before the part runs. A poisoned lock only means another worker panicked; the
    // scope re-raises that panic.
    let next = || queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let worker = || {
        let mut state = init();
        while let Some(part) = next() {
            work(&mut state, part);
        }
    };
    thread::scope(|s| {
        for _ in 0..helpers {
            s.spawn(worker);
        }
        worker();
    });
}

/// Number of parts to cut the work into for `t` threads: one for one thread, else a few per thread so that
/// faster threads can take over the rest.
fn parts_for(t: usize) -> usize {
    if t <= 1 {
        1
    } else {
        PARTS_PER_THREAD * t
    }
}

/// Direct path: the output columns are cut into ranges (multiples of [`DIRECT_COL_UNIT`]); a thread takes a
/// range and runs the row kernel for every row over it.
fn direct<K: Kernel>(kern: K, t: usize, d: Dims, a: &[u64], b: &[u64], c: &mut [u64]) {
    let cols = split_scaled(
        d.n.div_ceil(DIRECT_COL_UNIT),
        parts_for(t),
        DIRECT_COL_UNIT,
        d.n,
    );
    let parts: Vec<(usize, Vec<&mut [u64]>)> = cols
        .iter()
        .map(|r| r.start)
        .zip(column_pieces(c, d.n, &cols))
        .collect();
    run_queue(
        t,
        parts,
        || (),
        |_, (j0, rows): (usize, Vec<&mut [u64]>)| {
            for (x, out) in a.chunks_exact(d.k).zip(rows) {
                kern.row(x, &b[j0..], d.n, out);
            }
        },
    );
}

/// Length of the shared dimension once packed: `k`, or for Winograd kernels `k` rounded up to even plus the
/// correction pair.
fn packed_depth<K: Kernel>(k: usize) -> usize {
    if K::WINOGRAD {
        k.next_multiple_of(2) + 2
    } else {
        k
    }
}

/// Splits the packed depth `kp` into blocks of at most about `kc` (at least 2), of near-equal sizes; even
/// sizes for Winograd kernels (whose pairs must not straddle blocks).
fn k_blocks<K: Kernel>(kp: usize, kc: usize) -> Vec<Range<usize>> {
    let step = if K::WINOGRAD { 2 } else { 1 };
    split_scaled(kp / step, kp.div_ceil(kc), step, kp)
}

/// `b` (k×n) packed to depth `kp` (see [`packed_depth`]) in `ceil(n / nr)` column panels: panel `jp` holds,
/// for each `p < kp`, the `nr` values `b[p][jp * nr + j]` (zero past column `n` and past row `k`, and for
/// Winograd kernels the correction pair in rows `kp - 2`, `kp - 1`). Any run of consecutive `p` of a panel
/// is contiguous.
struct PackedB {
    data: Vec<u64>,
    kp: usize,
    nr: usize,
}

impl PackedB {
    /// Packs all of `b`, on up to `t` threads (a few panel ranges per thread).
    fn new<K: Kernel>(kern: K, t: usize, d: Dims, b: &[u64]) -> Self {
        let (nr, kp) = (K::NR, packed_depth::<K>(d.k));
        let mut data = vec![0; d.n.div_ceil(nr) * kp * nr];
        let ranges = split_even(d.n.div_ceil(nr), parts_for(t));
        let mut parts = Vec::with_capacity(ranges.len());
        let mut rest = data.as_mut_slice();
        for panels in ranges {
            let (head, tail) = rest.split_at_mut(panels.len() * kp * nr);
            parts.push((panels, head));
            rest = tail;
        }
        run_queue(
            t,
            parts,
            || (),
            |_, (panels, dst)| {
                pack_panels(kern, d, b, panels, dst);
            },
        );
        Self { data, kp, nr }
    }

    /// Rows `p0..p0 + kc` of panel `jp` (`kc * nr` values).
    fn panel(&self, jp: usize, p0: usize, kc: usize) -> &[u64] {
        let start = (jp * self.kp + p0) * self.nr;
        &self.data[start..start + kc * self.nr]
    }
}

/// Packs the column panels `panels` of `b` into `dst` (zeroed, `panels.len()` panels long) as laid out in
/// [`PackedB`]. Reads `b` row by row, once; the Winograd column terms are summed from each pair of rows
/// while it is still in L1.
fn pack_panels<K: Kernel>(kern: K, d: Dims, b: &[u64], panels: Range<usize>, dst: &mut [u64]) {
    let (nr, kp) = (K::NR, packed_depth::<K>(d.k));
    let cols = (panels.start * nr).min(d.n)..(panels.end * nr).min(d.n);
    let mut eta = vec![0u64; if K::WINOGRAD { cols.len() } else { 0 }];
    let mut prev: &[u64] = &[];
    for (p, brow) in b.chunks_exact(d.n).enumerate() {
        let row = &brow[cols.clone()];
        scatter_row(dst, kp * nr, p * nr, nr, row);
        if K::WINOGRAD && p % 2 == 1 {
            kern.mul_acc(&mut eta, prev, row);
        }
        prev = row;
    }
    if K::WINOGRAD {
        // An odd last row pairs with a zero row and adds nothing to `eta`.
        let neg_eta: Vec<u64> = eta.iter().map(|e| e.wrapping_neg()).collect();
        scatter_row(dst, kp * nr, (kp - 2) * nr, nr, &neg_eta);
    }
}

/// Writes `row` into the panels of `data`, `nr` values per panel: panel `i` (at `i * panel_len`) gets
/// `row[i * nr..]` at offset `offset`.
#[inline]
fn scatter_row(data: &mut [u64], panel_len: usize, offset: usize, nr: usize, row: &[u64]) {
    let mut panels = data.chunks_exact_mut(panel_len);
    let mut segs = row.chunks_exact(nr);
    // Full segments first: with `nr` a constant after inlining, each copy is a few vector moves. (`segs`
    // leads the zip so that running out of segments leaves the tail's panel in `panels`.)
    for (seg, panel) in segs.by_ref().zip(panels.by_ref()) {
        panel[offset..offset + nr].copy_from_slice(seg);
    }
    let tail = segs.remainder();
    if let Some(panel) = panels.next() {
        panel[offset..offset + tail.len()].copy_from_slice(tail);
    }
}

/// Packs the rows of `a` (each `k` long) into `ceil(rows / MR)` panels of depth `kp` (see
/// [`packed_depth`]): panel `ip` holds, for each `p < kp`, the `MR` values `a[ip * MR + r][p]` (zero past the
/// last row and past column `k`, and for Winograd kernels the correction pair `1, -xi` in columns `kp - 2`,
/// `kp - 1`; the `1` in every lane of the panel). Reads `a` row by row once and writes each value to its
/// lane with a stride of `MR` (a panel stays in the first-level cache), with no per-value bounds test or
/// branch; a full panel of four rows (the AVX-512 and portable kernels') is written one `p` at a time, as
/// contiguous stores. Reuses `out`'s allocation: a full panel overwrites all of its values, so only a
/// panel with missing rows is zero-filled first. `k` is non-zero.
fn pack_a<K: Kernel>(a: &[u64], k: usize, out: &mut Vec<u64>) {
    let (mr, kp) = (K::MR, packed_depth::<K>(k));
    out.resize(a.len().div_ceil(mr * k) * kp * mr, 0);
    for (rows, panel) in a.chunks(mr * k).zip(out.chunks_exact_mut(kp * mr)) {
        let full = rows.len() == mr * k;
        if !full {
            panel.fill(0);
        }
        if mr == 4 && full {
            let (r0, rest) = rows.split_at(k);
            let (r1, rest) = rest.split_at(k);
            let (r2, r3) = rest.split_at(k);
            let lanes = r0.iter().zip(r1).zip(r2).zip(r3);
            for (dst, (((&x0, &x1), &x2), &x3)) in panel[..4 * k].chunks_exact_mut(4).zip(lanes) {
                dst.copy_from_slice(&[x0, x1, x2, x3]);
            }
        } else {
            for (r, row) in rows.chunks_exact(k).enumerate() {
                for (dst, &x) in panel[r..k * mr].iter_mut().step_by(mr).zip(row) {
                    *dst = x;
                }
            }
        }
        if K::WINOGRAD {
            panel[k * mr..(kp - 2) * mr].fill(0);
            panel[(kp - 2) * mr..(kp - 1) * mr].fill(1);
            for (dst, row) in panel[(kp - 1) * mr..].iter_mut().zip(rows.chunks_exact(k)) {
                let xi = row.chunks_exact(2).fold(0u64, |s, pair| {
                    s.wrapping_add(pair[0].wrapping_mul(pair[1]))
                });
                *dst = xi.wrapping_neg();
            }
        }
    }
}

/// Blocked path: packs `b` (on up to `t` threads), then cuts the rows into a few chunks per thread; a thread
/// takes a chunk, packs its rows of `a` and computes them over all columns. The only waits between threads
/// are the ends of the two phases, and the parts are small, so a thread that gets less CPU holds the others
/// up for at most one part.
fn blocked<K: Kernel>(kern: K, plan: Plan, d: Dims, a: &[u64], b: &[u64], c: &mut [u64]) {
    let t = plan.threads;
    let bp = PackedB::new(kern, t, d, b);
    let panels = 0..d.n.div_ceil(K::NR);
    let chunks = split_scaled(d.m.div_ceil(K::MR), parts_for(t), K::MR, d.m);
    let mut parts = Vec::with_capacity(chunks.len());
    let mut rest = c;
    for rows in chunks {
        let (head, tail) = rest.split_at_mut(rows.len() * d.n);
        parts.push((rows, head));
        rest = tail;
    }
    let init = || (Vec::new(), EdgeTile::new(K::MR, K::NR));
    run_queue(
        t,
        parts,
        init,
        |(apack, edge), (rows, out): (Range<usize>, &mut [u64])| {
            let mut out_rows: Vec<&mut [u64]> = out.chunks_exact_mut(d.n).collect();
            let a_rows = &a[rows.start * d.k..rows.end * d.k];
            let mut scratch = Scratch { apack, edge };
            compute_block(
                kern,
                plan,
                d.k,
                a_rows,
                &bp,
                panels.clone(),
                &mut out_rows,
                &mut scratch,
            );
        },
    );
}

/// A thread's reusable buffers for [`compute_block`].
struct Scratch<'s> {
    apack: &'s mut Vec<u64>,
    edge: &'s mut EdgeTile,
}

/// One task of the blocked path: `out[r][j - panels.start * NR] = (a · b)[r][j]` for every row `r` of `a`
/// (rows of `k` values) and every column `j` of the panels `panels` of `bp`.
///
/// `out` has one row slice per row of `a`, each exactly as wide as the columns of `panels`.
#[allow(clippy::too_many_arguments)]
fn compute_block<K: Kernel>(
    kern: K,
    plan: Plan,
    k: usize,
    a: &[u64],
    bp: &PackedB,
    panels: Range<usize>,
    out: &mut [&mut [u64]],
    scratch: &mut Scratch,
) {
    let kp = packed_depth::<K>(k);
    let mc = (plan.mc / K::MR).max(1) * K::MR;
    let kbs = k_blocks::<K>(kp, plan.kc);
    for (chunk, out_rows) in a.chunks(mc * k).zip(out.chunks_mut(mc)) {
        pack_a::<K>(chunk, k, scratch.apack);
        for kb in &kbs {
            let accumulate = kb.start > 0;
            for jp in panels.clone() {
                let bpanel = bp.panel(jp, kb.start, kb.len());
                let col = (jp - panels.start) * K::NR;
                for (apanel, tile_rows) in scratch
                    .apack
                    .chunks_exact(K::MR * kp)
                    .zip(out_rows.chunks_mut(K::MR))
                {
                    let apanel = &apanel[kb.start * K::MR..kb.end * K::MR];
                    scratch
                        .edge
                        .run(kern, kb.len(), apanel, bpanel, tile_rows, col, accumulate);
                }
            }
        }
    }
}

/// Scratch `MR x NR` tile for micro-tiles that stick out of the output (last rows or columns).
struct EdgeTile {
    data: Vec<u64>,
    mr: usize,
    nr: usize,
}

impl EdgeTile {
    fn new(mr: usize, nr: usize) -> Self {
        Self {
            data: vec![0; mr * nr],
            mr,
            nr,
        }
    }

    /// Runs the micro-kernel for the tile at (`rows`, `col..col + NR`): straight into the output when the tile
    /// fits, through the scratch tile otherwise (then only the part inside the output is stored or added).
    #[allow(clippy::too_many_arguments)]
    fn run<K: Kernel>(
        &mut self,
        kern: K,
        kc: usize,
        a: &[u64],
        b: &[u64],
        rows: &mut [&mut [u64]],
        col: usize,
        accumulate: bool,
    ) {
        let width = rows.first().map_or(0, |r| r.len());
        if rows.len() == self.mr && col + self.nr <= width {
            kern.tile(kc, a, b, rows, col, accumulate);
            return;
        }
        let w = self.nr.min(width - col);
        let mut scratch: Vec<&mut [u64]> = self.data.chunks_exact_mut(self.nr).collect();
        kern.tile(kc, a, b, &mut scratch, 0, false);
        for (dst, src) in rows.iter_mut().zip(scratch) {
            let dst = &mut dst[col..col + w];
            if accumulate {
                dst.iter_mut()
                    .zip(&src[..w])
                    .for_each(|(d, s)| *d = d.wrapping_add(*s));
            } else {
                dst.copy_from_slice(&src[..w]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_covers_in_order() {
        for units in 0..40 {
            for parts in 1..6 {
                let ranges = split_even(units, parts);
                let mut next = 0;
                for r in &ranges {
                    assert_eq!(r.start, next);
                    assert!(!r.is_empty());
                    next = r.end;
                }
                assert_eq!(next, units);
                assert!(ranges.len() <= parts);
            }
        }
    }

    #[test]
    fn plan_threads_keeps_small_problems_on_one_thread() {
        let dims = |m, k, n| Dims { m, k, n };
        assert_eq!(plan_threads(8, dims(1, 784, 128)), 1);
        assert_eq!(plan_threads(2, dims(128, 384, 384)), 2);
        assert_eq!(plan_threads(0, dims(128, 384, 384)), 1);
    }
}
