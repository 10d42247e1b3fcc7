//! A training run on disk: `config.toml`, `log.jsonl` (one JSON line per epoch), `last/` (checkpoint with optimizer
//! state, written every epoch) and `best/` (best balanced validation robustness). A run stopped at any point, even
//! by `kill -9` while a checkpoint is being written, resumes from `last/` exactly where it was.
//!
//! The folder follows the output policy of `tailguard-output`: a run starts only in a new or empty folder (or, with
//! `force`, over a run tailguard wrote, replacing only its own files); one process at a time writes into it (an OS
//! lock); and the configuration stored in the checkpoint is the truth on resume, so an edited `config.toml` is
//! refused unless it changes only [`RESUME_SAFE_KEYS`].

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::json;
use tailguard_models::{
    CheckpointMeta, Model, load_checkpoint, read_checkpoint_meta, recover_checkpoint, save_checkpoint_with,
};
use tailguard_output::{OutputDir, RunLock};

use crate::config::TrainConfig;
use crate::engine::{EpochRecord, TrainData, TrainError, TrainObserver, Trainer, budget_policy, build_method};

const CONFIG_FILE: &str = "config.toml";
const LOG_FILE: &str = "log.jsonl";
const OPTIMIZER_FILE: &str = "optimizer.mpk";
const STATE_FILE: &str = "train_state.json";
const LAST: &str = "last";
const BEST: &str = "best";

/// Configuration keys that may change between a run's start and its resume: the number of epochs (the learning-rate
/// schedule is recomputed for the new length). Any other change would make the checkpoint disagree with its run.
pub const RESUME_SAFE_KEYS: &[&str] = &["optim.epochs"];

/// Progress that is not in the model or optimizer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct RunState {
    next_epoch: usize,
    best_validation_robust: Option<f64>,
    #[serde(default)]
    method: serde_json::Value,
}

/// A training run writing into a folder.
pub struct Run<B: AutodiffBackend> {
    output: OutputDir,
    pub trainer: Trainer<B, Model<B>>,
    data: TrainData,
    config: TrainConfig,
    best: Option<f64>,
    // Held for the life of the run: a second process on the same folder is refused.
    _lock: RunLock,
}

fn checkpoint_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(e.to_string())
}

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Checkpoint(format!("cannot write {}: {e}", path.display()))
}

/// `key -> value` for every leaf of a JSON tree, with dotted keys.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut std::collections::BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, child, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The keys whose values differ between two configurations, as `key: old -> new`.
fn changed_keys(stored: &TrainConfig, edited: &TrainConfig) -> Vec<(String, String)> {
    let (mut a, mut b) = (Default::default(), Default::default());
    flatten("", &json!(stored), &mut a);
    flatten("", &json!(edited), &mut b);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let missing = "(unset)".to_string();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let (old, new) = (a.get(k).unwrap_or(&missing), b.get(k).unwrap_or(&missing));
            (k.clone(), format!("{k}: {old} -> {new}"))
        })
        .collect()
}

impl<B: AutodiffBackend> Run<B> {
    /// Starts a new run in `dir`, which must be new or empty.
    pub fn start(config: TrainConfig, dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        Self::start_with(config, dir, device, false)
    }

    /// Starts a new run in `dir`; with `force`, over an earlier run that tailguard wrote there (its own files are
    /// replaced, anything else in the folder is left alone, and a file of the same name that tailguard did not
    /// write is refused).
    pub fn start_with(config: TrainConfig, dir: &Path, device: &B::Device, force: bool) -> Result<Self, TrainError> {
        if !force && dir.join(LAST).exists() {
            return Err(TrainError::Checkpoint(format!(
                "{} already holds a run; continue it with --resume {0}, start it over with --force, or choose \
                 another --out",
                dir.display()
            )));
        }
        let mut output = OutputDir::claim(dir, &[CONFIG_FILE, LOG_FILE, LAST, BEST], force)?;
        let lock = RunLock::acquire(dir)?;
        output.remove_stale_temporaries()?;
        let data = TrainData::load(&config)?;
        let model_config = config.model_config(data.classes.len())?;
        <B as Backend>::seed(device, config.seed);
        let model = model_config.init::<B>(device).map_err(TrainError::Checkpoint)?;
        let trainer = Trainer::new(&config, &data, model, device)?;
        for name in [LAST, BEST] {
            output.remove_owned(name)?;
        }
        output.write(CONFIG_FILE, config.to_toml().as_bytes())?;
        output.write(LOG_FILE, b"")?;
        output.record(LAST)?;
        output.record(BEST)?;
        Ok(Self {
            output,
            trainer,
            data,
            config,
            best: None,
            _lock: lock,
        })
    }

    /// Continues the run in `dir` from its last checkpoint, with the configuration stored in that checkpoint.
    pub fn resume(dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        let config_path = dir.join(CONFIG_FILE);
        if !dir.is_dir() {
            return Err(TrainError::Checkpoint(format!("{} does not exist", dir.display())));
        }
        if !config_path.exists() {
            return Err(TrainError::Checkpoint(format!(
                "{} is not a tailguard run: it has no {CONFIG_FILE}",
                dir.display()
            )));
        }
        let lock = RunLock::acquire(dir)?;
        let output = OutputDir::open(dir)?;
        let last = dir.join(LAST);
        // A checkpoint moved aside by a killed save is put back before the killed process's temporaries go.
        recover_checkpoint(&last)?;
        recover_checkpoint(&dir.join(BEST))?;
        output.remove_stale_temporaries()?;
        if !last.exists() {
            return Err(TrainError::Checkpoint(format!(
                "{} has no checkpoint yet: the run stopped before its first epoch ended. Start it again with \
                 `tailguard train --config {} --out {0} --force`",
                dir.display(),
                config_path.display()
            )));
        }
        let meta = read_checkpoint_meta(&last)?;
        let stored: TrainConfig = serde_json::from_value(meta.training["config"].clone()).map_err(|e| {
            TrainError::Checkpoint(format!(
                "{} holds no readable training configuration: {e}",
                last.join(tailguard_models::checkpoint::META_FILE).display()
            ))
        })?;
        let edited = TrainConfig::load(&config_path, &[])?;
        let changes = changed_keys(&stored, &edited);
        let unsafe_changes: Vec<&str> = changes
            .iter()
            .filter(|(key, _)| !RESUME_SAFE_KEYS.contains(&key.as_str()))
            .map(|(_, change)| change.as_str())
            .collect();
        if !unsafe_changes.is_empty() {
            return Err(TrainError::Checkpoint(format!(
                "{} was edited after the run started ({}); the checkpoint was trained with the stored \
                 configuration, so only {} may change on resume. Undo the edit, or start a new run with the edited \
                 file and another --out",
                config_path.display(),
                unsafe_changes.join("; "),
                RESUME_SAFE_KEYS.join(", ")
            )));
        }
        let mut config = stored;
        config.optim.epochs = edited.optim.epochs;
        config.validate()?;

        let state_path = last.join(STATE_FILE);
        let state: RunState = std::fs::read(&state_path)
            .map_err(|e| TrainError::Checkpoint(format!("cannot read {}: {e}", state_path.display())))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| TrainError::Checkpoint(format!("{} is damaged: {e}", state_path.display())))
            })?;
        let data = TrainData::load(&config)?;
        if data.classes != meta.classes {
            return Err(TrainError::Checkpoint(format!(
                "the data in {} no longer has the classes of the checkpoint in {}",
                config.data.data_dir.display(),
                last.display()
            )));
        }
        let (model, _) = load_checkpoint::<B>(&last, device)?;
        let mut trainer = Trainer::new(&config, &data, model, device)?;
        let optimizer_path = last.join(OPTIMIZER_FILE);
        let optimizer = std::fs::read(&optimizer_path)
            .map_err(|e| TrainError::Checkpoint(format!("cannot read {}: {e}", optimizer_path.display())))?;
        trainer.optimizer = trainer
            .optimizer
            .load_bytes(&optimizer, device)
            .map_err(|e| TrainError::Checkpoint(format!("{} is damaged: {e}", optimizer_path.display())))?;
        trainer.next_epoch = state.next_epoch;
        trainer
            .load_method_state(&state.method)
            .map_err(|e| TrainError::Checkpoint(format!("{}: method state: {e}", state_path.display())))?;
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
            data,
            config,
            best: state.best_validation_robust,
            _lock: lock,
        })
    }

    /// Whether every epoch has run.
    pub fn finished(&self) -> bool {
        self.trainer.next_epoch >= self.config.optim.epochs
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        self.output.path()
    }

    /// Runs one epoch, then appends the log line and writes `last/` (and `best/` when validation improved). The log
    /// goes first: a stop between the two leaves the log one line ahead, which a resume drops.
    pub fn run_epoch(&mut self, observer: &mut dyn TrainObserver) -> Result<EpochRecord, TrainError> {
        let record = self.trainer.run_epoch(observer)?;
        let improved = match (record.validation_robust, self.best) {
            (Some(v), Some(best)) => v > best,
            (Some(_), None) => true,
            _ => false,
        };
        if improved {
            self.best = record.validation_robust;
        }
        let log_path: PathBuf = self.dir().join(LOG_FILE);
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(write_error(&log_path))?;
        let line = serde_json::to_string(&record).map_err(checkpoint_error)?;
        writeln!(log, "{line}").map_err(write_error(&log_path))?;
        tailguard_output::abort_point("log-written", Some(record.epoch));
        self.save(LAST, record.epoch)?;
        if improved {
            self.save(BEST, record.epoch)?;
        }
        Ok(record)
    }

    fn save(&self, name: &str, epoch: usize) -> Result<(), TrainError> {
        let model_config = self.config.model_config(self.data.classes.len())?;
        let mut meta = CheckpointMeta::new(model_config, self.data.classes.clone());
        meta.epoch = Some(epoch);
        meta.training = json!({
            "method": self.config.method_name(),
            "class_counts": self.data.counts,
            "config": self.config,
        });
        let optimizer = self.trainer.optimizer.to_bytes().map_err(checkpoint_error)?;
        let state = serde_json::to_vec(&RunState {
            next_epoch: self.trainer.next_epoch,
            best_validation_robust: self.best,
            method: self.trainer.method_state(),
        })
        .map_err(checkpoint_error)?;
        save_checkpoint_with(
            &self.dir().join(name),
            &self.trainer.model,
            &meta,
            &[(OPTIMIZER_FILE, &optimizer), (STATE_FILE, &state)],
        )?;
        Ok(())
    }
}

/// What `tailguard train --dry-run` prints: the resolved configuration, the per-class training counts, the stage of
/// every epoch, and for RobustLT the per-class budgets (in 1/255, at full intensity) and the warm-up intensities.
pub fn plan<B: AutodiffBackend>(config: &TrainConfig) -> Result<serde_json::Value, TrainError> {
    let data = TrainData::load(config)?;
    let method = build_method::<B, Model<B>>(config, &data.counts)?;
    let epochs = config.optim.epochs;
    let stages: Vec<&str> = (0..epochs).map(|e| method.stage(e)).collect();
    let lrs: Vec<f64> = (0..epochs)
        .map(|e| config.optim.schedule.lr(config.optim.lr, e, epochs))
        .collect();
    let mut plan = json!({
        "config": config,
        "method": config.method_name(),
        "classes": data.classes,
        "train_counts": data.counts,
        "train_images": data.train.len(),
        "validation_images": data.validation.as_ref().map_or(0, |v| v.len()),
        "stages": stages,
        "lr": lrs,
    });
    if config.robustlt.is_some() {
        let policy = budget_policy(config, &data.counts);
        plan["eps_per_class"] = json!(policy.full_budgets().iter().map(|e| e * 255.0).collect::<Vec<_>>());
        plan["intensity"] = json!((0..epochs).map(|e| policy.intensity(e)).collect::<Vec<_>>());
    }
    Ok(plan)
}
