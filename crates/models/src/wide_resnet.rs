//! WideResNet-depth-width (Zagoruyko and Komodakis 2016) as in the TRADES / AT-BSL / RobustLT code:
//! pre-activation blocks, no dropout. WRN-28-10 has 36,479,194 parameters and WRN-34-10 46,160,474 (10 classes).

use burn::config::Config;
use burn::tensor::backend::Backend;

use crate::head::HeadKind;
use crate::layers::stage_plan;
use crate::preact_resnet::PreActResNet;

/// Configuration of a WideResNet.
#[derive(Config, Debug)]
pub struct WideResNetConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Total depth; must be 6n + 4 (28 and 34 are the papers' choices).
    #[config(default = 34)]
    pub depth: usize,
    /// Widening factor k: stages have 16k, 32k and 64k channels.
    #[config(default = 10)]
    pub widen: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Last layer: linear, or RoBal's cosine classifier.
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
}

/// 3x3 stem (16 channels), three stages of (depth - 4) / 6 pre-activation blocks, final BN-ReLU, pooling, head:
/// structurally a pre-activation ResNet with another stage plan.
pub type WideResNet<B> = PreActResNet<B>;

impl WideResNetConfig {
    /// Checks that the depth is 6n + 4 and the width positive.
    pub fn validate(&self) -> Result<(), crate::error::ModelConfigError> {
        if self.depth < 10 || !(self.depth - 4).is_multiple_of(6) {
            return Err(crate::error::ModelConfigError::WideResNetDepth(self.depth));
        }
        if self.widen == 0 {
            return Err(crate::error::ModelConfigError::ZeroWidth("WideResNet widening factor"));
        }
        Ok(())
    }

    /// Builds the network; call [`WideResNetConfig::validate`] first for a friendly error.
    pub fn init<B: Backend>(&self, device: &B::Device) -> WideResNet<B> {
        self.validate().expect("invalid WideResNet configuration");
        let per_stage = (self.depth - 4) / 6;
        let widths = [16 * self.widen, 32 * self.widen, 64 * self.widen];
        let plan = stage_plan(16, &widths, &[per_stage; 3]);
        PreActResNet::from_plan(self.in_channels, 16, &plan, self.head, self.num_classes, false, device)
    }
}
