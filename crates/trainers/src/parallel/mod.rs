//! Data-parallel training on burn-collective: one thread per device in a process, and optionally several
//! processes on several machines (burn-collective's global mode, coordinated by an orchestrator).
//!
//! Every device runs the same [`crate::Trainer`] (single program, multiple data, like PyTorch DDP): each global
//! batch of the loader is split into one contiguous shard per device, every device computes its shard's gradient,
//! the gradients are summed across devices (each weighted by its shard's share of the batch, so the sum is the
//! gradient of the global batch's mean loss) and every device takes the same optimizer step. The state that a step
//! or an epoch carries (the epoch's loss and accuracies, REAT's prediction counts, the divergence check) is summed
//! across devices too, so every device holds the same method state; device 0 is the only writer (log, checkpoints,
//! validation). Losses over statistics of the whole batch (TAET's HARL) compute those statistics over the global
//! batch (see [`Exchange::global_sum`]), so data-parallel TAET equals single-device TAET on the same global batch.
//!
//! Not equal to one device: BatchNorm normalises each shard with its own batch statistics and keeps per-device
//! running statistics, as PyTorch DDP without SyncBatchNorm does ([`RunningStatistics`] can average the running
//! statistics every epoch); attack starts are drawn per device; REAT's pairwise tail term pairs samples within a
//! shard.
//!
//! A device that fails stops the others (their pending exchange returns an error); a device or machine that dies
//! or hangs is detected by the peer timeout ([`DataParallelConfig::peer_timeout_seconds`]); either way
//! [`train_data_parallel`] returns an error and the last checkpoint, written atomically, stays intact.

mod config;
mod exchange;
mod handle;
mod launch;
mod peer;

pub use config::{DataParallelConfig, RunningStatistics};
pub use exchange::{average_running_statistics, broadcast_bytes, reduce_gradients};
pub use handle::Exchange;
pub use launch::{Replica, run_orchestrator, train_data_parallel};
pub use peer::Peer;
