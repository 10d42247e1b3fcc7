//! The command line's words for the libraries' errors: the libraries name the API's remedy (`Run::resume`, a start
//! with force, `ImportOptions::drop_unknown`); the program tells its user which flag or configuration key does it.

use tailguard_models::InteropError;
use tailguard_output::OutputError;
use tailguard_trainers::TrainError;

/// What the user of the program can do about `error`, in flags and configuration keys, if the program knows.
pub fn advice(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        if let Some(error) = cause.downcast_ref::<TrainError>() {
            return train_advice(error);
        }
        if let Some(error) = cause.downcast_ref::<OutputError>() {
            return output_advice(error);
        }
        cause.downcast_ref::<InteropError>().and_then(interop_advice)
    })
}

fn train_advice(error: &TrainError) -> Option<String> {
    Some(match error {
        TrainError::RunExists(dir) => format!(
            "continue it with --resume {}, start it over with --force, or choose another --out",
            dir.display()
        ),
        TrainError::NoCheckpoint { dir } => format!(
            "start it again with `tailguard train --config {} --out {} --force`",
            dir.join("config.toml").display(),
            dir.display()
        ),
        TrainError::Diverged { .. } => "lower optim.lr (--set optim.lr=...) or check the data".into(),
        TrainError::PeerTimeout {
            checkpoint: Some(last), ..
        } => format!(
            "resume with --resume {} once every node runs again",
            last.parent().unwrap_or(last).display()
        ),
        TrainError::Edited { .. } => "or start a new run from the edited file with another --out".into(),
        TrainError::BatchSmallerThanDevices { .. } => "raise optim.batch_size or list fewer --devices".into(),
        TrainError::Output(error) => return output_advice(error),
        _ => return None,
    })
}

fn output_advice(error: &OutputError) -> Option<String> {
    match error {
        OutputError::NotEmpty { .. } | OutputError::Exists { .. } => Some("pass --force to replace it".into()),
        _ => None,
    }
}

fn interop_advice(error: &InteropError) -> Option<String> {
    let InteropError::DoesNotFit {
        non_finite, unknown, ..
    } = error
    else {
        return None;
    };
    let mut flags = Vec::new();
    if *non_finite {
        flags.push("--allow-non-finite imports non-finite values");
    }
    if *unknown {
        flags.push("--drop-unknown ignores tensors the architecture does not have");
    }
    (!flags.is_empty()).then(|| flags.join("; "))
}
