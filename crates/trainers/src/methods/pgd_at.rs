//! PGD-AT (Madry et al. 2018): cross-entropy on PGD examples.

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::{Classifier, Mode};

use crate::losses::smoothed_cross_entropy;
use crate::method::{Method, StepInput, StepOutput, pgd_examples};

/// Cross-entropy on PGD examples (PGD-10, step 2/255, eps 8/255 in the papers).
pub struct PgdAt {
    /// The inner maximisation.
    pub attack: PgdConfig,
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for PgdAt {
    fn name(&self) -> &'static str {
        "pgd-at"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        Some(pgd_examples(&self.attack, model, input))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let adversarial = adversarial.expect("PGD-AT trains on adversarial examples");
        let logits = model.forward(adversarial, Mode::Train);
        StepOutput {
            loss: smoothed_cross_entropy(logits.clone(), input.labels.clone(), input.label_smoothing),
            clean_logits: None,
            adversarial_logits: Some(logits),
        }
    }
}
