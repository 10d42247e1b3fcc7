//! TRADES (Zhang et al. 2019): clean cross-entropy plus beta times the KL divergence between clean and adversarial
//! predictions; the inner maximisation maximises that KL (from `x + 0.001 N(0, 1)`, inference mode).

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::{Classifier, Mode};

use crate::losses::{smoothed_cross_entropy, trades_kl};
use crate::method::{Method, StepInput, StepOutput, attack_from_start};

/// TRADES with weight `beta` (6 in the paper).
pub struct Trades {
    /// The inner maximisation.
    pub attack: PgdConfig,
    /// Weight of the KL term.
    pub beta: f64,
    /// Run the clean batch through the model a second time, after the adversarial batch, for the KL term's target,
    /// as the official code does: the gradient is the same, but BatchNorm's running statistics move once more
    /// (official: true).
    pub repeat_clean_forward: bool,
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for Trades {
    fn name(&self) -> &'static str {
        "trades"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        // The clean prediction is the fixed reference of the inner KL.
        let reference = softmax(model.logits(input.images.clone().inner()), 1);
        let reference = Tensor::<B, 2>::from_inner(reference);
        Some(attack_from_start(&self.attack, model, input, |logits| {
            (reference.clone() * (reference.clone().log() - log_softmax(logits, 1)))
                .sum_dim(1)
                .squeeze_dim(1)
        }))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let adversarial = adversarial.expect("TRADES trains on adversarial examples");
        let clean = model.forward(input.images.clone(), Mode::Train);
        let adv = model.forward(adversarial, Mode::Train);
        let target = if self.repeat_clean_forward {
            model.forward(input.images.clone(), Mode::Train)
        } else {
            clean.clone()
        };
        let loss = smoothed_cross_entropy(clean.clone(), input.labels.clone(), input.label_smoothing)
            + trades_kl(target, adv.clone()).mul_scalar(self.beta);
        StepOutput {
            loss,
            clean_logits: Some(clean),
            adversarial_logits: Some(adv),
        }
    }
}
