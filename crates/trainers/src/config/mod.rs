//! Training configuration: one TOML file per experiment, `--set key=value` overrides, validation with readable
//! errors. [`TrainConfig`] is the factory of a trainer's typed parts for the built-in methods and architectures
//! (model, [`Method`], [`BudgetPolicy`], [`TrainerConfig`], [`TrainData`]), in one place; a program that brings
//! its own model or method builds those parts itself (see `examples/custom-model`).

mod domains;
mod overrides;
mod sections;

use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::PgdConfig;
use tailguard_longtail::{LoadOptions, Split};
use tailguard_models::{Classifier, HeadKind, InputNormalizationConfig, Model, ModelConfig};

use crate::averaging::WeightAverageConfig;
use crate::budget::{BudgetPolicy, RobustLtConfig};
use crate::data::TrainData;
pub use crate::error::ConfigError;
use crate::error::{TrainError, invalid};
use crate::method::Method;
use crate::optimizer::SgdSettings;
use crate::recipe::Recipe;
pub use crate::recipe::{AttackSection, Budget, MethodConfig, StartKind};
use crate::settings::{AttackBatchNorm, TrainerConfig, ValidationConfig};
use crate::trainer::Trainer;
use overrides::{apply_override, locate};
pub use sections::{
    DataSection, EmaSection, Head, LoggingSection, ModelSection, Normalization, OptimSection, ValidationSection,
};

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
    /// What the run writes besides its log and curves (`[logging]`).
    #[serde(default)]
    pub logging: LoggingSection,
    /// An average of the weights kept during training (`[ema]`); absent, none is kept.
    #[serde(default)]
    pub ema: Option<EmaSection>,
    /// Label smoothing of the method's cross-entropy, `method.label_smoothing` in a file (kept beside the method's
    /// own keys, which differ per method); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub label_smoothing: f64,
    /// Seeds model initialisation, data order, augmentation and attack starts.
    #[serde(default)]
    pub seed: u64,
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
        Self::parse_unplaced(text, overrides).map_err(|e| match e {
            ConfigError::Invalid(message) => invalid(overrides::with_place(text, overrides, message)),
            other => other,
        })
    }

    fn parse_unplaced(text: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(overrides::syntax_error(text, &e)))?;
        for assignment in overrides {
            apply_override(&mut table, assignment)?;
        }
        lift_label_smoothing(&mut table)?;
        // Deserialised from text, so an error carries a span that names the key at fault.
        let resolved = toml::to_string(&table).map_err(|e| invalid(e.to_string()))?;
        let config: TrainConfig =
            toml::from_str(&resolved).map_err(|e: toml::de::Error| invalid(locate(&resolved, &table, &e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML (`label_smoothing` back inside `[method]`, where a file sets it).
    pub fn to_toml(&self) -> String {
        let Ok(mut table) = toml::Table::try_from(self) else {
            return String::new();
        };
        if let Some(value) = table.remove(LABEL_SMOOTHING)
            && let Some(toml::Value::Table(method)) = table.get_mut("method")
        {
            method.insert(LABEL_SMOOTHING.into(), value);
        }
        toml::to_string_pretty(&table).unwrap_or_default()
    }

    /// Rejects impossible values with a readable message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        domains::check(self)?;
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
        if let MethodConfig::Awp { warmup, .. } = self.method
            && warmup >= o.epochs
        {
            return Err(invalid(format!(
                "method.warmup ({warmup}) leaves no epoch of optim.epochs ({}) with weight perturbation",
                o.epochs
            )));
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
    /// evaluation reads back to fit list-file images). With `model.init_from`, the checkpoint's network, checked
    /// against `model.arch`, the classes and the image shape.
    pub fn model_config_for(&self, data: &TrainData) -> Result<ModelConfig, ConfigError> {
        let shape = data.train.shape();
        let input_shape = [shape.channels, shape.height, shape.width];
        let Some(dir) = &self.model.init_from else {
            return Ok(self.model_config(data.classes.len())?.with_input_shape(input_shape));
        };
        let place = |reason: String| invalid(format!("model.init_from = \"{}\": {reason}", dir.display()));
        let meta = tailguard_models::read_checkpoint_meta(dir).map_err(|e| place(e.to_string()))?;
        let config = meta.model_config(dir).map_err(|e| place(e.to_string()))?.clone();
        if config.arch != self.model.arch {
            return Err(place(format!(
                "the checkpoint is a {}, model.arch says {}: set model.arch = \"{}\"",
                config.arch, self.model.arch, config.arch
            )));
        }
        if config.num_classes != data.classes.len() {
            return Err(place(format!(
                "the checkpoint has {} classes, the dataset {}",
                config.num_classes,
                data.classes.len()
            )));
        }
        if config.input_shape != input_shape {
            return Err(place(format!(
                "the checkpoint takes {:?} images, the dataset has {input_shape:?}",
                config.input_shape
            )));
        }
        Ok(config)
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
            .with_validation(validation)
            .with_label_smoothing(self.label_smoothing)
            .with_weight_average(
                self.ema
                    .as_ref()
                    .map(|ema| WeightAverageConfig::new().with_decay(ema.decay).with_warmup(ema.warmup)),
            );
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
        let model = match &self.model.init_from {
            Some(dir) => {
                let meta = tailguard_models::read_checkpoint_meta(dir)?;
                let weights = tailguard_models::Weights::resolve(None, &meta, dir)?;
                tailguard_models::load_checkpoint_weights::<B>(dir, weights, device)?.0
            }
            None => model_config.init::<B>(device)?,
        };
        self.recipe().trainer(model, self.trainer_config(), data, device)
    }

    /// A trainer for continuing a run whose network is `model_config` (its last checkpoint's): initialised from
    /// `seed`, as [`TrainConfig::trainer`] but without reading `model.init_from` again (the checkpoint being resumed
    /// holds the weights, and the one fine-tuning started from may be gone).
    pub fn resumed_trainer<B: AutodiffBackend>(
        &self,
        data: &TrainData,
        model_config: &ModelConfig,
        device: &B::Device,
    ) -> Result<Trainer<B, Model<B>>, TrainError> {
        <B as burn::tensor::backend::Backend>::seed(device, self.seed);
        let model = model_config.init::<B>(device)?;
        self.recipe().trainer(model, self.trainer_config(), data, device)
    }

    /// The method's name.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            MethodConfig::Natural => "natural",
            MethodConfig::PgdAt { .. } => "pgd-at",
            MethodConfig::Awp { .. } => "awp",
            MethodConfig::Trades { .. } => "trades",
            MethodConfig::AtBsl { .. } => "at-bsl",
            MethodConfig::Robal { .. } => "robal",
            MethodConfig::Reat { .. } => "reat",
            MethodConfig::Taet { .. } => "taet",
        }
    }
}

#[cfg(test)]
mod tests;

const LABEL_SMOOTHING: &str = "label_smoothing";

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// Moves `method.label_smoothing` to the top level of the table, where [`TrainConfig`] keeps it: the method's section
/// is a tagged choice whose keys differ per method, and label smoothing belongs to none of them alone.
fn lift_label_smoothing(table: &mut toml::Table) -> Result<(), ConfigError> {
    if table.contains_key(LABEL_SMOOTHING) {
        return Err(invalid(
            "label_smoothing belongs in [method]: write method.label_smoothing",
        ));
    }
    if let Some(toml::Value::Table(method)) = table.get_mut("method")
        && let Some(value) = method.remove(LABEL_SMOOTHING)
    {
        table.insert(LABEL_SMOOTHING.into(), value);
    }
    Ok(())
}
