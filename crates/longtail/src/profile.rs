//! Per-class sizes of a long-tailed split.

use crate::error::{DataError, DataResult};

/// How class sizes fall from the head class to the tail class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImbalanceProfile {
    /// `n_c = floor(n_max * rho^(-c/(C-1)))` (Cui et al. 2019; used by every paper tailguard implements).
    #[default]
    Exp,
    /// The first `floor(C/2)` classes keep `n_max`, the others `floor(n_max / rho)` (Cao et al. 2019).
    Step,
}

impl std::fmt::Display for ImbalanceProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Exp => "exp",
            Self::Step => "step",
        })
    }
}

impl std::str::FromStr for ImbalanceProfile {
    type Err = DataError;

    fn from_str(s: &str) -> DataResult<Self> {
        match s {
            "exp" | "exponential" => Ok(Self::Exp),
            "step" => Ok(Self::Step),
            other => Err(DataError::invalid(format!(
                "unknown imbalance profile '{other}' (expected exp or step)"
            ))),
        }
    }
}

/// Class sizes for `num_classes` classes whose largest has `n_max` images and whose imbalance ratio
/// (largest / smallest) is `rho`.
///
/// The arithmetic follows the reference Python, `int(n_max * (1/rho) ** (c / (C - 1)))`, in f64, so the counts
/// agree with published splits (CIFAR-10, rho 100: 5000 2997 1796 1077 645 387 232 139 83 50).
pub fn class_sizes(profile: ImbalanceProfile, n_max: usize, num_classes: usize, rho: f64) -> DataResult<Vec<usize>> {
    if !rho.is_finite() || rho < 1.0 {
        return Err(DataError::invalid(format!(
            "imbalance ratio must be a number >= 1 (largest class / smallest class), got {rho}"
        )));
    }
    if num_classes == 0 {
        return Err(DataError::invalid("a long-tailed split needs at least one class"));
    }
    if n_max == 0 {
        return Err(DataError::invalid("the largest class must hold at least one image"));
    }
    let factor = 1.0 / rho;
    let sizes: Vec<usize> = (0..num_classes)
        .map(|c| {
            let share = match profile {
                ImbalanceProfile::Exp if num_classes == 1 => 1.0,
                ImbalanceProfile::Exp => factor.powf(c as f64 / (num_classes - 1) as f64),
                ImbalanceProfile::Step if c < num_classes / 2 => 1.0,
                ImbalanceProfile::Step => factor,
            };
            (n_max as f64 * share).floor() as usize
        })
        .collect();
    if let Some(c) = sizes.iter().position(|&n| n == 0) {
        return Err(DataError::invalid(format!(
            "imbalance ratio {rho} leaves class {c} with no image (largest class has {n_max})"
        )));
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar10_rho_100_matches_published_counts() {
        let sizes = class_sizes(ImbalanceProfile::Exp, 5000, 10, 100.0).unwrap();
        assert_eq!(sizes, vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
        assert_eq!(sizes.iter().sum::<usize>(), 12406);
    }

    #[test]
    fn published_totals() {
        // CIFAR-10-LT rho 50 and CIFAR-100-LT rho 10 totals used by RobustLT; TAET's long-tailed test split rho 10.
        let total = |n, c, rho| {
            class_sizes(ImbalanceProfile::Exp, n, c, rho)
                .unwrap()
                .iter()
                .sum::<usize>()
        };
        assert_eq!(total(5000, 10, 50.0), 13996);
        assert_eq!(total(500, 100, 10.0), 19573);
        assert_eq!(total(1000, 10, 10.0), 4084);
        assert_eq!(total(1000, 10, 100.0), 2478);
    }

    #[test]
    fn step_profile_halves_the_classes() {
        let sizes = class_sizes(ImbalanceProfile::Step, 100, 5, 10.0).unwrap();
        assert_eq!(sizes, vec![100, 100, 10, 10, 10]);
    }

    #[test]
    fn impossible_values_are_errors() {
        assert!(
            class_sizes(ImbalanceProfile::Exp, 100, 10, 0.5)
                .unwrap_err()
                .to_string()
                .contains(">= 1")
        );
        assert!(class_sizes(ImbalanceProfile::Exp, 100, 10, f64::NAN).is_err());
        assert!(
            class_sizes(ImbalanceProfile::Exp, 10, 10, 100.0)
                .unwrap_err()
                .to_string()
                .contains("no image")
        );
        assert!(class_sizes(ImbalanceProfile::Exp, 10, 0, 2.0).is_err());
        assert_eq!(class_sizes(ImbalanceProfile::Exp, 7, 1, 3.0).unwrap(), vec![7]);
    }
}
