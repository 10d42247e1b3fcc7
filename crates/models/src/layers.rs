//! Convolution and linear layer configurations shared by the architectures.

use burn::nn::conv::Conv2dConfig;
use burn::nn::{Initializer, LinearConfig, PaddingConfig2d};

/// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, the convolution initialisation of torchvision's ResNets
/// and of the WideResNet reference code: std = sqrt(2 / (out_channels * k * k)).
pub fn kaiming_normal_fan_out() -> Initializer {
    Initializer::KaimingNormal {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: true,
    }
}

/// 3x3 convolution, padding 1, no bias.
pub fn conv3x3(in_channels: usize, out_channels: usize, stride: usize) -> Conv2dConfig {
    Conv2dConfig::new([in_channels, out_channels], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .with_initializer(kaiming_normal_fan_out())
}

/// 1x1 convolution, no padding, no bias (projection shortcuts).
pub fn conv1x1(in_channels: usize, out_channels: usize, stride: usize) -> Conv2dConfig {
    Conv2dConfig::new([in_channels, out_channels], [1, 1])
        .with_stride([stride, stride])
        .with_bias(false)
        .with_initializer(kaiming_normal_fan_out())
}

/// Fully connected classifier head with PyTorch's default initialisation (uniform, bound 1/sqrt(fan_in), also for
/// the bias), which is burn's default too.
pub fn classifier_head(features: usize, classes: usize) -> LinearConfig {
    LinearConfig::new(features, classes)
}

/// One residual block of a stage plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPlan {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Stride of the first convolution (and the shortcut).
    pub stride: usize,
}

/// The blocks of a CIFAR residual network: stage `s` has `blocks[s]` blocks of `widths[s]` channels; the first block
/// of every stage but the first halves the resolution.
pub fn stage_plan(stem_channels: usize, widths: &[usize], blocks: &[usize]) -> Vec<BlockPlan> {
    let mut plan = Vec::new();
    let mut in_channels = stem_channels;
    for (stage, (&out_channels, &count)) in widths.iter().zip(blocks).enumerate() {
        for block in 0..count {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            plan.push(BlockPlan {
                in_channels,
                out_channels,
                stride,
            });
            in_channels = out_channels;
        }
    }
    plan
}
