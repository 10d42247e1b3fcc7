//! Post-hoc logit adjustment at inference, `s z - tau log(pi)`: RoBal-N's test-time correction (Wu et al., CVPR
//! 2021: tau_p 0.1 on the cosine logits at scale 10), and Menon et al.'s logit adjustment for any classifier.
//!
//! The adjusted model is what gets attacked: attacks see the logits the deployed classifier predicts from.

use burn::config::Config;
use burn::module::{Module, ModuleDisplay};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::classifier::Classifier;
use crate::error::ModelConfigError;
use crate::mode::Mode;

/// How to adjust the logits: `scale * z - tau * log(prior)`.
#[derive(Config, Debug, PartialEq)]
pub struct LogitAdjustmentConfig {
    /// Weight of the log prior (RoBal-N's tau_p).
    pub tau: f64,
    /// Factor on the model's logits first (RoBal's cosine head outputs scale-1 logits; its loss applies s = 10).
    #[config(default = 1.0)]
    pub scale: f64,
}

impl LogitAdjustmentConfig {
    /// RoBal-N's inference: tau_p 0.1 on the cosine logits at scale 10.
    pub fn robal_n() -> Self {
        Self::new(0.1).with_scale(10.0)
    }

    /// Wraps `model`; `train_counts` (images per class in training) give the prior pi_c = n_c / N.
    pub fn init<B: Backend, M: Classifier<B>>(
        &self,
        model: M,
        train_counts: &[usize],
        device: &B::Device,
    ) -> Result<LogitAdjusted<B, M>, ModelConfigError> {
        let bad = |message: String| Err(ModelConfigError::LogitAdjustment(message));
        if !(self.tau.is_finite() && self.scale.is_finite() && self.scale > 0.0) {
            return bad(format!(
                "tau ({}) must be finite and scale ({}) positive",
                self.tau, self.scale
            ));
        }
        if train_counts.len() != model.num_classes() {
            return bad(format!(
                "{} class counts for a model of {} classes",
                train_counts.len(),
                model.num_classes()
            ));
        }
        if let Some(c) = train_counts.iter().position(|&n| n == 0) {
            return bad(format!("class {c} has no training images, so its prior is log(0)"));
        }
        let total: usize = train_counts.iter().sum();
        let offset: Vec<f32> = train_counts
            .iter()
            .map(|&n| (-self.tau * (n as f64 / total as f64).ln()) as f32)
            .collect();
        let classes = offset.len();
        Ok(LogitAdjusted {
            model,
            offset: Tensor::from_data(TensorData::new(offset, [1, classes]), device),
            scale: self.scale,
        })
    }
}

/// A classifier whose logits are adjusted after the fact; see [`LogitAdjustmentConfig`].
#[derive(Module, Debug)]
pub struct LogitAdjusted<B: Backend, M> {
    model: M,
    /// `-tau log(pi)`, (1, classes).
    offset: Tensor<B, 2>,
    scale: f64,
}

impl<B: Backend, M: Classifier<B>> LogitAdjusted<B, M> {
    /// The model underneath.
    pub fn inner(&self) -> &M {
        &self.model
    }
}

impl<B: Backend, M: Classifier<B> + ModuleDisplay> Classifier<B> for LogitAdjusted<B, M> {
    /// (N, C, H, W) -> (N, classes)
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        self.model.forward(images, mode) * self.scale + self.offset.clone()
    }

    fn num_classes(&self) -> usize {
        self.model.num_classes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::architecture::{Architecture, ModelConfig};
    use tailguard_flex::Flex;

    #[test]
    fn adds_the_scaled_log_prior() {
        let device = Default::default();
        let model = ModelConfig::new(Architecture::Linear, 3)
            .with_input_shape([1, 2, 2])
            .init::<Flex>(&device)
            .unwrap();
        let images = Tensor::<Flex, 4>::from_floats([[[[0.1, 0.9], [0.4, 0.3]]]], &device);
        let plain = model
            .forward(images.clone(), Mode::Inference)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let adjusted = LogitAdjustmentConfig::robal_n()
            .init(model, &[60, 30, 10], &device)
            .unwrap();
        let out = adjusted
            .forward(images, Mode::Inference)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (c, n) in [60.0f64, 30.0, 10.0].iter().enumerate() {
            let want = 10.0 * plain[c] as f64 - 0.1 * (n / 100.0).ln();
            assert!((out[c] as f64 - want).abs() < 1e-5, "class {c}: {} vs {want}", out[c]);
        }
        // The rarer the class, the larger its bonus.
        assert!(out[2] - 10.0 * plain[2] > out[0] - 10.0 * plain[0]);
    }

    #[test]
    fn refuses_priors_that_do_not_fit() {
        let device = Default::default();
        let model = || {
            ModelConfig::new(Architecture::Linear, 3)
                .with_input_shape([1, 2, 2])
                .init::<Flex>(&device)
                .unwrap()
        };
        let err = |config: LogitAdjustmentConfig, counts: &[usize]| {
            config.init(model(), counts, &device).unwrap_err().to_string()
        };
        assert!(err(LogitAdjustmentConfig::robal_n(), &[1, 2]).contains("2 class counts for a model of 3"));
        assert!(err(LogitAdjustmentConfig::robal_n(), &[1, 0, 2]).contains("class 1 has no training images"));
        assert!(err(LogitAdjustmentConfig::new(0.1).with_scale(0.0), &[1, 1, 1]).contains("positive"));
    }
}
