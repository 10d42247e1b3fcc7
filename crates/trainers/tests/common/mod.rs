//! Fixtures shared by the trainers' integration tests.

use std::path::{Path, PathBuf};

use tailguard_longtail::{CifarVariant, ImageDataset, ImageShape, write_cifar_archive};

/// 10 classes x 12 training images (class c: mean brightness rising with c, plus a texture), 2 test images each.
pub fn tiny_archive(dir: &Path) -> PathBuf {
    let make = |per_class: usize, offset: usize| {
        let n = per_class * 10;
        let mut pixels = Vec::with_capacity(n * 3072);
        for i in 0..n {
            let class = i % 10;
            for p in 0..3072 {
                pixels.push(((class * 20 + (p * 7 + i * 13 + offset) % 50) % 256) as u8);
            }
        }
        let labels = (0..n).map(|i| i % 10).collect();
        let classes = tailguard_longtail::sources::cifar::CIFAR10_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect();
        ImageDataset::new(pixels, labels, classes, ImageShape::CIFAR).unwrap()
    };
    let path = dir.join("tiny.tar.gz");
    write_cifar_archive(&path, &make(12, 0), &make(2, 5), CifarVariant::Cifar10).unwrap();
    path
}
