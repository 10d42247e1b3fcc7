//! `tailguard train`: train a model with a method from a TOML configuration, resumably.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use tailguard_trainers::{EpochRecord, StepFigures, TrainConfig, TrainObserver};

use crate::backend;
use crate::progress;

/// Train a robust classifier (natural, pgd-at, trades, at-bsl, taet; optionally with RobustLT budgets).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tailguard train --config configs/cpu/taet-small.toml --out runs/taet\n  \
    tailguard train --config configs/cifar10-lt/robustlt-at-bsl-rho50.toml --set optim.epochs=10 --out runs/x\n  \
    tailguard train --resume runs/taet\n  \
    tailguard train --config configs/cifar10-lt/taet-rho10.toml --dry-run --json")]
pub struct TrainArgs {
    /// Configuration file (see configs/).
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override a configuration value, e.g. --set optim.lr=0.05 --set robustlt.alpha=0.3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Folder for config.toml, log.jsonl, last/ and best/: new or empty (see --force).
    #[arg(long, value_name = "DIR", required_unless_present_any = ["resume", "dry_run"])]
    out: Option<PathBuf>,
    /// Start over in --out, replacing the earlier run's files there (never a file tailguard did not write).
    #[arg(long, requires = "out")]
    force: bool,
    /// Continue the run in this folder from its last checkpoint (with the configuration stored in it; of an edited
    /// config.toml only optim.epochs is taken).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out", "overrides"])]
    resume: Option<PathBuf>,
    /// Print the resolved plan (config, per-class counts, stages, RobustLT budgets) without training.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output: the plan, or one JSON line per epoch.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    hidden: bool,
}

impl TrainObserver for Progress {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, figures: Option<StepFigures>) {
        let bar = self
            .bar
            .get_or_insert_with(|| progress::bar(self.hidden, steps as u64, format!("epoch {}", epoch + 1)));
        bar.set_position(step as u64);
        if let Some(figures) = figures {
            bar.set_message(format!("epoch {} {}", epoch + 1, progress::step_message(&figures)));
        }
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
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
    while !run.finished() {
        let mut observer = Progress {
            bar: None,
            hidden: args.json,
        };
        let record = run.run_epoch(&mut observer)?;
        if let Some(bar) = observer.bar {
            bar.finish_and_clear();
        }
        crate::report::curves::write_training_curves(run.dir())?;
        if args.json {
            println!("{}", serde_json::to_string(&record)?);
        } else {
            eprintln!("{}", summary(&record, c.optim.epochs));
        }
    }
    if !args.json {
        eprintln!("done: {}/last (and best/ when validation is on)", run.dir().display());
    }
    Ok(())
}

fn summary(r: &EpochRecord, epochs: usize) -> String {
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:5.1}%", 100.0 * v))
            .unwrap_or_else(|| "    -".into())
    };
    format!(
        "epoch {:>3}/{epochs} {:<11} lr {:.4}  loss {:.4}  train clean {}  adv {}  val clean {}  robust {}  {:.0} img/s",
        r.epoch,
        r.stage,
        r.lr,
        r.loss,
        pct(r.clean_accuracy),
        pct(r.adversarial_accuracy),
        pct(r.validation_clean),
        pct(r.validation_robust),
        r.images_per_second
    )
}
