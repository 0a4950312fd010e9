//! A restricted unpickler for PyTorch state dicts.
//!
//! It interprets the pickle opcodes that `torch.save` emits and builds plain
//! data values. It never runs code: `GLOBAL` only resolves names on a short
//! allow-list (OrderedDict, the tensor/parameter rebuild helpers and the
//! `torch.*Storage` types), and `REDUCE` only "calls" those, by building a
//! description of the tensor. Any other global is refused at the moment it is
//! named.
//!
//! Containers are shared copy-on-write (`Rc`), so a value reached again through
//! the memo is the snapshot taken when it was memoized. torch state dicts never
//! mutate a container after memoizing and re-reading it, so this is enough, and
//! it rules out reference cycles. Nesting depth and copy work are bounded so
//! that hostile input cannot exhaust the stack or the CPU.

mod unpickler;

use std::rc::Rc;

pub(crate) use unpickler::load;

/// Element types of the `torch.*Storage` classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageKind {
    Float,
    Half,
    BFloat16,
    Double,
    Long,
    Int,
    Short,
    Char,
    Byte,
    Bool,
}

impl StorageKind {
    fn from_class_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::Float,
            "HalfStorage" => Self::Half,
            "BFloat16Storage" => Self::BFloat16,
            "DoubleStorage" => Self::Double,
            "LongStorage" => Self::Long,
            "IntStorage" => Self::Int,
            "ShortStorage" => Self::Short,
            "CharStorage" => Self::Char,
            "ByteStorage" => Self::Byte,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    pub(crate) fn class_name(self) -> &'static str {
        match self {
            Self::Float => "FloatStorage",
            Self::Half => "HalfStorage",
            Self::BFloat16 => "BFloat16Storage",
            Self::Double => "DoubleStorage",
            Self::Long => "LongStorage",
            Self::Int => "IntStorage",
            Self::Short => "ShortStorage",
            Self::Char => "CharStorage",
            Self::Byte => "ByteStorage",
            Self::Bool => "BoolStorage",
        }
    }
}

/// The only Python globals a weights pickle may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(StorageKind),
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameterWithState)
        }
        ("torch", class) => StorageKind::from_class_name(class).map(Global::Storage),
        _ => None,
    }
}

/// A storage named by a persistent id: its data lives outside the pickle.
#[derive(Debug)]
pub(crate) struct StorageRef {
    pub kind: StorageKind,
    pub key: String,
    /// Element count declared by the pickle.
    pub numel: u64,
}

/// A tensor as described by `_rebuild_tensor_v2`: a strided view of a storage.
#[derive(Debug)]
pub(crate) struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Seq {
    pub items: Vec<Value>,
    depth: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Map {
    pub items: Vec<(Value, Value)>,
    depth: u32,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than i64, as little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    /// Floats and byte strings only occur in metadata we skip, so their values are dropped.
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Seq>),
    List(Rc<Seq>),
    Dict(Rc<Map>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// A short type name for error messages (never the value itself).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class or function",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(s) | Value::List(s) => s.depth,
            Value::Dict(m) => m.depth,
            _ => 0,
        }
    }
}

#[derive(Debug)]
pub(crate) enum PickleError {
    /// The input ended before the STOP opcode.
    Truncated,
    Malformed {
        offset: usize,
        reason: String,
    },
    ForbiddenGlobal {
        module: String,
        name: String,
    },
}

type PResult<T> = Result<T, PickleError>;

/// The result of unpickling one pickle.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub value: Value,
    /// Bytes the pickle occupied, STOP included.
    pub len: usize,
    /// Every storage named by a persistent id, in order of appearance.
    pub storages: Vec<Rc<StorageRef>>,
}

/// Storage keys torch writes are decimal numbers; allowing only plain names
/// keeps them safe to use in zip entry names and error messages.
pub(crate) fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Escapes control and other non-printable characters of untrusted text
/// before it goes into an error message (quotes and backslashes stay as they are).
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\'' | '\\' => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    out
}

#[cfg(test)]
mod tests;
