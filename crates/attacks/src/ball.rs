//! The L-inf threat model: perturbations of at most `eps` per pixel, images in [0, 1].

use burn::tensor::{Tensor, backend::Backend};

/// The set `{x' : |x' - x|_inf <= eps, 0 <= x' <= 1}` around each image of a batch, with a per-sample `eps`.
#[derive(Debug, Clone)]
pub struct LinfBall<B: Backend> {
    /// Clean images (N, C, H, W).
    pub center: Tensor<B, 4>,
    /// Budget per sample, shaped (N, 1, 1, 1) to broadcast over pixels.
    pub eps: Tensor<B, 4>,
    lower: Tensor<B, 4>,
    upper: Tensor<B, 4>,
}

impl<B: Backend> LinfBall<B> {
    /// A ball of radius `eps[i]` around image `i`. `eps`: (N).
    pub fn new(center: Tensor<B, 4>, eps: Tensor<B, 1>) -> Self {
        let [n, c, h, w] = center.dims();
        let eps = eps.reshape([n, 1, 1, 1]);
        let spread = eps.clone().expand([n, c, h, w]);
        // The box [0, 1] is folded into the bounds once, so a projection is two element-wise operations.
        let lower = (center.clone() - spread.clone()).clamp_min(0.0);
        let upper = (center.clone() + spread).clamp_max(1.0);
        Self {
            center,
            eps,
            lower,
            upper,
        }
    }

    /// The same radius for every sample.
    pub fn uniform(center: Tensor<B, 4>, eps: f64) -> Self {
        let n = center.dims()[0];
        let eps = Tensor::full([n], eps, &center.device());
        Self::new(center, eps)
    }

    /// Closest point of the ball (per pixel: clamp into [x - eps, x + eps] and [0, 1]).
    pub fn project(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        x.max_pair(self.lower.clone()).min_pair(self.upper.clone())
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
            lower: self.lower.clone().select(0, indices.clone()),
            upper: self.upper.clone().select(0, indices),
        }
    }
}

/// A budget written as a fraction (`8/255`) or a number (`0.031`), checked to lie in [0, 1].
pub fn parse_eps(text: &str) -> Result<f64, crate::AttackConfigError> {
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
    if !(0.0..=1.0).contains(&value) {
        return Err(crate::AttackConfigError::BudgetRange(value));
    }
    Ok(value)
}
