//! Every numeric key of a configuration with the values it may take, checked when the configuration is read: so
//! `--dry-run` refuses what training would, no NaN or infinity reaches Burn, and no size read from a file or a flag
//! is allocated before it is bounded.

use tailguard_models::size::{MAX_CLASSES, MAX_IMAGE_SIDE};

use super::TrainConfig;
use crate::domain::at_most;
use crate::error::ConfigError;

/// The most epochs a run may plan (a plan is built per epoch; the papers train 100 to 200).
pub const MAX_EPOCHS: usize = 100_000;
/// The largest batch.
pub const MAX_BATCH_SIZE: usize = 65_536;
/// The most steps of an attack (the field's largest, PGD-1000 sanity checks, fit easily).
pub const MAX_ATTACK_STEPS: usize = 100_000;
/// The most images per class a split may ask for.
pub const MAX_IMAGES_PER_CLASS: usize = 100_000_000;

/// Checks every size against its bound and every real number against its domain, naming the key.
pub(super) fn check(config: &TrainConfig) -> Result<(), ConfigError> {
    let d = &config.data;
    if d.data_dir.as_os_str().is_empty() {
        return Err(crate::error::invalid(
            "data.data_dir is empty: name the dataset's folder or archive",
        ));
    }
    if let Some(classes) = d.classes {
        at_most("data.classes", classes, MAX_CLASSES)?;
    }
    if let Some(size) = d.image_size {
        at_most("data.image_size", size, MAX_IMAGE_SIDE)?;
    }
    if let Some(n_max) = d.long_tail.n_max {
        at_most("data.n_max", n_max, MAX_IMAGES_PER_CLASS)?;
    }
    at_most("optim.epochs", config.optim.epochs, MAX_EPOCHS)?;
    at_most("optim.batch_size", config.optim.batch_size, MAX_BATCH_SIZE)?;
    at_most("attack.steps", config.attack.steps, MAX_ATTACK_STEPS)?;
    at_most(
        "validation.attack_steps",
        config.validation.attack_steps,
        MAX_ATTACK_STEPS,
    )?;
    if !(0.0..1.0).contains(&config.label_smoothing) {
        return Err(crate::error::invalid(format!(
            "method.label_smoothing must lie in [0, 1), got {}",
            config.label_smoothing
        )));
    }
    if let Some(ema) = &config.ema
        && !(0.0..1.0).contains(&ema.decay)
    {
        return Err(crate::error::invalid(format!(
            "ema.decay must lie in [0, 1), got {}",
            ema.decay
        )));
    }
    config.method.validate()
}
