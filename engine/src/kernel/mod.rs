//! Fast local matrix product over the ring Z_2^64 (wrapping `u64`), the engine's [`Gemm`] implementation.
//!
//! [`RingGemm`] picks its instruction set at run time, on every call, with `is_x86_feature_detected!`:
//! AVX-512F+DQ, else AVX2, else portable code (the only one compiled on non-x86_64 targets). Nothing requires
//! building with `target-cpu=native`. Every path computes exactly `c = a · b mod 2^64`, bit for bit equal to
//! [`veil_protocols::gemm::NaiveGemm`].
//!
//! Layout: `driver` (private) packs, blocks and splits the work over threads; the per-ISA modules hold only
//! the inner kernels: a register-blocked micro-tile and an unpacked row-times-matrix kernel for products
//! of very few rows. The AVX2 and portable micro-tiles use Winograd's pairing, which halves the
//! multiplications in exchange for additions (exact in any commutative ring, so also here; see `driver`).
//! [`bench`] measures throughput against burn's f32 matmul.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod bench;
mod driver;
mod portable;

use veil_protocols::gemm::Gemm;

/// Name of the instruction set [`RingGemm`] uses on this CPU: `"avx512"`, `"avx2"` or `"portable"`.
pub fn detected_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::Avx512::detect().is_some() {
            return "avx512";
        }
        if avx2::Avx2::detect().is_some() {
            return "avx2";
        }
    }
    "portable"
}

/// Wrapping `u64` matrix product (ring Z_2^64) with run-time SIMD dispatch and scoped-thread parallelism.
///
/// Products smaller than 2^18 multiply-adds (e.g. batch-1 layers such as 1x784 · 784x128) run on the calling
/// thread; bigger ones use up to `threads` threads (the caller's thread included, the others scoped to the
/// call), each with at least 2^17 multiply-adds. Products of fewer than 5 rows skip packing. Each call
/// allocates its own packing buffers; no state is kept between calls, so one `RingGemm` can serve many
/// threads at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGemm {
    threads: usize,
}

impl RingGemm {
    /// A GEMM using at most `threads` threads (0 is taken as 1).
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
        }
    }

    /// Most threads one call may use.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Default for RingGemm {
    /// As many threads as [`std::thread::available_parallelism`] reports (1 if unknown).
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }
}

impl Gemm for RingGemm {
    /// `c = a · b mod 2^64` for row-major `a` (m×k), `b` (k×n), `c` (m×n).
    ///
    /// Panics if `a.len() != m * k`, `b.len() != k * n` or `c.len() != m * n`.
    fn gemm(&self, m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
        // Same order as `detected_isa`.
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(kern) = avx512::Avx512::detect() {
                return driver::gemm(kern, self.threads, m, k, n, a, b, c);
            }
            if let Some(kern) = avx2::Avx2::detect() {
                return driver::gemm(kern, self.threads, m, k, n, a, b, c);
            }
        }
        driver::gemm(
            portable::Portable::default(),
            self.threads,
            m,
            k,
            n,
            a,
            b,
            c,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::driver::{self, Dims, Kernel, Plan};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use veil_protocols::gemm::NaiveGemm;

    /// Full-range random `u64`s, with a sprinkling of the extremes so wrapping is exercised.
    fn random_vec(rng: &mut ChaCha8Rng, len: usize) -> Vec<u64> {
        (0..len)
            .map(|_| match rng.random_range(0..8) {
                0 => u64::MAX,
                1 => u64::MAX - rng.random_range(0..1024),
                2 => 1 << 63,
                _ => rng.random(),
            })
            .collect()
    }

    /// Shapes that cover: tiny, direct path (m < 4), non-multiples of every tile size, several k blocks,
    /// several row chunks, and the project's two reference shapes.
    fn shapes(rng: &mut ChaCha8Rng) -> Vec<(usize, usize, usize)> {
        let mut shapes = vec![
            (1, 1, 1),
            (1, 784, 128),
            (128, 384, 384),
            (3, 5, 17),
            (4, 600, 9),
            (200, 70, 37),
            (13, 1, 70),
            (70, 69, 1),
        ];
        shapes.extend((0..40).map(|_| {
            (
                rng.random_range(1..70),
                rng.random_range(1..70),
                rng.random_range(1..70),
            )
        }));
        shapes
    }

    /// Checks `kern` through the driver against [`NaiveGemm`]: with the driver's own plan for 1 to 3 threads,
    /// and with 1 to 3 forced threads under the default plan, a tiny cache blocking that never takes the
    /// direct path (many blocks of the shared dimension and of rows even on small shapes), and a plan that
    /// always takes it.
    pub(crate) fn check_kernel<K: Kernel>(kern: K) {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0001);
        for (m, k, n) in shapes(&mut rng) {
            let a = random_vec(&mut rng, m * k);
            let b = random_vec(&mut rng, k * n);
            let mut want = vec![0; m * n];
            NaiveGemm.gemm(m, k, n, &a, &b, &mut want);
            for threads in 1..=3 {
                let mut got = vec![7; m * n];
                driver::gemm(kern, threads, m, k, n, &a, &b, &mut got);
                assert!(got == want, "{m}x{k}x{n}, up to {threads} threads");
                let tiny = Plan {
                    threads,
                    kc: 6,
                    mc: 1,
                    direct_below: 0,
                };
                let direct = Plan {
                    direct_below: usize::MAX,
                    ..Plan::new(threads)
                };
                for plan in [Plan::new(threads), tiny, direct] {
                    let mut got = vec![7; m * n];
                    driver::gemm_with(kern, plan, Dims { m, k, n }, &a, &b, &mut got);
                    assert!(got == want, "{m}x{k}x{n}, {plan:?}");
                }
            }
        }
    }

    #[test]
    fn dispatcher_matches_naive() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0002);
        for (m, k, n) in shapes(&mut rng) {
            let a = random_vec(&mut rng, m * k);
            let b = random_vec(&mut rng, k * n);
            let mut want = vec![0; m * n];
            NaiveGemm.gemm(m, k, n, &a, &b, &mut want);
            for threads in [1, 2] {
                let mut got = vec![7; m * n];
                RingGemm::new(threads).gemm(m, k, n, &a, &b, &mut got);
                assert!(
                    got == want,
                    "{m}x{k}x{n}, {threads} threads, isa {}",
                    detected_isa()
                );
            }
        }
    }

    #[test]
    fn empty_dimensions() {
        let gemm = RingGemm::new(2);
        let mut c = vec![7; 6];
        gemm.gemm(2, 0, 3, &[], &[], &mut c);
        assert_eq!(c, vec![0; 6]);
        gemm.gemm(0, 4, 3, &[], &[0; 12], &mut []);
        gemm.gemm(3, 4, 0, &[0; 12], &[], &mut []);
    }

    #[test]
    #[should_panic(expected = "a must be m*k")]
    fn wrong_length_panics() {
        RingGemm::new(1).gemm(2, 2, 2, &[0; 3], &[0; 4], &mut [0; 4]);
    }

    #[test]
    fn isa_name_is_known() {
        assert!(["avx512", "avx2", "portable"].contains(&detected_isa()));
        assert_eq!(RingGemm::new(0).threads(), 1);
        assert!(RingGemm::default().threads() >= 1);
    }
}
