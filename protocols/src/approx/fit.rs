//! Polynomial fits in plain f64: least squares on Chebyshev nodes of `[-1, 1]`, solved by Householder QR.
//!
//! Used once per approximation, when its configuration is turned into coefficients; nothing here touches
//! secret data. Chebyshev nodes make the least-squares fit close to the minimax one (within a small factor),
//! and fitting in the variable `u in [-1, 1]` keeps the monomial basis well conditioned.

/// Coefficients `c[0..=degree]` of `p(u) = sum c[k] u^k` minimising the squared error to `f` over `nodes`
/// Chebyshev nodes of `[-1, 1]` (`nodes > degree`).
pub fn least_squares(f: impl Fn(f64) -> f64, degree: usize, nodes: usize) -> Vec<f64> {
    let nodes = nodes.max(degree + 1);
    let cols = degree + 1;
    // Design matrix A (nodes x cols), row-major, and right-hand side b.
    let mut a = vec![0f64; nodes * cols];
    let mut b = vec![0f64; nodes];
    for i in 0..nodes {
        let u = (std::f64::consts::PI * (2 * i + 1) as f64 / (2 * nodes) as f64).cos();
        let mut p = 1.0;
        for k in 0..cols {
            a[i * cols + k] = p;
            p *= u;
        }
        b[i] = f(u);
    }
    // Householder QR, applied to b as it goes.
    for k in 0..cols {
        let norm = (k..nodes)
            .map(|i| a[i * cols + k].powi(2))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if a[k * cols + k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (k..nodes).map(|i| a[i * cols + k]).collect();
        v[0] -= alpha;
        let vnorm2: f64 = v.iter().map(|x| x * x).sum();
        if vnorm2 == 0.0 {
            continue;
        }
        for j in k..cols {
            let dot: f64 = (k..nodes).map(|i| v[i - k] * a[i * cols + j]).sum();
            let s = 2.0 * dot / vnorm2;
            for i in k..nodes {
                a[i * cols + j] -= s * v[i - k];
            }
        }
        let dot: f64 = (k..nodes).map(|i| v[i - k] * b[i]).sum();
        let s = 2.0 * dot / vnorm2;
        for i in k..nodes {
            b[i] -= s * v[i - k];
        }
    }
    // Back substitution on the upper triangle.
    let mut c = vec![0f64; cols];
    for k in (0..cols).rev() {
        let rest: f64 = (k + 1..cols).map(|j| a[k * cols + j] * c[j]).sum();
        let diag = a[k * cols + k];
        c[k] = if diag == 0.0 {
            0.0
        } else {
            (b[k] - rest) / diag
        };
    }
    c
}

/// `sum c[k] u^k` by Horner's rule.
pub fn eval(c: &[f64], u: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, ck| acc * u + ck)
}

/// The standard normal CDF via erf; erf from its Maclaurin series for |x| < 3 and the asymptotic continued
/// fraction beyond (both accurate to about 1e-15 where used). A reference for fitting, not for secrets.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// The error function, to about 1e-15.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let value = if z < 3.0 {
        // erf(z) = 2/sqrt(pi) * sum_n (-1)^n z^(2n+1) / (n! (2n+1))
        let mut term = z;
        let mut sum = z;
        // For z < 3 the terms fall below 1e-17 of the sum well within 100 steps.
        for n in 1..100 {
            let n = f64::from(n);
            term *= -z * z / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...)))) (Lentz would do; 60 terms
        // of the backward recurrence are plenty for z >= 3).
        let mut frac = 0.0;
        for k in (1..=60).rev() {
            frac = (k as f64 / 2.0) / (z + frac);
        }
        1.0 - (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + frac)
    };
    value.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_a_polynomial_exactly() {
        let c = least_squares(|u| 1.0 - 2.0 * u + 0.5 * u.powi(3), 4, 40);
        let want = [1.0, -2.0, 0.0, 0.5, 0.0];
        for (a, b) in c.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{c:?}");
        }
        assert!((eval(&c, 0.3) - (1.0 - 0.6 + 0.5 * 0.027)).abs() < 1e-12);
    }

    #[test]
    fn erf_matches_known_values() {
        // Values from Abramowitz & Stegun, Table 7.1.
        for (x, e) in [
            (0.5, 0.520_499_877_813_047),
            (1.0, 0.842_700_792_949_715),
            (2.0, 0.995_322_265_018_953),
            (3.5, 0.999_999_256_901_628),
        ] {
            assert!((erf(x) - e).abs() < 1e-13, "erf({x})");
            assert!((erf(-x) + e).abs() < 1e-13);
        }
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-15);
    }
}
