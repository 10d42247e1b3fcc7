//! Where images come from: CIFAR binary releases, image folders, Tiny-ImageNet's release and list files.

pub mod archive;
pub mod catalog;
pub mod cifar;
pub mod image_folder;
pub mod list_file;
pub mod tiny_imagenet;

pub use catalog::{DatasetKind, LoadOptions};
pub use cifar::{CifarVariant, Split, load_cifar, write_cifar, write_cifar_archive};
pub use image_folder::{ImageFolderOptions, load_image_folder};
pub use list_file::{ListFileOptions, load_list_file};
pub use tiny_imagenet::{load_tiny_imagenet, tiny_imagenet_classes};
