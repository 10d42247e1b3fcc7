//! CIFAR-10 and CIFAR-100 in their binary release format (`cifar-10-batches-bin`, `cifar-100-binary`).
//!
//! A CIFAR-10 record is 1 label byte then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows top to bottom).
//! A CIFAR-100 record has a coarse and a fine label byte before the pixels; tailguard uses the fine labels.

use std::path::{Path, PathBuf};

pub use crate::dataset::Split;
use crate::dataset::{ImageDataset, ImageShape};
use crate::error::{DataError, DataResult};
use crate::sources::archive::{ArchiveMember, check_cifar_shape, is_archive, read_archive_members, write_tar_gz};

/// CIFAR-10 class names in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100 fine class names in label order.
pub const CIFAR100_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// The two CIFAR binary layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarVariant {
    /// CIFAR-10: one label byte per image.
    Cifar10,
    /// CIFAR-100: coarse and fine label bytes per image.
    Cifar100,
}

impl CifarVariant {
    /// Label bytes before the pixels of each record.
    fn label_bytes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 1,
            CifarVariant::Cifar100 => 2,
        }
    }

    fn record_len(self) -> usize {
        self.label_bytes() + ImageShape::CIFAR.len()
    }

    fn format_name(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "CIFAR-10 binary",
            CifarVariant::Cifar100 => "CIFAR-100 binary",
        }
    }

    fn default_classes(self) -> Vec<String> {
        let names: &[&str] = match self {
            CifarVariant::Cifar10 => &CIFAR10_CLASSES,
            CifarVariant::Cifar100 => &CIFAR100_CLASSES,
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Images per class in the standard training set.
    pub fn train_images_per_class(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 5000,
            CifarVariant::Cifar100 => 500,
        }
    }

    /// Images per class in the standard test set.
    pub fn test_images_per_class(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 1000,
            CifarVariant::Cifar100 => 100,
        }
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100 => 100,
        }
    }

    /// The files of a split, relative to the dataset folder (which may be the archive's top folder or its parent).
    fn files(self, split: Split) -> (&'static str, Vec<&'static str>) {
        match (self, split) {
            (CifarVariant::Cifar10, Split::Train) => (
                "cifar-10-batches-bin",
                vec![
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ],
            ),
            (CifarVariant::Cifar10, Split::Test) => ("cifar-10-batches-bin", vec!["test_batch.bin"]),
            (CifarVariant::Cifar100, Split::Train) => ("cifar-100-binary", vec!["train.bin"]),
            (CifarVariant::Cifar100, Split::Test) => ("cifar-100-binary", vec!["test.bin"]),
        }
    }

    /// Class names file shipped with the release, if any.
    fn meta_file(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "batches.meta.txt",
            CifarVariant::Cifar100 => "fine_label_names.txt",
        }
    }
}

/// Loads a CIFAR split from `dir`: the release folder (`cifar-10-batches-bin`), its parent, or the downloaded
/// archive itself (`cifar-10-binary.tar.gz`, `cifar-100-binary.tar.gz`).
pub fn load_cifar(dir: &Path, variant: CifarVariant, split: Split) -> DataResult<ImageDataset> {
    if is_archive(dir) {
        return load_cifar_archive(dir, variant, split);
    }
    let (folder, files) = variant.files(split);
    let root = if dir.join(folder).is_dir() {
        dir.join(folder)
    } else {
        dir.to_path_buf()
    };
    let classes = read_class_names(&root.join(variant.meta_file()), variant)?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        let path = root.join(file);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        parse_records(&path, &bytes, variant, classes.len(), &mut pixels, &mut labels)?;
    }
    ImageDataset::new(pixels, labels, classes, ImageShape::CIFAR)
}

/// Reads the records of one CIFAR file into `pixels` and `labels`.
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    variant: CifarVariant,
    num_classes: usize,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> DataResult<()> {
    let record = variant.record_len();
    let format_error = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        format: variant.format_name(),
        reason,
    };
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(format_error(format!(
            "{} bytes is not a whole number of {record}-byte records (truncated or not CIFAR)",
            bytes.len()
        )));
    }
    pixels.reserve(bytes.len() / record * ImageShape::CIFAR.len());
    for (index, chunk) in bytes.chunks_exact(record).enumerate() {
        // CIFAR-100: byte 0 is the coarse label, byte 1 the fine label.
        let label = chunk[variant.label_bytes() - 1] as usize;
        if label >= num_classes {
            return Err(format_error(format!(
                "record {index} has label {label}, but there are only {num_classes} classes"
            )));
        }
        labels.push(label);
        pixels.extend_from_slice(&chunk[variant.label_bytes()..]);
    }
    Ok(())
}

fn load_cifar_archive(path: &Path, variant: CifarVariant, split: Split) -> DataResult<ImageDataset> {
    let (_, files) = variant.files(split);
    let mut wanted = files.clone();
    wanted.push(variant.meta_file());
    let mut members = read_archive_members(path, &wanted)?;
    let classes = match members.remove(variant.meta_file()) {
        Some(bytes) => parse_class_names(path, &String::from_utf8_lossy(&bytes), variant)?,
        None => variant.default_classes(),
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        let bytes = members.get(file).ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            format: variant.format_name(),
            reason: format!("the archive holds no {file}"),
        })?;
        parse_records(
            &path.join(file),
            bytes,
            variant,
            classes.len(),
            &mut pixels,
            &mut labels,
        )?;
    }
    ImageDataset::new(pixels, labels, classes, ImageShape::CIFAR)
}

fn parse_class_names(path: &Path, text: &str, variant: CifarVariant) -> DataResult<Vec<String>> {
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != variant.num_classes() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            format: variant.format_name(),
            reason: format!("lists {} class names, expected {}", names.len(), variant.num_classes()),
        });
    }
    Ok(names)
}

fn read_class_names(path: &Path, variant: CifarVariant) -> DataResult<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_class_names(path, &text, variant),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(variant.default_classes()),
        Err(e) => Err(DataError::io(path, e)),
    }
}

fn records(dataset: &ImageDataset, variant: CifarVariant, range: std::ops::Range<usize>) -> DataResult<Vec<u8>> {
    let mut bytes = Vec::with_capacity(range.len() * variant.record_len());
    for index in range {
        if variant == CifarVariant::Cifar100 {
            bytes.push(0); // coarse label: not tracked by tailguard
        }
        bytes.push(dataset.label(index) as u8);
        bytes.extend_from_slice(&dataset.image(index)?);
    }
    Ok(bytes)
}

/// Writes a training and a test set as a `.tar.gz` laid out like the official binary download
/// (`cifar-10-batches-bin/data_batch_{1..5}.bin`, `test_batch.bin`, `batches.meta.txt`, or
/// `cifar-100-binary/train.bin`, `test.bin`, `fine_label_names.txt`), readable by [`load_cifar`].
pub fn write_cifar_archive(
    path: &Path,
    train: &ImageDataset,
    test: &ImageDataset,
    variant: CifarVariant,
) -> DataResult<()> {
    check_cifar_shape(train)?;
    check_cifar_shape(test)?;
    if train.classes() != test.classes() {
        return Err(DataError::invalid("training and test sets have different classes"));
    }
    // Refused here what `load_cifar` would refuse to read back: one trimmed, non-empty name per line, and the
    // release's number of classes.
    if let Some(name) = train
        .classes()
        .iter()
        .find(|n| n.is_empty() || n.trim() != n.as_str() || n.contains(['\n', '\r']))
    {
        return Err(DataError::invalid(format!(
            "class name {name:?} cannot be written to {}: one trimmed, non-empty name per line",
            variant.meta_file()
        )));
    }
    if train.num_classes() != variant.num_classes() {
        return Err(DataError::invalid(format!(
            "a {} archive holds exactly {} classes; this data has {} (the reader would refuse the archive)",
            variant.format_name(),
            variant.num_classes(),
            train.num_classes()
        )));
    }
    let (folder, train_files) = variant.files(Split::Train);
    let (_, test_files) = variant.files(Split::Test);
    let mut contents: Vec<(String, Vec<u8>)> = Vec::new();
    // Training images spread over the release's files (5 batches for CIFAR-10), in order.
    let per_file = train.len().div_ceil(train_files.len());
    for (i, file) in train_files.iter().enumerate() {
        let range = (i * per_file).min(train.len())..((i + 1) * per_file).min(train.len());
        contents.push((format!("{folder}/{file}"), records(train, variant, range)?));
    }
    contents.push((
        format!("{folder}/{}", test_files[0]),
        records(test, variant, 0..test.len())?,
    ));
    let mut names = train.classes().join("\n");
    names.push('\n');
    contents.push((format!("{folder}/{}", variant.meta_file()), names.into_bytes()));
    let members: Vec<ArchiveMember<'_>> = contents
        .iter()
        .map(|(path, bytes)| ArchiveMember {
            path: path.clone(),
            bytes,
        })
        .collect();
    write_tar_gz(path, &members)
}

/// Writes `dataset` as one CIFAR binary file (CIFAR-100 records get coarse label 0). Written to a temporary name
/// first, then renamed, so a reader never sees half a file.
pub fn write_cifar(path: &Path, dataset: &ImageDataset, variant: CifarVariant) -> DataResult<()> {
    check_cifar_shape(dataset)?;
    tailguard_output::write_atomically(path, &records(dataset, variant, 0..dataset.len())?).map_err(DataError::from)
}

/// Where the standard release keeps its files, to tell a user what was expected.
pub fn expected_layout(variant: CifarVariant, split: Split) -> PathBuf {
    let (folder, files) = variant.files(split);
    Path::new(folder).join(files[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(n: usize) -> ImageDataset {
        let pixels = (0..n * 3072).map(|i| (i % 251) as u8).collect();
        let labels = (0..n).map(|i| i % 10).collect();
        let classes = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
        ImageDataset::new(pixels, labels, classes, ImageShape::CIFAR).unwrap()
    }

    #[test]
    fn cifar10_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(12);
        write_cifar(&dir.path().join("test_batch.bin"), &data, CifarVariant::Cifar10).unwrap();
        let loaded = load_cifar(dir.path(), CifarVariant::Cifar10, Split::Test).unwrap();
        assert_eq!(loaded, data);
    }

    #[test]
    fn cifar100_uses_fine_labels() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("cifar-100-binary");
        std::fs::create_dir(&folder).unwrap();
        let mut record = vec![3u8, 42u8];
        record.extend(std::iter::repeat_n(7u8, 3072));
        std::fs::write(folder.join("test.bin"), &record).unwrap();
        let loaded = load_cifar(dir.path(), CifarVariant::Cifar100, Split::Test).unwrap();
        assert_eq!(loaded.labels(), &[42]);
        assert_eq!(loaded.classes()[42], "leopard");
        assert_eq!(loaded.image(0).unwrap()[0], 7);
    }

    #[test]
    fn archive_round_trip_like_the_official_download() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cifar-10-binary.tar.gz");
        let train = dataset(23);
        let test = dataset(7);
        write_cifar_archive(&path, &train, &test, CifarVariant::Cifar10).unwrap();
        assert_eq!(load_cifar(&path, CifarVariant::Cifar10, Split::Train).unwrap(), train);
        assert_eq!(load_cifar(&path, CifarVariant::Cifar10, Split::Test).unwrap(), test);
        // Same content, same bytes.
        let first = std::fs::read(&path).unwrap();
        write_cifar_archive(&path, &train, &test, CifarVariant::Cifar10).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
        // Ten classes are no CIFAR-100 archive: refused when written, since the reader would refuse it.
        let path100 = dir.path().join("c100.tgz");
        let err = write_cifar_archive(&path100, &train, &test, CifarVariant::Cifar100).unwrap_err();
        assert!(err.to_string().contains("exactly 100 classes"), "{err}");
        assert!(!path100.exists());
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cifar.tar.gz");
        write_cifar_archive(&path, &dataset(30), &dataset(5), CifarVariant::Cifar10).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_cifar(&path, CifarVariant::Cifar10, Split::Train).unwrap_err();
        assert!(err.to_string().contains("cifar.tar.gz"), "{err}");
    }

    #[test]
    fn truncated_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test_batch.bin");
        std::fs::write(&path, vec![0u8; 3073 * 2 - 5]).unwrap();
        let err = load_cifar(dir.path(), CifarVariant::Cifar10, Split::Test).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("test_batch.bin") && text.contains("truncated"), "{text}");
    }

    #[test]
    fn missing_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_cifar(dir.path(), CifarVariant::Cifar10, Split::Train).unwrap_err();
        assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
    }

    #[test]
    fn out_of_range_label_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = vec![10u8];
        record.extend(std::iter::repeat_n(0u8, 3072));
        std::fs::write(dir.path().join("test_batch.bin"), &record).unwrap();
        let err = load_cifar(dir.path(), CifarVariant::Cifar10, Split::Test).unwrap_err();
        assert!(err.to_string().contains("label 10"), "{err}");
    }
}
