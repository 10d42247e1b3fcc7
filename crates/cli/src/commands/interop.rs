//! `tailguard export` and `tailguard import`: weights in safetensors under PyTorch names (docs/interop.md).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use tailguard_longtail::DatasetKind;
use tailguard_models::robustbench::{Threat, ZooDataset, import_zoo_weights, zoo_model};
use tailguard_models::{
    Architecture, CheckpointMeta, ImportOptions, InputNormalizationConfig, ModelConfig, export_safetensors,
    import_weights, read_checkpoint_meta, save_checkpoint, written_by_tailguard,
};

use crate::backend;

/// Write a checkpoint's weights (BatchNorm statistics included) as safetensors under PyTorch tensor names.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  tailguard export --checkpoint runs/taet/last --format safetensors --out taet.safetensors"
)]
pub struct ExportArgs {
    /// Checkpoint folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output format (safetensors).
    #[arg(long, default_value = "safetensors")]
    format: String,
    /// Output file. An existing file is replaced only with --force, and only if tailguard wrote it.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace an existing output file that tailguard wrote (never one it did not write).
    #[arg(long)]
    force: bool,
    /// Which weights: the weight average (`ema`, the default when the checkpoint has one) or `raw`.
    #[arg(long, value_name = "ema|raw", value_parser = crate::args::parse_weights)]
    weights: Option<tailguard_models::Weights>,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    if args.format != "safetensors" {
        bail!("unknown format '{}' (tailguard exports safetensors)", args.format);
    }
    // A tailguard export carries its producer in the header; anything else under that name is never replaced.
    // The name itself is looked at, not what it points to: a dangling link is the user's too.
    let taken = args.out.symlink_metadata().is_ok();
    let link = args.out.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
    if args.out.is_dir() || (args.force && taken && (link || !written_by_tailguard(&args.out))) {
        return Err(tailguard_output::OutputError::NotOurs { path: args.out }.into());
    }
    if !args.force && taken {
        return Err(tailguard_output::OutputError::Exists { path: args.out }.into());
    }
    let device = args.device.open()?;
    let weights =
        tailguard_models::Weights::resolve(args.weights, &read_checkpoint_meta(&args.checkpoint)?, &args.checkpoint)?;
    let (model, meta) =
        tailguard_models::load_checkpoint_weights::<backend::Compute>(&args.checkpoint, weights, &device)?;
    let arch = meta.model_config(&args.checkpoint)?.arch;
    export_safetensors(&model, arch, &args.out)?;
    eprintln!(
        "wrote {} ({arch}, {weights} weights, under PyTorch names, see docs/interop.md)",
        args.out.display(),
    );
    Ok(())
}

/// Bring PyTorch weights of a supported architecture in as a tailguard checkpoint, e.g. to attack it with eval or
/// fine-tune it with train --init-from; RobustBench zoo checkpoints by their id.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tailguard import --from robust_resnet18.pt --arch resnet18 --dataset cifar10 --out ckpt\n  \
    tailguard import --from wrn.safetensors --arch wrn-34-10 --dataset cifar100 --normalization cifar100 --out ckpt\n  \
    tailguard import --from ~/models/cifar10/Linf/Wong2020Fast.pt --robustbench Wong2020Fast --out wong\n  \
    tailguard import --from Standard.pt --robustbench Standard --threat l2 --out standard-l2"
)]
pub struct ImportArgs {
    /// Weights: .safetensors, or a torch.save'd state dict (.pt, .pth), with the tensor names of docs/interop.md
    /// (or, with --robustbench, as RobustBench distributes the model: models/<dataset>/<threat>/<id>.pt).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// resnet18, resnet50, preact-resnet18, preact-resnet18-wong, wrn-D-K, dm-wrn-D-K[-silu], small-cnn, linear.
    #[arg(long, required_unless_present = "robustbench")]
    arch: Option<Architecture>,
    /// A RobustBench model id (Wong2020Fast, Carmon2019Unlabeled, ...; docs/interop.md lists them): its
    /// architecture and input normalisation come from RobustBench's definition.
    #[arg(long, value_name = "MODEL_ID", conflicts_with_all = ["arch", "normalization"])]
    robustbench: Option<String>,
    /// The RobustBench leaderboard of --robustbench: linf or l2.
    #[arg(long, default_value = "linf", requires = "robustbench")]
    threat: String,
    /// Class names of the model: those of cifar10 or cifar100.
    #[arg(long, default_value = "cifar10")]
    dataset: DatasetKind,
    /// Input normalisation the model was trained with: none, cifar10 or cifar100.
    #[arg(long, default_value = "none")]
    normalization: String,
    /// Checkpoint folder to write: new or empty (with --force, a checkpoint that tailguard imported before).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace the imported checkpoint in --out (never a trained one, nor any other file).
    #[arg(long)]
    force: bool,
    /// Import tensors holding NaN or infinite values (refused by default).
    #[arg(long)]
    allow_non_finite: bool,
    /// Ignore tensors that the architecture does not have (refused by default).
    #[arg(long)]
    drop_unknown: bool,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let Some(classes) = args.dataset.standard_classes() else {
        bail!("--dataset must be cifar10 or cifar100 (their class names label the checkpoint)");
    };
    let zoo = match &args.robustbench {
        Some(id) => {
            let dataset = match args.dataset {
                DatasetKind::Cifar10 => ZooDataset::Cifar10,
                _ => ZooDataset::Cifar100,
            };
            let threat = match args.threat.to_ascii_lowercase().as_str() {
                "linf" => Threat::Linf,
                "l2" => Threat::L2,
                other => bail!("--threat must be linf or l2, got '{other}'"),
            };
            Some(zoo_model(id, dataset, threat)?)
        }
        None => None,
    };
    let config = match (zoo, args.arch) {
        (Some(zoo), _) => zoo.config(),
        (None, Some(arch)) => {
            let normalization = match args.normalization.as_str() {
                "none" => None,
                "cifar10" => Some(InputNormalizationConfig::cifar10()),
                "cifar100" => Some(InputNormalizationConfig::cifar100()),
                other => bail!("--normalization must be none, cifar10 or cifar100, got '{other}'"),
            };
            ModelConfig::new(arch, classes.len()).with_normalization(normalization)
        }
        (None, None) => bail!("give --arch, or --robustbench with a model id"),
    };
    check_import_target(&args.out, args.force)?;
    let device = args.device.open()?;
    let model = config.init::<backend::Compute>(&device)?;
    let options = ImportOptions {
        allow_non_finite: args.allow_non_finite,
        drop_unknown: args.drop_unknown,
    };
    let model = match zoo {
        Some(zoo) => import_zoo_weights(model, zoo, &args.from, options)?,
        None => import_weights(model, config.arch, &args.from, options)?,
    };
    let mut meta = CheckpointMeta::new(config, classes);
    meta.training = serde_json::json!({ "imported_from": args.from.display().to_string() });
    if let Some(zoo) = zoo {
        meta.training["robustbench"] = serde_json::json!({
            "id": zoo.id,
            "dataset": zoo.dataset,
            "threat": zoo.threat,
        });
    }
    save_checkpoint(&args.out, &model, &meta)?;
    eprintln!("wrote checkpoint {}", args.out.display());
    Ok(())
}

/// An import writes a whole checkpoint folder: it must be new or empty, or with `--force` a checkpoint that an
/// earlier import wrote (the checkpoint itself refuses any other file in it, such as a trained run's optimizer state).
fn check_import_target(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let non_empty = out.is_dir() && std::fs::read_dir(out)?.next().is_some();
    if out.exists() && !out.is_dir() {
        return Err(tailguard_output::OutputError::NotOurs { path: out.into() }.into());
    }
    if !non_empty {
        return Ok(());
    }
    if !force {
        return Err(tailguard_output::OutputError::Exists { path: out.into() }.into());
    }
    let meta = read_checkpoint_meta(out).map_err(|_| tailguard_output::OutputError::NotOurs { path: out.into() })?;
    if meta.training.get("imported_from").is_none() {
        bail!(
            "{} is a trained checkpoint; --force replaces only a checkpoint that import wrote: import into another \
             folder",
            out.display()
        );
    }
    Ok(())
}
