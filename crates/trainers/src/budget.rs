//! Perturbation budgets per class and epoch: uniform, or RobustLT's class-wise budgets (CPB) with the
//! adversarial-intensity warm-up (AIW). One mechanism for every method: the method asks the policy for the budget of
//! each sample and scales its PGD step by `eps_i / eps`.

/// RobustLT's settings (Zhang et al., CVPR 2026).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustLtConfig {
    /// CPB strength: the head class gets `(1 - alpha) eps`; 0 gives uniform budgets. Papers: 0.3 (CIFAR-10-LT),
    /// 0.4 (CIFAR-100-LT).
    pub alpha: f64,
    /// AIW length as a fraction of the epochs: intensity `min((e - 1) / (beta T), 1)` for 1-based epoch e; 0 turns
    /// the warm-up off. Papers: 0.8 (CIFAR-10-LT; 1.0 with TAET), 0.6 (CIFAR-100-LT).
    pub beta: f64,
    /// The port's logging forward passes after every step (they move BatchNorm's running statistics; see
    /// [`crate::StepOptions::logging_forwards`]). Official: true.
    #[serde(default = "logging_forwards_default")]
    pub logging_forwards: bool,
}

fn logging_forwards_default() -> bool {
    true
}

impl RobustLtConfig {
    /// CPB strength `alpha` and AIW length `beta`, with the port's logging forwards.
    pub fn new(alpha: f64, beta: f64) -> Self {
        Self {
            alpha,
            beta,
            logging_forwards: true,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), crate::error::InvalidSetting> {
        use crate::error::InvalidSetting;
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(InvalidSetting::new("robustlt.alpha", "must be in [0, 1]", self.alpha));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(InvalidSetting::new("robustlt.beta", "must be >= 0", self.beta));
        }
        Ok(())
    }
}

/// How large each class's perturbation budget is.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetPolicy {
    /// Budget of each class at full intensity.
    full: Vec<f64>,
    /// RobustLT's warm-up, when enabled: (beta, total epochs).
    warm_up: Option<(f64, usize)>,
}

impl BudgetPolicy {
    /// The same budget `eps` for every class and epoch.
    pub fn uniform(eps: f64, num_classes: usize) -> Self {
        Self {
            full: vec![eps; num_classes],
            warm_up: None,
        }
    }

    /// RobustLT's class-wise budgets from the training counts:
    /// `eps_c = eps ((1 - alpha) + tau sqrt(log(n_max / n_c)))`, `tau = alpha / sum_c (n_c / N) sqrt(log(n_max / n_c))`,
    /// so the sample-weighted mean budget stays `eps`. With a balanced training set (tau undefined) every class gets
    /// `eps`.
    pub fn robust_lt(eps: f64, train_counts: &[usize], config: RobustLtConfig, epochs: usize) -> Self {
        let n_max = train_counts.iter().copied().max().unwrap_or(0) as f64;
        let total: f64 = train_counts.iter().sum::<usize>() as f64;
        let rarity: Vec<f64> = train_counts
            .iter()
            .map(|&n| if n == 0 { 0.0 } else { (n_max / n as f64).ln().sqrt() })
            .collect();
        let weighted: f64 = train_counts
            .iter()
            .zip(&rarity)
            .map(|(&n, r)| n as f64 / total * r)
            .sum();
        let full = if weighted > 0.0 {
            let tau = config.alpha / weighted;
            rarity.iter().map(|r| eps * ((1.0 - config.alpha) + tau * r)).collect()
        } else {
            vec![eps; train_counts.len()]
        };
        Self {
            full,
            warm_up: (config.beta > 0.0).then_some((config.beta, epochs)),
        }
    }

    /// Intensity in epoch `epoch` (0-based): `min(epoch / (beta T), 1)`, i.e. RobustLT's `(e - 1) / (beta T)` for the
    /// 1-based epoch e. The first epoch has intensity 0 (natural training).
    pub fn intensity(&self, epoch: usize) -> f64 {
        match self.warm_up {
            Some((beta, epochs)) => (epoch as f64 / (beta * epochs as f64)).min(1.0),
            None => 1.0,
        }
    }

    /// Budget per class at full intensity.
    pub fn full_budgets(&self) -> &[f64] {
        &self.full
    }

    /// Budget per class in `epoch`.
    pub fn budgets(&self, epoch: usize) -> Vec<f64> {
        let intensity = self.intensity(epoch);
        self.full.iter().map(|e| e * intensity).collect()
    }

    /// Budget of each sample of a batch, by its true label.
    pub fn for_labels(&self, epoch: usize, labels: &[usize]) -> Vec<f32> {
        let budgets = self.budgets(epoch);
        labels.iter().map(|&l| budgets[l] as f32).collect()
    }

    /// Number of classes the policy covers.
    pub fn num_classes(&self) -> usize {
        self.full.len()
    }

    /// Whether every class has the same budget in every epoch.
    pub fn is_uniform(&self) -> bool {
        self.warm_up.is_none() && self.full.windows(2).all(|w| w[0] == w[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robustlt_budgets_for_cifar10_lt_rho_50() {
        let counts =
            tailguard_longtail::class_sizes(tailguard_longtail::ImbalanceProfile::Exp, 5000, 10, 50.0).unwrap();
        assert_eq!(counts, vec![5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]);
        let policy = BudgetPolicy::robust_lt(8.0 / 255.0, &counts, RobustLtConfig::new(0.3, 0.8), 100);
        let in_255: Vec<f64> = policy.full_budgets().iter().map(|e| e * 255.0).collect();
        let expected = [5.60, 8.03, 9.03, 9.80, 10.45, 11.03, 11.54, 12.02, 12.46, 12.88];
        for (got, want) in in_255.iter().zip(expected) {
            assert!((got - want).abs() < 0.01, "{in_255:?}");
        }
        // The sample-weighted mean budget is eps.
        let total: usize = counts.iter().sum();
        let mean: f64 = counts
            .iter()
            .zip(policy.full_budgets())
            .map(|(&n, e)| n as f64 * e)
            .sum::<f64>()
            / total as f64;
        assert!((mean - 8.0 / 255.0).abs() < 1e-12);
    }

    #[test]
    fn warm_up_ramps_linearly_then_holds() {
        let policy = BudgetPolicy::robust_lt(0.1, &[10, 5], RobustLtConfig::new(0.0, 0.8), 10);
        let ramp: Vec<f64> = (0..10).map(|e| policy.intensity(e)).collect();
        let expected = [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.0];
        for (got, want) in ramp.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{ramp:?}");
        }
        assert_eq!(policy.budgets(0), vec![0.0, 0.0]);
        assert!((policy.budgets(4)[1] - 0.05).abs() < 1e-12);
        let flat = BudgetPolicy::robust_lt(0.1, &[10, 5], RobustLtConfig::new(0.3, 0.0), 10);
        assert_eq!(flat.intensity(0), 1.0);
    }

    #[test]
    fn uniform_and_balanced_cases() {
        let uniform = BudgetPolicy::uniform(0.03, 3);
        assert!(uniform.is_uniform());
        assert_eq!(uniform.for_labels(7, &[2, 0]), vec![0.03f32, 0.03]);
        let balanced = BudgetPolicy::robust_lt(0.03, &[10, 10], RobustLtConfig::new(0.3, 0.0), 5);
        assert_eq!(balanced.full_budgets(), &[0.03, 0.03]);
    }
}
