//! A training method tailguard does not ship, defined here: MART (Wang et al., ICLR 2020). The inner maximisation
//! is cross-entropy PGD in each sample's budget (so RobustLT's class-wise budgets apply unchanged); the loss is a
//! boosted cross-entropy on the adversarial examples plus `beta` times the KL divergence between clean and
//! adversarial predictions, weighted by how wrong the clean prediction is.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::loss::cross_entropy_per_sample;
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::{Classifier, Mode};
use tailguard_trainers::method::pgd_examples;
use tailguard_trainers::{Method, StepInput, StepOutput};

/// MART with KL weight `beta` (6 in the paper).
pub struct Mart {
    /// The inner maximisation.
    pub attack: PgdConfig,
    /// Weight of the KL term.
    pub beta: f64,
}

/// Guards the logs of probabilities, as the official code does.
const TINY: f64 = 1e-12;

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for Mart {
    fn name(&self) -> &'static str {
        "mart"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        Some(pgd_examples(&self.attack, model, input))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let adversarial = adversarial.expect("MART trains on adversarial examples");
        let clean = model.forward(input.images.clone(), Mode::Train); // (N, C)
        let adv = model.forward(adversarial, Mode::Train); // (N, C)
        let [n, classes] = adv.dims();
        let one_hot = input.labels.clone().one_hot::<2>(classes).float(); // (N, C)

        // Boosted CE: CE(adv) - log(1 - the largest wrong-class probability).
        let adv_probs = softmax(adv.clone(), 1);
        let largest_wrong = (adv_probs - one_hot.clone().mul_scalar(2.0)).max_dim(1).reshape([n]);
        let boosted = cross_entropy_per_sample(adv.clone(), input.labels.clone())
            - (largest_wrong.neg().add_scalar(1.0 + TINY)).log();

        // KL(clean || adv) per sample, weighted by 1 - p_y(clean).
        let clean_probs = softmax(clean.clone(), 1);
        let true_prob = (clean_probs.clone() * one_hot).sum_dim(1).reshape([n]);
        let kl = (clean_probs.clone() * ((clean_probs + TINY).log() - log_softmax(adv.clone(), 1)))
            .sum_dim(1)
            .reshape([n]);
        let robust = (kl * true_prob.neg().add_scalar(1.0000001)).mean();
        StepOutput {
            loss: boosted.mean() + robust.mul_scalar(self.beta),
            clean_logits: Some(clean),
            adversarial_logits: Some(adv),
        }
    }
}
