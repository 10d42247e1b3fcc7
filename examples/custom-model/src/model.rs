//! The embedding program's own model: conv -> BatchNorm -> ReLU -> conv -> BatchNorm -> ReLU -> pooling -> linear.
//! Nothing here is tailguard's but [`ModalBatchNorm`] (BatchNorm with the inference-mode switch attacks need) and
//! the [`Classifier`] trait it implements.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Tensor, activation::relu, backend::Backend};
use tailguard_models::{Classifier, ModalBatchNorm, ModalBatchNormConfig, Mode, ParameterNames};

/// A two-layer CNN for 32x32 colour images.
#[derive(Module, Debug)]
pub struct TinyNet<B: Backend> {
    conv1: Conv2d<B>,
    norm1: ModalBatchNorm<B>,
    conv2: Conv2d<B>,
    norm2: ModalBatchNorm<B>,
    head: Linear<B>,
}

impl<B: Backend> TinyNet<B> {
    /// Fresh weights (from the backend's generator: seed it first for a reproducible model).
    pub fn new(classes: usize, device: &B::Device) -> Self {
        let conv = |inputs, outputs| {
            Conv2dConfig::new([inputs, outputs], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            conv1: conv(3, 16),
            norm1: ModalBatchNormConfig::new(16).init(device),
            conv2: conv(16, 32),
            norm2: ModalBatchNormConfig::new(32).init(device),
            head: LinearConfig::new(32, classes).init(device),
        }
    }

    /// (N, 3, H, W) -> (N, 32) pooled features.
    fn features(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = relu(self.norm1.forward(self.conv1.forward(images), mode)); // (N, 16, H/2, W/2)
        let x = relu(self.norm2.forward(self.conv2.forward(x), mode)); // (N, 32, H/4, W/4)
        let [n, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    }
}

/// The one trait tailguard needs: images in [0, 1] and a mode in, logits out.
impl<B: Backend> Classifier<B> for TinyNet<B> {
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        self.head.forward(self.features(images, mode))
    }

    fn num_classes(&self) -> usize {
        self.head.weight.dims()[1]
    }

    fn features_and_logits(&self, images: Tensor<B, 4>, mode: Mode) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        let features = self.features(images, mode);
        Some((features.clone(), self.head.forward(features)))
    }
}

/// The names this program's PyTorch twin uses (`conv1.weight`, `bn1.running_mean`, `fc.weight`), for safetensors
/// export and import. Without it, tailguard writes Burn's own names (`conv1.weight`, `norm1.gamma`, ...).
pub struct TorchNames;

impl ParameterNames for TorchNames {
    fn name(&self, path: &[String]) -> (String, bool) {
        let module = match path.first().map(String::as_str) {
            Some("norm1") => "bn1",
            Some("norm2") => "bn2",
            Some("head") => "fc",
            Some(other) => other,
            None => "",
        };
        let leaf = match path.last().map(String::as_str) {
            Some("gamma") => "weight",
            Some("beta") => "bias",
            Some(other) => other,
            None => "",
        };
        // Burn keeps a linear weight as [in, out], PyTorch as [out, in].
        let transposed = module == "fc" && leaf == "weight";
        (format!("{module}.{leaf}"), transposed)
    }

    fn describe(&self) -> String {
        "TinyNet".into()
    }
}
