//! `tailguard eval`: clean and adversarial accuracy of a checkpoint, per class, with balanced metrics, written as
//! report.json, report.md and a per-class bar chart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use clap::Args;
use tailguard_attacks::{AttackPreset, AutoAttackStages, FrozenModel};
use tailguard_longtail::{
    BatchLoader, BatchLoaderConfig, ClassGroups, ClassTally, DatasetKind, ImageDataset, LongTailSpec, SeedStream, Split,
};
use tailguard_models::{CheckpointMeta, load_checkpoint};

use crate::args::{Counts, parse_counts, parse_eps};
use crate::backend;
use crate::progress;
use crate::report::eval_report::{AttackReport, EvalReport};

/// Evaluate a checkpoint under attack: accuracy, balanced accuracy and robustness, per class.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tailguard eval --checkpoint runs/taet/best --dataset cifar10 --data-dir datasets/cifar10-lt-mini.tar.gz \\\n      \
    --attacks clean,pgd20,aa-lite --report reports/taet\n  \
    tailguard eval --checkpoint ckpt --dataset cifar10 --data-dir ~/data --lt-test 10 --eps 0.031 --report out")]
pub struct EvalArgs {
    /// Checkpoint folder (model.mpk + checkpoint.json).
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// cifar10, cifar100 or imagefolder.
    #[arg(long)]
    pub(crate) dataset: DatasetKind,
    /// The dataset (CIFAR binary folder or .tar.gz, or an image folder with ROOT/test/<class>/*).
    #[arg(long, value_name = "PATH")]
    pub(crate) data_dir: PathBuf,
    /// Comma-separated attacks: clean, fgsm, pgd20, pgd20-step1 (TAET's 1/255 step), cw20, aa-lite, pgd10,
    /// taet-training.
    #[arg(long, value_delimiter = ',', default_value = "clean,fgsm,pgd20,cw20,aa-lite")]
    pub(crate) attacks: Vec<AttackPreset>,
    /// L-inf budget, as a fraction or a number.
    #[arg(long, default_value = "8/255", value_parser = parse_eps)]
    pub(crate) eps: f64,
    /// Evaluate a seeded random subset of N test images.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub(crate) batch_size: usize,
    /// Use a long-tailed test split with this imbalance ratio (TAET's protocol) instead of the whole test set.
    #[arg(long, value_name = "RHO")]
    pub(crate) lt_test: Option<f64>,
    /// Per-class training counts for the many/medium/few/tail groups, comma-separated [default: from the checkpoint].
    #[arg(long, value_name = "N,N,...", value_parser = parse_counts)]
    pub(crate) train_counts: Option<Counts>,
    /// Seed for the test subset and the attacks' random starts.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Folder for report.json, report.md and per_class.png: new or empty (see --force).
    #[arg(long, value_name = "DIR")]
    pub(crate) report: PathBuf,
    /// Replace an earlier report in --report (only files tailguard wrote; anything else there is kept).
    #[arg(long)]
    pub(crate) force: bool,
    /// Print report.json to stdout as well.
    #[arg(long)]
    pub(crate) json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let report = evaluate(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        eprintln!("wrote {}", args.report.join("report.md").display());
    }
    Ok(())
}

/// The files an evaluation writes into its report folder.
const REPORT_FILES: &[&str] = &["report.json", "report.md", "per_class.png"];

/// Runs the evaluation and writes the report folder.
pub fn evaluate(args: &EvalArgs) -> anyhow::Result<EvalReport> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    // Claimed before the attacks run, so a refused folder costs nothing.
    tailguard_output::OutputDir::claim(&args.report, REPORT_FILES, args.force)?;
    let device = backend::device()?;
    let (model, meta) = load_checkpoint::<backend::Train>(&args.checkpoint, &device)?;
    let test = test_set(args, &meta)?;
    let train_counts = args
        .train_counts
        .clone()
        .map(|c| c.0)
        .or_else(|| training_counts(&meta));
    if let Some(counts) = &train_counts
        && counts.len() != test.num_classes()
    {
        bail!(
            "{} training counts given for {} classes",
            counts.len(),
            test.num_classes()
        );
    }
    let groups = train_counts.as_deref().map(ClassGroups::from_train_counts);
    let order = head_to_tail(train_counts.as_deref(), test.num_classes());

    let frozen = FrozenModel::new(&model);
    let test = Arc::new(test);
    let loader = BatchLoader::new(test.clone(), BatchLoaderConfig::evaluation(args.batch_size))?;
    let mut attacks = Vec::new();
    for preset in &args.attacks {
        <backend::Compute as Backend>::seed(&device, args.seed);
        let bar = progress::bar(args.json, test.len() as u64, format!("{preset:<12}"));
        let mut tally = ClassTally::new(test.num_classes());
        let mut stages: Option<AutoAttackStages> = None;
        let start = Instant::now();
        for batch in loader.batches::<backend::Compute>(0, &device) {
            let n = batch.labels.dims()[0];
            let outcome = preset.run(&frozen, batch.images, batch.labels.clone(), args.eps);
            tally.add_batch(batch.labels, outcome.robust);
            if let Some(s) = outcome.stages {
                let total = stages.get_or_insert(AutoAttackStages {
                    clean: 0,
                    apgd_ce: 0,
                    apgd_t: 0,
                });
                total.clean += s.clean;
                total.apgd_ce += s.apgd_ce;
                total.apgd_t += s.apgd_t;
            }
            bar.inc(n as u64);
            bar.set_message(format!(
                "{preset:<12} {:5.1}%",
                100.0 * tally.correct.iter().sum::<usize>() as f64 / tally.total().max(1) as f64
            ));
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let summary = tally.summary(groups.as_ref().unwrap_or(&ClassGroups::default()));
        if !args.json {
            eprintln!(
                "{:<12} accuracy {:6.2}%  balanced {:6.2}%  ({:.1} s)",
                preset.name(),
                100.0 * summary.accuracy,
                100.0 * summary.balanced_accuracy,
                seconds
            );
        }
        attacks.push(AttackReport::new(*preset, summary, tally, seconds, stages));
    }

    let report = EvalReport {
        tailguard_version: env!("CARGO_PKG_VERSION"),
        date: crate::args::today(),
        checkpoint: args.checkpoint.display().to_string(),
        arch: meta.model.arch.to_string(),
        dataset: args.dataset.to_string(),
        data_dir: args.data_dir.display().to_string(),
        backend: backend::name().to_string(),
        eps: args.eps,
        eps_255: args.eps * 255.0,
        lt_test: args.lt_test,
        limit: args.limit,
        seed: args.seed,
        test_images: test.len(),
        classes: test.classes().to_vec(),
        test_counts: test.class_counts(),
        train_counts,
        groups,
        head_to_tail: order,
        attacks,
        training_curves: training_curves(&args.checkpoint, &args.report),
    };
    report.write(&args.report)?;
    Ok(report)
}

/// The test images: the whole test split, or its long-tailed version, optionally a seeded subset.
fn test_set(args: &EvalArgs, meta: &CheckpointMeta) -> anyhow::Result<ImageDataset> {
    let test = args
        .dataset
        .load(&args.data_dir, Split::Test)
        .with_context(|| format!("loading the {} test set from {}", args.dataset, args.data_dir.display()))?;
    if test.classes() != meta.classes.as_slice() {
        bail!(
            "the checkpoint was trained on classes [{}] but the test set has [{}]",
            meta.classes.join(", "),
            test.classes().join(", ")
        );
    }
    let test = match args.lt_test {
        Some(rho) => LongTailSpec {
            seed: args.seed,
            ..LongTailSpec::exp(rho)
        }
        .select(&test)
        .context("building the long-tailed test split")?
        .apply(&test)?,
        None => test,
    };
    match args.limit {
        Some(0) => bail!("--limit must be at least 1"),
        Some(n) if n < test.len() => {
            let mut order: Vec<usize> = (0..test.len()).collect();
            SeedStream::derive(args.seed, &[0x6c69_6d69]).shuffle(&mut order);
            let mut keep = order[..n].to_vec();
            keep.sort_unstable();
            Ok(test.subset(&keep)?)
        }
        _ => Ok(test),
    }
}

/// Per-class training counts recorded in the checkpoint by `tailguard train`, if any.
fn training_counts(meta: &CheckpointMeta) -> Option<Vec<usize>> {
    serde_json::from_value(meta.training.get("class_counts")?.clone()).ok()
}

/// Classes from most to least frequent in training (class order when counts are unknown).
fn head_to_tail(counts: Option<&[usize]>, classes: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..classes).collect();
    if let Some(counts) = counts {
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    }
    order
}

/// The training curves beside the checkpoint's run folder (`RUN/last` -> `RUN/curves_*.png`), as paths relative to
/// the report folder.
fn training_curves(checkpoint: &std::path::Path, report: &std::path::Path) -> Vec<String> {
    let Some(run) = std::fs::canonicalize(checkpoint)
        .ok()
        .and_then(|c| c.parent().map(|p| p.to_path_buf()))
    else {
        return Vec::new();
    };
    let _ = std::fs::create_dir_all(report);
    let Ok(report) = std::fs::canonicalize(report) else {
        return Vec::new();
    };
    let mut curves: Vec<String> = [
        "curves_loss.png",
        "curves_accuracy.png",
        "curves_lr.png",
        "curves_budgets.png",
    ]
    .iter()
    .map(|name| run.join(name))
    .filter(|path| path.is_file())
    .map(|path| relative(&path, &report))
    .collect();
    curves.sort();
    curves
}

/// `path` written relative to the folder `from` (both absolute).
fn relative(path: &std::path::Path, from: &std::path::Path) -> String {
    let (a, b): (Vec<_>, Vec<_>) = (path.components().collect(), from.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(a[common..].iter().map(|c| c.as_os_str().to_string_lossy().to_string()));
    parts.join("/")
}
