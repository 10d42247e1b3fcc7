//! The small interface attacks and trainers need from a model, so any Burn module can be plugged in.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::Backend};

use crate::mode::Mode;

/// An image classifier: images in [0, 1] in, logits out.
///
/// Implement it for your own `#[derive(Module)]` struct to use tailguard's attacks and trainers with it. Anything
/// with train/inference behaviour (BatchNorm, dropout) must follow `mode`; in [`Mode::Inference`] it must not change
/// any state, because attacks call it many times per batch.
pub trait Classifier<B: Backend>: Module<B> {
    /// (N, C, H, W) images in [0, 1] -> (N, classes) logits.
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2>;

    /// Number of output classes.
    fn num_classes(&self) -> usize;

    /// Penultimate features (N, D) and logits (N, classes) from one forward pass, for methods that regularise the
    /// feature space (REAT). Models that do not expose features keep the default, `None`.
    fn features_and_logits(&self, _images: Tensor<B, 4>, _mode: Mode) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        None
    }

    /// Which parameters get weight decay. The default follows the common PyTorch recipe: tensors of rank >= 2
    /// (convolution and linear weights) decay, rank-1 tensors (biases, BatchNorm scales and shifts) do not.
    fn parameter_groups(&self) -> ParameterGroups
    where
        Self: Sized,
    {
        ParameterGroups::by_rank(self)
    }
}

/// Parameters split into those that get weight decay and those that do not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParameterGroups {
    /// Parameters that get weight decay (weights of rank 2 and more).
    pub decay: Vec<ParamId>,
    /// BatchNorm scales and shifts, and biases.
    pub no_decay: Vec<ParamId>,
}

impl ParameterGroups {
    /// Rank >= 2 decays, rank 1 does not. BatchNorm running statistics are not parameters and are left out.
    pub fn by_rank<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut groups = ParameterGroups::default();
        for (id, rank, _) in trainable_parameters(module) {
            if rank >= 2 {
                groups.decay.push(id);
            } else {
                groups.no_decay.push(id);
            }
        }
        groups
    }
}

/// Field names under which tailguard's BatchNorm keeps its running statistics.
const RUNNING_STATISTICS: [&str; 2] = ["running_mean", "running_var"];

/// (id, rank, number of values) of every trainable tensor of `module`.
///
/// burn's `num_params` also counts `RunningState` tensors (BatchNorm's running mean and variance); PyTorch does
/// not, and neither does this.
pub fn trainable_parameters<B: Backend, M: Module<B>>(module: &M) -> Vec<(ParamId, usize, usize)> {
    struct Collect {
        path: Vec<String>,
        found: Vec<(ParamId, usize, usize)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let running = self
                .path
                .last()
                .is_some_and(|name| RUNNING_STATISTICS.contains(&name.as_str()));
            if !running {
                self.found.push((param.id, D, param.shape().num_elements()));
            }
        }
    }
    let mut visitor = Collect {
        path: Vec::new(),
        found: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.found
}

/// Number of trainable values of `module`, as PyTorch's `sum(p.numel() for p in model.parameters())` counts them.
pub fn trainable_parameter_count<B: Backend, M: Module<B>>(module: &M) -> usize {
    trainable_parameters(module).iter().map(|(_, _, n)| n).sum()
}
