//! Runs described by a [`TrainConfig`] file: what `tailguard train` starts, resumes and plans. The configuration is
//! written to `config.toml` and stored in every checkpoint; on resume the stored one is the truth, so an edited
//! `config.toml` is refused unless it changes only [`RESUME_SAFE_KEYS`].

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde_json::json;
use tailguard_models::{Model, ModelConfig};

use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::resume_state::changed_keys;
use crate::run::{CONFIG_FILE, LAST, Opening, RESUME_SAFE_KEYS, Run, RunDescription};
use crate::trainer::Trainer;

impl TrainConfig {
    /// What a run of this configuration records about itself.
    fn description(&self, model: ModelConfig) -> Result<RunDescription, TrainError> {
        Ok(RunDescription {
            model: Some(model),
            config: json!(self),
            config_file: Some(self.to_toml()),
        })
    }

    /// Starts a run of this configuration in `dir` (see [`Opening::Replace`] for `force`). The folder is claimed
    /// before the data is loaded, so a refused folder costs nothing.
    pub fn start_run<B: AutodiffBackend>(
        &self,
        dir: &Path,
        device: &B::Device,
        force: bool,
    ) -> Result<Run<B, Model<B>>, TrainError> {
        let opening = if force { Opening::Replace } else { Opening::Start };
        Run::open(dir, opening, |_| {
            let data = self.load_data()?;
            let model = self.model_config_for(&data)?;
            Ok((self.trainer::<B>(&data, device)?, self.description(model)?))
        })
    }

    /// A trainer of this configuration on each of `devices`, the data loaded once: the other devices of a
    /// data-parallel run (see [`crate::parallel`]).
    pub fn trainers<B: AutodiffBackend>(&self, devices: &[B::Device]) -> Result<Vec<Trainer<B, Model<B>>>, TrainError> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let data = self.load_data()?;
        devices.iter().map(|device| self.trainer::<B>(&data, device)).collect()
    }

    /// Continues the run in `dir` with the configuration stored in its last checkpoint; `config.toml` may differ
    /// from it only in [`RESUME_SAFE_KEYS`].
    pub fn resume_run<B: AutodiffBackend>(dir: &Path, device: &B::Device) -> Result<Run<B, Model<B>>, TrainError> {
        let config_path = dir.join(CONFIG_FILE);
        if dir.is_dir() && !config_path.exists() {
            return Err(TrainError::NotARun {
                dir: dir.to_path_buf(),
                reason: format!("is not a tailguard run: it has no {CONFIG_FILE}"),
            });
        }
        Run::open(dir, Opening::Resume, |meta| {
            let meta = meta.expect("a resumed run has a checkpoint");
            let checkpoint_meta = dir.join(LAST).join(tailguard_models::checkpoint::META_FILE);
            let stored: TrainConfig =
                serde_json::from_value(meta.training["config"].clone()).map_err(|e| TrainError::Damaged {
                    path: checkpoint_meta.clone(),
                    reason: format!("it holds no readable training configuration: {e}"),
                })?;
            let edited = TrainConfig::load(&config_path, &[])?;
            let changes: Vec<String> = changed_keys(&json!(stored), &json!(edited))
                .into_iter()
                .filter(|(key, _)| !RESUME_SAFE_KEYS.contains(&key.as_str()))
                .map(|(_, change)| change)
                .collect();
            if !changes.is_empty() {
                return Err(TrainError::Edited {
                    path: config_path.clone(),
                    changes: changes.join("; "),
                    allowed: RESUME_SAFE_KEYS.join(", "),
                });
            }
            let mut config = stored;
            config.optim.epochs = edited.optim.epochs;
            config.validate()?;
            let data = config.load_data()?;
            let model = meta
                .model_config(&dir.join(LAST))
                .map_err(|e| TrainError::Damaged {
                    path: checkpoint_meta.clone(),
                    reason: e.to_string(),
                })?
                .clone();
            Ok((
                config.resumed_trainer::<B>(&data, &model, device)?,
                config.description(model)?,
            ))
        })
    }

    /// What `tailguard train --dry-run` prints: the resolved configuration, the per-class training counts, the
    /// stage of every epoch, and for RobustLT the per-class budgets (in 1/255, at full intensity) and the warm-up
    /// intensities.
    pub fn plan<B: AutodiffBackend>(&self) -> Result<serde_json::Value, TrainError> {
        let data = self.load_data()?;
        // The network, so that a `model.init_from` that does not fit is refused here as training would refuse it.
        let model = self.model_config_for(&data)?;
        let method = self.method::<B, Model<B>>(&data.counts)?;
        let trainer = self.trainer_config();
        let epochs = trainer.epochs;
        let stages: Vec<&str> = (0..epochs).map(|e| method.stage(e)).collect();
        let lrs: Vec<f64> = (0..epochs).map(|e| trainer.lr_at(e)).collect();
        let mut plan = json!({
            "config": self,
            "method": method.name(),
            "classes": data.classes,
            "train_counts": data.counts,
            "train_images": data.train.len(),
            "validation_images": data.validation.as_ref().map_or(0, |v| v.len()),
            "stages": stages,
            "model": model,
            "lr": lrs,
        });
        if self.robustlt.is_some() {
            let policy = self.budget_policy(&data.counts);
            plan["eps_per_class"] = json!(policy.full_budgets().iter().map(|e| e * 255.0).collect::<Vec<_>>());
            plan["intensity"] = json!((0..epochs).map(|e| policy.intensity(e)).collect::<Vec<_>>());
        }
        Ok(plan)
    }
}
