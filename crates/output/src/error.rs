//! Errors of the output policy: each names the path at fault and what to do.

use std::path::PathBuf;

/// What can go wrong while preparing or writing an output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file or folder cannot be written.
    #[error("cannot write {path}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or folder cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The output folder holds something and `force` was not asked for.
    #[error(
        "{path} already exists and is not empty ({entries}); replace tailguard's own files in it (force), \
         or choose another folder"
    )]
    NotEmpty {
        /// The folder.
        path: PathBuf,
        /// A few of its entries.
        entries: String,
    },
    /// The output file exists and `force` was not asked for.
    #[error("{path} already exists; replace it (force), or choose another path")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Files tailguard would replace that it did not write.
    #[error(
        "{path} holds {names} that tailguard did not write; tailguard never overwrites or deletes them: move them \
         away or choose another folder"
    )]
    Foreign {
        /// The folder.
        path: PathBuf,
        /// The files.
        names: String,
    },
    /// A single target tailguard did not write.
    #[error("{path} was not written by tailguard, so it is never overwritten: move it away or choose another path")]
    NotOurs {
        /// The target.
        path: PathBuf,
    },
    /// Another process holds the folder's run lock.
    #[error(
        "{path} is in use by another tailguard process ({owner}); wait for it to finish or stop it (a lock of a \
         process that has ended is released by the system)"
    )]
    Locked {
        /// The folder.
        path: PathBuf,
        /// The holder's pid and host, as it recorded them.
        owner: String,
    },
    /// The folder's manifest cannot be parsed.
    #[error("{path} has a broken output manifest: {reason}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
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
