//! Maxima: pairwise max, 2-D max pooling and argmax, as tournaments of sign tests.
//!
//! `max(a, b) = b + ReLU(a - b)`; a tournament over `k` candidates takes `ceil(log2 k)` levels, and every
//! comparison of a level runs in the same sign test (7 rounds per level, whatever the batch).

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{ensure_shape, ProtocolError, Result};
use crate::net::Net;

use super::Party;
use crate::ops::MpcOps;

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
    /// Elementwise `max(a, b)` (7 rounds). Requires `|a - b| < 2^62`. See [`MpcOps::max`].
    pub fn max(&mut self, a: &D::Arith, b: &D::Arith) -> Result<D::Arith> {
        <Self as MpcOps>::max(self, a, b)
    }

    /// Max pooling of `batch` items (7 rounds per tournament level: 14 for a 2x2 window). See
    /// [`MpcOps::max_pool2d`].
    pub fn max_pool2d(&mut self, x: &D::Arith, batch: usize, pool: &Pool2d) -> Result<D::Arith> {
        <Self as MpcOps>::max_pool2d(self, x, batch, pool)
    }

    /// Index of the largest of each row of `x` (`rows x cols`), as additive shares of an integer (7 rounds per
    /// level, `ceil(log2 cols)` levels). Ties go to the lower index. See [`MpcOps::argmax`].
    pub fn argmax(&mut self, x: &D::Arith, rows: usize, cols: usize) -> Result<D::Arith> {
        <Self as MpcOps>::argmax(self, x, rows, cols)
    }
}
