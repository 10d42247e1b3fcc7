//! What can stop training: every variant names the file, key or value at fault.
//!
//! Like every tailguard error, a message does not repeat its cause: the cause is the error's `source()`, and a
//! program prints the chain (see [`chain`]).

use std::path::PathBuf;

use tailguard_longtail::DataError;
use tailguard_models::{CheckpointError, ModelConfigError};
use tailguard_output::OutputError;

use crate::config::ConfigError;

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
        "training diverged in epoch {epoch} (loss is {loss}); the last good checkpoint is kept. Lower optim.lr or \
         check the data"
    )]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// The loss read.
        loss: f64,
    },
    /// The parts given to the trainer do not fit each other.
    #[error("{0}")]
    Mismatch(String),
    /// A checkpoint cannot be written or read.
    #[error(transparent)]
    CheckpointFile(#[from] CheckpointError),
    /// An output file cannot be written, or the folder is not ours.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The run folder already holds a run.
    #[error(
        "{0} already holds a run; continue it with --resume {0}, start it over with --force, or choose another --out"
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
    #[error("{dir} has no checkpoint yet: the run stopped before its first epoch ended. Start it again ({restart})")]
    NoCheckpoint {
        /// The run folder.
        dir: PathBuf,
        /// How to start it again.
        restart: String,
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
         (peer timeout): a peer died, hangs or is unreachable. The run stopped; its last checkpoint is intact, resume it with --resume \
         once every node runs again"
    )]
    PeerTimeout {
        /// Global rank of the device that waited.
        rank: usize,
        /// The exchange it waited in.
        operation: &'static str,
        /// How long it waited.
        seconds: f64,
    },
    /// The run's configuration changed since the checkpoint was written.
    #[error(
        "{path} was edited after the run started ({changes}); the checkpoint was trained with the stored \
         configuration, so only {allowed} may change on resume. Undo the edit, or start a new run with the edited \
         file and another --out"
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
