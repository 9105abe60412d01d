//! Maxima: pairwise max, 2-D max pooling and argmax, as tournaments of sign tests.
//!
//! `max(a, b) = b + ReLU(a - b)`; a tournament over `k` candidates takes `ceil(log2 k)` levels, and every
//! comparison of a level runs in the same sign test (8 rounds per level, whatever the batch).

use serde::{Deserialize, Serialize};

use crate::error::{ensure_shape, ProtocolError, Result};
use crate::net::Net;
use crate::ring;

use super::{sign::SignJob, Party};

/// Geometry of a 2-D max pooling over `[batch, channels, height, width]`, without padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool2d {
    /// Channels.
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
}

impl Pool2d {
    /// Output height and width; `None` if the window does not fit or a size is zero.
    pub fn output_hw(&self) -> Option<[usize; 2]> {
        let dim = |size: usize, k: usize, s: usize| {
            (k > 0 && s > 0 && k <= size).then(|| (size - k) / s + 1)
        };
        Some([
            dim(self.height, self.kernel[0], self.stride[0])?,
            dim(self.width, self.kernel[1], self.stride[1])?,
        ])
    }

    /// Elements of one input item.
    pub fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Elements of one output item.
    pub fn output_len(&self) -> usize {
        self.output_hw().map_or(0, |[h, w]| self.channels * h * w)
    }

    /// Window size.
    pub fn window(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// The candidates of every output, as `window` vectors of `batch * output_len` elements each.
    fn gather(&self, x: &[u64], batch: usize) -> Result<Vec<Vec<u64>>> {
        let [oh, ow] = self.output_hw().ok_or_else(|| ProtocolError::Shape {
            op: "max_pool2d",
            detail: format!(
                "window {:?} does not fit {}x{}",
                self.kernel, self.height, self.width
            ),
        })?;
        ensure_shape(x.len() == batch * self.input_len(), "max_pool2d", || {
            format!(
                "{} elements for a batch of {batch} items of {}",
                x.len(),
                self.input_len()
            )
        })?;
        let mut candidates = vec![Vec::with_capacity(batch * self.output_len()); self.window()];
        for plane in 0..batch * self.channels {
            let base = plane * self.height * self.width;
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..self.kernel[0] {
                        for kx in 0..self.kernel[1] {
                            let y = oy * self.stride[0] + ky;
                            let xx = ox * self.stride[1] + kx;
                            candidates[ky * self.kernel[1] + kx]
                                .push(x[base + y * self.width + xx]);
                        }
                    }
                }
            }
        }
        Ok(candidates)
    }
}

/// Number of pairings a tournament over `count` candidates runs at each level.
pub(crate) fn tournament_levels(mut count: usize) -> Vec<usize> {
    let mut levels = Vec::new();
    while count > 1 {
        levels.push(count / 2);
        count = count.div_ceil(2);
    }
    levels
}

impl<N: Net> Party<N> {
    /// Elementwise `max(a, b)` (8 rounds). Requires `|a - b| < 2^62`.
    pub fn max(&mut self, a: &[u64], b: &[u64]) -> Result<Vec<u64>> {
        ensure_shape(a.len() == b.len(), "max", || {
            format!("lengths {} and {}", a.len(), b.len())
        })?;
        let mut out = self.relu(&ring::sub(a, b))?;
        ring::add_assign(&mut out, b);
        Ok(out)
    }

    /// Max pooling of `batch` items (8 rounds per tournament level: 16 for a 2x2 window).
    pub fn max_pool2d(&mut self, x: &[u64], batch: usize, pool: &Pool2d) -> Result<Vec<u64>> {
        let mut candidates = pool.gather(x, batch)?;
        while candidates.len() > 1 {
            let pairs = candidates.len() / 2;
            let width = candidates[0].len();
            let mut diff = Vec::with_capacity(pairs * width);
            for j in 0..pairs {
                diff.extend(ring::sub(&candidates[2 * j], &candidates[2 * j + 1]));
            }
            let selected = self.relu(&diff)?;
            let mut next: Vec<Vec<u64>> = (0..pairs)
                .map(|j| {
                    let mut m = selected[j * width..(j + 1) * width].to_vec();
                    ring::add_assign(&mut m, &candidates[2 * j + 1]);
                    m
                })
                .collect();
            if candidates.len() % 2 == 1 {
                next.extend(candidates.pop());
            }
            candidates = next;
        }
        Ok(candidates.pop().unwrap_or_default())
    }

    /// Index of the largest of each row of `x` (`rows x cols`), as additive shares of an integer (8 rounds per
    /// level, `ceil(log2 cols)` levels). Ties go to the lower index.
    pub fn argmax(&mut self, x: &[u64], rows: usize, cols: usize) -> Result<Vec<u64>> {
        ensure_shape(x.len() == rows * cols && cols > 0, "argmax", || {
            format!("{} elements for {rows} rows of {cols}", x.len())
        })?;
        let mut values: Vec<Vec<u64>> = (0..cols)
            .map(|c| (0..rows).map(|r| x[r * cols + c]).collect())
            .collect();
        let mut indices: Vec<Vec<u64>> = (0..cols as u64)
            .map(|c| self.share_public(&vec![c; rows]))
            .collect();
        while values.len() > 1 {
            let pairs = values.len() / 2;
            let (mut diff, mut idx_diff) = (Vec::new(), Vec::new());
            for j in 0..pairs {
                diff.extend(ring::sub(&values[2 * j], &values[2 * j + 1]));
                idx_diff.extend(ring::sub(&indices[2 * j], &indices[2 * j + 1]));
            }
            let selected = self.sign_select(SignJob {
                z: &diff,
                truncate: false,
                select_self: true,
                extras: vec![idx_diff],
            })?;
            let (mut next_values, mut next_indices) = (Vec::new(), Vec::new());
            for j in 0..pairs {
                let mut v = selected[0][j * rows..(j + 1) * rows].to_vec();
                ring::add_assign(&mut v, &values[2 * j + 1]);
                let mut i = selected[1][j * rows..(j + 1) * rows].to_vec();
                ring::add_assign(&mut i, &indices[2 * j + 1]);
                next_values.push(v);
                next_indices.push(i);
            }
            if values.len() % 2 == 1 {
                next_values.extend(values.pop());
                next_indices.extend(indices.pop());
            }
            values = next_values;
            indices = next_indices;
        }
        Ok(indices.pop().unwrap_or_default())
    }
}
