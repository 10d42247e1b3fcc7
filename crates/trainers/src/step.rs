//! The training step every method shares.

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::FrozenModel;
use tailguard_models::Classifier;

use crate::method::{Method, StepInput, StepOutput};
use crate::optimizer::GroupedSgd;

/// One optimisation step of `method` on `input`: attack (inference mode), loss (training mode), backward, optimizer
/// step at learning rate `lr`. The training loop and `tailguard bench` both run exactly this.
pub fn train_step<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>>(
    method: &mut dyn Method<B, M>,
    model: &mut M,
    optimizer: &mut GroupedSgd<B, M>,
    input: &StepInput<B>,
    lr: f64,
) -> StepOutput<B> {
    let adversarial = method.adversarial(&FrozenModel::new(model), input);
    let output = method.loss(model, input, adversarial.map(Tensor::from_inner));
    let grads = output.loss.backward();
    *model = optimizer.step(lr, model.clone(), grads);
    method.after_step(input, &output);
    output
}
