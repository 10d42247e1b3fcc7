//! WideResNet-depth-width (Zagoruyko and Komodakis 2016) as in the TRADES / AT-BSL / RobustLT code:
//! pre-activation blocks ([`PreActBlock`]), no dropout. WRN-28-10 has 36,479,194 parameters and WRN-34-10 46,160,474 (10 classes).

use burn::config::Config;
use burn::module::Module;
use burn::nn::Relu;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, backend::Backend};

use crate::batch_norm::{ModalBatchNorm, ModalBatchNormConfig};
use crate::head::{ClassifierHead, HeadKind};
use crate::layers::{conv3x3, stage_plan};
use crate::mode::Mode;
use crate::preact_resnet::PreActBlock;
use crate::resnet::global_average_pool;

/// Configuration of a WideResNet.
#[derive(Config, Debug)]
pub struct WideResNetConfig {
    pub num_classes: usize,
    /// Total depth; must be 6n + 4 (28 and 34 are the papers' choices).
    #[config(default = 34)]
    pub depth: usize,
    /// Widening factor k: stages have 16k, 32k and 64k channels.
    #[config(default = 10)]
    pub widen: usize,
    #[config(default = 3)]
    pub in_channels: usize,
    /// Last layer: linear, or RoBal's cosine classifier.
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
}

/// 3x3 stem (16 channels), three stages of (depth - 4) / 6 blocks, final BN-ReLU, pooling, linear head.
#[derive(Module, Debug)]
pub struct WideResNet<B: Backend> {
    stem: Conv2d<B>,
    stages: Vec<PreActBlock<B>>,
    final_bn: ModalBatchNorm<B>,
    pub(crate) head: ClassifierHead<B>,
    relu: Relu,
}

impl WideResNetConfig {
    /// Checks that the depth is 6n + 4 and the width positive.
    pub fn validate(&self) -> Result<(), String> {
        if self.depth < 10 || !(self.depth - 4).is_multiple_of(6) {
            return Err(format!(
                "WideResNet depth must be 6n + 4 with n >= 1 (e.g. 28, 34), got {}",
                self.depth
            ));
        }
        if self.widen == 0 {
            return Err("WideResNet widening factor must be at least 1".into());
        }
        Ok(())
    }

    /// Builds the network; call [`WideResNetConfig::validate`] first for a friendly error.
    pub fn init<B: Backend>(&self, device: &B::Device) -> WideResNet<B> {
        self.validate().expect("invalid WideResNet configuration");
        let per_stage = (self.depth - 4) / 6;
        let widths = [16 * self.widen, 32 * self.widen, 64 * self.widen];
        let plan = stage_plan(16, &widths, &[per_stage; 3]);
        WideResNet {
            stem: conv3x3(self.in_channels, 16, 1).init(device),
            stages: PreActBlock::stack(&plan, device),
            final_bn: ModalBatchNormConfig::new(widths[2]).init(device),
            head: self.head.init(widths[2], self.num_classes, device),
            relu: Relu::new(),
        }
    }
}

impl<B: Backend> WideResNet<B> {
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
        let x = self.relu.forward(self.final_bn.forward(x, mode));
        global_average_pool(x)
    }
}
