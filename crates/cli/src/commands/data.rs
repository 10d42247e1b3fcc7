//! `tailguard data`: build the long-tailed training split of a dataset, show its per-class counts, and optionally
//! save it, export it, or push augmented batches of it through a model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tailguard_longtail::{
    BatchLoader, BatchLoaderConfig, CifarVariant, DatasetKind, ImageDataset, ImbalanceProfile, LoadOptions,
    LongTailSpec, Split, class_sizes, write_cifar_archive,
};
use tailguard_models::{Architecture, Classifier, Mode, ModelConfig};

use crate::backend;
use crate::progress;

/// Build the long-tailed training split of a dataset and print its per-class counts.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tailguard data --dataset cifar10 --imbalance 100\n  \
    tailguard data --dataset cifar10 --data-dir datasets/cifar10-lt-mini.tar.gz --imbalance 10 --arch resnet18\n  \
    tailguard data --dataset imagefolder --data-dir ./photos --imbalance 10 --save-split split.json")]
pub struct DataArgs {
    /// cifar10, cifar100, tinyimagenet (the release folder: wnids.txt, train/, val/), imagefolder or list (an image
    /// root with train.txt / test.txt or *_train.txt / *_test.txt lists of `relative/path label` lines).
    #[arg(long)]
    dataset: DatasetKind,
    /// The dataset: a CIFAR binary release (folder or the downloaded .tar.gz) or an image folder
    /// (ROOT/train/<class>/*). Without it, the standard per-class size of the dataset is assumed and no file is read.
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Imbalance ratio rho = largest class / smallest class (>= 1; 1 keeps the classes balanced).
    #[arg(long, value_name = "RHO")]
    imbalance: f64,
    /// exp: n_c = floor(n_max * rho^(-c/(C-1))); step: the first half of the classes keep n_max, the rest n_max/rho.
    #[arg(long, default_value = "exp")]
    profile: ImbalanceProfile,
    /// Size of the head class [default: the largest class of the dataset].
    #[arg(long, value_name = "N")]
    n_max: Option<usize>,
    /// Keep only the first K classes (as Tiny-ImageNet-LT keeps 20) [default: all].
    #[arg(long, value_name = "K")]
    classes: Option<usize>,
    /// For --dataset list: the height and width images are fitted to (resize the shorter side, crop the centre).
    #[arg(long, value_name = "PIXELS")]
    image_size: Option<usize>,
    /// Seed that chooses which images are kept; the same seed keeps the same images on every machine.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the chosen image indices to this JSON file, to share the exact split (needs --data-dir).
    #[arg(long, value_name = "FILE")]
    save_split: Option<PathBuf>,
    /// Write the split (and the test set) as a CIFAR-binary .tar.gz that --data-dir accepts (needs --data-dir).
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
    /// With --export: keep this many test images per class (seeded) instead of the whole test set.
    #[arg(long, value_name = "K", requires = "export")]
    test_per_class: Option<usize>,
    /// Push augmented training batches of the split through this architecture (resnet18, preact-resnet18,
    /// wrn-28-10, wrn-34-10, small-cnn, linear) and report shapes and speed (needs --data-dir).
    #[arg(long)]
    arch: Option<Architecture>,
    /// With --arch: how many batches to push through the model.
    #[arg(long, default_value_t = 2, value_name = "N")]
    batches: usize,
    /// With --arch: images per batch.
    #[arg(long, default_value_t = 128, value_name = "N")]
    batch_size: usize,
    /// Replace an earlier --save-split or --export file that tailguard wrote (never any other file).
    #[arg(long)]
    force: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    let spec = LongTailSpec {
        imbalance: args.imbalance,
        profile: args.profile,
        n_max: args.n_max,
        seed: args.seed,
    };
    let mut report = json!({
        "dataset": args.dataset.to_string(),
        "imbalance": args.imbalance,
        "profile": args.profile,
        "seed": args.seed,
    });
    // Outputs are checked before the dataset is read, so a refused path costs nothing.
    if let (Some(split), Some(export)) = (&args.save_split, &args.export)
        && (split == export || std::path::absolute(split).ok() == std::path::absolute(export).ok())
    {
        bail!(
            "--save-split and --export both name {}: one would overwrite the other",
            split.display()
        );
    }
    for path in [&args.save_split, &args.export].into_iter().flatten() {
        tailguard_output::prepare_file(path, args.force)?;
    }
    let (classes, counts) = match &args.data_dir {
        Some(dir) => {
            let source = load(&args, dir, Split::Train)?;
            let split = spec.select(&source)?;
            if let Some(path) = &args.save_split {
                split.save(path)?;
                tailguard_output::record_file(path)?;
                eprintln!("wrote {} image indices to {}", split.len(), path.display());
            }
            let train = split.apply(&source)?;
            if let Some(path) = &args.export {
                export(&args, dir, &train, path)?;
                tailguard_output::record_file(path)?;
            }
            if let Some(arch) = args.arch {
                report["pipeline"] = push_through_model(&args, arch, train)?;
            }
            (source.classes().to_vec(), split.counts)
        }
        None => {
            if args.save_split.is_some() || args.export.is_some() || args.arch.is_some() {
                bail!("--save-split, --export and --arch need --data-dir: they work on real images");
            }
            let Some(mut classes) = args.dataset.standard_classes() else {
                bail!("--dataset imagefolder needs --data-dir (there is no standard size to assume)");
            };
            if let Some(k) = args.classes {
                if k == 0 || k > classes.len() {
                    bail!("{k} classes requested but {} has {}", args.dataset, classes.len());
                }
                classes.truncate(k);
            }
            let standard = args.dataset.standard_class_size(Split::Train).unwrap_or_default();
            let counts = class_sizes(
                args.profile,
                args.n_max.unwrap_or(standard),
                classes.len(),
                args.imbalance,
            )?;
            (classes, counts)
        }
    };
    let total: usize = counts.iter().sum();
    report["classes"] = json!(classes);
    report["counts"] = json!(counts);
    report["total"] = json!(total);
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{} long-tailed training split: imbalance {}, {} profile, seed {}",
        args.dataset, args.imbalance, args.profile, args.seed
    );
    let width = classes.iter().map(String::len).max().unwrap_or(5).max(5);
    println!("{:>5}  {:<width$}  {:>7}", "label", "class", "images");
    for (label, (name, count)) in classes.iter().zip(&counts).enumerate() {
        println!("{label:>5}  {name:<width$}  {count:>7}");
    }
    println!("{:>5}  {:<width$}  {total:>7}", "", "total");
    if let Some(pipeline) = report.get("pipeline") {
        println!();
        println!(
            "pushed {} augmented batches of {} through {} ({} backend):",
            pipeline["batches"],
            pipeline["batch_size"],
            pipeline["arch"].as_str().unwrap_or_default(),
            pipeline["backend"].as_str().unwrap_or_default()
        );
        println!("  images   {}", pipeline["images_shape"]);
        println!("  logits   {}", pipeline["logits_shape"]);
        println!(
            "  batches  {:.0} images/s (crop 4 + flip, prefetched)",
            pipeline["batching_images_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  forward  {:.1} images/s (training mode)",
            pipeline["forward_images_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

fn load(args: &DataArgs, dir: &Path, split: Split) -> anyhow::Result<ImageDataset> {
    let kind = args.dataset;
    let spinner = progress::spinner(args.json, format!("loading {kind} {split:?} from {}", dir.display()));
    let options = LoadOptions {
        classes: args.classes,
        image_size: args.image_size,
        ..Default::default()
    };
    let dataset = kind
        .load_with(dir, split, &options)
        .with_context(|| format!("loading {kind} from {}", dir.display()));
    spinner.finish_and_clear();
    dataset
}

fn export(args: &DataArgs, dir: &Path, train: &ImageDataset, path: &Path) -> anyhow::Result<()> {
    let variant = match args.dataset {
        DatasetKind::Cifar100 => CifarVariant::Cifar100,
        _ if train.num_classes() <= 10 => CifarVariant::Cifar10,
        _ => CifarVariant::Cifar100,
    };
    let test = load(args, dir, Split::Test)?;
    let test = match args.test_per_class {
        Some(k) => LongTailSpec {
            imbalance: 1.0,
            profile: ImbalanceProfile::Exp,
            n_max: Some(k),
            seed: args.seed,
        }
        .select(&test)
        .context("subsampling the test set")?
        .apply(&test)?,
        None => test,
    };
    write_cifar_archive(path, train, &test, variant)?;
    eprintln!(
        "wrote {} training and {} test images to {}",
        train.len(),
        test.len(),
        path.display()
    );
    Ok(())
}

/// Builds the model, then times augmented batching and training-mode forward passes.
fn push_through_model(args: &DataArgs, arch: Architecture, train: ImageDataset) -> anyhow::Result<serde_json::Value> {
    let device = args.device.open()?;
    let shape = train.shape();
    let model = ModelConfig::new(arch, train.num_classes())
        .with_input_shape([shape.channels, shape.height, shape.width])
        .init::<backend::Compute>(&device)?;
    let loader = BatchLoader::new(
        Arc::new(train),
        BatchLoaderConfig::training(args.seed).with_batch_size(args.batch_size),
    )?;
    let batches = args.batches.clamp(1, loader.num_batches());
    let bar = progress::bar(args.json, batches as u64, format!("{arch} forward"));
    let (mut batching, mut forward) = (0.0, 0.0);
    let (mut images_shape, mut logits_shape, mut images) = (Vec::new(), Vec::new(), 0usize);
    let mut host = loader.host_batches(0);
    for _ in 0..batches {
        let start = Instant::now();
        let Some(batch) = host.next() else { break };
        let batch = batch?.into_device::<backend::Compute>(&device);
        batching += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let logits = model.forward(batch.images.clone(), Mode::Train);
        let _ = logits.clone().sum().into_scalar(); // wait for the device
        forward += start.elapsed().as_secs_f64();
        images += batch.images.dims()[0];
        images_shape = batch.images.dims().to_vec();
        logits_shape = logits.dims().to_vec();
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(json!({
        "arch": arch.to_string(),
        "backend": backend::name(),
        "batches": batches,
        "batch_size": args.batch_size,
        "images_shape": images_shape,
        "logits_shape": logits_shape,
        "batching_images_per_s": images as f64 / batching.max(1e-9),
        "forward_images_per_s": images as f64 / forward.max(1e-9),
    }))
}
