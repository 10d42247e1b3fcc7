//! Per-channel input normalisation inside the model, so attacks and users always work in [0, 1] pixel space.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Per-channel mean and standard deviation.
#[derive(Config, Debug, PartialEq)]
pub struct InputNormalizationConfig {
    pub mean: Vec<f32>,
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

    /// Checks the statistics and builds the layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<InputNormalization<B>, String> {
        let channels = self.mean.len();
        if channels == 0 || self.std.len() != channels {
            return Err(format!(
                "normalisation needs one mean and one std per channel, got {} and {}",
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(bad) = self.std.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(format!("normalisation std must be positive, got {bad}"));
        }
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
