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
    pub decay: Vec<ParamId>,
    pub no_decay: Vec<ParamId>,
}

impl ParameterGroups {
    /// Rank >= 2 decays, rank 1 does not.
    pub fn by_rank<B: Backend, M: Module<B>>(module: &M) -> Self {
        struct ByRank(ParameterGroups);
        impl<B: Backend> ModuleVisitor<B> for ByRank {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if D >= 2 {
                    self.0.decay.push(param.id);
                } else {
                    self.0.no_decay.push(param.id);
                }
            }
        }
        let mut visitor = ByRank(ParameterGroups::default());
        module.visit(&mut visitor);
        visitor.0
    }
}
