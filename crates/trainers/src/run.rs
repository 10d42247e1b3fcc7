//! A training run on disk: `config.toml`, `log.jsonl` (one JSON line per epoch), `last/` (checkpoint with optimizer
//! state, written every epoch) and `best/` (best balanced validation robustness). A run stopped at any point resumes
//! from `last/` exactly where it was.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::json;
use tailguard_models::{CheckpointMeta, Model, load_checkpoint, save_checkpoint_with};

use crate::config::TrainConfig;
use crate::engine::{EpochRecord, TrainData, TrainError, TrainObserver, Trainer, budget_policy, build_method};

const CONFIG_FILE: &str = "config.toml";
const LOG_FILE: &str = "log.jsonl";
const OPTIMIZER_FILE: &str = "optimizer.mpk";
const STATE_FILE: &str = "train_state.json";

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
    dir: PathBuf,
    pub trainer: Trainer<B, Model<B>>,
    data: TrainData,
    config: TrainConfig,
    best: Option<f64>,
}

fn checkpoint_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(e.to_string())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Checkpoint(format!("cannot write {}: {e}", path.display()))
}

impl<B: AutodiffBackend> Run<B> {
    /// Starts a new run in `dir`, which must not hold one already.
    pub fn start(config: TrainConfig, dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        if dir.join("last").exists() {
            return Err(TrainError::Checkpoint(format!(
                "{} already holds a run; continue it with --resume {0} or choose another --out",
                dir.display()
            )));
        }
        let data = TrainData::load(&config)?;
        let model_config = config.model_config(data.classes.len())?;
        <B as Backend>::seed(device, config.seed);
        let model = model_config.init::<B>(device).map_err(TrainError::Checkpoint)?;
        let trainer = Trainer::new(&config, &data, model, device)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        tailguard_longtail::atomic::write_atomically(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
        std::fs::write(dir.join(LOG_FILE), b"").map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            trainer,
            data,
            config,
            best: None,
        })
    }

    /// Continues the run in `dir` from its last checkpoint.
    pub fn resume(dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        let config = TrainConfig::load(&dir.join(CONFIG_FILE), &[])?;
        let last = dir.join("last");
        let state: RunState = std::fs::read(last.join(STATE_FILE))
            .map_err(|e| TrainError::Checkpoint(format!("{} has no resumable checkpoint: {e}", dir.display())))
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(checkpoint_error))?;
        let data = TrainData::load(&config)?;
        let (model, _) = load_checkpoint::<B>(&last, device).map_err(checkpoint_error)?;
        let mut trainer = Trainer::new(&config, &data, model, device)?;
        let optimizer = std::fs::read(last.join(OPTIMIZER_FILE)).map_err(checkpoint_error)?;
        trainer.optimizer = trainer
            .optimizer
            .load_bytes(&optimizer, device)
            .map_err(checkpoint_error)?;
        trainer.next_epoch = state.next_epoch;
        trainer.load_method_state(&state.method)?;
        // The log may have got one line ahead of the checkpoint if a run stopped between the two writes.
        let log_path = dir.join(LOG_FILE);
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let kept: String = log.lines().take(state.next_epoch).map(|l| format!("{l}\n")).collect();
        tailguard_longtail::atomic::write_atomically(&log_path, kept.as_bytes())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            trainer,
            data,
            config,
            best: state.best_validation_robust,
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
        &self.dir
    }

    /// Runs one epoch, then writes `last/`, `best/` when validation improved, and the log line.
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
        self.save("last", record.epoch)?;
        if improved {
            self.save("best", record.epoch)?;
        }
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join(LOG_FILE))
            .map_err(io(&self.dir))?;
        let line = serde_json::to_string(&record).map_err(checkpoint_error)?;
        writeln!(log, "{line}").map_err(io(&self.dir))?;
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
            &self.dir.join(name),
            &self.trainer.model,
            &meta,
            &[(OPTIMIZER_FILE, &optimizer), (STATE_FILE, &state)],
        )
        .map_err(checkpoint_error)
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
