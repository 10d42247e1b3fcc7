//! The last layer: a linear classifier, or RoBal's scale-invariant cosine classifier.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear};
use burn::tensor::{Tensor, backend::Backend};

use crate::layers::classifier_head;

/// Which classifier head a network ends with.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum HeadKind {
    /// `W x + b` (PyTorch's default initialisation).
    #[default]
    Linear,
    /// RoBal's cosine classifier (Wu et al. 2021): `z_j = scale <x / |x|, w_j / (|w_j| + gamma)>`, no bias.
    /// RoBal uses scale 1 (its loss applies its own scale) and gamma 1/32.
    Cosine {
        /// Logit scale.
        scale: f64,
        /// Added to each weight norm.
        gamma: f64,
    },
}

impl HeadKind {
    /// RoBal's setting: scale 1, gamma 1/32.
    pub const ROBAL: HeadKind = HeadKind::Cosine {
        scale: 1.0,
        gamma: 1.0 / 32.0,
    };

    /// The head for `features` inputs and `classes` outputs.
    pub fn init<B: Backend>(&self, features: usize, classes: usize, device: &B::Device) -> ClassifierHead<B> {
        match *self {
            HeadKind::Linear => ClassifierHead::Linear(classifier_head(features, classes).init(device)),
            HeadKind::Cosine { scale, gamma } => ClassifierHead::Cosine(CosineHead {
                weight: Initializer::KaimingUniform {
                    gain: 1.0 / 3f64.sqrt(),
                    fan_out_only: false,
                }
                .init_with([classes, features], Some(features), Some(classes), device),
                scale,
                gamma,
            }),
        }
    }
}

/// Scale-invariant cosine classifier; `weight` is (classes, features) as in PyTorch.
#[derive(Module, Debug)]
pub struct CosineHead<B: Backend> {
    /// Class weights (classes, features).
    pub weight: Param<Tensor<B, 2>>,
    /// Logit scale.
    pub scale: f64,
    /// Added to each weight norm.
    pub gamma: f64,
}

impl<B: Backend> CosineHead<B> {
    /// (N, D) -> (N, C)
    pub fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let x_norm = features.clone().square().sum_dim(1).sqrt().clamp_min(1e-12); // (N, 1)
        let x = features / x_norm;
        let w = self.weight.val();
        let w_norm = w.clone().square().sum_dim(1).sqrt().add_scalar(self.gamma); // (C, 1)
        x.matmul((w / w_norm).transpose()).mul_scalar(self.scale)
    }
}

/// A network's last layer.
#[derive(Module, Debug)]
pub enum ClassifierHead<B: Backend> {
    /// `W x + b`.
    Linear(Linear<B>),
    /// RoBal's cosine classifier.
    Cosine(CosineHead<B>),
}

impl<B: Backend> ClassifierHead<B> {
    /// (N, D) -> (N, C)
    pub fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            ClassifierHead::Linear(linear) => linear.forward(features),
            ClassifierHead::Cosine(cosine) => cosine.forward(features),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tailguard_flex::Flex;

    #[test]
    fn cosine_logits_by_hand() {
        let device = Default::default();
        let head = CosineHead::<Flex> {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![3.0f32, 4.0, 0.0, 2.0], [2, 2]),
                &device,
            )),
            scale: 10.0,
            gamma: 0.5,
        };
        // x = (6, 8) -> (0.6, 0.8). w_0 = (3, 4) / (5 + 0.5); w_1 = (0, 2) / (2 + 0.5).
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(vec![6.0f32, 8.0], [1, 2]), &device);
        let z: Vec<f32> = head.forward(x).into_data().to_vec().unwrap();
        let expected = [10.0 * (0.6 * 3.0 + 0.8 * 4.0) / 5.5, 10.0 * (0.8 * 2.0) / 2.5];
        for (a, b) in z.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{z:?} vs {expected:?}");
        }
        // Scale invariance in the input.
        let x2 = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0.6f32, 0.8], [1, 2]), &device);
        let z2: Vec<f32> = head.forward(x2).into_data().to_vec().unwrap();
        assert!((z[0] - z2[0]).abs() < 1e-5);
    }
}
