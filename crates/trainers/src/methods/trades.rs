//! TRADES (Zhang et al. 2019): clean cross-entropy plus beta times the KL divergence between clean and adversarial
//! predictions; the inner maximisation maximises that KL (from `x + 0.001 N(0, 1)`, inference mode).

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::{Classifier, Mode};

use crate::losses::{cross_entropy, trades_kl};
use crate::method::{Method, StepInput, StepOutput};

/// TRADES with weight `beta` (6 in the paper).
pub struct Trades {
    /// The inner maximisation.
    pub attack: PgdConfig,
    /// Weight of the KL term.
    pub beta: f64,
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for Trades {
    fn name(&self) -> &'static str {
        "trades"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        let images = input.images.clone().inner();
        // The clean prediction is the fixed reference of the inner KL.
        let reference = softmax(model.logits(images.clone()), 1);
        let reference = Tensor::<B, 2>::from_inner(reference);
        let (ball, step) = self.attack.ball_and_step(images, input.eps.clone());
        Some(self.attack.run_with(model, &ball, step, |logits| {
            (reference.clone() * (reference.clone().log() - log_softmax(logits, 1)))
                .sum_dim(1)
                .squeeze_dim(1)
        }))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let adversarial = adversarial.expect("TRADES trains on adversarial examples");
        let clean = model.forward(input.images.clone(), Mode::Train);
        let adv = model.forward(adversarial, Mode::Train);
        let loss = cross_entropy(clean.clone(), input.labels.clone())
            + trades_kl(clean.clone(), adv.clone()).mul_scalar(self.beta);
        StepOutput {
            loss,
            clean_logits: Some(clean),
            adversarial_logits: Some(adv),
        }
    }
}
