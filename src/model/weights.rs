//! Reading model weights: safetensors and both PyTorch `.bin` layouts.
//!
//! Many OPUS-MT repositories on the Hub only ship a `pytorch_model.bin` written
//! by torch's legacy (pre-zip) serializer, which candle cannot read. This module
//! reads all three formats into candle tensors:
//!
//! * safetensors — header validated through a memory map, then each tensor read
//!   from the file straight into its own buffer (the mapped data pages are
//!   never touched, so loading holds the weights once, not twice);
//! * torch zip (`torch.save` default since 1.6) — `<dir>/data.pkl` plus one
//!   zip entry per storage;
//! * torch legacy — a chain of pickles followed by raw storage bytes.
//!
//! Pickles are interpreted by our own restricted unpickler ([`pickle`]), which
//! never executes anything and refuses every Python global outside a short
//! allow-list. Every length, offset and stride is checked against the file, so
//! truncated or hostile files yield an error, never a panic or a partial map.

mod pickle;
mod torch;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// How a weights file is laid out, as told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// Hugging Face safetensors (`model.safetensors`).
    Safetensors,
    /// `torch.save` zip archive (torch >= 1.6 default).
    TorchZip,
    /// `torch.save(..., _use_new_zipfile_serialization=False)`: pickles + raw storages.
    TorchLegacy,
}

/// Everything that can go wrong reading a weights file. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read weights file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a weights file this program can read (expected safetensors or a PyTorch .bin, zip or legacy format)", .path.display())]
    UnknownFormat { path: PathBuf },
    #[error("{} is not a valid safetensors file: {reason}", .path.display())]
    Safetensors { path: PathBuf, reason: String },
    #[error("{} is not a valid PyTorch zip archive: {reason}", .path.display())]
    Zip { path: PathBuf, reason: String },
    #[error("{} is truncated: {what}", .path.display())]
    Truncated { path: PathBuf, what: String },
    #[error("{} has a malformed pickle ({part}, byte {offset}): {reason}", .path.display())]
    Pickle {
        path: PathBuf,
        part: String,
        offset: usize,
        reason: String,
    },
    #[error("{} refers to the Python global `{module}.{name}`, which a weights file has no reason to use; refusing to load it (pickled code is never run)", .path.display())]
    ForbiddenGlobal {
        path: PathBuf,
        module: String,
        name: String,
    },
    #[error("{} does not hold a flat state dict of tensors: {reason}", .path.display())]
    NotStateDict { path: PathBuf, reason: String },
    #[error("{} has an invalid storage layout: {reason}", .path.display())]
    Layout { path: PathBuf, reason: String },
    #[error("{}: tensor `{name}` is invalid: {reason}", .path.display())]
    BadTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{}: tensor `{name}` has element type {dtype}, which is not supported", .path.display())]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{}: cannot build tensor `{name}`: {source}", .path.display())]
    Candle {
        path: PathBuf,
        name: String,
        /// Boxed: candle's error is large and this path is rare.
        #[source]
        source: Box<candle_core::Error>,
    },
}

/// First four bytes of a zip local file header / empty-archive end record.
const ZIP_MAGICS: [&[u8; 4]; 2] = [b"PK\x03\x04", b"PK\x05\x06"];

/// Tells the format of a weights file from its content (not its name).
pub fn detect_format(path: &Path) -> Result<WeightsFormat, WeightsError> {
    let io_err = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut head = Vec::with_capacity(64);
    file.by_ref()
        .take(64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    format_from_head(&head).ok_or_else(|| WeightsError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// The safetensors crate's own limit on header size.
const SAFETENSORS_MAX_HEADER: u64 = 100_000_000;

fn format_from_head(head: &[u8]) -> Option<WeightsFormat> {
    if ZIP_MAGICS.iter().any(|m| head.starts_with(&m[..])) {
        return Some(WeightsFormat::TorchZip);
    }
    if head.first() == Some(&0x80) && torch::starts_with_legacy_magic(head) {
        return Some(WeightsFormat::TorchLegacy);
    }
    // safetensors: u64 little-endian header length, then a JSON object.
    if let (Some(len), Some(b'{')) = (head.get(..8), head.get(8)) {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(len);
        let header_len = u64::from_le_bytes(buf);
        // A header longer than the file still counts, so that a truncated
        // download is reported as truncated rather than as unknown.
        if (2..=SAFETENSORS_MAX_HEADER).contains(&header_len) {
            return Some(WeightsFormat::Safetensors);
        }
    }
    None
}

/// Reads every tensor of a weights file onto `device`.
///
/// The file's format is detected from its content. The map is complete or
/// the call fails: no error leaves a partial result behind. Tensors that
/// share storage in a torch file (tied embeddings) share memory here too.
/// Storage element types map to candle as: f32, f16, bf16, f64, i64, i32,
/// i16 as themselves; u8 and bool as u8; i8 widened to i16.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, WeightsError> {
    let format = detect_format(path)?;
    let started = std::time::Instant::now();
    let tensors = match format {
        WeightsFormat::Safetensors => read_safetensors(path, device)?,
        WeightsFormat::TorchZip => torch::read_zip(path, device)?,
        WeightsFormat::TorchLegacy => torch::read_legacy(path, device)?,
    };
    tracing::debug!(
        path = %path.display(),
        ?format,
        tensors = tensors.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "read weights"
    );
    Ok(tensors)
}

fn open_file(path: &Path) -> Result<File, WeightsError> {
    File::open(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Memory-maps a whole file read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap, WeightsError> {
    map_open_file(&open_file(path)?, path)
}

/// Memory-maps an opened file (`path` is for the error) read-only.
fn map_open_file(file: &File, path: &Path) -> Result<memmap2::Mmap, WeightsError> {
    // SAFETY: the map is read-only and private to this call. Another process
    // truncating the file while we read it could fault; that is the usual
    // caveat of memory-mapping (candle and safetensors accept it too) and the
    // price of not copying hundreds of megabytes up front.
    unsafe { memmap2::Mmap::map(file) }.map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, WeightsError> {
    use safetensors::SafeTensorError as E;
    // One open file: the map validates the header, positioned reads fetch the tensors.
    let file = open_file(path)?;
    let mmap = map_open_file(&file, path)?;
    // `deserialize` validates the header: JSON parses, every tensor's byte
    // range matches its dtype and shape, ranges tile the data without gaps,
    // and the data ends exactly at the end of the file.
    let st = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| match e {
        E::MetadataIncompleteBuffer => WeightsError::Truncated {
            path: path.to_path_buf(),
            what: format!(
                "the file is {} bytes, which does not match the end of the data its header describes",
                mmap.len()
            ),
        },
        E::InvalidHeaderLength | E::HeaderTooSmall => WeightsError::Truncated {
            path: path.to_path_buf(),
            what: "the file ends inside the safetensors header".to_string(),
        },
        other => WeightsError::Safetensors {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let mut out = HashMap::with_capacity(st.len());
    for (name, view) in st.iter() {
        use safetensors::Dtype as S;
        let elem = match view.dtype() {
            S::F32 => ElemType::F32,
            S::F16 => ElemType::F16,
            S::BF16 => ElemType::BF16,
            S::F64 => ElemType::F64,
            S::I64 => ElemType::I64,
            S::I32 => ElemType::I32,
            S::I16 => ElemType::I16,
            S::U32 => ElemType::U32,
            S::U8 | S::BOOL => ElemType::U8,
            S::I8 => ElemType::I8,
            other => {
                return Err(WeightsError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name: pickle::printable(name),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let candle_err = |source| WeightsError::Candle {
            path: path.to_path_buf(),
            name: pickle::printable(name),
            source: Box::new(source),
        };
        // Where the tensor's bytes start in the file (the slice points into the map; taking
        // its address reads nothing).
        let offset = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
        let tensor = match read_f32_at(&file, offset, view.data().len(), elem) {
            Some(values) => {
                let values = values.map_err(|source| WeightsError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                Tensor::from_vec(values, view.shape(), device).map_err(candle_err)?
            }
            None => {
                tensor_from_le_bytes(view.data(), elem, view.shape(), device).map_err(candle_err)?
            }
        };
        out.insert(name.to_string(), tensor);
    }
    Ok(out)
}

/// Reads `len` bytes of little-endian f32 at `offset` of `file` into a new vector, without
/// going through the memory map (whose pages would otherwise stay resident next to the copy
/// until the map is dropped). `None` where this does not apply (other element types, hosts
/// without positioned reads or not little-endian): the caller then copies from the map.
fn read_f32_at(
    file: &File,
    offset: usize,
    len: usize,
    elem: ElemType,
) -> Option<std::io::Result<Vec<f32>>> {
    #[cfg(all(unix, target_endian = "little"))]
    {
        use std::os::unix::fs::FileExt;
        if elem != ElemType::F32 || !len.is_multiple_of(4) {
            return None;
        }
        let mut values = vec![0f32; len / 4];
        // SAFETY: the byte view covers exactly the vector's initialised memory (len bytes), u8
        // has no alignment requirement, and every bit pattern is a valid f32, so filling the
        // bytes from the file cannot create an invalid value.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), len) };
        Some(file.read_exact_at(bytes, offset as u64).map(|()| values))
    }
    #[cfg(not(all(unix, target_endian = "little")))]
    {
        let _ = (file, offset, len, elem);
        None
    }
}

/// Element types as stored on disk, before mapping to candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ElemType {
    U8,
    I8,
    I16,
    I32,
    U32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl ElemType {
    pub(crate) fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::F64 => 8,
        }
    }
}

/// Builds a tensor from little-endian element bytes (`data.len()` must be
/// the shape's element count times the element size; candle checks it).
pub(crate) fn tensor_from_le_bytes(
    data: &[u8],
    elem: ElemType,
    shape: &[usize],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let dtype = match elem {
        ElemType::U8 => DType::U8,
        // candle has no i8; widen so values survive.
        ElemType::I8 => {
            let wide: Vec<i16> = data.iter().map(|&b| i16::from(b as i8)).collect();
            return Tensor::from_vec(wide, shape, device);
        }
        ElemType::I16 => DType::I16,
        ElemType::I32 => DType::I32,
        ElemType::U32 => DType::U32,
        ElemType::I64 => DType::I64,
        ElemType::F16 => DType::F16,
        ElemType::BF16 => DType::BF16,
        ElemType::F32 => DType::F32,
        ElemType::F64 => DType::F64,
    };
    if cfg!(target_endian = "big") {
        return Err(candle_core::Error::Msg(
            "weights files are little-endian; big-endian hosts are not supported".into(),
        ));
    }
    Tensor::from_raw_buffer(data, dtype, shape, device)
}
