//! The transformer approximations on shares against f64, for n in {2, 3}: every error bound stated in
//! `protocols/src/approx/` is asserted here over its stated input range, under semi2k, and GELU and softmax
//! also under spdz2k (with the MAC check and the output check passing).

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_protocols::approx::fit::{erf, normal_cdf};
use veil_protocols::approx::functions::{exp, gelu, gelu_exact};
use veil_protocols::approx::rows::{layer_norm_requests, softmax_requests};
use veil_protocols::approx::{LayerNormConfig, NewtonConfig, SoftmaxConfig};
use veil_protocols::gemm::NaiveGemm;
use veil_protocols::material::Request;
use veil_protocols::semi2k::local::{run, Committee, DealtSeeds, LocalNet};
use veil_protocols::semi2k::Party;
use veil_protocols::share::{reconstruct, share};

const F: u32 = 16;

fn encode(v: &[f64]) -> Vec<u64> {
    v.iter()
        .map(|x| (x * f64::from(F).exp2()).round() as i64 as u64)
        .collect()
}

fn decode(v: &[u64]) -> Vec<f64> {
    v.iter()
        .map(|x| *x as i64 as f64 / f64::from(F).exp2())
        .collect()
}

/// Runs `program` on the shares of `x` among `n` parties and decodes the reconstructed result.
fn on_shares<P>(n: usize, x: &[f64], reqs: Vec<Request>, program: P) -> Vec<f64>
where
    P: Fn(&mut Party<LocalNet>, &[u64]) -> veil_protocols::Result<Vec<u64>> + Sync,
{
    let mut rng = ChaCha8Rng::seed_from_u64(x.len() as u64 + n as u64);
    let shares = share(&encode(x), n, &mut rng).unwrap();
    let committee = Committee::new(n, Arc::new(NaiveGemm));
    let out = run(
        &committee,
        &reqs,
        &[],
        &DealtSeeds::random(n),
        |party, _| program(party, &shares[party.id()]),
    )
    .expect("run succeeds");
    decode(&reconstruct(&out.parties.into_iter().map(|p| p.value).collect::<Vec<_>>()).unwrap())
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
fn reference_functions_are_right() {
    assert!((gelu_exact(1.0) - 0.841_344_746_068_543).abs() < 1e-12);
    assert!((normal_cdf(-1.0) - 0.158_655_253_931_457).abs() < 1e-12);
    assert!((erf(0.1) - 0.112_462_916_018_285).abs() < 1e-13);
}

#[test]
fn gelu_error_is_within_4e_4_everywhere() {
    let approx = gelu().unwrap();
    let fit = approx.fit_error(gelu_exact, -12.0, 12.0, 24_000);
    assert!(fit < 2e-4, "fit error {fit}");
    let mut x = grid(-8.0, 8.0, 401);
    x.extend([-1000.0, -30.0, 30.0, 1000.0, 5000.0]);
    for n in [2, 3] {
        let got = on_shares(n, &x, approx.requests(x.len(), F), |p, s| {
            p.piecewise(&s.to_vec(), &approx)
        });
        let err = max_err(&got, |i| gelu_exact(x[i]));
        assert!(err < 4e-4, "n = {n}: GELU on shares off by {err}");
    }
}

#[test]
fn exp_error_is_within_1e_4_for_non_positive_inputs() {
    let approx = exp().unwrap();
    let fit = approx.fit_error(f64::exp, -40.0, 0.0, 40_000);
    assert!(fit < 2e-5, "fit error {fit}");
    let mut x = grid(-20.0, 0.0, 401);
    x.extend([-1000.0, -100.0]);
    for n in [2, 3] {
        let got = on_shares(n, &x, approx.requests(x.len(), F), |p, s| {
            p.piecewise(&s.to_vec(), &approx)
        });
        let err = max_err(&got, |i| x[i].exp());
        assert!(err < 1e-4, "n = {n}: exp on shares off by {err}");
    }
}

#[test]
fn reciprocal_relative_error_is_small_on_its_range() {
    let cfg = NewtonConfig {
        lo: 0,
        hi: 8,
        iterations: 3,
    };
    // [1, 512): relative error (1/3)^8 from Newton plus fixed-point ulps on 1/x.
    let x: Vec<f64> = grid(0.0, 8.99, 300).iter().map(|e| e.exp2()).collect();
    for n in [2, 3] {
        let got = on_shares(n, &x, cfg.reciprocal_requests(x.len(), F), |p, s| {
            p.reciprocal(&s.to_vec(), &cfg)
        });
        for (xi, g) in x.iter().zip(&got) {
            let want = 1.0 / xi;
            let bound = 2e-4 * want + 4.0 * f64::from(F).exp2().recip();
            assert!(
                (g - want).abs() < bound,
                "n = {n}: 1/{xi} = {g}, want {want}"
            );
        }
    }
}

#[test]
fn rsqrt_relative_error_is_small_on_its_range() {
    let cfg = NewtonConfig {
        lo: -6,
        hi: 6,
        iterations: 3,
    };
    let x: Vec<f64> = grid(-6.0, 6.99, 300).iter().map(|e| e.exp2()).collect();
    for n in [2, 3] {
        let got = on_shares(n, &x, cfg.rsqrt_requests(x.len(), F), |p, s| {
            p.rsqrt(&s.to_vec(), &cfg)
        });
        for (xi, g) in x.iter().zip(&got) {
            let want = 1.0 / xi.sqrt();
            // Newton's relative error after 3 steps is below 2e-5; x's own rounding (2^-17 on x = 2^-6 is
            // a relative 2^-11) and the products' ulps add the rest.
            let bound = 3e-4 * want + 2e-3 * want * (2f64.powi(-6) / xi).min(1.0) + 1e-4;
            assert!(
                (g - want).abs() < bound,
                "n = {n}: rsqrt({xi}) = {g}, want {want}"
            );
        }
    }
}

#[test]
fn softmax_rows_match_f64() {
    let (rows, cols) = (6, 24);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random_range(-6.0..6.0))
        .collect();
    let cfg = SoftmaxConfig {
        exp: exp().unwrap(),
        iterations: 3,
    };
    for n in [2, 3] {
        let got = on_shares(n, &x, softmax_requests(&cfg, rows, cols, F), |p, s| {
            p.softmax(&s.to_vec(), rows, cols, &cfg)
        });
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
fn layer_norm_rows_match_f64() {
    let (rows, cols) = (5, 32);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x: Vec<f64> = (0..rows * cols)
        .map(|i| rng.random_range(-3.0..3.0) + (i / cols) as f64)
        .collect();
    let cfg = LayerNormConfig {
        epsilon: 1e-12,
        rsqrt: NewtonConfig {
            lo: -4,
            hi: 6,
            iterations: 3,
        },
    };
    for n in [2, 3] {
        let got = on_shares(n, &x, layer_norm_requests(&cfg, rows, cols, F), |p, s| {
            p.layer_norm(&s.to_vec(), rows, cols, &cfg)
        });
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let mean = row.iter().sum::<f64>() / cols as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
            for c in 0..cols {
                let want = (row[c] - mean) / (var + 1e-12).sqrt();
                let g = got[r * cols + c];
                assert!(
                    (g - want).abs() < 3e-3,
                    "n = {n}: y[{r}][{c}] = {g}, want {want}"
                );
            }
        }
    }
}

/// The same approximations under spdz2k: authenticated input, the batched MAC check before the output leaves,
/// the recipient's output check; the results meet the same bounds.
#[test]
fn gelu_and_softmax_verify_under_spdz2k() {
    use veil_protocols::prg::Seed;
    use veil_protocols::spdz2k::local as auth;

    let (rows, cols) = (3, 8);
    let x: Vec<f64> = grid(-5.0, 5.0, rows * cols);
    let gelu = gelu().unwrap();
    let softmax = SoftmaxConfig {
        exp: exp().unwrap(),
        iterations: 3,
    };
    for n in [2, 3] {
        let len = x.len();
        let mut requests = vec![Request::Input { len }];
        requests.extend(gelu.requests(len, F));
        requests.extend(softmax_requests(&softmax, rows, cols, F));
        let committee = Committee::new(n, Arc::new(NaiveGemm));
        let seeds: Vec<Seed> = (0..n).map(|_| Seed::random()).collect();
        let dealt = auth::deal_job(&committee, &requests, &seeds).unwrap();
        let published = veil_protocols::ring::sub(&encode(&x), &dealt.deal.owner_masks[0]);
        let output_key = dealt.deal.output_key;
        let run = auth::run(&committee, &requests, &seeds, dealt, None, |party| {
            let mask = party.material().input(len)?;
            let shared = party.input_from_masked(mask, &published);
            let g = party.piecewise(&shared, &gelu)?;
            let p = party.softmax(&shared, rows, cols, &softmax)?;
            party.verify()?;
            Ok(<veil_protocols::spdz2k::Spdz2k as veil_protocols::domain::Domain>::concat(&[g, p]))
        })
        .expect("an honest run verifies");
        let outs: Vec<_> = run.parties.into_iter().map(|p| p.value).collect();
        let got = decode(&auth::open_output(&outs, output_key).expect("output MACs check"));
        let err = max_err(&got[..len], |i| gelu_exact(x[i]));
        assert!(err < 4e-4, "n = {n}: spdz2k GELU off by {err}");
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
            for c in 0..cols {
                let want = (row[c] - max).exp() / z;
                let g = got[len + r * cols + c];
                assert!(
                    (g - want).abs() < 2e-3,
                    "n = {n}: spdz2k p[{r}][{c}] = {g}, want {want}"
                );
            }
        }
    }
}
