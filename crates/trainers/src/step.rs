//! The training step every method shares.

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::FrozenModel;
use tailguard_models::{Classifier, Mode};

use crate::error::TrainError;
use crate::method::{Method, StepInput, StepOutput};
use crate::optimizer::GroupedSgd;
use crate::parallel::Exchange;
use crate::settings::StepOptions;
use crate::weight_perturbation::WeightPerturbation;

/// One optimisation step of `method` on `input`: attack (BatchNorm as `options` says, running statistics
/// untouched), loss (training mode), backward, optimizer step at learning rate `lr`. The training loop and
/// `tailguard bench` both run exactly this.
pub fn train_step<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>>(
    method: &mut dyn Method<B, M>,
    model: &mut M,
    optimizer: &mut GroupedSgd<B, M>,
    input: &StepInput<B>,
    lr: f64,
    options: StepOptions,
) -> Result<StepOutput<B>, TrainError> {
    method.prepare(model, input);
    let frozen = FrozenModel::in_mode(model, options.attack_batch_norm.mode());
    let adversarial = method.adversarial(&frozen, input).map(Tensor::<B, 4>::from_inner);
    update_step(method, model, optimizer, input, adversarial, lr, options)
}

/// The rest of [`train_step`] once the adversarial images are made: loss (training mode), backward, optimizer step
/// (inside an adversarial weight perturbation for methods that use one),
/// RobustLT's logging passes when `options` asks for them, and the method's bookkeeping. The parity tests call it
/// with the official code's adversarial images.
pub fn update_step<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>>(
    method: &mut dyn Method<B, M>,
    model: &mut M,
    optimizer: &mut GroupedSgd<B, M>,
    input: &StepInput<B>,
    adversarial: Option<Tensor<B, 4>>,
    lr: f64,
    options: StepOptions,
) -> Result<StepOutput<B>, TrainError> {
    // Data-parallel: every backward's gradients become the global batch's before any step uses them.
    let reduce = |model: &M, grads: &mut B::Gradients| match &input.exchange {
        Some(exchange) => exchange.reduce_gradients(model, grads),
        None => Ok(()),
    };
    let loss_of = |model: &M| {
        let output = method.loss(model, input, adversarial.clone());
        if let Some(error) = input.exchange.as_ref().and_then(Exchange::take_failure) {
            return Err(error);
        }
        // Burn's backward of a non-scalar sums it silently; a per-sample loss would train on a wrong gradient.
        let given = output.loss.dims().to_vec();
        if given != [1] {
            return Err(TrainError::LossShape {
                method: method.name(),
                expected: vec![1],
                given,
            });
        }
        Ok(output)
    };
    let output = loss_of(model)?;
    let output = match method.weight_perturbation(input.epoch) {
        None => {
            let mut grads = output.loss.backward();
            reduce(model, &mut grads)?;
            *model = optimizer.step(lr, model.clone(), grads);
            output
        }
        // AWP: the loss again on perturbed weights, the step there, then the perturbation taken back out.
        Some(config) => {
            let perturbation = WeightPerturbation::compute(&config, model, optimizer, output.loss, lr, reduce)?;
            let perturbed = perturbation.apply(model.clone(), config.gamma);
            let output = loss_of(&perturbed)?;
            let mut grads = output.loss.backward();
            reduce(&perturbed, &mut grads)?;
            let stepped = optimizer.step(lr, perturbed, grads);
            *model = perturbation.apply(stepped, -config.gamma);
            output
        }
    };
    let output = if options.logging_forwards {
        logged_outputs(method, model, input, adversarial, output.loss)
    } else {
        output
    };
    method.after_step(input, &output);
    Ok(output)
}

/// The port's logging passes: adversarial then clean (clean first for methods that say so). A step without
/// adversarial images passes the clean batch twice, as the port's TAET does in its clean stage, and reports no
/// adversarial logits (the port logs no robust accuracy there either).
fn logged_outputs<B: AutodiffBackend, M: Classifier<B>>(
    method: &dyn Method<B, M>,
    model: &M,
    input: &StepInput<B>,
    adversarial: Option<Tensor<B, 4>>,
    loss: Tensor<B, 1>,
) -> StepOutput<B> {
    let forward = |images: Tensor<B, 4>| model.forward(images.detach(), Mode::Train).detach();
    let attacked = adversarial.is_some();
    let second = adversarial.unwrap_or_else(|| input.images.clone());
    let (clean_logits, adversarial_logits) = if method.logs_clean_first() {
        let clean = forward(input.images.clone());
        (clean, forward(second))
    } else {
        let adversarial = forward(second);
        (forward(input.images.clone()), adversarial)
    };
    StepOutput {
        loss,
        clean_logits: Some(clean_logits),
        adversarial_logits: attacked.then_some(adversarial_logits),
    }
}
