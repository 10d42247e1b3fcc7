//! Adversarial weight perturbation (AWP; Wu, Xia and Wang, NeurIPS 2020) around the optimizer step, as RobustLT's
//! port (`core/methods/awp.py`) runs it: from the step's loss on the adversarial batch, take one ascent step, keep
//! each weight tensor's change rescaled to that tensor's norm, `d = |w| / (|dw| + 1e-20) dw`; add `gamma d`, compute
//! the loss again and step the optimizer on the perturbed weights; subtract `gamma d`.
//!
//! Only weights of rank 2 and more move (convolution and linear weights: PyTorch's `'weight'` entries with more
//! than one dimension); BatchNorm parameters, biases and running statistics never do.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_models::{Classifier, trainable_parameters};

use crate::error::TrainError;
use crate::optimizer::GroupedSgd;

/// Which step finds the ascent direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AwpProxy {
    /// RobustLT's port: one step of the training optimizer itself on `-loss` (its momentum buffers, Nesterov and
    /// weight decay included), whose state is then restored.
    #[default]
    TrainingOptimizer,
    /// The original AWP code: a proxy copy of the model stepped by plain SGD (no momentum, no weight decay), so the
    /// direction is the loss gradient of each tensor.
    PlainSgd,
}

/// AWP's settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightPerturbationConfig {
    /// Size of the perturbation relative to each weight tensor's norm (0.005).
    pub gamma: f64,
    /// Epochs without perturbation at the start (0: from the first epoch, as RobustLT's configs).
    pub warmup: usize,
    /// How the ascent direction is found.
    pub proxy: AwpProxy,
}

impl WeightPerturbationConfig {
    /// Whether 0-based `epoch` perturbs (the port's 1-based `current_epoch > awp_warmup`).
    pub fn active(&self, epoch: usize) -> bool {
        epoch >= self.warmup
    }
}

/// The rescaled change `d` of every weight tensor for one step, flattened.
pub struct WeightPerturbation<B: AutodiffBackend> {
    directions: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> WeightPerturbation<B> {
    /// The perturbation from `loss` (computed by `model` on the adversarial batch); `model` and `optimizer` are left
    /// as they are. `reduce` sees the ascent's gradients before they are used (data-parallel runs sum them over the
    /// devices; pass `|_, _| Ok(())` otherwise).
    pub fn compute<M: Classifier<B> + AutodiffModule<B>>(
        config: &WeightPerturbationConfig,
        model: &M,
        optimizer: &GroupedSgd<B, M>,
        loss: Tensor<B, 1>,
        lr: f64,
        reduce: impl FnOnce(&M, &mut B::Gradients) -> Result<(), TrainError>,
    ) -> Result<Self, TrainError> {
        let weights: Vec<ParamId> = trainable_parameters(model)
            .into_iter()
            .filter(|(_, rank, _)| *rank >= 2)
            .map(|(id, _, _)| id)
            .collect();
        let before = collect(model, &weights, Read::Values);
        let mut grads = loss.neg().backward();
        reduce(model, &mut grads)?;
        let change = match config.proxy {
            AwpProxy::TrainingOptimizer => {
                let ascended = optimizer.clone().step(lr, model.clone(), grads);
                collect(&ascended, &weights, Read::Values)
                    .into_iter()
                    .map(|(id, after)| {
                        let change = after - before[&id].clone();
                        (id, change)
                    })
                    .collect()
            }
            // A plain SGD step on -loss moves each weight by lr * grad(loss); lr cancels in the rescaling.
            AwpProxy::PlainSgd => collect(model, &weights, Read::AscentGradients(&mut grads)),
        };
        let directions = change
            .into_iter()
            .map(|(id, change): (ParamId, Tensor<B::InnerBackend, 1>)| {
                let scale = norm(before[&id].clone()).div(norm(change.clone()).add_scalar(1e-20));
                (id, change.mul(scale))
            })
            .collect();
        Ok(Self { directions })
    }

    /// `model` with `coefficient * d` added to its weights (gradients stay tracked).
    pub fn apply<M: AutodiffModule<B>>(&self, model: M, coefficient: f64) -> M {
        model.map(&mut Shift::<B> {
            directions: &self.directions,
            coefficient,
        })
    }
}

/// Euclidean norm of a flattened tensor, (1).
fn norm<B: burn::tensor::backend::Backend>(t: Tensor<B, 1>) -> Tensor<B, 1> {
    t.powi_scalar(2).sum().sqrt()
}

/// What [`collect`] reads from each parameter.
enum Read<'a, B: AutodiffBackend> {
    /// Its value.
    Values,
    /// Minus its gradient in these gradients of `-loss`: the direction plain SGD ascends the loss.
    AscentGradients(&'a mut B::Gradients),
}

/// The parameters in `ids`, read as `read` says, flattened.
fn collect<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    ids: &[ParamId],
    read: Read<'_, B>,
) -> HashMap<ParamId, Tensor<B::InnerBackend, 1>> {
    struct Collect<'a, 'g, B: AutodiffBackend> {
        ids: &'a [ParamId],
        read: Read<'g, B>,
        found: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, '_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if !self.ids.contains(&param.id) {
                return;
            }
            let value = match &mut self.read {
                Read::Values => Some(param.val().inner()),
                Read::AscentGradients(grads) => param.val().grad_remove(grads).map(|g| g.neg()),
            };
            if let Some(value) = value {
                let n = value.shape().num_elements();
                self.found.insert(param.id, value.reshape([n]));
            }
        }
    }
    let mut visitor = Collect {
        ids,
        read,
        found: HashMap::new(),
    };
    model.visit(&mut visitor);
    visitor.found
}

/// Adds `coefficient * d` to each perturbed weight, keeping it a tracked leaf.
struct Shift<'a, B: AutodiffBackend> {
    directions: &'a HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    coefficient: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Shift<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.directions.get(&id) {
            Some(direction) => {
                let require_grad = tensor.is_require_grad();
                let shape = tensor.shape();
                let shifted = tensor.inner() + direction.clone().reshape(shape).mul_scalar(self.coefficient);
                let shifted = Tensor::from_inner(shifted);
                if require_grad { shifted.require_grad() } else { shifted }
            }
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::cross_entropy;
    use crate::optimizer::SgdSettings;
    use burn::backend::Autodiff;
    use burn::module::Module;
    use burn::tensor::{Distribution, Int};
    use tailguard_flex::Flex;
    use tailguard_models::{Architecture, Mode, Model, ModelConfig};

    type B = Autodiff<Flex>;
    type Grads = <B as AutodiffBackend>::Gradients;

    /// (rank, values) of every float tensor in visit order, and the gradient of each one `grads` has.
    fn tensors(model: &Model<B>, grads: Option<&Grads>) -> Vec<(usize, Vec<f32>, Option<Vec<f32>>)> {
        struct Visit<'a>(Option<&'a Grads>, Vec<(usize, Vec<f32>, Option<Vec<f32>>)>);
        impl ModuleVisitor<B> for Visit<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let grad = self
                    .0
                    .and_then(|g| param.val().grad(g))
                    .map(|g| g.into_data().to_vec().unwrap());
                self.1.push((D, param.val().into_data().to_vec().unwrap(), grad));
            }
        }
        tailguard_models::sync_running_statistics(model);
        let mut visitor = Visit(grads, Vec::new());
        model.visit(&mut visitor);
        visitor.1
    }

    #[test]
    fn plain_sgd_moves_each_weight_along_its_rescaled_gradient_and_back() {
        let device = Default::default();
        let model: Model<B> = ModelConfig::new(Architecture::SmallCnn { width: 2 }, 3)
            .with_input_shape([3, 8, 8])
            .init(&device)
            .unwrap();
        let images = Tensor::<B, 4>::random([6, 3, 8, 8], Distribution::Uniform(0.0, 1.0), &device);
        let labels = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 0, 1, 2], &device);
        let loss_of = |m: &Model<B>| cross_entropy(m.forward(images.clone(), Mode::Inference), labels.clone());
        let optimizer = GroupedSgd::new(&SgdSettings::default(), &model);
        let config = WeightPerturbationConfig {
            gamma: 0.5,
            warmup: 0,
            proxy: AwpProxy::PlainSgd,
        };
        let perturbation =
            WeightPerturbation::compute(&config, &model, &optimizer, loss_of(&model), 0.1, |_, _| Ok(())).unwrap();
        let before = tensors(&model, Some(&loss_of(&model).backward()));
        let perturbed = perturbation.apply(model.clone(), 0.5);
        let after = tensors(&perturbed, None);
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let mut moved = 0;
        for ((rank, w, grad), (_, p, _)) in before.iter().zip(&after) {
            if *rank < 2 {
                assert_eq!(w, p, "biases, BatchNorm parameters and statistics stay");
                continue;
            }
            let g = grad.as_ref().expect("every weight has a gradient");
            let scale = norm(w) / norm(g);
            for ((a, b), gi) in w.iter().zip(p).zip(g) {
                let want = *a as f64 + 0.5 * scale * *gi as f64;
                assert!((*b as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{b} vs {want}");
            }
            moved += 1;
        }
        assert!(moved >= 3, "every convolution and the linear layer move ({moved})");
        // Taking it back out restores the weights.
        let restored = tensors(&perturbation.apply(perturbed, -0.5), None);
        for ((_, w, _), (_, r, _)) in before.iter().zip(&restored) {
            for (a, b) in w.iter().zip(r) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        // A small step along it raises the loss: an ascent direction.
        let base: f32 = loss_of(&model).into_scalar();
        let up: f32 = loss_of(&perturbation.apply(model.clone(), 0.01)).into_scalar();
        assert!(up > base, "{up} <= {base}");
    }
}
