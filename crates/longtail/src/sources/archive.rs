//! Reading and writing CIFAR releases as `.tar` / `.tar.gz` archives, the form in which they are downloaded. The
//! embedded demo dataset (`datasets/cifar10-lt-mini.tar.gz`) uses exactly this layout, so it goes through the same
//! loader as a real download.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::dataset::ImageDataset;
use crate::error::{DataError, DataResult};

/// Whether `path` names a file tailguard reads as an archive.
pub fn is_archive(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    path.is_file() && (name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz"))
}

/// deflate expands a stream by at most about 1032 to 1.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// The regular files of an archive whose file names (last path component) are in `wanted`, keyed by file name.
pub fn read_archive_members(path: &Path, wanted: &[&str]) -> DataResult<HashMap<String, Vec<u8>>> {
    let format_error = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        format: "tar archive",
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| tailguard_output::OutputError::write(path, e))?;
    let gzip = bytes.starts_with(&[0x1f, 0x8b]);
    // The most a member can hold: the file itself, or for gzip what deflate can expand it to. A header declaring
    // more is refused before anything is reserved for it.
    let largest_member = if gzip {
        (bytes.len() as u64).saturating_mul(DEFLATE_MAX_RATIO)
    } else {
        bytes.len() as u64
    };
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut archive = tar::Archive::new(reader);
    let mut found = HashMap::new();
    let entries = archive.entries().map_err(|e| format_error(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format_error(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| format_error(e.to_string()))?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if wanted.contains(&name.as_str()) {
            let declared = entry.size();
            if declared > largest_member {
                return Err(format_error(format!(
                    "{name} declares {declared} bytes, more than this {}-byte archive can hold (at most {largest_member}): \
                     a damaged or hostile header",
                    bytes.len()
                )));
            }
            let mut content = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
            entry
                .read_to_end(&mut content)
                .map_err(|e| format_error(format!("{name}: {e} (truncated archive?)")))?;
            found.insert(name, content);
        }
    }
    Ok(found)
}

/// One file to put in an archive.
pub struct ArchiveMember<'a> {
    /// Path inside the archive.
    pub path: String,
    /// Its contents.
    pub bytes: &'a [u8],
}

/// Writes a gzip-compressed tar with fixed timestamps and modes, so the same content gives the same bytes.
pub fn write_tar_gz(path: &Path, members: &[ArchiveMember<'_>]) -> DataResult<()> {
    let encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let mut builder = tar::Builder::new(encoder);
    for member in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(member.bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &member.path, member.bytes)
            .map_err(|e| tailguard_output::OutputError::write(path, e))?;
    }
    let encoder = builder
        .into_inner()
        .map_err(|e| tailguard_output::OutputError::write(path, e))?;
    let bytes = encoder
        .finish()
        .map_err(|e| tailguard_output::OutputError::write(path, e))?;
    tailguard_output::write_atomically(path, &bytes).map_err(DataError::from)
}

/// Checks that a dataset fits CIFAR's record format.
pub(crate) fn check_cifar_shape(dataset: &ImageDataset) -> DataResult<()> {
    if dataset.shape() != crate::dataset::ImageShape::CIFAR {
        return Err(DataError::invalid(format!(
            "CIFAR files hold 3x32x32 images, this dataset has {}",
            dataset.shape()
        )));
    }
    if dataset.num_classes() > 256 {
        return Err(DataError::invalid("CIFAR labels are single bytes: at most 256 classes"));
    }
    Ok(())
}
