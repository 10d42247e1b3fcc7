//! `tailguard`: adversarially robust training on long-tailed data.

mod advice;
mod args;
mod backend;
mod commands;
mod cpu;
mod epochs;
mod memory;
mod progress;
mod reachability;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Adversarially robust image classifiers for long-tailed data (TAET, RobustLT and their baselines) on Burn.
#[derive(Debug, Parser)]
#[command(name = "tailguard", version, about, long_about = None)]
#[command(after_help = "Examples:\n  tailguard data --dataset cifar10 --imbalance 100\n  \
    tailguard model --arch resnet18 --classes 10")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quick start: train natural, PGD-AT, TAET and RobustLT models on the embedded dataset, attack them (clean,
    /// PGD-20, AA-lite) and compare them (12-15 min on 2 cores).
    Demo(commands::demo::DemoArgs),
    /// Per-class counts of a long-tailed training split (and a shareable split file).
    Data(commands::data::DataArgs),
    /// Parameter count and output shape of an architecture.
    Model(commands::model::ModelArgs),
    /// Train a robust classifier from a configuration (resumable).
    Train(commands::train::TrainArgs),
    /// Coordinator for data-parallel training on several machines (train --nodes).
    Orchestrate(commands::orchestrate::OrchestrateArgs),
    /// Clean and adversarial accuracy of a checkpoint, per class, with a report.
    Eval(commands::eval::EvalArgs),
    /// Several evaluated runs side by side (table and chart).
    Compare(commands::compare::CompareArgs),
    /// Training curves of a run folder, from its log.jsonl.
    Curves(commands::curves::CurvesArgs),
    /// Write a checkpoint's weights as safetensors under PyTorch names.
    Export(commands::interop::ExportArgs),
    /// Make a checkpoint from PyTorch weights (safetensors) of a supported architecture.
    Import(commands::interop::ImportArgs),
    /// Throughput of training steps and attacks, FLOP/s against the matrix-multiply peak, peak memory.
    Bench(commands::bench::BenchArgs),
    /// The devices this build can compute on, by the names --device takes.
    Devices(commands::devices::DevicesArgs),
}

/// The last panic's location and message, recorded by the panic hook and printed by `main` only if the panic ended
/// the command: a panic that the code catches and turns into an error (a damaged checkpoint inside burn) is not
/// shown.
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// A file that outgrows the process's file-size limit (`ulimit -f`, or a quota enforced that way) gives the writer
/// an error (EFBIG), which tailguard reports and cleans up after like a full disk, instead of the default SIGXFSZ
/// that would kill the process halfway through a write.
fn file_size_limit_as_error() {
    // SAFETY: installs the ignore disposition for one signal before any thread starts; no handler code runs.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

fn main() -> ExitCode {
    file_size_limit_as_error();
    // Before any thread allocates: freed tensors' memory serves the next operation (see the function's docs).
    tailguard_flex::keep_freed_memory();
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(format!("internal error{location}: {}", message.replace('\n', " ")));
        }
    }));

    let cli = Cli::parse();
    let outcome = std::panic::catch_unwind(|| match cli.command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Model(args) => commands::model::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Orchestrate(args) => commands::orchestrate::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Compare(args) => commands::compare::run(args),
        Command::Curves(args) => commands::curves::run(args),
        Command::Export(args) => commands::interop::export(args),
        Command::Import(args) => commands::interop::import(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Devices(args) => commands::devices::run(args),
    });
    let result = outcome.unwrap_or_else(|_| {
        let message = LAST_PANIC
            .lock()
            .ok()
            .and_then(|mut last| last.take())
            .unwrap_or_else(|| "internal error".into());
        Err(anyhow::anyhow!(message))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match advice::advice(&error) {
                Some(advice) => eprintln!("error: {}; {advice}", one_line(&error)),
                None => eprintln!("error: {}", one_line(&error)),
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined with ": ". Each tailguard error leaves its cause to `source()` instead of
/// repeating it, so every part is printed once.
fn one_line(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(|e| shorten_long_words(&e.to_string()))
        .collect::<Vec<_>>()
        .join(": ")
}

/// The longest run without a space an error message shows whole; a longer one (a 10 MB value echoed by a parser)
/// keeps its start and says how long it was.
const LONGEST_WORD: usize = 200;

fn shorten_long_words(message: &str) -> String {
    message
        .split(' ')
        .map(|word| match word.char_indices().nth(LONGEST_WORD) {
            Some(_) => {
                let start: String = word.chars().take(LONGEST_WORD / 2).collect();
                format!("{start}... ({} characters)", word.chars().count())
            }
            None => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
