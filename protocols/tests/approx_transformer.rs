//! The private transformer's cheap approximations and products on shares against f64, for n in {2, 3}, and
//! under spdz2k with the MAC check: the even-polynomial GELU, the one-piece exp and the softmax built on
//! it, mean pooling, L2 normalisation, and batched matrix-triple products. Every bound stated in
//! `protocols/src/approx/{gelu,exp,pooling}.rs` is asserted here over its stated input range.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_protocols::approx::functions::gelu_exact;
use veil_protocols::approx::pooling::{l2_normalize_requests, mean_pool_requests, Affine};
use veil_protocols::approx::rows::softmax_fast_requests;
use veil_protocols::approx::{ExpNeg, GeluEven, NewtonConfig, SoftmaxFastConfig};
use veil_protocols::gemm::NaiveGemm;
use veil_protocols::material::Request;
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds, LocalNet};
use veil_protocols::semi2k::Party;
use veil_protocols::share::{reconstruct, share};

const F: u32 = 16;
const ULP: f64 = 1.0 / 65536.0;

fn encode(v: &[f64]) -> Vec<u64> {
    v.iter()
        .map(|x| (x * f64::from(F).exp2()).round() as i64 as u64)
        .collect()
}

fn decode_bits(v: &[u64], bits: u32) -> Vec<f64> {
    v.iter()
        .map(|x| *x as i64 as f64 / f64::from(bits).exp2())
        .collect()
}

fn decode(v: &[u64]) -> Vec<f64> {
    decode_bits(v, F)
}

/// Runs `program` on the shares of `x` among `n` parties; returns the reconstructed words.
fn on_shares<P>(n: usize, x: &[u64], reqs: Vec<Request>, program: P) -> Vec<u64>
where
    P: Fn(&mut Party<LocalNet>, &[u64]) -> veil_protocols::Result<Vec<u64>> + Sync,
{
    let mut rng = ChaCha8Rng::seed_from_u64(x.len() as u64 + n as u64);
    let shares = share(x, n, &mut rng).unwrap();
    let committee = Committee::new(n, Arc::new(NaiveGemm));
    let out = run(
        &committee,
        &reqs,
        &[],
        &DealtSeeds::random(n),
        |party, _| program(party, &shares[party.id()]),
    )
    .expect("run succeeds");
    reconstruct(&out.parties.into_iter().map(|p| p.value).collect::<Vec<_>>()).unwrap()
}

fn grid(from: f64, to: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| from + (to - from) * i as f64 / (count - 1) as f64)
        .collect()
}

fn max_err(got: &[f64], want: impl Fn(usize) -> f64) -> f64 {
    got.iter()
        .enumerate()
        .map(|(i, g)| (g - want(i)).abs())
        .fold(0.0, f64::max)
}

#[test]
fn even_gelu_error_is_within_4e_3_everywhere() {
    let approx = GeluEven::default_fit().unwrap();
    let fit = approx.fit_error(-12.0, 12.0, 48_000);
    assert!(fit < 3.8e-3, "fit error {fit}");
    let mut x = grid(-8.0, 8.0, 401);
    x.extend([-1000.0, -30.0, -3.25, 3.25, 30.0, 1000.0, 5000.0]);
    for n in [2, 3] {
        let got = decode(&on_shares(
            n,
            &encode(&x),
            approx.requests(x.len(), F),
            |p, s| p.gelu_even(&s.to_vec(), &approx),
        ));
        // 4e-3, plus 2.5e-5 |x| from the rounded public scale factors s and 1/(2s).
        for (xi, g) in x.iter().zip(&got) {
            let err = (g - gelu_exact(*xi)).abs();
            assert!(
                err < 4e-3 + 2.5e-5 * xi.abs(),
                "n = {n}: GELU({xi}) on shares off by {err}"
            );
        }
    }
}

#[test]
fn even_gelu_scaled_returns_2f_bits_and_meets_the_same_bound() {
    let approx = GeluEven::default_fit().unwrap();
    let mut x = grid(-6.0, 6.0, 241);
    x.extend([-700.0, 700.0]);
    let y: Vec<f64> = x.iter().map(|v| v * approx.input_scale()).collect();
    let got = decode_bits(
        &on_shares(
            3,
            &encode(&y),
            approx.scaled_requests(x.len(), F),
            |p, s| p.gelu_even_scaled(&s.to_vec(), &approx),
        ),
        2 * F,
    );
    // The input's rounding (half an ulp of y, times 1/s) and that of 1/(2s) add to the bound.
    for (xi, g) in x.iter().zip(&got) {
        let err = (g - gelu_exact(*xi)).abs();
        assert!(
            err < 4e-3 + 1e-5 * xi.abs(),
            "scaled GELU({xi}) on shares off by {err}"
        );
    }
}

#[test]
fn exp_neg_error_is_within_4e_4_for_non_positive_inputs() {
    let approx = ExpNeg::default_fit().unwrap();
    let fit = approx.fit_error(-40.0, 0.0, 40_000);
    assert!(fit < 3.5e-4, "fit error {fit}");
    let inside = approx.fit_error(-8.0, 0.0, 8_000);
    assert!(inside < 1e-4, "fit error on [-8, 0]: {inside}");
    let mut x = grid(-20.0, 0.0, 401);
    x.extend([-1000.0, -100.0, -8.0]);
    for n in [2, 3] {
        let got = decode(&on_shares(
            n,
            &encode(&x),
            approx.requests(x.len(), F),
            |p, s| p.exp_neg(&s.to_vec(), &approx),
        ));
        let err = max_err(&got, |i| x[i].exp());
        assert!(err < 4e-4, "n = {n}: exp on shares off by {err}");
    }
}

#[test]
fn fast_softmax_rows_match_f64() {
    // Attention-like rows: 32 columns, scores in [-12, 12].
    let (rows, cols) = (6, 32);
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let x: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random_range(-12.0..12.0))
        .collect();
    let cfg = SoftmaxFastConfig {
        exp: ExpNeg::default_fit().unwrap(),
        iterations: 3,
    };
    for n in [2, 3] {
        let got = decode(&on_shares(
            n,
            &encode(&x),
            softmax_fast_requests(&cfg, rows, cols, F),
            |p, s| p.softmax_fast(&s.to_vec(), rows, cols, &cfg),
        ));
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
            for c in 0..cols {
                let want = (row[c] - max).exp() / z;
                let g = got[r * cols + c];
                assert!(
                    (g - want).abs() < 2e-3,
                    "n = {n}: p[{r}][{c}] = {g}, want {want}"
                );
            }
        }
    }
}

#[test]
fn mean_pool_meets_its_bound_with_and_without_affine() {
    let (rows, cols) = (23, 40);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random_range(-6.0..6.0))
        .collect();
    let scale: Vec<f64> = (0..cols).map(|_| rng.random_range(0.2..2.0)).collect();
    let shift: Vec<f64> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
    let xe = encode(&x);
    let xq = decode(&xe);
    for (n, affine) in [(2, false), (3, true)] {
        let got = decode(&on_shares(n, &xe, mean_pool_requests(cols, F), |p, s| {
            let a = affine.then_some(Affine {
                scale: &scale,
                shift: &shift,
            });
            p.mean_pool(&s.to_vec(), rows, cols, a)
        }));
        for j in 0..cols {
            let sum: f64 = (0..rows).map(|t| xq[t * cols + j]).sum();
            let (g, b) = if affine {
                (scale[j], shift[j])
            } else {
                (1.0, 0.0)
            };
            let want = g * sum / rows as f64 + b;
            // The module's bound: one ulp of truncation, half an ulp per public coefficient.
            let bound = ULP + ULP / 2.0 * (sum.abs() + 1.0);
            assert!(
                (got[j] - want).abs() <= bound,
                "n = {n}, column {j}: {} vs {want}",
                got[j]
            );
        }
    }
}

#[test]
fn l2_normalize_meets_its_bound() {
    let cfg = NewtonConfig {
        lo: -10,
        hi: 16,
        iterations: 3,
    };
    let (rows, cols) = (4, 384);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // Rows with norms from 0.5 to 100.
    let mut x = Vec::new();
    for norm in [0.5, 3.0, 20.0, 100.0] {
        let v: Vec<f64> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let n2 = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        x.extend(v.iter().map(|a| a / n2 * norm));
    }
    let xe = encode(&x);
    let xq = decode(&xe);
    for n in [2, 3] {
        let got = decode(&on_shares(
            n,
            &xe,
            l2_normalize_requests(&cfg, rows, cols, F),
            |p, s| p.l2_normalize(&s.to_vec(), rows, cols, &cfg),
        ));
        for r in 0..rows {
            let row = &xq[r * cols..(r + 1) * cols];
            let s: f64 = row.iter().map(|a| a * a).sum();
            for c in 0..cols {
                let want = row[c] / s.sqrt();
                // The module's bound: |out| (e_r + ulp / (2 s)) + 4 ulp |x| + 2 ulp, with e_r = 1e-4.
                let bound =
                    want.abs() * (1e-4 + ULP / (2.0 * s)) + 4.0 * ULP * row[c].abs() + 2.0 * ULP;
                let g = got[r * cols + c];
                assert!(
                    (g - want).abs() <= bound,
                    "n = {n}: row {r} col {c}: {g} vs {want}"
                );
            }
        }
    }
}

/// Plain wrapping product of row-major `a (m x k)` and `b (k x n)`.
fn ring_product(a: &[u64], b: &[u64], [m, k, n]: [usize; 3]) -> Vec<u64> {
    let mut c = vec![0u64; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                c[i * n + j] = c[i * n + j].wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
            }
        }
    }
    c
}

#[test]
fn batched_matrix_products_are_exact_in_one_round() {
    let dims = [[3usize, 5, 4], [1, 7, 1], [6, 2, 9]];
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let operands: Vec<(Vec<u64>, Vec<u64>)> = dims
        .iter()
        .map(|&[m, k, n]| {
            (
                (0..m * k).map(|_| rng.random()).collect(),
                (0..k * n).map(|_| rng.random()).collect(),
            )
        })
        .collect();
    let flat: Vec<u64> = operands
        .iter()
        .flat_map(|(a, b)| a.iter().chain(b).copied())
        .collect();
    let requests: Vec<Request> = dims
        .iter()
        .map(|&[m, k, n]| Request::MatTriple { m, k, n })
        .collect();
    for n in [2, 3] {
        let got = on_shares(n, &flat, requests.clone(), |p, s| {
            let rounds = p.stats().rounds;
            let mut parts = Vec::new();
            let mut at = 0;
            for &[m, k, n] in &dims {
                parts.push((
                    s[at..at + m * k].to_vec(),
                    s[at + m * k..at + m * k + k * n].to_vec(),
                ));
                at += m * k + k * n;
            }
            let pairs: Vec<(&Vec<u64>, &Vec<u64>)> = parts.iter().map(|(a, b)| (a, b)).collect();
            let out = p.matmuls(&pairs, &dims)?;
            assert_eq!(p.stats().rounds - rounds, 1, "one round for all products");
            Ok(out.concat())
        });
        let want: Vec<u64> = operands
            .iter()
            .zip(&dims)
            .flat_map(|((a, b), &d)| ring_product(a, b, d))
            .collect();
        assert_eq!(got, want, "n = {n}");
    }
}

/// The same functions under spdz2k: authenticated input, the batched MAC check before the output leaves,
/// the recipient's output check; the results meet the same bounds.
#[test]
fn transformer_functions_verify_under_spdz2k() {
    use veil_protocols::domain::Domain;
    use veil_protocols::prg::Seed;
    use veil_protocols::spdz2k::{local as auth, Spdz2k};

    let gelu = GeluEven::default_fit().unwrap();
    let exp = ExpNeg::default_fit().unwrap();
    let l2 = NewtonConfig {
        lo: -10,
        hi: 16,
        iterations: 3,
    };
    let (rows, cols) = (4, 8);
    let x: Vec<f64> = grid(-6.0, 4.0, rows * cols);
    let len = x.len();
    for n in [2, 3] {
        let mut requests = vec![Request::Input { len }];
        requests.extend(gelu.requests(len, F));
        requests.extend(exp.requests(len, F));
        requests.extend(mean_pool_requests(cols, F));
        requests.extend(l2_normalize_requests(&l2, 1, cols, F));
        requests.push(Request::MatTriple {
            m: rows,
            k: cols,
            n: rows,
        });
        let committee = Committee::new(n, Arc::new(NaiveGemm));
        let seeds: Vec<Seed> = (0..n).map(|_| Seed::random()).collect();
        let dealt = auth::deal_job(&committee, &requests, &seeds).unwrap();
        let published = veil_protocols::ring::sub(&encode(&x), &dealt.deal.owner_masks[0]);
        let output_key = dealt.deal.output_key;
        let run = auth::run(&committee, &requests, &seeds, dealt, None, |party| {
            let mask = party.material().input(len)?;
            let shared = party.input_from_masked(mask, &published);
            let g = party.gelu_even(&shared, &gelu)?;
            // x - 4 <= 0.
            let mut shifted = shared.clone();
            party.add_public(&mut shifted, &encode(&vec![-4.0; len]));
            let e = party.exp_neg(&shifted, &exp)?;
            let pooled = party.mean_pool(&shared, rows, cols, None)?;
            let unit = party.l2_normalize(&pooled, 1, cols, &l2)?;
            // x (rows x cols) times its transpose, scaled back to f bits.
            let xt = Spdz2k::gather(
                &shared,
                &(0..cols)
                    .flat_map(|c| (0..rows).map(move |r| r * cols + c))
                    .collect::<Vec<_>>(),
            );
            let gram = party.matmuls(&[(&shared, &xt)], &[[rows, cols, rows]])?;
            party.verify()?;
            Ok(Spdz2k::concat(&[g, e, unit, gram[0].clone()]))
        })
        .expect("an honest run verifies");
        let outs: Vec<_> = run.parties.into_iter().map(|p| p.value).collect();
        let words = auth::open_output(&outs, output_key).expect("output MACs check");
        let got = decode(&words[..2 * len + cols]);
        let g_want: Vec<f64> = x.iter().map(|v| gelu_exact(*v)).collect();
        assert!(max_err(&got[..len], |i| g_want[i]) < 4e-3, "n = {n}: GELU");
        assert!(
            max_err(&got[len..2 * len], |i| (x[i] - 4.0).exp()) < 4e-4,
            "n = {n}: exp"
        );
        let mean: Vec<f64> = (0..cols)
            .map(|c| (0..rows).map(|r| x[r * cols + c]).sum::<f64>() / rows as f64)
            .collect();
        let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
        assert!(
            max_err(&got[2 * len..], |j| mean[j] / norm) < 1e-3,
            "n = {n}: L2-normalised mean"
        );
        let gram = decode_bits(&words[2 * len + cols..], 2 * F);
        let xq = decode(&encode(&x));
        for i in 0..rows {
            for j in 0..rows {
                let want: f64 = (0..cols).map(|c| xq[i * cols + c] * xq[j * cols + c]).sum();
                assert!((gram[i * rows + j] - want).abs() < 1e-6, "n = {n}: gram");
            }
        }
    }
}
