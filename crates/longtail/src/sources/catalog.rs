//! The datasets the program knows by name, and where their files are looked for.

use std::path::Path;

use crate::dataset::{ImageDataset, ImageFit};
use crate::error::{DataError, DataResult};
use crate::sources::cifar::{CifarVariant, Split, load_cifar};
use crate::sources::image_folder::{ImageFolderOptions, load_image_folder};
use crate::sources::list_file::{ListFileOptions, load_list_file};
use crate::sources::tiny_imagenet::load_tiny_imagenet;

/// A dataset by name: `cifar10`, `cifar100`, `tinyimagenet`, `imagefolder` or `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// CIFAR-10 binaries (folder or .tar.gz).
    Cifar10,
    /// CIFAR-100 binaries (folder or .tar.gz).
    Cifar100,
    /// ROOT/{train,test}/<class>/<image> (folder or archive).
    ImageFolder,
    /// Tiny-ImageNet's release folder (`wnids.txt`, `train/`, `val/`); its validation images are the test split.
    TinyImageNet,
    /// An image root with `relative/path label` list files (ImageNet-LT, Places-LT, iNaturalist-LT); needs an image
    /// size.
    #[serde(rename = "list")]
    ListFile,
}

/// The largest image side images are fitted to (a 4096 x 4096 RGB image is 200 MB in f32).
pub const MAX_IMAGE_SIDE: usize = 4096;

/// How to load a dataset, apart from where and which split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Keep only the first K classes.
    pub classes: Option<usize>,
    /// Height and width list-file images are fitted to (required for them, unused by the other formats).
    pub image_size: Option<usize>,
    /// How list-file images are fitted.
    pub fit: ImageFit,
}

impl std::str::FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> DataResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(Self::Cifar10),
            "cifar100" | "cifar-100" => Ok(Self::Cifar100),
            "imagefolder" | "image-folder" => Ok(Self::ImageFolder),
            "tinyimagenet" | "tiny-imagenet" => Ok(Self::TinyImageNet),
            "list" | "list-file" => Ok(Self::ListFile),
            other => Err(DataError::invalid(format!(
                "unknown dataset '{other}' (expected cifar10, cifar100, tinyimagenet, imagefolder or list)"
            ))),
        }
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
            Self::ImageFolder => "imagefolder",
            Self::TinyImageNet => "tinyimagenet",
            Self::ListFile => "list",
        })
    }
}

impl DatasetKind {
    fn cifar(self) -> Option<CifarVariant> {
        match self {
            Self::Cifar10 => Some(CifarVariant::Cifar10),
            Self::Cifar100 => Some(CifarVariant::Cifar100),
            Self::ImageFolder | Self::TinyImageNet | Self::ListFile => None,
        }
    }

    /// Images per class of the standard release, when the dataset has one.
    pub fn standard_class_size(self, split: Split) -> Option<usize> {
        if self == Self::TinyImageNet {
            return Some(match split {
                Split::Train => crate::sources::tiny_imagenet::TRAIN_PER_CLASS,
                Split::Test => crate::sources::tiny_imagenet::VAL_PER_CLASS,
            });
        }
        self.cifar().map(|v| match split {
            Split::Train => v.train_images_per_class(),
            Split::Test => v.test_images_per_class(),
        })
    }

    /// Class names of the standard release, when the dataset has one.
    pub fn standard_classes(self) -> Option<Vec<String>> {
        use crate::sources::cifar::{CIFAR10_CLASSES, CIFAR100_CLASSES};
        match self {
            Self::Cifar10 => Some(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()),
            Self::Cifar100 => Some(CIFAR100_CLASSES.iter().map(|s| s.to_string()).collect()),
            Self::ImageFolder | Self::TinyImageNet | Self::ListFile => None,
        }
    }

    /// Loads `split` from `dir` as `options` say.
    pub fn load_with(self, dir: &Path, split: Split, options: &LoadOptions) -> DataResult<ImageDataset> {
        // Bounded before any image is decoded into it.
        if let Some(size) = options.image_size.filter(|&s| s == 0 || s > MAX_IMAGE_SIDE) {
            return Err(DataError::invalid(format!(
                "image size {size} is outside what tailguard fits images to (1 to {MAX_IMAGE_SIDE} pixels)"
            )));
        }
        if self == Self::ListFile {
            let size = options
                .image_size
                .ok_or_else(|| DataError::invalid("a list-file dataset needs an image size (data.image_size)"))?;
            let list = ListFileOptions {
                classes: options.classes,
                fit: options.fit,
                ..ListFileOptions::new(size)
            };
            return load_list_file(dir, split, &list);
        }
        self.load_classes(dir, split, options.classes)
    }

    /// Loads `split` of the first `classes` classes from `dir` (all when `None`). For Tiny-ImageNet only the kept
    /// classes are decoded; other datasets are loaded whole and cut.
    pub fn load_classes(self, dir: &Path, split: Split, classes: Option<usize>) -> DataResult<ImageDataset> {
        match (self, classes) {
            (Self::TinyImageNet, _) => load_tiny_imagenet(dir, split, classes),
            (Self::ListFile, _) => self.load(dir, split),
            (_, None) => self.load(dir, split),
            (_, Some(k)) => {
                let all = self.load(dir, split)?;
                if k == all.num_classes() {
                    Ok(all)
                } else {
                    all.first_classes(k)
                }
            }
        }
    }

    /// Loads `split` from `dir`.
    ///
    /// For CIFAR, `dir` may hold the binary release (`cifar-10-batches-bin/`, `cifar-100-binary/`, or their files
    /// directly) or the same images as an image folder (`train/<class>/*.png|jpg`); the class order is CIFAR's.
    pub fn load(self, dir: &Path, split: Split) -> DataResult<ImageDataset> {
        if crate::sources::archive::is_archive(dir) {
            return match self.cifar() {
                Some(variant) => load_cifar(dir, variant, split),
                None => Err(DataError::invalid(format!(
                    "{} is an archive; image folders must be unpacked first",
                    dir.display()
                ))),
            };
        }
        if !dir.is_dir() {
            return Err(DataError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "data folder not found"),
            ));
        }
        if self == Self::TinyImageNet {
            return load_tiny_imagenet(dir, split, None);
        }
        if self == Self::ListFile {
            return Err(DataError::invalid(
                "a list-file dataset needs an image size (data.image_size, or the checkpoint's input shape)",
            ));
        }
        match self.cifar() {
            Some(variant) => {
                let has_binary = dir
                    .join(crate::sources::cifar::expected_layout(variant, split))
                    .exists()
                    || dir
                        .join(
                            crate::sources::cifar::expected_layout(variant, split)
                                .file_name()
                                .unwrap_or_default(),
                        )
                        .exists();
                if !has_binary && dir.join(split.folder_name()).is_dir() {
                    let options = ImageFolderOptions {
                        classes: self.standard_classes(),
                        ..Default::default()
                    };
                    load_image_folder(dir, split, &options)
                } else {
                    load_cifar(dir, variant, split)
                }
            }
            None => load_image_folder(dir, split, &ImageFolderOptions::default()),
        }
    }
}
