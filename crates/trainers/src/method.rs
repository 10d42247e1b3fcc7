//! What a training method plugs into the training step: how adversarial examples are made, and the loss.
//!
//! The step itself (`step.rs`) is the same for every method: batch -> [`Method::adversarial`] (inference mode,
//! input gradients only) -> [`Method::loss`] (training mode) -> backward -> optimizer. A new method is one file
//! implementing this trait.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::Classifier;

use crate::error::TrainError;
use crate::parallel::Exchange;
use crate::weight_perturbation::WeightPerturbationConfig;

/// One batch, as a method sees it.
pub struct StepInput<B: AutodiffBackend> {
    /// Clean images (N, C, H, W) in [0, 1]; not tracked.
    pub images: Tensor<B, 4>,
    /// True classes (N).
    pub labels: Tensor<B, 1, Int>,
    /// Perturbation budget of each sample (N), from the budget policy (uniform or RobustLT's class-wise budgets).
    pub eps: Tensor<Inner<B>, 1>,
    /// 0-based epoch.
    pub epoch: usize,
    /// Where the training attack starts, (N, C, H, W); `None` draws it as the attack's configuration says. Given by
    /// the parity tests, which replay the official code's draw.
    pub start: Option<Tensor<Inner<B>, 4>>,
    /// In a data-parallel run, this device's exchange with the others for this global batch (`images` and
    /// `labels` are this device's part of it); `None` when training alone. A loss on statistics of the global batch
    /// takes them through [`Exchange::global_sum`].
    pub exchange: Option<Exchange<B>>,
    /// Label smoothing of the method's cross-entropy (`method.label_smoothing`): the target puts
    /// `1 - label_smoothing` on the label and `label_smoothing / C` on every class; 0 is plain cross-entropy. Methods
    /// apply it to their training loss's cross-entropy terms, never to the attack's.
    pub label_smoothing: f64,
}

/// What a method's loss produced.
pub struct StepOutput<B: AutodiffBackend> {
    /// The scalar to minimise, (1).
    pub loss: Tensor<B, 1>,
    /// Logits on clean images, when the method computed them (for training accuracy).
    pub clean_logits: Option<Tensor<B, 2>>,
    /// Logits on adversarial images, when the method computed them.
    pub adversarial_logits: Option<Tensor<B, 2>>,
}

/// A training method.
pub trait Method<B: AutodiffBackend, M: Classifier<B>>: Send {
    /// Short name, as in configs; recorded in checkpoints and checked on resume.
    fn name(&self) -> &'static str;

    /// What the epoch does, for logs and plans (TAET: "clean" then "adversarial").
    fn stage(&self, _epoch: usize) -> &'static str {
        "adversarial"
    }

    /// Runs before the attack, with the model in training mode (TAET's notebook starts every step with an unused
    /// clean forward pass, so its attack sees the running statistics that pass moved).
    fn prepare(&self, _model: &M, _input: &StepInput<B>) {}

    /// Adversarial images for the batch (inner backend), or `None` to train on clean images only.
    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>>;

    /// The loss, with the model in training mode. `adversarial` is what [`Method::adversarial`] returned.
    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B>;

    /// Adversarial weight perturbation around the optimizer step of 0-based `epoch` (AWP), if the method uses it.
    fn weight_perturbation(&self, _epoch: usize) -> Option<WeightPerturbationConfig> {
        None
    }

    /// Whether the loss needs [`Classifier::features_and_logits`] (checked once when training starts).
    fn needs_features(&self) -> bool {
        false
    }

    /// Whether RobustLT's port passes the clean batch before the adversarial one in its logging forwards (its TAET
    /// does; see [`crate::StepOptions::logging_forwards`]).
    fn logs_clean_first(&self) -> bool {
        false
    }

    /// Sees every step's output after the optimizer step (for statistics a method carries between epochs).
    fn after_step(&mut self, _input: &StepInput<B>, _output: &StepOutput<B>) {}

    /// Called after the last step of every epoch.
    fn end_epoch(&mut self) {}

    /// In a data-parallel run, sums across the devices ([`Exchange::sum_statistics`]) the statistics gathered
    /// since the last epoch ended, so every device ends the epoch with the same state; called before
    /// [`Method::end_epoch`]. (Statistics of the global batch inside a loss go through
    /// [`StepInput::exchange`] instead.)
    fn share_statistics(&mut self, _exchange: &Exchange<B>) -> Result<(), TrainError> {
        Ok(())
    }

    /// State carried between epochs, saved with checkpoints so a resumed run continues exactly.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restores what [`Method::state`] returned.
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<(), crate::error::MethodStateError> {
        Ok(())
    }
}

/// Cross-entropy PGD examples in each sample's budget, with steps scaled by `eps_i / eps` (every method's default
/// inner maximisation).
pub fn pgd_examples<B: AutodiffBackend, M: Classifier<B>>(
    attack: &PgdConfig,
    model: &FrozenModel<B, M>,
    input: &StepInput<B>,
) -> Tensor<Inner<B>, 4> {
    let labels = input.labels.clone();
    attack_from_start(attack, model, input, |logits| {
        attack.loss.per_sample(logits, labels.clone(), None)
    })
}

/// PGD on any per-sample loss of the logits in each sample's budget (steps scaled by `eps_i / eps`), from
/// [`StepInput::start`] when given.
pub fn attack_from_start<B: AutodiffBackend, M: Classifier<B>>(
    attack: &PgdConfig,
    model: &FrozenModel<B, M>,
    input: &StepInput<B>,
    loss: impl Fn(Tensor<B, 2>) -> Tensor<B, 1>,
) -> Tensor<Inner<B>, 4> {
    let (ball, step) = attack.ball_and_step(input.images.clone().inner(), input.eps.clone());
    attack.run_from(model, &ball, step, input.start.clone(), loss)
}

/// An unused clean forward pass in training mode that some official code runs in its loss: it changes no gradient,
/// but moves BatchNorm's running statistics once more per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtraCleanForward {
    /// No extra pass.
    None,
    /// First thing in every step, before the attack (TAET's official notebook).
    Before,
    /// After the adversarial forward pass, when there is one (RobustLT's ports of TAET and AT-BSL).
    AfterAdversarial,
}

/// Files may also say `true` (TAET's notebook: [`ExtraCleanForward::Before`]) or `false`.
impl<'de> serde::Deserialize<'de> for ExtraCleanForward {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Spelling {
            Flag(bool),
            Name(String),
        }
        match Spelling::deserialize(deserializer)? {
            Spelling::Flag(true) => Ok(Self::Before),
            Spelling::Flag(false) => Ok(Self::None),
            Spelling::Name(name) => match name.as_str() {
                "none" => Ok(Self::None),
                "before" => Ok(Self::Before),
                "after-adversarial" => Ok(Self::AfterAdversarial),
                other => Err(serde::de::Error::custom(format!(
                    "unknown extra clean forward {other:?}: expected none, before, after-adversarial, true or false"
                ))),
            },
        }
    }
}

impl ExtraCleanForward {
    /// Runs the pass if it belongs at `place` for a step with (`adversarial`) or without adversarial images.
    pub fn run_at<B: AutodiffBackend, M: Classifier<B>>(
        self,
        place: ExtraCleanForward,
        adversarial: bool,
        model: &M,
        input: &StepInput<B>,
    ) {
        let due = match (self, place) {
            (ExtraCleanForward::Before, ExtraCleanForward::Before) => true,
            (ExtraCleanForward::AfterAdversarial, ExtraCleanForward::AfterAdversarial) => adversarial,
            _ => false,
        };
        if due {
            let _ = model.forward(input.images.clone(), tailguard_models::Mode::Train);
        }
    }
}
