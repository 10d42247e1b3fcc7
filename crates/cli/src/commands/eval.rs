//! `tailguard eval`: clean and adversarial accuracy of a checkpoint, per class, with balanced metrics, written as
//! report.json, report.md and a per-class bar chart.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use tailguard_attacks::{
    AttackPreset, FrozenModel, Inner, MaskingWarning, Norm, check_model_in, check_stages, parse_budget,
};
use tailguard_longtail::{
    BatchLoader, BatchLoaderConfig, ClassGroups, ClassTally, DatasetKind, ImageDataset, LoadOptions, LongTailSpec,
    SeedStream, Split,
};
use tailguard_models::{
    CheckpointMeta, Classifier, LogitAdjustmentConfig, Weights, load_checkpoint_weights, read_checkpoint_meta,
};
use tailguard_trainers::{
    AttackResult, EvaluationAttack, EvaluationObserver, PresetAttack, evaluate, evaluate_on_devices,
};

use crate::args::{Counts, parse_counts, parse_weights};
use crate::backend;
use crate::progress;
use crate::report::eval_report::{AttackReport, EvalReport, LogitAdjustmentReport};
use crate::report::robustbench::RobustBenchEntry;

/// Evaluate a checkpoint under attack: accuracy, balanced accuracy and robustness, per class.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tailguard eval --checkpoint runs/taet/best --dataset cifar10 --data-dir datasets/cifar10-lt-mini.tar.gz \\\n      \
    --attacks clean,pgd20,aa-lite --report reports/taet\n  \
    tailguard eval --checkpoint ckpt --dataset cifar10 --data-dir ~/data --lt-test 10 --eps 0.031 --report out")]
pub struct EvalArgs {
    /// Checkpoint folder (model.mpk + checkpoint.json).
    #[arg(long)]
    checkpoint: PathBuf,
    /// cifar10, cifar100, tinyimagenet (the release folder: wnids.txt, train/, val/), imagefolder or list (an image
    /// root with list files; images are fitted to the model's input size).
    #[arg(long)]
    dataset: DatasetKind,
    /// The dataset (CIFAR binary folder or .tar.gz, or an image folder with ROOT/test/<class>/*).
    #[arg(long, value_name = "PATH")]
    data_dir: PathBuf,
    /// Comma-separated attacks: clean, fgsm, pgd20, pgd20-step1 (TAET's 1/255 step), cw20, aa-lite (APGD-CE + APGD-T),
    /// aa (standard AutoAttack: also FAB-T and Square, about four times aa-lite's cost), aa-rand (AutoAttack's
    /// version for randomised defences: APGD-CE + APGD-DLR, 20 gradient samples per step), aa-plus (AA+: restarts,
    /// untargeted FAB, about five times aa's cost), fab-t, square, fab, apgd-ce, apgd-t, apgd-dlr, apgd-ce-plus,
    /// apgd-dlr-plus, apgd-ce-eot, apgd-dlr-eot (each alone), pgd10, taet-training.
    #[arg(long, value_delimiter = ',', default_value = "clean,fgsm,pgd20,cw20,aa-lite")]
    attacks: Vec<AttackPreset>,
    /// AutoAttack's individual mode: each attack of aa, aa-plus, aa-lite or aa-rand runs alone on every
    /// clean-correct point and is reported with its own count (apgd-ce, apgd-t, fab-t, square; ...), instead of the
    /// ensemble where each attacks only what the previous ones left.
    #[arg(long)]
    individual: bool,
    /// The threat model: linf (budget at most 1 per pixel) or l2 (RobustBench's second leaderboard; in L2 every
    /// attack but aa, fab-t, square and taet-training runs).
    #[arg(long, default_value = "linf")]
    norm: Norm,
    /// Budget, as a fraction or a number [default: 8/255 in linf, 0.5 in l2].
    #[arg(long, value_parser = parse_budget)]
    eps: Option<f64>,
    /// Evaluate a seeded random subset of N test images.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Use a long-tailed test split with this imbalance ratio (TAET's protocol) instead of the whole test set.
    #[arg(long, value_name = "RHO")]
    lt_test: Option<f64>,
    /// Per-class training counts for the many/medium/few/tail groups, comma-separated [default: from the checkpoint].
    #[arg(long, value_name = "N,N,...", value_parser = parse_counts)]
    train_counts: Option<Counts>,
    /// Seed for the test subset and the attacks' random starts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for report.json, report.md and per_class.png: new or empty (see --force).
    #[arg(long, value_name = "DIR")]
    report: PathBuf,
    /// Replace an earlier report in --report (only files tailguard wrote; anything else there is kept).
    #[arg(long)]
    force: bool,
    /// Print report.json to stdout as well.
    #[arg(long)]
    json: bool,
    /// Post-hoc logit adjustment: attack and score `s z - TAU log(pi)`, pi the training class frequencies.
    #[arg(long, value_name = "TAU", conflicts_with = "robal_n")]
    logit_adjustment: Option<f64>,
    /// With --logit-adjustment: the factor s on the model's logits.
    #[arg(long, value_name = "S", default_value_t = 1.0, requires = "logit_adjustment")]
    logit_scale: f64,
    /// RoBal-N's inference: --logit-adjustment 0.1 --logit-scale 10 (for a cosine-head RoBal model).
    #[arg(long)]
    robal_n: bool,
    /// Which weights: the weight average (`ema`, the default when the checkpoint has one) or the weights as the
    /// optimizer left them (`raw`).
    #[arg(long, value_name = "ema|raw", value_parser = parse_weights)]
    weights: Option<Weights>,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
    /// Split the test images across these devices, comma-separated (`cuda:0,cuda:1`; `cpu:0,cpu:1` on the CPU):
    /// one thread per device, results combined in the images' order. Deterministic attacks (clean, FGSM) count as on
    /// one device; attacks with random starts draw from one generator per process, so their starts differ.
    #[arg(long, value_name = "LIST", conflicts_with = "device")]
    devices: Option<String>,
    /// Also write the result as a RobustBench leaderboard entry (the fields of its `model_info` files, plus
    /// tailguard's balanced and per-class figures); needs clean and aa (or aa-lite) in --attacks.
    #[arg(long, value_name = "FILE")]
    robustbench_json: Option<PathBuf>,
}

/// What to evaluate, apart from how the command line spells it (the demo builds one too).
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub checkpoint: PathBuf,
    pub dataset: DatasetKind,
    pub data_dir: PathBuf,
    pub attacks: Vec<AttackPreset>,
    pub eps: f64,
    /// The threat model's norm.
    pub norm: Norm,
    pub limit: Option<usize>,
    pub batch_size: usize,
    pub lt_test: Option<f64>,
    pub train_counts: Option<Vec<usize>>,
    pub seed: u64,
    pub report: PathBuf,
    pub force: bool,
    /// Post-hoc logit adjustment of the model's outputs (RoBal-N), if any.
    pub logit_adjustment: Option<LogitAdjustmentConfig>,
    /// `--device` (the backend's default when `None`).
    pub device: Option<String>,
    /// Which weights (the average when the checkpoint has one, if `None`).
    pub weights: Option<Weights>,
    /// `--devices` (one device when `None`).
    pub devices: Option<String>,
    /// `--robustbench-json`: where to write the leaderboard entry.
    pub robustbench_json: Option<PathBuf>,
}

impl EvalArgs {
    fn request(&self) -> EvalRequest {
        EvalRequest {
            checkpoint: self.checkpoint.clone(),
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            attacks: if self.individual {
                let mut attacks: Vec<AttackPreset> = Vec::new();
                for preset in self.attacks.iter().flat_map(|p| p.individual()) {
                    if !attacks.contains(&preset) {
                        attacks.push(preset);
                    }
                }
                attacks
            } else {
                self.attacks.clone()
            },
            eps: self.eps.unwrap_or(match self.norm {
                Norm::Linf => 8.0 / 255.0,
                Norm::L2 => 0.5,
            }),
            norm: self.norm,
            limit: self.limit,
            batch_size: self.batch_size,
            lt_test: self.lt_test,
            train_counts: self.train_counts.clone().map(|c| c.0),
            seed: self.seed,
            report: self.report.clone(),
            force: self.force,
            logit_adjustment: match (self.robal_n, self.logit_adjustment) {
                (true, _) => Some(LogitAdjustmentConfig::robal_n()),
                (false, Some(tau)) => Some(LogitAdjustmentConfig::new(tau).with_scale(self.logit_scale)),
                (false, None) => None,
            },
            device: self.device.device.clone(),
            weights: self.weights,
            devices: self.devices.clone(),
            robustbench_json: self.robustbench_json.clone(),
        }
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let report = evaluate_checkpoint(&args.request(), args.json)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        eprintln!("wrote {}", args.report.join("report.md").display());
    }
    Ok(())
}

/// The files an evaluation writes into its report folder.
const REPORT_FILES: &[&str] = &["report.json", "report.md", "per_class.png", "per_image.csv"];

/// A progress bar per attack, with the running accuracy.
struct AttackProgress {
    hidden: bool,
    total: u64,
    bar: Option<(String, indicatif::ProgressBar)>,
}

impl EvaluationObserver for AttackProgress {
    fn on_batch(&mut self, attack: &str, done: usize, _total: usize, tally: &ClassTally) {
        if self.bar.as_ref().is_none_or(|(name, _)| name != attack) {
            if let Some((_, bar)) = self.bar.take() {
                bar.finish_and_clear();
            }
            self.bar = Some((
                attack.to_string(),
                progress::bar(self.hidden, self.total, format!("{attack:<12}")),
            ));
        }
        if let Some((_, bar)) = &self.bar {
            bar.set_position(done as u64);
            bar.set_message(format!(
                "{attack:<12} {:5.1}%",
                100.0 * tally.correct.iter().sum::<usize>() as f64 / tally.total().max(1) as f64
            ));
        }
    }
}

/// Runs the evaluation (the library's [`tailguard_trainers::evaluate`]) and writes the report folder.
pub fn evaluate_checkpoint(request: &EvalRequest, quiet: bool) -> anyhow::Result<EvalReport> {
    if request.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(preset) = request.attacks.iter().find(|p| !p.supports(request.norm)) {
        let supported: Vec<&str> = AttackPreset::ALL
            .iter()
            .filter(|p| p.supports(request.norm))
            .map(|p| p.name())
            .collect();
        bail!(
            "{preset} is not available in the {} ball; there tailguard runs {}",
            request.norm,
            supported.join(", ")
        );
    }
    if request.norm == Norm::Linf && request.eps > 1.0 {
        bail!(
            "--eps must lie in [0, 1] in linf (pixels are in [0, 1]), got {}",
            request.eps
        );
    }
    // Claimed before the attacks run, so a refused folder costs nothing.
    tailguard_output::OutputDir::claim(&request.report, REPORT_FILES, request.force)?;
    if let Some(path) = &request.robustbench_json {
        let has = |attack: AttackPreset| request.attacks.contains(&attack);
        let autoattack = [
            AttackPreset::Aa,
            AttackPreset::AaPlus,
            AttackPreset::AaRand,
            AttackPreset::AaLite,
        ]
        .into_iter()
        .any(has);
        if !has(AttackPreset::Clean) || !autoattack {
            bail!("--robustbench-json needs clean and aa (or aa-plus, aa-rand, aa-lite) in --attacks");
        }
        tailguard_output::prepare_file(path, request.force)?;
    }
    let devices = match &request.devices {
        Some(list) => backend::devices(list)?,
        None => vec![backend::device(request.device.as_deref())?],
    };
    // Copy on the CPU backend, not on the GPU ones.
    #[allow(clippy::clone_on_copy)]
    let device = devices[0].clone();
    let weights = Weights::resolve(
        request.weights,
        &read_checkpoint_meta(&request.checkpoint)?,
        &request.checkpoint,
    )?;
    let (model, meta) = load_checkpoint_weights::<backend::Train>(&request.checkpoint, weights, &device)?;
    let arch = meta.model_config(&request.checkpoint)?.arch;
    let input_shape = meta.model_config(&request.checkpoint)?.input_shape;
    let test = test_set(request, &meta, input_shape[1])?;
    let train_counts = request.train_counts.clone().or_else(|| training_counts(&meta));
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

    let test = Arc::new(test);
    let loader = BatchLoader::new(test.clone(), BatchLoaderConfig::evaluation(request.batch_size))?;
    let presets: Vec<PresetAttack> = request
        .attacks
        .iter()
        .map(|&preset| PresetAttack {
            preset,
            eps: request.eps,
            norm: request.norm,
        })
        .collect();
    let mut observer = AttackProgress {
        hidden: quiet,
        total: test.len() as u64,
        bar: None,
    };
    let autoattack = request.attacks.iter().any(|a| {
        matches!(
            a,
            AttackPreset::Aa | AttackPreset::AaLite | AttackPreset::AaRand | AttackPreset::AaPlus
        )
    });
    let (results, mut warnings) = match &request.logit_adjustment {
        None => (
            attack_all(&model, &loader, &presets, request.seed, &devices, &mut observer)?,
            model_checks(&model, &loader, request, autoattack, &device)?,
        ),
        Some(adjustment) => {
            let Some(counts) = &train_counts else {
                bail!(
                    "logit adjustment needs the training class counts: the checkpoint does not record them, so \
                     pass --train-counts"
                );
            };
            let adjusted = adjustment.init(model, counts, &device)?;
            (
                attack_all(&adjusted, &loader, &presets, request.seed, &devices, &mut observer)?,
                model_checks(&adjusted, &loader, request, autoattack, &device)?,
            )
        }
    };
    let n = test.len();
    warnings.extend(
        results
            .iter()
            .filter_map(|r| r.stages.as_ref())
            .filter_map(|s| check_stages(s, n)),
    );
    if !quiet {
        for w in &warnings {
            eprintln!("warning: gradient masking? {} ({}): {}", w.finding, w.check, w.advice);
        }
    }
    if let Some((_, bar)) = observer.bar.take() {
        bar.finish_and_clear();
    }
    let mut reports = Vec::new();
    for (preset, result) in request.attacks.iter().zip(results) {
        let summary = result.tally.summary(groups.as_ref().unwrap_or(&ClassGroups::default()));
        if !quiet {
            eprintln!(
                "{:<12} accuracy {:6.2}%  balanced {:6.2}%  ({:.1} s)",
                preset.name(),
                100.0 * summary.accuracy,
                100.0 * summary.balanced_accuracy,
                result.seconds
            );
        }
        reports.push(AttackReport::new(
            *preset,
            summary,
            result.tally,
            result.seconds,
            result.stages,
            result.robust,
        ));
    }

    let report = EvalReport {
        tailguard_version: env!("CARGO_PKG_VERSION"),
        date: crate::args::today(),
        checkpoint: request.checkpoint.display().to_string(),
        weights: weights.to_string(),
        arch: arch.to_string(),
        dataset: request.dataset.to_string(),
        data_dir: request.data_dir.display().to_string(),
        backend: backend::name().to_string(),
        norm: request.norm.to_string(),
        eps: request.eps,
        eps_255: request.eps * 255.0,
        lt_test: request.lt_test,
        limit: request.limit,
        seed: request.seed,
        test_images: test.len(),
        classes: test.classes().to_vec(),
        test_counts: test.class_counts(),
        train_counts,
        logit_adjustment: request.logit_adjustment.as_ref().map(|a| LogitAdjustmentReport {
            tau: a.tau,
            scale: a.scale,
        }),
        groups,
        head_to_tail: order,
        image_labels: test.labels().to_vec(),
        masking_checks: autoattack.then_some(warnings),
        attacks: reports,
        training_curves: training_curves(&request.checkpoint, &request.report),
    };
    report.write(&request.report)?;
    if let Some(path) = &request.robustbench_json {
        let entry = RobustBenchEntry::from_report(&report, &checkpoint_name(&request.checkpoint))?;
        tailguard_output::write_owned(path, &entry.to_json()?)?;
        if !quiet {
            eprintln!(
                "wrote {} (RobustBench's model_info fields; fill in link, name, authors, venue)",
                path.display()
            );
        }
    }
    Ok(report)
}

/// AutoAttack's model checks and the logit-scale check on the first batch of the test set, for an evaluation that runs
/// AutoAttack (none otherwise): a few forward passes, one gradient and two PGD-20 runs.
fn model_checks<M: Classifier<backend::Train>>(
    model: &M,
    loader: &BatchLoader,
    request: &EvalRequest,
    autoattack: bool,
    device: &backend::ComputeDevice,
) -> anyhow::Result<Vec<MaskingWarning>> {
    if !autoattack {
        return Ok(Vec::new());
    }
    let Some(batch) = loader.batches::<Inner<backend::Train>>(0, device).next() else {
        return Ok(Vec::new());
    };
    let batch = batch?;
    <Inner<backend::Train> as burn::tensor::backend::Backend>::seed(device, request.seed);
    Ok(check_model_in(
        &FrozenModel::new(model),
        batch.images,
        batch.labels,
        request.eps,
        request.norm,
    ))
}

/// The name of a checkpoint for a leaderboard: its run folder's for `RUN/last` and `RUN/best`, else its own.
fn checkpoint_name(checkpoint: &std::path::Path) -> String {
    let own = checkpoint
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    match own.as_str() {
        "last" | "best" => checkpoint
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or(own),
        _ => own,
    }
}

/// Runs every attack on `model` (the checkpoint's model, or it with adjusted logits), on one device with progress, or
/// split across several.
fn attack_all<M: Classifier<backend::Train>>(
    model: &M,
    loader: &BatchLoader,
    presets: &[PresetAttack],
    seed: u64,
    devices: &[backend::ComputeDevice],
    observer: &mut AttackProgress,
) -> anyhow::Result<Vec<AttackResult>> {
    if devices.len() > 1 {
        eprintln!(
            "evaluating on {} devices, the test images split between them",
            devices.len()
        );
        return Ok(evaluate_on_devices(model, loader, presets, seed, devices)?);
    }
    let attacks: Vec<&dyn EvaluationAttack<backend::Train, M>> = presets.iter().map(|p| p as _).collect();
    Ok(evaluate(model, loader, &attacks, seed, &devices[0], observer)?)
}

/// The test images: the whole test split (of the checkpoint's classes, which may be the dataset's first K, as in
/// Tiny-ImageNet-LT), or its long-tailed version, optionally a seeded subset.
/// List-file images are fitted to the model's input size.
fn test_set(args: &EvalRequest, meta: &CheckpointMeta, image_size: usize) -> anyhow::Result<ImageDataset> {
    let options = LoadOptions {
        classes: Some(meta.classes.len()),
        image_size: Some(image_size),
        ..Default::default()
    };
    let test = args
        .dataset
        .load_with(&args.data_dir, Split::Test, &options)
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
