//! Pre-activation ResNet-18 (He et al. 2016) for 32x32 inputs, as in Rice et al. 2020 and most adversarial-training
//! code, with the final BatchNorm-ReLU before pooling. 11,172,170 parameters for 10 classes.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, backend::Backend};

use crate::batch_norm::{ModalBatchNorm, ModalBatchNormConfig};
use crate::head::{ClassifierHead, HeadKind};
use crate::layers::{BlockPlan, conv1x1, conv3x3, stage_plan};
use crate::mode::Mode;
use crate::resnet::global_average_pool;

/// BN-ReLU-conv-BN-ReLU-conv; a projection shortcut (bare 1x1 convolution) takes the pre-activated input (or, in
/// Wong et al.'s variant, the block's raw input). WideResNet's block is the same block.
#[derive(Module, Debug)]
pub struct PreActBlock<B: Backend> {
    bn1: ModalBatchNorm<B>,
    conv1: Conv2d<B>,
    bn2: ModalBatchNorm<B>,
    conv2: Conv2d<B>,
    shortcut: Option<Conv2d<B>>,
    /// The projection reads the raw input instead of the pre-activated one.
    shortcut_from_input: bool,
}

impl<B: Backend> PreActBlock<B> {
    /// The blocks of a stage plan.
    pub(crate) fn stack(plan: &[BlockPlan], shortcut_from_input: bool, device: &B::Device) -> Vec<Self> {
        plan.iter()
            .map(|b| Self::new(b.in_channels, b.out_channels, b.stride, shortcut_from_input, device))
            .collect()
    }

    fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        shortcut_from_input: bool,
        device: &B::Device,
    ) -> Self {
        let needs_projection = stride != 1 || in_channels != out_channels;
        Self {
            bn1: ModalBatchNormConfig::new(in_channels).init(device),
            conv1: conv3x3(in_channels, out_channels, stride).init(device),
            bn2: ModalBatchNormConfig::new(out_channels).init(device),
            conv2: conv3x3(out_channels, out_channels, 1).init(device),
            shortcut: needs_projection.then(|| conv1x1(in_channels, out_channels, stride).init(device)),
            shortcut_from_input,
        }
    }

    /// (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)
    pub(crate) fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let pre = self.bn1.forward_relu(x.clone(), mode);
        let identity = match &self.shortcut {
            Some(conv) if self.shortcut_from_input => conv.forward(x),
            Some(conv) => conv.forward(pre.clone()),
            None => x,
        };
        let out = self.conv1.forward(pre);
        let out = self.conv2.forward(self.bn2.forward_relu(out, mode));
        out + identity
    }
}

/// Configuration of a pre-activation ResNet.
#[derive(Config, Debug)]
pub struct PreActResNetConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Blocks per stage.
    #[config(default = "[2, 2, 2, 2]")]
    pub blocks: [usize; 4],
    /// Channels of the first stage.
    #[config(default = 64)]
    pub width: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Last layer: linear, or RoBal's cosine classifier.
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
    /// Wong et al. (2020)'s variant, RobustBench's `PreActResNet18`: projection shortcuts read the block's raw input
    /// and there is no final BN-ReLU. Off by default (Rice et al.'s network).
    #[config(default = false)]
    pub wong_variant: bool,
}

/// Pre-activation ResNet: 3x3 stem, four stages, final BN-ReLU (absent in Wong et al.'s variant), global average
/// pooling, linear head.
#[derive(Module, Debug)]
pub struct PreActResNet<B: Backend> {
    stem: Conv2d<B>,
    stages: Vec<PreActBlock<B>>,
    final_bn: Option<ModalBatchNorm<B>>,
    pub(crate) head: ClassifierHead<B>,
}

impl PreActResNetConfig {
    /// Builds the network with Kaiming-normal convolutions.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PreActResNet<B> {
        let w = self.width;
        let plan = stage_plan(w, &[w, 2 * w, 4 * w, 8 * w], &self.blocks);
        let (in_channels, classes) = (self.in_channels, self.num_classes);
        PreActResNet::from_plan(in_channels, w, &plan, self.head, classes, self.wong_variant, device)
    }
}

impl<B: Backend> PreActResNet<B> {
    /// A 3x3 stem of `stem_channels`, the blocks of `plan`, final BN-ReLU and `head` (shared with WideResNet, which
    /// is the same network with another plan); `wong_variant` as in [`PreActResNetConfig`].
    pub(crate) fn from_plan(
        in_channels: usize,
        stem_channels: usize,
        plan: &[BlockPlan],
        head: HeadKind,
        num_classes: usize,
        wong_variant: bool,
        device: &B::Device,
    ) -> Self {
        let features = plan.last().map_or(stem_channels, |b| b.out_channels);
        PreActResNet {
            stem: conv3x3(in_channels, stem_channels, 1).init(device),
            stages: PreActBlock::stack(plan, wong_variant, device),
            final_bn: (!wong_variant).then(|| ModalBatchNormConfig::new(features).init(device)),
            head: head.init(features, num_classes, device),
        }
    }

    /// (N, C, H, W) -> (N, classes)
    pub fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        self.head.forward(self.features(x, mode))
    }

    /// Penultimate features after global average pooling: (N, C, H, W) -> (N, D)
    pub fn features(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let mut x = self.stem.forward(x);
        for block in &self.stages {
            x = block.forward(x, mode);
        }
        let x = match &self.final_bn {
            Some(bn) => bn.forward_relu(x, mode),
            None => x,
        };
        global_average_pool(x)
    }
}
