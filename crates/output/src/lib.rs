//! tailguard's output policy, shared by every command that writes:
//!
//! - **Never touch what tailguard did not write.** Each folder tailguard writes into holds a manifest
//!   ([`MANIFEST_FILE`]) naming the files and folders it wrote there. A target that exists is replaced only with
//!   `--force`, and only if the manifest names it; anything else is refused with its name.
//! - **Nothing half-written.** Files are written under a temporary name beside the target and renamed into place;
//!   the temporary file is removed when the write fails.
//! - **One writer per run folder.** [`RunLock`] holds an OS file lock on the folder for as long as a run writes
//!   into it; the kernel releases it when the process ends, however it ends, so a stale lock cannot block a restart.

mod atomic;
mod error;
mod lock;
mod manifest;
mod target;

pub use atomic::{is_temporary, temporary_path, write_atomically, write_atomically_with};
pub use error::{OutputError, OutputResult};
pub use lock::{LOCK_FILE, RunLock};
pub use manifest::{MANIFEST_FILE, Manifest};
pub use target::{OutputDir, prepare_file, record_file, write_owned};
