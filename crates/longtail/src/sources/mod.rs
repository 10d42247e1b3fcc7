//! Where images come from: CIFAR binary releases and image folders.

pub mod archive;
pub mod catalog;
pub mod cifar;
pub mod image_folder;

pub use catalog::DatasetKind;
pub use cifar::{CifarVariant, Split, load_cifar, write_cifar, write_cifar_archive};
pub use image_folder::{ImageFolderOptions, load_image_folder};
