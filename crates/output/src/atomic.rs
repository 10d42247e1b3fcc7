//! Writing files so that a reader never sees half of one: write to a temporary name beside the target, flush, then
//! rename (atomic on POSIX file systems). A failed write removes its temporary file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{OutputError, OutputResult};

const TEMPORARY_TAG: &str = ".tailguard-tmp-";

/// The temporary name used while `path` is being written: a hidden sibling tagged with this process's id.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!("{TEMPORARY_TAG}{}", std::process::id()));
    path.with_file_name(name)
}

/// Whether `name` is one of tailguard's temporary names (left behind only by a process that was killed).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMPORARY_TAG)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> OutputResult<()> {
    write_atomically_with(path, |file| file.write_all(bytes))
}

/// Writes `path` through a temporary file that `fill` writes, then a rename.
pub fn write_atomically_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> OutputResult<()> {
    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        OutputError::write(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomically(&path, b"abc").unwrap();
        write_atomically(&path, b"defg").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"defg");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_says_write_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let err = write_atomically_with(&path, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().starts_with("cannot write"), "{err}");
        assert!(err.to_string().contains("out.bin"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn temporary_names_are_recognised() {
        let path = temporary_path(Path::new("/x/report.md"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(is_temporary(name), "{name}");
        assert!(!is_temporary("report.md"));
    }
}
