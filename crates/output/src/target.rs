//! Claiming an output folder or file under the policy of this crate.

use std::path::{Path, PathBuf};

use crate::atomic::{is_temporary, write_atomically};
use crate::error::{OutputError, OutputResult, list_names};
use crate::lock::LOCK_FILE;
use crate::manifest::{MANIFEST_FILE, Manifest};

/// tailguard's own bookkeeping files, which do not make a folder "non-empty".
fn is_bookkeeping(name: &str) -> bool {
    name == MANIFEST_FILE || name == LOCK_FILE || is_temporary(name)
}

/// The entries of `dir` other than tailguard's bookkeeping, sorted.
fn entries(dir: &Path) -> OutputResult<Vec<String>> {
    let read = std::fs::read_dir(dir).map_err(|e| OutputError::read(dir, e))?;
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| OutputError::read(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_bookkeeping(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A folder tailguard writes into, with the manifest of what it wrote there.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    manifest: Manifest,
}

impl OutputDir {
    /// Claims `dir` for writing the entries `planned`. A missing folder is created; an empty one is used as it is.
    /// A non-empty folder is refused unless `force`, and even then every planned entry that exists must be one
    /// tailguard wrote (listed in the manifest); other entries are left alone.
    pub fn claim(dir: &Path, planned: &[&str], force: bool) -> OutputResult<Self> {
        if dir.exists() && !dir.is_dir() {
            return Err(OutputError::NotOurs {
                path: dir.to_path_buf(),
            });
        }
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| OutputError::write(dir, e))?;
        }
        let present = entries(dir)?;
        let manifest = Manifest::read(dir)?;
        if !present.is_empty() {
            if !force {
                return Err(OutputError::NotEmpty {
                    path: dir.to_path_buf(),
                    entries: list_names(&present, 4),
                });
            }
            let foreign: Vec<String> = planned
                .iter()
                .filter(|name| present.iter().any(|p| p == *name) && !manifest.owns(name))
                .map(|s| s.to_string())
                .collect();
            if !foreign.is_empty() {
                return Err(OutputError::Foreign {
                    path: dir.to_path_buf(),
                    names: list_names(&foreign, 6),
                });
            }
        }
        Ok(Self {
            path: dir.to_path_buf(),
            manifest,
        })
    }

    /// Opens a folder that tailguard wrote before (a run being resumed), as it is.
    pub fn open(dir: &Path) -> OutputResult<Self> {
        Ok(Self {
            path: dir.to_path_buf(),
            manifest: Manifest::read(dir)?,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether tailguard wrote the entry `name`.
    pub fn owns(&self, name: &str) -> bool {
        self.manifest.owns(name)
    }

    /// Records that tailguard writes the entry `name` (file or folder). Refuses an existing entry that tailguard
    /// did not write.
    pub fn record(&mut self, name: &str) -> OutputResult<PathBuf> {
        let path = self.path.join(name);
        if path.symlink_metadata().is_ok() && !self.manifest.owns(name) {
            return Err(OutputError::NotOurs { path });
        }
        self.manifest.record(&self.path, name)?;
        Ok(path)
    }

    /// Writes the file `name` atomically (see [`OutputDir::record`] for what it refuses). The manifest names the
    /// file only once it is in place: a failed write leaves no claim on the name.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> OutputResult<PathBuf> {
        let path = self.path.join(name);
        if path.symlink_metadata().is_ok() && !self.manifest.owns(name) {
            return Err(OutputError::NotOurs { path });
        }
        write_atomically(&path, bytes)?;
        self.manifest.record(&self.path, name)?;
        Ok(path)
    }

    /// Removes the entry `name` if tailguard wrote it (a previous run's output replaced by `--force`).
    pub fn remove_owned(&mut self, name: &str) -> OutputResult<()> {
        if !self.manifest.owns(name) {
            return Ok(());
        }
        let path = self.path.join(name);
        let removed = match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => Ok(()),
        };
        removed.map_err(|e| OutputError::write(&path, e))?;
        self.manifest.forget(&self.path, name)
    }

    /// Removes temporary files that a killed tailguard process left here. Call only while holding the folder's
    /// [`crate::RunLock`], so no live writer's temporary file is taken.
    pub fn remove_stale_temporaries(&self) -> OutputResult<()> {
        let read = std::fs::read_dir(&self.path).map_err(|e| OutputError::read(&self.path, e))?;
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temporary(&name) {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|e| OutputError::write(&path, e))?;
            }
        }
        Ok(())
    }
}

fn split(path: &Path) -> (PathBuf, String) {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    (parent, name)
}

/// Checks that the single file `path` may be written: it does not exist, or `force` is given and tailguard wrote
/// it (its folder's manifest names it).
pub fn prepare_file(path: &Path, force: bool) -> OutputResult<()> {
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    if path.is_dir() {
        return Err(OutputError::NotOurs {
            path: path.to_path_buf(),
        });
    }
    if !force {
        return Err(OutputError::Exists {
            path: path.to_path_buf(),
        });
    }
    let (parent, name) = split(path);
    if Manifest::read(&parent)?.owns(&name) {
        Ok(())
    } else {
        Err(OutputError::NotOurs {
            path: path.to_path_buf(),
        })
    }
}

/// Records the single file `path` as tailguard's in its folder's manifest (call once it is in place, so a failed
/// write leaves no claim on the name).
pub fn record_file(path: &Path) -> OutputResult<()> {
    let (parent, name) = split(path);
    Manifest::read(&parent)?.record(&parent, &name)
}

/// Writes the single file `path` atomically under the policy: a new file, or one tailguard wrote (its folder's
/// manifest names it); the manifest records it once it is in place.
pub fn write_owned(path: &Path, bytes: &[u8]) -> OutputResult<()> {
    let (parent, name) = split(path);
    let mut manifest = Manifest::read(&parent)?;
    if path.symlink_metadata().is_ok() && !manifest.owns(&name) {
        return Err(OutputError::NotOurs {
            path: path.to_path_buf(),
        });
    }
    write_atomically(path, bytes)?;
    manifest.record(&parent, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_new_or_empty_folder_is_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b");
        let mut out = OutputDir::claim(&target, &["x"], false).unwrap();
        out.write("x", b"1").unwrap();
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"1");
        assert!(out.owns("x"));
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        OutputDir::claim(&dir.path().join("empty"), &["x"], false).unwrap();
    }

    #[test]
    fn a_non_empty_folder_needs_force_and_foreign_files_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("notes.txt"), b"mine");
        let err = OutputDir::claim(dir.path(), &["report.md"], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(force)") && err.contains("notes.txt"), "{err}");
        // With --force, unrelated files stay; a planned name the user owns is refused.
        let mut out = OutputDir::claim(dir.path(), &["report.md"], true).unwrap();
        out.write("report.md", b"r").unwrap();
        touch(&dir.path().join("log.jsonl"), b"user log");
        let err = OutputDir::claim(dir.path(), &["report.md", "log.jsonl"], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.jsonl") && !err.contains("report.md,"), "{err}");
        let mut out = OutputDir::claim(dir.path(), &["report.md"], true).unwrap();
        assert!(out.write("log.jsonl", b"x").is_err());
        out.remove_owned("notes.txt").unwrap();
        out.remove_owned("report.md").unwrap();
        assert_eq!(std::fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");
        assert_eq!(std::fs::read(dir.path().join("log.jsonl")).unwrap(), b"user log");
        assert!(!dir.path().join("report.md").exists());
    }

    #[test]
    fn a_failed_write_leaves_no_claim_on_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = OutputDir::claim(dir.path(), &["report.md"], false).unwrap();
        // The temporary file cannot be created in a folder that does not exist: the write fails.
        assert!(out.write("missing/report.md", b"x").is_err());
        assert!(!out.owns("missing/report.md"));
        assert!(!Manifest::read(dir.path()).unwrap().owns("missing/report.md"));
        let lone = dir.path().join("missing").join("w.safetensors");
        assert!(write_owned(&lone, b"x").is_err());
        // A file the user puts there later is theirs: tailguard refuses to replace it.
        std::fs::create_dir(dir.path().join("missing")).unwrap();
        touch(&lone, b"mine");
        assert!(matches!(prepare_file(&lone, true), Err(OutputError::NotOurs { .. })));
        out.write("report.md", b"ours").unwrap();
        assert!(out.owns("report.md"));
    }

    #[test]
    fn single_files_are_replaced_only_when_forced_and_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        prepare_file(&path, false).unwrap();
        record_file(&path).unwrap();
        touch(&path, b"ours");
        assert!(prepare_file(&path, false).unwrap_err().to_string().contains("(force)"));
        prepare_file(&path, true).unwrap();
        let theirs = dir.path().join("model.mpk");
        touch(&theirs, b"theirs");
        let err = prepare_file(&theirs, true).unwrap_err().to_string();
        assert!(
            err.contains("not written by tailguard") && err.contains("model.mpk"),
            "{err}"
        );
    }

    #[test]
    fn owned_writes_replace_only_their_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.md");
        write_owned(&path, b"1").unwrap();
        write_owned(&path, b"2").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"2");
        let theirs = dir.path().join("notes.md");
        touch(&theirs, b"mine");
        assert!(write_owned(&theirs, b"x").is_err());
        assert_eq!(std::fs::read(&theirs).unwrap(), b"mine");
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::claim(dir.path(), &[], false).unwrap();
        let temporary = crate::temporary_path(&dir.path().join("log.jsonl"));
        touch(&temporary, b"half");
        touch(&dir.path().join("keep"), b"k");
        out.remove_stale_temporaries().unwrap();
        assert!(!temporary.exists() && dir.path().join("keep").exists());
    }
}
