//! A training run on disk, for any model and method: `log.jsonl` (one JSON line per epoch), `last/` (checkpoint
//! with optimizer and method state, written every epoch) and `best/` (best balanced validation robustness). A run
//! stopped at any point, even by `kill -9` while a checkpoint is being written, resumes from `last/` exactly where
//! it was.
//!
//! The folder follows the output policy of `tailguard-output`: a run starts only in a new or empty folder (or, with
//! `force`, over a run tailguard wrote, replacing only its own files), and one process at a time writes into it (an
//! OS lock). On resume the trainer handed in must be built like the one that started the run: the same method, the
//! same classes and the same loop settings (only the number of epochs may change).

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;
use tailguard_models::checkpoint::AVERAGE_FILE;
use tailguard_models::{
    AverageMeta, CheckpointMeta, Classifier, ModelConfig, load_average_into, load_checkpoint_into,
    read_checkpoint_meta, recover_checkpoint, save_checkpoint_with, weights_bytes,
};
use tailguard_output::{OutputDir, RunLock};

use crate::epoch::EpochRecord;
use crate::error::TrainError;
use crate::observer::TrainObserver;
use crate::resume_state::{ResumeState, SameRun};
use crate::trainer::Trainer;

/// The configuration file of a run started from a [`crate::TrainConfig`].
pub const CONFIG_FILE: &str = "config.toml";
/// The training log, one [`EpochRecord`] per line.
pub const LOG_FILE: &str = "log.jsonl";
/// The checkpoint written after every epoch.
pub const LAST: &str = "last";
/// The checkpoint of the best validation robustness.
pub const BEST: &str = "best";
const OPTIMIZER_FILE: &str = "optimizer.mpk";
const STATE_FILE: &str = "train_state.json";

/// Trainer settings that may change between a run's start and its resume: the number of epochs (the learning-rate
/// schedule is recomputed for the new length). Any other change would make the checkpoint disagree with its run.
pub const RESUME_SAFE_KEYS: &[&str] = &["optim.epochs"];

/// What a run records about itself beyond the trainer.
#[derive(Debug, Clone, Default)]
pub struct RunDescription {
    /// The architecture, for a model of tailguard's own: lets `tailguard eval` and `export` rebuild the model from
    /// the checkpoint alone. `None` for a model defined elsewhere.
    pub model: Option<ModelConfig>,
    /// Free-form JSON stored in every checkpoint under `training.config` (tailguard stores its configuration).
    pub config: serde_json::Value,
    /// The text of `config.toml`, for runs started from a configuration file.
    pub config_file: Option<String>,
}

/// How [`Run::open`] treats the run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A new run in a new or empty folder; a folder that holds a run is refused ([`TrainError::RunExists`]).
    Start,
    /// A new run over an earlier run that tailguard wrote there: its own files are replaced, anything else in the
    /// folder is left alone, and a file of the same name that tailguard did not write is refused.
    Replace,
    /// The run in the folder, continued from its last checkpoint.
    Resume,
    /// The run in the folder if it has a checkpoint, else a new one.
    StartOrResume,
}

/// A training run writing into a folder.
pub struct Run<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>> {
    output: OutputDir,
    /// The trainer; its model is the latest state of training.
    pub trainer: Trainer<B, M>,
    description: RunDescription,
    best: Option<f64>,
    // Held for the life of the run: a second process on the same folder is refused.
    _lock: RunLock,
}

impl<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>> Run<B, M> {
    /// Opens the run folder `dir` as `opening` says, and only then builds the trainer with `build` (which may load
    /// data): the folder is claimed (or locked, recovered and checked) once, before any expensive work. `build`
    /// receives the metadata of the checkpoint being resumed (`None` for a new run); on resume the trainer it returns
    /// must be built as the run's was (same method, classes and settings; the number of epochs may differ), and its
    /// model, optimizer, method state and epoch are replaced by the checkpoint's.
    pub fn open(
        dir: &Path,
        opening: Opening,
        build: impl FnOnce(Option<&CheckpointMeta>) -> Result<(Trainer<B, M>, RunDescription), TrainError>,
    ) -> Result<Self, TrainError> {
        match opening {
            Opening::Start => Self::open_new(dir, false, build),
            Opening::Replace => Self::open_new(dir, true, build),
            Opening::Resume => Self::open_existing(dir, build),
            Opening::StartOrResume => {
                // A checkpoint a killed save moved aside counts: the same recovery as a resume decides.
                if dir.is_dir() {
                    recover_checkpoint(&dir.join(LAST))?;
                }
                if dir.join(LAST).exists() {
                    Self::open_existing(dir, build)
                } else {
                    Self::open_new(dir, false, build)
                }
            }
        }
    }

    /// Starts a new run of `trainer` in `dir` ([`Opening::Start`], or [`Opening::Replace`] with `force`).
    pub fn start(
        trainer: Trainer<B, M>,
        description: RunDescription,
        dir: &Path,
        force: bool,
    ) -> Result<Self, TrainError> {
        let opening = if force { Opening::Replace } else { Opening::Start };
        Self::open(dir, opening, |_| Ok((trainer, description)))
    }

    /// Continues the run in `dir` from its last checkpoint ([`Opening::Resume`]).
    pub fn resume(trainer: Trainer<B, M>, description: RunDescription, dir: &Path) -> Result<Self, TrainError> {
        Self::open(dir, Opening::Resume, |_| Ok((trainer, description)))
    }

    fn open_new(
        dir: &Path,
        force: bool,
        build: impl FnOnce(Option<&CheckpointMeta>) -> Result<(Trainer<B, M>, RunDescription), TrainError>,
    ) -> Result<Self, TrainError> {
        if !force && dir.join(LAST).exists() {
            return Err(TrainError::RunExists(dir.to_path_buf()));
        }
        let mut output = OutputDir::claim(dir, &[CONFIG_FILE, LOG_FILE, LAST, BEST], force)?;
        let lock = RunLock::acquire(dir)?;
        let (trainer, description) = build(None)?;
        output.remove_stale_temporaries()?;
        for name in [LAST, BEST] {
            output.remove_owned(name)?;
        }
        if let Some(text) = &description.config_file {
            output.write(CONFIG_FILE, text.as_bytes())?;
        }
        output.write(LOG_FILE, b"")?;
        output.record(LAST)?;
        output.record(BEST)?;
        Ok(Self {
            output,
            trainer,
            description,
            best: None,
            _lock: lock,
        })
    }

    fn open_existing(
        dir: &Path,
        build: impl FnOnce(Option<&CheckpointMeta>) -> Result<(Trainer<B, M>, RunDescription), TrainError>,
    ) -> Result<Self, TrainError> {
        if !dir.is_dir() {
            return Err(TrainError::NotARun {
                dir: dir.to_path_buf(),
                reason: "does not exist".into(),
            });
        }
        let lock = RunLock::acquire(dir)?;
        let output = OutputDir::open(dir)?;
        let last = dir.join(LAST);
        // A checkpoint moved aside by a killed save is put back before the killed process's temporaries go.
        recover_checkpoint(&last)?;
        recover_checkpoint(&dir.join(BEST))?;
        output.remove_stale_temporaries()?;
        if !last.exists() {
            return Err(TrainError::NoCheckpoint { dir: dir.to_path_buf() });
        }
        let state_path = last.join(STATE_FILE);
        let bytes = std::fs::read(&state_path).map_err(|source| TrainError::Read {
            path: state_path.clone(),
            source,
        })?;
        let state: ResumeState = serde_json::from_slice(&bytes).map_err(|e| TrainError::Damaged {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        let meta = read_checkpoint_meta(&last)?;
        let (mut trainer, description) = build(Some(&meta))?;
        let changes = state.differences(trainer.method_name(), trainer.config(), SameRun::AnyEpochs);
        if !changes.is_empty() {
            return Err(TrainError::Edited {
                path: last.to_path_buf(),
                changes: changes.join("; "),
                allowed: "the number of epochs".into(),
            });
        }
        if meta.classes != trainer.classes() {
            return Err(TrainError::ClassesChanged {
                difference: class_difference(&meta.classes, trainer.classes()),
                checkpoint: last,
            });
        }
        let device = trainer.device().clone();
        let model = load_checkpoint_into(&last, trainer.model().clone(), &device)?.0;
        trainer.set_model(model);
        if trainer.average().is_some() {
            // A module of its own: a clone would share the live model's running statistics, which loading overwrites.
            let average = load_average_into(&last, M::from_inner(trainer.model().valid()), &device)?;
            let updates = state.average_updates.unwrap_or_default();
            trainer.restore_average(average, updates);
        }
        let optimizer_path = last.join(OPTIMIZER_FILE);
        let optimizer = std::fs::read(&optimizer_path).map_err(|source| TrainError::Read {
            path: optimizer_path.clone(),
            source,
        })?;
        trainer
            .load_optimizer_state(&optimizer)
            .map_err(|e| TrainError::Damaged {
                path: optimizer_path.clone(),
                reason: crate::error::chain(&e),
            })?;
        trainer.restore(&state).map_err(|e| TrainError::Damaged {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        // The log may be ahead of the checkpoint (it is written first) or end in a line cut by a kill: keep the
        // complete lines of the epochs the checkpoint has.
        let log_path = dir.join(LOG_FILE);
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let kept: String = log
            .split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .take(state.next_epoch)
            .collect();
        tailguard_output::write_atomically(&log_path, kept.as_bytes())?;
        Ok(Self {
            output,
            trainer,
            description,
            best: state.best_validation_robust,
            _lock: lock,
        })
    }

    /// Claims the entry `name` of the run folder for output the caller writes there (a folder of TensorBoard
    /// events): recorded as tailguard's, refused when something the user put there has that name.
    pub fn claim_entry(&mut self, name: &str) -> Result<std::path::PathBuf, TrainError> {
        Ok(self.output.record(name)?)
    }

    /// Whether every epoch has run.
    pub fn finished(&self) -> bool {
        self.trainer.finished()
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        self.output.path()
    }

    /// What the run records about itself.
    pub fn description(&self) -> &RunDescription {
        &self.description
    }

    /// Best balanced validation robustness so far.
    pub fn best_validation_robust(&self) -> Option<f64> {
        self.best
    }

    /// Runs one epoch, then appends the log line and writes `last/` (and `best/` when validation improved). The log
    /// goes first: a stop between the two leaves the log one line ahead, which a resume drops.
    pub fn run_epoch(&mut self, observer: &mut dyn TrainObserver) -> Result<EpochRecord, TrainError> {
        let record = self
            .trainer
            .run_epoch(observer)
            .map_err(|error| self.with_checkpoint(error))?;
        let improved = match (record.validation_robust, self.best) {
            (Some(v), Some(best)) => v > best,
            (Some(_), None) => true,
            _ => false,
        };
        if improved {
            self.best = record.validation_robust;
        }
        let log_path: PathBuf = self.dir().join(LOG_FILE);
        let write_error = |source| TrainError::Write {
            path: log_path.clone(),
            source,
        };
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(write_error)?;
        let line = serde_json::to_string(&record).map_err(|e| write_error(std::io::Error::other(e)))?;
        writeln!(log, "{line}").map_err(write_error)?;
        tailguard_output::abort_point("log-written", Some(record.epoch));
        self.save(LAST, record.epoch)?;
        if improved {
            self.save(BEST, record.epoch)?;
        }
        observer.on_epoch_end(&record, self.dir());
        Ok(record)
    }

    /// Names the run's last checkpoint in an error that says whether one is kept, when it exists.
    pub(crate) fn with_checkpoint(&self, error: TrainError) -> TrainError {
        let last = self.dir().join(LAST);
        let existing = || {
            last.join(tailguard_models::checkpoint::META_FILE)
                .exists()
                .then(|| last.clone())
        };
        match error {
            TrainError::Diverged { epoch, loss, .. } => TrainError::Diverged {
                epoch,
                loss,
                checkpoint: existing(),
            },
            TrainError::PeerTimeout {
                rank,
                operation,
                seconds,
                ..
            } => TrainError::PeerTimeout {
                rank,
                operation,
                seconds,
                checkpoint: existing(),
            },
            other => other,
        }
    }

    /// Runs every remaining epoch.
    pub fn run_to_end(&mut self, observer: &mut dyn TrainObserver) -> Result<Vec<EpochRecord>, TrainError> {
        let mut records = Vec::new();
        while !self.finished() {
            records.push(self.run_epoch(observer)?);
        }
        Ok(records)
    }

    fn save(&self, name: &str, epoch: usize) -> Result<(), TrainError> {
        let trainer = &self.trainer;
        let classes = trainer.classes().to_vec();
        let mut meta = match &self.description.model {
            Some(config) => CheckpointMeta::new(config.clone(), classes),
            None => CheckpointMeta::custom(classes),
        };
        meta.epoch = Some(epoch);
        meta.training = json!({
            "method": trainer.method_name(),
            "class_counts": trainer.class_counts(),
            "config": self.description.config,
        });
        let path = self.dir().join(name);
        let encode_error = |reason: String| TrainError::Damaged {
            path: path.clone(),
            reason,
        };
        let optimizer = trainer
            .optimizer()
            .to_bytes()
            .map_err(|e| encode_error(crate::error::chain(&e)))?;
        let state = serde_json::to_vec(&trainer.resume_state(self.best)).map_err(|e| encode_error(e.to_string()))?;
        let mut extras: Vec<(&str, &[u8])> = vec![(OPTIMIZER_FILE, &optimizer), (STATE_FILE, &state)];
        let average = match trainer.average() {
            Some(average) => {
                meta.average = Some(AverageMeta {
                    decay: average.config().decay,
                    updates: average.updates(),
                });
                Some(weights_bytes(average.model())?)
            }
            None => None,
        };
        if let Some(bytes) = &average {
            extras.push((AVERAGE_FILE, bytes));
        }
        save_checkpoint_with(&path, trainer.model(), &meta, &extras)?;
        Ok(())
    }
}

/// The first difference between a checkpoint's classes and the data's, for a message.
pub(crate) fn class_difference(checkpoint: &[String], data: &[String]) -> String {
    if checkpoint.len() != data.len() {
        return format!(
            "{} classes in the checkpoint, {} in the data",
            checkpoint.len(),
            data.len()
        );
    }
    match checkpoint.iter().zip(data).enumerate().find(|(_, (a, b))| a != b) {
        Some((index, (a, b))) => format!("class {index} is {a:?} in the checkpoint, {b:?} in the data"),
        None => "no difference".into(),
    }
}
