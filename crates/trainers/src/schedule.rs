//! Learning-rate schedules, stepped once per epoch as the papers do.

use crate::error::InvalidSetting;

/// How the learning rate changes from epoch to epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Multiply by `gamma` at each milestone epoch (PyTorch `MultiStepLR`): epochs are 0-based, so milestones
    /// [75, 90] give the base rate for epochs 0-74.
    MultiStep {
        /// 0-based epochs at which the rate is multiplied by `gamma`, increasing.
        milestones: Vec<usize>,
        /// The factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over all epochs.
    Cosine {
        /// The final rate.
        min_lr: f64,
    },
    /// The base rate throughout.
    Constant,
}

impl LrSchedule {
    /// The learning rate of `epoch` (0-based) of `epochs`.
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            LrSchedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32)
            }
            LrSchedule::Cosine { min_lr } => {
                let progress = epoch as f64 / epochs.max(1) as f64;
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::Constant => base,
        }
    }

    /// Checks milestones and factors.
    /// Milestones at or past the last epoch are allowed (they never trigger), so a shortened run of a paper's
    /// configuration (`--set optim.epochs=5`) stays valid.
    pub fn validate(&self, _epochs: usize) -> Result<(), InvalidSetting> {
        match self {
            LrSchedule::MultiStep { milestones, gamma } => {
                if !(*gamma > 0.0 && gamma.is_finite()) {
                    return Err(InvalidSetting::new("schedule.gamma", "must be positive", gamma));
                }
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(InvalidSetting::new(
                        "schedule.milestones",
                        "must increase",
                        format!("{milestones:?}"),
                    ));
                }
                Ok(())
            }
            LrSchedule::Cosine { min_lr } if !(*min_lr >= 0.0 && min_lr.is_finite()) => {
                Err(InvalidSetting::new("schedule.min_lr", "must be >= 0", min_lr))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_like_pytorch() {
        let s = LrSchedule::MultiStep {
            milestones: vec![75, 90],
            gamma: 0.1,
        };
        assert_eq!(s.lr(0.1, 0, 100), 0.1);
        assert_eq!(s.lr(0.1, 74, 100), 0.1);
        assert!((s.lr(0.1, 75, 100) - 0.01).abs() < 1e-15);
        assert!((s.lr(0.1, 99, 100) - 0.001).abs() < 1e-15);
        assert!(s.validate(100).is_ok());
        assert!(s.validate(80).is_ok());
        let unordered = LrSchedule::MultiStep {
            milestones: vec![90, 75],
            gamma: 0.1,
        };
        assert!(unordered.validate(100).unwrap_err().to_string().contains("increase"));
    }

    #[test]
    fn cosine_from_base_to_min() {
        let s = LrSchedule::Cosine { min_lr: 0.0 };
        assert_eq!(s.lr(0.2, 0, 10), 0.2);
        assert!((s.lr(0.2, 5, 10) - 0.1).abs() < 1e-12);
        assert!(s.lr(0.2, 9, 10) < 0.01);
    }
}
