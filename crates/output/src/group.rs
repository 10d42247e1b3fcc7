//! Several files that make one output (a report: its JSON, its Markdown and its chart) and replace their previous
//! versions together: all of them or none.
//!
//! Every file is first written in full under its temporary name; only when all are on disk are the names recorded
//! in the manifest (one save) and the temporary files renamed into place. A write that fails (a disk that fills
//! midway) removes every temporary file and leaves the previous report whole. Renames within a folder do not need
//! new space, so once the bytes are on disk the swap does not fail for want of it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::atomic::temporary_path;
use crate::error::{OutputError, OutputResult};
use crate::manifest::Manifest;

/// Files to be written into one folder as a unit; see the module documentation.
#[derive(Debug)]
pub struct FileGroup {
    dir: PathBuf,
    files: Vec<(String, Vec<u8>)>,
}

impl FileGroup {
    /// An empty group of files for the folder `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: Vec::new(),
        }
    }

    /// Adds the file `name` (inside the folder) with its contents.
    pub fn add(&mut self, name: &str, bytes: Vec<u8>) -> &mut Self {
        self.files.push((name.to_string(), bytes));
        self
    }

    /// Writes every file of the group, or none: a file that exists must be one tailguard wrote (its folder's
    /// manifest names it), checked for all of them before anything is written.
    pub fn commit(self) -> OutputResult<Vec<PathBuf>> {
        let mut manifest = Manifest::read(&self.dir)?;
        let targets: Vec<PathBuf> = self.files.iter().map(|(name, _)| self.dir.join(name)).collect();
        for ((name, _), path) in self.files.iter().zip(&targets) {
            if path.symlink_metadata().is_ok() && !manifest.owns(name) {
                return Err(OutputError::NotOurs { path: path.clone() });
            }
        }
        let mut staged: Vec<PathBuf> = Vec::with_capacity(self.files.len());
        let remove_staged = |staged: &[PathBuf]| {
            for temporary in staged {
                let _ = std::fs::remove_file(temporary);
            }
        };
        for ((_, bytes), path) in self.files.iter().zip(&targets) {
            let temporary = temporary_path(path);
            let written = (|| {
                let mut file = std::fs::File::create(&temporary)?;
                staged.push(temporary.clone());
                file.write_all(bytes)?;
                file.sync_all()
            })();
            if let Err(e) = written {
                remove_staged(&staged);
                return Err(OutputError::write(path, e));
            }
        }
        let names: Vec<&str> = self.files.iter().map(|(name, _)| name.as_str()).collect();
        if let Err(e) = manifest.record_all(&self.dir, &names) {
            remove_staged(&staged);
            return Err(e);
        }
        for (index, (temporary, path)) in staged.iter().zip(&targets).enumerate() {
            if let Err(e) = std::fs::rename(temporary, path) {
                remove_staged(&staged[index..]);
                // The names not moved into place keep their earlier claim only if a file of tailguard's is there.
                for (name, path) in names[index..].iter().zip(&targets[index..]) {
                    if path.symlink_metadata().is_err() {
                        let _ = manifest.forget(&self.dir, name);
                    }
                }
                return Err(OutputError::write(path, e));
            }
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutputDir;

    fn report(dir: &Path, json: &str, md: &str) -> OutputResult<Vec<PathBuf>> {
        let mut group = FileGroup::new(dir);
        group.add("report.json", json.into()).add("report.md", md.into());
        group.commit()
    }

    #[test]
    fn writes_every_file_and_records_them() {
        let dir = tempfile::tempdir().unwrap();
        report(dir.path(), "{1}", "# 1").unwrap();
        report(dir.path(), "{2}", "# 2").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("report.json")).unwrap(), "{2}");
        assert_eq!(std::fs::read_to_string(dir.path().join("report.md")).unwrap(), "# 2");
        let out = OutputDir::open(dir.path()).unwrap();
        assert!(out.owns("report.json") && out.owns("report.md"));
    }

    #[test]
    fn a_failed_write_keeps_the_previous_report_whole() {
        let dir = tempfile::tempdir().unwrap();
        report(dir.path(), "{old}", "# old").unwrap();
        // The second file cannot be staged (its temporary name is taken by a folder), as on a disk that fills
        // after the first file.
        std::fs::create_dir(temporary_path(&dir.path().join("report.md"))).unwrap();
        let err = report(dir.path(), "{new}", "# new").unwrap_err();
        assert!(err.to_string().contains("report.md"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("report.json")).unwrap(),
            "{old}"
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("report.md")).unwrap(), "# old");
        assert!(!temporary_path(&dir.path().join("report.json")).exists());
    }

    #[test]
    fn a_failed_first_report_claims_no_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(temporary_path(&dir.path().join("report.md"))).unwrap();
        report(dir.path(), "{new}", "# new").unwrap_err();
        assert!(!dir.path().join("report.json").exists());
        let out = OutputDir::open(dir.path()).unwrap();
        assert!(!out.owns("report.json") && !out.owns("report.md"));
    }

    #[test]
    fn a_foreign_file_stops_the_whole_group_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        report(dir.path(), "{old}", "# old").unwrap();
        std::fs::write(dir.path().join("chart.png"), "user's").unwrap();
        let mut group = FileGroup::new(dir.path());
        group.add("report.json", "{new}".into()).add("chart.png", "png".into());
        let err = group.commit().unwrap_err();
        assert!(err.to_string().contains("chart.png"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("report.json")).unwrap(),
            "{old}"
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("chart.png")).unwrap(), "user's");
    }
}
