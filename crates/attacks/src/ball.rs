//! The threat models: perturbations of L-inf norm at most `eps` (at most `eps` per pixel) or of L2 norm at most
//! `eps`, images in [0, 1].

use burn::tensor::{Tensor, backend::Backend};

/// The norm that bounds a perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// max |delta| <= eps (RobustBench's Linf leaderboards, eps 8/255 on CIFAR).
    #[default]
    Linf,
    /// sqrt(sum delta^2) <= eps (RobustBench's L2 leaderboard, eps 0.5 on CIFAR).
    L2,
}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        })
    }
}

impl std::str::FromStr for Norm {
    type Err = crate::AttackConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linf" => Ok(Norm::Linf),
            "l2" => Ok(Norm::L2),
            _ => Err(crate::AttackConfigError::UnknownNorm(s.to_string())),
        }
    }
}

/// Per-sample L2 norm of a batch, shaped (N, 1, 1, 1) to broadcast.
pub fn l2_norm<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.powi_scalar(2)
        .reshape([n, c * h * w])
        .sum_dim(1)
        .sqrt()
        .reshape([n, 1, 1, 1])
}

/// `x / (|x|_2 + 1e-12)` per sample, as the reference AutoAttack normalises (a zero direction stays zero).
pub fn l2_normalize<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let norm = l2_norm(x.clone());
    x / norm.add_scalar(1e-12)
}

/// The set `{x' : |x' - x| <= eps, 0 <= x' <= 1}` around each image of a batch, in the L-inf or the L2 norm, with a
/// per-sample `eps`.
#[derive(Debug, Clone)]
pub struct Ball<B: Backend> {
    /// Clean images (N, C, H, W).
    pub center: Tensor<B, 4>,
    /// Budget per sample, shaped (N, 1, 1, 1) to broadcast over pixels.
    pub eps: Tensor<B, 4>,
    /// The norm.
    pub norm: Norm,
    /// L-inf: the bounds per pixel, [0, 1] folded in; L2: the box [0, 1] alone is applied after scaling.
    lower: Tensor<B, 4>,
    upper: Tensor<B, 4>,
}

impl<B: Backend> Ball<B> {
    /// An L-inf ball of radius `eps[i]` around image `i`. `eps`: (N).
    pub fn new(center: Tensor<B, 4>, eps: Tensor<B, 1>) -> Self {
        Self::with_norm(center, eps, Norm::Linf)
    }

    /// A ball of `norm` and radius `eps[i]` around image `i`. `eps`: (N).
    pub fn with_norm(center: Tensor<B, 4>, eps: Tensor<B, 1>, norm: Norm) -> Self {
        let [n, c, h, w] = center.dims();
        let eps = eps.reshape([n, 1, 1, 1]);
        let (lower, upper) = match norm {
            Norm::Linf => {
                let spread = eps.clone().expand([n, c, h, w]);
                // The box [0, 1] is folded into the bounds once, so a projection is two element-wise operations.
                (
                    (center.clone() - spread.clone()).clamp_min(0.0),
                    (center.clone() + spread).clamp_max(1.0),
                )
            }
            Norm::L2 => (center.zeros_like(), center.ones_like()),
        };
        Self {
            center,
            eps,
            norm,
            lower,
            upper,
        }
    }

    /// The same L-inf radius for every sample.
    pub fn uniform(center: Tensor<B, 4>, eps: f64) -> Self {
        Self::uniform_with_norm(center, eps, Norm::Linf)
    }

    /// The same radius of `norm` for every sample.
    pub fn uniform_with_norm(center: Tensor<B, 4>, eps: f64, norm: Norm) -> Self {
        let n = center.dims()[0];
        let eps = Tensor::full([n], eps, &center.device());
        Self::with_norm(center, eps, norm)
    }

    /// Into the ball and [0, 1]. L-inf: the closest point (per pixel, clamp into [x - eps, x + eps] and [0, 1]).
    /// L2: the reference AutoAttack's operation, the perturbation scaled down to length eps where longer, then
    /// clamped to [0, 1] (not the exact projection onto the intersection, which no reference computes).
    pub fn project(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.norm {
            Norm::Linf => x.max_pair(self.lower.clone()).min_pair(self.upper.clone()),
            Norm::L2 => {
                let delta = x - self.center.clone();
                let length = l2_norm(delta.clone()).min_pair(self.eps.clone());
                (self.center.clone() + l2_normalize(delta) * length).clamp(0.0, 1.0)
            }
        }
    }

    /// The direction of steepest ascent of a unit step for gradient `grad`: its sign (L-inf), or the gradient
    /// normalised to length 1 per sample (L2).
    pub fn steepest(&self, grad: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.norm {
            Norm::Linf => grad.sign(),
            Norm::L2 => l2_normalize(grad),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.center.dims()[0]
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the samples at `indices` (used to attack only the points still classified correctly).
    pub fn select(&self, indices: Tensor<B, 1, burn::tensor::Int>) -> Self {
        Self {
            center: self.center.clone().select(0, indices.clone()),
            eps: self.eps.clone().select(0, indices.clone()),
            norm: self.norm,
            lower: self.lower.clone().select(0, indices.clone()),
            upper: self.upper.clone().select(0, indices),
        }
    }
}

/// A budget written as a fraction (`8/255`) or a number (`0.031`), checked to lie in [0, 1] (an L-inf budget).
pub fn parse_eps(text: &str) -> Result<f64, crate::AttackConfigError> {
    let value = parse_fraction(text)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(crate::AttackConfigError::BudgetRange(value));
    }
    Ok(value)
}

/// A budget written as a fraction or a number, checked to be finite and non-negative (an L2 budget may exceed 1).
pub fn parse_budget(text: &str) -> Result<f64, crate::AttackConfigError> {
    let value = parse_fraction(text)?;
    if !(value >= 0.0 && value.is_finite()) {
        return Err(crate::AttackConfigError::Negative { setting: "eps", value });
    }
    Ok(value)
}

/// `a/b` or a number.
fn parse_fraction(text: &str) -> Result<f64, crate::AttackConfigError> {
    let number = |part: &str| {
        part.trim()
            .parse::<f64>()
            .map_err(|_| crate::AttackConfigError::NotANumber(text.to_string()))
    };
    let value = match text.split_once('/') {
        Some((numerator, denominator)) => {
            let d = number(denominator)?;
            if d == 0.0 {
                return Err(crate::AttackConfigError::DivisionByZero(text.to_string()));
            }
            number(numerator)? / d
        }
        None => number(text)?,
    };
    Ok(value)
}
