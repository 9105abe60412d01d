//! Maxima: pairwise max, 2-D max pooling and argmax, as tournaments of sign tests.
//!
//! `max(a, b) = b + ReLU(a - b)`; a tournament over `k` candidates takes `ceil(log2 k)` levels, and every
//! comparison of a level runs in the same sign test (7 rounds per level, whatever the batch).

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{ensure_shape, ProtocolError, Result};
use crate::net::Net;

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
    fn gather<D: Domain>(&self, x: &D::Arith, batch: usize) -> Result<Vec<D::Arith>> {
        Ok(self
            .candidate_indices(D::len(x), batch)?
            .iter()
            .map(|idx| D::gather(x, idx))
            .collect())
    }

    /// The indices of every output's candidates in an input of `len` elements (`batch` items), as `window`
    /// index vectors of `batch * output_len` each.
    pub fn candidate_indices(&self, len: usize, batch: usize) -> Result<Vec<Vec<usize>>> {
        let [oh, ow] = self.output_hw().ok_or_else(|| ProtocolError::Shape {
            op: "max_pool2d",
            detail: format!(
                "window {:?} does not fit {}x{}",
                self.kernel, self.height, self.width
            ),
        })?;
        ensure_shape(len == batch * self.input_len(), "max_pool2d", || {
            format!(
                "{} elements for a batch of {batch} items of {}",
                len,
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
                            candidates[ky * self.kernel[1] + kx].push(base + y * self.width + xx);
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

impl<N: Net, D: Domain> Party<N, D> {
    /// Elementwise `max(a, b)` (7 rounds). Requires `|a - b| < 2^62`.
    pub fn max(&mut self, a: &D::Arith, b: &D::Arith) -> Result<D::Arith> {
        ensure_shape(D::len(a) == D::len(b), "max", || {
            format!("lengths {} and {}", D::len(a), D::len(b))
        })?;
        let mut out = self.relu(&D::sub(a, b))?;
        D::add_assign(&mut out, b);
        Ok(out)
    }

    /// Max pooling of `batch` items (7 rounds per tournament level: 14 for a 2x2 window).
    pub fn max_pool2d(&mut self, x: &D::Arith, batch: usize, pool: &Pool2d) -> Result<D::Arith> {
        let mut candidates = pool.gather::<D>(x, batch)?;
        while candidates.len() > 1 {
            let pairs = candidates.len() / 2;
            let width = D::len(&candidates[0]);
            let diff = D::concat(
                &(0..pairs)
                    .map(|j| D::sub(&candidates[2 * j], &candidates[2 * j + 1]))
                    .collect::<Vec<_>>(),
            );
            let selected = self.relu(&diff)?;
            let mut next: Vec<D::Arith> = (0..pairs)
                .map(|j| {
                    let mut max = D::slice(&selected, j * width..(j + 1) * width);
                    D::add_assign(&mut max, &candidates[2 * j + 1]);
                    max
                })
                .collect();
            if candidates.len() % 2 == 1 {
                next.extend(candidates.pop());
            }
            candidates = next;
        }
        Ok(candidates.pop().unwrap_or_default())
    }

    /// Index of the largest of each row of `x` (`rows x cols`), as additive shares of an integer (7 rounds per
    /// level, `ceil(log2 cols)` levels). Ties go to the lower index.
    pub fn argmax(&mut self, x: &D::Arith, rows: usize, cols: usize) -> Result<D::Arith> {
        ensure_shape(D::len(x) == rows * cols && cols > 0, "argmax", || {
            format!("{} elements for {rows} rows of {cols}", D::len(x))
        })?;
        let mut values: Vec<D::Arith> = (0..cols)
            .map(|c| D::gather(x, &(0..rows).map(|r| r * cols + c).collect::<Vec<_>>()))
            .collect();
        let mut indices: Vec<D::Arith> = (0..cols as u64)
            .map(|c| self.share_public(&vec![c; rows]))
            .collect();
        while values.len() > 1 {
            let pairs = values.len() / 2;
            let diff = D::concat(
                &(0..pairs)
                    .map(|j| D::sub(&values[2 * j], &values[2 * j + 1]))
                    .collect::<Vec<_>>(),
            );
            let idx_diff = D::concat(
                &(0..pairs)
                    .map(|j| D::sub(&indices[2 * j], &indices[2 * j + 1]))
                    .collect::<Vec<_>>(),
            );
            let selected = self.sign_select(SignJob {
                z: &diff,
                truncate: false,
                select_self: true,
                extras: vec![idx_diff],
            })?;
            let (mut next_values, mut next_indices) = (Vec::new(), Vec::new());
            for j in 0..pairs {
                let range = j * rows..(j + 1) * rows;
                next_values.push(D::add(
                    &D::slice(&selected[0], range.clone()),
                    &values[2 * j + 1],
                ));
                next_indices.push(D::add(&D::slice(&selected[1], range), &indices[2 * j + 1]));
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
