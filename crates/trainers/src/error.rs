//! What can stop training: every variant names the file, key or value at fault.
//!
//! Like every tailguard error, a message does not repeat its cause: the cause is the error's `source()`, and a
//! program prints the chain (see [`chain`]).

use std::path::PathBuf;

use tailguard_longtail::DataError;
use tailguard_models::{CheckpointError, ModelConfigError};
use tailguard_output::OutputError;

/// Errors in a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A value is missing, of the wrong type or impossible; the message names the key.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// A setting outside its range (`momentum must be in [0, 1), got 1.5`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{setting} {requirement}, got {value}")]
pub struct InvalidSetting {
    /// The setting, as configuration files name it.
    pub setting: &'static str,
    /// What it must be.
    pub requirement: &'static str,
    /// The value given.
    pub value: String,
}

impl InvalidSetting {
    /// `setting` must be `requirement`, and is `value`.
    pub fn new(setting: &'static str, requirement: &'static str, value: impl std::fmt::Display) -> Self {
        Self {
            setting,
            requirement,
            value: value.to_string(),
        }
    }
}

/// A method's saved state that does not fit the method.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{method} state: {reason}")]
pub struct MethodStateError {
    /// The method.
    pub method: &'static str,
    /// What does not fit.
    pub reason: String,
}

/// Optimizer state that cannot be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum OptimizerStateError {
    /// Shorter than its own header says.
    #[error("the optimizer state is truncated")]
    Truncated,
    /// Burn's recorder refused it.
    #[error("the optimizer state cannot be encoded or decoded")]
    Record(#[from] burn::record::RecorderError),
}

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A trainer setting is out of range.
    #[error("invalid trainer setting")]
    Setting(#[from] InvalidSetting),
    /// The data cannot be loaded or batched.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model configuration is impossible.
    #[error("invalid model configuration")]
    Model(#[from] ModelConfigError),
    /// The loss became NaN or infinite.
    #[error(
        "training diverged in epoch {epoch} (loss is {loss}){}; lower the learning rate or check the data",
        kept_checkpoint(.checkpoint)
    )]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// The loss read.
        loss: f64,
        /// The run's last good checkpoint, kept on disk (set by [`crate::Run`]; `None` when there is none).
        checkpoint: Option<PathBuf>,
    },
    /// The model's outputs and the data's classes differ.
    #[error("the model has {outputs} outputs but the data has {classes} classes")]
    OutputsDifferFromClasses {
        /// Outputs of the model.
        outputs: usize,
        /// Classes of the data.
        classes: usize,
    },
    /// The budget policy was built for another number of classes.
    #[error("the budget policy covers {policy} classes but the data has {classes}")]
    BudgetDiffersFromClasses {
        /// Classes of the policy.
        policy: usize,
        /// Classes of the data.
        classes: usize,
    },
    /// The method needs the penultimate features, which the model does not give.
    #[error("{method} needs penultimate features, which this model does not expose (Classifier::features_and_logits)")]
    NeedsFeatures {
        /// The method.
        method: &'static str,
    },
    /// A method's loss is not one scalar (a per-sample loss not reduced, say): checked before backward, which would
    /// otherwise sum it silently.
    #[error(
        "{method}'s loss has shape {given:?}; a training step needs a scalar loss of shape {expected:?} (reduce a \
         per-sample loss with mean())"
    )]
    LossShape {
        /// The method.
        method: &'static str,
        /// The shape a step needs: `[1]`.
        expected: Vec<usize>,
        /// The shape the method gave.
        given: Vec<usize>,
    },
    /// The data's classes differ from those of the checkpoint being resumed.
    #[error("the data no longer has the classes of the checkpoint in {checkpoint} ({difference})")]
    ClassesChanged {
        /// The checkpoint folder.
        checkpoint: PathBuf,
        /// The first difference.
        difference: String,
    },
    /// The configured batch is smaller than the number of devices sharing it.
    #[error("the batch size {batch_size} is smaller than the {devices} devices of the data-parallel run")]
    BatchSmallerThanDevices {
        /// The configured batch size.
        batch_size: usize,
        /// Devices of the run.
        devices: usize,
    },
    /// The replicas handed to a data-parallel run do not fit its configuration.
    #[error("{replicas} replicas for {devices} local devices")]
    ReplicasDifferFromDevices {
        /// Replicas given.
        replicas: usize,
        /// Local devices configured.
        devices: usize,
    },
    /// A data-parallel run needs device 0, and only it, to write the run.
    #[error("device {rank} of the run {}: device 0 (node 0, first local device) and only it writes the run", if *.writer { "is a writer" } else { "is not the writer" })]
    WriterNotDeviceZero {
        /// Global rank of the device.
        rank: usize,
        /// Whether it was handed the writer's replica.
        writer: bool,
    },
    /// A device's training thread panicked.
    #[error("device {rank} panicked: {message}")]
    DevicePanicked {
        /// Global rank of the device.
        rank: usize,
        /// The panic's message.
        message: String,
    },
    /// A thread or runtime could not be started.
    #[error("cannot start {what}")]
    Spawn {
        /// What was started.
        what: String,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// A network address does not parse.
    #[error("bad {role} address {address:?}: {reason}")]
    BadAddress {
        /// Which address (orchestrator, node).
        role: &'static str,
        /// The text given.
        address: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The state device 0 sends the others cannot be encoded, or arrived damaged.
    #[error("the state of a data-parallel run cannot be exchanged: {reason}")]
    StateExchange {
        /// What went wrong.
        reason: String,
    },
    /// The devices of a data-parallel run were built with different settings.
    #[error(
        "this device is not set up as device 0 ({differences}, as `key: device 0 -> this device`): every device and \
         node must run the same configuration"
    )]
    DevicesDiffer {
        /// Every difference from device 0's method and loop settings.
        differences: String,
    },
    /// A checkpoint cannot be written or read.
    #[error(transparent)]
    CheckpointFile(#[from] CheckpointError),
    /// An output file cannot be written, or the folder is not ours.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The run folder already holds a run.
    #[error(
        "{0} already holds a run; continue it (Run::resume), replace it (Run::start with force), or start in another \
         folder"
    )]
    RunExists(PathBuf),
    /// The folder to resume is not a run.
    #[error("{dir} {reason}")]
    NotARun {
        /// The folder.
        dir: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The run stopped before its first checkpoint.
    #[error(
        "{dir} has no checkpoint yet: the run stopped before its first epoch ended; start it again (Run::start with \
         force replaces what it left)"
    )]
    NoCheckpoint {
        /// The run folder.
        dir: PathBuf,
    },
    /// A file of the run cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file of the run cannot be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file of the run is damaged.
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A data-parallel exchange between devices failed (see [`crate::parallel`]).
    #[error("data-parallel {operation} failed on device {rank}: {reason}")]
    Collective {
        /// What was exchanged.
        operation: &'static str,
        /// Global rank of the device that saw the failure.
        rank: usize,
        /// burn-collective's error.
        reason: String,
    },
    /// Another device of a data-parallel run stopped with an error; this one stopped too.
    #[error("device {rank} of the data-parallel run failed")]
    PeerFailed {
        /// Global rank of the failed device.
        rank: usize,
        /// Its error.
        #[source]
        source: Box<TrainError>,
    },
    /// A data-parallel exchange waited longer than the peer timeout: a device or machine died or hangs.
    #[error(
        "device {rank} waited {seconds:.0} s in the {operation} for the other devices of the data-parallel run \
         (peer timeout): a peer died, hangs or is unreachable. The run stopped{}",
        resume_hint(.checkpoint)
    )]
    PeerTimeout {
        /// Global rank of the device that waited.
        rank: usize,
        /// The exchange it waited in.
        operation: &'static str,
        /// How long it waited.
        seconds: f64,
        /// The run's last checkpoint, intact on disk (set by the writer; `None` when there is none yet).
        checkpoint: Option<PathBuf>,
    },
    /// The run's configuration changed since the checkpoint was written.
    #[error(
        "{path} was edited after the run started ({changes}); the checkpoint was trained with the stored \
         configuration, so only {allowed} may change on resume. Undo the edit, or start a new run with the edited \
         file in another folder"
    )]
    Edited {
        /// The configuration file (or the run folder, for a run built in code).
        path: PathBuf,
        /// Every change, `key: old -> new`, separated by `; `.
        changes: String,
        /// What may change.
        allowed: String,
    },
}

fn kept_checkpoint(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(path) => format!("; the last good checkpoint, {}, is kept", path.display()),
        None => String::new(),
    }
}

fn resume_hint(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(path) => format!(
            "; its last checkpoint, {}, is intact: resume it once every node runs again",
            path.display()
        ),
        None => " before its first checkpoint".into(),
    }
}

/// An error and its causes, joined with ": " (how the tailguard program prints errors).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        message.push_str(": ");
        message.push_str(&e.to_string());
        cause = e.source();
    }
    message
}
