//! Reading PyTorch `torch.save` files of state dicts (the zip format of PyTorch >= 1.6): `ARCHIVE/data.pkl`, a
//! pickle (protocol 2) whose tensors point to raw storages `ARCHIVE/data/KEY`. Only what state dicts use is
//! understood: dictionaries, tuples, lists, strings, numbers, `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2` and float/double/long storages; anything else is skipped or refused by name.
//! Nothing is executed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::interop::{InteropError, NamedTensors};

/// A pickled value. Every kind is parsed so the stack stays faithful, though a state dict reads only some.
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String),
    Storage {
        key: String,
        dtype: String,
    },
    Tensor {
        storage: Box<Value>,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
    Object,
    Mark,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> InteropError {
    InteropError::Invalid(format!(
        "{} is not a readable PyTorch state dict: {reason}",
        path.display()
    ))
}

/// Reads the float tensors of a `torch.save`d state dict.
pub fn read_torch_file(path: &Path) -> Result<NamedTensors, InteropError> {
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
    let mut read = |name: &str| -> Result<Vec<u8>, InteropError> {
        let mut entry = archive.by_name(name).map_err(|e| bad(path, format!("{name}: {e}")))?;
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(path, format!("{name}: {e}")))?;
        Ok(bytes)
    };
    let root = unpickle(&read(&pickle_name)?).map_err(|e| bad(path, e))?;
    let Value::Dict(entries) = root else {
        return Err(bad(path, "the pickle is not a dictionary"));
    };
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = NamedTensors::new();
    for (key, value) in entries {
        let (
            Value::Str(name),
            Value::Tensor {
                storage,
                offset,
                shape,
                stride,
            },
        ) = (key, value)
        else {
            continue;
        };
        let Value::Storage { key, dtype } = *storage else {
            continue;
        };
        if !storages.contains_key(&key) {
            storages.insert(key.clone(), read(&format!("{prefix}data/{key}"))?);
        }
        let raw = &storages[&key];
        let numel: usize = shape.iter().product();
        let mut expected = 1;
        for (dim, s) in shape.iter().zip(&stride).rev() {
            if *dim > 1 && *s != expected {
                return Err(bad(path, format!("{name} is not contiguous")));
            }
            expected *= dim;
        }
        let values: Vec<f32> = match dtype.as_str() {
            "FloatStorage" => raw
                .chunks_exact(4)
                .skip(offset)
                .take(numel)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                .collect(),
            "DoubleStorage" => raw
                .chunks_exact(8)
                .skip(offset)
                .take(numel)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32)
                .collect(),
            _ => continue, // integer counters such as num_batches_tracked
        };
        if values.len() != numel {
            return Err(bad(path, format!("{name}: storage {key} is too short")));
        }
        tensors.insert(name, (shape, values));
    }
    Ok(tensors)
}

/// A pickle (protocol <= 2) machine restricted to the opcodes of state dicts.
fn unpickle(bytes: &[u8]) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let slice = bytes.get(*at..*at + n).ok_or("truncated pickle")?;
        *at += n;
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
        match op {
            0x80 => {
                take(&mut at, 1)?;
            }
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
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
                let mut value: i64 = 0;
                for (i, b) in raw.iter().enumerate().take(8) {
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
            b'q' => {
                let key = take(&mut at, 1)?[0] as u32;
                memo.insert(key, stack.last().cloned().ok_or("empty stack")?);
            }
            b'r' => {
                let key = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4"));
                memo.insert(key, stack.last().cloned().ok_or("empty stack")?);
            }
            b'h' => {
                let key = take(&mut at, 1)?[0] as u32;
                stack.push(memo.get(&key).cloned().ok_or("unknown memo")?);
            }
            b'j' => {
                let key = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4"));
                stack.push(memo.get(&key).cloned().ok_or("unknown memo")?);
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let items = stack.split_off(stack.len().checked_sub(n).ok_or("short stack")?);
                stack.push(Value::Tuple(items));
            }
            b'a' => {
                let item = stack.pop().ok_or("empty stack")?;
                if let Some(Value::List(list)) = stack.last_mut() {
                    list.push(item);
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Value::List(list)) = stack.last_mut() {
                    list.extend(items);
                }
            }
            b's' => {
                let value = stack.pop().ok_or("empty stack")?;
                let key = stack.pop().ok_or("empty stack")?;
                if let Some(Value::Dict(dict)) = stack.last_mut() {
                    dict.push((key, value));
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Value::Dict(dict)) = stack.last_mut() {
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict.push((k, v));
                    }
                }
            }
            b'Q' => {
                let pid = stack.pop().ok_or("empty stack")?;
                let Value::Tuple(parts) = pid else {
                    return Err("bad persistent id".into());
                };
                match parts.as_slice() {
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
                let value = match (&callable, args.as_slice()) {
                    (
                        Value::Global(g),
                        [
                            storage,
                            Value::Int(offset),
                            Value::Tuple(size),
                            Value::Tuple(stride),
                            ..,
                        ],
                    ) if g == "torch._utils._rebuild_tensor_v2" => {
                        let ints = |v: &[Value]| {
                            v.iter()
                                .map(|x| if let Value::Int(i) = x { *i as usize } else { 0 })
                                .collect()
                        };
                        Value::Tensor {
                            storage: Box::new(storage.clone()),
                            offset: *offset as usize,
                            shape: ints(size),
                            stride: ints(stride),
                        }
                    }
                    (Value::Global(g), _) if g == "collections.OrderedDict" => Value::Dict(Vec::new()),
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
