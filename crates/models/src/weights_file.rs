//! What a weights file holds once read, and what can go wrong reading or writing one: shared by the safetensors
//! reader (`interop`) and the PyTorch `.pt` reader (`torch_file`).

use std::collections::BTreeMap;

/// What can go wrong when exporting or importing weights.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid weights file (the message names the tensor).
    #[error("{0}")]
    Invalid(String),
    /// The file's tensors do not fit the model.
    #[error("{path} does not fit {arch}: {first}{}", more_problems(*.more))]
    DoesNotFit {
        /// The weights file.
        path: std::path::PathBuf,
        /// The architecture it was loaded into.
        arch: String,
        /// The first problem, naming its tensor.
        first: String,
        /// How many more problems there are.
        more: usize,
        /// Some tensor holds NaN or infinite values ([`ImportOptions::allow_non_finite`] imports them).
        non_finite: bool,
        /// Some tensors have no counterpart in the model ([`ImportOptions::drop_unknown`] ignores them).
        unknown: bool,
    },
    /// The file cannot be written.
    #[error(transparent)]
    Output(#[from] tailguard_output::OutputError),
}

/// Float tensors by name: (shape, values).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The tensors of a weights file: float tensors by name, and the dtype of every other tensor (integer counters,
/// half precision), so that a dtype mismatch is reported as one.
#[derive(Debug, Default)]
pub struct WeightsFile {
    /// F32 and F64 tensors, as f32.
    pub floats: NamedTensors,
    /// The dtype of every other tensor, by name.
    pub others: BTreeMap<String, String>,
}

fn more_problems(more: usize) -> String {
    if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    }
}
