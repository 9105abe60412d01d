//! Piecewise polynomial approximation of a function of one shared variable, in the spirit of PUMA (Dong et
//! al., "PUMA: Secure Inference of LLaMA-7B in Five Minutes", 2023) and BumbleBee (Lu et al., NDSS 2025):
//! linear tails outside `[t_0, t_m]`, a fitted polynomial on each segment `[t_i, t_{i+1}]` between.
//!
//! Evaluation on shares (values `v_0 = low(x)`, `v_{i+1} = p_i(x)`, `v_{m+1} = high(x)`, bits
//! `b_i = [x >= t_i]`): `f(x) = v_0 + sum_i b_i (v_{i+1} - v_i)`. The sum telescopes to the value of the segment
//! that holds `x`, exactly in the ring, so the other segments' values may be anything, even overflowed
//! garbage: that is why every segment is evaluated on every input, and no range check is needed.
//!
//! 1. `u_i = (x - mid_i) / half_i` for every segment (one public product and one truncation: 1 round); each
//!    segment's polynomial is fitted in `u in [-1, 1]`, which keeps coefficients and powers small.
//! 2. Powers `u^2 .. u^d` for the largest degree `d`, doubling each level (`u^(k+j) = u^k u^j`):
//!    `ceil(log2 d)` levels of one Beaver product and one truncation (2 rounds each).
//! 3. Every `v_i` as a public linear combination of powers with `2f` fractional bits, truncated once (1 round).
//! 4. One sign test on all `x - t_i` at once, multiplying the bits into the differences `v_{i+1} - v_i` in the
//!    same rounds (7 rounds).
//!
//! Rounds: `1 + 2 ceil(log2 d) + 1 + 7`; degree 6 gives 15. Error: the fit's error on the segment (computed at
//! fit time, [`Piecewise::fit_error`]) plus a few ulps of `2^-f` from the truncations, each at most 1 ulp.
//!
//! Input range: any `x` with `|x - mid_i| / half_i < 2^(62 - 2f)` for every segment (for f = 16 and segments
//! of width at least 1, `|x| < 2^29`); inside it the result is the piece that holds `x`.

use crate::error::{ensure_shape, ProtocolError, Result};
use crate::material::Request;
use crate::ops::{MpcOps, SignSelect};

use super::fit;

/// `constant + slope * x`: a tail of the approximation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    /// Value at 0.
    pub constant: f64,
    /// Slope.
    pub slope: f64,
}

/// One polynomial piece on `[start, end]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Left end (inclusive; also the threshold where this piece takes over).
    pub start: f64,
    /// Right end.
    pub end: f64,
    /// Degree of the polynomial (at least 1).
    pub degree: usize,
}

/// The knobs of a piecewise approximation: tails and segments (contiguous, increasing).
#[derive(Debug, Clone, PartialEq)]
pub struct PiecewiseConfig {
    /// Below the first segment.
    pub low: Linear,
    /// The polynomial pieces, each starting where the previous one ends.
    pub segments: Vec<Segment>,
    /// Above the last segment.
    pub high: Linear,
    /// Chebyshev nodes per segment for the least-squares fit.
    pub fit_nodes: usize,
}

/// A fitted piecewise approximation, ready to evaluate on shares or in the clear.
#[derive(Debug, Clone)]
pub struct Piecewise {
    config: PiecewiseConfig,
    /// Per segment: coefficients in `u = (x - mid) / half`.
    coefficients: Vec<Vec<f64>>,
}

fn bad(what: String) -> ProtocolError {
    ProtocolError::Shape {
        op: "piecewise",
        detail: what,
    }
}

impl Piecewise {
    /// Fits `f` on every segment of `config`.
    pub fn fit(config: PiecewiseConfig, f: impl Fn(f64) -> f64) -> Result<Self> {
        if config.segments.is_empty() {
            return Err(bad("at least one segment is needed".into()));
        }
        for (i, s) in config.segments.iter().enumerate() {
            let ordered = s.start.is_finite() && s.end.is_finite() && s.start < s.end;
            if !ordered || s.degree == 0 || s.degree > 16 {
                return Err(bad(format!(
                    "segment {i}: needs start < end and degree in 1..=16"
                )));
            }
            if let Some(next) = config.segments.get(i + 1) {
                if next.start != s.end {
                    return Err(bad(format!(
                        "segment {} does not start where {i} ends",
                        i + 1
                    )));
                }
            }
        }
        let coefficients = config
            .segments
            .iter()
            .map(|s| {
                let (mid, half) = ((s.start + s.end) / 2.0, (s.end - s.start) / 2.0);
                fit::least_squares(|u| f(mid + half * u), s.degree, config.fit_nodes)
            })
            .collect();
        Ok(Self {
            config,
            coefficients,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PiecewiseConfig {
        &self.config
    }

    /// The approximation in f64 (what the shares compute, up to fixed-point rounding).
    pub fn eval_plain(&self, x: f64) -> f64 {
        let segs = &self.config.segments;
        if x < segs[0].start {
            return self.config.low.constant + self.config.low.slope * x;
        }
        for (s, c) in segs.iter().zip(&self.coefficients) {
            if x < s.end {
                let (mid, half) = ((s.start + s.end) / 2.0, (s.end - s.start) / 2.0);
                return fit::eval(c, (x - mid) / half);
            }
        }
        self.config.high.constant + self.config.high.slope * x
    }

    /// The largest `|approximation - f|` over `samples` evenly spaced points of `[from, to]`, in f64.
    pub fn fit_error(&self, f: impl Fn(f64) -> f64, from: f64, to: f64, samples: usize) -> f64 {
        (0..=samples)
            .map(|i| from + (to - from) * i as f64 / samples as f64)
            .map(|x| (self.eval_plain(x) - f(x)).abs())
            .fold(0.0, f64::max)
    }

    fn max_degree(&self) -> usize {
        self.config
            .segments
            .iter()
            .map(|s| s.degree)
            .max()
            .unwrap_or(1)
    }

    /// The multiplication levels: `(from, count)` computes powers `from + 1 ..= from + count` as
    /// `u^from * u^1 ..= u^from * u^count`.
    fn levels(&self) -> Vec<(usize, usize)> {
        let d = self.max_degree();
        let mut have = 1;
        let mut out = Vec::new();
        while have < d {
            let count = have.min(d - have);
            out.push((have, count));
            have += count;
        }
        out
    }

    /// The dealer material [`PiecewiseOps::piecewise`] consumes for `len` values, in order.
    pub fn requests(&self, len: usize, frac_bits: u32) -> Vec<Request> {
        let s = self.config.segments.len();
        let mut out = vec![Request::Trunc {
            len: s * len,
            frac_bits,
        }];
        for (_, count) in self.levels() {
            out.push(Request::Triples {
                len: count * s * len,
            });
            out.push(Request::Trunc {
                len: count * s * len,
                frac_bits,
            });
        }
        out.push(Request::Trunc {
            len: (s + 2) * len,
            frac_bits,
        });
        out.push(Request::Sign {
            len: (s + 1) * len,
            truncate: None,
            payloads: 1,
        });
        out
    }
}

/// `round(v * 2^bits)` as a ring element (two's complement).
pub(crate) fn fixed(v: f64, bits: u32) -> u64 {
    (v * (bits as f64).exp2()).round() as i64 as u64
}

/// The approximations of this module on any protocol's shares (a blanket implementation covers every
/// [`MpcOps`]).
pub trait PiecewiseOps: MpcOps + Sized {
    /// Shares of `approx.eval_plain(x)` for shared fixed-point `x`; see the module doc for rounds and error.
    fn piecewise(&mut self, x: &Self::Share, approx: &Piecewise) -> Result<Self::Share> {
        let n = Self::len(x);
        let f = self.fixed_point().frac_bits();
        let segs = &approx.config.segments;
        let s = segs.len();
        // 1. u_i = (x - mid_i) * (1 / half_i), one truncation for all segments.
        let scaled: Vec<Self::Share> = segs
            .iter()
            .map(|seg| {
                let (mid, half) = ((seg.start + seg.end) / 2.0, (seg.end - seg.start) / 2.0);
                let mut centred = x.clone();
                self.add_public(&mut centred, &vec![fixed(-mid, f); n]);
                Self::mul_public(&centred, &vec![fixed(1.0 / half, f); n])
            })
            .collect();
        let u = self.trunc(&Self::concat(&scaled))?;
        // 2. Powers, all segments at once: powers[k - 1] = u^k (length s * n each).
        let mut powers = vec![u];
        for (from, count) in approx.levels() {
            let left = Self::concat(&vec![powers[from - 1].clone(); count]);
            let right = Self::concat(&powers[..count]);
            let product = self.mul(&left, &right)?;
            let next = self.trunc(&product)?;
            for j in 0..count {
                powers.push(Self::slice(&next, j * s * n..(j + 1) * s * n));
            }
        }
        // 3. The values with 2f fractional bits, then one truncation: [low, segment 0.., high].
        let tail = |line: &Linear, party: &Self| {
            let mut v = Self::mul_public(x, &vec![fixed(line.slope, f); n]);
            party.add_public(&mut v, &vec![fixed(line.constant, 2 * f); n]);
            v
        };
        let mut values = vec![tail(&approx.config.low, self)];
        for (i, c) in approx.coefficients.iter().enumerate() {
            let mut v = self.share_public(&vec![fixed(c[0], 2 * f); n]);
            for (k, ck) in c.iter().enumerate().skip(1) {
                let p = Self::slice(&powers[k - 1], i * n..(i + 1) * n);
                v = Self::add(&v, &Self::mul_public(&p, &vec![fixed(*ck, f); n]));
            }
            values.push(v);
        }
        values.push(tail(&approx.config.high, self));
        let values = self.trunc(&Self::concat(&values))?;
        let value = |i: usize| Self::slice(&values, i * n..(i + 1) * n);
        // 4. Bits [x >= t_i] times the differences, in one sign test.
        let thresholds: Vec<f64> = segs
            .iter()
            .map(|seg| seg.start)
            .chain(segs.last().map(|seg| seg.end))
            .collect();
        let tests: Vec<Self::Share> = thresholds
            .iter()
            .map(|t| {
                let mut z = x.clone();
                self.add_public(&mut z, &vec![fixed(-t, f); n]);
                z
            })
            .collect();
        let diffs: Vec<Self::Share> = (0..=s)
            .map(|i| Self::sub(&value(i + 1), &value(i)))
            .collect();
        let selected = self
            .sign_select(SignSelect {
                z: &Self::concat(&tests),
                truncate: false,
                select_self: false,
                extras: vec![Self::concat(&diffs)],
            })?
            .pop()
            .ok_or_else(|| bad("the sign test returned no payload".into()))?;
        let mut out = value(0);
        for i in 0..=s {
            out = Self::add(&out, &Self::slice(&selected, i * n..(i + 1) * n));
        }
        ensure_shape(Self::len(&out) == n, "piecewise", || "output length".into())?;
        Ok(out)
    }
}

impl<P: MpcOps> PiecewiseOps for P {}
