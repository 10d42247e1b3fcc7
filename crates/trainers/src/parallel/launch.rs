//! Starting the devices of a data-parallel run, one thread each, and watching them.

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::Inner;
use tailguard_collective::CollectiveConfig;
use tailguard_models::Classifier;

use super::config::DataParallelConfig;
use super::exchange::broadcast_bytes;
use super::peer::{ExchangeClock, Peer, collective_error, guarded};
use crate::error::TrainError;
use crate::observer::{Silent, TrainObserver};
use crate::run::Run;
use crate::trainer::Trainer;

/// What one device of this process runs.
// A handful of replicas, each moved once onto its thread: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Replica<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>> {
    /// Device 0 of the whole run: trains and writes the run (log, checkpoints, validation), reporting progress to
    /// `observer`. Its trainer's state (fresh, or resumed from the run's checkpoint) is what every device starts
    /// from.
    Writer {
        /// The run, started or resumed.
        run: Run<B, M>,
        /// Progress of device 0.
        observer: Box<dyn TrainObserver + Send>,
    },
    /// Any other device: a trainer built like device 0's, which trains in lockstep and writes nothing.
    Follower(Trainer<B, M>),
}

impl<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>> Replica<B, M> {
    fn trainer_mut(&mut self) -> &mut Trainer<B, M> {
        match self {
            Replica::Writer { run, .. } => &mut run.trainer,
            Replica::Follower(trainer) => trainer,
        }
    }
}

/// How often the launcher looks at the devices' exchange clocks.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Trains every remaining epoch on this process's devices, one thread each (`replicas[i]` is local device `i`; on
/// node 0, replica 0 is the [`Replica::Writer`]). Returns the writer's run when this process has it.
///
/// The first device error stops every device of this process (their pending exchanges fail) and is returned; a
/// device waiting longer than the peer timeout in one exchange (a peer died, hangs or cannot be reached) stops the
/// run with [`TrainError::PeerTimeout`]. Threads stuck in an exchange with a dead machine are left behind; the
/// process can exit.
pub fn train_data_parallel<B, M>(
    config: &DataParallelConfig,
    replicas: Vec<Replica<B, M>>,
) -> Result<Option<Run<B, M>>, TrainError>
where
    B: AutodiffBackend,
    M: Classifier<B> + AutodiffModule<B> + Send + 'static,
{
    let collective = config.collective()?;
    if replicas.len() != config.local_devices {
        return Err(TrainError::ReplicasDifferFromDevices {
            replicas: replicas.len(),
            devices: config.local_devices,
        });
    }
    for (local, replica) in replicas.iter().enumerate() {
        let writer = matches!(replica, Replica::Writer { .. });
        if writer != (config.global_rank(local) == 0) {
            return Err(TrainError::WriterNotDeviceZero {
                rank: config.global_rank(local),
                writer,
            });
        }
    }
    // The run's last checkpoint, named in a timeout only where this process can see that it exists.
    let checkpoint = replicas.iter().find_map(|replica| match replica {
        Replica::Writer { run, .. } => Some(run.dir().join(crate::run::LAST)),
        Replica::Follower(_) => None,
    });
    let world = config.world();
    let (sender, receiver) = channel();
    let mut clocks = Vec::new();
    for (local, replica) in replicas.into_iter().enumerate() {
        let rank = config.global_rank(local);
        let clock = Arc::new(ExchangeClock::default());
        clocks.push(clock.clone());
        let collective = collective.clone();
        let sender = sender.clone();
        let running_statistics = config.running_statistics;
        std::thread::Builder::new()
            .name(format!("tailguard-device-{rank}"))
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_replica(replica, rank, world, collective, clock, running_statistics)
                }))
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown failure".into());
                    Err(TrainError::DevicePanicked { rank, message })
                });
                let _ = sender.send(outcome);
            })
            .map_err(|source| TrainError::Spawn {
                what: format!("a thread for device {rank}"),
                source,
            })?;
    }
    drop(sender);
    let mut pending = clocks.len();
    let mut writer = None;
    let mut first_error = None;
    while pending > 0 {
        match receiver.recv_timeout(WATCH_EVERY) {
            Ok(Ok(run)) => {
                pending -= 1;
                writer = writer.or(run);
            }
            Ok(Err(error)) => {
                pending -= 1;
                if first_error.is_none() {
                    first_error = Some(error);
                    // The other devices of this process fail out of their pending exchanges.
                    reset::<B>();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let stuck = clocks.iter().enumerate().find_map(|(local, clock)| {
                    clock
                        .waited()
                        .filter(|(_, waited)| *waited > config.peer_timeout_seconds)
                        .map(|(operation, seconds)| (local, operation, seconds))
                });
                if let Some((local, operation, seconds)) = stuck {
                    reset::<B>();
                    return Err(first_error.unwrap_or(TrainError::PeerTimeout {
                        rank: config.global_rank(local),
                        operation,
                        seconds,
                        checkpoint: checkpoint
                            .clone()
                            .filter(|last| last.join(tailguard_models::checkpoint::META_FILE).exists()),
                    }));
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(writer),
    }
}

/// Makes the pending exchanges of this process's devices fail. burn-collective's service may already have stopped
/// (a peer's connection dropped under it), in which case there is nothing to reset and its client panics: ignored.
fn reset<B: AutodiffBackend>() {
    let _ = std::panic::catch_unwind(tailguard_collective::reset_collective::<Inner<B>>);
}

/// One device's thread: register, take device 0's state, train to the end, unregister.
fn run_replica<B, M>(
    mut replica: Replica<B, M>,
    rank: usize,
    world: usize,
    collective: CollectiveConfig,
    clock: Arc<ExchangeClock>,
    running_statistics: super::config::RunningStatistics,
) -> Result<Option<Run<B, M>>, TrainError>
where
    B: AutodiffBackend,
    M: Classifier<B> + AutodiffModule<B>,
{
    let device = replica.trainer_mut().device().clone();
    let peer = Peer::<B>::new(rank, world, device.clone(), clock, running_statistics);
    let collective_error = |operation: &'static str| move |e| collective_error(operation, rank, e);
    peer.waiting("registration", || {
        guarded(|| tailguard_collective::register::<Inner<B>>(peer.id(), device, collective))
    })
    .map_err(collective_error("registration"))?;
    let trainer = replica.trainer_mut();
    trainer.attach_peer(peer.clone());
    // Every device starts from device 0's weights, optimizer and method state (fresh or resumed).
    let state = if rank == 0 { Some(trainer.state_bytes()?) } else { None };
    let state = broadcast_bytes(&peer, state)?;
    if rank != 0 {
        trainer.load_state_bytes(&state)?;
    }
    match &mut replica {
        Replica::Writer { run, observer } => {
            while !run.finished() {
                run.run_epoch(observer.as_mut())?;
            }
        }
        Replica::Follower(trainer) => {
            while !trainer.finished() {
                trainer.run_epoch(&mut Silent)?;
            }
        }
    }
    peer.waiting("unregistration", || {
        guarded(|| tailguard_collective::finish_collective::<Inner<B>>(peer.id()))
    })
    .map_err(collective_error("unregistration"))?;
    Ok(match replica {
        Replica::Writer { run, .. } => Some(run),
        Replica::Follower(_) => None,
    })
}

/// Runs burn-collective's orchestrator on `port` until the process is interrupted: every node of a multi-machine
/// run registers with it (`ws://THIS-HOST:port`) to find the others.
pub fn run_orchestrator(port: u16) -> Result<(), TrainError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| TrainError::Spawn {
            what: "the orchestrator's runtime".into(),
            source,
        })?;
    runtime.block_on(tailguard_collective::start_global_orchestrator(port));
    Ok(())
}
