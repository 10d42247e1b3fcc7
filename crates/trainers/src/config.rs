//! Training configuration: one TOML file per experiment, `--set key=value` overrides, validation with readable
//! errors, and the methods and attack it describes.

use std::path::PathBuf;

use tailguard_attacks::{PgdConfig, RandomStart, parse_eps};
use tailguard_longtail::{DatasetKind, ImbalanceProfile};
use tailguard_models::{Architecture, HeadKind, InputNormalizationConfig, ModelConfig};

use crate::budget::RobustLtConfig;
use crate::losses::AbsentClasses;
use crate::optimizer::SgdSettings;
use crate::schedule::LrSchedule;

/// A budget in a config: a number (`0.031`) or a fraction string (`"8/255"`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "BudgetText", into = "f64")]
pub struct Budget(pub f64);

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum BudgetText {
    Number(f64),
    Text(String),
}

impl TryFrom<BudgetText> for Budget {
    type Error = String;
    fn try_from(value: BudgetText) -> Result<Self, String> {
        match value {
            BudgetText::Number(v) => parse_eps(&v.to_string()).map(Budget),
            BudgetText::Text(t) => parse_eps(&t).map(Budget),
        }
    }
}

impl From<Budget> for f64 {
    fn from(b: Budget) -> f64 {
        b.0
    }
}

/// The whole experiment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub data: DataSection,
    pub model: ModelSection,
    pub optim: OptimSection,
    /// The training attack (each method's inner maximisation uses it).
    pub attack: AttackSection,
    pub method: MethodConfig,
    /// RobustLT's class-wise budgets and warm-up, on top of any method.
    #[serde(default)]
    pub robustlt: Option<RobustLtConfig>,
    #[serde(default)]
    pub validation: ValidationSection,
    /// Seeds model initialisation, data order, augmentation and attack starts.
    #[serde(default)]
    pub seed: u64,
}

/// Where the training images come from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub dataset: DatasetKind,
    /// Dataset folder or archive; relative paths are relative to the working directory.
    pub data_dir: PathBuf,
    /// Imbalance ratio of the long-tailed training split.
    pub imbalance: f64,
    #[serde(default)]
    pub profile: ImbalanceProfile,
    /// Size of the head class [default: the largest class of the source].
    #[serde(default)]
    pub n_max: Option<usize>,
    /// Seed of the long-tailed selection (kept apart from the training seed, so one split serves several runs).
    #[serde(default)]
    pub split_seed: u64,
    /// Random crop (padding 4) and horizontal flip.
    #[serde(default = "yes")]
    pub augment: bool,
    /// Draw batches class-balanced instead of shuffling.
    #[serde(default)]
    pub class_balanced: bool,
    /// Fraction of each class held out for validation (best-checkpoint selection); 0 disables it.
    #[serde(default)]
    pub validation_fraction: f64,
}

fn yes() -> bool {
    true
}

/// The network.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// resnet18, preact-resnet18, wrn-28-10, wrn-34-10, small-cnn[-W], linear.
    pub arch: String,
    /// Input normalisation inside the model: none, cifar10 or cifar100 statistics.
    #[serde(default = "no_normalization")]
    pub normalization: String,
    /// Last layer: linear, or cosine (RoBal's scale-invariant classifier, gamma 1/32).
    #[serde(default = "linear_head")]
    pub head: String,
}

fn linear_head() -> String {
    "linear".into()
}

fn no_normalization() -> String {
    "none".into()
}

/// Optimiser and schedule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    pub lr: f64,
    pub schedule: LrSchedule,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
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

/// The training attack.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSection {
    pub eps: Budget,
    pub step_size: Budget,
    pub steps: usize,
    /// none, uniform, uniform-positive (RoBal) or gaussian.
    #[serde(default = "default_start")]
    pub start: String,
    /// Standard deviation of the Gaussian start.
    #[serde(default = "default_start_std")]
    pub start_std: f64,
}

fn default_start() -> String {
    "uniform".into()
}
fn default_start_std() -> f64 {
    0.001
}

/// The method and its own settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MethodConfig {
    /// Cross-entropy on clean images.
    Natural,
    /// Cross-entropy on PGD examples.
    PgdAt,
    /// Clean CE + beta KL(clean || adversarial).
    Trades {
        #[serde(default = "trades_beta")]
        beta: f64,
    },
    /// Balanced softmax on PGD examples.
    AtBsl {
        #[serde(default = "one")]
        tau: f64,
    },
    /// Re-weighted inner loss, balanced softmax and a tail feature term.
    Reat {
        #[serde(default = "one")]
        tau: f64,
    },
    /// Cosine classifier with class-aware margins and prior bias, plus a KL term (RoBal-R by default).
    Robal {
        #[serde(default = "robal_scale")]
        scale: f64,
        #[serde(default = "tenth")]
        margin: f64,
        #[serde(default = "robal_tau_m")]
        tau_m: f64,
        #[serde(default = "robal_tau_b")]
        tau_b: f64,
        #[serde(default = "one")]
        adversarial_weight: f64,
        #[serde(default = "trades_beta")]
        kl_weight: f64,
    },
    /// Clean CE for `ce_epochs`, then HARL.
    Taet {
        #[serde(default = "ce_epochs")]
        ce_epochs: usize,
        #[serde(default = "tenth")]
        alpha: f64,
        #[serde(default = "tenth")]
        beta: f64,
        #[serde(default = "tenth")]
        gamma: f64,
        #[serde(default = "yes")]
        extra_clean_forward: bool,
        #[serde(default)]
        absent_classes: AbsentClasses,
    },
}

fn trades_beta() -> f64 {
    6.0
}
fn one() -> f64 {
    1.0
}
fn robal_scale() -> f64 {
    10.0
}
fn robal_tau_m() -> f64 {
    0.3
}
fn robal_tau_b() -> f64 {
    1.5
}
fn ce_epochs() -> usize {
    40
}
fn tenth() -> f64 {
    0.1
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

/// Errors in a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
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
        if !(d.imbalance >= 1.0 && d.imbalance.is_finite()) {
            return Err(invalid(format!("data.imbalance must be >= 1, got {}", d.imbalance)));
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
            .map_err(|e| invalid(format!("optim.schedule: {e}")))?;
        self.sgd().validate().map_err(|e| invalid(format!("optim: {e}")))?;
        self.attack()?;
        if let MethodConfig::Taet { ce_epochs, .. } = self.method
            && ce_epochs > o.epochs
        {
            return Err(invalid(format!(
                "method.ce_epochs ({ce_epochs}) exceeds optim.epochs ({}): TAET would never reach its adversarial stage",
                o.epochs
            )));
        }
        if let MethodConfig::Trades { beta } | MethodConfig::AtBsl { tau: beta } = self.method
            && !(beta >= 0.0 && beta.is_finite())
        {
            return Err(invalid(format!("method weight must be >= 0, got {beta}")));
        }
        if let MethodConfig::Robal { scale, .. } = self.method
            && !(scale > 0.0 && scale.is_finite())
        {
            return Err(invalid(format!("method.scale must be positive, got {scale}")));
        }
        if let Some(r) = &self.robustlt {
            r.validate().map_err(invalid)?;
        }
        if self.validation.every == 0 {
            return Err(invalid("validation.every must be at least 1"));
        }
        Ok(())
    }

    /// The model for `num_classes` classes.
    pub fn model_config(&self, num_classes: usize) -> Result<ModelConfig, ConfigError> {
        let arch: Architecture = self
            .model
            .arch
            .parse()
            .map_err(|e: String| invalid(format!("model.arch: {e}")))?;
        let normalization = match self.model.normalization.as_str() {
            "none" => None,
            "cifar10" => Some(InputNormalizationConfig::cifar10()),
            "cifar100" => Some(InputNormalizationConfig::cifar100()),
            other => {
                return Err(invalid(format!(
                    "model.normalization must be none, cifar10 or cifar100, got '{other}'"
                )));
            }
        };
        let head = match self.model.head.as_str() {
            "linear" => HeadKind::Linear,
            "cosine" => HeadKind::ROBAL,
            other => return Err(invalid(format!("model.head must be linear or cosine, got '{other}'"))),
        };
        if num_classes == 0 {
            return Err(invalid("the dataset has zero classes"));
        }
        let config = ModelConfig::new(arch, num_classes)
            .with_normalization(normalization)
            .with_head(head);
        config.validate().map_err(|e| invalid(format!("model: {e}")))?;
        Ok(config)
    }

    /// The training attack.
    pub fn attack(&self) -> Result<PgdConfig, ConfigError> {
        let a = &self.attack;
        let start = match a.start.as_str() {
            "none" => RandomStart::None,
            "uniform" => RandomStart::Uniform,
            "gaussian" => RandomStart::Gaussian { std: a.start_std },
            "uniform-positive" => RandomStart::UniformPositive,
            other => {
                return Err(invalid(format!(
                    "attack.start must be none, uniform, uniform-positive or gaussian, got '{other}'"
                )));
            }
        };
        if a.steps == 0 && !matches!(self.method, MethodConfig::Natural) {
            return Err(invalid("attack.steps must be at least 1 for adversarial training"));
        }
        let config = PgdConfig::new()
            .with_eps(a.eps.0)
            .with_step_size(a.step_size.0)
            .with_steps(a.steps)
            .with_start(start);
        config.validate().map_err(|e| invalid(format!("attack: {e}")))?;
        Ok(config)
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

    /// The method's name.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            MethodConfig::Natural => "natural",
            MethodConfig::PgdAt => "pgd-at",
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
    fn parses_with_defaults_and_fractions() {
        let config = TrainConfig::parse(BASE, &[]).unwrap();
        assert_eq!(config.attack.eps.0, 8.0 / 255.0);
        assert_eq!(config.optim.batch_size, 128);
        assert!(config.data.augment);
        match config.method {
            MethodConfig::Taet {
                ce_epochs,
                alpha,
                extra_clean_forward,
                absent_classes,
                ..
            } => {
                assert_eq!((ce_epochs, alpha, extra_clean_forward), (2, 0.1, true));
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
        assert_eq!(config.robustlt, Some(RobustLtConfig { alpha: 0.3, beta: 0.8 }));
        let config = TrainConfig::parse(BASE, &["model.arch=resnet18".to_string()]).unwrap();
        assert_eq!(config.model.arch, "resnet18");
    }

    #[test]
    fn impossible_values_are_clear_errors() {
        let err = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            TrainConfig::parse(BASE, &sets).unwrap_err().to_string()
        };
        assert!(err(&["attack.eps=-0.1"]).contains("[0, 1]"));
        assert!(err(&["method.ce_epochs=9"]).contains("ce_epochs (9) exceeds optim.epochs (4)"));
        assert!(err(&["optim.epochs=0"]).contains("epochs must be at least 1"));
        assert!(err(&["optim.colour=3"]).contains("colour"), "unknown keys are rejected");
        assert!(err(&["model.arch=vgg"]).contains("unknown architecture"));
        assert!(err(&["data.imbalance=0.5"]).contains(">= 1"));
        assert!(err(&["method.name=magic"]).contains("magic"));
        assert!(err(&["optim.schedule.milestones=[3, 2]"]).contains("increase"));
        assert!(err(&["nonsense"]).contains("key=value"));
    }
}
