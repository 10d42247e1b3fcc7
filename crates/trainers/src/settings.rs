//! How a [`crate::Trainer`] trains, apart from the model, the method and the budgets: epochs, batches, the optimizer
//! and its schedule, augmentation, validation and the seed.

use burn::config::Config;
use tailguard_longtail::augment::AugmentPolicy;

use crate::averaging::WeightAverageConfig;
use crate::error::InvalidSetting;
use crate::optimizer::SgdSettings;
use crate::schedule::LrSchedule;

/// The training loop's settings. The defaults are the papers': batch 128, SGD with momentum 0.9 and weight decay
/// 5e-4, crop-and-flip augmentation, shuffled batches.
#[derive(Config, Debug, PartialEq)]
pub struct TrainerConfig {
    /// Epochs of the run.
    pub epochs: usize,
    /// Base learning rate.
    pub lr: f64,
    /// How the learning rate changes per epoch.
    #[config(default = "LrSchedule::Constant")]
    pub schedule: LrSchedule,
    /// Images per batch.
    #[config(default = 128)]
    pub batch_size: usize,
    /// SGD's momentum and weight decay.
    #[config(default = "SgdSettings::default()")]
    pub sgd: SgdSettings,
    /// Random crop (padding 4) and horizontal flip.
    #[config(default = true)]
    pub augment: bool,
    /// A policy before crop and flip (AutoAugment, RandAugment); it applies even without crop and flip.
    #[config(default = "AugmentPolicy::None")]
    pub augment_policy: AugmentPolicy,
    /// Draw batches class-balanced instead of shuffling.
    #[config(default = false)]
    pub class_balanced: bool,
    /// Seeds data order, augmentation and attack starts (model initialisation is the caller's).
    #[config(default = 0)]
    pub seed: u64,
    /// Validation on the held-out split after epochs (best-checkpoint selection); `None` disables it.
    #[config(default = "None")]
    pub validation: Option<ValidationConfig>,
    /// How BatchNorm normalises while the training attack runs.
    #[config(default = "AttackBatchNorm::Running")]
    pub attack_batch_norm: AttackBatchNorm,
    /// RobustLT's logging forward passes after every step (see [`StepOptions::logging_forwards`]).
    #[config(default = false)]
    pub logging_forwards: bool,
    /// An exponential moving average of the weights, taken after every step, saved with every checkpoint and used
    /// for validation; `None` keeps none.
    #[config(default = "None")]
    pub weight_average: Option<WeightAverageConfig>,
    /// Label smoothing of the methods' cross-entropy terms (see [`crate::StepInput::label_smoothing`]); 0: none.
    #[config(default = 0.0)]
    pub label_smoothing: f64,
}

/// How BatchNorm normalises while a training attack runs; it never moves the running statistics either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackBatchNorm {
    /// With the running statistics, as at test time (PyTorch's `model.eval()`): the official code of TRADES,
    /// AT-BSL, RoBal, REAT and TAET.
    #[default]
    Running,
    /// With the statistics of the batch being attacked (`model.train()` with `track_running_stats` off): RobustLT's
    /// port for every base method, and its PGD-AT.
    Batch,
}

impl AttackBatchNorm {
    /// The forward mode of the attacked model.
    pub fn mode(self) -> tailguard_models::Mode {
        match self {
            AttackBatchNorm::Running => tailguard_models::Mode::Inference,
            AttackBatchNorm::Batch => tailguard_models::Mode::BatchStatistics,
        }
    }
}

/// How the shared step runs, apart from the method (from [`crate::TrainerConfig::step_options`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOptions {
    /// How BatchNorm normalises while the attack runs.
    pub attack_batch_norm: AttackBatchNorm,
    /// RobustLT's port: after the optimizer step, the adversarial and the clean batch go through the updated model
    /// in training mode without gradients (for its accuracy log), which moves BatchNorm's running statistics twice
    /// more; the method's statistics and the epoch's accuracies then see these logits, as the port's do.
    pub logging_forwards: bool,
}

/// Validation during training: balanced clean and PGD accuracy on the validation split.
#[derive(Config, Debug, PartialEq)]
pub struct ValidationConfig {
    /// Budget of the validation attack (usually the training budget).
    pub eps: f64,
    /// Validate every this many epochs (and after the last).
    #[config(default = 1)]
    pub every: usize,
    /// PGD steps (step 2/255, uniform start).
    #[config(default = 10)]
    pub attack_steps: usize,
}

impl TrainerConfig {
    /// Rejects settings that cannot train.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.epochs == 0 {
            return Err(InvalidSetting::new("epochs", "must be at least 1", self.epochs));
        }
        if self.batch_size == 0 {
            return Err(InvalidSetting::new("batch_size", "must be at least 1", self.batch_size));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(InvalidSetting::new("lr", "must be positive", self.lr));
        }
        self.schedule.validate(self.epochs)?;
        self.sgd.validate()?;
        if let Some(average) = &self.weight_average {
            average.validate()?;
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(InvalidSetting::new(
                "label_smoothing",
                "must lie in [0, 1)",
                self.label_smoothing,
            ));
        }
        if let Some(v) = &self.validation {
            if v.every == 0 {
                return Err(InvalidSetting::new("validation.every", "must be at least 1", v.every));
            }
            if !(0.0..=1.0).contains(&v.eps) {
                return Err(InvalidSetting::new("validation.eps", "must lie in [0, 1]", v.eps));
            }
        }
        Ok(())
    }

    /// How each step runs, apart from the method.
    pub fn step_options(&self) -> StepOptions {
        StepOptions {
            attack_batch_norm: self.attack_batch_norm,
            logging_forwards: self.logging_forwards,
        }
    }

    /// The learning rate of `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.schedule.lr(self.lr, epoch, self.epochs)
    }
}
