//! Per-channel input normalisation inside the model, so attacks and users always work in [0, 1] pixel space.

use crate::error::ModelConfigError;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Per-channel mean and standard deviation.
#[derive(Config, Debug, PartialEq)]
pub struct InputNormalizationConfig {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

impl InputNormalizationConfig {
    /// CIFAR-10 statistics as used by RobustLT's models.
    pub fn cifar10() -> Self {
        Self::new(vec![0.4914, 0.4822, 0.4465], vec![0.2023, 0.1994, 0.2010])
    }

    /// CIFAR-100 statistics as used by RobustLT's models.
    pub fn cifar100() -> Self {
        Self::new(vec![0.5071, 0.4865, 0.4409], vec![0.2673, 0.2564, 0.2762])
    }

    /// Tiny-ImageNet statistics as used by RobustLT's models.
    pub fn tiny_imagenet() -> Self {
        Self::new(vec![0.4802, 0.4481, 0.3975], vec![0.2302, 0.2265, 0.2262])
    }

    /// Checks that there is one positive, finite std and one mean per input channel.
    pub fn validate(&self, channels: usize) -> Result<(), ModelConfigError> {
        if channels == 0 || self.mean.len() != channels || self.std.len() != channels {
            return Err(ModelConfigError::NormalizationChannels {
                means: self.mean.len(),
                stds: self.std.len(),
                channels,
            });
        }
        if let Some(bad) = self.std.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(ModelConfigError::NormalizationStd(*bad));
        }
        Ok(())
    }

    /// Checks the statistics and builds the layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<InputNormalization<B>, ModelConfigError> {
        let channels = self.mean.len();
        self.validate(channels)?;
        let inv_std: Vec<f32> = self.std.iter().map(|s| 1.0 / s).collect();
        Ok(InputNormalization {
            mean: Tensor::from_data(TensorData::new(self.mean.clone(), [1, channels, 1, 1]), device),
            inv_std: Tensor::from_data(TensorData::new(inv_std, [1, channels, 1, 1]), device),
        })
    }
}

/// `(x - mean) / std` per channel. The statistics are constants (no parameters), rebuilt from the config when a
/// checkpoint is loaded.
#[derive(Module, Debug)]
pub struct InputNormalization<B: Backend> {
    mean: Tensor<B, 4>,
    inv_std: Tensor<B, 4>,
}

impl<B: Backend> InputNormalization<B> {
    /// (N, C, H, W) -> (N, C, H, W)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        (x - self.mean.clone()) * self.inv_std.clone()
    }
}
