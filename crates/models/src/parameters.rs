//! Two workarounds for Burn 0.21's lazy parameters and queued running statistics, applied wherever a model enters
//! or is read through a visitor.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

/// Gives every lazily initialised parameter of `module` its value now.
///
/// Burn 0.21 creates parameters lazily, and cloning a parameter that has not been initialised yet clones its
/// initialiser: the clone and the original then draw *different* random weights. A model that is cloned before its
/// first use (a `FrozenModel` for an attack, `into_record` for a checkpoint) would silently differ from the model
/// itself (found by `crates/cli/tests/gpu_backend.rs`, which compares two backends through records). tailguard calls
/// this wherever a model enters: [`crate::ModelConfig::init`], `Trainer::new`, `FrozenModel::new`, saving and
/// loading checkpoints. It does nothing to parameters that already have their values.
pub fn initialize_parameters<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Applies the BatchNorm running-statistic updates that are still pending.
///
/// Burn 0.21 queues a `RunningState` update and applies it at the next `value_sync` or record; visiting a module
/// (safetensors export, comparisons) reads the value as of the update before. Found by the parity tests
/// (crates/trainers/tests/parity.rs): right after a training step an export held the statistics of the step
/// before. Every reader that goes through a visitor calls this first.
pub fn sync_running_statistics<B: Backend, M: Module<B>>(module: &M) {
    // A record syncs every running state; the clone shares them with `module`.
    let _ = module.clone().into_record();
}
