//! `tailguard export` and `tailguard import`: weights in safetensors under PyTorch names (docs/interop.md).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use tailguard_longtail::DatasetKind;
use tailguard_models::{
    Architecture, CheckpointMeta, InputNormalizationConfig, ModelConfig, export_safetensors, import_weights,
    load_checkpoint, save_checkpoint,
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
    /// Output file.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    if args.format != "safetensors" {
        bail!("unknown format '{}' (tailguard exports safetensors)", args.format);
    }
    let device = backend::device()?;
    let (model, meta) = load_checkpoint::<backend::Compute>(&args.checkpoint, &device)?;
    export_safetensors(&model, meta.model.arch, &args.out)?;
    eprintln!(
        "wrote {} ({} under PyTorch names, see docs/interop.md)",
        args.out.display(),
        meta.model.arch
    );
    Ok(())
}

/// Bring PyTorch weights of a supported architecture in as a tailguard checkpoint, e.g. to attack it with eval.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tailguard import --from robust_resnet18.pt --arch resnet18 --dataset cifar10 --out ckpt\n  \
    tailguard import --from wrn.safetensors --arch wrn-34-10 --dataset cifar100 --normalization cifar100 --out ckpt"
)]
pub struct ImportArgs {
    /// Weights: .safetensors, or a torch.save'd state dict (.pt, .pth), with the tensor names of docs/interop.md.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// resnet18, preact-resnet18, wrn-28-10, wrn-34-10, small-cnn, linear.
    #[arg(long)]
    arch: Architecture,
    /// Class names of the model: those of cifar10 or cifar100.
    #[arg(long)]
    dataset: DatasetKind,
    /// Input normalisation the model was trained with: none, cifar10 or cifar100.
    #[arg(long, default_value = "none")]
    normalization: String,
    /// Checkpoint folder to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let Some(classes) = args.dataset.standard_classes() else {
        bail!("--dataset must be cifar10 or cifar100 (their class names label the checkpoint)");
    };
    let normalization = match args.normalization.as_str() {
        "none" => None,
        "cifar10" => Some(InputNormalizationConfig::cifar10()),
        "cifar100" => Some(InputNormalizationConfig::cifar100()),
        other => bail!("--normalization must be none, cifar10 or cifar100, got '{other}'"),
    };
    let device = backend::device()?;
    let config = ModelConfig::new(args.arch, classes.len()).with_normalization(normalization);
    let model = config.init::<backend::Compute>(&device).map_err(anyhow::Error::msg)?;
    let model = import_weights(model, args.arch, &args.from)?;
    let mut meta = CheckpointMeta::new(config, classes);
    meta.training = serde_json::json!({ "imported_from": args.from.display().to_string() });
    save_checkpoint(&args.out, &model, &meta).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote checkpoint {}", args.out.display());
    Ok(())
}
