//! Throughput of the ring GEMM against burn's f32 matmul on the same shape, measured in one run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use burn::tensor::{DType, Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use veil_protocols::gemm::Gemm;

use super::{detected_isa, RingGemm};

/// Pause before timing the ring GEMM, long enough for rayon's idle workers to stop spinning.
const RAYON_SETTLE: Duration = Duration::from_millis(20);

/// One measurement of [`measure_gemm`]. GOPS = `2·m·k·n / seconds / 1e9` from the median repetition.
#[derive(Debug, Clone, Serialize)]
pub struct GemmThroughput {
    /// Ring Z_2^64 GEMM ([`RingGemm`]), in GOPS.
    pub ring_gops: f64,
    /// burn's f32 matmul on its flex (CPU) backend, in GOPS.
    pub f32_gops: f64,
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `a`, rows of `b`.
    pub k: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
    /// Threads given to the ring GEMM.
    pub threads: usize,
    /// Instruction set of the ring GEMM, as [`detected_isa`].
    pub isa: &'static str,
}

/// Times the ring GEMM on `threads` threads (full-range random `u64`s), then burn's f32 matmul on the same
/// `m x k · k x n` shape: one warm-up call each, then the median of `reps` (at least 1) timed calls.
///
/// burn's flex backend runs its matmul on rayon's global pool, whose size this function cannot set: it is
/// `RAYON_NUM_THREADS` if that is set when the pool starts, else the number of cores (and flex keeps
/// products under 192³ multiply-adds on one thread). To compare at equal thread counts below the core
/// count, run with `RAYON_NUM_THREADS` equal to `threads`.
pub fn measure_gemm(m: usize, k: usize, n: usize, threads: usize, reps: usize) -> GemmThroughput {
    let reps = reps.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(0x6e44_5eed);
    let a: Vec<u64> = (0..m * k).map(|_| rng.random()).collect();
    let b: Vec<u64> = (0..k * n).map(|_| rng.random()).collect();
    let mut c = vec![0u64; m * n];
    let gemm = RingGemm::new(threads);
    // Idle rayon workers left spinning by an earlier f32 matmul (a previous call) would steal cores.
    std::thread::sleep(RAYON_SETTLE);
    let ring_secs = median_secs(reps, || {
        gemm.gemm(m, k, n, black_box(&a), black_box(&b), &mut c);
        black_box(&mut c);
    });
    let f32_secs = burn_f32_matmul_secs(m, k, n, reps, &mut rng);
    GemmThroughput {
        ring_gops: gops(m, k, n, ring_secs),
        f32_gops: gops(m, k, n, f32_secs),
        m,
        k,
        n,
        threads: gemm.threads(),
        isa: detected_isa(),
    }
}

/// Median seconds of `reps` timed calls of `f`, after one untimed warm-up call.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut secs: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[secs.len() / 2]
}

/// `2·m·k·n / secs / 1e9`, or 0 when `secs` is not positive.
fn gops(m: usize, k: usize, n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        2.0 * m as f64 * k as f64 * n as f64 / secs / 1e9
    } else {
        0.0
    }
}

/// Median seconds of burn's f32 `matmul` of random `m x k` and `k x n` tensors on the flex device.
fn burn_f32_matmul_secs(m: usize, k: usize, n: usize, reps: usize, rng: &mut ChaCha8Rng) -> f64 {
    let device = Device::flex();
    let mut random = |rows: usize, cols: usize| {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), (&device, DType::F32))
    };
    let (a, b) = (random(m, k), random(k, n));
    median_secs(reps, || {
        // flex executes eagerly; `sync` makes sure nothing is left pending before the clock stops.
        black_box(a.clone().matmul(b.clone()));
        // A failed sync only means a poisoned device; the timing is then meaningless but harmless.
        let _ = device.sync();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_gemm_reports_positive_throughput() {
        let r = measure_gemm(8, 16, 24, 1, 3);
        assert!(r.ring_gops > 0.0 && r.f32_gops > 0.0, "{r:?}");
        assert_eq!(
            (r.m, r.k, r.n, r.threads, r.isa),
            (8, 16, 24, 1, detected_isa())
        );
    }

    /// Not a pass/fail check: prints the figures for the reference shape (`cargo test --release -- --ignored
    /// --nocapture gemm_throughput_report`).
    #[test]
    #[ignore = "timing report, run by hand in release"]
    fn gemm_throughput_report() {
        for threads in [1, 2] {
            let r = measure_gemm(128, 384, 384, threads, 21);
            println!("{r:?} ratio {:.3}", r.ring_gops / r.f32_gops);
        }
        let r = measure_gemm(1, 784, 128, 1, 101);
        println!("{r:?} ratio {:.3}", r.ring_gops / r.f32_gops);
    }
}
