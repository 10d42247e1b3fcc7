//! A linear classifier on raw pixels. Its worst-case L-inf perturbation has a closed form, which the attack tests
//! use as ground truth.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

use crate::layers::classifier_head;

/// Configuration of a [`LinearClassifier`].
#[derive(Config, Debug)]
pub struct LinearClassifierConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Flattened input size, C * H * W.
    pub input_size: usize,
}

/// logits = W x + b on the flattened image.
#[derive(Module, Debug)]
pub struct LinearClassifier<B: Backend> {
    /// The linear map from flattened pixels to logits.
    pub head: Linear<B>,
}

impl LinearClassifierConfig {
    /// Builds the classifier.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LinearClassifier<B> {
        LinearClassifier {
            head: classifier_head(self.input_size, self.num_classes).init(device),
        }
    }
}

impl<B: Backend> LinearClassifier<B> {
    /// (N, C, H, W) -> (N, classes)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, h, w] = x.dims();
        self.head.forward(x.reshape([n, c * h * w]))
    }
}
