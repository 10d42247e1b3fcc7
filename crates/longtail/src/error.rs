//! Errors of the data pipeline. Every variant names the file or value at fault, so the program can print it as
//! one line.

use std::path::PathBuf;

/// What can go wrong while loading, splitting or batching a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder cannot be read.
    #[error("cannot read {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not in the format its place requires.
    #[error("{path} is not a {format} file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The format expected.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An image cannot be decoded.
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The image.
        path: PathBuf,
        /// The decoder's reason.
        reason: String,
    },
    /// An image of another size or channel count than the dataset's.
    #[error("image {path} is {found}, expected {expected}")]
    ImageShape {
        /// The image.
        path: PathBuf,
        /// Its shape.
        found: String,
        /// The dataset's shape.
        expected: String,
    },
    /// A class folder without images.
    #[error("class folder {path} holds no images")]
    EmptyClass {
        /// The folder.
        path: PathBuf,
    },
    /// An impossible value (split ratio, class count, batch size).
    #[error("invalid value: {0}")]
    Invalid(String),
    /// The batch-preparing thread failed; the epoch cannot be completed.
    #[error("the batch-preparing thread failed: {0}")]
    Prefetch(String),
    /// An output file cannot be written.
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
