//! `tailguard model`: parameter count and output shape of an architecture.

use burn::tensor::{Distribution, Tensor};
use clap::Args;
use serde_json::json;
use tailguard_models::{Architecture, Classifier, Mode, ModelConfig, trainable_parameter_count};

use crate::backend;

/// Build an architecture and report its size and output shape for a 32x32 RGB input.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tailguard model --arch wrn-34-10 --classes 100 --json")]
pub struct ModelArgs {
    /// resnet18, preact-resnet18, wrn-28-10, wrn-34-10 (any wrn-D-K), small-cnn (small-cnn-W) or linear.
    #[arg(long)]
    arch: Architecture,
    /// Number of output classes.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let model = ModelConfig::new(args.arch, args.classes).init::<backend::Compute>(&device)?;
    let parameters = trainable_parameter_count(&model);
    let input = Tensor::<backend::Compute, 4>::random([1, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
    let output = model.forward(input, Mode::Inference).dims();
    if args.json {
        let report = json!({
            "arch": args.arch.to_string(),
            "classes": args.classes,
            "parameters": parameters,
            "input_shape": [1, 3, 32, 32],
            "output_shape": output,
            "backend": backend::name(),
        });
        println!("{report}");
    } else {
        println!("architecture  {}", args.arch);
        println!("classes       {}", args.classes);
        println!("parameters    {parameters}");
        println!("output shape  {output:?} for input [1, 3, 32, 32]");
    }
    Ok(())
}
