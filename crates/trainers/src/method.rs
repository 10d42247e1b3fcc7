//! What a training method plugs into the training step: how adversarial examples are made, and the loss.
//!
//! The step itself (`step.rs`) is the same for every method: batch -> [`Method::adversarial`] (inference mode,
//! input gradients only) -> [`Method::loss`] (training mode) -> backward -> optimizer. A new method is one file
//! implementing this trait.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::Classifier;

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

    /// Adversarial images for the batch (inner backend), or `None` to train on clean images only.
    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>>;

    /// The loss, with the model in training mode. `adversarial` is what [`Method::adversarial`] returned.
    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B>;

    /// Whether the loss needs [`Classifier::features_and_logits`] (checked once when training starts).
    fn needs_features(&self) -> bool {
        false
    }

    /// Sees every step's output after the optimizer step (for statistics a method carries between epochs).
    fn after_step(&mut self, _input: &StepInput<B>, _output: &StepOutput<B>) {}

    /// Called after the last step of every epoch.
    fn end_epoch(&mut self) {}

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
    attack.perturb_with_budgets(
        model,
        input.images.clone().inner(),
        input.labels.clone().inner(),
        None,
        input.eps.clone(),
    )
}
