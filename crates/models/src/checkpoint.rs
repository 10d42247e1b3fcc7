//! Checkpoints: a folder with the model record (`model.mpk`, burn's named MessagePack at full precision) and
//! `checkpoint.json` (architecture, classes, normalisation, training configuration).
//!
//! Any Burn module can be checkpointed ([`save_checkpoint_with`], [`load_checkpoint_into`]); a model of one of
//! tailguard's own architectures also records its [`ModelConfig`], so [`load_checkpoint`] can rebuild it from the
//! folder alone (what `tailguard eval` and `export` do).
//!
//! A checkpoint is written into a temporary sibling folder and swapped into place with renames, so a crash never
//! leaves a half-written checkpoint under the final name; a crash between the two renames leaves the previous
//! checkpoint under a sibling name, which [`recover_checkpoint`] puts back. Replacing a checkpoint folder never
//! deletes a file that a checkpoint does not consist of: such a folder is refused.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::{Tensor, backend::Backend};

use crate::architecture::{Model, ModelConfig};
use crate::parameters::initialize_parameters;

/// Name of the model record inside a checkpoint folder.
pub const MODEL_FILE: &str = "model.mpk";
/// Name of the metadata file inside a checkpoint folder.
pub const META_FILE: &str = "checkpoint.json";
/// Name of the averaged weights (EMA) inside a checkpoint folder, when training kept an average.
pub const AVERAGE_FILE: &str = "average.mpk";
const FORMAT: &str = "tailguard-checkpoint/1";

/// What a checkpoint says about its model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    /// Format tag, `tailguard-checkpoint/1`.
    pub format: String,
    /// The architecture, when the model is one of tailguard's own (`None` for a model defined elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// The training configuration that produced the model (free-form JSON; `null` when unknown).
    #[serde(default)]
    pub training: serde_json::Value,
    /// Epochs completed when the checkpoint was written.
    #[serde(default)]
    pub epoch: Option<usize>,
    /// Every float tensor of the model, by its module path, with its shape (written by [`save_checkpoint_with`];
    /// absent in checkpoints of tailguard < 0.1.2). Loading into another model names the first one that differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorEntry>>,
    /// The weight average kept beside the weights ([`AVERAGE_FILE`]), when training kept one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<AverageMeta>,
}

/// The weight average of a checkpoint: an exponential moving average of the weights over training steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AverageMeta {
    /// The decay of the average.
    pub decay: f64,
    /// Updates (optimizer steps) averaged so far.
    pub updates: u64,
}

/// Which weights of a checkpoint to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weights {
    /// The weights as the optimizer left them.
    Raw,
    /// The exponential moving average of the weights ([`AVERAGE_FILE`]).
    Ema,
}

impl Weights {
    /// The weights to use: `requested`, or the average when the checkpoint has one and nothing was requested. Asking
    /// for an average that the checkpoint does not have is an error.
    pub fn resolve(requested: Option<Weights>, meta: &CheckpointMeta, dir: &Path) -> Result<Weights, CheckpointError> {
        match (requested, meta.average.is_some()) {
            (Some(Weights::Ema), false) => Err(CheckpointError::Invalid {
                path: dir.to_path_buf(),
                reason: "it holds no weight average (its training kept none); use the raw weights".into(),
            }),
            (Some(weights), _) => Ok(weights),
            (None, true) => Ok(Weights::Ema),
            (None, false) => Ok(Weights::Raw),
        }
    }

    /// The file of a checkpoint folder that holds these weights.
    pub fn file(self) -> &'static str {
        match self {
            Weights::Raw => MODEL_FILE,
            Weights::Ema => AVERAGE_FILE,
        }
    }
}

impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Weights::Raw => "raw",
            Weights::Ema => "ema",
        })
    }
}

/// One tensor of a checkpoint's model: its module path (`layer1.0.conv1.weight`) and shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorEntry {
    /// Module path of the parameter or buffer.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

impl CheckpointMeta {
    /// Metadata for a model of tailguard's architecture `model` trained on `classes`.
    pub fn new(model: ModelConfig, classes: Vec<String>) -> Self {
        Self {
            model: Some(model),
            ..Self::custom(classes)
        }
    }

    /// Metadata for a model tailguard does not know how to build (rebuilt by its owner, see
    /// [`load_checkpoint_into`]).
    pub fn custom(classes: Vec<String>) -> Self {
        Self {
            format: FORMAT.into(),
            model: None,
            classes,
            training: serde_json::Value::Null,
            epoch: None,
            tensors: None,
            average: None,
        }
    }

    /// The architecture, or an error saying that the checkpoint holds a model defined outside tailguard.
    pub fn model_config(&self, dir: &Path) -> Result<&ModelConfig, CheckpointError> {
        self.model.as_ref().ok_or_else(|| CheckpointError::Invalid {
            path: dir.to_path_buf(),
            reason: "it holds a model defined outside tailguard (no architecture in checkpoint.json); load it in \
                     the program that defines the model, with load_checkpoint_into"
                .into(),
        })
    }
}

/// What can go wrong with a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file of the checkpoint cannot be read.
    #[error("cannot read checkpoint {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint cannot be written.
    #[error("cannot write checkpoint {path}")]
    Write {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The folder to replace holds files that are not part of a checkpoint.
    #[error(
        "{path} holds {names}, which a checkpoint does not consist of; tailguard replaces a checkpoint folder only \
         when it holds nothing else: move them away or choose another folder"
    )]
    Foreign {
        /// The folder.
        path: PathBuf,
        /// The files, comma-separated.
        names: String,
    },
    /// The checkpoint holds another model than the one it is loaded into.
    #[error("checkpoint {path} holds another model than {structure}: {difference}")]
    OtherModel {
        /// The checkpoint folder.
        path: PathBuf,
        /// The model it was loaded into.
        structure: String,
        /// The first tensor whose name or shape differs.
        difference: String,
    },
    /// The checkpoint is damaged or does not fit the model.
    #[error("checkpoint {path} is invalid: {reason}")]
    Invalid {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A hidden sibling of `dir` in the output policy's temporary naming (`.last.previous.tailguard-tmp-PID`), so that
/// a folder holding one still counts as tailguard's and a resumed run sweeps it away.
fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "checkpoint".into());
    name.push(format!(".{tag}"));
    tailguard_output::temporary_path(&dir.with_file_name(name))
}

/// Puts back the checkpoint `dir` if a process was killed between moving the old one aside and moving the new one
/// in (the old one is complete; the new one may not be). Does nothing when `dir` exists.
pub fn recover_checkpoint(dir: &Path) -> Result<(), CheckpointError> {
    if dir.exists() {
        return Ok(());
    }
    let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(());
    };
    let prefix = format!(".{name}.previous");
    let Ok(read) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    for entry in read.flatten() {
        let candidate = entry.file_name().to_string_lossy().into_owned();
        if candidate.starts_with(&prefix) && tailguard_output::is_temporary(&candidate) {
            let aside = entry.path();
            if aside.join(META_FILE).exists() && aside.join(MODEL_FILE).exists() {
                std::fs::rename(&aside, dir).map_err(write_error(dir))?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Refuses to replace `dir` if it holds anything but the files a checkpoint consists of.
fn check_replaceable(dir: &Path, own: &[&str]) -> Result<(), CheckpointError> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut foreign: Vec<String> = read
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !own.contains(&name.as_str()))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    Err(CheckpointError::Foreign {
        path: dir.to_path_buf(),
        names: foreign.join(", "),
    })
}

/// Writes `model` and `meta` to the folder `dir` (created or replaced as a whole).
pub fn save_checkpoint<B: Backend, M: Module<B>>(
    dir: &Path,
    model: &M,
    meta: &CheckpointMeta,
) -> Result<(), CheckpointError> {
    save_checkpoint_with(dir, model, meta, &[])
}

/// As [`save_checkpoint`], with extra files (name, bytes) in the same folder, replaced together with the model
/// (a trainer keeps its optimizer state there). `model` may be any Burn module.
pub fn save_checkpoint_with<B: Backend, M: Module<B>>(
    dir: &Path,
    model: &M,
    meta: &CheckpointMeta,
    extras: &[(&str, &[u8])],
) -> Result<(), CheckpointError> {
    let invalid = |reason: String| CheckpointError::Invalid {
        path: dir.to_path_buf(),
        reason,
    };
    if let Some(config) = &meta.model
        && meta.classes.len() != config.num_classes
    {
        return Err(invalid(format!(
            "{} class names for a {}-class model",
            meta.classes.len(),
            config.num_classes
        )));
    }
    initialize_parameters(model);
    let meta = &CheckpointMeta {
        tensors: Some(named_tensor_shapes(model)),
        ..meta.clone()
    };
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(model.clone().into_record(), ())
        .map_err(|e| invalid(e.to_string()))?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| invalid(e.to_string()))?;

    if dir.exists() && !dir.is_dir() {
        return Err(invalid("it exists and is not a folder".into()));
    }
    let mut own = vec![MODEL_FILE, META_FILE];
    own.extend(extras.iter().map(|(name, _)| *name));
    check_replaceable(dir, &own)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write_error(parent))?;
    }
    let staging = sibling(dir, "partial");
    let _ = std::fs::remove_dir_all(&staging);
    let written = (|| {
        std::fs::create_dir(&staging)?;
        std::fs::write(staging.join(MODEL_FILE), &record)?;
        std::fs::write(staging.join(META_FILE), &json)?;
        for (name, bytes) in extras {
            std::fs::write(staging.join(name), bytes)?;
        }
        // Durable before it replaces anything.
        for name in &own {
            std::fs::File::open(staging.join(name))?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(CheckpointError::Write {
            path: dir.to_path_buf(),
            source: e,
        });
    }

    tailguard_output::abort_point("checkpoint-staged", meta.epoch);
    let previous = sibling(dir, "previous");
    let had_previous = dir.exists();
    if had_previous {
        let _ = std::fs::remove_dir_all(&previous);
        if let Err(e) = std::fs::rename(dir, &previous) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(write_error(dir)(e));
        }
    }
    tailguard_output::abort_point("checkpoint-aside", meta.epoch);
    if let Err(e) = std::fs::rename(&staging, dir) {
        let _ = std::fs::remove_dir_all(&staging);
        if had_previous {
            let _ = std::fs::rename(&previous, dir);
        }
        return Err(write_error(dir)(e));
    }
    if had_previous {
        let _ = std::fs::remove_dir_all(&previous);
    }
    Ok(())
}

/// Reads only the metadata of the checkpoint in `dir`.
pub fn read_checkpoint_meta(dir: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    let meta: CheckpointMeta = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if meta.format != FORMAT {
        return Err(CheckpointError::Invalid {
            path,
            reason: format!("format '{}', expected '{FORMAT}'", meta.format),
        });
    }
    if let Some(config) = &meta.model {
        config.validate().map_err(|e| CheckpointError::Invalid {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(meta)
}

/// Rebuilds the model stored in `dir` on `device` (a model of one of tailguard's architectures), with the weights as
/// the optimizer left them.
pub fn load_checkpoint<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Model<B>, CheckpointMeta), CheckpointError> {
    load_checkpoint_weights(dir, Weights::Raw, device)
}

/// Rebuilds the model stored in `dir` on `device` with the chosen `weights` (see [`Weights::resolve`]).
pub fn load_checkpoint_weights<B: Backend>(
    dir: &Path,
    weights: Weights,
    device: &B::Device,
) -> Result<(Model<B>, CheckpointMeta), CheckpointError> {
    let meta = read_checkpoint_meta(dir)?;
    Weights::resolve(Some(weights), &meta, dir)?;
    let config = meta.model_config(dir)?;
    let model = config.init::<B>(device).map_err(|e| CheckpointError::Invalid {
        path: dir.join(META_FILE),
        reason: e.to_string(),
    })?;
    check_same_tensors(dir, &meta, &model, &config.arch.to_string())?;
    let model = load_weights_into(dir, weights.file(), model, device, &config.arch.to_string())?;
    Ok((model, meta))
}

/// Loads the weights stored in `dir` into `model`, a freshly built module of the same structure (any Burn module:
/// this is how a model defined outside tailguard comes back from its checkpoint).
pub fn load_checkpoint_into<B: Backend, M: Module<B>>(
    dir: &Path,
    model: M,
    device: &B::Device,
) -> Result<(M, CheckpointMeta), CheckpointError> {
    let meta = read_checkpoint_meta(dir)?;
    check_same_tensors(dir, &meta, &model, "the model given")?;
    let model = load_weights_into(dir, MODEL_FILE, model, device, "the model given")?;
    Ok((model, meta))
}

/// Loads the weight average stored in `dir` ([`AVERAGE_FILE`]) into `model`, a module of the checkpoint's structure.
pub fn load_average_into<B: Backend, M: Module<B>>(
    dir: &Path,
    model: M,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    let meta = read_checkpoint_meta(dir)?;
    Weights::resolve(Some(Weights::Ema), &meta, dir)?;
    check_same_tensors(dir, &meta, &model, "the model given")?;
    load_weights_into(dir, AVERAGE_FILE, model, device, "the model given")
}

/// The bytes of `model`'s weights as a checkpoint stores them (burn's named MessagePack at full precision): what
/// [`save_checkpoint_with`] writes as [`MODEL_FILE`], for an extra file such as [`AVERAGE_FILE`].
pub fn weights_bytes<B: Backend, M: Module<B>>(model: &M) -> Result<Vec<u8>, CheckpointError> {
    initialize_parameters(model);
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(model.clone().into_record(), ())
        .map_err(|e| CheckpointError::Invalid {
            path: PathBuf::from(MODEL_FILE),
            reason: e.to_string(),
        })
}

fn load_weights_into<B: Backend, M: Module<B>>(
    dir: &Path,
    file: &str,
    model: M,
    device: &B::Device,
    structure: &str,
) -> Result<M, CheckpointError> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    let invalid = |reason: String| CheckpointError::Invalid {
        path: path.clone(),
        reason,
    };
    let mismatch = || invalid(format!("the weights do not match the structure of {structure}"));
    // Decoding a record of another structure fails or panics inside burn; catch it as a readable error.
    let record = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NamedMpkBytesRecorder::<FullPrecisionSettings>::new().load::<M::Record>(bytes, device)
    }))
    .map_err(|_| mismatch())?
    // burn's own message suggests a build flag, which is no help here: the file is damaged.
    .map_err(|_| invalid("cannot decode the weights: the file is truncated or damaged".into()))?;
    let expected = tensor_shapes(&model);
    let model =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.load_record(record))).map_err(|_| mismatch())?;
    // burn loads tensors of any shape into a record; a mismatch would only surface as a panic in forward.
    if tensor_shapes(&model) != expected {
        return Err(mismatch());
    }
    Ok(model)
}

/// Every float tensor of `module` by module path, in visiting order.
fn named_tensor_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<TensorEntry> {
    struct Named {
        path: Vec<String>,
        tensors: Vec<TensorEntry>,
    }
    impl<B: Backend> ModuleVisitor<B> for Named {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.tensors.push(TensorEntry {
                name: self.path.join("."),
                shape: param.dims().to_vec(),
            });
        }
    }
    let mut named = Named {
        path: Vec::new(),
        tensors: Vec::new(),
    };
    module.visit(&mut named);
    named.tensors
}

/// Refuses to load a checkpoint whose recorded tensors differ from `model`'s, naming the first difference (burn
/// would fail deep inside decoding with no name, or load shapes the model cannot use).
fn check_same_tensors<B: Backend, M: Module<B>>(
    dir: &Path,
    meta: &CheckpointMeta,
    model: &M,
    structure: &str,
) -> Result<(), CheckpointError> {
    let Some(stored) = &meta.tensors else {
        return Ok(());
    };
    let wanted = named_tensor_shapes(model);
    let difference = |text: String| CheckpointError::OtherModel {
        path: dir.to_path_buf(),
        structure: structure.to_string(),
        difference: text,
    };
    for (index, want) in wanted.iter().enumerate() {
        match stored.get(index) {
            None => return Err(difference(format!("the checkpoint has no tensor {}", want.name))),
            Some(have) if have.name != want.name => {
                return Err(difference(format!(
                    "tensor {index} is {} in the checkpoint, {} in the model",
                    have.name, want.name
                )));
            }
            Some(have) if have.shape != want.shape => {
                return Err(difference(format!(
                    "{} has shape {:?} in the checkpoint, {:?} in the model",
                    want.name, have.shape, want.shape
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = stored.get(wanted.len()) {
        return Err(difference(format!("the model has no tensor {}", extra.name)));
    }
    Ok(())
}

/// Shapes of every float tensor of a module (parameters and running statistics), in visiting order.
fn tensor_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.dims().to_vec());
        }
    }
    let mut shapes = Shapes(Vec::new());
    module.visit(&mut shapes);
    shapes.0
}
