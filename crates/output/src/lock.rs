//! One writer per run folder: an exclusive OS file lock (flock) on a lock file inside the folder, holding the
//! owner's pid and host for the message a second writer sees. The kernel drops the lock when its process ends, even
//! by `kill -9`, so a lock can never outlive its owner. The lock file is removed when the lock is released, so a
//! finished run leaves nothing behind; a locker that finds its file removed under it starts again.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{OutputError, OutputResult};

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".tailguard-lock";

/// An exclusive lock on a folder, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this machine".into())
}

impl RunLock {
    /// Locks `dir` (which must exist) or says who holds it.
    pub fn acquire(dir: &Path) -> OutputResult<Self> {
        loop {
            if let Some(lock) = Self::try_acquire(dir)? {
                return Ok(lock);
            }
        }
    }

    /// One attempt; `None` when the file was removed by its releasing owner between our open and our lock.
    fn try_acquire(dir: &Path) -> OutputResult<Option<Self>> {
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| OutputError::write(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                return Err(OutputError::Locked {
                    path: dir.to_path_buf(),
                    owner: if owner.is_empty() {
                        "owner unknown".into()
                    } else {
                        owner.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(OutputError::write(&path, e)),
        }
        let same_file = match (file.metadata(), std::fs::metadata(&path)) {
            (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
            _ => false,
        };
        if !same_file {
            return Ok(None);
        }
        let owner = format!("pid {} on {}", std::process::id(), host_name());
        let written = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(owner.as_bytes()))
            .and_then(|_| file.flush());
        written.map_err(|e| OutputError::write(&path, e))?;
        Ok(Some(Self { file, path }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still held, so no one can lock this file after us and then lose it.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_owner_then_granted_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("in use") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists(), "a released lock leaves no file");
        RunLock::acquire(dir.path()).unwrap();
    }
}
