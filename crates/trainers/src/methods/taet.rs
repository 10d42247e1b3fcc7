//! TAET (Wang et al., CVPR 2025): clean cross-entropy for `ce_epochs` epochs (stage 1), then HARL =
//! alpha BCL + beta HDL + gamma RCEL over the per-class mean adversarial cross-entropy of each batch (stage 2).

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::{Classifier, Mode};

use crate::losses::{
    AbsentClasses, class_sums, harl_from_sums, smoothed_cross_entropy, smoothed_cross_entropy_per_sample,
};
use crate::method::{ExtraCleanForward, Method, StepInput, StepOutput, pgd_examples};

/// TAET's settings; defaults are the official code's.
#[derive(Debug, Clone, PartialEq)]
pub struct Taet {
    /// Its training attack (official: 10 steps of 0.003 from `x + 0.001 N(0, 1)`, eps 0.031).
    pub attack: PgdConfig,
    /// Epochs of stage 1 (official: 40).
    pub ce_epochs: usize,
    /// Weights of BCL, HDL and RCEL (official: 0.1 each).
    pub weights: [f64; 3],
    /// The official notebook starts every step with an unused clean forward pass in training mode, before the
    /// attack ([`ExtraCleanForward::Before`]); RobustLT's port runs one after the adversarial pass of stage 2
    /// ([`ExtraCleanForward::AfterAdversarial`]).
    pub extra_clean_forward: ExtraCleanForward,
    /// How classes absent from a batch enter HARL (official: as zero losses).
    pub absent_classes: AbsentClasses,
    /// Number of classes.
    pub num_classes: usize,
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for Taet {
    fn name(&self) -> &'static str {
        "taet"
    }

    fn stage(&self, epoch: usize) -> &'static str {
        if epoch < self.ce_epochs { "clean" } else { "adversarial" }
    }

    fn logs_clean_first(&self) -> bool {
        true
    }

    fn prepare(&self, model: &M, input: &StepInput<B>) {
        self.extra_clean_forward
            .run_at(ExtraCleanForward::Before, false, model, input);
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        (input.epoch >= self.ce_epochs).then(|| pgd_examples(&self.attack, model, input))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let extra = self.extra_clean_forward;
        match adversarial {
            None => {
                let logits = model.forward(input.images.clone(), Mode::Train);
                StepOutput {
                    loss: smoothed_cross_entropy(logits.clone(), input.labels.clone(), input.label_smoothing),
                    clean_logits: Some(logits),
                    adversarial_logits: None,
                }
            }
            Some(adversarial) => {
                let logits = model.forward(adversarial, Mode::Train);
                extra.run_at(ExtraCleanForward::AfterAdversarial, true, model, input);
                // HARL's class terms are means of per-sample cross-entropies: smoothing applies to those.
                let per_sample =
                    smoothed_cross_entropy_per_sample(logits.clone(), input.labels.clone(), input.label_smoothing);
                let (sums, counts) = class_sums(per_sample, input.labels.clone(), self.num_classes);
                // Data-parallel: HARL's class means are those of the global batch, as on one device (so each
                // device's gradient is its part of the global loss's, summed unweighted).
                let (sums, counts) = match &input.exchange {
                    Some(exchange) => (exchange.global_sum(sums), exchange.global_sum(counts)),
                    None => (sums, counts),
                };
                let loss = harl_from_sums(sums, counts, self.weights, self.absent_classes);
                StepOutput {
                    loss,
                    clean_logits: None,
                    adversarial_logits: Some(logits),
                }
            }
        }
    }
}
