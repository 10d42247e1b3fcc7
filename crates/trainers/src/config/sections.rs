//! The sections of a configuration file besides the method and the attack: data, model, optimizer and validation.

use std::path::PathBuf;

use tailguard_longtail::augment::AugmentPolicy;
use tailguard_longtail::{DatasetKind, ImageFit, ImbalanceProfile, LongTailSpec};
use tailguard_models::Architecture;

use crate::schedule::LrSchedule;

/// Where the training images come from. In files the long-tail settings sit beside the others
/// (`imbalance`, `profile`, `n_max`, `split_seed`); in code they are a [`LongTailSpec`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "DataSectionText", into = "DataSectionText")]
pub struct DataSection {
    /// The dataset's format.
    pub dataset: DatasetKind,
    /// Dataset folder or archive; relative paths are relative to the working directory.
    pub data_dir: PathBuf,
    /// Keep only the dataset's first K classes before the long-tailed split (Tiny-ImageNet-LT keeps 20).
    pub classes: Option<usize>,
    /// Height and width list-file images are fitted to (`dataset = "list"` needs it).
    pub image_size: Option<usize>,
    /// How list-file images of another size are fitted: `center-crop` (default) or `stretch`.
    pub image_fit: ImageFit,
    /// The long-tailed training split (its seed is kept apart from the training seed, so one split serves
    /// several runs).
    pub long_tail: LongTailSpec,
    /// Random crop (padding 4) and horizontal flip.
    pub augment: bool,
    /// A learned policy before crop and flip: `none` (default), `autoaugment` (AT-BSL's "AuA", the CIFAR-10 policy)
    /// or `randaugment` (RandAugment(2, 8), AT-BSL's "RA").
    pub augment_policy: AugmentPolicy,
    /// Draw batches class-balanced instead of shuffling.
    pub class_balanced: bool,
    /// Fraction of each class held out for validation (best-checkpoint selection); 0 disables it.
    pub validation_fraction: f64,
}

/// The data section as files spell it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DataSectionText {
    dataset: DatasetKind,
    data_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_size: Option<usize>,
    #[serde(default)]
    image_fit: ImageFit,
    imbalance: f64,
    #[serde(default)]
    profile: ImbalanceProfile,
    #[serde(default)]
    n_max: Option<usize>,
    #[serde(default)]
    split_seed: u64,
    #[serde(default = "yes")]
    augment: bool,
    #[serde(default)]
    augment_policy: AugmentPolicy,
    #[serde(default)]
    class_balanced: bool,
    #[serde(default)]
    validation_fraction: f64,
}

impl From<DataSectionText> for DataSection {
    fn from(t: DataSectionText) -> Self {
        Self {
            dataset: t.dataset,
            data_dir: t.data_dir,
            classes: t.classes,
            image_size: t.image_size,
            image_fit: t.image_fit,
            long_tail: LongTailSpec {
                imbalance: t.imbalance,
                profile: t.profile,
                n_max: t.n_max,
                seed: t.split_seed,
            },
            augment: t.augment,
            augment_policy: t.augment_policy,
            class_balanced: t.class_balanced,
            validation_fraction: t.validation_fraction,
        }
    }
}

impl From<DataSection> for DataSectionText {
    fn from(d: DataSection) -> Self {
        Self {
            dataset: d.dataset,
            data_dir: d.data_dir,
            classes: d.classes,
            image_size: d.image_size,
            image_fit: d.image_fit,
            imbalance: d.long_tail.imbalance,
            profile: d.long_tail.profile,
            n_max: d.long_tail.n_max,
            split_seed: d.long_tail.seed,
            augment: d.augment,
            augment_policy: d.augment_policy,
            class_balanced: d.class_balanced,
            validation_fraction: d.validation_fraction,
        }
    }
}

fn yes() -> bool {
    true
}

/// The network.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// resnet18, preact-resnet18, wrn-28-10, wrn-34-10, small-cnn[-W], linear.
    #[serde(with = "tailguard_models::architecture::by_name")]
    pub arch: Architecture,
    /// Input normalisation inside the model.
    #[serde(default)]
    pub normalization: Normalization,
    /// Last layer.
    #[serde(default)]
    pub head: Head,
    /// A checkpoint folder whose weights start the training (fine-tuning, e.g. a RobustBench model brought in with
    /// `tailguard import --robustbench`): its weight average where it has one, else its weights. The network is the
    /// checkpoint's (its normalisation and head included); `arch` must name it and the dataset must have its classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
}

/// Input normalisation inside the model: none, or a dataset's per-channel statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// Inputs go in as [0, 1] pixels.
    #[default]
    None,
    /// CIFAR-10 statistics (RobustLT's models).
    Cifar10,
    /// CIFAR-100 statistics.
    Cifar100,
    /// Tiny-ImageNet statistics (RobustLT's `tinylt.py`).
    TinyImagenet,
}

/// The classifier's last layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Head {
    /// `W x + b`.
    #[default]
    Linear,
    /// RoBal's scale-invariant cosine classifier (gamma 1/32).
    Cosine,
}

/// Optimiser and schedule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Epochs of the run.
    pub epochs: usize,
    /// Images per batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// How the learning rate changes per epoch.
    pub schedule: LrSchedule,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// L2 weight decay.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Decay BatchNorm parameters and biases too (PyTorch's default).
    #[serde(default = "yes")]
    pub decay_norms_and_biases: bool,
}

fn default_batch() -> usize {
    128
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    5e-4
}

/// `[logging]`: what a run writes besides `log.jsonl` and its curves.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    /// TensorBoard event files in `RUN/tensorboard` (as `tailguard train --tensorboard`).
    #[serde(default)]
    pub tensorboard: bool,
}

/// `[ema]`: an exponential moving average of the weights (see [`crate::averaging`]); absent, none is kept.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaSection {
    /// The weight of the previous average at each step, in [0, 1).
    #[serde(default = "ema_decay")]
    pub decay: f64,
    /// Warm the decay up over the first steps: `min(decay, (1 + t) / (10 + t))` at update `t`.
    #[serde(default = "enabled")]
    pub warmup: bool,
}

fn ema_decay() -> f64 {
    0.9995
}
fn enabled() -> bool {
    true
}

/// Validation during training (on the held-out part of the training data, never the test set).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSection {
    /// Validate every this many epochs (and after the last).
    #[serde(default = "one_epoch")]
    pub every: usize,
    /// PGD steps of the validation attack (step 2/255 at the training eps, uniform start).
    #[serde(default = "validation_steps")]
    pub attack_steps: usize,
}

fn one_epoch() -> usize {
    1
}
fn validation_steps() -> usize {
    10
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self {
            every: 1,
            attack_steps: 10,
        }
    }
}
