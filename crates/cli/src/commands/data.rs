//! `tailguard data`: per-class counts of a long-tailed training split.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tailguard_longtail::{DatasetKind, ImbalanceProfile, LongTailSpec, LongTailSplit, Split, class_sizes};

/// Show (and optionally save) the long-tailed training split of a dataset.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  tailguard data --dataset cifar10 --imbalance 100\n  \
    tailguard data --dataset imagefolder --data-dir ./cifar10-jpeg --imbalance 10 --save-split split.json")]
pub struct DataArgs {
    /// cifar10, cifar100 or imagefolder.
    #[arg(long)]
    dataset: DatasetKind,
    /// Folder with the dataset (CIFAR binaries or ROOT/train/<class>/*). Without it, the standard per-class size of
    /// the dataset is used and no file is read.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Imbalance ratio rho = largest class / smallest class (>= 1).
    #[arg(long, value_name = "RHO")]
    imbalance: f64,
    /// exp: n_c = floor(n_max * rho^(-c/(C-1))); step: half the classes keep n_max, the rest n_max / rho.
    #[arg(long, default_value = "exp")]
    profile: ImbalanceProfile,
    /// Seed that chooses which images are kept.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the chosen image indices to this JSON file (needs --data-dir).
    #[arg(long, value_name = "FILE")]
    save_split: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    let spec = LongTailSpec {
        imbalance: args.imbalance,
        profile: args.profile,
        n_max: None,
        seed: args.seed,
    };
    let (classes, counts) = match &args.data_dir {
        Some(dir) => {
            let source = args
                .dataset
                .load(dir, Split::Train)
                .with_context(|| format!("loading {} from {}", args.dataset, dir.display()))?;
            let split = spec.select(&source)?;
            if let Some(path) = &args.save_split {
                save_split(&split, path)?;
            }
            (source.classes().to_vec(), split.counts)
        }
        None => {
            if args.save_split.is_some() {
                bail!("--save-split needs --data-dir: a split file lists images of a real dataset");
            }
            let Some(classes) = args.dataset.standard_classes() else {
                bail!("--dataset imagefolder needs --data-dir (there is no standard size to assume)");
            };
            let n_max = args.dataset.standard_class_size(Split::Train).unwrap_or_default();
            let counts = class_sizes(args.profile, n_max, classes.len(), args.imbalance)?;
            (classes, counts)
        }
    };
    let total: usize = counts.iter().sum();
    if args.json {
        let report = json!({
            "dataset": args.dataset.to_string(),
            "imbalance": args.imbalance,
            "profile": args.profile,
            "seed": args.seed,
            "classes": classes,
            "counts": counts,
            "total": total,
        });
        println!("{report}");
    } else {
        println!(
            "{} long-tailed training split: imbalance {}, {:?} profile, seed {}",
            args.dataset, args.imbalance, args.profile, args.seed
        );
        let width = classes.iter().map(String::len).max().unwrap_or(5).max(5);
        println!("{:>5}  {:<width$}  {:>7}", "label", "class", "images");
        for (label, (name, count)) in classes.iter().zip(&counts).enumerate() {
            println!("{label:>5}  {name:<width$}  {count:>7}");
        }
        println!("{:>5}  {:<width$}  {total:>7}", "", "total");
    }
    Ok(())
}

fn save_split(split: &LongTailSplit, path: &std::path::Path) -> anyhow::Result<()> {
    split.save(path)?;
    eprintln!("wrote {} image indices to {}", split.len(), path.display());
    Ok(())
}
