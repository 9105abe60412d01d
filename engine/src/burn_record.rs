//! Burn records as model files, and picking a model file's format by its content.
//!
//! burn 0.22 has one record format, the burnpack container: what `Module::save_file(path)` and
//! `ModuleRecord::save` write (0.22 has no recorders to choose between; see `burn::store`). A burnpack file is
//! a 10-byte header (magic `0x4255524E` little-endian, that is the bytes `NRUB`; a version; the metadata
//! length), CBOR metadata (every tensor's name, dtype, shape and byte range, plus string key/value pairs), and
//! 256-byte-aligned tensor data. It is read and written here with `burn-pack`, the crate burn itself uses.
//!
//! Layout of a veil burn record:
//! - tensors named after the layer's position in the chain, `"{i}.weight"` and `"{i}.bias"`, in burn's layout
//!   (Linear weight `[in, out]` as `burn::nn::Linear` holds it, Conv2d weight `[out, in, kh, kw]`), dtype F32
//!   (F64, F16 and BF16 are read and converted). The names `"{i}.Linear.weight"` / `"{i}.Conv2d.weight"` (and
//!   `.bias`) are accepted too. These are the paths burn gives the parameters of a `Vec<Option<Linear>>`
//!   module (`None` where the layer has no parameters), or of a `Vec<Option<E>>` for a `#[derive(Module)]`
//!   enum `E` with variants `Linear(Linear)` and `Conv2d(Conv2d)`. Such a module's `save_file` writes a record
//!   this loads;
//! - the architecture (an [`Architecture`], JSON) in the burnpack metadata under [`ARCHITECTURE_KEY`]. A record
//!   written by burn's `save_file` has no metadata: the architecture then comes from a sidecar file
//!   ([`sidecar_path`]: `<file>.architecture.json`) or an argument.
//!
//! Invariants: a record is converted to the PyTorch layout and loaded through [`ModelFile::parse`], so a
//! [`ModelFile`] from a burn record has passed exactly the checks of one from safetensors, and the model id
//! ([`ModelFile::id`]) of the same architecture and weights is the same whichever format they came from.
//! Every tensor of the record must belong to a layer and have the shape its layer declares, every value must be
//! finite, and nothing in the bytes can make loading panic: burn-pack bounds the header, the metadata (size,
//! CBOR depth, tensor count) and every byte range, and every shape and length is checked again here before a
//! value is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_pack::{Bytes, DType, Reader, Writer};
use safetensors::SafeTensors;

use crate::error::Result;
use crate::model::{values, Layer};
use crate::model_file::{
    decode_floats, invalid, le_bytes, read_bounded, serialize_f32, Architecture, FloatKind,
    LayerSpec, ModelFile, ARCHITECTURE_KEY, MAX_FILE_BYTES,
};

/// The first four bytes of a burnpack file: burn's magic number `0x4255524E` ("BURN"), little-endian.
pub const BURNPACK_MAGIC: [u8; 4] = burn_pack::MAGIC_NUMBER.to_le_bytes();

/// What [`sidecar_path`] appends to a model file's path.
pub const SIDECAR_SUFFIX: &str = ".architecture.json";

/// Largest sidecar architecture file read, bytes.
pub const MAX_SIDECAR_BYTES: u64 = 64 << 20;

/// How many tensor names an error message lists at most.
const NAMES_SHOWN: usize = 5;

/// The format of a model file, as its first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// safetensors: an 8-byte little-endian header length, then a JSON header starting with `{`.
    Safetensors,
    /// A burn record (burnpack), starting with [`BURNPACK_MAGIC`].
    BurnRecord,
}

impl ModelFormat {
    /// Tells the format from a file's content (never from its name); an error for anything else.
    pub fn detect(bytes: &[u8]) -> Result<Self> {
        if bytes.starts_with(&BURNPACK_MAGIC) {
            return Ok(Self::BurnRecord);
        }
        if let Some((len, rest)) = bytes.split_first_chunk::<8>() {
            let header = u64::from_le_bytes(*len);
            if rest.first() == Some(&b'{') && header <= rest.len() as u64 {
                return Ok(Self::Safetensors);
            }
        }
        let head: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(invalid(format!(
            "neither a safetensors file nor a burn record (burnpack): {} bytes, starting with [{head}]",
            bytes.len()
        )))
    }
}

/// The sidecar architecture file of a model file: its path with [`SIDECAR_SUFFIX`] appended
/// (`model.bpk` -> `model.bpk.architecture.json`).
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

impl ModelFile {
    /// Reads a model file of either format, picked by content, with `architecture` overriding (or supplying)
    /// the one embedded in the file; no sidecar is read.
    pub fn load_with_architecture(
        path: &Path,
        architecture: Architecture,
        device: &Device,
    ) -> Result<Self> {
        let bytes = read_bounded(path, MAX_FILE_BYTES)?;
        Self::parse_any(&bytes, Some(architecture), device)
    }

    /// Parses a model file's bytes of either format, picked by content; `architecture` overrides (or supplies)
    /// the embedded one.
    pub fn parse_any(
        bytes: &[u8],
        architecture: Option<Architecture>,
        device: &Device,
    ) -> Result<Self> {
        match ModelFormat::detect(bytes)? {
            ModelFormat::Safetensors => Self::parse(bytes, architecture, device),
            ModelFormat::BurnRecord => Self::parse_burn_record(bytes, architecture, device),
        }
    }

    /// Parses a burn record (burnpack bytes, layout in the module doc); `architecture` overrides (or supplies)
    /// the one in the record's metadata.
    pub fn parse_burn_record(
        bytes: &[u8],
        architecture: Option<Architecture>,
        device: &Device,
    ) -> Result<Self> {
        let record = Record::read(bytes)?;
        let architecture = match architecture {
            Some(a) => a,
            None => record.architecture()?.ok_or_else(|| {
                invalid(format!(
                    "the burn record has no `{ARCHITECTURE_KEY}` metadata: give the architecture separately"
                ))
            })?,
        };
        record.into_model_file(architecture, device)
    }

    /// The model as a veil burn record (burnpack bytes, architecture in the metadata).
    pub fn to_burn_record(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for (i, layer) in self.model().layers().iter().enumerate() {
            let (weight, shape, bias) = match layer {
                Layer::Linear(l) => {
                    let w = l.weight.val();
                    let shape = w.dims().to_vec();
                    (values(w)?, shape, l.bias.as_ref().map(|b| b.val()))
                }
                Layer::Conv2d(c) => {
                    let w = c.weight.val();
                    let shape = w.dims().to_vec();
                    (values(w)?, shape, c.bias.as_ref().map(|b| b.val()))
                }
                _ => continue,
            };
            let bias = values(bias.ok_or_else(|| {
                invalid(format!("layer {i}: a layer without bias cannot be saved"))
            })?)?;
            let n = bias.len();
            tensors.push(pack_f32(format!("{i}.weight"), shape, &weight));
            tensors.push(pack_f32(format!("{i}.bias"), vec![n], &bias));
        }
        let architecture = serde_json::to_string(self.architecture())
            .map_err(|e| invalid(format!("architecture: {e}")))?;
        let bytes = Writer::new(tensors)
            .with_metadata(ARCHITECTURE_KEY, &architecture)
            .into_bytes()
            .map_err(|e| invalid(format!("writing the burn record: {e}")))?;
        Ok(bytes.to_vec())
    }

    /// Writes the model as a veil burn record (see [`ModelFile::to_burn_record`]).
    pub fn save_burn_record(&self, path: &Path) -> Result<()> {
        let bytes = self.to_burn_record()?;
        std::fs::write(path, bytes).map_err(|e| invalid(format!("writing {}: {e}", path.display())))
    }
}

/// [`ModelFile::load`]'s work once the file is read: the format by content, the architecture embedded in the
/// file or in its sidecar ([`sidecar_path`]; when both exist they must be equal).
pub(crate) fn parse_file(path: &Path, bytes: &[u8], device: &Device) -> Result<ModelFile> {
    let format = ModelFormat::detect(bytes)?;
    let record = match format {
        ModelFormat::BurnRecord => Some(Record::read(bytes)?),
        ModelFormat::Safetensors => None,
    };
    let embedded = match &record {
        Some(r) => r.architecture()?,
        None => safetensors_architecture(bytes)?,
    };
    let sidecar = read_sidecar(path)?;
    let architecture = match (embedded, sidecar) {
        (Some(e), Some(s)) if e != s => {
            return Err(invalid(format!(
                "{} embeds an architecture that differs from its sidecar {}",
                path.display(),
                sidecar_path(path).display()
            )))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err(invalid(format!(
                "{} has no `{ARCHITECTURE_KEY}` metadata and no sidecar {}: give the architecture separately",
                path.display(),
                sidecar_path(path).display()
            )))
        }
    };
    match record {
        Some(r) => r.into_model_file(architecture, device),
        None => ModelFile::parse(bytes, Some(architecture), device),
    }
}

/// The architecture in a safetensors file's metadata, if any.
fn safetensors_architecture(bytes: &[u8]) -> Result<Option<Architecture>> {
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
    metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(ARCHITECTURE_KEY))
        .map(|text| {
            serde_json::from_str(text).map_err(|e| invalid(format!("architecture metadata: {e}")))
        })
        .transpose()
}

/// The sidecar's architecture, or `None` when there is no sidecar.
fn read_sidecar(path: &Path) -> Result<Option<Architecture>> {
    let sidecar = sidecar_path(path);
    match std::fs::metadata(&sidecar) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(invalid(format!("reading {}: {e}", sidecar.display()))),
        Ok(_) => {}
    }
    let bytes = read_bounded(&sidecar, MAX_SIDECAR_BYTES)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| invalid(format!("{}: {e}", sidecar.display())))
}

fn pack_f32(name: String, shape: Vec<usize>, v: &[f32]) -> burn_pack::Tensor {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    burn_pack::Tensor::new(name, DType::F32, shape, None, Bytes::from_bytes_vec(bytes))
}

/// One tensor of a record, not yet converted.
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Bytes,
}

/// A parsed burnpack: its string metadata and its tensors by name.
struct Record {
    metadata: BTreeMap<String, String>,
    tensors: BTreeMap<String, Entry>,
}

impl Record {
    /// Parses burnpack bytes. burn-pack checks the header, bounds the metadata, and checks that every tensor's
    /// byte range lies in the buffer and matches its shape and dtype.
    fn read(bytes: &[u8]) -> Result<Self> {
        let bad = |e: burn_pack::Error| invalid(format!("not a valid burn record: {e}"));
        let reader = Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(bad)?;
        let metadata = reader.metadata().clone();
        let mut tensors = BTreeMap::new();
        for t in reader.into_tensors().map_err(bad)? {
            let (name, dtype, shape, _, bytes) = t.into_parts().map_err(bad)?;
            let shape = shape.to_vec();
            tensors.insert(
                name,
                Entry {
                    dtype,
                    shape,
                    bytes,
                },
            );
        }
        Ok(Self { metadata, tensors })
    }

    fn architecture(&self) -> Result<Option<Architecture>> {
        self.metadata
            .get(ARCHITECTURE_KEY)
            .map(|text| {
                serde_json::from_str(text)
                    .map_err(|e| invalid(format!("architecture metadata: {e}")))
            })
            .transpose()
    }

    /// Takes the tensor of parameter `param` of layer `i` (a `kind` layer) under either accepted name.
    fn take(&mut self, i: usize, kind: &str, param: &str) -> Result<(String, Entry)> {
        let plain = format!("{i}.{param}");
        let tagged = format!("{i}.{kind}.{param}");
        let name = match (
            self.tensors.contains_key(&plain),
            self.tensors.contains_key(&tagged),
        ) {
            (true, true) => {
                return Err(invalid(format!(
                    "the burn record holds both `{plain}` and `{tagged}`"
                )))
            }
            (true, false) => plain,
            (false, true) => tagged,
            (false, false) => {
                return Err(invalid(format!(
                    "missing tensor `{plain}` (or `{tagged}`); the burn record holds {:?}",
                    self.names()
                )))
            }
        };
        match self.tensors.remove_entry(&name) {
            Some(entry) => Ok(entry),
            None => Err(invalid(format!("missing tensor `{name}`"))),
        }
    }

    /// The first few tensor names left, for messages.
    fn names(&self) -> Vec<&str> {
        self.tensors
            .keys()
            .take(NAMES_SHOWN)
            .map(String::as_str)
            .collect()
    }

    /// Converts the record to safetensors in PyTorch layout and loads that with `architecture`.
    fn into_model_file(mut self, architecture: Architecture, device: &Device) -> Result<ModelFile> {
        // (name, PyTorch shape, little-endian f32 bytes), in layer order.
        let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, spec) in architecture.layers.iter().enumerate() {
            let (kind, weight, bias, transpose) = match *spec {
                LayerSpec::Linear { inputs, outputs } => {
                    ("Linear", vec![inputs, outputs], outputs, true)
                }
                LayerSpec::Conv2d {
                    channels, kernel, ..
                } => (
                    "Conv2d",
                    vec![channels[1], channels[0], kernel[0], kernel[1]],
                    channels[1],
                    false,
                ),
                LayerSpec::Relu | LayerSpec::MaxPool2d { .. } | LayerSpec::Flatten => continue,
            };
            let (name, entry) = self.take(i, kind, "weight")?;
            let mut w = convert(&name, entry, &weight)?;
            let mut w_shape = weight;
            if transpose {
                // burn holds [in, out]; the PyTorch layout is [out, in].
                let (rows, cols) = (w_shape[0], w_shape[1]);
                w = crate::model_file::transpose(&w, rows, cols);
                w_shape = vec![cols, rows];
            }
            let (name, entry) = self.take(i, kind, "bias")?;
            let b = convert(&name, entry, &[bias])?;
            out.push((format!("{i}.weight"), w_shape, le_bytes(&w)));
            out.push((format!("{i}.bias"), vec![bias], le_bytes(&b)));
        }
        if !self.tensors.is_empty() {
            return Err(invalid(format!(
                "{} tensor(s) of the burn record belong to no layer of the architecture (e.g. {:?})",
                self.tensors.len(),
                self.names()
            )));
        }
        let safetensors = serialize_f32(&out, None)?;
        ModelFile::parse(&safetensors, Some(architecture), device)
    }
}

/// Checks a record tensor's shape against `shape`, converts it to f32 and checks every value is finite.
fn convert(name: &str, entry: Entry, shape: &[usize]) -> Result<Vec<f32>> {
    if entry.shape != shape {
        return Err(invalid(format!(
            "tensor `{name}` has shape {:?}, the architecture needs {shape:?} (burn layout)",
            entry.shape
        )));
    }
    let kind = match entry.dtype {
        DType::F32 => FloatKind::F32,
        DType::F64 => FloatKind::F64,
        DType::F16 => FloatKind::F16,
        DType::BF16 => FloatKind::BF16,
        other => {
            return Err(invalid(format!(
                "tensor `{name}` has dtype {other:?}; F32, F64, F16 and BF16 are read"
            )))
        }
    };
    decode_floats(name, kind, &entry.bytes, shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_file::transpose;
    use safetensors::tensor::TensorView;

    #[test]
    fn formats_are_told_by_content() {
        let st = safetensors::serialize(Vec::<(String, TensorView<'_>)>::new(), None).unwrap();
        assert_eq!(ModelFormat::detect(&st).unwrap(), ModelFormat::Safetensors);
        let bpk = Writer::new(vec![]).into_bytes().unwrap().to_vec();
        assert_eq!(ModelFormat::detect(&bpk).unwrap(), ModelFormat::BurnRecord);
        for junk in [
            &b""[..],
            b"NRU",
            b"\x03\0\0\0\0\0\0\0{}",
            b"\xff\xff\xff\xff\xff\xff\xff\xff{",
        ] {
            let err = ModelFormat::detect(junk).unwrap_err();
            assert!(err.to_string().contains("neither"), "{err}");
        }
        assert_eq!(
            sidecar_path(Path::new("m/model.bpk")),
            PathBuf::from("m/model.bpk.architecture.json")
        );
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
