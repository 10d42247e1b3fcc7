//! Errors of the data pipeline. Every variant names the file or value at fault, so the program can print it as
//! one line.

use std::path::PathBuf;

/// What can go wrong while loading, splitting or batching a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a {format} file: {reason}")]
    Format {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("cannot decode image {path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("image {path} is {found}, expected {expected}")]
    ImageShape {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("class folder {path} holds no images")]
    EmptyClass { path: PathBuf },
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error(transparent)]
    Output(#[from] tailguard_output::OutputError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// Result type of the data pipeline.
pub type DataResult<T> = Result<T, DataError>;
