//! `tailguard demo`: the quick start. Trains a natural baseline and TAET on the embedded long-tailed CIFAR-10 subset,
//! evaluates both (clean, PGD-20, AA-lite) and writes a report comparing them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use tailguard_attacks::AttackPreset;
use tailguard_longtail::DatasetKind;
use tailguard_trainers::TrainConfig;

use crate::backend;
use crate::commands::eval::{EvalRequest, evaluate_checkpoint};
use crate::progress;
use crate::report::chart::{Series, grouped_bars};
use crate::report::eval_report::EvalReport;
use crate::report::{percent, write_report};

/// Train a natural baseline and TAET on the embedded dataset, attack both, and compare them (about ten minutes on a
/// 2-core CPU).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tailguard demo --out runs/demo\n\n\
    Writes runs/demo/report.md, with the two models' balanced accuracy and balanced robustness side by side.")]
pub struct DemoArgs {
    /// Output folder; an interrupted demo continues where it stopped. Any other non-empty folder is refused.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Start over in --out, replacing the earlier demo's files (never anything tailguard did not write).
    #[arg(long)]
    force: bool,
    /// The dataset archive [default: datasets/cifar10-lt-mini.tar.gz of the repository].
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Training epochs per model (TAET spends the first third on clean cross-entropy).
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    /// Test images to evaluate (a seeded subset of the 1,000 embedded test images).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// A smoke run of every part in a minute or two: 3 epochs on at most 20 training images per class, 100 test
    /// images. Its numbers mean nothing; CI runs it on the GPU path.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
}

const NATURAL: &str = include_str!("../../../../configs/cpu/natural-small.toml");
const TAET: &str = include_str!("../../../../configs/cpu/taet-small.toml");
const EMBEDDED: &str = "datasets/cifar10-lt-mini.tar.gz";

/// The embedded dataset: relative to the working directory, else to the repository this program was built from.
fn embedded_dataset() -> anyhow::Result<PathBuf> {
    let local = PathBuf::from(EMBEDDED);
    if local.is_file() {
        return Ok(local);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(EMBEDDED);
    if built.is_file() {
        return Ok(built);
    }
    bail!("the embedded dataset {EMBEDDED} was not found; run from the repository root or pass --data-dir")
}

pub fn run(mut args: DemoArgs) -> anyhow::Result<()> {
    if args.quick {
        args.epochs = 3;
        args.limit = args.limit.min(100);
    }
    if args.epochs < 3 {
        bail!("--epochs must be at least 3 (TAET needs a clean and an adversarial stage)");
    }
    let data = match &args.data_dir {
        Some(path) => path.clone(),
        None => embedded_dataset()?,
    };
    // An earlier demo in --out (its manifest names its runs) is continued; any other non-empty folder needs --force.
    let continuing = !args.force && tailguard_output::Manifest::read(&args.out)?.owns("natural");
    let mut output = tailguard_output::OutputDir::claim(
        &args.out,
        &["natural", "taet", "report.md", "per_class_aa.png"],
        args.force || continuing,
    )?;
    let device = args.device.open()?;
    let mut reports = Vec::new();
    for (name, text) in [("natural", NATURAL), ("taet", TAET)] {
        let mut overrides = vec![
            format!("data.data_dir=\"{}\"", data.display()),
            format!("optim.epochs={}", args.epochs),
        ];
        if name == "taet" {
            overrides.push(format!("method.ce_epochs={}", args.epochs / 3));
        }
        if args.quick {
            overrides.push("data.n_max=20".into());
        }
        let config = TrainConfig::parse(text, &overrides)?;
        let dir = output.record(name)?;
        let mut run = if continuing && dir.join("last").exists() {
            TrainConfig::resume_run::<backend::Train>(&dir, &device)?
        } else {
            // The folder is this demo's own: an earlier start is replaced (its foreign files are still refused).
            config.start_run::<backend::Train>(&dir, &device, true)?
        };
        eprintln!(
            "[{name}] training {} epochs on {} -> {}",
            args.epochs,
            data.display(),
            dir.display()
        );
        while !run.finished() {
            let label = format!("[{name}] epoch {}", run.trainer.next_epoch + 1);
            let bar = progress::bar(false, run.trainer.steps_per_epoch() as u64, label.clone());
            let mut observer = BarObserver(bar.clone(), label);
            let record = run.run_epoch(&mut observer)?;
            bar.finish_and_clear();
            crate::report::curves::write_training_curves(&dir)?;
            eprintln!(
                "[{name}] epoch {}/{} {:<11} loss {:.4}  validation balanced clean {}%  robust {}%",
                record.epoch,
                args.epochs,
                record.stage,
                record.loss,
                percent(record.validation_clean),
                percent(record.validation_robust)
            );
        }
        eprintln!(
            "[{name}] evaluating clean, PGD-20 and AA-lite on {} test images",
            args.limit
        );
        let request = EvalRequest {
            checkpoint: dir.join("last"),
            dataset: DatasetKind::Cifar10,
            data_dir: data.clone(),
            attacks: vec![AttackPreset::Clean, AttackPreset::Pgd20, AttackPreset::AaLite],
            eps: 8.0 / 255.0,
            limit: Some(args.limit),
            batch_size: 128,
            lt_test: None,
            train_counts: None,
            seed: 0,
            report: dir.join("report"),
            force: true,
            device: args.device.device.clone(),
        };
        let report = evaluate_checkpoint(&request, false).with_context(|| format!("evaluating {name}"))?;
        reports.push((name, report));
    }
    write_comparison(&args.out, &reports)?;
    eprintln!("wrote {}", args.out.join("report.md").display());
    Ok(())
}

struct BarObserver(indicatif::ProgressBar, String);

impl tailguard_trainers::TrainObserver for BarObserver {
    fn on_step(&mut self, _epoch: usize, step: usize, _steps: usize, figures: Option<tailguard_trainers::StepFigures>) {
        self.0.set_position(step as u64);
        if let Some(figures) = figures {
            self.0
                .set_message(format!("{} {}", self.1, progress::step_message(&figures)));
        }
    }
}

fn attack<'a>(report: &'a EvalReport, name: &str) -> Option<&'a crate::report::eval_report::AttackReport> {
    report.attacks.iter().find(|a| a.attack == name)
}

/// report.md and per_class_aa.png comparing the runs.
fn write_comparison(out: &Path, reports: &[(&str, EvalReport)]) -> anyhow::Result<()> {
    let mut md = String::from("# tailguard demo\n\n");
    let first = &reports[0].1;
    let _ = writeln!(
        md,
        "Small CNN trained on the embedded long-tailed CIFAR-10 subset (rho 10), evaluated on {} balanced test \
         images at eps 8/255 ({} backend, {}).\n",
        first.test_images, first.backend, first.date
    );
    let _ = writeln!(
        md,
        "| model | balanced accuracy | balanced robustness (PGD-20) | balanced robustness (AA-lite) | tail robustness (AA-lite) | worst class (AA-lite) |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | --- |");
    for (name, report) in reports {
        let value = |a: &str| attack(report, a).map(|r| r.summary.balanced_accuracy);
        let aa = attack(report, "aa-lite");
        let worst = aa
            .and_then(|a| a.summary.worst_class)
            .map(|w| format!("{} {}%", report.classes[w.class], percent(Some(w.accuracy))))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            md,
            "| [{name}]({name}/report/report.md) | {}% | {}% | {}% | {}% | {worst} |",
            percent(value("clean")),
            percent(value("pgd20")),
            percent(value("aa-lite")),
            percent(aa.and_then(|a| a.summary.groups.tail))
        );
    }
    let _ = writeln!(
        md,
        "\nBalanced robustness is the mean per-class accuracy under attack; tail = the 80% least frequent classes."
    );
    let _ = writeln!(md, "\n![Per-class AA-lite accuracy, head to tail](per_class_aa.png)");
    let categories: Vec<String> = first.head_to_tail.iter().map(|&c| first.classes[c].clone()).collect();
    let series: Vec<Series> = reports
        .iter()
        .filter_map(|(name, report)| {
            attack(report, "aa-lite").map(|a| Series {
                name: format!("{name} (AA-lite)"),
                values: report.head_to_tail.iter().map(|&c| a.summary.per_class[c]).collect(),
            })
        })
        .collect();
    std::fs::create_dir_all(out)?;
    grouped_bars(
        &out.join("per_class_aa.png"),
        "Per-class robust accuracy under AA-lite, head to tail",
        &categories,
        &series,
    )?;
    write_report(&out.join("report.md"), md.as_bytes())
}
