//! # tailguard-longtail
//!
//! Long-tailed image data for adversarial training: loaders for CIFAR-10/100 binaries and image folders, seeded
//! long-tailed subsampling (exponential and step profiles) with shareable split files, validation splits,
//! augmentation (crop + flip) and prefetching batch loaders that yield Burn tensors.
//!
//! ```
//! use std::sync::Arc;
//! use tailguard_flex::Flex;
//! use tailguard_longtail::{BatchLoader, BatchLoaderConfig, ImageDataset, ImageShape, LongTailSpec};
//!
//! // A balanced toy source of 3 classes x 40 images (real code loads CIFAR or an image folder).
//! let shape = ImageShape { channels: 3, height: 8, width: 8 };
//! let labels: Vec<usize> = (0..120).map(|i| i % 3).collect();
//! let pixels = vec![128u8; 120 * shape.len()];
//! let names = vec!["cat".into(), "dog".into(), "frog".into()];
//! let source = ImageDataset::new(pixels, labels, names, shape).unwrap();
//!
//! // Imbalance ratio 10: 40, 12 and 4 images.
//! let split = LongTailSpec::exp(10.0).select(&source).unwrap();
//! assert_eq!(split.counts, vec![40, 12, 4]);
//! let train = Arc::new(split.apply(&source).unwrap());
//!
//! let loader = BatchLoader::new(train, BatchLoaderConfig::training(0).with_batch_size(16)).unwrap();
//! let batch = loader.batches::<Flex>(0, &Default::default()).next().unwrap().unwrap();
//! assert_eq!(batch.images.dims(), [16, 3, 8, 8]);
//! ```

#![warn(missing_docs)]

pub mod augment;
pub mod batcher;
pub mod dataset;
mod decode;
pub mod error;
pub mod metrics;
pub mod profile;
pub mod rng;
pub mod sources;
pub mod split;

pub use augment::Augmentation;
pub use batcher::{Batch, BatchLoader, BatchLoaderConfig, HostBatch, Sampling, shard_rows};
pub use dataset::{ImageDataset, ImageFit, ImageShape};
pub use error::{DataError, DataResult};
pub use metrics::{AccuracySummary, ClassGroups, ClassTally, GroupAccuracy, WorstClass, host_labels};
pub use profile::{ImbalanceProfile, class_sizes};
pub use rng::SeedStream;
pub use sources::{
    CifarVariant, DatasetKind, ImageFolderOptions, LoadOptions, Split, load_cifar, load_image_folder, write_cifar,
    write_cifar_archive,
};
pub use split::{LongTailSpec, LongTailSplit, carve_validation};
