//! Training configuration: one TOML file per experiment, `--set key=value` overrides, validation with readable
//! errors. [`TrainConfig`] is the factory of a trainer's typed parts for the built-in methods and architectures
//! (model, [`Method`], [`BudgetPolicy`], [`TrainerConfig`], [`TrainData`]), in one place; a program that brings
//! its own model or method builds those parts itself (see `examples/custom-model`).

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::PgdConfig;
use tailguard_longtail::augment::AugmentPolicy;
use tailguard_longtail::{DatasetKind, ImageFit, ImbalanceProfile, LoadOptions, LongTailSpec, Split};
use tailguard_models::{Architecture, Classifier, HeadKind, InputNormalizationConfig, Model, ModelConfig};

use crate::budget::{BudgetPolicy, RobustLtConfig};
use crate::data::TrainData;
pub use crate::error::ConfigError;
use crate::error::{TrainError, invalid};
use crate::method::Method;
use crate::optimizer::SgdSettings;
use crate::recipe::Recipe;
pub use crate::recipe::{AttackSection, Budget, MethodConfig, StartKind};
use crate::schedule::LrSchedule;
use crate::settings::{AttackBatchNorm, TrainerConfig, ValidationConfig};
use crate::trainer::Trainer;

/// The whole experiment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the images come from and how they are cut.
    pub data: DataSection,
    /// The network.
    pub model: ModelSection,
    /// Optimiser and schedule.
    pub optim: OptimSection,
    /// The training attack (each method's inner maximisation uses it).
    pub attack: AttackSection,
    /// The method and its own settings.
    pub method: MethodConfig,
    /// RobustLT's class-wise budgets and warm-up, on top of any method.
    #[serde(default)]
    pub robustlt: Option<RobustLtConfig>,
    #[serde(default)]
    /// Validation during training.
    pub validation: ValidationSection,
    /// Seeds model initialisation, data order, augmentation and attack starts.
    #[serde(default)]
    pub seed: u64,
}

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

impl TrainConfig {
    /// Reads a TOML file and applies `key=value` overrides (dotted keys, TOML values; bare words are strings).
    pub fn load(path: &std::path::Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, overrides).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text and applies overrides.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
        for assignment in overrides {
            apply_override(&mut table, assignment)?;
        }
        // Deserialised from text, so an error carries a span that names the key at fault.
        let resolved = toml::to_string(&table).map_err(|e| invalid(e.to_string()))?;
        let config: TrainConfig =
            toml::from_str(&resolved).map_err(|e: toml::de::Error| invalid(locate(&resolved, &e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Rejects impossible values with a readable message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.data;
        if !(d.long_tail.imbalance >= 1.0 && d.long_tail.imbalance.is_finite()) {
            return Err(invalid(format!(
                "data.imbalance must be >= 1, got {}",
                d.long_tail.imbalance
            )));
        }
        if !(0.0..0.9).contains(&d.validation_fraction) {
            return Err(invalid(format!(
                "data.validation_fraction must be in [0, 0.9), got {}",
                d.validation_fraction
            )));
        }
        self.model_config(1)?;
        let o = &self.optim;
        if o.epochs == 0 {
            return Err(invalid("optim.epochs must be at least 1"));
        }
        if o.batch_size == 0 {
            return Err(invalid("optim.batch_size must be at least 1"));
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(invalid(format!("optim.lr must be positive, got {}", o.lr)));
        }
        o.schedule
            .validate(o.epochs)
            .map_err(|e| invalid(format!("optim.{e}")))?;
        self.sgd().validate().map_err(|e| invalid(format!("optim.{e}")))?;
        self.attack()?;
        if let MethodConfig::Taet { ce_epochs, .. } = self.method
            && ce_epochs > o.epochs
        {
            return Err(invalid(format!(
                "method.ce_epochs ({ce_epochs}) exceeds optim.epochs ({}): TAET would never reach its adversarial stage",
                o.epochs
            )));
        }
        self.method.validate()?;
        if let MethodConfig::Awp { warmup, .. } = self.method {
            if warmup >= o.epochs {
                return Err(invalid(format!(
                    "method.warmup ({warmup}) leaves no epoch of optim.epochs ({}) with weight perturbation",
                    o.epochs
                )));
            }
        }
        if let Some(r) = &self.robustlt {
            r.validate().map_err(|e| invalid(e.to_string()))?;
        }
        if self.validation.every == 0 {
            return Err(invalid("validation.every must be at least 1"));
        }
        Ok(())
    }

    /// The model for `data`: its classes, and its image shape (which the linear classifier depends on, and which
    /// evaluation reads back to fit list-file images).
    pub fn model_config_for(&self, data: &TrainData) -> Result<ModelConfig, ConfigError> {
        let shape = data.train.shape();
        Ok(self
            .model_config(data.classes.len())?
            .with_input_shape([shape.channels, shape.height, shape.width]))
    }

    /// The model for `num_classes` classes (3x32x32 inputs).
    pub fn model_config(&self, num_classes: usize) -> Result<ModelConfig, ConfigError> {
        let normalization = match self.model.normalization {
            Normalization::None => None,
            Normalization::Cifar10 => Some(InputNormalizationConfig::cifar10()),
            Normalization::Cifar100 => Some(InputNormalizationConfig::cifar100()),
            Normalization::TinyImagenet => Some(InputNormalizationConfig::tiny_imagenet()),
        };
        let head = match self.model.head {
            Head::Linear => HeadKind::Linear,
            Head::Cosine => HeadKind::ROBAL,
        };
        if num_classes == 0 {
            return Err(invalid("the dataset has zero classes"));
        }
        let config = ModelConfig::new(self.model.arch, num_classes)
            .with_normalization(normalization)
            .with_head(head);
        config.validate().map_err(|e| invalid(format!("model: {e}")))?;
        Ok(config)
    }

    /// The method, its training attack and RobustLT's budgets: what the reference code decides.
    pub fn recipe(&self) -> Recipe {
        Recipe {
            method: self.method.clone(),
            attack: self.attack.clone(),
            robustlt: self.robustlt,
        }
    }

    /// The training attack ([`Recipe::attack`]).
    pub fn attack(&self) -> Result<PgdConfig, ConfigError> {
        self.recipe().attack()
    }

    /// How BatchNorm normalises during the training attack ([`Recipe::attack_batch_norm`]).
    pub fn attack_batch_norm(&self) -> AttackBatchNorm {
        self.recipe().attack_batch_norm()
    }

    /// The budget policy of this run ([`Recipe::budget_policy`]).
    pub fn budget_policy(&self, counts: &[usize]) -> BudgetPolicy {
        self.recipe().budget_policy(counts, self.optim.epochs)
    }

    /// The built-in method the configuration names, for training counts `counts` ([`Recipe::method`]).
    pub fn method<B: AutodiffBackend, M: Classifier<B> + 'static>(
        &self,
        counts: &[usize],
    ) -> Result<Box<dyn Method<B, M>>, ConfigError> {
        self.recipe().method(counts)
    }

    /// The optimiser settings.
    pub fn sgd(&self) -> SgdSettings {
        let o = &self.optim;
        SgdSettings {
            momentum: o.momentum,
            nesterov: o.nesterov,
            weight_decay: o.weight_decay,
            decay_norms_and_biases: o.decay_norms_and_biases,
        }
    }

    /// The loop's settings: optimizer, schedule, batches, augmentation, validation and seed.
    pub fn trainer_config(&self) -> TrainerConfig {
        let o = &self.optim;
        let validation = (self.data.validation_fraction > 0.0).then(|| {
            ValidationConfig::new(self.attack.eps.0)
                .with_every(self.validation.every)
                .with_attack_steps(self.validation.attack_steps)
        });
        let config = TrainerConfig::new(o.epochs, o.lr)
            .with_schedule(o.schedule.clone())
            .with_batch_size(o.batch_size)
            .with_sgd(self.sgd())
            .with_augment(self.data.augment)
            .with_augment_policy(self.data.augment_policy)
            .with_class_balanced(self.data.class_balanced)
            .with_seed(self.seed)
            .with_validation(validation);
        self.recipe().trainer_config(config)
    }

    /// Loads the dataset, cuts the long-tailed split and holds out the validation fraction.
    pub fn load_data(&self) -> Result<TrainData, TrainError> {
        let d = &self.data;
        let options = LoadOptions {
            classes: d.classes,
            image_size: d.image_size,
            fit: d.image_fit,
        };
        let source = d.dataset.load_with(&d.data_dir, Split::Train, &options)?;
        let long_tailed = d.long_tail.select(&source)?.apply(&source)?;
        Ok(TrainData::from_dataset(
            long_tailed,
            d.validation_fraction,
            d.long_tail.seed,
        )?)
    }

    /// A trainer of the configured architecture (initialised from `seed`) and method, at epoch 0.
    pub fn trainer<B: AutodiffBackend>(
        &self,
        data: &TrainData,
        device: &B::Device,
    ) -> Result<Trainer<B, Model<B>>, TrainError> {
        let model_config = self.model_config_for(data)?;
        <B as burn::tensor::backend::Backend>::seed(device, self.seed);
        let model = model_config.init::<B>(device)?;
        self.recipe().trainer(model, self.trainer_config(), data, device)
    }

    /// The method's name.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            MethodConfig::Natural => "natural",
            MethodConfig::PgdAt => "pgd-at",
            MethodConfig::Awp { .. } => "awp",
            MethodConfig::Trades { .. } => "trades",
            MethodConfig::AtBsl { .. } => "at-bsl",
            MethodConfig::Robal { .. } => "robal",
            MethodConfig::Reat { .. } => "reat",
            MethodConfig::Taet { .. } => "taet",
        }
    }
}

/// `a.b.c=value`: sets a nested key. The value is read as TOML (`0.1`, `true`, `[75, 90]`, `"x"`); anything else
/// is taken as a string.
/// A deserialisation error with the key it is about: `attack.steps: invalid value: integer `-3`, expected usize`.
fn locate(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().to_string();
    let Some(span) = error.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let key = line.split('=').next().unwrap_or_default().trim();
    let section = before
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .map(str::to_string);
    match (section, key.is_empty() || key.starts_with('[')) {
        (_, true) => message,
        (Some(section), false) => format!("{section}.{key}: {message}"),
        (None, false) => format!("{key}: {message}"),
    }
}

fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| invalid(format!("--set expects key=value, got '{assignment}'")))?;
    if key.trim().is_empty() || key.split('.').any(|part| part.trim().is_empty()) {
        return Err(invalid(format!("--set '{assignment}': the key has an empty part")));
    }
    let value: toml::Value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut current = table;
    for part in &parts[..parts.len() - 1] {
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| invalid(format!("--set {key}: '{part}' is not a section")))?;
    }
    current.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::AbsentClasses;
    use crate::method::ExtraCleanForward;
    use tailguard_attacks::{StartClip, StartRadius};

    const BASE: &str = r#"
seed = 1
[data]
dataset = "cifar10"
data_dir = "datasets/cifar10-lt-mini.tar.gz"
imbalance = 10
[model]
arch = "small-cnn"
[optim]
epochs = 4
lr = 0.05
schedule = { name = "multi-step", milestones = [3], gamma = 0.1 }
[attack]
eps = "8/255"
step_size = "2/255"
steps = 3
[method]
name = "taet"
ce_epochs = 2
"#;

    #[test]
    fn quirks_default_to_the_reference_code_and_can_be_set() {
        // The base without TAET's own keys, so any method can be named.
        let base = BASE.replace("ce_epochs = 2\n", "");
        let parse = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            TrainConfig::parse(&base, &sets).unwrap()
        };
        // PGD-AT's reference (RobustLT's port): batch statistics, start clipped to [0, 1].
        let pgd_at = parse(&["method.name=pgd-at"]);
        assert_eq!(pgd_at.attack_batch_norm(), AttackBatchNorm::Batch);
        assert_eq!(pgd_at.attack().unwrap().start_clip, StartClip::Box);
        // TAET's notebook: running statistics, unclipped start, the extra clean pass first.
        let taet = parse(&["method.name=taet", "method.ce_epochs=1"]);
        assert_eq!(taet.attack_batch_norm(), AttackBatchNorm::Running);
        assert_eq!(taet.attack().unwrap().start_clip, StartClip::None);
        assert!(!taet.trainer_config().logging_forwards);
        // Under RobustLT, its port's quirks; each can be set back.
        let port = parse(&["method.name=at-bsl", "robustlt.alpha=0.3", "robustlt.beta=0.8"]);
        assert_eq!(port.attack_batch_norm(), AttackBatchNorm::Batch);
        assert!(port.trainer_config().logging_forwards);
        assert_eq!(
            port.method.official_extra_clean_forward(true),
            ExtraCleanForward::AfterAdversarial
        );
        let set_back = parse(&[
            "method.name=at-bsl",
            "robustlt.alpha=0.3",
            "robustlt.beta=0.8",
            "robustlt.logging_forwards=false",
            "attack.batch_norm=running",
            "attack.start_clip=ball",
        ]);
        assert_eq!(set_back.attack_batch_norm(), AttackBatchNorm::Running);
        assert!(!set_back.trainer_config().logging_forwards);
        assert_eq!(set_back.attack().unwrap().start_clip, StartClip::Ball);
        assert_eq!(port.attack().unwrap().start_radius, StartRadius::Configured);
        assert_eq!(pgd_at.attack().unwrap().start_radius, StartRadius::Budget);
        // The extra pass is spelled as a place or, as older files do, a flag; anything else is refused by name.
        let after = parse(&[
            "method.name=taet",
            "method.ce_epochs=1",
            "method.extra_clean_forward=after-adversarial",
        ]);
        assert!(matches!(
            after.method,
            MethodConfig::Taet {
                extra_clean_forward: Some(ExtraCleanForward::AfterAdversarial),
                ..
            }
        ));
        let off = parse(&[
            "method.name=taet",
            "method.ce_epochs=1",
            "method.extra_clean_forward=false",
        ]);
        assert!(matches!(
            off.method,
            MethodConfig::Taet {
                extra_clean_forward: Some(ExtraCleanForward::None),
                ..
            }
        ));
        let bad = TrainConfig::parse(&base, &["method.extra_clean_forward=sometimes".into()]).unwrap_err();
        assert!(bad.to_string().contains("sometimes"), "{bad}");
    }

    #[test]
    fn parses_with_defaults_and_fractions() {
        let config = TrainConfig::parse(BASE, &[]).unwrap();
        assert_eq!(config.attack.eps.0, 8.0 / 255.0);
        assert_eq!(config.optim.batch_size, 128);
        assert!(config.data.augment);
        assert_eq!(config.data.augment_policy, AugmentPolicy::None);
        match config.method {
            MethodConfig::Taet {
                ce_epochs,
                alpha,
                extra_clean_forward,
                absent_classes,
                ..
            } => {
                assert_eq!((ce_epochs, alpha, extra_clean_forward), (2, 0.1, None));
                assert_eq!(absent_classes, AbsentClasses::Zero);
            }
            _ => panic!("not TAET"),
        }
        // Round trip through TOML.
        assert_eq!(TrainConfig::parse(&config.to_toml(), &[]).unwrap(), config);
    }

    #[test]
    fn overrides_apply_dotted_keys() {
        let sets = [
            "optim.lr=0.2".to_string(),
            "attack.eps=0.031".into(),
            "robustlt.alpha=0.3".into(),
            "robustlt.beta=0.8".into(),
        ];
        let config = TrainConfig::parse(BASE, &sets).unwrap();
        assert_eq!(config.optim.lr, 0.2);
        assert_eq!(config.attack.eps.0, 0.031);
        assert_eq!(config.robustlt, Some(RobustLtConfig::new(0.3, 0.8)));
        let config = TrainConfig::parse(BASE, &["model.arch=resnet18".to_string()]).unwrap();
        assert_eq!(config.model.arch, Architecture::ResNet18);
    }

    #[test]
    fn impossible_values_are_clear_errors() {
        let err = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            TrainConfig::parse(BASE, &sets).unwrap_err().to_string()
        };
        assert!(err(&["attack.eps=-0.1"]).contains("[0, 1]"));
        assert!(err(&["method.ce_epochs=9"]).contains("ce_epochs (9) exceeds optim.epochs (4)"));
        let awp = |set: &str| {
            let base = BASE.replace("ce_epochs = 2\n", "").replace("\"taet\"", "\"awp\"");
            TrainConfig::parse(&base, &[set.to_string()]).unwrap_err().to_string()
        };
        assert!(awp("method.gamma=-1").contains("method.gamma must be >= 0"));
        assert!(awp("method.warmup=4").contains("method.warmup (4) leaves no epoch"));
        assert!(awp("method.proxy=adam").contains("adam"));
        assert!(err(&["optim.epochs=0"]).contains("epochs must be at least 1"));
        assert!(err(&["optim.colour=3"]).contains("colour"), "unknown keys are rejected");
        assert!(err(&["model.arch=vgg"]).contains("unknown architecture"));
        assert!(err(&["data.imbalance=0.5"]).contains(">= 1"));
        assert!(err(&["method.name=magic"]).contains("magic"));
        assert!(err(&["optim.schedule.milestones=[3, 2]"]).contains("increase"));
        assert!(err(&["nonsense"]).contains("key=value"));
    }

    #[test]
    fn the_augment_policy_reaches_the_loop() {
        let parse = |set: &str| TrainConfig::parse(BASE, &[set.to_string()]);
        let config = parse("data.augment_policy=\"autoaugment\"").unwrap();
        assert_eq!(config.trainer_config().augment_policy, AugmentPolicy::AutoAugment);
        assert!(config.trainer_config().augment);
        let config = parse("data.augment_policy=\"ra\"").unwrap();
        assert_eq!(config.trainer_config().augment_policy, AugmentPolicy::RandAugment);
        let bad = parse("data.augment_policy=\"trivial\"").unwrap_err().to_string();
        assert!(
            bad.starts_with("data.augment_policy: ") && bad.contains("autoaugment"),
            "{bad}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let err = |set: &str| TrainConfig::parse(BASE, &[set.to_string()]).unwrap_err().to_string();
        for (set, key) in [
            ("model.head=round", "model.head"),
            ("model.normalization=imagenet", "model.normalization"),
            ("model.arch=vgg", "model.arch"),
            ("attack.start=sideways", "attack.start"),
            ("data.imbalance=ten", "data.imbalance"),
            ("data.augment=3", "data.augment"),
            ("optim.epochs=many", "optim.epochs"),
        ] {
            let message = err(set);
            assert!(message.starts_with(&format!("{key}: ")), "{set}: {message}");
        }
        assert!(err("model.arch=vgg").contains("unknown architecture 'vgg'"));
        assert!(
            err("attack.start=sideways").contains("uniform-positive"),
            "lists the choices"
        );
    }
}
