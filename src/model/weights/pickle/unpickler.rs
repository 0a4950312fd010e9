//! The unpickling machine: a stack, marks and a memo driven by the opcode loop in `run`, with
//! the torch-specific steps (allow-listed globals, persistent ids, tensor rebuilds) it performs.

use std::collections::HashMap;
use std::rc::Rc;

use super::{
    is_plain_key, printable, resolve_global, Global, Loaded, Map, PResult, PickleError, Seq,
    StorageRef, TensorRef, Value,
};

/// Deepest container nesting accepted; state dicts need about five levels.
const MAX_DEPTH: u32 = 64;

/// Unpickles one pickle from the start of `data`.
pub(crate) fn load(data: &[u8]) -> PResult<Loaded> {
    let mut u = Unpickler {
        data,
        pos: 0,
        op_start: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        // Copy-on-write clones may copy at most this many elements in total,
        // which keeps hostile memo/append sequences from going quadratic.
        copy_budget: 16 * data.len() as u64 + (1 << 20),
        storages: Vec::new(),
    };
    let value = u.run()?;
    Ok(Loaded {
        value,
        len: u.pos,
        storages: u.storages,
    })
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    op_start: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    copy_budget: u64,
    storages: Vec<Rc<StorageRef>>,
}

impl<'a> Unpickler<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> PResult<T> {
        Err(PickleError::Malformed {
            offset: self.op_start,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(PickleError::Truncated)?;
        let bytes = self.data.get(self.pos..end).ok_or(PickleError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u32_le(&mut self) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn u64_le(&mut self) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    fn len_to_usize(&self, n: u64) -> PResult<usize> {
        usize::try_from(n).or_else(|_| self.err("length does not fit in memory"))
    }

    /// A text line ending in '\n' (protocol 0 style arguments).
    fn line(&mut self) -> PResult<&'a str> {
        let rest = self.data.get(self.pos..).ok_or(PickleError::Truncated)?;
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated)?;
        self.pos += nl + 1;
        std::str::from_utf8(&rest[..nl]).or_else(|_| self.err("text argument is not UTF-8"))
    }

    fn pop(&mut self) -> PResult<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err("stack underflow");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn top_mut(&mut self) -> PResult<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err("stack underflow");
        }
        let offset = self.op_start;
        self.stack.last_mut().ok_or_else(|| PickleError::Malformed {
            offset,
            reason: "stack underflow".into(),
        })
    }

    /// Pops everything down to the most recent MARK.
    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(mark) = self.marks.pop() else {
            return self.err("MARK expected but none is open");
        };
        Ok(self.stack.split_off(mark))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn check_depth(&self, depth: u32) -> PResult<u32> {
        if depth > MAX_DEPTH {
            return self.err(format!("containers nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(depth)
    }

    fn new_seq(&self, items: Vec<Value>) -> PResult<Seq> {
        let depth = self.check_depth(1 + items.iter().map(Value::depth).max().unwrap_or(0))?;
        Ok(Seq { items, depth })
    }

    fn new_map(&self, items: Vec<(Value, Value)>) -> PResult<Map> {
        let depth = self.check_depth(
            1 + items
                .iter()
                .map(|(k, v)| k.depth().max(v.depth()))
                .max()
                .unwrap_or(0),
        )?;
        Ok(Map { items, depth })
    }

    fn charge_copy(&mut self, elements: usize) -> PResult<()> {
        self.copy_budget = self.copy_budget.checked_sub(elements as u64).map_or_else(
            || self.err("pickle copies too much data (hostile input?)"),
            Ok,
        )?;
        Ok(())
    }

    fn memo_get(&self, idx: u64) -> PResult<Value> {
        match self.memo.get(&idx) {
            Some(v) => Ok(v.clone()),
            None => self.err(format!("memo slot {idx} read before it was written")),
        }
    }

    fn memo_put(&mut self, idx: u64) -> PResult<()> {
        let v = self.top_mut()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn append_items(&mut self, items: Vec<Value>) -> PResult<()> {
        let cost = {
            let top = self.top_mut()?;
            let Value::List(list) = top else {
                let kind = top.kind();
                return self.err(format!("APPEND to a {kind}, not a list"));
            };
            shared_len(list)
        };
        self.charge_copy(cost)?;
        let child_depth = items.iter().map(Value::depth).max().unwrap_or(0);
        let depth = self.check_depth(child_depth + 1)?;
        if let Value::List(list) = self.top_mut()? {
            // Copies only when the memo shares this list (copy-on-write).
            let list = Rc::make_mut(list);
            list.depth = list.depth.max(depth);
            list.items.extend(items);
        }
        Ok(())
    }

    fn set_items(&mut self, flat: Vec<Value>) -> PResult<()> {
        if !flat.len().is_multiple_of(2) {
            return self.err("SETITEMS with an odd number of items");
        }
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        let cost = {
            let top = self.top_mut()?;
            let Value::Dict(map) = top else {
                let kind = top.kind();
                return self.err(format!("SETITEM on a {kind}, not a dict"));
            };
            shared_len(map)
        };
        self.charge_copy(cost)?;
        let child_depth = pairs
            .iter()
            .map(|(k, v)| k.depth().max(v.depth()))
            .max()
            .unwrap_or(0);
        let depth = self.check_depth(child_depth + 1)?;
        if let Value::Dict(map) = self.top_mut()? {
            let map = Rc::make_mut(map);
            map.depth = map.depth.max(depth);
            map.items.extend(pairs);
        }
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> PResult<()> {
        match resolve_global(module, name) {
            Some(g) => {
                self.push(Value::Global(g));
                Ok(())
            }
            None => Err(PickleError::ForbiddenGlobal {
                module: printable(module),
                name: printable(name),
            }),
        }
    }

    fn persistent_load(&mut self, pid: Value) -> PResult<Value> {
        let Value::Tuple(t) = &pid else {
            return self.err(format!(
                "persistent id is a {}, expected a tuple",
                pid.kind()
            ));
        };
        let items = &t.items;
        match items.first() {
            Some(Value::Str(s)) if &**s == "storage" => {}
            _ => return self.err("persistent id is not a ('storage', ...) tuple"),
        }
        // zip layout: (tag, type, key, location, numel);
        // legacy layout adds view_metadata, which torch only sets for storage views.
        if items.len() != 5 && items.len() != 6 {
            return self.err(format!(
                "storage persistent id has {} fields, expected 5 or 6",
                items.len()
            ));
        }
        let kind = match &items[1] {
            Value::Global(Global::Storage(kind)) => *kind,
            other => {
                return self.err(format!(
                    "storage type is a {}, expected a torch.*Storage class",
                    other.kind()
                ))
            }
        };
        let key = match &items[2] {
            Value::Str(s) if is_plain_key(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Str(_) => return self.err("storage key is not a plain name"),
            other => return self.err(format!("storage key is a {}", other.kind())),
        };
        let numel = match &items[4] {
            Value::Int(n) if *n >= 0 => *n as u64,
            _ => return self.err("storage element count is not a non-negative int"),
        };
        if let Some(view) = items.get(5) {
            if !matches!(view, Value::None) {
                return self.err(
                    "storage views (view_metadata) from very old torch versions are not supported",
                );
            }
        }
        let storage = Rc::new(StorageRef { kind, key, numel });
        self.storages.push(storage.clone());
        Ok(Value::Storage(storage))
    }

    fn int_tuple(&self, v: &Value, what: &str) -> PResult<Vec<u64>> {
        let Value::Tuple(t) = v else {
            return self.err(format!("tensor {what} is a {}, expected a tuple", v.kind()));
        };
        t.items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as u64),
                _ => self.err(format!(
                    "tensor {what} holds a value that is not a non-negative int"
                )),
            })
            .collect()
    }

    fn reduce(&mut self, callable: Value, args: Value) -> PResult<Value> {
        let Value::Global(g) = callable else {
            return self.err(format!("REDUCE on a {}, not a callable", callable.kind()));
        };
        let Value::Tuple(args) = args else {
            return self.err("REDUCE arguments are not a tuple");
        };
        let args = &args.items;
        match g {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return self.err("OrderedDict called with arguments");
                }
                Ok(Value::Dict(Rc::new(Map {
                    items: Vec::new(),
                    depth: 1,
                })))
            }
            Global::RebuildTensor | Global::RebuildTensorV2 => {
                // (storage, storage_offset, size, stride, [requires_grad, backward_hooks, [metadata]])
                if args.len() < 4 {
                    return self.err("tensor rebuild with fewer than 4 arguments");
                }
                let Value::Storage(storage) = &args[0] else {
                    return self.err(format!(
                        "tensor rebuilt from a {}, not a storage",
                        args[0].kind()
                    ));
                };
                let offset = match &args[1] {
                    Value::Int(i) if *i >= 0 => *i as u64,
                    _ => return self.err("tensor storage offset is not a non-negative int"),
                };
                let size = self.int_tuple(&args[2], "size")?;
                let stride = self.int_tuple(&args[3], "stride")?;
                if size.len() != stride.len() {
                    return self.err(format!(
                        "tensor has {} sizes but {} strides",
                        size.len(),
                        stride.len()
                    ));
                }
                Ok(Value::Tensor(Rc::new(TensorRef {
                    storage: storage.clone(),
                    offset,
                    size,
                    stride,
                })))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => match args.first() {
                // A Parameter's data is a plain tensor; requires_grad and hooks do not matter here.
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => self.err("parameter rebuilt from something that is not a tensor"),
            },
            Global::Storage(kind) => self.err(format!(
                "torch.{} called directly; only persistent storages are supported",
                kind.class_name()
            )),
        }
    }

    fn run(&mut self) -> PResult<Value> {
        loop {
            self.op_start = self.pos;
            let op = self.u8()?;
            match op {
                // PROTO
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                // FRAME: framing is only a read-ahead hint.
                0x95 => {
                    self.u64_le()?;
                }
                // STOP
                b'.' => {
                    let v = self.pop()?;
                    if !self.marks.is_empty() || !self.stack.is_empty() {
                        return self.err("pickle stops with extra items on the stack");
                    }
                    return Ok(v);
                }
                // MARK
                b'(' => self.marks.push(self.stack.len()),
                // POP
                b'0' => {
                    self.pop()?;
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP
                b'2' => {
                    let v = self.top_mut()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                // BININT
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push(Value::Int(v.into()));
                }
                // BININT1
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                // BININT2
                b'M' => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push(Value::Int(v.into()));
                }
                // INT (text); "00"/"01" are protocol 0's False/True
                b'I' => {
                    let line = self.line()?;
                    let v = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => match s.parse::<i64>() {
                            Ok(i) => Value::Int(i),
                            Err(_) => return self.err("INT argument is not a number"),
                        },
                    };
                    self.push(v);
                }
                // LONG1 / LONG4
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        u64::from(self.u8()?)
                    } else {
                        u64::from(self.u32_le()?)
                    };
                    let n = self.len_to_usize(n)?;
                    let bytes = self.take(n)?;
                    self.push(decode_long(bytes));
                }
                // BINFLOAT (big-endian)
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float);
                }
                // BINUNICODE / SHORT_BINUNICODE / BINUNICODE8
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(self.u32_le()?),
                        0x8c => u64::from(self.u8()?),
                        _ => self.u64_le()?,
                    };
                    let n = self.len_to_usize(n)?;
                    let bytes = self.take(n)?;
                    let s = match std::str::from_utf8(bytes) {
                        Ok(s) => s,
                        Err(_) => return self.err("string is not valid UTF-8"),
                    };
                    self.push(Value::Str(Rc::from(s)));
                }
                // BINSTRING / SHORT_BINSTRING: Python 2 byte strings, read as latin-1
                // like torch.load(encoding="latin1") does.
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        u64::from(self.u32_le()?)
                    } else {
                        u64::from(self.u8()?)
                    };
                    let n = self.len_to_usize(n)?;
                    let bytes = self.take(n)?;
                    let s: String = bytes.iter().map(|&b| char::from(b)).collect();
                    self.push(Value::Str(Rc::from(s)));
                }
                // SHORT_BINBYTES / BINBYTES / BINBYTES8
                b'C' | b'B' | 0x8e => {
                    let n = match op {
                        b'C' => u64::from(self.u8()?),
                        b'B' => u64::from(self.u32_le()?),
                        _ => self.u64_le()?,
                    };
                    let n = self.len_to_usize(n)?;
                    self.take(n)?;
                    self.push(Value::Bytes);
                }
                // EMPTY_TUPLE
                b')' => {
                    let s = self.new_seq(Vec::new())?;
                    self.push(Value::Tuple(Rc::new(s)));
                }
                // TUPLE
                b't' => {
                    let items = self.pop_mark()?;
                    let s = self.new_seq(items)?;
                    self.push(Value::Tuple(Rc::new(s)));
                }
                // TUPLE1 / TUPLE2 / TUPLE3
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let s = self.new_seq(items)?;
                    self.push(Value::Tuple(Rc::new(s)));
                }
                // EMPTY_LIST
                b']' => {
                    let s = self.new_seq(Vec::new())?;
                    self.push(Value::List(Rc::new(s)));
                }
                // LIST
                b'l' => {
                    let items = self.pop_mark()?;
                    let s = self.new_seq(items)?;
                    self.push(Value::List(Rc::new(s)));
                }
                // APPEND
                b'a' => {
                    let v = self.pop()?;
                    self.append_items(vec![v])?;
                }
                // APPENDS
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append_items(items)?;
                }
                // EMPTY_DICT
                b'}' => {
                    let m = self.new_map(Vec::new())?;
                    self.push(Value::Dict(Rc::new(m)));
                }
                // DICT
                b'd' => {
                    let flat = self.pop_mark()?;
                    let m = self.new_map(Vec::new())?;
                    self.push(Value::Dict(Rc::new(m)));
                    self.set_items(flat)?;
                }
                // SETITEM
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                // SETITEMS
                b'u' => {
                    let flat = self.pop_mark()?;
                    self.set_items(flat)?;
                }
                // BINPUT / LONG_BINPUT / PUT
                b'q' => {
                    let idx = u64::from(self.u8()?);
                    self.memo_put(idx)?;
                }
                b'r' => {
                    let idx = u64::from(self.u32_le()?);
                    self.memo_put(idx)?;
                }
                b'p' => {
                    let idx = match self.line()?.parse::<u64>() {
                        Ok(i) => i,
                        Err(_) => return self.err("PUT index is not a number"),
                    };
                    self.memo_put(idx)?;
                }
                // MEMOIZE
                0x94 => {
                    let idx = self.memo.len() as u64;
                    self.memo_put(idx)?;
                }
                // BINGET / LONG_BINGET / GET
                b'h' => {
                    let idx = u64::from(self.u8()?);
                    let v = self.memo_get(idx)?;
                    self.push(v);
                }
                b'j' => {
                    let idx = u64::from(self.u32_le()?);
                    let v = self.memo_get(idx)?;
                    self.push(v);
                }
                b'g' => {
                    let idx = match self.line()?.parse::<u64>() {
                        Ok(i) => i,
                        Err(_) => return self.err("GET index is not a number"),
                    };
                    let v = self.memo_get(idx)?;
                    self.push(v);
                }
                // GLOBAL "module\nname\n"
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                // STACK_GLOBAL
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?;
                        }
                        _ => return self.err("STACK_GLOBAL operands are not strings"),
                    }
                }
                // REDUCE
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v);
                }
                // BUILD: object state (e.g. a state dict's `_metadata`) is not needed.
                b'b' => {
                    self.pop()?;
                    self.top_mut()?;
                }
                // BINPERSID
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v);
                }
                other => {
                    return self.err(format!(
                    "unsupported pickle opcode 0x{other:02x}; only plain state dicts are allowed"
                ))
                }
            }
        }
    }
}

/// Decodes a little-endian two's complement integer of any width.
pub(super) fn decode_long(bytes: &[u8]) -> Value {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    if bytes.len() <= 8 {
        let mut buf = [fill; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        return Value::Int(i64::from_le_bytes(buf));
    }
    // Wider encodings may still hold a small value (redundant sign bytes).
    let (low, high) = bytes.split_at(8);
    let low_negative = low[7] & 0x80 != 0;
    if high.iter().all(|&b| b == fill) && low_negative == negative {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(low);
        return Value::Int(i64::from_le_bytes(buf));
    }
    Value::BigInt(Rc::from(bytes))
}

/// Elements a copy-on-write mutation of `c` would copy (0 when not shared).
fn shared_len<T: HasLen>(c: &Rc<T>) -> usize {
    if Rc::strong_count(c) > 1 {
        c.len()
    } else {
        0
    }
}

trait HasLen {
    fn len(&self) -> usize;
}

impl HasLen for Seq {
    fn len(&self) -> usize {
        self.items.len()
    }
}

impl HasLen for Map {
    fn len(&self) -> usize {
        self.items.len()
    }
}
