//! Errors of the output policy: each names the path at fault and what to do.

use std::path::PathBuf;

/// What can go wrong while preparing or writing an output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} already exists and is not empty ({entries}); pass --force to replace tailguard's own files in it, \
         or choose another folder"
    )]
    NotEmpty { path: PathBuf, entries: String },
    #[error("{path} already exists; pass --force to replace it, or choose another path")]
    Exists { path: PathBuf },
    #[error(
        "{path} holds {names} that tailguard did not write; tailguard never overwrites or deletes them: move them \
         away or choose another folder"
    )]
    Foreign { path: PathBuf, names: String },
    #[error("{path} was not written by tailguard, so it is never overwritten: move it away or choose another path")]
    NotOurs { path: PathBuf },
    #[error(
        "{path} is in use by another tailguard process ({owner}); wait for it to finish or stop it (a lock of a \
         process that has ended is released by the system)"
    )]
    Locked { path: PathBuf, owner: String },
    #[error("{path} has a broken output manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

impl OutputError {
    /// A failed write of `path`.
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Write {
            path: path.into(),
            source,
        }
    }

    /// A failed read of `path`.
    pub fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Read {
            path: path.into(),
            source,
        }
    }
}

/// Result type of the output policy.
pub type OutputResult<T> = Result<T, OutputError>;

/// Up to `limit` names, comma-separated, with the count of the rest.
pub(crate) fn list_names(names: &[String], limit: usize) -> String {
    let mut text = names.iter().take(limit).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > limit {
        text.push_str(&format!(" and {} more", names.len() - limit));
    }
    text
}
