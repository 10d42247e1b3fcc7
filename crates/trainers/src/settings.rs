//! How a [`crate::Trainer`] trains, apart from the model, the method and the budgets: epochs, batches, the optimizer
//! and its schedule, augmentation, validation and the seed.

use burn::config::Config;

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
    /// Draw batches class-balanced instead of shuffling.
    #[config(default = false)]
    pub class_balanced: bool,
    /// Seeds data order, augmentation and attack starts (model initialisation is the caller's).
    #[config(default = 0)]
    pub seed: u64,
    /// Validation on the held-out split after epochs (best-checkpoint selection); `None` disables it.
    #[config(default = "None")]
    pub validation: Option<ValidationConfig>,
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

    /// The learning rate of `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.schedule.lr(self.lr, epoch, self.epochs)
    }
}
