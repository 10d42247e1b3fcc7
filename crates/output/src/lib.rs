//! tailguard's output policy, shared by every command that writes:
//!
//! - **Never touch what tailguard did not write.** Each folder tailguard writes into holds a manifest
//!   ([`MANIFEST_FILE`]) naming the files and folders it wrote there. A target that exists is replaced only with
//!   `--force`, and only if the manifest names it; anything else is refused with its name.
//! - **Nothing half-written.** Files are written under a temporary name beside the target and renamed into place;
//!   the temporary file is removed when the write fails. Files that make one output together (a report's JSON,
//!   Markdown and chart) are written as a [`FileGroup`]: all replaced, or none.
//! - **One writer per run folder.** [`RunLock`] holds an OS file lock on the folder for as long as a run writes
//!   into it; the kernel releases it when the process ends, however it ends, so a stale lock cannot block a restart.

#![warn(missing_docs)]

mod atomic;
mod error;
mod group;
mod lock;
mod manifest;
mod target;

pub use atomic::{is_temporary, temporary_path, write_atomically, write_atomically_with};
pub use error::{OutputError, OutputResult};
pub use group::FileGroup;
pub use lock::{LOCK_FILE, RunLock};
pub use manifest::{MANIFEST_FILE, Manifest};
pub use target::{OutputDir, prepare_file, record_file, write_owned};

/// The environment variable that [`abort_point`] reads.
pub const ABORT_AT_VARIABLE: &str = "TAILGUARD_TEST_ABORT_AT";

/// Test hook for crash safety: when the environment variable [`ABORT_AT_VARIABLE`] is `POINT:EPOCH` for this point
/// and epoch, the process aborts on the spot, as `kill -9` would stop it (no destructor runs, nothing is cleaned
/// up). The kill tests use it to stop a run at exact moments, such as between moving the old checkpoint aside and
/// moving the new one in; unset, it does nothing.
pub fn abort_point(point: &str, epoch: Option<usize>) {
    if let Ok(target) = std::env::var(ABORT_AT_VARIABLE)
        && target == format!("{point}:{}", epoch.unwrap_or(0))
    {
        std::process::abort();
    }
}
