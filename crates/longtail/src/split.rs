//! Seeded long-tailed subsampling, shareable index files and validation splits.

use std::path::Path;

use crate::dataset::ImageDataset;
use crate::error::{DataError, DataResult};
use crate::profile::{ImbalanceProfile, class_sizes};
use crate::rng::SeedStream;

/// How to cut a long-tailed split out of a (usually balanced) dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LongTailSpec {
    /// Imbalance ratio rho = largest class / smallest class (1 keeps the dataset balanced).
    pub imbalance: f64,
    /// How class sizes fall from head to tail.
    #[serde(default)]
    pub profile: ImbalanceProfile,
    /// Size of the head class; `None` uses the largest class of the source.
    #[serde(default)]
    pub n_max: Option<usize>,
    /// Chooses which images are kept; the same seed gives the same split on every platform.
    #[serde(default)]
    pub seed: u64,
}

impl LongTailSpec {
    /// An exponential profile with ratio `imbalance` and seed 0.
    pub fn exp(imbalance: f64) -> Self {
        Self {
            imbalance,
            profile: ImbalanceProfile::Exp,
            n_max: None,
            seed: 0,
        }
    }

    /// The per-class sizes this spec asks of `source`.
    pub fn sizes_for(&self, source: &ImageDataset) -> DataResult<Vec<usize>> {
        let available = source.class_counts();
        let largest = available.iter().copied().max().unwrap_or(0);
        let n_max = self.n_max.unwrap_or(largest);
        // Checked before any size is computed or reserved: no class can give more images than it has.
        if n_max > largest {
            return Err(DataError::invalid(format!(
                "n_max = {n_max} is more than the largest class of the dataset has ({largest} images)"
            )));
        }
        class_sizes(self.profile, n_max, source.num_classes(), self.imbalance)
    }

    /// Picks the images of the split: for class c, the first `n_c` of a seeded shuffle of its images.
    pub fn select(&self, source: &ImageDataset) -> DataResult<LongTailSplit> {
        let sizes = self.sizes_for(source)?;
        let by_class = source.indices_by_class();
        for (class, (pool, &want)) in by_class.iter().zip(&sizes).enumerate() {
            if pool.len() < want {
                return Err(DataError::invalid(format!(
                    "class {class} ('{}') has {} images but the profile asks for {want}",
                    source.classes()[class],
                    pool.len()
                )));
            }
        }
        let mut indices = Vec::with_capacity(sizes.iter().sum());
        for (class, (pool, &want)) in by_class.iter().zip(&sizes).enumerate() {
            let mut pool = pool.clone();
            SeedStream::derive(self.seed, &[class as u64]).shuffle(&mut pool);
            indices.extend_from_slice(&pool[..want]);
        }
        indices.sort_unstable();
        Ok(LongTailSplit {
            source_len: source.len(),
            counts: sizes,
            indices,
        })
    }
}

/// Indices into a source dataset, with the per-class counts they make.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LongTailSplit {
    /// Number of images of the source the indices refer to (checked when a split file is read).
    pub source_len: usize,
    /// Images per class in the split.
    pub counts: Vec<usize>,
    /// Kept images, ascending.
    pub indices: Vec<usize>,
}

const SPLIT_FORMAT: &str = "tailguard-split/1";

#[derive(serde::Serialize, serde::Deserialize)]
struct SplitFile {
    format: String,
    #[serde(flatten)]
    split: LongTailSplit,
}

impl LongTailSplit {
    /// The images of the split.
    pub fn apply(&self, source: &ImageDataset) -> DataResult<ImageDataset> {
        self.check(source)?;
        source.subset(&self.indices)
    }

    /// Total number of images.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    fn check(&self, source: &ImageDataset) -> DataResult<()> {
        if self.source_len != source.len() {
            return Err(DataError::invalid(format!(
                "the split was made for a dataset of {} images, this one has {}",
                self.source_len,
                source.len()
            )));
        }
        let mut counts = vec![0usize; source.num_classes()];
        for &index in &self.indices {
            let label = *source
                .labels()
                .get(index)
                .ok_or_else(|| DataError::invalid(format!("split index {index} is out of range")))?;
            counts[label] += 1;
        }
        if counts != self.counts {
            return Err(DataError::invalid(format!(
                "the split's indices give class counts {counts:?}, but it records {:?}",
                self.counts
            )));
        }
        Ok(())
    }

    /// Writes the split as JSON so another run (or another person) can use exactly the same images.
    pub fn save(&self, path: &Path) -> DataResult<()> {
        let file = SplitFile {
            format: SPLIT_FORMAT.into(),
            split: self.clone(),
        };
        let json = serde_json::to_vec(&file).map_err(|e| DataError::invalid(e.to_string()))?;
        tailguard_output::write_atomically(path, &json).map_err(DataError::from)
    }

    /// Reads a split written by [`LongTailSplit::save`].
    pub fn load(path: &Path) -> DataResult<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let file: SplitFile = serde_json::from_slice(&bytes).map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            format: "tailguard split",
            reason: e.to_string(),
        })?;
        if file.format != SPLIT_FORMAT {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                format: "tailguard split",
                reason: format!("format '{}', expected '{SPLIT_FORMAT}'", file.format),
            });
        }
        Ok(file.split)
    }
}

/// Splits `dataset` into (training, validation): `fraction` of each class, rounded down, goes to validation, but
/// every class keeps at least one training image. Which images go is fixed by `seed`.
pub fn carve_validation(dataset: &ImageDataset, fraction: f64, seed: u64) -> DataResult<(ImageDataset, ImageDataset)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(DataError::invalid(format!(
            "validation fraction must be in [0, 1), got {fraction}"
        )));
    }
    let mut train = Vec::new();
    let mut valid = Vec::new();
    for (class, mut pool) in dataset.indices_by_class().into_iter().enumerate() {
        let take = ((pool.len() as f64 * fraction).floor() as usize).min(pool.len().saturating_sub(1));
        SeedStream::derive(seed, &[crate::rng::stream::VALIDATION, class as u64]).shuffle(&mut pool);
        valid.extend_from_slice(&pool[..take]);
        train.extend_from_slice(&pool[take..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    Ok((dataset.subset(&train)?, dataset.subset(&valid)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ImageShape;

    fn balanced(per_class: usize, classes: usize) -> ImageDataset {
        let shape = ImageShape {
            channels: 1,
            height: 1,
            width: 1,
        };
        let n = per_class * classes;
        let labels = (0..n).map(|i| i % classes).collect();
        let pixels = (0..n).map(|i| (i % 256) as u8).collect();
        let names = (0..classes).map(|c| format!("c{c}")).collect();
        ImageDataset::new(pixels, labels, names, shape).unwrap()
    }

    #[test]
    fn selection_has_the_profile_counts_and_is_seeded() {
        let source = balanced(100, 5);
        let spec = LongTailSpec::exp(10.0);
        let split = spec.select(&source).unwrap();
        assert_eq!(split.counts, vec![100, 56, 31, 17, 10]);
        assert_eq!(split.apply(&source).unwrap().class_counts(), split.counts);
        assert_eq!(spec.select(&source).unwrap(), split);
        let other = LongTailSpec { seed: 1, ..spec }.select(&source).unwrap();
        assert_eq!(other.counts, split.counts);
        assert_ne!(other.indices, split.indices);
    }

    #[test]
    fn selection_is_fixed_across_versions() {
        // Pins the exact images chosen, so a change to the generator or the shuffle cannot pass unnoticed.
        let split = LongTailSpec::exp(4.0).select(&balanced(4, 3)).unwrap();
        assert_eq!(split.counts, vec![4, 2, 1]);
        assert_eq!(split.indices, vec![0, 3, 4, 5, 6, 7, 9]);
    }

    #[test]
    fn split_file_round_trip_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("split.json");
        let source = balanced(20, 4);
        let split = LongTailSpec::exp(5.0).select(&source).unwrap();
        split.save(&path).unwrap();
        let loaded = LongTailSplit::load(&path).unwrap();
        assert_eq!(loaded, split);
        let err = loaded.apply(&balanced(21, 4)).unwrap_err();
        assert!(err.to_string().contains("84"), "{err}");
        std::fs::write(&path, b"{").unwrap();
        assert!(
            LongTailSplit::load(&path)
                .unwrap_err()
                .to_string()
                .contains("split.json")
        );
    }

    #[test]
    fn too_few_images_is_an_error() {
        let spec = LongTailSpec {
            n_max: Some(200),
            ..LongTailSpec::exp(2.0)
        };
        // Refused before any size is computed: no class has 200 images.
        let err = spec.select(&balanced(100, 3)).unwrap_err();
        assert!(
            err.to_string().contains("n_max = 200 is more than the largest class"),
            "{err}"
        );
        assert!(err.to_string().contains("(100 images)"), "{err}");
    }

    #[test]
    fn validation_takes_a_fraction_of_each_class() {
        let data = LongTailSpec::exp(10.0)
            .select(&balanced(50, 3))
            .unwrap()
            .apply(&balanced(50, 3))
            .unwrap();
        let (train, valid) = carve_validation(&data, 0.2, 3).unwrap();
        assert_eq!(valid.class_counts(), vec![10, 3, 1]);
        assert_eq!(train.class_counts(), vec![40, 12, 4]);
        let (_, again) = carve_validation(&data, 0.2, 3).unwrap();
        assert_eq!(again, valid);
        assert!(carve_validation(&data, 1.0, 0).is_err());
    }
}
