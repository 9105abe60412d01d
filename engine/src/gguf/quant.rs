//! GGML tensor types and their dequantisation (block layouts from the GGML project's `ggml-common.h`):
//!
//! | type | block | bytes | value |
//! | --- | --- | --- | --- |
//! | F32 | 1 | 4 | the f32 |
//! | F16 | 1 | 2 | the IEEE half |
//! | Q4_0 | 32 | 18 | `d` (f16), then 16 bytes of 4-bit `q`: `(q - 8) d` |
//! | Q4_1 | 32 | 20 | `d`, `m` (f16 each), then 16 bytes of 4-bit `q`: `q d + m` |
//! | Q8_0 | 32 | 34 | `d` (f16), then 32 signed bytes `q`: `q d` |
//!
//! In the 4-bit types, byte `j` of a block holds element `j` in its low nibble and element `j + 16` in its
//! high nibble. Quantised blocks run along the fastest-varying dimension, which must be a whole number of
//! blocks.

/// A tensor element type this reader dequantises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, one scale per 32.
    Q4_0,
    /// 4-bit, a scale and a minimum per 32.
    Q4_1,
    /// 8-bit, one scale per 32.
    Q8_0,
}

impl TensorType {
    /// The type of GGML type code `code`, if read.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            _ => return None,
        })
    }

    /// Elements per block and bytes per block.
    pub fn block(self) -> (u64, u64) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
        }
    }

    /// Bytes of a tensor of dimensions `dims` (fastest-varying first); `None` for no dimension, a zero
    /// dimension, an overflow, or a first dimension that is not a whole number of blocks.
    pub fn data_size(self, dims: &[u64]) -> Option<u64> {
        let (per_block, block_bytes) = self.block();
        let first = *dims.first()?;
        if dims.contains(&0) || first % per_block != 0 {
            return None;
        }
        let elements = dims.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d))?;
        (elements / per_block).checked_mul(block_bytes)
    }

    /// The f32 values of `bytes` (whole blocks of this type; a trailing partial block is ignored).
    pub fn dequantize(self, bytes: &[u8]) -> Vec<f32> {
        let (per_block, block_bytes) = self.block();
        let blocks = bytes.chunks_exact(block_bytes as usize);
        let mut out = Vec::with_capacity(blocks.len() * per_block as usize);
        for b in blocks {
            match self {
                Self::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                Self::F16 => out.push(f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
                Self::Q4_0 => {
                    let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                    nibbles(&b[2..18], &mut out, |q| (f32::from(q) - 8.0) * d);
                }
                Self::Q4_1 => {
                    let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                    let m = f16_to_f32(u16::from_le_bytes([b[2], b[3]]));
                    nibbles(&b[4..20], &mut out, |q| f32::from(q) * d + m);
                }
                Self::Q8_0 => {
                    let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                    out.extend(b[2..34].iter().map(|&q| f32::from(q as i8) * d));
                }
            }
        }
        out
    }
}

/// The 32 values of 16 bytes of nibbles: the low nibbles (elements 0..16), then the high ones (16..32).
fn nibbles(qs: &[u8], out: &mut Vec<f32>, value: impl Fn(u8) -> f32) {
    out.extend(qs.iter().map(|&q| value(q & 0x0f)));
    out.extend(qs.iter().map(|&q| value(q >> 4)));
}

/// An IEEE 754 half (binary16) as f32, exactly (every half is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let mantissa = f32::from(h & 0x3ff);
    match exponent {
        0 => sign * mantissa * (-24f32).exp2(),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + mantissa / 1024.0) * ((e - 15) as f32).exp2(),
    }
}
