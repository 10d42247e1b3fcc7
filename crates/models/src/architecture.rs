//! Choosing an architecture at run time: [`Architecture`], [`ModelConfig`] and the [`Model`] that holds any of them.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::bottleneck_resnet::{BottleneckResNet, BottleneckResNetConfig};
use crate::classifier::Classifier;
use crate::dm_wide_resnet::{Activation, DmWideResNet, DmWideResNetConfig};
use crate::error::ModelConfigError;
use crate::head::HeadKind;
use crate::linear_classifier::{LinearClassifier, LinearClassifierConfig};
use crate::mode::Mode;
use crate::normalization::{InputNormalization, InputNormalizationConfig};
use crate::preact_resnet::{PreActResNet, PreActResNetConfig};
use crate::resnet::{ResNet, ResNetConfig};
use crate::small_cnn::{SmallCnn, SmallCnnConfig};
use crate::wide_resnet::{WideResNet, WideResNetConfig};

/// The architectures tailguard ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Architecture {
    /// CIFAR ResNet-18.
    #[serde(rename = "resnet18")]
    ResNet18,
    /// Pre-activation ResNet-18 with final BN-ReLU.
    #[serde(rename = "preact-resnet18")]
    PreActResNet18,
    /// WideResNet-depth-widen.
    #[serde(rename = "wrn")]
    WideResNet {
        /// Depth, 6n + 4.
        depth: usize,
        /// Widening factor.
        widen: usize,
    },
    /// Three-layer CNN of the given base width.
    SmallCnn {
        /// Channels of the first layer.
        width: usize,
    },
    /// Linear classifier on pixels.
    Linear,
    /// Wong et al. (2020)'s pre-activation ResNet-18 (RobustBench's `PreActResNet18`): projection shortcuts from the
    /// block's raw input, no final BN-ReLU.
    #[serde(rename = "preact-resnet18-wong")]
    PreActResNet18Wong,
    /// CIFAR ResNet-50 (bottleneck blocks).
    #[serde(rename = "resnet50")]
    ResNet50,
    /// DeepMind's WideResNet-depth-width (`SAME` padding, ReLU or SiLU).
    #[serde(rename = "dm-wrn")]
    DmWideResNet {
        /// Depth, 6n + 4.
        depth: usize,
        /// Widening factor.
        width: usize,
        /// The blocks' activation.
        activation: Activation,
    },
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Architecture::ResNet18 => write!(f, "resnet18"),
            Architecture::PreActResNet18 => write!(f, "preact-resnet18"),
            Architecture::WideResNet { depth, widen } => write!(f, "wrn-{depth}-{widen}"),
            Architecture::SmallCnn { width: 16 } => write!(f, "small-cnn"),
            Architecture::SmallCnn { width } => write!(f, "small-cnn-{width}"),
            Architecture::Linear => write!(f, "linear"),
            Architecture::PreActResNet18Wong => write!(f, "preact-resnet18-wong"),
            Architecture::ResNet50 => write!(f, "resnet50"),
            Architecture::DmWideResNet {
                depth,
                width,
                activation: Activation::Relu,
            } => write!(f, "dm-wrn-{depth}-{width}"),
            Architecture::DmWideResNet {
                depth,
                width,
                activation: Activation::Silu,
            } => write!(f, "dm-wrn-{depth}-{width}-silu"),
        }
    }
}

impl std::str::FromStr for Architecture {
    type Err = ModelConfigError;

    /// `resnet18`, `preact-resnet18`, `wrn-28-10`, `wrn-34-10` (any `wrn-D-K`), `small-cnn[-W]`, `linear`,
    /// `preact-resnet18-wong`, `resnet50`, `dm-wrn-D-K` and `dm-wrn-D-K-silu`.
    fn from_str(s: &str) -> Result<Self, ModelConfigError> {
        let unknown = || ModelConfigError::UnknownArchitecture(s.to_string());
        match s {
            "resnet18" | "resnet-18" => return Ok(Architecture::ResNet18),
            "preact-resnet18" | "preact-resnet-18" => return Ok(Architecture::PreActResNet18),
            "small-cnn" => return Ok(Architecture::SmallCnn { width: 16 }),
            "linear" => return Ok(Architecture::Linear),
            "preact-resnet18-wong" | "preact-resnet-18-wong" => return Ok(Architecture::PreActResNet18Wong),
            "resnet50" | "resnet-50" => return Ok(Architecture::ResNet50),
            _ => {}
        }
        let arch = if let Some(rest) = s.strip_prefix("dm-wrn-") {
            let (rest, activation) = match rest.strip_suffix("-silu") {
                Some(rest) => (rest, Activation::Silu),
                None => (rest, Activation::Relu),
            };
            let (depth, width) = rest.split_once('-').ok_or_else(unknown)?;
            Architecture::DmWideResNet {
                depth: depth.parse().map_err(|_| unknown())?,
                width: width.parse().map_err(|_| unknown())?,
                activation,
            }
        } else if let Some(rest) = s.strip_prefix("wrn-") {
            let (depth, widen) = rest.split_once('-').ok_or_else(unknown)?;
            Architecture::WideResNet {
                depth: depth.parse().map_err(|_| unknown())?,
                widen: widen.parse().map_err(|_| unknown())?,
            }
        } else if let Some(width) = s.strip_prefix("small-cnn-") {
            Architecture::SmallCnn {
                width: width.parse().map_err(|_| unknown())?,
            }
        } else {
            return Err(unknown());
        };
        arch.validate()?;
        Ok(arch)
    }
}

impl Architecture {
    /// Checks sizes that would make the network impossible.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        match *self {
            Architecture::WideResNet { depth, widen }
            | Architecture::DmWideResNet {
                depth, width: widen, ..
            } => WideResNetConfig::new(10).with_depth(depth).with_widen(widen).validate(),
            Architecture::SmallCnn { width: 0 } => Err(ModelConfigError::ZeroWidth("small-cnn width")),
            _ => Ok(()),
        }
    }
}

/// [`Architecture`] written as its name (`"wrn-34-10"`), as configuration files spell it: use with
/// `#[serde(with = "tailguard_models::architecture::by_name")]`.
pub mod by_name {
    use super::Architecture;

    /// Writes the name.
    pub fn serialize<S: serde::Serializer>(arch: &Architecture, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(arch)
    }

    /// Reads a name; an unknown one is an error listing the known names.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Architecture, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything needed to rebuild a model: architecture, classes, input shape and normalisation.
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// The network.
    pub arch: Architecture,
    /// Number of classes (outputs).
    pub num_classes: usize,
    /// Input channels, height and width (only the linear classifier depends on height and width).
    #[config(default = "[3, 32, 32]")]
    pub input_shape: [usize; 3],
    /// Per-channel normalisation applied inside the model; inputs stay in [0, 1].
    #[config(default = "None")]
    pub normalization: Option<InputNormalizationConfig>,
    /// Last layer (the linear classifier has only a linear head).
    #[config(default = "HeadKind::Linear")]
    pub head: HeadKind,
}

impl ModelConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        if self.num_classes == 0 {
            return Err(ModelConfigError::NoClasses);
        }
        if self.input_shape.contains(&0) {
            return Err(ModelConfigError::EmptyInput(self.input_shape));
        }
        if let Some(norm) = &self.normalization {
            norm.validate(self.input_shape[0])?;
        }
        if self.arch == Architecture::Linear && self.head != HeadKind::Linear {
            return Err(ModelConfigError::LinearHead);
        }
        self.arch.validate()?;
        // Sizes come from flags, files and configs: bounded before anything is allocated.
        if self.num_classes > crate::size::MAX_CLASSES {
            return Err(ModelConfigError::TooManyClasses {
                classes: self.num_classes,
                max: crate::size::MAX_CLASSES,
            });
        }
        if self.input_shape[1..]
            .iter()
            .any(|&side| side > crate::size::MAX_IMAGE_SIDE)
        {
            return Err(ModelConfigError::InputTooLarge {
                shape: self.input_shape,
                max: crate::size::MAX_IMAGE_SIDE,
            });
        }
        let weights = self.weight_count();
        if weights > crate::size::MAX_WEIGHTS {
            return Err(ModelConfigError::TooManyWeights {
                arch: self.arch.to_string(),
                classes: self.num_classes,
                weights,
                max: crate::size::MAX_WEIGHTS,
            });
        }
        Ok(())
    }

    /// Weights of convolutions and linear layers (BatchNorm, biases and the cosine head's norms are a few percent and
    /// left out), in exact integer arithmetic that cannot overflow for any `usize` inputs.
    pub fn weight_count(&self) -> u128 {
        let [channels, height, width] = self.input_shape.map(|d| d as u128);
        let classes = self.num_classes as u128;
        let conv = |c_in: u128, c_out: u128, kernel: u128| c_in.saturating_mul(c_out).saturating_mul(kernel * kernel);
        // A residual stage of `blocks` blocks from `c_in` to `c_out`: the first may project, the rest keep the width.
        let stage = |c_in: u128, c_out: u128, blocks: u128| {
            if blocks == 0 {
                return 0u128;
            }
            let first = conv(c_in, c_out, 3)
                .saturating_add(conv(c_out, c_out, 3))
                .saturating_add(conv(c_in, c_out, 1));
            let rest = conv(c_out, c_out, 3).saturating_mul(2).saturating_mul(blocks - 1);
            first.saturating_add(rest)
        };
        let residual = |stem: u128, widths: &[u128], blocks: u128| {
            let mut total = conv(channels, stem, 3);
            let mut c_in = stem;
            for &c_out in widths {
                total = total.saturating_add(stage(c_in, c_out, blocks));
                c_in = c_out;
            }
            total.saturating_add(c_in.saturating_mul(classes))
        };
        match self.arch {
            Architecture::ResNet18 | Architecture::PreActResNet18 | Architecture::PreActResNet18Wong => {
                residual(64, &[64, 128, 256, 512], 2)
            }
            Architecture::ResNet50 => {
                // Bottlenecks: 1x1 in, 3x3 inner, 1x1 out (x4), a projection on the first block of each stage.
                let mut total = conv(channels, 64, 3);
                let mut c_in = 64u128;
                for (planes, blocks) in [(64u128, 3u128), (128, 4), (256, 6), (512, 3)] {
                    let block = |c_in: u128| {
                        conv(c_in, planes, 1)
                            .saturating_add(conv(planes, planes, 3))
                            .saturating_add(conv(planes, 4 * planes, 1))
                    };
                    total = total
                        .saturating_add(block(c_in))
                        .saturating_add(conv(c_in, 4 * planes, 1))
                        .saturating_add(block(4 * planes).saturating_mul(blocks - 1));
                    c_in = 4 * planes;
                }
                total.saturating_add(c_in.saturating_mul(classes))
            }
            Architecture::WideResNet { depth, widen }
            | Architecture::DmWideResNet {
                depth, width: widen, ..
            } => {
                let k = widen as u128;
                let blocks = (depth.saturating_sub(4) / 6) as u128;
                residual(16, &[16 * k, 32 * k, 64 * k], blocks)
            }
            Architecture::SmallCnn { width } => {
                let w = width as u128;
                conv(channels, w, 3)
                    .saturating_add(conv(w, 2 * w, 3))
                    .saturating_add(conv(2 * w, 4 * w, 3))
                    .saturating_add((4 * w).saturating_mul(classes))
            }
            Architecture::Linear => channels
                .saturating_mul(height)
                .saturating_mul(width)
                .saturating_mul(classes),
        }
    }

    /// Builds the model with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Model<B>, ModelConfigError> {
        self.validate()?;
        let classes = self.num_classes;
        let channels = self.input_shape[0];
        let network = match self.arch {
            Architecture::ResNet18 => Network::ResNet(
                ResNetConfig::new(classes)
                    .with_in_channels(channels)
                    .with_head(self.head)
                    .init(device),
            ),
            Architecture::PreActResNet18 | Architecture::PreActResNet18Wong => Network::PreActResNet(
                PreActResNetConfig::new(classes)
                    .with_in_channels(channels)
                    .with_head(self.head)
                    .with_wong_variant(self.arch == Architecture::PreActResNet18Wong)
                    .init(device),
            ),
            Architecture::ResNet50 => Network::BottleneckResNet(
                BottleneckResNetConfig::new(classes)
                    .with_in_channels(channels)
                    .with_head(self.head)
                    .init(device),
            ),
            Architecture::DmWideResNet {
                depth,
                width,
                activation,
            } => Network::DmWideResNet(
                DmWideResNetConfig::new(classes)
                    .with_depth(depth)
                    .with_width(width)
                    .with_activation(activation)
                    .with_in_channels(channels)
                    .with_head(self.head)
                    .init(device),
            ),
            Architecture::WideResNet { depth, widen } => Network::WideResNet(
                WideResNetConfig::new(classes)
                    .with_depth(depth)
                    .with_widen(widen)
                    .with_in_channels(channels)
                    .with_head(self.head)
                    .init(device),
            ),
            Architecture::SmallCnn { width } => Network::SmallCnn(
                SmallCnnConfig::new(classes)
                    .with_width(width)
                    .with_in_channels(channels)
                    .with_head(self.head)
                    .init(device),
            ),
            Architecture::Linear => {
                Network::Linear(LinearClassifierConfig::new(classes, self.input_shape.iter().product()).init(device))
            }
        };
        let normalization = match &self.normalization {
            Some(config) => Some(config.init(device)?),
            None => None,
        };
        let model = Model {
            normalization,
            network,
            num_classes: classes,
        };
        // Values now, so that clones of the model (attacks, checkpoints) share them.
        crate::parameters::initialize_parameters(&model);
        Ok(model)
    }
}

/// The network behind a [`Model`].
#[derive(Module, Debug)]
pub enum Network<B: Backend> {
    /// CIFAR ResNet-18.
    ResNet(ResNet<B>),
    /// Pre-activation ResNet-18.
    PreActResNet(PreActResNet<B>),
    /// WideResNet-D-K.
    WideResNet(WideResNet<B>),
    /// The small CNN.
    SmallCnn(SmallCnn<B>),
    /// The linear classifier.
    Linear(LinearClassifier<B>),
    /// CIFAR ResNet-50.
    BottleneckResNet(BottleneckResNet<B>),
    /// DeepMind's WideResNet.
    DmWideResNet(DmWideResNet<B>),
}

/// Any of tailguard's architectures, with optional input normalisation in front.
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    /// Per-channel input normalisation, when configured.
    pub normalization: Option<InputNormalization<B>>,
    /// The network.
    pub network: Network<B>,
    /// Number of classes.
    pub num_classes: usize,
}

impl<B: Backend> Classifier<B> for Model<B> {
    /// (N, C, H, W) in [0, 1] -> (N, classes)
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = match &self.normalization {
            Some(norm) => norm.forward(images),
            None => images,
        };
        match &self.network {
            Network::ResNet(net) => net.forward(x, mode),
            Network::PreActResNet(net) => net.forward(x, mode),
            Network::WideResNet(net) => net.forward(x, mode),
            Network::SmallCnn(net) => net.forward(x, mode),
            Network::Linear(net) => net.forward(x),
            Network::BottleneckResNet(net) => net.forward(x, mode),
            Network::DmWideResNet(net) => net.forward(x, mode),
        }
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn features_and_logits(&self, images: Tensor<B, 4>, mode: Mode) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        let x = match &self.normalization {
            Some(norm) => norm.forward(images),
            None => images,
        };
        let (features, head) = match &self.network {
            Network::ResNet(net) => (net.features(x, mode), &net.head),
            Network::PreActResNet(net) => (net.features(x, mode), &net.head),
            Network::WideResNet(net) => (net.features(x, mode), &net.head),
            Network::SmallCnn(net) => (net.features(x, mode), &net.head),
            Network::BottleneckResNet(net) => (net.features(x, mode), &net.head),
            Network::DmWideResNet(net) => (net.features(x, mode), &net.head),
            Network::Linear(_) => return None,
        };
        let logits = head.forward(features.clone());
        Some((features, logits))
    }
}

#[cfg(test)]
mod weight_count_tests {
    use super::{Architecture, ModelConfig};
    use crate::size::MAX_WEIGHTS;

    #[test]
    fn counts_are_those_of_the_networks() {
        // ResNet-18 for CIFAR-10: 11.17 M parameters, of which convolutions and the head hold 11.16 M.
        let resnet = ModelConfig::new(Architecture::ResNet18, 10).weight_count();
        assert!((11_150_000..11_180_000).contains(&resnet), "{resnet}");
        // WRN-34-10: 46.16 M parameters.
        let wrn = ModelConfig::new(Architecture::WideResNet { depth: 34, widen: 10 }, 10).weight_count();
        assert!((46_000_000..46_200_000).contains(&wrn), "{wrn}");
        // Sizes that would overflow `usize` arithmetic saturate instead.
        let absurd = ModelConfig::new(
            Architecture::WideResNet {
                depth: usize::MAX,
                widen: usize::MAX,
            },
            usize::MAX,
        )
        .weight_count();
        assert!(absurd > MAX_WEIGHTS);
    }
}
