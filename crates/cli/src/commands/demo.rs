//! `tailguard demo`: the quick start. Trains a natural baseline, PGD-AT, TAET and RobustLT (on PGD-AT) on the embedded
//! long-tailed CIFAR-10 subset, evaluates each (clean, PGD-20, AA-lite) and writes a report comparing them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use tailguard_attacks::AttackPreset;
use tailguard_longtail::DatasetKind;
use tailguard_trainers::TrainConfig;

use crate::backend;
use crate::commands::eval::{EvalRequest, evaluate_checkpoint};
use crate::epochs::{EpochLine, EpochReporter, train_to_end};
use crate::report::chart::{Series, grouped_bars};
use crate::report::eval_report::EvalReport;
use crate::report::percent;

/// Train natural, PGD-AT, TAET and RobustLT models on the embedded dataset, attack them, and compare them (about
/// 12-15 minutes on a 2-core CPU).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tailguard demo --out runs/demo\n\n\
    Writes runs/demo/report.md: the four models' balanced accuracy and balanced and tail robustness side by side, \
    a per-class chart, and what the numbers show.")]
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
    /// Training epochs of every model [default: each model's configs/demo file: 30 natural, 12 the others; TAET
    /// spends the first third on clean cross-entropy].
    #[arg(long)]
    epochs: Option<usize>,
    /// Test images to evaluate (a seeded subset of the 1,000 embedded test images, 50 per class by default).
    #[arg(long, default_value_t = 500)]
    limit: usize,
    /// Seed of every model's initialisation, batches and attacks (docs/benchmarks.md reports seeds 0, 1 and 2).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A smoke run of every part in a minute or two: 3 epochs on at most 20 training images per class, 100 test
    /// images. Its numbers mean nothing; the test suite runs it (on the CPU).
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
}

/// The demo's models, in report order: run folder, label, configuration.
const MODELS: [(&str, &str, &str); 4] = [
    ("natural", "natural", include_str!("../../configs/demo/natural.toml")),
    ("pgd-at", "PGD-AT", include_str!("../../configs/demo/pgd-at.toml")),
    ("taet", "TAET", include_str!("../../configs/demo/taet.toml")),
    (
        "robustlt-pgd-at",
        "RobustLT + PGD-AT",
        include_str!("../../configs/demo/robustlt-pgd-at.toml"),
    ),
];
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

/// The most epochs a demo model trains (the defaults are 12 and 30).
const MAX_DEMO_EPOCHS: usize = 1_000;

pub fn run(mut args: DemoArgs) -> anyhow::Result<()> {
    if args.quick {
        args.epochs = Some(3);
        args.limit = args.limit.min(100);
    }
    // Every flag before any model trains.
    if args.epochs.is_some_and(|e| e < 3) {
        bail!("--epochs must be at least 3 (TAET needs a clean and an adversarial stage)");
    }
    if let Some(epochs) = args.epochs.filter(|&e| e > MAX_DEMO_EPOCHS) {
        bail!("--epochs {epochs} is more than the demo trains (at most {MAX_DEMO_EPOCHS})");
    }
    if args.limit == 0 {
        bail!("--limit must be at least 1 test image");
    }
    let data = match &args.data_dir {
        Some(path) => path.clone(),
        None => embedded_dataset()?,
    };
    // An earlier demo in --out (its manifest names its runs) is continued; any other non-empty folder needs --force.
    let continuing = !args.force && tailguard_output::Manifest::read(&args.out)?.owns("natural");
    let mut claimed: Vec<&str> = MODELS.iter().map(|(name, _, _)| *name).collect();
    claimed.extend(["report.md", "per_class_aa.png"]);
    let mut output = tailguard_output::OutputDir::claim(&args.out, &claimed, args.force || continuing)?;
    let device = args.device.open()?;
    let mut reports = Vec::new();
    for (name, label, text) in MODELS {
        let mut overrides = vec![
            format!("data.data_dir=\"{}\"", data.display()),
            format!("seed={}", args.seed),
        ];
        if let Some(epochs) = args.epochs {
            overrides.push(format!("optim.epochs={epochs}"));
            if name == "taet" {
                overrides.push(format!("method.ce_epochs={}", epochs / 3));
            }
        }
        if args.quick {
            overrides.push("data.n_max=20".into());
        }
        let config = TrainConfig::parse(text, &overrides)?;
        let epochs = config.optim.epochs;
        let dir = output.record(name)?;
        let mut run = if continuing && dir.join("last").exists() {
            TrainConfig::resume_run::<backend::Train>(&dir, &device)?
        } else {
            // The folder is this demo's own: an earlier start is replaced (its foreign files are still refused).
            config.start_run::<backend::Train>(&dir, &device, true)?
        };
        eprintln!(
            "[{name}] training {epochs} epochs on {} -> {}",
            data.display(),
            dir.display()
        );
        let mut reporter = EpochReporter::new(EpochLine::Demo { name: name.to_string() }, epochs, false);
        train_to_end(&mut run, &mut reporter)?;
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
            norm: tailguard_attacks::Norm::Linf,
            limit: Some(args.limit),
            batch_size: 128,
            lt_test: None,
            train_counts: None,
            seed: 0,
            report: dir.join("report"),
            force: true,
            logit_adjustment: None,
            device: args.device.device.clone(),
            weights: None,
            devices: None,
            robustbench_json: None,
        };
        let report = evaluate_checkpoint(&request, false).with_context(|| format!("evaluating {name}"))?;
        reports.push((name, label, report));
    }
    write_comparison(&args.out, &reports)?;
    eprintln!("wrote {}", args.out.join("report.md").display());
    Ok(())
}

fn attack<'a>(report: &'a EvalReport, name: &str) -> Option<&'a crate::report::eval_report::AttackReport> {
    report.attacks.iter().find(|a| a.attack == name)
}

/// Balanced accuracy of `report` under `attack` (clean, pgd20, aa-lite), in [0, 1].
fn balanced(report: &EvalReport, name: &str) -> Option<f64> {
    attack(report, name).map(|r| r.summary.balanced_accuracy)
}

/// report.md and per_class_aa.png comparing the runs.
fn write_comparison(out: &Path, reports: &[(&str, &str, EvalReport)]) -> anyhow::Result<()> {
    let mut md = String::from("# tailguard demo\n\n");
    let first = &reports[0].2;
    let _ = writeln!(
        md,
        "Small CNN trained on the embedded long-tailed CIFAR-10 subset (rho 10, 2,040 images, class-balanced batches), \
         evaluated on {} balanced test images at eps 8/255 ({} backend, {}).\n",
        first.test_images, first.backend, first.date
    );
    let _ = writeln!(
        md,
        "| model | balanced accuracy | balanced robustness (PGD-20) | balanced robustness (AA-lite) | tail robustness (AA-lite) | worst class (AA-lite) |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | --- |");
    for (name, label, report) in reports {
        let aa = attack(report, "aa-lite");
        let worst = aa
            .and_then(|a| a.summary.worst_class)
            .map(|w| format!("{} {}%", report.classes[w.class], percent(Some(w.accuracy))))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            md,
            "| [{label}]({name}/report/report.md) | {}% | {}% | {}% | {}% | {worst} |",
            percent(balanced(report, "clean")),
            percent(balanced(report, "pgd20")),
            percent(balanced(report, "aa-lite")),
            percent(aa.and_then(|a| a.summary.groups.tail))
        );
    }
    let _ = writeln!(
        md,
        "\nBalanced robustness is the mean per-class accuracy under attack; tail = the 80% least frequent classes."
    );
    let _ = writeln!(md, "\n## What the numbers show\n\n{}", reading(reports));
    let _ = writeln!(md, "\n![Per-class AA-lite accuracy, head to tail](per_class_aa.png)");
    let categories: Vec<String> = first.head_to_tail.iter().map(|&c| first.classes[c].clone()).collect();
    let series: Vec<Series> = reports
        .iter()
        .filter_map(|(_, label, report)| {
            attack(report, "aa-lite").map(|a| Series {
                name: label.to_string(),
                values: report.head_to_tail.iter().map(|&c| a.summary.per_class[c]).collect(),
            })
        })
        .collect();
    std::fs::create_dir_all(out)?;
    let chart = grouped_bars(
        "Per-class robust accuracy under AA-lite, head to tail",
        &categories,
        &series,
    )?;
    let mut report = tailguard_output::FileGroup::new(out);
    report.add("per_class_aa.png", chart).add("report.md", md.into_bytes());
    report.commit()?;
    Ok(())
}

/// The comparison in plain words: each robust model against natural training, then TAET and RobustLT against
/// PGD-AT, saying so when they do not beat it.
fn reading(reports: &[(&str, &str, EvalReport)]) -> String {
    let points = |a: f64, b: f64| 100.0 * (a - b);
    let find = |name: &str| reports.iter().find(|(n, _, _)| *n == name);
    let Some((_, _, natural)) = find("natural") else {
        return "No natural model to compare with.".into();
    };
    let (Some(nat_aa), Some(nat_clean)) = (balanced(natural, "aa-lite"), balanced(natural, "clean")) else {
        return "The natural model was not evaluated with AA-lite.".into();
    };
    let mut lines = vec![format!(
        "- Natural training reaches {}% balanced accuracy and keeps {}% balanced robustness under AA-lite: an \
         undefended model is broken by an 8/255 perturbation.",
        percent(Some(nat_clean)),
        percent(Some(nat_aa))
    )];
    for (_, label, report) in reports.iter().filter(|(n, _, _)| *n != "natural") {
        let (Some(aa), Some(clean)) = (balanced(report, "aa-lite"), balanced(report, "clean")) else {
            continue;
        };
        let tail = attack(report, "aa-lite").and_then(|a| a.summary.groups.tail);
        let tail_natural = attack(natural, "aa-lite").and_then(|a| a.summary.groups.tail);
        let tail_text = match (tail, tail_natural) {
            (Some(t), Some(n)) => format!(", tail {}% against {}%", percent(Some(t)), percent(Some(n))),
            _ => String::new(),
        };
        lines.push(format!(
            "- {label}: {:+.1} points of balanced AA-lite robustness over natural training ({}% against {}%{tail_text}), \
             at {:+.1} points of balanced clean accuracy.",
            points(aa, nat_aa),
            percent(Some(aa)),
            percent(Some(nat_aa)),
            points(clean, nat_clean)
        ));
    }
    if let Some((_, _, pgd)) = find("pgd-at")
        && let Some(pgd_aa) = balanced(pgd, "aa-lite")
    {
        for (_, label, report) in reports
            .iter()
            .filter(|(n, _, _)| *n == "taet" || *n == "robustlt-pgd-at")
        {
            let Some(aa) = balanced(report, "aa-lite") else {
                continue;
            };
            let verdict = if aa > pgd_aa { "beats" } else { "does not beat" };
            lines.push(format!(
                "- {label} {verdict} PGD-AT here in balanced AA-lite robustness ({}% against {}%).",
                percent(Some(aa)),
                percent(Some(pgd_aa))
            ));
        }
        lines.push(
            "- Scale: these are a small CNN trained for 12 to 30 epochs on 2,040 images. The papers' gains of TAET and \
             RobustLT over PGD-AT come from 100-epoch schedules of ResNet-18 and WideResNet-28-10 on the full \
             long-tailed sets; their warm-up (RobustLT) and clean stage (TAET) take a large share of a 12-epoch run. \
             docs/benchmarks.md records this demo over three seeds and a longer study on real CIFAR-10-LT."
                .into(),
        );
    }
    lines.join("\n")
}
