//! Weights in safetensors under the tensor names of the usual PyTorch definitions: kuangliu's CIFAR ResNet-18,
//! the PreAct-ResNet-18 of Rice et al. (with its final `bn`), and the TRADES WideResNet. The small CNN and the linear
//! classifier use tailguard's own names. Any other Burn module is written and read under the names a
//! [`ParameterNames`] gives it: Burn's own dotted paths ([`BurnNames`]) unless its owner provides others. See
//! docs/interop.md.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::architecture::Architecture;
pub use crate::weights_file::{InteropError, NamedTensors, WeightsFile};

/// How the tensors of a module are named in a weights file.
pub trait ParameterNames {
    /// The file's name for the tensor at module path `path` (field names from the root, as Burn visits them), and
    /// whether it is a linear weight stored transposed (Burn keeps `[in, out]`, PyTorch `[out, in]`).
    fn name(&self, path: &[String]) -> (String, bool);

    /// What to call the model in messages.
    fn describe(&self) -> String;
}

/// The usual PyTorch names of tailguard's architectures (see [`torch_name`]).
impl ParameterNames for Architecture {
    fn name(&self, path: &[String]) -> (String, bool) {
        torch_name(*self, path)
    }

    fn describe(&self) -> String {
        self.to_string()
    }
}

/// Burn's own names: the module path joined with dots (`conv.weight`, `norm.running_mean`), tensors as Burn stores
/// them. The default for a model defined outside tailguard.
#[derive(Debug, Clone, Copy, Default)]
pub struct BurnNames;

impl ParameterNames for BurnNames {
    fn name(&self, path: &[String]) -> (String, bool) {
        (path.join("."), false)
    }

    fn describe(&self) -> String {
        "the model".into()
    }
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
    // Block k of stage plan [2, 2, 2, 2] (ResNet-18), [3, 4, 6, 3] (ResNet-50) or [n, n, n] (WRN): (stage from 1,
    // block within it).
    let stages: Vec<usize> = match arch {
        Architecture::WideResNet { depth, .. } | Architecture::DmWideResNet { depth, .. } => vec![(depth - 4) / 6; 3],
        Architecture::ResNet50 => vec![3, 4, 6, 3],
        _ => vec![2; 4],
    };
    let block = |k: &str| -> (usize, usize) {
        let mut k: usize = k.parse().unwrap_or(0);
        for (stage, &count) in stages.iter().enumerate() {
            if k < count {
                return (stage + 1, k);
            }
            k -= count;
        }
        (stages.len() + 1, k)
    };
    use Architecture::{PreActResNet18 as PreAct, PreActResNet18Wong as Wong, ResNet18, ResNet50};
    match (arch, p.as_slice()) {
        (ResNet18 | ResNet50, ["stem", rest @ ..]) => (format!("conv1.{}", leaf(rest[rest.len() - 1])), false),
        (ResNet18 | ResNet50, ["stem_bn", rest @ ..]) => (format!("bn1.{}", leaf(rest[rest.len() - 1])), false),
        (ResNet18 | ResNet50, ["stages", k, "shortcut", part, .., last]) => {
            let (s, b) = block(k);
            let index = if *part == "conv" { 0 } else { 1 };
            (format!("layer{s}.{b}.shortcut.{index}.{}", leaf(last)), false)
        }
        (PreAct | Wong, ["stages", k, "shortcut", .., last]) => {
            let (s, b) = block(k);
            (format!("layer{s}.{b}.shortcut.0.{}", leaf(last)), false)
        }
        (ResNet18 | ResNet50 | PreAct | Wong, ["stages", k, layer, .., last]) => {
            let (s, b) = block(k);
            (format!("layer{s}.{b}.{layer}.{}", leaf(last)), false)
        }
        (ResNet18 | ResNet50 | PreAct | Wong, ["head", rest @ ..]) => head(rest, "linear"),
        (PreAct | Wong, ["stem", .., last]) => (format!("conv1.{}", leaf(last)), false),
        (PreAct, ["final_bn", .., last]) => (format!("bn.{}", leaf(last)), false),
        (Architecture::DmWideResNet { .. }, ["init_conv", .., last]) => (format!("init_conv.{}", leaf(last)), false),
        (Architecture::DmWideResNet { .. }, ["blocks", k, layer, .., last]) => {
            let (s, b) = block(k);
            (format!("layer.{}.block.{b}.{layer}.{}", s - 1, leaf(last)), false)
        }
        (Architecture::DmWideResNet { .. }, ["batchnorm", .., last]) => (format!("batchnorm.{}", leaf(last)), false),
        (Architecture::DmWideResNet { .. }, ["head", rest @ ..]) => head(rest, "logits"),
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

/// What tailguard writes into a safetensors header's `__metadata__`, so that `--force` knows the file is its own.
pub const PRODUCER_METADATA: (&str, &str) = ("producer", "tailguard");

/// The safetensors bytes of every parameter and BatchNorm statistic of `model` under the names `names` gives
/// (with a `num_batches_tracked` of 0 beside each `running_mean`, as PyTorch's state dicts have). `model` may be any
/// Burn module; for tailguard's own, pass its [`Architecture`] to get PyTorch names.
pub fn safetensors_bytes<B: Backend, M: Module<B>>(
    model: &M,
    names: impl ParameterNames,
) -> Result<Vec<u8>, InteropError> {
    struct Collect<N> {
        names: N,
        path: Vec<String>,
        entries: BTreeMap<String, Entry>,
    }
    impl<B: Backend, N: ParameterNames> ModuleVisitor<B> for Collect<N> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let (name, transposed) = self.names.name(&self.path);
            let mut shape = param.dims().to_vec();
            let mut values: Vec<f32> = param.val().into_data().convert::<f32>().to_vec().unwrap_or_default();
            if transposed && D == 2 {
                values = transpose(&values, shape[0], shape[1]);
                shape.swap(0, 1);
            }
            self.entries.insert(name, Entry { shape, values });
        }
    }
    crate::parameters::sync_running_statistics(model);
    let mut collect = Collect {
        names,
        path: Vec::new(),
        entries: BTreeMap::new(),
    };
    model.visit(&mut collect);
    let counters: Vec<String> = collect
        .entries
        .keys()
        .filter_map(|k| {
            k.strip_suffix(".running_mean")
                .map(|p| format!("{p}.num_batches_tracked"))
        })
        .collect();
    let mut raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = collect
        .entries
        .into_iter()
        .map(|(name, entry)| {
            let bytes = entry.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, Dtype::F32, entry.shape, bytes)
        })
        .collect();
    raw.extend(
        counters
            .into_iter()
            .map(|name| (name, Dtype::I64, vec![], 0i64.to_le_bytes().to_vec())),
    );
    let views = raw
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| invalid(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([(PRODUCER_METADATA.0.to_string(), PRODUCER_METADATA.1.to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| invalid(e.to_string()))
}

/// Writes [`safetensors_bytes`] to `path`, atomically.
pub fn export_safetensors<B: Backend, M: Module<B>>(
    model: &M,
    names: impl ParameterNames,
    path: &Path,
) -> Result<(), InteropError> {
    let bytes = safetensors_bytes(model, names)?;
    tailguard_output::write_atomically(path, &bytes).map_err(InteropError::Output)
}

/// Reads the tensors of a safetensors file (the header and every offset are validated by the `safetensors` crate).
pub fn read_weights_file(path: &Path) -> Result<WeightsFile, InteropError> {
    let bytes = std::fs::read(path).map_err(|source| InteropError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed = SafeTensors::deserialize(&bytes)
        .map_err(|e| invalid(format!("{} is not a safetensors file: {e}", path.display())))?;
    let mut file = WeightsFile::default();
    for (name, view) in parsed.tensors() {
        let raw = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            // Half precision is widened (exact in f32).
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                file.others.insert(name, format!("{other:?}"));
                continue;
            }
        };
        file.floats.insert(name, (view.shape().to_vec(), values));
    }
    Ok(file)
}

/// Reads the float tensors of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<NamedTensors, InteropError> {
    read_weights_file(path).map(|file| file.floats)
}

/// Whether the safetensors file at `path` was written by tailguard (its header's metadata says so).
pub fn written_by_tailguard(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        SafeTensors::read_metadata(&bytes).is_ok_and(|(_, metadata)| {
            metadata
                .metadata()
                .as_ref()
                .and_then(|m| m.get(PRODUCER_METADATA.0))
                .is_some_and(|v| v == PRODUCER_METADATA.1)
        })
    })
}

/// What an import accepts beyond a complete, finite set of the architecture's tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Import tensors holding NaN or infinite values (refused by default: such a model is broken).
    pub allow_non_finite: bool,
    /// Ignore tensors the architecture does not have (refused by default: the file is probably of another model).
    pub drop_unknown: bool,
}

/// Loads named weights from a `.safetensors` file or a `torch.save`d state dict (`.pt`, `.pth`) into `model`, under
/// the names `names` gives (PyTorch's for an [`Architecture`]); every parameter and statistic must be present with
/// the right shape and dtype, finite, and nothing else may be in the file (see [`ImportOptions`]).
pub fn import_weights<B: Backend, M: Module<B>>(
    model: M,
    names: impl ParameterNames,
    path: &Path,
    options: ImportOptions,
) -> Result<M, InteropError> {
    load_tensors(model, names, read_any_weights_file(path)?, path, options)
}

/// Reads a `torch.save`d state dict (`.pt`, `.pth`) or, for any other name, a safetensors file.
pub fn read_any_weights_file(path: &Path) -> Result<WeightsFile, InteropError> {
    if path.extension().is_some_and(|e| e == "pt" || e == "pth") {
        crate::torch_file::read_torch_file(path)
    } else {
        read_weights_file(path)
    }
}

/// Loads the weights of a safetensors file (see [`import_weights`]).
pub fn import_safetensors<B: Backend, M: Module<B>>(
    model: M,
    names: impl ParameterNames,
    path: &Path,
) -> Result<M, InteropError> {
    load_tensors(model, names, read_weights_file(path)?, path, ImportOptions::default())
}

/// Loads the tensors of a weights file already read (see [`import_weights`]); `path` names it in messages.
pub fn load_tensors<B: Backend, M: Module<B>, N: ParameterNames>(
    model: M,
    names: N,
    file: WeightsFile,
    path: &Path,
    options: ImportOptions,
) -> Result<M, InteropError> {
    let arch = names.describe();
    struct Load<N> {
        names: N,
        path: Vec<String>,
        tensors: NamedTensors,
        others: BTreeMap<String, String>,
        allow_non_finite: bool,
        errors: Vec<String>,
    }
    impl<B: Backend, N: ParameterNames> ModuleMapper<B> for Load<N> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (name, transposed) = self.names.name(&self.path);
            let (id, tensor, mapper) = param.consume();
            let mut want = tensor.dims().to_vec();
            if transposed {
                want.swap(0, 1);
            }
            match self.tensors.remove(&name) {
                Some((_, values)) if !self.allow_non_finite && values.iter().any(|v| !v.is_finite()) => {
                    let bad = values.iter().filter(|v| !v.is_finite()).count();
                    self.errors.push(format!(
                        "{name} holds {bad} non-finite values (NaN or infinite; ImportOptions::allow_non_finite imports them)"
                    ));
                    Param::from_mapped_value(id, tensor, mapper)
                }
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
                    self.errors.push(match self.others.remove(&name) {
                        Some(dtype) => {
                            format!("{name} has dtype {dtype}, tailguard reads F32, F64, F16 and BF16 tensors")
                        }
                        None => format!("{name} is missing"),
                    });
                    Param::from_mapped_value(id, tensor, mapper)
                }
            }
        }
    }
    let mut load = Load {
        names,
        path: Vec::new(),
        tensors: file.floats,
        others: file.others,
        allow_non_finite: options.allow_non_finite,
        errors: Vec::new(),
    };
    let model = model.map(&mut load);
    // PyTorch's BatchNorm step counters have no counterpart in the model and are not "unknown".
    let unknown: Vec<String> = load
        .tensors
        .keys()
        .chain(load.others.keys())
        .filter(|name| !name.ends_with(".num_batches_tracked"))
        .cloned()
        .collect();
    if !unknown.is_empty() && !options.drop_unknown {
        let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
        load.errors.push(format!(
            "it holds {} tensor(s) {arch} does not have: {}{} (ImportOptions::drop_unknown ignores them)",
            unknown.len(),
            shown.join(", "),
            if unknown.len() > 5 { ", ..." } else { "" }
        ));
    }
    if let Some(first) = load.errors.first() {
        return Err(InteropError::DoesNotFit {
            path: path.to_path_buf(),
            arch: arch.to_string(),
            first: first.clone(),
            more: load.errors.len() - 1,
            non_finite: load.errors.iter().any(|e| e.contains("non-finite values")),
            unknown: !unknown.is_empty() && !options.drop_unknown,
        });
    }
    Ok(model)
}
