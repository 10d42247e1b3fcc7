//! One device's place in a data-parallel run, and the exchanges it takes part in.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};
use tailguard_attacks::Inner;
use tailguard_collective::{CollectiveError, PeerId, ReduceOperation};

use super::config::RunningStatistics;
use crate::error::TrainError;

/// When a device entered the exchange it is waiting in, if any: what the peer timeout watches.
#[derive(Debug, Default)]
pub(crate) struct ExchangeClock {
    waiting_since: Mutex<Option<(Instant, &'static str)>>,
}

impl ExchangeClock {
    /// The exchange the device waits in and for how many seconds, if it waits.
    pub(crate) fn waited(&self) -> Option<(&'static str, f64)> {
        self.waiting_since
            .lock()
            .ok()
            .and_then(|since| since.map(|(t, operation)| (operation, t.elapsed().as_secs_f64())))
    }

    fn set(&self, value: Option<(Instant, &'static str)>) {
        if let Ok(mut since) = self.waiting_since.lock() {
            *since = value;
        }
    }
}

/// Marks its device as waiting until dropped.
struct Waiting<'a>(&'a ExchangeClock);

impl<'a> Waiting<'a> {
    fn start(clock: &'a ExchangeClock, operation: &'static str) -> Self {
        clock.set(Some((Instant::now(), operation)));
        Self(clock)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// A device of a data-parallel run: its global rank among `world` devices, and its end of the exchanges.
pub struct Peer<B: AutodiffBackend> {
    rank: usize,
    world: usize,
    device: B::Device,
    clock: Arc<ExchangeClock>,
    running_statistics: RunningStatistics,
    /// An exchange that failed where no error could be returned (inside a loss), kept for the step to return.
    failure: Arc<Mutex<Option<TrainError>>>,
    _backend: PhantomData<fn() -> B>,
}

impl<B: AutodiffBackend> Clone for Peer<B> {
    fn clone(&self) -> Self {
        Self {
            rank: self.rank,
            world: self.world,
            device: self.device.clone(),
            clock: self.clock.clone(),
            running_statistics: self.running_statistics,
            failure: self.failure.clone(),
            _backend: PhantomData,
        }
    }
}

impl<B: AutodiffBackend> std::fmt::Debug for Peer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer({} of {})", self.rank, self.world)
    }
}

impl<B: AutodiffBackend> Peer<B> {
    pub(crate) fn new(
        rank: usize,
        world: usize,
        device: B::Device,
        clock: Arc<ExchangeClock>,
        running_statistics: RunningStatistics,
    ) -> Self {
        Self {
            rank,
            world,
            device,
            clock,
            running_statistics,
            failure: Arc::default(),
            _backend: PhantomData,
        }
    }

    /// Global rank, 0-based; device 0 writes the run.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Devices in the run, every machine together.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The device this peer computes on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// How BatchNorm's running statistics are kept across devices.
    pub fn running_statistics(&self) -> RunningStatistics {
        self.running_statistics
    }

    /// burn-collective's id of this peer.
    pub(crate) fn id(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// The rows of a global batch of `n` images this device trains on: contiguous, sizes differing by at most one.
    pub fn rows(&self, n: usize) -> Range<usize> {
        tailguard_longtail::shard_rows(n, self.rank, self.world)
    }

    /// `tensor` summed over every device (each device passes its own; all receive the sum). `operation` names the
    /// exchange in errors.
    pub fn sum<const D: usize>(
        &self,
        tensor: Tensor<Inner<B>, D>,
        operation: &'static str,
    ) -> Result<Tensor<Inner<B>, D>, TrainError> {
        let _waiting = Waiting::start(&self.clock, operation);
        let primitive = tensor.into_primitive().tensor();
        let summed =
            guarded(|| tailguard_collective::all_reduce::<Inner<B>>(self.id(), primitive, ReduceOperation::Sum))
                .map_err(|e| collective_error(operation, self.rank, e))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    /// Runs `f` (a registration or another blocking exchange, named `operation`) as a wait that the peer timeout
    /// watches.
    pub(crate) fn waiting<T>(&self, operation: &'static str, f: impl FnOnce() -> T) -> T {
        let _waiting = Waiting::start(&self.clock, operation);
        f()
    }

    /// The error of a failed exchange inside a loss, once.
    pub(crate) fn take_failure(&self) -> Option<TrainError> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }

    pub(crate) fn keep_failure(&self, error: TrainError) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(error);
        }
    }
}

/// Runs a burn-collective call. Its client panics when its service has stopped (a task of the service panicked
/// when a peer's connection dropped): that is reported as the service missing, not as a crash.
pub(crate) fn guarded<T>(call: impl FnOnce() -> Result<T, CollectiveError>) -> Result<T, CollectiveError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or(Err(CollectiveError::LocalServerMissing))
}

/// burn-collective's error as tailguard's, saying what a stopped service means.
pub(crate) fn collective_error(operation: &'static str, rank: usize, error: CollectiveError) -> TrainError {
    let reason = match error {
        CollectiveError::LocalServerMissing => {
            "burn-collective's service stopped: another device failed, or a peer machine disconnected".to_string()
        }
        other => format!("{other:?}"),
    };
    TrainError::Collective {
        operation,
        rank,
        reason,
    }
}
