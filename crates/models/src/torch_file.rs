//! Reading PyTorch `torch.save` files of state dicts (the zip format of PyTorch >= 1.6): `ARCHIVE/data.pkl`, a
//! pickle (protocol 2) whose tensors point to raw storages `ARCHIVE/data/KEY`. Only what state dicts use is
//! understood: dictionaries, tuples, lists, strings, numbers, `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2` and float/double/long storages; anything else is skipped or refused by name.
//! Nothing is executed.
//!
//! The reader is bounded, so a hostile file fails cleanly instead of exhausting the stack, memory or time:
//! containers nest at most [`MAX_DEPTH`] deep, the values built (memo copies included) number at most
//! [`MAX_VALUES`], the pickle is at most [`MAX_PICKLE_BYTES`], and each storage is read only as far as its tensors
//! reach.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::weights_file::{InteropError, WeightsFile};

/// Deepest nesting of containers accepted (a state dict needs about 5).
pub const MAX_DEPTH: usize = 100;
/// Most values the reader builds, counting every copy a memo lookup makes (a ResNet-18 state dict needs ~3,000).
pub const MAX_VALUES: usize = 2_000_000;
/// Largest pickle accepted (tensor data lives in separate storages; a WRN-34-10 state dict pickles to ~40 KB).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// A pickled value. Every kind is parsed so the stack stays faithful, though a state dict reads only some.
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Seq),
    List(Seq),
    /// Keys and values alternate.
    Dict(Seq),
    Global(String),
    Storage {
        key: String,
        dtype: String,
    },
    Tensor {
        key: String,
        dtype: String,
        offset: i64,
        shape: Vec<i64>,
        stride: Vec<i64>,
    },
    Object,
    Mark,
}

/// The items of a container, with its nesting depth and its number of values kept up to date, so that limits are
/// checked without walking the tree.
#[derive(Debug, Clone, Default)]
struct Seq {
    items: Vec<Value>,
    depth: usize,
    size: usize,
}

impl Seq {
    fn new(items: Vec<Value>) -> Self {
        let mut seq = Seq {
            items: Vec::with_capacity(items.len()),
            depth: 1,
            size: 1,
        };
        for item in items {
            seq.push(item);
        }
        seq
    }

    fn push(&mut self, item: Value) {
        self.depth = self.depth.max(1 + item.depth());
        self.size += item.size();
        self.items.push(item);
    }
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(s) | Value::List(s) | Value::Dict(s) => s.depth,
            _ => 0,
        }
    }

    fn size(&self) -> usize {
        match self {
            Value::Tuple(s) | Value::List(s) | Value::Dict(s) => s.size,
            _ => 1,
        }
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> InteropError {
    InteropError::Invalid(format!(
        "{} is not a readable PyTorch state dict: {reason}",
        path.display()
    ))
}

/// Bytes per element of a storage class, for the dtypes tailguard reads or names.
fn element_bytes(dtype: &str) -> Option<(usize, &'static str)> {
    Some(match dtype {
        "FloatStorage" => (4, "F32"),
        "DoubleStorage" => (8, "F64"),
        "HalfStorage" => (2, "F16"),
        "BFloat16Storage" => (2, "BF16"),
        "LongStorage" => (8, "I64"),
        "IntStorage" => (4, "I32"),
        "ShortStorage" => (2, "I16"),
        "CharStorage" => (1, "I8"),
        "ByteStorage" => (1, "U8"),
        "BoolStorage" => (1, "BOOL"),
        _ => return None,
    })
}

/// Reads at most `limit` bytes of one archive member.
fn read_member(
    archive: &mut zip::ZipArchive<std::fs::File>,
    path: &Path,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, InteropError> {
    let entry = archive.by_name(name).map_err(|e| bad(path, format!("{name}: {e}")))?;
    let mut bytes = Vec::new();
    entry
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(path, format!("{name}: {e}")))?;
    Ok(bytes)
}

/// Reads the tensors of a `torch.save`d state dict.
pub fn read_torch_file(path: &Path) -> Result<WeightsFile, InteropError> {
    let file = std::fs::File::open(path).map_err(|source| InteropError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(path, format!("not a zip archive ({e})")))?;
    let names: Vec<String> = archive.file_names().map(String::from).collect();
    let pickle_name = names
        .iter()
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| bad(path, "no data.pkl"))?
        .clone();
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let pickle = read_member(&mut archive, path, &pickle_name, MAX_PICKLE_BYTES + 1)?;
    if pickle.len() as u64 > MAX_PICKLE_BYTES {
        return Err(bad(path, format!("data.pkl is larger than {MAX_PICKLE_BYTES} bytes")));
    }
    let root = unpickle(&pickle).map_err(|e| {
        // `torch.save(model)` pickles the module object itself: say so, and what to save instead.
        let module = pickle.windows(16).any(|w| w == b"torch.nn.modules");
        if module {
            bad(
                path,
                "it holds a whole module (torch.save(model)), not a state dict: load it in PyTorch and save \
                 model.state_dict() instead",
            )
        } else {
            bad(path, e)
        }
    })?;
    let Value::Dict(entries) = state_dict_of(root) else {
        return Err(bad(path, "the pickle is not a dictionary"));
    };

    // Every tensor's extent, checked, before any storage is read; each storage is then read as far as needed.
    struct Spec {
        name: String,
        key: String,
        dtype: String,
        offset: usize,
        shape: Vec<usize>,
    }
    let mut specs = Vec::new();
    let mut needed: HashMap<String, usize> = HashMap::new();
    let mut file_tensors = WeightsFile::default();
    let mut items = entries.items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        let (
            Value::Str(name),
            Value::Tensor {
                key,
                dtype,
                offset,
                shape,
                stride,
            },
        ) = (key, value)
        else {
            continue;
        };
        let size =
            |what: &str, v: i64| usize::try_from(v).map_err(|_| bad(path, format!("{name}: negative {what} {v}")));
        let offset = size("offset", offset)?;
        let shape = shape
            .iter()
            .map(|d| size("dimension", *d))
            .collect::<Result<Vec<_>, _>>()?;
        let stride = stride
            .iter()
            .map(|d| size("stride", *d))
            .collect::<Result<Vec<_>, _>>()?;
        if shape.len() != stride.len() {
            return Err(bad(
                path,
                format!("{name}: {} dimensions but {} strides", shape.len(), stride.len()),
            ));
        }
        let mut expected = 1usize;
        for (dim, s) in shape.iter().zip(&stride).rev() {
            if *dim > 1 && *s != expected {
                return Err(bad(path, format!("{name} is not contiguous")));
            }
            expected = expected.saturating_mul(*dim);
        }
        let Some((bytes, dtype_name)) = element_bytes(&dtype) else {
            return Err(bad(path, format!("{name}: unsupported storage type {dtype}")));
        };
        let too_large = || bad(path, format!("{name}: shape {shape:?} at offset {offset} is too large"));
        let numel = shape
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d))
            .ok_or_else(too_large)?;
        let end = offset
            .checked_add(numel)
            .and_then(|n| n.checked_mul(bytes))
            .filter(|n| *n as u64 <= u64::MAX / 2)
            .ok_or_else(too_large)?;
        if !matches!(dtype_name, "F32" | "F64" | "F16" | "BF16") {
            file_tensors.others.insert(name, dtype_name.to_string());
            continue;
        }
        let need = needed.entry(key.clone()).or_default();
        *need = (*need).max(end);
        specs.push(Spec {
            name,
            key,
            dtype,
            offset,
            shape,
        });
    }
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for (key, need) in &needed {
        let member = format!("{prefix}data/{key}");
        storages.insert(key.clone(), read_member(&mut archive, path, &member, *need as u64)?);
    }
    for spec in specs {
        let raw = &storages[&spec.key];
        let numel: usize = spec.shape.iter().product();
        let values: Vec<f32> = match spec.dtype.as_str() {
            "FloatStorage" => raw
                .chunks_exact(4)
                .skip(spec.offset)
                .take(numel)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                .collect(),
            // Half-precision checkpoints are widened: every f16 and bf16 value is exact in f32.
            "HalfStorage" => raw
                .chunks_exact(2)
                .skip(spec.offset)
                .take(numel)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            "BFloat16Storage" => raw
                .chunks_exact(2)
                .skip(spec.offset)
                .take(numel)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(8)
                .skip(spec.offset)
                .take(numel)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32)
                .collect(),
        };
        if values.len() != numel {
            return Err(bad(path, format!("{}: storage {} is too short", spec.name, spec.key)));
        }
        file_tensors.floats.insert(spec.name, (spec.shape, values));
    }
    Ok(file_tensors)
}

/// The state dict inside a training checkpoint: `{"state_dict": {...}, "epoch": ...}` and the like (the keys that
/// RobustBench's files and common training scripts use: `state_dict`, `model_state_dict`, `model`, `net`), followed
/// while the root holds no tensor itself; a bare state dict is returned as it is.
fn state_dict_of(root: Value) -> Value {
    const WRAPPERS: [&str; 4] = ["state_dict", "model_state_dict", "model", "net"];
    let mut root = root;
    for _ in 0..WRAPPERS.len() {
        let Value::Dict(entries) = &root else {
            return root;
        };
        let pairs = || entries.items.chunks_exact(2);
        if pairs().any(|pair| matches!(pair[1], Value::Tensor { .. })) {
            return root;
        }
        let inner = WRAPPERS.iter().find_map(|wrapper| {
            pairs().find_map(|pair| match (&pair[0], &pair[1]) {
                (Value::Str(key), Value::Dict(_)) if key == wrapper => Some(pair[1].clone()),
                _ => None,
            })
        });
        match inner {
            Some(inner) => root = inner,
            None => return root,
        }
    }
    root
}

/// A pickle (protocol <= 2) machine restricted to the opcodes of state dicts, with bounded depth and work.
fn unpickle(bytes: &[u8]) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut at = 0usize;
    let mut work = 0usize;
    // Every value built or copied is charged; a container is checked for depth when it grows.
    let mut charge = |n: usize| -> Result<(), String> {
        work = work.saturating_add(n);
        if work > MAX_VALUES {
            Err(format!(
                "the pickle builds more than {MAX_VALUES} values (memo copies included); refused"
            ))
        } else {
            Ok(())
        }
    };
    let check_depth = |value: &Value| -> Result<(), String> {
        if value.depth() > MAX_DEPTH {
            Err(format!("containers nest more than {MAX_DEPTH} deep; refused"))
        } else {
            Ok(())
        }
    };
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = at.checked_add(n).ok_or("truncated pickle")?;
        let slice = bytes.get(*at..end).ok_or("truncated pickle")?;
        *at = end;
        Ok(slice)
    };
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
        let mark = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("missing mark")?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let op = *take(&mut at, 1)?.first().expect("one byte");
        charge(1)?;
        match op {
            0x80 => {
                take(&mut at, 1)?;
            }
            b'}' => stack.push(Value::Dict(Seq::new(Vec::new()))),
            b']' => stack.push(Value::List(Seq::new(Vec::new()))),
            b')' => stack.push(Value::Tuple(Seq::new(Vec::new()))),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(
                i32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4")) as i64
            )),
            b'K' => stack.push(Value::Int(take(&mut at, 1)?[0] as i64)),
            b'M' => stack.push(Value::Int(
                u16::from_le_bytes(take(&mut at, 2)?.try_into().expect("2")) as i64
            )),
            0x8a => {
                let n = take(&mut at, 1)?[0] as usize;
                let raw = take(&mut at, n)?;
                if n > 8 {
                    return Err(format!("a {n}-byte integer does not fit 64 bits"));
                }
                let mut value: i64 = 0;
                for (i, b) in raw.iter().enumerate() {
                    value |= (*b as i64) << (8 * i);
                }
                if n > 0 && n < 8 && raw[n - 1] & 0x80 != 0 {
                    value -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(value));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(
                take(&mut at, 8)?.try_into().expect("8"),
            ))),
            b'X' => {
                let n = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4")) as usize;
                stack.push(Value::Str(String::from_utf8_lossy(take(&mut at, n)?).into_owned()));
            }
            b'c' => {
                let line = |at: &mut usize| -> Result<String, String> {
                    let end = bytes[*at..].iter().position(|&b| b == b'\n').ok_or("bad GLOBAL")?;
                    let text = String::from_utf8_lossy(&bytes[*at..*at + end]).into_owned();
                    *at += end + 1;
                    Ok(text)
                };
                let module = line(&mut at)?;
                let name = line(&mut at)?;
                stack.push(Value::Global(format!("{module}.{name}")));
            }
            b'q' | b'r' => {
                let key = if op == b'q' {
                    take(&mut at, 1)?[0] as u32
                } else {
                    u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4"))
                };
                let top = stack.last().ok_or("empty stack")?;
                charge(top.size())?;
                memo.insert(key, top.clone());
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    take(&mut at, 1)?[0] as u32
                } else {
                    u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4"))
                };
                let value = memo.get(&key).ok_or("unknown memo")?;
                charge(value.size())?;
                stack.push(value.clone());
            }
            b't' => {
                let value = Value::Tuple(Seq::new(pop_mark(&mut stack)?));
                check_depth(&value)?;
                stack.push(value);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let items = stack.split_off(stack.len().checked_sub(n).ok_or("short stack")?);
                let value = Value::Tuple(Seq::new(items));
                check_depth(&value)?;
                stack.push(value);
            }
            b'a' | b'e' | b's' | b'u' => {
                let items = match op {
                    b'a' => vec![stack.pop().ok_or("empty stack")?],
                    b's' => {
                        let value = stack.pop().ok_or("empty stack")?;
                        let key = stack.pop().ok_or("empty stack")?;
                        vec![key, value]
                    }
                    _ => pop_mark(&mut stack)?,
                };
                let pairs = matches!(op, b's' | b'u');
                match stack.last_mut() {
                    Some(Value::List(seq)) if !pairs => seq.items.reserve(items.len()),
                    Some(Value::Dict(seq)) if pairs => seq.items.reserve(items.len()),
                    _ => continue, // appending to an object we do not model: dropped
                }
                if let Some(Value::List(seq) | Value::Dict(seq)) = stack.last_mut() {
                    let whole = if pairs { items.len() / 2 * 2 } else { items.len() };
                    for item in items.into_iter().take(whole) {
                        seq.push(item);
                    }
                }
                check_depth(stack.last().expect("a container"))?;
            }
            b'Q' => {
                let pid = stack.pop().ok_or("empty stack")?;
                let Value::Tuple(parts) = pid else {
                    return Err("bad persistent id".into());
                };
                match parts.items.as_slice() {
                    [Value::Str(kind), Value::Global(class), Value::Str(key), ..] if kind == "storage" => {
                        let dtype = class.rsplit('.').next().unwrap_or_default().to_string();
                        stack.push(Value::Storage {
                            key: key.clone(),
                            dtype,
                        });
                    }
                    _ => return Err("unsupported persistent id".into()),
                }
            }
            b'R' => {
                let args = stack.pop().ok_or("empty stack")?;
                let callable = stack.pop().ok_or("empty stack")?;
                let Value::Tuple(args) = args else {
                    return Err("REDUCE without a tuple".into());
                };
                let ints = |v: &Seq| -> Option<Vec<i64>> {
                    v.items
                        .iter()
                        .map(|x| if let Value::Int(i) = x { Some(*i) } else { None })
                        .collect()
                };
                let value = match (&callable, args.items.as_slice()) {
                    (
                        Value::Global(g),
                        [
                            Value::Storage { key, dtype },
                            Value::Int(offset),
                            Value::Tuple(size),
                            Value::Tuple(stride),
                            ..,
                        ],
                    ) if g == "torch._utils._rebuild_tensor_v2" => {
                        let (Some(shape), Some(stride)) = (ints(size), ints(stride)) else {
                            return Err("a tensor's size or stride is not a tuple of integers".into());
                        };
                        Value::Tensor {
                            key: key.clone(),
                            dtype: dtype.clone(),
                            offset: *offset,
                            shape,
                            stride,
                        }
                    }
                    (Value::Global(g), _) if g == "collections.OrderedDict" => Value::Dict(Seq::new(Vec::new())),
                    // Any other callable (os.system, builtins.eval, ...) is never called: it becomes an inert object.
                    _ => Value::Object,
                };
                stack.push(value);
            }
            b'b' => {
                stack.pop().ok_or("empty stack")?; // state of an object (e.g. the state dict's _metadata): unused
            }
            b'.' => return stack.pop().ok_or_else(|| "empty pickle".to_string()),
            other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
        }
    }
}
