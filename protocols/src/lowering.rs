//! How an activation tensor becomes the left operand of a matrix product with a layer's weights.
//!
//! Both lowerings are linear maps (index shuffles and zero padding), so they commute with additive sharing:
//! the lowering of a share is a share of the lowering. That is what lets a party lower its share locally and
//! the dealer lower a mask in the same way.

use serde::{Deserialize, Serialize};

use crate::error::{ensure_shape, Result};

/// Geometry of a 2-D convolution over `[batch, in_channels, height, width]` inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dGeometry {
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding along height and width.
    pub padding: [usize; 2],
}

impl Conv2dGeometry {
    /// Output height and width; `None` if the kernel does not fit the padded input or a stride is zero.
    pub fn output_hw(&self) -> Option<[usize; 2]> {
        let dim = |size: usize, k: usize, s: usize, p: usize| {
            let padded = size + 2 * p;
            (s > 0 && k > 0 && k <= padded).then(|| (padded - k) / s + 1)
        };
        Some([
            dim(self.height, self.kernel[0], self.stride[0], self.padding[0])?,
            dim(self.width, self.kernel[1], self.stride[1], self.padding[1])?,
        ])
    }

    /// Elements of one input item.
    pub fn input_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    /// Length of one patch: `in_channels * kh * kw`, ordered channel-major then kernel row then column, as
    /// burn's (and PyTorch's) `[out, in, kh, kw]` weights flatten.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }
}

/// The map from an activation (flattened, batch-major) to a row-major matrix of `rows x inner` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lowering {
    /// `[batch, features]` used as it is.
    Dense {
        /// Input features (the inner dimension).
        features: usize,
    },
    /// im2col: one row per output position of each batch item.
    Conv2d(Conv2dGeometry),
}

impl Lowering {
    /// Elements of one input item.
    pub fn input_len(&self) -> usize {
        match self {
            Lowering::Dense { features } => *features,
            Lowering::Conv2d(g) => g.input_len(),
        }
    }

    /// Inner dimension of the product.
    pub fn inner(&self) -> usize {
        match self {
            Lowering::Dense { features } => *features,
            Lowering::Conv2d(g) => g.patch_len(),
        }
    }

    /// Rows produced per batch item.
    pub fn rows_per_item(&self) -> usize {
        match self {
            Lowering::Dense { .. } => 1,
            Lowering::Conv2d(g) => g.output_hw().map_or(0, |[h, w]| h * w),
        }
    }

    /// Lowers `batch` items of `x`.
    pub fn lower(&self, x: &[u64], batch: usize) -> Result<Vec<u64>> {
        self.lower_any(x, batch)
    }

    /// Lowers `batch` items of any element type whose zero is `Default` (wider ring words, MAC shares: the
    /// map is an index shuffle with zero padding, so it applies to MACs as to values).
    pub fn lower_any<T: Copy + Default>(&self, x: &[T], batch: usize) -> Result<Vec<T>> {
        ensure_shape(x.len() == batch * self.input_len(), "lower", || {
            format!(
                "{} elements for a batch of {batch} items of {}",
                x.len(),
                self.input_len()
            )
        })?;
        match self {
            Lowering::Dense { .. } => Ok(x.to_vec()),
            Lowering::Conv2d(g) => {
                let [oh, ow] = g.output_hw().ok_or_else(|| crate::ProtocolError::Shape {
                    op: "im2col",
                    detail: format!(
                        "kernel {:?} does not fit input {}x{}",
                        g.kernel, g.height, g.width
                    ),
                })?;
                Ok(im2col(g, x, batch, oh, ow))
            }
        }
    }
}

fn im2col<T: Copy + Default>(
    g: &Conv2dGeometry,
    x: &[T],
    batch: usize,
    oh: usize,
    ow: usize,
) -> Vec<T> {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let patch = g.patch_len();
    let mut out = vec![T::default(); batch * oh * ow * patch];
    for b in 0..batch {
        let item = &x[b * g.input_len()..(b + 1) * g.input_len()];
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &mut out[((b * oh + oy) * ow + ox) * patch..][..patch];
                for c in 0..g.in_channels {
                    for ky in 0..kh {
                        let y = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                        if y < 0 || y as usize >= g.height {
                            continue;
                        }
                        for kx in 0..kw {
                            let xx = (ox * g.stride[1] + kx) as isize - g.padding[1] as isize;
                            if xx < 0 || xx as usize >= g.width {
                                continue;
                            }
                            row[(c * kh + ky) * kw + kx] =
                                item[(c * g.height + y as usize) * g.width + xx as usize];
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im2col_of_a_known_image() {
        let g = Conv2dGeometry {
            in_channels: 1,
            height: 3,
            width: 3,
            kernel: [2, 2],
            stride: [1, 1],
            padding: [0, 0],
        };
        let x: Vec<u64> = (1..=9).collect();
        let m = Lowering::Conv2d(g).lower(&x, 1).expect("fits");
        assert_eq!(m, vec![1, 2, 4, 5, 2, 3, 5, 6, 4, 5, 7, 8, 5, 6, 8, 9]);
        let padded = Conv2dGeometry {
            padding: [1, 1],
            ..g
        };
        assert_eq!(padded.output_hw(), Some([4, 4]));
        let m = Lowering::Conv2d(padded).lower(&x, 1).expect("fits");
        assert_eq!(&m[..4], &[0, 0, 0, 1]);
    }

    #[test]
    fn kernel_larger_than_input_is_an_error() {
        let g = Conv2dGeometry {
            in_channels: 1,
            height: 2,
            width: 2,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
        };
        assert!(g.output_hw().is_none());
        assert!(Lowering::Conv2d(g).lower(&[0; 4], 1).is_err());
    }
}
