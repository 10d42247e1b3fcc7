//! `tailguard curves`: training curves of any run folder, including one written by a program that embeds tailguard.

use std::path::PathBuf;

use clap::Args;

/// Draw the training curves (loss, accuracies, learning rate, RobustLT budgets) of a run from its log.jsonl.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  tailguard curves --run runs/custom-model/mart")]
pub struct CurvesArgs {
    /// Run folder holding log.jsonl (from `tailguard train` or a program using tailguard_trainers::Run).
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
}

pub fn run(args: CurvesArgs) -> anyhow::Result<()> {
    crate::report::curves::write_training_curves(&args.run)?;
    eprintln!("wrote the curves into {}", args.run.display());
    Ok(())
}
