//! Training versus inference behaviour of a forward pass.

/// How layers with train/inference behaviour (BatchNorm) run.
///
/// The mode is an argument of every forward pass rather than state stored in the model: an attack that asks for
/// [`Mode::Inference`] cannot forget to switch back, and one model value can be used in both modes at once. This also
/// sidesteps burn 0.21's `BatchNorm`, which uses batch statistics whenever the backend is an autodiff backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Batch statistics; BatchNorm running statistics are updated.
    #[default]
    Train,
    /// Running statistics, never updated; gradients still flow to the input.
    Inference,
    /// Batch statistics, running statistics left as they are: PyTorch's `train()` with `track_running_stats`
    /// off. RobustLT's port (and Madry et al.'s PGD-AT) generate training attacks this way.
    BatchStatistics,
}
