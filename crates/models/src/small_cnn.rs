//! A small convolutional network for tests and quick CPU runs: three conv-BN-ReLU layers (the last two with stride
//! 2), global average pooling and a linear head.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, backend::Backend};

use crate::batch_norm::{ModalBatchNorm, ModalBatchNormConfig};
use crate::head::{ClassifierHead, HeadKind};
use crate::layers::conv3x3;
use crate::mode::Mode;
use crate::resnet::global_average_pool;

/// Configuration of a [`SmallCnn`].
#[derive(Config, Debug)]
pub struct SmallCnnConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Channels of the first layer; the next two have 2x and 4x.
    #[config(default = 16)]
    pub width: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Last layer: linear, or RoBal's cosine classifier.
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
}

/// conv(w)-conv(2w, /2)-conv(4w, /2), each followed by BN and ReLU; pooling; linear head.
#[derive(Module, Debug)]
pub struct SmallCnn<B: Backend> {
    convs: Vec<Conv2d<B>>,
    norms: Vec<ModalBatchNorm<B>>,
    pub(crate) head: ClassifierHead<B>,
}

impl SmallCnnConfig {
    /// Builds the network.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SmallCnn<B> {
        let w = self.width;
        let layers = [(self.in_channels, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2)];
        SmallCnn {
            convs: layers.iter().map(|&(i, o, s)| conv3x3(i, o, s).init(device)).collect(),
            norms: layers
                .iter()
                .map(|&(_, o, _)| ModalBatchNormConfig::new(o).init(device))
                .collect(),
            head: self.head.init(4 * w, self.num_classes, device),
        }
    }
}

impl<B: Backend> SmallCnn<B> {
    /// (N, C, H, W) -> (N, classes)
    pub fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        self.head.forward(self.features(x, mode))
    }

    /// Penultimate features after global average pooling: (N, C, H, W) -> (N, D)
    pub fn features(&self, mut x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            x = norm.after_conv_relu(conv, x, mode);
        }
        global_average_pool(x)
    }
}
