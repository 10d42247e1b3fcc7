//! The image dataset every loader produces: pixels in memory, or (for datasets too large for memory) files read and
//! decoded when a batch needs them.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{DataError, DataResult};

/// Which part of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

impl Split {
    /// Folder name used by image-folder datasets.
    pub fn folder_name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Channels, height and width of every image of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    /// Colour channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// `[channels, height, width]`.
    pub fn chw(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// CIFAR's 3x32x32.
    pub const CIFAR: ImageShape = ImageShape {
        channels: 3,
        height: 32,
        width: 32,
    };

    /// Bytes of one image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the shape holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{} (CxHxW)", self.channels, self.height, self.width)
    }
}

/// Images as u8 pixels in planar CHW order (the layout of CIFAR's binary files and of an NCHW tensor), with one
/// label per image and the class names in label order.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDataset {
    storage: Storage,
    labels: Vec<usize>,
    classes: Vec<String>,
    shape: ImageShape,
}

/// Where the pixels are.
#[derive(Debug, Clone, PartialEq)]
enum Storage {
    /// Decoded, image after image.
    Memory(Vec<u8>),
    /// Image files, decoded to the dataset's shape on each read.
    Files(Arc<Vec<PathBuf>>, ImageFit),
}

pub use crate::decode::ImageFit;

impl ImageDataset {
    /// Checks that pixels, labels and classes agree.
    pub fn new(pixels: Vec<u8>, labels: Vec<usize>, classes: Vec<String>, shape: ImageShape) -> DataResult<Self> {
        if shape.is_empty() {
            return Err(DataError::invalid(format!("image shape {shape} holds no pixel")));
        }
        if pixels.len() != labels.len() * shape.len() {
            return Err(DataError::invalid(format!(
                "{} pixel bytes do not make {} images of {shape}",
                pixels.len(),
                labels.len()
            )));
        }
        if classes.is_empty() {
            return Err(DataError::invalid("a dataset needs at least one class"));
        }
        if let Some((index, label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes.len()) {
            return Err(DataError::invalid(format!(
                "image {index} has label {label} but there are only {} classes",
                classes.len()
            )));
        }
        Ok(Self {
            storage: Storage::Memory(pixels),
            labels,
            classes,
            shape,
        })
    }

    /// A dataset whose images stay on disk: `files[i]` is decoded, converted to `shape.channels` channels and
    /// fitted to `shape` by `fit` whenever image `i` is read.
    pub fn streamed(
        files: Vec<PathBuf>,
        labels: Vec<usize>,
        classes: Vec<String>,
        shape: ImageShape,
        fit: ImageFit,
    ) -> DataResult<Self> {
        if files.len() != labels.len() {
            return Err(DataError::invalid(format!(
                "{} files for {} labels",
                files.len(),
                labels.len()
            )));
        }
        let mut dataset = Self::new(Vec::new(), Vec::new(), classes, shape)?;
        if let Some((index, label)) = labels.iter().enumerate().find(|(_, l)| **l >= dataset.classes.len()) {
            return Err(DataError::invalid(format!(
                "image {index} has label {label} but there are only {} classes",
                dataset.classes.len()
            )));
        }
        dataset.storage = Storage::Files(Arc::new(files), fit);
        dataset.labels = labels;
        Ok(dataset)
    }

    /// Whether the images are read from disk on demand.
    pub fn is_streamed(&self) -> bool {
        matches!(self.storage, Storage::Files(..))
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of every image.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// All labels, in image order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Label of image `index`.
    pub fn label(&self, index: usize) -> usize {
        self.labels[index]
    }

    /// Pixels of image `index`, CHW (read and decoded from its file for a streamed dataset).
    pub fn image(&self, index: usize) -> DataResult<Cow<'_, [u8]>> {
        match &self.storage {
            Storage::Memory(pixels) => {
                let len = self.shape.len();
                Ok(Cow::Borrowed(&pixels[index * len..(index + 1) * len]))
            }
            Storage::Files(files, fit) => {
                crate::decode::decode_fitted(&files[index], self.shape.chw(), *fit).map(Cow::Owned)
            }
        }
    }

    /// All pixels, image after image, CHW; `None` for a streamed dataset.
    pub fn pixels(&self) -> Option<&[u8]> {
        match &self.storage {
            Storage::Memory(pixels) => Some(pixels),
            Storage::Files(..) => None,
        }
    }

    /// Images per class, in class order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &label in &self.labels {
            counts[label] += 1;
        }
        counts
    }

    /// Indices of the images of each class, in dataset order.
    pub fn indices_by_class(&self) -> Vec<Vec<usize>> {
        let mut by_class = vec![Vec::new(); self.classes.len()];
        for (index, &label) in self.labels.iter().enumerate() {
            by_class[label].push(index);
        }
        by_class
    }

    /// A new dataset with the images at `indices`, in that order. Every index must be in range.
    pub fn subset(&self, indices: &[usize]) -> DataResult<ImageDataset> {
        if let Some(bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::invalid(format!(
                "index {bad} is out of range for a dataset of {} images",
                self.len()
            )));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        match &self.storage {
            Storage::Memory(_) => {
                let mut pixels = Vec::with_capacity(indices.len() * self.shape.len());
                for &index in indices {
                    pixels.extend_from_slice(&self.image(index)?);
                }
                ImageDataset::new(pixels, labels, self.classes.clone(), self.shape)
            }
            Storage::Files(files, fit) => {
                let files = indices.iter().map(|&i| files[i].clone()).collect();
                ImageDataset::streamed(files, labels, self.classes.clone(), self.shape, *fit)
            }
        }
    }

    /// Keeps only the first `num_classes` classes (and their images), as Tiny-ImageNet-LT does with 20 classes.
    pub fn first_classes(&self, num_classes: usize) -> DataResult<ImageDataset> {
        if num_classes == 0 || num_classes > self.num_classes() {
            return Err(DataError::invalid(format!(
                "{num_classes} classes requested but the dataset has {}",
                self.num_classes()
            )));
        }
        let keep: Vec<usize> = (0..self.len()).filter(|&i| self.labels[i] < num_classes).collect();
        let mut subset = self.subset(&keep)?;
        subset.classes.truncate(num_classes);
        Ok(subset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageDataset {
        let shape = ImageShape {
            channels: 1,
            height: 1,
            width: 2,
        };
        ImageDataset::new(
            vec![0, 1, 2, 3, 4, 5],
            vec![0, 1, 1],
            vec!["a".into(), "b".into()],
            shape,
        )
        .unwrap()
    }

    #[test]
    fn subset_copies_images_and_labels() {
        let data = tiny();
        let sub = data.subset(&[2, 0]).unwrap();
        assert_eq!(sub.pixels().unwrap(), &[4, 5, 0, 1]);
        assert_eq!(sub.labels(), &[1, 0]);
        assert_eq!(data.class_counts(), vec![1, 2]);
        assert!(data.subset(&[3]).is_err());
    }

    #[test]
    fn rejects_inconsistent_parts() {
        let shape = ImageShape::CIFAR;
        let err = ImageDataset::new(vec![0; 10], vec![0], vec!["a".into()], shape).unwrap_err();
        assert!(err.to_string().contains("pixel bytes"), "{err}");
        let err = ImageDataset::new(vec![0; 3072], vec![3], vec!["a".into()], shape).unwrap_err();
        assert!(err.to_string().contains("label 3"), "{err}");
    }

    #[test]
    fn first_classes_drops_the_rest() {
        let data = tiny().first_classes(1).unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data.classes(), &["a".to_string()]);
        assert!(
            tiny()
                .first_classes(3)
                .unwrap_err()
                .to_string()
                .contains("3 classes requested")
        );
    }
}
