//! PyTorch `torch.save` files, in both the zip and the legacy layout.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::rc::Rc;

use candle_core::{Device, Tensor};

use super::pickle::{self, PickleError, StorageKind, StorageRef, TensorRef, Value};
use super::{map_file, tensor_from_le_bytes, ElemType, WeightsError};

/// torch's legacy magic number 0x1950a86a20f9469cfc6c, little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The only legacy protocol version torch has ever written.
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

/// A state-dict key and the tensor it names.
type Entry = (String, Rc<TensorRef>);

fn is_legacy_magic(v: &Value) -> bool {
    let Value::BigInt(bytes) = v else {
        return false;
    };
    // Ignore redundant high zero bytes; the magic itself ends in 0x19.
    let mut end = bytes.len();
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    bytes[..end] == LEGACY_MAGIC
}

/// Whether `head` (the first bytes of a file) starts with torch's legacy magic pickle.
pub(super) fn starts_with_legacy_magic(head: &[u8]) -> bool {
    matches!(pickle::load(head), Ok(l) if is_legacy_magic(&l.value))
}

fn storage_elem(kind: StorageKind) -> ElemType {
    match kind {
        StorageKind::Float => ElemType::F32,
        StorageKind::Half => ElemType::F16,
        StorageKind::BFloat16 => ElemType::BF16,
        StorageKind::Double => ElemType::F64,
        StorageKind::Long => ElemType::I64,
        StorageKind::Int => ElemType::I32,
        StorageKind::Short => ElemType::I16,
        StorageKind::Char => ElemType::I8,
        StorageKind::Byte | StorageKind::Bool => ElemType::U8,
    }
}

fn pickle_err(path: &Path, part: &str, base: usize, e: PickleError) -> WeightsError {
    match e {
        PickleError::Truncated => WeightsError::Truncated {
            path: path.to_path_buf(),
            what: format!("the {part} ends before its pickle is complete"),
        },
        PickleError::Malformed { offset, reason } => WeightsError::Pickle {
            path: path.to_path_buf(),
            part: part.to_string(),
            offset: base.saturating_add(offset),
            reason,
        },
        PickleError::ForbiddenGlobal { module, name } => WeightsError::ForbiddenGlobal {
            path: path.to_path_buf(),
            module,
            name,
        },
    }
}

fn layout_err(path: &Path, reason: impl Into<String>) -> WeightsError {
    WeightsError::Layout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn zip_err(path: &Path, reason: impl Into<String>) -> WeightsError {
    WeightsError::Zip {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a `torch.save` zip archive: `<dir>/data.pkl` and `<dir>/data/<key>` entries.
pub(super) fn read_zip(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    let mmap = map_file(path)?;
    let file_len = mmap.len() as u64;
    let mut archive =
        zip::ZipArchive::new(Cursor::new(&mmap[..])).map_err(|e| zip_err(path, e.to_string()))?;

    // The top folder is named after the file torch saved to, so find it.
    let pickles: Vec<String> = archive
        .file_names_raw()
        .filter_map(|raw| std::str::from_utf8(raw).ok())
        .filter(|name| {
            name.strip_suffix("/data.pkl")
                .is_some_and(|dir| !dir.is_empty() && !dir.contains('/'))
        })
        .map(str::to_string)
        .collect();
    let pkl_name = match pickles.as_slice() {
        [one] => one.clone(),
        [] => return Err(zip_err(path, "it has no `<folder>/data.pkl` entry")),
        _ => {
            return Err(zip_err(
                path,
                "it has more than one `<folder>/data.pkl` entry",
            ))
        }
    };
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();

    let byteorder_name = format!("{prefix}byteorder");
    if archive.index_for_name(&byteorder_name).is_some() {
        let order = read_entry(path, &mut archive, &byteorder_name, None, 64)?;
        if order.as_slice() != b"little" {
            return Err(zip_err(
                path,
                format!(
                    "its tensors are stored with byte order `{}`; only little-endian is supported",
                    pickle::printable(&String::from_utf8_lossy(&order))
                ),
            ));
        }
    }

    let pkl = read_entry(path, &mut archive, &pkl_name, None, file_len)?;
    let part = format!("zip entry `{}`", pickle::printable(&pkl_name));
    let loaded = pickle::load(&pkl).map_err(|e| pickle_err(path, &part, 0, e))?;
    let entries = state_dict_entries(path, &loaded.value)?;

    materialize(path, entries, file_len, device, |storage| {
        // The unpickler only accepts plain keys, so this names an entry under data/.
        let name = format!("{prefix}data/{}", storage.key);
        let expected = storage_nbytes(path, storage)?;
        read_entry(path, &mut archive, &name, Some(expected), expected).map(Cow::Owned)
    })
}

/// Reads one zip entry fully; the zip reader verifies its CRC.
fn read_entry(
    path: &Path,
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    expected_len: Option<u64>,
    max_len: u64,
) -> Result<Vec<u8>, WeightsError> {
    let shown = pickle::printable(name);
    let mut entry = archive.by_name(name).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => zip_err(path, format!("entry `{shown}` is missing")),
        other => zip_err(path, format!("entry `{shown}` cannot be opened: {other}")),
    })?;
    let size = entry.size();
    if let Some(expected) = expected_len {
        if size != expected {
            return Err(layout_err(
                path,
                format!(
                    "zip entry `{shown}` holds {size} bytes but the pickle declares {expected}"
                ),
            ));
        }
    }
    if size > max_len {
        return Err(zip_err(
            path,
            format!("entry `{shown}` is implausibly large ({size} bytes)"),
        ));
    }
    let mut buf = Vec::new();
    // Read one byte past the declared size: the zip reader only verifies the
    // CRC when it sees the end of the entry.
    entry
        .by_ref()
        .take(max_len.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| zip_err(path, format!("entry `{shown}` cannot be read: {e}")))?;
    if buf.len() as u64 != size {
        return Err(WeightsError::Truncated {
            path: path.to_path_buf(),
            what: format!("zip entry `{shown}` has {} of its {size} bytes", buf.len()),
        });
    }
    Ok(buf)
}

/// Reads a legacy `torch.save` file: magic, protocol version, system info,
/// the state-dict pickle, the list of storage keys, then for each key a
/// little-endian u64 element count followed by the storage's raw bytes.
pub(super) fn read_legacy(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    let mmap = map_file(path)?;
    let data: &[u8] = &mmap;
    let mut chain = PickleChain { path, data, pos: 0 };
    check_legacy_header(&mut chain)?;
    let state = chain.read("state dict")?;
    let keys = storage_keys(path, chain.read("storage key list")?.value)?;
    let declared = declared_storages(path, &state.storages)?;
    let (blobs, pos) = storage_blobs(path, data, chain.pos, &keys, &declared)?;
    if pos != data.len() {
        tracing::warn!(
            path = %path.display(),
            extra = data.len() - pos,
            "ignoring bytes after the last storage of a legacy torch file"
        );
    }

    let entries = state_dict_entries(path, &state.value)?;
    materialize(path, entries, data.len() as u64, device, |storage| {
        blobs
            .get(storage.key.as_str())
            .map(|b| Cow::Borrowed(*b))
            .ok_or_else(|| {
                layout_err(
                    path,
                    format!(
                        "storage `{}` is used but has no data in the file",
                        storage.key
                    ),
                )
            })
    })
}

/// The pickles at the front of a legacy file, read one after another.
struct PickleChain<'a> {
    path: &'a Path,
    data: &'a [u8],
    /// Where the next pickle starts (after the last one: where the storages start).
    pos: usize,
}

impl PickleChain<'_> {
    fn read(&mut self, part: &str) -> Result<pickle::Loaded, WeightsError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let loaded = pickle::load(rest).map_err(|e| pickle_err(self.path, part, self.pos, e))?;
        self.pos += loaded.len;
        Ok(loaded)
    }
}

/// The three pickles before the state dict: the magic number, the protocol version and the
/// system info (which must not say big-endian).
fn check_legacy_header(chain: &mut PickleChain<'_>) -> Result<(), WeightsError> {
    if !is_legacy_magic(&chain.read("magic number")?.value) {
        return Err(layout_err(
            chain.path,
            "it does not start with torch's magic number",
        ));
    }
    match chain.read("protocol version")?.value {
        Value::Int(LEGACY_PROTOCOL_VERSION) => {}
        Value::Int(v) => {
            return Err(layout_err(
                chain.path,
                format!("unsupported legacy protocol version {v}"),
            ))
        }
        other => {
            return Err(layout_err(
                chain.path,
                format!("the protocol version is a {}", other.kind()),
            ))
        }
    }
    if let Value::Dict(info) = chain.read("system info")?.value {
        let big_endian = info.items.iter().any(|(k, v)| {
            matches!((k, v), (Value::Str(k), Value::Bool(false)) if &**k == "little_endian")
        });
        if big_endian {
            return Err(layout_err(
                chain.path,
                "it was written on a big-endian machine; only little-endian is supported",
            ));
        }
    }
    Ok(())
}

/// The storage keys, in the order their data follows the pickles.
fn storage_keys(path: &Path, list: Value) -> Result<Vec<String>, WeightsError> {
    let keys = match list {
        Value::List(list) => list
            .items
            .iter()
            .map(|k| match k {
                Value::Str(s) if pickle::is_plain_key(s) => Ok(s.to_string()),
                Value::Str(_) => Err(layout_err(
                    path,
                    "the storage key list holds a key that is not a plain name",
                )),
                other => Err(layout_err(
                    path,
                    format!("the storage key list holds a {}", other.kind()),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(layout_err(
                path,
                format!("the storage key list is a {}", other.kind()),
            ))
        }
    };
    Ok(keys)
}

/// Element type and count of each storage, as the state dict pickle declares them; a key
/// declared twice must be declared the same way.
fn declared_storages<'a>(
    path: &Path,
    storages: &'a [Rc<StorageRef>],
) -> Result<HashMap<&'a str, &'a StorageRef>, WeightsError> {
    let mut declared: HashMap<&str, &StorageRef> = HashMap::new();
    for s in storages {
        match declared.get(s.key.as_str()) {
            Some(prev) if prev.kind != s.kind || prev.numel != s.numel => {
                return Err(layout_err(
                    path,
                    format!(
                        "storage `{}` is declared both as {} x {} and as {} x {}",
                        s.key,
                        prev.numel,
                        prev.kind.class_name(),
                        s.numel,
                        s.kind.class_name()
                    ),
                ))
            }
            Some(_) => {}
            None => {
                declared.insert(&s.key, s);
            }
        }
    }
    Ok(declared)
}

/// The raw bytes of each storage, read from `pos` on: per key, a little-endian u64 element
/// count (checked against the declaration) and then the data. Returns them with the offset
/// after the last one.
fn storage_blobs<'a>(
    path: &Path,
    data: &'a [u8],
    mut pos: usize,
    keys: &'a [String],
    declared: &HashMap<&str, &StorageRef>,
) -> Result<(HashMap<&'a str, &'a [u8]>, usize), WeightsError> {
    let mut blobs: HashMap<&str, &[u8]> = HashMap::with_capacity(keys.len());
    for key in keys {
        let Some(storage) = declared.get(key.as_str()) else {
            return Err(layout_err(
                path,
                format!("storage `{key}` has data but nothing in the pickle refers to it"),
            ));
        };
        let truncated = |what: String| WeightsError::Truncated {
            path: path.to_path_buf(),
            what,
        };
        let count_bytes = data
            .get(pos..pos.saturating_add(8))
            .ok_or_else(|| truncated(format!("the element count of storage `{key}` is missing")))?;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(count_bytes);
        let count = u64::from_le_bytes(buf);
        pos += 8;
        if count != storage.numel {
            return Err(layout_err(
                path,
                format!(
                    "storage `{key}` has {count} elements on disk but the pickle declares {}",
                    storage.numel
                ),
            ));
        }
        let nbytes = usize::try_from(storage_nbytes(path, storage)?)
            .map_err(|_| layout_err(path, format!("storage `{key}` is too large")))?;
        let end = pos
            .checked_add(nbytes)
            .filter(|&end| end <= data.len())
            .ok_or_else(|| {
                truncated(format!(
                    "storage `{key}` needs {nbytes} bytes at offset {pos} but the file has {}",
                    data.len()
                ))
            })?;
        if blobs.insert(key, &data[pos..end]).is_some() {
            return Err(layout_err(path, format!("storage `{key}` is listed twice")));
        }
        pos = end;
    }
    Ok((blobs, pos))
}

fn storage_nbytes(path: &Path, storage: &StorageRef) -> Result<u64, WeightsError> {
    storage
        .numel
        .checked_mul(storage_elem(storage.kind).size() as u64)
        .ok_or_else(|| {
            layout_err(
                path,
                format!("storage `{}` is impossibly large", storage.key),
            )
        })
}

/// The (name, tensor) pairs of a flat state dict; a later duplicate key wins, as in Python.
fn state_dict_entries(path: &Path, root: &Value) -> Result<Vec<Entry>, WeightsError> {
    let not_state_dict = |reason: String| WeightsError::NotStateDict {
        path: path.to_path_buf(),
        reason,
    };
    let Value::Dict(map) = root else {
        return Err(not_state_dict(format!(
            "the saved object is a {}, not a dict",
            root.kind()
        )));
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(map.items.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(map.items.len());
    for (k, v) in &map.items {
        let Value::Str(k) = k else {
            return Err(not_state_dict(format!(
                "a key is a {}, not a string",
                k.kind()
            )));
        };
        let shown = pickle::printable(k);
        match v {
            Value::Tensor(t) => match index.get(&**k) {
                Some(&i) => entries[i].1 = t.clone(),
                None => {
                    index.insert(k.to_string(), entries.len());
                    entries.push((k.to_string(), t.clone()));
                }
            },
            Value::Dict(_) => {
                return Err(not_state_dict(format!(
                    "its tensors are nested under the key `{shown}` (a training checkpoint?); \
                     nested state dicts are not supported, save `checkpoint[\"{shown}\"]` on its own"
                )))
            }
            other => {
                return Err(not_state_dict(format!(
                    "key `{shown}` holds a {}, not a tensor",
                    other.kind()
                )))
            }
        }
    }
    Ok(entries)
}

/// How to cut one tensor out of its storage.
enum Plan {
    /// Row-major and dense: a view of the shared storage tensor.
    Contiguous {
        start: usize,
        numel: usize,
        shape: Vec<usize>,
    },
    /// Any other strides (e.g. a transposed matrix): copied element by element.
    Strided {
        start: usize,
        numel: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
}

fn plan(t: &TensorRef) -> Result<Plan, String> {
    let too_big = || "its size, stride or offset does not fit in memory".to_string();
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| too_big());
    let shape = t
        .size
        .iter()
        .map(|&d| to_usize(d))
        .collect::<Result<Vec<_>, _>>()?;
    let stride = t
        .stride
        .iter()
        .map(|&d| to_usize(d))
        .collect::<Result<Vec<_>, _>>()?;
    let start = to_usize(t.offset)?;
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_big)?;
    let storage_numel = to_usize(t.storage.numel)?;
    if numel == 0 {
        return Ok(Plan::Contiguous {
            start: 0,
            numel,
            shape,
        });
    }
    // Highest element index the view touches.
    let mut last = start;
    for (&d, &s) in shape.iter().zip(&stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or_else(too_big)?;
    }
    if last >= storage_numel {
        return Err(format!(
            "it reaches element {last} of storage `{}`, which has {storage_numel} elements",
            t.storage.key
        ));
    }
    let mut expected = 1usize;
    let mut contiguous = true;
    for (&d, &s) in shape.iter().zip(&stride).rev() {
        if d != 1 && s != expected {
            contiguous = false;
        }
        expected = expected.saturating_mul(d);
    }
    if contiguous {
        return Ok(Plan::Contiguous {
            start,
            numel,
            shape,
        });
    }
    if numel > storage_numel {
        // Only overlapping views (stride 0, expand()) can be larger than their storage.
        return Err(format!(
            "it has {numel} elements but its storage only {storage_numel} (an expanded view); not supported"
        ));
    }
    Ok(Plan::Strided {
        start,
        numel,
        shape,
        stride,
    })
}

/// Copies a strided view's elements into row-major order.
fn gather(
    bytes: &[u8],
    elem_size: usize,
    start: usize,
    numel: usize,
    shape: &[usize],
    stride: &[usize],
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(numel.checked_mul(elem_size)?);
    let mut index = vec![0usize; shape.len()];
    let mut pos = start;
    for _ in 0..numel {
        let at = pos.checked_mul(elem_size)?;
        out.extend_from_slice(bytes.get(at..at.checked_add(elem_size)?)?);
        // Odometer step over the multi-index, last dimension fastest.
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            pos = pos.checked_add(stride[d])?;
            if index[d] < shape[d] {
                break;
            }
            pos = pos.checked_sub(stride[d].checked_mul(shape[d])?)?;
            index[d] = 0;
        }
    }
    Some(out)
}

/// Turns state-dict entries into tensors, loading each storage once.
/// Tensors over the same storage (tied weights) share its memory.
fn materialize<'a>(
    path: &Path,
    entries: Vec<Entry>,
    file_len: u64,
    device: &Device,
    mut load: impl FnMut(&StorageRef) -> Result<Cow<'a, [u8]>, WeightsError>,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    // Group by storage, keeping first-use order.
    let mut groups: Vec<(Rc<StorageRef>, Vec<Entry>)> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for (name, t) in entries {
        let storage = t.storage.clone();
        match group_of.get(&storage.key) {
            Some(&g) => {
                let first = &groups[g].0;
                if first.kind != storage.kind || first.numel != storage.numel {
                    return Err(layout_err(
                        path,
                        format!(
                            "storage `{}` is used both as {} x {} and as {} x {}",
                            storage.key,
                            first.numel,
                            first.kind.class_name(),
                            storage.numel,
                            storage.kind.class_name()
                        ),
                    ));
                }
                groups[g].1.push((name, t));
            }
            None => {
                group_of.insert(storage.key.clone(), groups.len());
                groups.push((storage, vec![(name, t)]));
            }
        }
    }

    // Strided copies are the only output not backed by file bytes; bound them.
    let mut copy_budget = file_len.saturating_mul(2).saturating_add(16 << 20);
    let mut out = HashMap::new();
    for (storage, tensors) in groups {
        let elem = storage_elem(storage.kind);
        let bytes = load(&storage)?;
        let expected = storage_nbytes(path, &storage)?;
        if bytes.len() as u64 != expected {
            return Err(layout_err(
                path,
                format!(
                    "storage `{}` holds {} bytes but the pickle declares {expected}",
                    storage.key,
                    bytes.len()
                ),
            ));
        }
        let mut whole: Option<Tensor> = None;
        for (name, t) in tensors {
            let bad = |reason: String| WeightsError::BadTensor {
                path: path.to_path_buf(),
                name: pickle::printable(&name),
                reason,
            };
            let candle_err = |source| WeightsError::Candle {
                path: path.to_path_buf(),
                name: pickle::printable(&name),
                source: Box::new(source),
            };
            let tensor = match plan(&t).map_err(bad)? {
                Plan::Contiguous {
                    start,
                    numel,
                    shape,
                } => {
                    let base = match &whole {
                        Some(w) => w.clone(),
                        None => {
                            let n = bytes.len() / elem.size();
                            let w = tensor_from_le_bytes(&bytes, elem, &[n], device)
                                .map_err(candle_err)?;
                            whole = Some(w.clone());
                            w
                        }
                    };
                    base.narrow(0, start, numel)
                        .and_then(|v| v.reshape(shape))
                        .map_err(candle_err)?
                }
                Plan::Strided {
                    start,
                    numel,
                    shape,
                    stride,
                } => {
                    let nbytes = (numel as u64).saturating_mul(elem.size() as u64);
                    copy_budget = copy_budget.checked_sub(nbytes).ok_or_else(|| {
                        bad("the file's non-contiguous tensors would need more memory than the file size allows".into())
                    })?;
                    let buf = gather(&bytes, elem.size(), start, numel, &shape, &stride)
                        .ok_or_else(|| bad("its strides leave the storage".into()))?;
                    tensor_from_le_bytes(&buf, elem, &shape, device).map_err(candle_err)?
                }
            };
            out.insert(name, tensor);
        }
    }
    Ok(out)
}
