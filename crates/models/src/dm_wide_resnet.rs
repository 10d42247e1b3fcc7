//! DeepMind's WideResNet (Gowal et al. 2020, Rebuffi et al. 2021, Wang et al. 2023), as RobustBench distributes
//! it (`robustbench.model_zoo.architectures.dm_wide_resnet.DMWideResNet`): the TRADES WideResNet's pre-activation
//! blocks with two differences that change the logits, so it is its own architecture:
//! - a choice of activation (ReLU, or SiLU, which the papers call Swish);
//! - TensorFlow's `SAME` padding on the strided convolutions: the input is padded by one pixel on the right and the
//!   bottom only (PyTorch's symmetric padding of 1 would shift every stride-2 window by one pixel).
//!
//! The DeepMind models take the input normalisation inside; tailguard keeps it in [`crate::Model`]'s normalisation.
//! DM-WRN-28-10 has 36,479,194 parameters for 10 classes, as many as WRN-28-10.

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::{relu, silu};
use burn::tensor::{Tensor, backend::Backend};

use crate::batch_norm::{ModalBatchNorm, ModalBatchNormConfig};
use crate::head::{ClassifierHead, HeadKind};
use crate::layers::{conv1x1, conv3x3, stage_plan};
use crate::mode::Mode;
use crate::resnet::global_average_pool;

/// The activation of a network's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// max(x, 0).
    #[default]
    Relu,
    /// x * sigmoid(x) (DeepMind's `Swish` and PyTorch's `nn.SiLU` are this function).
    Silu,
}

impl Activation {
    /// Applies the activation.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Relu => relu(x),
            Activation::Silu => silu(x),
        }
    }

    /// `bn` then the activation (a ReLU fused with the BatchNorm where [`ModalBatchNorm::forward_relu`] fuses it).
    fn after<B: Backend>(&self, bn: &ModalBatchNorm<B>, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        match self {
            Activation::Relu => bn.forward_relu(x, mode),
            Activation::Silu => silu(bn.forward(x, mode)),
        }
    }
}

/// BN-act-conv-BN-act-conv; where the width changes, a 1x1 projection of the activated input is the shortcut (and
/// the first convolution reads the activated input too), else the raw input is added.
#[derive(Module, Debug)]
pub struct DmBlock<B: Backend> {
    batchnorm_0: ModalBatchNorm<B>,
    conv_0: Conv2d<B>,
    batchnorm_1: ModalBatchNorm<B>,
    conv_1: Conv2d<B>,
    shortcut: Option<Conv2d<B>>,
    activation: Activation,
}

impl<B: Backend> DmBlock<B> {
    fn new(in_channels: usize, out_channels: usize, stride: usize, activation: Activation, device: &B::Device) -> Self {
        // `SAME` padding: stride 1 pads one pixel on every side, stride 2 only on the right and the bottom.
        let same = if stride == 1 {
            PaddingConfig2d::Explicit(1, 1, 1, 1)
        } else {
            PaddingConfig2d::Explicit(0, 0, 1, 1)
        };
        Self {
            batchnorm_0: ModalBatchNormConfig::new(in_channels).init(device),
            conv_0: conv3x3(in_channels, out_channels, stride)
                .with_padding(same)
                .init(device),
            batchnorm_1: ModalBatchNormConfig::new(out_channels).init(device),
            conv_1: conv3x3(out_channels, out_channels, 1).init(device),
            shortcut: (in_channels != out_channels).then(|| conv1x1(in_channels, out_channels, stride).init(device)),
            activation,
        }
    }

    /// (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let pre = self.activation.after(&self.batchnorm_0, x.clone(), mode);
        let identity = match &self.shortcut {
            Some(conv) => conv.forward(pre.clone()),
            None => x,
        };
        let out = self.conv_0.forward(pre);
        let out = self.activation.after(&self.batchnorm_1, out, mode);
        identity + self.conv_1.forward(out)
    }
}

/// Configuration of a DeepMind WideResNet.
#[derive(Config, Debug)]
pub struct DmWideResNetConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Total depth; must be 6n + 4.
    #[config(default = 28)]
    pub depth: usize,
    /// Widening factor k: stages have 16k, 32k and 64k channels.
    #[config(default = 10)]
    pub width: usize,
    /// The blocks' activation (SiLU for the Swish models).
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Last layer: linear, or RoBal's cosine classifier.
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
}

/// 3x3 stem (`init_conv`, 16 channels), three groups of (depth - 4) / 6 blocks, BN-act, pooling, head (`logits`).
#[derive(Module, Debug)]
pub struct DmWideResNet<B: Backend> {
    init_conv: Conv2d<B>,
    blocks: Vec<DmBlock<B>>,
    batchnorm: ModalBatchNorm<B>,
    pub(crate) head: ClassifierHead<B>,
    activation: Activation,
}

impl DmWideResNetConfig {
    /// Checks that the depth is 6n + 4 and the width positive.
    pub fn validate(&self) -> Result<(), crate::error::ModelConfigError> {
        crate::wide_resnet::WideResNetConfig::new(self.num_classes)
            .with_depth(self.depth)
            .with_widen(self.width)
            .validate()
    }

    /// Builds the network; call [`DmWideResNetConfig::validate`] first for a friendly error.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DmWideResNet<B> {
        self.validate().expect("invalid DeepMind WideResNet configuration");
        let per_stage = (self.depth - 4) / 6;
        let k = self.width;
        let plan = stage_plan(16, &[16 * k, 32 * k, 64 * k], &[per_stage; 3]);
        let features = 64 * k;
        DmWideResNet {
            init_conv: conv3x3(self.in_channels, 16, 1).init(device),
            blocks: plan
                .iter()
                .map(|b| DmBlock::new(b.in_channels, b.out_channels, b.stride, self.activation, device))
                .collect(),
            batchnorm: ModalBatchNormConfig::new(features).init(device),
            head: self.head.init(features, self.num_classes, device),
            activation: self.activation,
        }
    }
}

impl<B: Backend> DmWideResNet<B> {
    /// (N, C, H, W) -> (N, classes)
    pub fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        self.head.forward(self.features(x, mode))
    }

    /// Penultimate features after global average pooling: (N, C, H, W) -> (N, D)
    pub fn features(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let mut x = self.init_conv.forward(x);
        for block in &self.blocks {
            x = block.forward(x, mode);
        }
        global_average_pool(self.activation.after(&self.batchnorm, x, mode))
    }
}
