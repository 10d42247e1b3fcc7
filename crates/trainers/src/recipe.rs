//! A training method as its reference code runs it: the method's settings, the training attack, RobustLT's
//! class-wise budgets when they are used, and the step options the reference code implies (BatchNorm during the
//! attack, where the attack starts, RobustLT's logging passes, extra forward passes). [`Recipe`] is the one value
//! that carries all of it, so a program that embeds tailguard trains exactly what `tailguard train` trains with the
//! same numbers; [`crate::TrainConfig`] reads one from a file.
//!
//! ```
//! use tailguard_trainers::{AttackSection, Budget, MethodConfig, Recipe, RobustLtConfig};
//!
//! // RobustLT on AT-BSL (CIFAR-10-LT): its port attacks with batch statistics and logs with two more forwards.
//! let attack = AttackSection::new(Budget(8.0 / 255.0), Budget(2.0 / 255.0), 10);
//! let recipe = Recipe::robust_lt(MethodConfig::at_bsl(), attack, RobustLtConfig::new(0.3, 0.8));
//! let options = recipe.step_options();
//! assert_eq!(options.attack_batch_norm, tailguard_trainers::AttackBatchNorm::Batch);
//! assert!(options.logging_forwards);
//! let budgets = recipe.budget_policy(&[500, 50], 100);
//! assert!(budgets.full_budgets()[1] > budgets.full_budgets()[0]); // the tail class gets the larger budget
//! ```

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{AttackConfigError, PgdConfig, RandomStart, StartClip, StartRadius, parse_eps};
use tailguard_models::Classifier;

use crate::budget::{BudgetPolicy, RobustLtConfig};
use crate::data::TrainData;
use crate::domain::{Domain, number};
use crate::error::{ConfigError, TrainError, invalid};
use crate::losses::AbsentClasses;
use crate::method::{ExtraCleanForward, Method};
use crate::methods::{AtBsl, Awp, Natural, PgdAt, Reat, Robal, Taet, Trades};
use crate::settings::{AttackBatchNorm, StepOptions, TrainerConfig};
use crate::trainer::Trainer;
use crate::weight_perturbation::{AwpProxy, WeightPerturbationConfig};

/// A method with its training attack and, for RobustLT, its budgets: everything of a run that the method's
/// reference code decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The method and its own settings.
    pub method: MethodConfig,
    /// The training attack; its unset quirks take the reference code's values.
    pub attack: AttackSection,
    /// RobustLT's class-wise budgets and warm-up, on top of the method.
    pub robustlt: Option<RobustLtConfig>,
}

impl Recipe {
    /// `method` with the training attack `attack`, as the method's original code runs it.
    pub fn new(method: MethodConfig, attack: AttackSection) -> Self {
        Self {
            method,
            attack,
            robustlt: None,
        }
    }

    /// TAET (Wang et al., CVPR 2025) as its official code runs: `ce_epochs` clean epochs, then HARL with weights 0.1,
    /// the attack starting from `x + 0.001 N(0, 1)`.
    pub fn taet(ce_epochs: usize, attack: AttackSection) -> Self {
        let attack = AttackSection {
            start: StartKind::Gaussian,
            ..attack
        };
        Self::new(MethodConfig::taet(ce_epochs), attack)
    }

    /// RobustLT (CVPR 2026) on `base`, as its port runs every base: class-wise budgets and warm-up from `config`,
    /// the attack with batch statistics and a start clipped to the image box of radius `attack.eps`, and the
    /// port's logging passes when `config.logging_forwards` says so.
    pub fn robust_lt(base: MethodConfig, attack: AttackSection, config: RobustLtConfig) -> Self {
        Self {
            method: base,
            attack,
            robustlt: Some(config),
        }
    }

    /// Checks the method's and the attack's settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.attack()?;
        if let Some(r) = &self.robustlt {
            r.validate().map_err(|e| invalid(e.to_string()))?;
        }
        self.method.validate()
    }

    /// The training attack.
    pub fn attack(&self) -> Result<PgdConfig, ConfigError> {
        let a = &self.attack;
        let start = match a.start {
            StartKind::None => RandomStart::None,
            StartKind::Uniform => RandomStart::Uniform,
            StartKind::Gaussian => RandomStart::Gaussian { std: a.start_std },
            StartKind::UniformPositive => RandomStart::UniformPositive,
        };
        number("attack.start_std", a.start_std, Domain::Positive)?;
        if a.steps == 0 && !matches!(self.method, MethodConfig::Natural) {
            return Err(invalid("attack.steps must be at least 1 for adversarial training"));
        }
        let robustlt = self.robustlt.is_some();
        let config = PgdConfig::new()
            .with_eps(a.eps.0)
            .with_step_size(a.step_size.0)
            .with_steps(a.steps)
            .with_start(start)
            .with_start_clip(a.start_clip.unwrap_or(self.method.official_start_clip(robustlt)))
            .with_start_radius(a.start_radius.unwrap_or(if robustlt {
                StartRadius::Configured
            } else {
                StartRadius::Budget
            }));
        config.validate().map_err(|e| invalid(format!("attack: {e}")))?;
        Ok(config)
    }

    /// How each step runs apart from the method: BatchNorm during the attack and RobustLT's logging passes.
    pub fn step_options(&self) -> StepOptions {
        StepOptions {
            attack_batch_norm: self.attack_batch_norm(),
            logging_forwards: self.method.logging_forwards(self.robustlt.as_ref()),
        }
    }

    /// `config` with the step options of this recipe ([`Recipe::step_options`]); everything else kept.
    pub fn trainer_config(&self, config: TrainerConfig) -> TrainerConfig {
        let options = self.step_options();
        config
            .with_attack_batch_norm(options.attack_batch_norm)
            .with_logging_forwards(options.logging_forwards)
    }

    /// A trainer of `model` with this recipe's method, budgets and step options on `data`: the loop's own settings
    /// (epochs, optimizer, batches, seed) come from `config`.
    pub fn trainer<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B> + 'static>(
        &self,
        model: M,
        config: TrainerConfig,
        data: &TrainData,
        device: &B::Device,
    ) -> Result<Trainer<B, M>, TrainError> {
        let policy = self.budget_policy(&data.counts, config.epochs);
        Trainer::new(
            model,
            self.method(&data.counts)?,
            policy,
            self.trainer_config(config),
            data,
            device,
        )
    }

    /// How BatchNorm normalises during the training attack: as configured, else as the official code does.
    pub fn attack_batch_norm(&self) -> AttackBatchNorm {
        self.attack
            .batch_norm
            .unwrap_or(self.method.official_attack_batch_norm(self.robustlt.is_some()))
    }

    /// The budget policy for a run of `epochs` epochs: uniform at `attack.eps`, or RobustLT's class-wise budgets and
    /// warm-up.
    pub fn budget_policy(&self, counts: &[usize], epochs: usize) -> BudgetPolicy {
        let eps = self.attack.eps.0;
        match self.robustlt {
            Some(r) => BudgetPolicy::robust_lt(eps, counts, r, epochs),
            None => BudgetPolicy::uniform(eps, counts.len()),
        }
    }

    /// The built-in method the configuration names, for training counts `counts`.
    pub fn method<B: AutodiffBackend, M: Classifier<B> + 'static>(
        &self,
        counts: &[usize],
    ) -> Result<Box<dyn Method<B, M>>, ConfigError> {
        let attack = self.attack()?;
        let robustlt = self.robustlt.is_some();
        Ok(match &self.method {
            MethodConfig::Natural => Box::new(Natural),
            MethodConfig::PgdAt { .. } => Box::new(PgdAt { attack }),
            MethodConfig::Awp {
                gamma, warmup, proxy, ..
            } => Box::new(Awp {
                base: PgdAt { attack },
                perturbation: WeightPerturbationConfig {
                    gamma: *gamma,
                    warmup: *warmup,
                    proxy: *proxy,
                },
            }),
            MethodConfig::Trades {
                beta,
                repeat_clean_forward,
            } => Box::new(Trades {
                attack,
                beta: *beta,
                repeat_clean_forward: *repeat_clean_forward,
            }),
            MethodConfig::AtBsl {
                tau,
                extra_clean_forward,
            } => Box::new(AtBsl::new(attack, counts, *tau).with_extra_clean_forward(
                extra_clean_forward.unwrap_or(self.method.official_extra_clean_forward(robustlt)),
            )),
            MethodConfig::Reat { tau } => Box::new(Reat::new(attack, counts, *tau)),
            MethodConfig::Robal {
                scale,
                margin,
                tau_m,
                tau_b,
                adversarial_weight,
                kl_weight,
                repeat_adversarial_forward,
                natural_forward,
            } => Box::new(
                Robal::new(
                    attack,
                    counts,
                    *scale,
                    *margin,
                    *tau_m,
                    *tau_b,
                    *adversarial_weight,
                    *kl_weight,
                )
                .with_repeat_adversarial_forward(repeat_adversarial_forward.unwrap_or(!robustlt))
                .with_natural_forward(natural_forward.unwrap_or(!robustlt)),
            ),
            MethodConfig::Taet {
                ce_epochs,
                alpha,
                beta,
                gamma,
                extra_clean_forward,
                absent_classes,
            } => Box::new(Taet {
                attack,
                ce_epochs: *ce_epochs,
                weights: [*alpha, *beta, *gamma],
                extra_clean_forward: extra_clean_forward.unwrap_or(self.method.official_extra_clean_forward(robustlt)),
                absent_classes: *absent_classes,
                num_classes: counts.len(),
            }),
        })
    }
}

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
    type Error = AttackConfigError;
    fn try_from(value: BudgetText) -> Result<Self, AttackConfigError> {
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

/// The training attack.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSection {
    /// L-inf budget.
    pub eps: Budget,
    /// PGD step.
    pub step_size: Budget,
    /// PGD steps.
    pub steps: usize,
    /// Where PGD starts.
    #[serde(default)]
    pub start: StartKind,
    /// Standard deviation of the Gaussian start.
    #[serde(default = "default_start_std")]
    pub start_std: f64,
    /// What is done to the start before the first gradient; unset: what the method's official code does
    /// ([`MethodConfig::official_start_clip`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_clip: Option<StartClip>,
    /// How BatchNorm normalises during the attack; unset: what the method's official code does
    /// ([`MethodConfig::official_attack_batch_norm`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_norm: Option<AttackBatchNorm>,
    /// The radius of a uniform start under class-wise budgets: `budget` (each sample's) or `configured` (`eps`,
    /// RobustLT's port); unset: `configured` under `[robustlt]`, else `budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_radius: Option<StartRadius>,
}

/// Where the training attack starts, as files name it (`start_std` sets the Gaussian's deviation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartKind {
    /// At the clean image.
    None,
    /// Uniform in the ball.
    #[default]
    Uniform,
    /// RoBal's one-sided `U[0, eps)`.
    UniformPositive,
    /// `std * N(0, 1)` (TRADES, AT-BSL, TAET).
    Gaussian,
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
    PgdAt {
        /// RobustLT's base code's logging passes after every step (train-mode forwards of the adversarial and the
        /// clean batch without gradients: they move BatchNorm's running statistics); unset: the reference code's
        /// ([`MethodConfig::logging_forwards`]: on, since the port's base code is PGD-AT's reference).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logging_forwards: Option<bool>,
    },
    /// PGD-AT with adversarial weight perturbation around each step (RobustLT's base `awp`).
    Awp {
        /// Size of the perturbation relative to each weight tensor's norm (0.005).
        #[serde(default = "awp_gamma")]
        gamma: f64,
        /// Epochs without perturbation at the start (0).
        #[serde(default)]
        warmup: usize,
        /// How the ascent direction is found: `training-optimizer` (RobustLT's port) or `plain-sgd` (the original
        /// AWP code's proxy).
        #[serde(default)]
        proxy: AwpProxy,
        /// RobustLT's base code's logging passes after every step, as for PGD-AT; unset: on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logging_forwards: Option<bool>,
    },
    /// Clean CE + beta KL(clean || adversarial).
    Trades {
        /// Weight of the KL term (6).
        #[serde(default = "trades_beta")]
        beta: f64,
        /// The official code's second clean forward pass in training mode for the KL term (it updates the
        /// BatchNorm statistics once more).
        #[serde(default = "yes")]
        repeat_clean_forward: bool,
    },
    /// Balanced softmax on PGD examples.
    AtBsl {
        /// Weight of the log prior (1).
        #[serde(default = "one")]
        tau: f64,
        /// An unused clean forward pass (RobustLT's port runs one after the adversarial pass); unset: the reference
        /// code's ([`MethodConfig::official_extra_clean_forward`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra_clean_forward: Option<ExtraCleanForward>,
    },
    /// Re-weighted inner loss, balanced softmax and a tail feature term.
    Reat {
        /// Weight of the log prior (1).
        #[serde(default = "one")]
        tau: f64,
    },
    /// Cosine classifier with class-aware margins and prior bias, plus a KL term (RoBal-R by default).
    Robal {
        /// Logit scale s (10).
        #[serde(default = "robal_scale")]
        scale: f64,
        /// Base margin m (0.1).
        #[serde(default = "tenth")]
        margin: f64,
        /// Margin's class-size term (0.3).
        #[serde(default = "robal_tau_m")]
        tau_m: f64,
        /// Weight of the log prior at inference (1.5).
        #[serde(default = "robal_tau_b")]
        tau_b: f64,
        /// Weight of the adversarial loss (1).
        #[serde(default = "one")]
        adversarial_weight: f64,
        /// Weight of the KL term (6).
        #[serde(default = "trades_beta")]
        kl_weight: f64,
        /// The official code's second adversarial forward pass in training mode for the KL term (it updates the
        /// BatchNorm statistics once more); unset: true, or false under RobustLT (its port runs one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repeat_adversarial_forward: Option<bool>,
        /// The original code's clean cross-entropy weighted by `beta_nat = 0`: a training-mode clean forward whose
        /// only effect is on BatchNorm's running statistics; unset: true, or false under RobustLT (its port
        /// leaves it out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        natural_forward: Option<bool>,
    },
    /// Clean CE for `ce_epochs`, then HARL.
    Taet {
        /// Epochs of the clean stage (40).
        #[serde(default = "ce_epochs")]
        ce_epochs: usize,
        /// Weight of BCL (0.1).
        #[serde(default = "tenth")]
        alpha: f64,
        /// Weight of HDL (0.1).
        #[serde(default = "tenth")]
        beta: f64,
        /// Weight of RCEL (0.1).
        #[serde(default = "tenth")]
        gamma: f64,
        /// The official code's unused clean forward pass in training mode (it updates BatchNorm statistics): before
        /// the loss in TAET's notebook, after the adversarial pass in RobustLT's port; unset: the reference code's
        /// ([`MethodConfig::official_extra_clean_forward`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra_clean_forward: Option<ExtraCleanForward>,
        /// How HDL treats classes absent from a batch.
        #[serde(default)]
        absent_classes: AbsentClasses,
    },
}

impl MethodConfig {
    /// What the method's reference code does to the attack's start before the first gradient: RobustLT's port
    /// (the reference for PGD-AT and for every base under RobustLT) clips it to [0, 1]; the original code of
    /// TRADES, AT-BSL, RoBal, REAT and TAET does nothing.
    pub fn official_start_clip(&self, robustlt: bool) -> StartClip {
        match self {
            MethodConfig::Trades { .. } => StartClip::None,
            _ if robustlt => StartClip::Box,
            MethodConfig::Natural | MethodConfig::PgdAt { .. } | MethodConfig::Awp { .. } => StartClip::Box,
            _ => StartClip::None,
        }
    }

    /// The unused clean forward pass of the method's reference code: TAET's notebook runs one before the loss,
    /// RobustLT's ports of TAET and AT-BSL one after the adversarial pass.
    pub fn official_extra_clean_forward(&self, robustlt: bool) -> ExtraCleanForward {
        match (self, robustlt) {
            (MethodConfig::Taet { .. }, false) => ExtraCleanForward::Before,
            (MethodConfig::Taet { .. } | MethodConfig::AtBsl { .. }, true) => ExtraCleanForward::AfterAdversarial,
            _ => ExtraCleanForward::None,
        }
    }

    /// Whether the reference code runs its logging passes after each step (train-mode forwards without gradients
    /// that move BatchNorm's running statistics): the method's own `logging_forwards` where it has one and sets it,
    /// else RobustLT's switch under RobustLT, else on for PGD-AT and AWP (RobustLT's base code, their reference,
    /// runs them for every method) and off for the others (their original code has none).
    pub fn logging_forwards(&self, robustlt: Option<&RobustLtConfig>) -> bool {
        let chosen = match self {
            MethodConfig::PgdAt { logging_forwards } | MethodConfig::Awp { logging_forwards, .. } => *logging_forwards,
            _ => None,
        };
        chosen.unwrap_or(match robustlt {
            Some(r) => r.logging_forwards,
            None => matches!(self, MethodConfig::PgdAt { .. } | MethodConfig::Awp { .. }),
        })
    }

    /// How BatchNorm normalises in the method's reference code while it attacks: RobustLT's port (the reference
    /// for PGD-AT and for every base under RobustLT) uses batch statistics; the original code of TRADES, AT-BSL,
    /// RoBal, REAT and TAET calls `model.eval()`.
    pub fn official_attack_batch_norm(&self, robustlt: bool) -> AttackBatchNorm {
        match self {
            MethodConfig::Trades { .. } => AttackBatchNorm::Running,
            _ if robustlt => AttackBatchNorm::Batch,
            MethodConfig::PgdAt { .. } | MethodConfig::Awp { .. } => AttackBatchNorm::Batch,
            _ => AttackBatchNorm::Running,
        }
    }
}

fn awp_gamma() -> f64 {
    0.005
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

fn yes() -> bool {
    true
}

impl AttackSection {
    /// PGD with `steps` steps of `step_size` in the L-inf ball of radius `eps`, from a uniform start; the quirks
    /// (start clip, BatchNorm, start radius) unset, so they follow the method's reference code.
    pub fn new(eps: Budget, step_size: Budget, steps: usize) -> Self {
        Self {
            eps,
            step_size,
            steps,
            start: StartKind::default(),
            start_std: default_start_std(),
            start_clip: None,
            batch_norm: None,
            start_radius: None,
        }
    }
}

impl MethodConfig {
    /// PGD-AT (Madry et al.).
    pub fn pgd_at() -> Self {
        MethodConfig::PgdAt { logging_forwards: None }
    }

    /// AWP with its defaults (gamma 0.005, no warm-up, RobustLT's training-optimizer proxy).
    pub fn awp() -> Self {
        MethodConfig::Awp {
            gamma: awp_gamma(),
            warmup: 0,
            proxy: AwpProxy::default(),
            logging_forwards: None,
        }
    }

    /// TRADES with beta 6 and its official second clean forward.
    pub fn trades() -> Self {
        MethodConfig::Trades {
            beta: trades_beta(),
            repeat_clean_forward: true,
        }
    }

    /// AT-BSL with tau 1, its extra clean forward as the reference code runs it.
    pub fn at_bsl() -> Self {
        MethodConfig::AtBsl {
            tau: one(),
            extra_clean_forward: None,
        }
    }

    /// REAT with tau 1.
    pub fn reat() -> Self {
        MethodConfig::Reat { tau: one() }
    }

    /// RoBal-R (scale 10, margin 0.1, tau_m 0.3, tau_b 1.5, KL weight 6), forward passes as its reference code.
    pub fn robal() -> Self {
        MethodConfig::Robal {
            scale: robal_scale(),
            margin: tenth(),
            tau_m: robal_tau_m(),
            tau_b: robal_tau_b(),
            adversarial_weight: one(),
            kl_weight: trades_beta(),
            repeat_adversarial_forward: None,
            natural_forward: None,
        }
    }

    /// TAET with `ce_epochs` clean epochs and HARL weights 0.1, forward passes as its reference code.
    pub fn taet(ce_epochs: usize) -> Self {
        MethodConfig::Taet {
            ce_epochs,
            alpha: tenth(),
            beta: tenth(),
            gamma: tenth(),
            extra_clean_forward: None,
            absent_classes: AbsentClasses::default(),
        }
    }

    /// Rejects method settings that cannot train (the ones that depend on the run's length are the caller's).
    pub fn validate(&self) -> Result<(), ConfigError> {
        use Domain::*;
        let checks: Vec<(&str, f64, Domain)> = match self {
            MethodConfig::Natural | MethodConfig::PgdAt { .. } => vec![],
            MethodConfig::Awp { gamma, .. } => vec![("method.gamma", *gamma, NonNegative)],
            MethodConfig::Trades { beta, .. } => vec![("method.beta", *beta, NonNegative)],
            MethodConfig::AtBsl { tau, .. } | MethodConfig::Reat { tau } => vec![("method.tau", *tau, NonNegative)],
            MethodConfig::Robal {
                scale,
                margin,
                tau_m,
                tau_b,
                adversarial_weight,
                kl_weight,
                ..
            } => vec![
                ("method.scale", *scale, Positive),
                ("method.margin", *margin, Finite),
                ("method.tau_m", *tau_m, Finite),
                ("method.tau_b", *tau_b, Finite),
                ("method.adversarial_weight", *adversarial_weight, NonNegative),
                ("method.kl_weight", *kl_weight, NonNegative),
            ],
            MethodConfig::Taet { alpha, beta, gamma, .. } => vec![
                ("method.alpha", *alpha, NonNegative),
                ("method.beta", *beta, NonNegative),
                ("method.gamma", *gamma, NonNegative),
            ],
        };
        checks
            .into_iter()
            .try_for_each(|(key, value, domain)| number(key, value, domain))
    }
}
