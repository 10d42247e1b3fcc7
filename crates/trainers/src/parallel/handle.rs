//! The one handle through which a training step takes part in a data-parallel run: gradient reduction, statistics
//! of the global batch inside a loss, the epoch's figures and a method's carried statistics. A step alone receives
//! none ([`crate::StepInput::exchange`] is `None`) and nothing in the step or in a method branches on devices
//! otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::Inner;

use super::config::RunningStatistics;
use super::exchange::{average_running_statistics, reduce_gradients};
use super::peer::Peer;
use crate::epoch::{EpochTally, StepFigures};
use crate::error::TrainError;

/// This device's exchange with the others of a data-parallel run, for one global batch (the trainer makes one per
/// step with [`Exchange::for_batch`]; the epoch's own exchanges need no batch).
#[derive(Clone, Debug)]
pub struct Exchange<B: AutodiffBackend> {
    peer: Peer<B>,
    /// Images of the global batch on this device, and on every device together.
    size: usize,
    global_size: usize,
    /// Whether the loss of this batch used [`Exchange::global_sum`]: then it already is the global batch's loss.
    global_loss: Arc<AtomicBool>,
}

impl<B: AutodiffBackend> Exchange<B> {
    /// The handle of `peer`, not yet for any batch.
    pub fn new(peer: Peer<B>) -> Self {
        Self {
            peer,
            size: 0,
            global_size: 0,
            global_loss: Arc::default(),
        }
    }

    /// The handle for a global batch of `global_size` images of which this device trains on `size`.
    pub fn for_batch(&self, size: usize, global_size: usize) -> Self {
        Self {
            peer: self.peer.clone(),
            size,
            global_size,
            global_loss: Arc::default(),
        }
    }

    /// This device's place in the run.
    pub fn peer(&self) -> &Peer<B> {
        &self.peer
    }

    /// This device's share of the global batch: the weight of its gradient for a loss that is a mean over samples.
    pub fn share(&self) -> f64 {
        self.size as f64 / self.global_size.max(1) as f64
    }

    /// A statistic of the global batch inside a loss: `local` (this shard's part, tracked) summed over every
    /// device. The value is the global sum; the gradient flows to this shard's part only. A loss built on such
    /// statistics is the global batch's loss on every device, so its gradients are summed unweighted (a loss that
    /// is a mean over this shard's samples is weighted by [`Exchange::share`]). If the exchange fails, the error is
    /// kept for the step to return and the local value is used.
    pub fn global_sum<const D: usize>(&self, local: Tensor<B, D>) -> Tensor<B, D> {
        self.global_loss.store(true, Ordering::Relaxed);
        match self.peer.sum(local.clone().detach().inner(), "loss statistics") {
            // total + (local - local) is exactly total in value, with local's gradient.
            Ok(total) => Tensor::from_inner(total) + (local.clone() - local.detach()),
            Err(error) => {
                self.peer.keep_failure(error);
                local
            }
        }
    }

    /// Replaces the gradients of `model`'s trainable parameters in `grads` by the global batch's: every device's
    /// summed, each weighted by its share unless the loss was built on global statistics.
    pub fn reduce_gradients<M: Module<B>>(&self, model: &M, grads: &mut B::Gradients) -> Result<(), TrainError> {
        let weight = if self.global_loss.load(Ordering::Relaxed) {
            1.0
        } else {
            self.share()
        };
        reduce_gradients(&self.peer, model, grads, weight)
    }

    /// The error of a failed exchange inside the loss, once.
    pub fn take_failure(&self) -> Option<TrainError> {
        self.peer.take_failure()
    }

    /// `tensor` summed over every device: what a method carrying statistics between epochs uses in
    /// [`crate::Method::share_statistics`].
    pub fn sum_statistics(&self, tensor: Tensor<Inner<B>, 1>) -> Result<Tensor<Inner<B>, 1>, TrainError> {
        self.peer.sum(tensor, "method statistics")
    }

    /// The tally's figures with the loss averaged over the devices (every device calls it at the same step).
    pub fn figures(&self, tally: &EpochTally<B>) -> Result<StepFigures, TrainError> {
        tally.figures_across(self.peer.world(), |t| self.peer.sum(t, "loss check"))
    }

    /// Replaces this device's epoch sums and counts by those of every device.
    pub fn combine(&self, tally: &mut EpochTally<B>) -> Result<(), TrainError> {
        tally.combine(|t| self.peer.sum(t, "epoch figures"))
    }

    /// `model` with BatchNorm's running statistics averaged over the devices when the run keeps them so.
    pub fn share_running_statistics<M: Module<B>>(&self, model: M) -> Result<M, TrainError> {
        match self.peer.running_statistics() {
            RunningStatistics::Averaged => average_running_statistics(&self.peer, model),
            RunningStatistics::PerDevice => Ok(model),
        }
    }
}
