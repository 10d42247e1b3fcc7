//! ResNet-50 for 32x32 inputs: the CIFAR ResNet (3x3 stem, no max-pool) with bottleneck blocks, as in
//! kuangliu/pytorch-cifar and RobustBench's `ResNet50` (Engstrom et al. 2019's robustness library trains this
//! network). 23,520,842 parameters for 10 classes.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Relu;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, backend::Backend};

use crate::batch_norm::{ModalBatchNorm, ModalBatchNormConfig};
use crate::head::{ClassifierHead, HeadKind};
use crate::layers::{conv1x1, conv3x3, stage_plan};
use crate::mode::Mode;
use crate::resnet::{Projection, global_average_pool};

/// Output channels of a bottleneck block per channel of its inner width.
pub const EXPANSION: usize = 4;

/// 1x1 conv-BN-ReLU, 3x3 conv (the stride) -BN-ReLU, 1x1 conv (x4 channels) -BN, plus shortcut, then ReLU.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    conv1: Conv2d<B>,
    bn1: ModalBatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: ModalBatchNorm<B>,
    conv3: Conv2d<B>,
    bn3: ModalBatchNorm<B>,
    shortcut: Option<Projection<B>>,
    relu: Relu,
}

impl<B: Backend> Bottleneck<B> {
    fn new(in_channels: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let out_channels = EXPANSION * planes;
        let needs_projection = stride != 1 || in_channels != out_channels;
        Self {
            conv1: conv1x1(in_channels, planes, 1).init(device),
            bn1: ModalBatchNormConfig::new(planes).init(device),
            conv2: conv3x3(planes, planes, stride).init(device),
            bn2: ModalBatchNormConfig::new(planes).init(device),
            conv3: conv1x1(planes, out_channels, 1).init(device),
            bn3: ModalBatchNormConfig::new(out_channels).init(device),
            shortcut: needs_projection.then(|| Projection::new(in_channels, out_channels, stride, device)),
            relu: Relu::new(),
        }
    }

    /// (N, C_in, H, W) -> (N, 4 planes, H / stride, W / stride)
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let out = self.bn1.after_conv_relu(&self.conv1, x.clone(), mode);
        let out = self.bn2.after_conv_relu(&self.conv2, out, mode);
        let out = self.bn3.after_conv(&self.conv3, out, mode);
        let identity = match &self.shortcut {
            Some(projection) => projection.forward(x, mode),
            None => x,
        };
        self.relu.forward(out + identity)
    }
}

/// Configuration of a CIFAR ResNet built from [`Bottleneck`]s.
#[derive(Config, Debug)]
pub struct BottleneckResNetConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Blocks per stage; `[3, 4, 6, 3]` is ResNet-50.
    #[config(default = "[3, 4, 6, 3]")]
    pub blocks: [usize; 4],
    /// Inner width of the first stage (and the stem's channels); later stages double it. 64 is the standard width.
    #[config(default = 64)]
    pub width: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Last layer: linear, or RoBal's cosine classifier.
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
}

/// CIFAR bottleneck ResNet: 3x3 stem, four stages, global average pooling, linear head.
#[derive(Module, Debug)]
pub struct BottleneckResNet<B: Backend> {
    stem: Conv2d<B>,
    stem_bn: ModalBatchNorm<B>,
    stages: Vec<Bottleneck<B>>,
    pub(crate) head: ClassifierHead<B>,
    relu: Relu,
}

impl BottleneckResNetConfig {
    /// Builds the network with Kaiming-normal convolutions.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BottleneckResNet<B> {
        let w = self.width;
        // The plan's channels are the blocks' inner widths; each block's input is the previous block's 4x output.
        let plan = stage_plan(w, &[w, 2 * w, 4 * w, 8 * w], &self.blocks);
        let mut in_channels = w;
        let stages = plan
            .iter()
            .map(|b| {
                let block = Bottleneck::new(in_channels, b.out_channels, b.stride, device);
                in_channels = EXPANSION * b.out_channels;
                block
            })
            .collect();
        BottleneckResNet {
            stem: conv3x3(self.in_channels, w, 1).init(device),
            stem_bn: ModalBatchNormConfig::new(w).init(device),
            stages,
            head: self.head.init(in_channels, self.num_classes, device),
            relu: Relu::new(),
        }
    }
}

impl<B: Backend> BottleneckResNet<B> {
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
