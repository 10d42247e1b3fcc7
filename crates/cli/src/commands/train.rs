//! `tailguard train`: train a model with a method from a TOML configuration, resumably.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use tailguard_trainers::{
    DataParallelConfig, Replica, RunningStatistics, TrainConfig, TrainError, train_data_parallel,
};

use crate::backend;
use crate::epochs::{EpochLine, EpochReporter, TENSORBOARD_DIR, train_to_end};

/// Train a robust classifier (natural, pgd-at, trades, at-bsl, taet; optionally with RobustLT budgets).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tailguard train --config configs/cpu/taet-small.toml --out runs/taet\n  \
    tailguard train --config configs/cifar10-lt/robustlt-at-bsl-rho50.toml --set optim.epochs=10 --out runs/x\n  \
    tailguard train --resume runs/taet\n  \
    tailguard train --config configs/cifar10-lt/taet-rho10.toml --dry-run --json\n  \
    tailguard train --config configs/cifar10-lt/taet-rho10.toml --out runs/taet --devices cuda:0,cuda:1\n\n\
Several machines (docs/scaling.md): `tailguard orchestrate --port 3000` on one, then on every machine R of N\n  \
    tailguard train --config C --out runs/x --devices cuda:0,cuda:1 --nodes N --node-rank R \\\n    \
      --orchestrator ws://HOST0:3000 --node-address ws://THIS-HOST:3001\n\
(nodes other than 0 write nothing: they take --config and --set as node 0 does, without --out or --resume)")]
pub struct TrainArgs {
    /// Configuration file (see configs/).
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override a configuration value, e.g. --set optim.lr=0.05 --set robustlt.alpha=0.3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Folder for config.toml, log.jsonl, last/ and best/: new or empty (see --force). Required, except with
    /// --resume, --dry-run, and on data-parallel nodes other than 0 (they write nothing).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Start over in --out, replacing the earlier run's files there (never a file tailguard did not write).
    #[arg(long, requires = "out")]
    force: bool,
    /// Continue the run in this folder from its last checkpoint (with the configuration stored in it; of an edited
    /// config.toml only optim.epochs is taken).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out", "overrides"])]
    resume: Option<PathBuf>,
    /// Start from the weights of this checkpoint folder (fine-tuning; e.g. a RobustBench model brought in with
    /// `tailguard import --robustbench`): the same as --set model.init_from=DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// Print the resolved plan (config, per-class counts, stages, RobustLT budgets) without training.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output: the plan, or one JSON line per epoch.
    #[arg(long)]
    json: bool,
    /// Also write TensorBoard event files into RUN/tensorboard (as `[logging] tensorboard = true`); view them with
    /// `tensorboard --logdir RUN/tensorboard`.
    #[arg(long)]
    tensorboard: bool,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
    /// Train data-parallel on these devices of this machine, comma-separated (`cuda:0,cuda:1`; on the CPU
    /// `cpu:0,cpu:1`, one thread each): every global batch (optim.batch_size) is split across them and the
    /// gradients are summed (docs/scaling.md).
    #[arg(long, value_name = "LIST", conflicts_with = "device")]
    devices: Option<String>,
    #[command(flatten)]
    nodes: NodeArgs,
}

/// Several machines: burn-collective's global mode.
#[derive(Debug, Args)]
struct NodeArgs {
    /// Machines taking part, each running this command with its --node-rank.
    #[arg(long, default_value_t = 1, value_name = "N")]
    nodes: usize,
    /// This machine's index (0-based); node 0 holds the writing device and --out.
    #[arg(long, default_value_t = 0, value_name = "R")]
    node_rank: usize,
    /// The orchestrator (`tailguard orchestrate --port P` on some machine): ws://HOST:P.
    #[arg(long, value_name = "URL")]
    orchestrator: Option<String>,
    /// Where the other machines reach this one, ws://HOST:PORT (PORT must be free here).
    #[arg(long, value_name = "URL")]
    node_address: Option<String>,
    /// Seconds a node waits for the orchestrator to answer before it gives up, when it starts.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    connect_timeout: f64,
    /// Seconds one device waits for the others before declaring a peer dead and stopping the run.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
    peer_timeout: f64,
    /// Average BatchNorm's running statistics over the devices every epoch (default: each device keeps its own;
    /// checkpoints hold device 0's, as with PyTorch DDP).
    #[arg(long)]
    average_running_statistics: bool,
}

/// Every flag, before any work starts.
fn check_flags(args: &TrainArgs) -> anyhow::Result<()> {
    let n = &args.nodes;
    anyhow::ensure!(n.nodes >= 1, "--nodes must be at least 1, got {}", n.nodes);
    anyhow::ensure!(
        n.node_rank < n.nodes,
        "--node-rank {} is not a machine of --nodes {} (ranks are 0 to {})",
        n.node_rank,
        n.nodes,
        n.nodes - 1
    );
    anyhow::ensure!(
        n.connect_timeout.is_finite() && n.connect_timeout > 0.0 && n.connect_timeout <= 3600.0,
        "--connect-timeout must be between 0 and 3600 seconds, got {}",
        n.connect_timeout
    );
    anyhow::ensure!(
        n.peer_timeout.is_finite() && n.peer_timeout > 0.0,
        "--peer-timeout must be a positive number of seconds, got {}",
        n.peer_timeout
    );
    Ok(())
}

pub fn run(mut args: TrainArgs) -> anyhow::Result<()> {
    check_flags(&args)?;
    if let Some(dir) = args.init_from.take() {
        // A JSON string is a TOML basic string: the path stays a string whatever it looks like.
        let path = serde_json::to_string(&dir.display().to_string())?;
        args.overrides.push(format!("model.init_from={path}"));
    }
    if args.dry_run {
        let Some(path) = &args.config else {
            bail!("--dry-run needs --config")
        };
        let config = TrainConfig::load(path, &args.overrides)?;
        let plan = config.plan::<backend::Train>()?;
        if args.json {
            println!("{plan}");
        } else {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        return Ok(());
    }
    if args.devices.is_some() || args.nodes.nodes > 1 {
        return run_data_parallel(args);
    }
    let device = args.device.open()?;
    let (mut run, c) = match (&args.resume, &args.config, &args.out) {
        (Some(dir), _, _) => {
            let run = TrainConfig::resume_run::<backend::Train>(dir, &device)?;
            // The configuration the run continues with: the stored one, with the edited number of epochs.
            let config: TrainConfig = serde_json::from_value(run.description().config.clone())?;
            (run, config)
        }
        (None, Some(path), Some(out)) => {
            let config = TrainConfig::load(path, &args.overrides)?;
            (config.start_run::<backend::Train>(out, &device, args.force)?, config)
        }
        _ => bail!("give --config and --out, or --resume"),
    };
    if run.finished() {
        eprintln!("{} has finished all {} epochs", run.dir().display(), c.optim.epochs);
        return Ok(());
    }
    if !args.json {
        eprintln!(
            "training {} with {} for {} epochs on {} ({}) -> {}",
            c.model.arch,
            c.method_name(),
            c.optim.epochs,
            backend::name(),
            c.data.data_dir.display(),
            run.dir().display()
        );
    }
    let mut reporter = EpochReporter::new(EpochLine::Train { json: args.json }, c.optim.epochs, args.json);
    if args.tensorboard || c.logging.tensorboard {
        let dir = run.claim_entry(TENSORBOARD_DIR)?;
        reporter = reporter.with_tensorboard(&dir)?;
    }
    train_to_end(&mut run, &mut reporter)?;
    if !args.json {
        eprintln!("done: {}/last (and best/ when validation is on)", run.dir().display());
    }
    Ok(())
}

/// `train --devices` / `--nodes`: one thread per device of this machine; node 0's first device writes the run.
fn run_data_parallel(args: TrainArgs) -> anyhow::Result<()> {
    let devices = match &args.devices {
        Some(list) => backend::devices(list)?,
        None => vec![args.device.open()?],
    };
    let n = &args.nodes;
    let layout = DataParallelConfig::new()
        .with_local_devices(devices.len())
        .with_nodes(n.nodes)
        .with_node_rank(n.node_rank)
        .with_orchestrator(n.orchestrator.clone())
        .with_node_address(n.node_address.clone())
        .with_peer_timeout_seconds(n.peer_timeout)
        .with_running_statistics(if n.average_running_statistics {
            RunningStatistics::Averaged
        } else {
            RunningStatistics::PerDevice
        });
    layout.validate().map_err(TrainError::from)?;
    // Before the run folder is claimed or anything waits: the orchestrator answers, this node's port is free.
    if n.nodes > 1 {
        if let Some(url) = &n.orchestrator {
            crate::reachability::orchestrator_answers(url, std::time::Duration::from_secs_f64(n.connect_timeout))?;
        }
        if let Some(url) = &n.node_address {
            crate::reachability::node_port_is_free(url)?;
        }
    }
    let writes = n.node_rank == 0;
    if !writes && (args.out.is_some() || args.resume.is_some()) {
        bail!(
            "node {} writes nothing: give it the --config (and --set) that node 0 runs with, without --out or --resume",
            n.node_rank
        );
    }
    let (writer, config) = if writes {
        let (run, config) = match (&args.resume, &args.config, &args.out) {
            (Some(dir), _, _) => {
                let run = TrainConfig::resume_run::<backend::Train>(dir, &devices[0])?;
                let config: TrainConfig = serde_json::from_value(run.description().config.clone())?;
                (run, config)
            }
            (None, Some(path), Some(out)) => {
                let config = TrainConfig::load(path, &args.overrides)?;
                (
                    config.start_run::<backend::Train>(out, &devices[0], args.force)?,
                    config,
                )
            }
            _ => bail!("give --config and --out, or --resume"),
        };
        if run.finished() {
            eprintln!(
                "{} has finished all {} epochs",
                run.dir().display(),
                config.optim.epochs
            );
            return Ok(());
        }
        (Some(run), config)
    } else {
        let Some(path) = &args.config else {
            bail!("node {} needs --config (the one node 0 runs with)", n.node_rank)
        };
        (None, TrainConfig::load(path, &args.overrides)?)
    };
    let first_follower = usize::from(writes);
    let followers = config.trainers::<backend::Train>(&devices[first_follower..])?;
    if !args.json {
        eprintln!(
            "training {} with {} for {} epochs on {} x {} ({}, node {} of {}, {} devices in all){}",
            config.model.arch,
            config.method_name(),
            config.optim.epochs,
            devices.len(),
            backend::name(),
            args.devices.as_deref().unwrap_or("default device"),
            n.node_rank,
            n.nodes,
            layout.world(),
            writer
                .as_ref()
                .map(|run| format!(" -> {}", run.dir().display()))
                .unwrap_or_default()
        );
    }
    let mut replicas = Vec::new();
    if let Some(mut run) = writer {
        let mut reporter = EpochReporter::new(EpochLine::Train { json: args.json }, config.optim.epochs, args.json);
        if args.tensorboard || config.logging.tensorboard {
            let dir = run.claim_entry(TENSORBOARD_DIR)?;
            reporter = reporter.with_tensorboard(&dir)?;
        }
        replicas.push(Replica::Writer {
            run,
            observer: Box::new(reporter.warn_only()),
        });
    }
    replicas.extend(followers.into_iter().map(Replica::Follower));
    let run = train_data_parallel(&layout, replicas)?;
    if let Some(run) = run
        && !args.json
    {
        eprintln!("done: {}/last (and best/ when validation is on)", run.dir().display());
    }
    Ok(())
}
