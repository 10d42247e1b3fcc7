//! AWP (Wu, Xia and Wang, NeurIPS 2020) as RobustLT's base `awp`: PGD-AT's attack and loss, with the optimizer
//! step taken on adversarially perturbed weights ([`crate::weight_perturbation`]). Paper settings: gamma 0.005, no
//! warm-up, 200 epochs decayed at 100 and 150.

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{FrozenModel, Inner};
use tailguard_models::Classifier;

use crate::method::{Method, StepInput, StepOutput};
use crate::methods::PgdAt;
use crate::weight_perturbation::WeightPerturbationConfig;

/// PGD-AT with adversarial weight perturbation.
pub struct Awp {
    /// Attack and loss.
    pub base: PgdAt,
    /// The weight perturbation.
    pub perturbation: WeightPerturbationConfig,
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for Awp {
    fn name(&self) -> &'static str {
        "awp"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        Method::<B, M>::adversarial(&self.base, model, input)
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        Method::<B, M>::loss(&self.base, model, input, adversarial)
    }

    fn weight_perturbation(&self, epoch: usize) -> Option<WeightPerturbationConfig> {
        self.perturbation.active(epoch).then_some(self.perturbation)
    }
}
