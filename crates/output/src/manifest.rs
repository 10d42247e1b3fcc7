//! The manifest of a folder: which of its entries tailguard wrote, so that `--force` can replace those and nothing
//! else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomically;
use crate::error::{OutputError, OutputResult};

/// Name of the manifest inside each folder tailguard writes into.
pub const MANIFEST_FILE: &str = ".tailguard-outputs.json";
const WRITER: &str = "tailguard";

#[derive(serde::Serialize, serde::Deserialize)]
struct ManifestFile {
    written_by: String,
    entries: BTreeSet<String>,
}

/// The names (files or folders, relative to the folder) that tailguard wrote in one folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeSet<String>,
}

impl Manifest {
    fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// The manifest of `dir`; empty when there is none.
    pub fn read(dir: &Path) -> OutputResult<Self> {
        let path = Self::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(OutputError::read(path, e)),
        };
        let file: ManifestFile = serde_json::from_slice(&bytes).map_err(|e| OutputError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if file.written_by != WRITER {
            return Err(OutputError::Manifest {
                path,
                reason: format!("written by '{}'", file.written_by),
            });
        }
        Ok(Self { entries: file.entries })
    }

    /// Whether tailguard wrote `name`.
    pub fn owns(&self, name: &str) -> bool {
        self.entries.contains(name)
    }

    /// Records `name` as tailguard's and saves the manifest of `dir` (atomically).
    pub fn record(&mut self, dir: &Path, name: &str) -> OutputResult<()> {
        if self.entries.insert(name.to_string()) {
            self.save(dir)?;
        }
        Ok(())
    }

    /// Records every name of `names` as tailguard's and saves the manifest of `dir` once (atomically).
    pub fn record_all(&mut self, dir: &Path, names: &[&str]) -> OutputResult<()> {
        let added: Vec<String> = names
            .iter()
            .filter(|name| self.entries.insert(name.to_string()))
            .map(|name| name.to_string())
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        self.save(dir).inspect_err(|_| {
            for name in &added {
                self.entries.remove(name);
            }
        })
    }

    /// Forgets `name` (after tailguard removed it) and saves the manifest of `dir`.
    pub fn forget(&mut self, dir: &Path, name: &str) -> OutputResult<()> {
        if self.entries.remove(name) {
            self.save(dir)?;
        }
        Ok(())
    }

    fn save(&self, dir: &Path) -> OutputResult<()> {
        let file = ManifestFile {
            written_by: WRITER.into(),
            entries: self.entries.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("a manifest serialises");
        write_atomically(&Self::path(dir), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reread() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::read(dir.path()).unwrap();
        assert!(!manifest.owns("a"));
        manifest.record(dir.path(), "a").unwrap();
        manifest.record(dir.path(), "b").unwrap();
        manifest.forget(dir.path(), "b").unwrap();
        let again = Manifest::read(dir.path()).unwrap();
        assert!(again.owns("a") && !again.owns("b"));
    }

    #[test]
    fn a_foreign_or_broken_manifest_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{not json").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains(MANIFEST_FILE), "{err}");
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            br#"{"written_by":"someone","entries":["x"]}"#,
        )
        .unwrap();
        assert!(Manifest::read(dir.path()).unwrap_err().to_string().contains("someone"));
    }
}
