//! `rep3` (three-party replicated sharing, no dealer) against plaintext: every core operation, the sign
//! test's selections, pooling and argmax, and the transformer approximations with the bounds their modules
//! state; bytes and rounds pinned exactly per operation.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use veil_protocols::approx::functions::gelu_exact;
use veil_protocols::approx::{ExpNeg, GeluEven, LayerNormConfig, NewtonConfig, SoftmaxFastConfig};
use veil_protocols::gemm::NaiveGemm;
use veil_protocols::lowering::Lowering;
use veil_protocols::net::NetStats;
use veil_protocols::ops::prelude::*;
use veil_protocols::rep3::{local::run, Party, RepShare, RepWeight};
use veil_protocols::semi2k::local::{Committee, LocalNet};
use veil_protocols::semi2k::Pool2d;

const F: u32 = 16;

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

fn split(x: &[u64], seed: u64) -> [RepShare; 3] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    RepShare::split(x, || rng.random())
}

type Program<'a> =
    dyn Fn(&mut Party<LocalNet>, &[RepShare]) -> veil_protocols::Result<RepShare> + Sync + 'a;

/// Runs `program` on the parties' shares of `inputs`; returns the opened result and each party's traffic
/// during the program (after the key agreement).
fn on_shares(inputs: &[Vec<u64>], program: &Program<'_>) -> (Vec<u64>, Vec<NetStats>) {
    let shares: Vec<[RepShare; 3]> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| split(x, 100 + i as u64))
        .collect();
    let committee = Committee::new(3, Arc::new(NaiveGemm));
    let out = run(&committee, Some(7), |party| {
        let mine: Vec<RepShare> = shares.iter().map(|s| s[party.id()].clone()).collect();
        let before = party.stats().clone();
        let y = program(party, &mine)?;
        Ok((y, party.stats().since(&before)))
    })
    .expect("run succeeds");
    let ys: [RepShare; 3] = std::array::from_fn(|i| out[i].value.0.clone());
    let stats = out.iter().map(|p| p.value.1.clone()).collect();
    (
        RepShare::reconstruct(&ys).expect("consistent shares"),
        stats,
    )
}

fn sent(stats: &[NetStats]) -> Vec<u64> {
    stats.iter().map(|s| s.bytes_sent).collect()
}

fn rounds(stats: &[NetStats]) -> Vec<u64> {
    stats.iter().map(|s| s.rounds).collect()
}

#[test]
fn sharing_is_replicated_and_open_reveals() {
    let x: Vec<u64> = (0..100u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let s = split(&x, 1);
    assert_eq!(RepShare::reconstruct(&s).unwrap(), x);
    let (opened, stats) = on_shares(std::slice::from_ref(&x), &|p, s| {
        let v = p.open(&s[0])?;
        Ok(p.share_public(&v))
    });
    assert_eq!(opened, x);
    assert_eq!(sent(&stats), vec![800, 800, 800]);
    assert_eq!(rounds(&stats), vec![1, 1, 1]);
}

#[test]
fn products_are_exact_with_one_element_per_party() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x: Vec<u64> = (0..64).map(|_| rng.random()).collect();
    let y: Vec<u64> = (0..64).map(|_| rng.random()).collect();
    let want: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a.wrapping_mul(*b)).collect();
    let (got, stats) = on_shares(&[x.clone(), y.clone()], &|p, s| p.mul(&s[0], &s[1]));
    assert_eq!(got, want);
    assert_eq!(sent(&stats), vec![512, 512, 512]);
    assert_eq!(rounds(&stats), vec![1, 1, 1]);

    // Two matrix products in one round: bytes are the outputs' (3x5 + 2x2 elements).
    let a: Vec<u64> = (0..12).map(|_| rng.random()).collect();
    let b: Vec<u64> = (0..20).map(|_| rng.random()).collect();
    let c: Vec<u64> = (0..6).map(|_| rng.random()).collect();
    let d: Vec<u64> = (0..6).map(|_| rng.random()).collect();
    let product = |l: &[u64], r: &[u64], [m, k, n]: [usize; 3]| -> Vec<u64> {
        let mut out = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                for t in 0..k {
                    out[i * n + j] =
                        out[i * n + j].wrapping_add(l[i * k + t].wrapping_mul(r[t * n + j]));
                }
            }
        }
        out
    };
    let mut want = product(&a, &b, [3, 4, 5]);
    want.extend(product(&c, &d, [2, 3, 2]));
    let (got, stats) = on_shares(&[a, b, c, d], &|p, s| {
        let out = p.matmuls(&[(&s[0], &s[1]), (&s[2], &s[3])], &[[3, 4, 5], [2, 3, 2]])?;
        Ok(<Party<LocalNet> as MpcOps>::concat(&out))
    });
    assert_eq!(got, want);
    assert_eq!(sent(&stats), vec![19 * 8; 3]);
    assert_eq!(rounds(&stats), vec![1, 1, 1]);

    // A fixed shared weight: lower(x) W with a dense lowering.
    let xw: Vec<u64> = (0..2 * 6).map(|_| rng.random()).collect();
    let w: Vec<u64> = (0..6 * 3).map(|_| rng.random()).collect();
    let want = product(&xw, &w, [2, 6, 3]);
    let ws = split(&w, 9);
    let (got, stats) = on_shares(&[xw], &|p, s| {
        let weight = RepWeight::new(&ws[p.id()], [6, 3])?;
        p.weight_product(&s[0], 2, Lowering::Dense { features: 6 }, &weight)
    });
    assert_eq!(got, want);
    assert_eq!(sent(&stats), vec![48, 48, 48]);
}

#[test]
fn truncation_is_within_one_ulp_over_the_whole_range() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // Every magnitude up to 2^62, including the largest products of 3f fractional bits.
    let mut z: Vec<i64> = (0..4096)
        .map(|i| {
            let bits = 1 + (i % 61);
            rng.random_range(-(1i64 << bits)..(1i64 << bits))
        })
        .collect();
    z[..4].copy_from_slice(&[(1 << 62) - 1, -(1 << 62) + 1, 0, -1]);
    let words: Vec<u64> = z.iter().map(|&v| v as u64).collect();
    let (got, stats) = on_shares(&[words], &|p, s| p.trunc(&s[0]));
    for (g, v) in got.iter().zip(&z) {
        let d = (v >> F) - (*g as i64);
        assert!(
            (0..=1).contains(&d),
            "trunc({v}) = {}, off by {d}",
            *g as i64
        );
    }
    assert_eq!(sent(&stats), vec![4096 * 16, 4096 * 8, 4096 * 8]);
    assert_eq!(rounds(&stats), vec![1, 1, 0]);
}

fn signed(v: &[u64]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

#[test]
fn sign_test_selects_exactly_with_pinned_traffic() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 200;
    let mut z: Vec<i64> = (0..n).map(|_| rng.random()).collect();
    z[..8].copy_from_slice(&[0, -1, 1, i64::MIN, i64::MAX, -2, 2, 1 << 62]);
    let words: Vec<u64> = z.iter().map(|&v| v as u64).collect();
    let payload: Vec<u64> = (0..n).map(|_| rng.random()).collect();
    let (got, stats) = on_shares(&[words.clone(), payload.clone()], &|p, s| {
        let out = p.sign_select(SignSelect {
            z: &s[0],
            truncate: false,
            select_self: true,
            extras: vec![s[1].clone()],
        })?;
        Ok(<Party<LocalNet> as MpcOps>::concat(&out))
    });
    for i in 0..n {
        let b = u64::from(z[i] >= 0);
        assert_eq!(got[i], b.wrapping_mul(words[i]), "relu of {}", z[i]);
        assert_eq!(
            got[n + i],
            b.wrapping_mul(payload[i]),
            "payload at {}",
            z[i]
        );
    }
    // n = 200: w = 4 words per plane, k = 2 payloads.
    let w = 4u64;
    let n = n as u64;
    assert_eq!(
        sent(&stats),
        vec![
            8 * (94 * w + 60 * w + 5 * n),
            8 * (64 * w + 61 * w + 2 * n),
            8 * (64 * w + 61 * w + 2 * n),
        ]
    );
    assert_eq!(rounds(&stats), vec![6, 7, 5]);
}

#[test]
fn relu_drelu_trunc_relu_and_max() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x: Vec<f64> = (0..300).map(|_| rng.random_range(-100.0..100.0)).collect();
    let y: Vec<f64> = (0..300).map(|_| rng.random_range(-100.0..100.0)).collect();
    let (ex, ey) = (encode(&x), encode(&y));
    let (relu, _) = on_shares(std::slice::from_ref(&ex), &|p, s| p.relu(&s[0]));
    let (drelu, _) = on_shares(std::slice::from_ref(&ex), &|p, s| p.drelu(&s[0]));
    let (max, _) = on_shares(&[ex.clone(), ey.clone()], &|p, s| p.max(&s[0], &s[1]));
    let wide: Vec<u64> = encode(&x).iter().map(|v| v.wrapping_mul(1 << F)).collect();
    let (trunc_relu, stats) = on_shares(&[wide], &|p, s| p.trunc_relu(&s[0]));
    for i in 0..x.len() {
        assert_eq!(relu[i], if x[i] >= 0.0 { ex[i] } else { 0 });
        assert_eq!(drelu[i], u64::from(x[i] >= 0.0));
        assert_eq!(max[i], if x[i] >= y[i] { ex[i] } else { ey[i] });
        let want = if x[i] >= 0.0 { ex[i] as i64 } else { 0 };
        assert!(
            (signed(&trunc_relu)[i] - want).abs() <= 1,
            "trunc_relu at {}",
            x[i]
        );
    }
    // Truncation rides in the sign test's first two hops: party 0 sends 2n more words, the pair n more each;
    // rounds unchanged.
    let (w, n) = (5u64, 300u64);
    assert_eq!(
        sent(&stats),
        vec![
            8 * (94 * w + 60 * w + 3 * n + 2 * n),
            8 * (64 * w + 61 * w + n + n),
            8 * (64 * w + 61 * w + n + n),
        ]
    );
    assert_eq!(rounds(&stats), vec![6, 7, 5]);
}

#[test]
fn max_pooling_and_argmax() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let pool = Pool2d {
        channels: 2,
        height: 4,
        width: 4,
        kernel: [2, 2],
        stride: [2, 2],
    };
    let x: Vec<f64> = (0..2 * 32).map(|_| rng.random_range(-50.0..50.0)).collect();
    let (got, _) = on_shares(&[encode(&x)], &|p, s| p.max_pool2d(&s[0], 2, &pool));
    let got = decode(&got);
    for b in 0..2 {
        for c in 0..2 {
            for oy in 0..2 {
                for ox in 0..2 {
                    let at =
                        |dy: usize, dx: usize| x[b * 32 + c * 16 + (2 * oy + dy) * 4 + 2 * ox + dx];
                    let want = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                    let g = got[b * 8 + c * 4 + oy * 2 + ox];
                    assert!((g - want).abs() < 1e-4, "{g} vs {want}");
                }
            }
        }
    }
    let (rows, cols) = (7, 10);
    let v: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random_range(-5.0..5.0))
        .collect();
    let (got, _) = on_shares(&[encode(&v)], &|p, s| p.argmax(&s[0], rows, cols));
    for r in 0..rows {
        let row = &v[r * cols..(r + 1) * cols];
        let best = (0..cols).fold(0, |b, c| if row[c] > row[b] { c } else { b });
        assert_eq!(got[r], best as u64, "row {r}");
    }
}

fn max_err(got: &[f64], want: impl Fn(usize) -> f64) -> f64 {
    got.iter()
        .enumerate()
        .map(|(i, g)| (g - want(i)).abs())
        .fold(0.0, f64::max)
}

#[test]
fn transformer_approximations_meet_their_bounds() {
    // GELU (even polynomial): 4e-3 everywhere (as approx_transformer.rs asserts for semi2k).
    let xs: Vec<f64> = (0..2001)
        .map(|i| -8.0 + 16.0 * f64::from(i) / 2000.0)
        .collect();
    let gelu = GeluEven::default_fit().unwrap();
    let (got, _) = on_shares(&[encode(&xs)], &|p, s| p.gelu_even(&s[0], &gelu));
    let err = max_err(&decode(&got), |i| gelu_exact(xs[i]));
    assert!(err < 4e-3, "gelu error {err}");

    // exp on x <= 0: 4e-4.
    let xs: Vec<f64> = (0..1001).map(|i| -20.0 * f64::from(i) / 1000.0).collect();
    let exp = ExpNeg::default_fit().unwrap();
    let (got, _) = on_shares(&[encode(&xs)], &|p, s| p.exp_neg(&s[0], &exp));
    let err = max_err(&decode(&got), |i| xs[i].exp());
    assert!(err < 4e-4, "exp error {err}");

    // softmax rows.
    let (rows, cols) = (6, 32);
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let x: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random_range(-12.0..12.0))
        .collect();
    let cfg = SoftmaxFastConfig {
        exp: ExpNeg::default_fit().unwrap(),
        iterations: 3,
    };
    let (got, _) = on_shares(&[encode(&x)], &|p, s| {
        p.softmax_fast(&s[0], rows, cols, &cfg)
    });
    let got = decode(&got);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for c in 0..cols {
            let want = (row[c] - max).exp() / z;
            assert!((got[r * cols + c] - want).abs() < 2e-3);
        }
    }

    // Reciprocal and rsqrt on their ranges.
    let xs: Vec<f64> = (0..200)
        .map(|i| 1.0 + 63.0 * f64::from(i) / 199.0)
        .collect();
    let newton = NewtonConfig {
        lo: 0,
        hi: 5,
        iterations: 3,
    };
    let (got, _) = on_shares(&[encode(&xs)], &|p, s| p.reciprocal(&s[0], &newton));
    let err = max_err(&decode(&got), |i| 1.0 / xs[i]);
    assert!(err < 1e-3, "reciprocal error {err}");
    let (got, _) = on_shares(&[encode(&xs)], &|p, s| p.rsqrt(&s[0], &newton));
    let err = max_err(&decode(&got), |i| 1.0 / xs[i].sqrt());
    assert!(err < 1e-3, "rsqrt error {err}");

    // LayerNorm, mean pooling and L2 normalisation.
    let (rows, cols) = (5, 48);
    let x: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let ln = LayerNormConfig {
        epsilon: 1e-12,
        rsqrt: NewtonConfig {
            lo: -14,
            hi: 14,
            iterations: 3,
        },
    };
    let (got, _) = on_shares(&[encode(&x)], &|p, s| p.layer_norm(&s[0], rows, cols, &ln));
    let got = decode(&got);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
        for c in 0..cols {
            let want = (row[c] - mean) / var.sqrt();
            assert!((got[r * cols + c] - want).abs() < 1e-2, "layer norm");
        }
    }
    let (got, _) = on_shares(&[encode(&x)], &|p, s| p.mean_pool(&s[0], rows, cols, None));
    let got = decode(&got);
    for c in 0..cols {
        let want = (0..rows).map(|r| x[r * cols + c]).sum::<f64>() / rows as f64;
        assert!((got[c] - want).abs() < 1e-3);
    }
    let l2 = NewtonConfig {
        lo: -10,
        hi: 16,
        iterations: 3,
    };
    let (got, _) = on_shares(&[encode(&x[..cols])], &|p, s| {
        p.l2_normalize(&s[0], 1, cols, &l2)
    });
    let got = decode(&got);
    let norm = x[..cols].iter().map(|v| v * v).sum::<f64>().sqrt();
    for c in 0..cols {
        assert!((got[c] - x[c] / norm).abs() < 2e-3, "l2 normalize");
    }
}

#[test]
fn a_linear_layer_and_its_truncation_take_one_product_per_party() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let (m, k, n) = (4, 6, 5);
    let x: Vec<f64> = (0..m * k).map(|_| rng.random_range(-4.0..4.0)).collect();
    let w: Vec<f64> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f64> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let r: Vec<f64> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let wide = |v: &[f64]| -> Vec<u64> {
        v.iter()
            .map(|x| (x * f64::from(2 * F).exp2()).round() as i64 as u64)
            .collect()
    };
    let (ew, eb) = (encode(&w), wide(&b));
    let (got, stats) = on_shares(&[encode(&x), wide(&r)], &|p, s| {
        p.linear_trunc([m, k, n], &s[0], &ew, &eb, Some(&s[1]))
    });
    let got = decode(&got);
    for i in 0..m {
        for j in 0..n {
            let want = (0..k).map(|t| x[i * k + t] * w[t * n + j]).sum::<f64>()
                + b[i * n + j]
                + r[i * n + j];
            assert!(
                (got[i * n + j] - want).abs() < 1e-3,
                "{} vs {want}",
                got[i * n + j]
            );
        }
    }
    let len = (m * n) as u64;
    assert_eq!(sent(&stats), vec![16 * len, 8 * len, 8 * len]);
}
