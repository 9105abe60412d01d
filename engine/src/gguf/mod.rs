//! A bounded, validated reader of GGUF files (the llama.cpp model format, versions 2 and 3): metadata and
//! tensors, with dequantisation of F32, F16, Q4_0, Q4_1 and Q8_0 (see [`quant`]).
//!
//! Layout (little-endian; the GGML project's `docs/gguf.md`): the magic `GGUF`, the version (u32), the tensor
//! count and the metadata count (u64 each); the metadata pairs (a string key, a u32 value type, the value);
//! the tensor infos (name, dimension count, dimensions as u64 with the fastest-varying first, the tensor type
//! as u32, the offset of its data from the start of the data section); padding to `general.alignment`
//! (default 32); the data section.
//!
//! Invariants of a parsed [`Gguf`]: every count, length and dimension was checked against the bytes that
//! remain and against the limits below before anything was allocated for it; keys and tensor names are unique
//! UTF-8; every tensor's data lies inside the data section, starts at an aligned offset and has exactly the
//! size its type and shape imply. A malformed file is a [`GgufError`], never a panic.

pub mod quant;
pub mod write;

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

pub use quant::TensorType;

/// Largest file read, bytes.
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// Most metadata pairs.
pub const MAX_METADATA: u64 = 4096;
/// Most tensors.
pub const MAX_TENSORS: u64 = 65_536;
/// Longest string (key, name or value), bytes.
pub const MAX_STRING_BYTES: u64 = 1 << 20;
/// Most dimensions of a tensor.
pub const MAX_DIMS: u32 = 4;
/// Most array elements of one metadata value (the vocabulary is the largest: about 50k to 260k).
pub const MAX_ARRAY_LEN: u64 = 1 << 22;

/// Why a GGUF file was refused.
#[derive(Debug, Error, PartialEq)]
pub enum GgufError {
    /// The file could not be read.
    #[error("reading {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the file has {bytes} bytes, more than the {limit} read")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// A version other than 2 or 3.
    #[error("GGUF version {0} is not read (2 and 3 are)")]
    UnsupportedVersion(u32),
    /// The file ends inside an item.
    #[error(
        "the file ends at byte {len} inside {what} (which needs {needed} bytes from byte {offset})"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// The file's length.
        len: u64,
    },
    /// A count or length beyond its limit.
    #[error("{what} is {count}, more than the limit of {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count read.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A string that is not UTF-8.
    #[error("the string at byte {offset} is not UTF-8")]
    NotUtf8 {
        /// Where it starts.
        offset: u64,
    },
    /// A metadata value type outside the specification.
    #[error("metadata `{key}` has the unknown value type {value_type}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type code.
        value_type: u32,
    },
    /// A key given twice.
    #[error("metadata key `{0}` appears twice")]
    DuplicateKey(String),
    /// A tensor name given twice.
    #[error("tensor `{0}` appears twice")]
    DuplicateTensor(String),
    /// A tensor type this reader does not dequantise.
    #[error(
        "tensor `{name}` has type {type_code}, which is not read (F32, F16, Q4_0, Q4_1, Q8_0 are)"
    )]
    UnsupportedTensorType {
        /// The tensor.
        name: String,
        /// Its GGML type code.
        type_code: u32,
    },
    /// A tensor shape that is empty, has a zero dimension, overflows, or does not fill whole blocks.
    #[error("tensor `{name}` has the invalid shape {dims:?} for its type")]
    BadShape {
        /// The tensor.
        name: String,
        /// Its dimensions (fastest-varying first).
        dims: Vec<u64>,
    },
    /// A tensor whose data is not aligned or lies outside the data section.
    #[error("tensor `{name}`: {size} bytes at data offset {offset} do not fit an aligned place in the {data_len}-byte data section")]
    TensorOutOfBounds {
        /// The tensor.
        name: String,
        /// Its offset in the data section.
        offset: u64,
        /// Its size in bytes.
        size: u64,
        /// The data section's size.
        data_len: u64,
    },
    /// `general.alignment` that is zero, not a power of two, or not a u32.
    #[error("general.alignment must be a power-of-two u32, not {0}")]
    BadAlignment(String),
    /// A required metadata key is missing.
    #[error("metadata `{0}` is missing")]
    MissingKey(String),
    /// A metadata value of another type than needed.
    #[error("metadata `{key}` is not {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type needed.
        expected: &'static str,
    },
    /// A required tensor is missing.
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    /// A tensor of another shape than needed.
    #[error("tensor `{name}` has shape {got:?}, {expected:?} is needed")]
    WrongShape {
        /// The tensor.
        name: String,
        /// Its dimensions.
        got: Vec<u64>,
        /// The dimensions needed.
        expected: Vec<u64>,
    },
    /// A dequantised value that is NaN or infinite.
    #[error("tensor `{name}` holds a non-finite value at element {index}")]
    NonFinite {
        /// The tensor.
        name: String,
        /// The first such element.
        index: usize,
    },
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, GgufError>;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// An array of values of one type.
    Array(Vec<Value>),
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f64.
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Dimensions, fastest-varying first (`[in, out]` for a weight matrix of `out` rows of `in` values).
    pub dims: Vec<u64>,
    /// Its element type.
    pub tensor_type: TensorType,
    /// Offset of its data from the start of the data section. Invariant: aligned, and
    /// `offset + size <= data section length`.
    pub offset: u64,
    /// Its data's size in bytes (what its type and shape imply).
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file held in memory.
#[derive(Debug)]
pub struct Gguf {
    /// The format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    /// Start of the data section in `bytes`.
    data_start: usize,
}

/// A bounds-checked cursor over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(out)
    }

    fn array<const K: usize>(&mut self, what: &'static str) -> Result<[u8; K]> {
        let mut out = [0u8; K];
        out.copy_from_slice(self.take(K as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count bounded by `limit` and by the bytes left (each item takes at least `min_item_bytes`).
    fn count(&mut self, what: &'static str, limit: u64, min_item_bytes: u64) -> Result<u64> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        let limit = limit.min(left / min_item_bytes.max(1));
        if n > limit {
            return Err(GgufError::TooMany {
                what,
                count: n,
                limit,
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        let len = self.u64(what)?;
        if len > MAX_STRING_BYTES {
            return Err(GgufError::TooMany {
                what,
                count: len,
                limit: MAX_STRING_BYTES,
            });
        }
        let offset = self.pos as u64;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::NotUtf8 { offset })
    }

    /// A value of type `code` (arrays nest at most once: an array of arrays is refused, as llama.cpp does).
    fn value(&mut self, key: &str, code: u32, nested: bool) -> Result<Value> {
        let unknown = || GgufError::UnknownValueType {
            key: key.to_string(),
            value_type: code,
        };
        Ok(match code {
            0 => Value::U8(self.array::<1>("u8")?[0]),
            1 => Value::I8(self.array::<1>("i8")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => Value::U32(self.u32("u32")?),
            5 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => match self.array::<1>("bool")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return Err(unknown()),
            },
            8 => Value::String(self.string("string value")?),
            9 if !nested => {
                let inner = self.u32("array type")?;
                let min = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => return Err(unknown()),
                };
                let n = self.count("array length", MAX_ARRAY_LEN, min)?;
                let mut out = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    out.push(self.value(key, inner, true)?);
                }
                Value::Array(out)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            _ => return Err(unknown()),
        })
    }
}

impl Gguf {
    /// Reads and parses the file at `path` (at most [`MAX_FILE_BYTES`]).
    pub fn open(path: &Path) -> Result<Self> {
        let io = |e: std::io::Error| GgufError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(GgufError::TooLarge {
                bytes: len,
                limit: MAX_FILE_BYTES,
            });
        }
        Self::parse(std::fs::read(path).map_err(io)?)
    }

    /// Parses a whole file held in memory.
    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(GgufError::TooLarge {
                bytes: bytes.len() as u64,
                limit: MAX_FILE_BYTES,
            });
        }
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
        };
        let magic = c.array::<4>("magic")?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        // A tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes, a metadata pair 8 + 4 + 1.
        let tensor_count = c.u64("tensor count")?;
        if tensor_count > MAX_TENSORS {
            return Err(GgufError::TooMany {
                what: "tensor count",
                count: tensor_count,
                limit: MAX_TENSORS,
            });
        }
        let kv_count = c.count("metadata count", MAX_METADATA, 13)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = c.string("metadata key")?;
            let code = c.u32("value type")?;
            let value = c.value(&key, code, false)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => u64::from(*a),
            Some(other) => return Err(GgufError::BadAlignment(format!("{other:?}"))),
        };
        let left = (bytes.len() - c.pos) as u64;
        if tensor_count > left / 32 {
            return Err(GgufError::TooMany {
                what: "tensor count",
                count: tensor_count,
                limit: left / 32,
            });
        }
        let mut raw = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::TooMany {
                    what: "dimension count",
                    count: n_dims.into(),
                    limit: MAX_DIMS.into(),
                });
            }
            let dims = (0..n_dims)
                .map(|_| c.u64("dimension"))
                .collect::<Result<Vec<_>>>()?;
            let type_code = c.u32("tensor type")?;
            let offset = c.u64("tensor offset")?;
            let tensor_type = TensorType::from_code(type_code).ok_or_else(|| {
                GgufError::UnsupportedTensorType {
                    name: name.clone(),
                    type_code,
                }
            })?;
            let size = tensor_type
                .data_size(&dims)
                .ok_or_else(|| GgufError::BadShape {
                    name: name.clone(),
                    dims: dims.clone(),
                })?;
            raw.push(TensorInfo {
                name,
                dims,
                tensor_type,
                offset,
                size,
            });
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let data_len = (bytes.len() as u64).saturating_sub(data_start);
        let mut names = std::collections::BTreeSet::new();
        for t in &raw {
            if !names.insert(t.name.as_str()) {
                return Err(GgufError::DuplicateTensor(t.name.clone()));
            }
            let fits = t.offset % alignment == 0
                && t.offset
                    .checked_add(t.size)
                    .is_some_and(|end| end <= data_len);
            if !fits {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name.clone(),
                    offset: t.offset,
                    size: t.size,
                    data_len,
                });
            }
        }
        Ok(Self {
            version,
            metadata,
            tensors: raw,
            data_start: data_start as usize,
            bytes,
        })
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// `key` as an unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.get(key)?.as_u64().ok_or_else(|| GgufError::WrongType {
            key: key.to_string(),
            expected: "an unsigned integer",
        })
    }

    /// `key` as a float.
    pub fn f64(&self, key: &str) -> Result<f64> {
        self.get(key)?.as_f64().ok_or_else(|| GgufError::WrongType {
            key: key.to_string(),
            expected: "a number",
        })
    }

    /// `key` as a string.
    pub fn str(&self, key: &str) -> Result<&str> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            _ => Err(GgufError::WrongType {
                key: key.to_string(),
                expected: "a string",
            }),
        }
    }

    /// `key` as an array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let wrong = || GgufError::WrongType {
            key: key.to_string(),
            expected: "an array of strings",
        };
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(wrong()),
                })
                .collect(),
            _ => Err(wrong()),
        }
    }

    /// `key` as an array of integers.
    pub fn integers(&self, key: &str) -> Result<Vec<i64>> {
        let wrong = || GgufError::WrongType {
            key: key.to_string(),
            expected: "an array of integers",
        };
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match *v {
                    Value::I32(x) => Ok(x.into()),
                    Value::I64(x) => Ok(x),
                    Value::I8(x) => Ok(x.into()),
                    Value::I16(x) => Ok(x.into()),
                    _ => v
                        .as_u64()
                        .and_then(|x| i64::try_from(x).ok())
                        .ok_or_else(wrong),
                })
                .collect(),
            _ => Err(wrong()),
        }
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))
    }

    /// The raw bytes of `info` (a tensor of this file).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        // `parse` checked that a tensor of this file lies inside the data section; an info built elsewhere
        // that does not gets no bytes.
        let start = self.data_start as u64 + info.offset;
        usize::try_from(start)
            .ok()
            .zip(
                start
                    .checked_add(info.size)
                    .and_then(|e| usize::try_from(e).ok()),
            )
            .and_then(|(a, b)| self.bytes.get(a..b))
            .unwrap_or(&[])
    }

    /// The tensor `name` dequantised to f32, checked to have dimensions `dims` (fastest-varying first)
    /// and finite values.
    pub fn dequantize(&self, name: &str, dims: &[u64]) -> Result<Vec<f32>> {
        let info = self.tensor(name)?;
        if info.dims != dims {
            return Err(GgufError::WrongShape {
                name: name.to_string(),
                got: info.dims.clone(),
                expected: dims.to_vec(),
            });
        }
        let out = info.tensor_type.dequantize(self.tensor_bytes(info));
        if let Some(index) = out.iter().position(|v| !v.is_finite()) {
            return Err(GgufError::NonFinite {
                name: name.to_string(),
                index,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
