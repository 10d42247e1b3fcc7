//! Natural training: cross-entropy on clean images, the baseline every robust method is compared with.

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{FrozenModel, Inner};
use tailguard_models::{Classifier, Mode};

use crate::losses::smoothed_cross_entropy;
use crate::method::{Method, StepInput, StepOutput};

/// Cross-entropy on clean images.
pub struct Natural;

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for Natural {
    fn name(&self) -> &'static str {
        "natural"
    }

    fn stage(&self, _epoch: usize) -> &'static str {
        "clean"
    }

    fn adversarial(&self, _model: &FrozenModel<B, M>, _input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        None
    }

    fn loss(&self, model: &M, input: &StepInput<B>, _adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let logits = model.forward(input.images.clone(), Mode::Train);
        StepOutput {
            loss: smoothed_cross_entropy(logits.clone(), input.labels.clone(), input.label_smoothing),
            clean_logits: Some(logits),
            adversarial_logits: None,
        }
    }
}
