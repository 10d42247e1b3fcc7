//! Weights in safetensors under the tensor names of the usual PyTorch definitions: kuangliu's CIFAR ResNet-18,
//! the PreAct-ResNet-18 of Rice et al. (with its final `bn`), and the TRADES WideResNet. The small CNN and the linear
//! classifier use tailguard's own names. See docs/interop.md.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::architecture::{Architecture, Model};

/// What can go wrong when exporting or importing weights.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> InteropError {
    InteropError::Invalid(message.into())
}

/// The PyTorch name of the tensor at burn path `path` (field names from the model root), and whether it is a
/// linear weight stored transposed (burn keeps `[in, out]`, PyTorch `[out, in]`).
pub fn torch_name(arch: Architecture, path: &[String]) -> (String, bool) {
    let p: Vec<&str> = path
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s == "network")
        .skip(1)
        .collect();
    let leaf = |name: &str| match name {
        "gamma" => "weight".to_string(),
        "beta" => "bias".to_string(),
        other => other.to_string(),
    };
    let head = |rest: &[&str], name: &str| -> (String, bool) {
        let transposed = rest.first() == Some(&"Linear") && rest.last() == Some(&"weight");
        (
            format!("{name}.{}", leaf(rest.last().copied().unwrap_or_default())),
            transposed,
        )
    };
    // Block k of stage plan [2, 2, 2, 2] (ResNet-18) or [n, n, n] (WRN).
    let per_stage = match arch {
        Architecture::WideResNet { depth, .. } => (depth - 4) / 6,
        _ => 2,
    };
    let block = |k: &str| -> (usize, usize) {
        let k: usize = k.parse().unwrap_or(0);
        (k / per_stage + 1, k % per_stage)
    };
    match (arch, p.as_slice()) {
        (Architecture::ResNet18, ["stem", rest @ ..]) => (format!("conv1.{}", leaf(rest[rest.len() - 1])), false),
        (Architecture::ResNet18, ["stem_bn", rest @ ..]) => (format!("bn1.{}", leaf(rest[rest.len() - 1])), false),
        (Architecture::ResNet18, ["stages", k, "shortcut", part, .., last]) => {
            let (s, b) = block(k);
            let index = if *part == "conv" { 0 } else { 1 };
            (format!("layer{s}.{b}.shortcut.{index}.{}", leaf(last)), false)
        }
        (Architecture::PreActResNet18, ["stages", k, "shortcut", .., last]) => {
            let (s, b) = block(k);
            (format!("layer{s}.{b}.shortcut.0.{}", leaf(last)), false)
        }
        (Architecture::ResNet18 | Architecture::PreActResNet18, ["stages", k, layer, .., last]) => {
            let (s, b) = block(k);
            (format!("layer{s}.{b}.{layer}.{}", leaf(last)), false)
        }
        (Architecture::ResNet18 | Architecture::PreActResNet18, ["head", rest @ ..]) => head(rest, "linear"),
        (Architecture::PreActResNet18, ["stem", .., last]) => (format!("conv1.{}", leaf(last)), false),
        (Architecture::PreActResNet18, ["final_bn", .., last]) => (format!("bn.{}", leaf(last)), false),
        (Architecture::WideResNet { .. }, ["stem", .., last]) => (format!("conv1.{}", leaf(last)), false),
        (Architecture::WideResNet { .. }, ["stages", k, "shortcut", .., last]) => {
            let (s, b) = block(k);
            (format!("block{s}.layer.{b}.convShortcut.{}", leaf(last)), false)
        }
        (Architecture::WideResNet { .. }, ["stages", k, layer, .., last]) => {
            let (s, b) = block(k);
            (format!("block{s}.layer.{b}.{layer}.{}", leaf(last)), false)
        }
        (Architecture::WideResNet { .. }, ["final_bn", .., last]) => (format!("bn1.{}", leaf(last)), false),
        (Architecture::WideResNet { .. }, ["head", rest @ ..]) => head(rest, "fc"),
        _ => {
            // The linear classifier's `head` is a bare burn Linear; other heads sit under a `Linear`/`Cosine` variant.
            let linear = p.contains(&"Linear") || (arch == Architecture::Linear && p.first() == Some(&"head"));
            let transposed = linear && p.last() == Some(&"weight");
            let own: Vec<String> = p
                .iter()
                .filter(|s| !matches!(**s, "Linear" | "Cosine"))
                .map(|s| leaf(s))
                .collect();
            (own.join("."), transposed)
        }
    }
}

/// One tensor: name, shape, values.
struct Entry {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Writes every parameter and BatchNorm statistic of `model` to a safetensors file under PyTorch names (with a
/// `num_batches_tracked` of 0 beside each BatchNorm, as PyTorch's state dicts have).
pub fn export_safetensors<B: Backend>(model: &Model<B>, arch: Architecture, path: &Path) -> Result<(), InteropError> {
    struct Collect {
        arch: Architecture,
        path: Vec<String>,
        entries: BTreeMap<String, Entry>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let (name, transposed) = torch_name(self.arch, &self.path);
            let mut shape = param.dims().to_vec();
            let mut values: Vec<f32> = param.val().into_data().convert::<f32>().to_vec().unwrap_or_default();
            if transposed && D == 2 {
                values = transpose(&values, shape[0], shape[1]);
                shape.swap(0, 1);
            }
            self.entries.insert(name, Entry { shape, values });
        }
    }
    let mut collect = Collect {
        arch,
        path: Vec::new(),
        entries: BTreeMap::new(),
    };
    model.visit(&mut collect);
    let mut header = serde_json::Map::new();
    let mut body: Vec<u8> = Vec::new();
    let mut add = |name: &str, dtype: &str, shape: &[usize], bytes: &[u8], body: &mut Vec<u8>| {
        let start = body.len();
        body.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, body.len()]}),
        );
    };
    let running: Vec<String> = collect
        .entries
        .keys()
        .filter_map(|k| {
            k.strip_suffix(".running_mean")
                .map(|p| format!("{p}.num_batches_tracked"))
        })
        .collect();
    for (name, entry) in &collect.entries {
        let bytes: Vec<u8> = entry.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        add(name, "F32", &entry.shape, &bytes, &mut body);
    }
    for name in running {
        add(&name, "I64", &[], &0i64.to_le_bytes(), &mut body);
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| invalid(e.to_string()))?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(body);
    let temporary = path.with_extension("safetensors.partial");
    std::fs::write(&temporary, &file)
        .and_then(|_| std::fs::rename(&temporary, path))
        .map_err(|source| InteropError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Float tensors by name: (shape, values).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads the float tensors of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<NamedTensors, InteropError> {
    let bytes = std::fs::read(path).map_err(|source| InteropError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: &str| invalid(format!("{} is not a safetensors file: {reason}", path.display()));
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .ok_or_else(|| bad("too short"))?
            .try_into()
            .expect("8 bytes"),
    ) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8 + n).ok_or_else(|| bad("truncated header"))?)
            .map_err(|_| bad("bad header"))?;
    let data = &bytes[8 + n..];
    let mut tensors = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).map_err(|_| bad("bad shape"))?;
        let offsets: [usize; 2] =
            serde_json::from_value(info["data_offsets"].clone()).map_err(|_| bad("bad offsets"))?;
        let raw = data
            .get(offsets[0]..offsets[1])
            .ok_or_else(|| bad("offsets past the end"))?;
        let values: Vec<f32> = match info["dtype"].as_str() {
            Some("F32") => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Some("F64") => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            _ => continue, // integer counters such as num_batches_tracked
        };
        tensors.insert(name, (shape, values));
    }
    Ok(tensors)
}

/// Loads PyTorch-named weights from a `.safetensors` file or a `torch.save`d state dict (`.pt`, `.pth`) into
/// `model` (built for `arch`); every parameter and statistic must be present with the right shape.
pub fn import_weights<B: Backend>(model: Model<B>, arch: Architecture, path: &Path) -> Result<Model<B>, InteropError> {
    let pickled = path.extension().is_some_and(|e| e == "pt" || e == "pth");
    let tensors = if pickled {
        crate::torch_file::read_torch_file(path)?
    } else {
        read_safetensors(path)?
    };
    load_tensors(model, arch, tensors, path)
}

/// Loads the weights of a safetensors file (see [`import_weights`]).
pub fn import_safetensors<B: Backend>(
    model: Model<B>,
    arch: Architecture,
    path: &Path,
) -> Result<Model<B>, InteropError> {
    load_tensors(model, arch, read_safetensors(path)?, path)
}

fn load_tensors<B: Backend>(
    model: Model<B>,
    arch: Architecture,
    tensors: NamedTensors,
    path: &Path,
) -> Result<Model<B>, InteropError> {
    struct Load {
        arch: Architecture,
        path: Vec<String>,
        tensors: NamedTensors,
        errors: Vec<String>,
    }
    impl<B: Backend> ModuleMapper<B> for Load {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (name, transposed) = torch_name(self.arch, &self.path);
            let (id, tensor, mapper) = param.consume();
            let mut want = tensor.dims().to_vec();
            if transposed {
                want.swap(0, 1);
            }
            match self.tensors.remove(&name) {
                Some((shape, values)) if shape == want => {
                    let (values, shape) = if transposed {
                        (transpose(&values, shape[0], shape[1]), vec![shape[1], shape[0]])
                    } else {
                        (values, shape)
                    };
                    let device = tensor.device();
                    let loaded = Tensor::<B, D>::from_data(TensorData::new(values, shape), &device);
                    let loaded = if tensor.is_require_grad() {
                        loaded.require_grad()
                    } else {
                        loaded
                    };
                    Param::from_mapped_value(id, loaded, mapper)
                }
                Some((shape, _)) => {
                    self.errors
                        .push(format!("{name} has shape {shape:?}, the model expects {want:?}"));
                    Param::from_mapped_value(id, tensor, mapper)
                }
                None => {
                    self.errors.push(format!("{name} is missing"));
                    Param::from_mapped_value(id, tensor, mapper)
                }
            }
        }
    }
    let mut load = Load {
        arch,
        path: Vec::new(),
        tensors,
        errors: Vec::new(),
    };
    let model = model.map(&mut load);
    if let Some(first) = load.errors.first() {
        return Err(invalid(format!(
            "{} does not fit {arch}: {first}{}",
            path.display(),
            if load.errors.len() > 1 {
                format!(" (and {} more)", load.errors.len() - 1)
            } else {
                String::new()
            }
        )));
    }
    Ok(model)
}
