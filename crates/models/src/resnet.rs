//! ResNet-18 for 32x32 inputs: 3x3 stem, no max-pool (the CIFAR variant used throughout the adversarial-training
//! literature, e.g. kuangliu/pytorch-cifar). 11,173,962 parameters for 10 classes.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Relu;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, backend::Backend};

use crate::batch_norm::{ModalBatchNorm, ModalBatchNormConfig};
use crate::head::{ClassifierHead, HeadKind};
use crate::layers::{conv1x1, conv3x3, stage_plan};
use crate::mode::Mode;

/// Projection shortcut: 1x1 convolution then BatchNorm.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    conv: Conv2d<B>,
    bn: ModalBatchNorm<B>,
}

impl<B: Backend> Projection<B> {
    pub(crate) fn new(in_channels: usize, out_channels: usize, stride: usize, device: &B::Device) -> Self {
        Self {
            conv: conv1x1(in_channels, out_channels, stride).init(device),
            bn: ModalBatchNormConfig::new(out_channels).init(device),
        }
    }

    /// (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)
    pub(crate) fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        self.bn.after_conv(&self.conv, x, mode)
    }
}

/// conv-BN-ReLU-conv-BN plus shortcut, then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    bn1: ModalBatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: ModalBatchNorm<B>,
    shortcut: Option<Projection<B>>,
    relu: Relu,
}

impl<B: Backend> BasicBlock<B> {
    fn new(in_channels: usize, out_channels: usize, stride: usize, device: &B::Device) -> Self {
        let needs_projection = stride != 1 || in_channels != out_channels;
        Self {
            conv1: conv3x3(in_channels, out_channels, stride).init(device),
            bn1: ModalBatchNormConfig::new(out_channels).init(device),
            conv2: conv3x3(out_channels, out_channels, 1).init(device),
            bn2: ModalBatchNormConfig::new(out_channels).init(device),
            shortcut: needs_projection.then(|| Projection::new(in_channels, out_channels, stride, device)),
            relu: Relu::new(),
        }
    }

    /// (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let out = self.bn1.after_conv_relu(&self.conv1, x.clone(), mode);
        let out = self.bn2.after_conv(&self.conv2, out, mode);
        let identity = match &self.shortcut {
            Some(projection) => projection.forward(x, mode),
            None => x,
        };
        self.relu.forward(out + identity)
    }
}

/// Configuration of a CIFAR ResNet built from [`BasicBlock`]s.
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Blocks per stage; `[2, 2, 2, 2]` is ResNet-18.
    #[config(default = "[2, 2, 2, 2]")]
    pub blocks: [usize; 4],
    /// Channels of the first stage; later stages double it. 64 is the standard width.
    #[config(default = 64)]
    pub width: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Last layer: linear, or RoBal's cosine classifier.
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
}

/// CIFAR ResNet: 3x3 stem, four stages, global average pooling, linear head.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    stem: Conv2d<B>,
    stem_bn: ModalBatchNorm<B>,
    stages: Vec<BasicBlock<B>>,
    pub(crate) head: ClassifierHead<B>,
    relu: Relu,
}

impl ResNetConfig {
    /// Builds the network with Kaiming-normal convolutions.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let w = self.width;
        let plan = stage_plan(w, &[w, 2 * w, 4 * w, 8 * w], &self.blocks);
        let stages = plan
            .iter()
            .map(|b| BasicBlock::new(b.in_channels, b.out_channels, b.stride, device))
            .collect();
        ResNet {
            stem: conv3x3(self.in_channels, w, 1).init(device),
            stem_bn: ModalBatchNormConfig::new(w).init(device),
            stages,
            head: self.head.init(8 * w, self.num_classes, device),
            relu: Relu::new(),
        }
    }
}

impl<B: Backend> ResNet<B> {
    /// (N, C, H, W) -> (N, classes)
    pub fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        self.head.forward(self.features(x, mode))
    }

    /// Penultimate features after global average pooling: (N, C, H, W) -> (N, D)
    pub fn features(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let mut x = self.stem_bn.after_conv_relu(&self.stem, x, mode);
        for block in &self.stages {
            x = block.forward(x, mode);
        }
        global_average_pool(x)
    }
}

/// (N, C, H, W) -> (N, C)
pub fn global_average_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([n, c])
}
