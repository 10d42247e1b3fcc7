//! AT-BSL (Yue et al., CVPR 2024): balanced softmax on adversarial examples; the inner maximisation is plain
//! cross-entropy PGD.

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::{Classifier, Mode};

use crate::losses::smoothed_balanced_softmax;
use crate::method::{ExtraCleanForward, Method, StepInput, StepOutput, pgd_examples};

/// Balanced-softmax adversarial training.
pub struct AtBsl {
    /// The inner maximisation.
    pub attack: PgdConfig,
    /// `log(n_c / N)` of the training set, per class.
    pub log_prior: Vec<f32>,
    /// Weight of the prior (tau_b); the paper uses 1.
    pub tau: f64,
    /// RobustLT's port runs an unused clean forward pass after the adversarial one
    /// ([`ExtraCleanForward::AfterAdversarial`]); the original code does not ([`ExtraCleanForward::None`]).
    pub extra_clean_forward: ExtraCleanForward,
}

impl AtBsl {
    /// From per-class training counts.
    pub fn new(attack: PgdConfig, train_counts: &[usize], tau: f64) -> Self {
        Self {
            attack,
            log_prior: crate::losses::log_prior(train_counts),
            tau,
            extra_clean_forward: ExtraCleanForward::None,
        }
    }

    /// Sets [`AtBsl::extra_clean_forward`].
    pub fn with_extra_clean_forward(mut self, extra: ExtraCleanForward) -> Self {
        self.extra_clean_forward = extra;
        self
    }
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for AtBsl {
    fn name(&self) -> &'static str {
        "at-bsl"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        Some(pgd_examples(&self.attack, model, input))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let adversarial = adversarial.expect("AT-BSL trains on adversarial examples");
        let logits = model.forward(adversarial, Mode::Train);
        self.extra_clean_forward
            .run_at(ExtraCleanForward::AfterAdversarial, true, model, input);
        let log_prior = Tensor::<B, 1>::from_floats(self.log_prior.as_slice(), &logits.device());
        StepOutput {
            loss: smoothed_balanced_softmax(
                logits.clone(),
                input.labels.clone(),
                log_prior,
                self.tau,
                input.label_smoothing,
            ),
            clean_logits: None,
            adversarial_logits: Some(logits),
        }
    }
}
