//! Tiny-ImageNet as released (`tiny-imagenet-200.zip`, unpacked): `wnids.txt`, `train/<wnid>/images/*.JPEG`,
//! `val/images/*.JPEG` with `val/val_annotations.txt` (`file<TAB>wnid<TAB>box...`), 64x64 pixels. The validation
//! images are the test split, as in every paper that uses the dataset. RobustLT's loader, which moves the
//! validation images into `val/<wnid>/` folders, leaves a layout that loads too.
//!
//! Classes are the wnids in sorted order (torchvision's `ImageFolder`, which RobustLT's loader uses), so "the first
//! 20 classes" of Tiny-ImageNet-LT are the 20 smallest wnids. A few images are grey scale; they are converted to RGB
//! as PIL's `convert("RGB")` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dataset::ImageDataset;
use crate::dataset::Split;
use crate::error::{DataError, DataResult};
use crate::sources::image_folder::{assemble, is_image, list_dir};

/// Images per class in the release: 500 for training, 50 for validation.
pub const TRAIN_PER_CLASS: usize = 500;
/// See [`TRAIN_PER_CLASS`].
pub const VAL_PER_CLASS: usize = 50;

/// The sorted wnids of `root/wnids.txt`.
pub fn tiny_imagenet_classes(root: &Path) -> DataResult<Vec<String>> {
    let path = root.join("wnids.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let mut wnids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if wnids.is_empty() {
        return Err(DataError::Format {
            path,
            format: "Tiny-ImageNet wnids.txt",
            reason: "it lists no class".into(),
        });
    }
    wnids.sort();
    wnids.dedup();
    Ok(wnids)
}

/// Loads `split` of the first `max_classes` classes (all when `None`).
pub fn load_tiny_imagenet(root: &Path, split: Split, max_classes: Option<usize>) -> DataResult<ImageDataset> {
    let mut classes = tiny_imagenet_classes(root)?;
    if let Some(k) = max_classes {
        if k == 0 || k > classes.len() {
            return Err(DataError::invalid(format!(
                "cannot keep {k} classes of Tiny-ImageNet's {}",
                classes.len()
            )));
        }
        classes.truncate(k);
    }
    let files = match split {
        Split::Train => train_files(root, &classes)?,
        Split::Test => val_files(root, &classes)?,
    };
    assemble(&files, classes, 3, None, true)
}

fn train_files(root: &Path, classes: &[String]) -> DataResult<Vec<(PathBuf, usize)>> {
    let mut files = Vec::new();
    for (label, wnid) in classes.iter().enumerate() {
        let class_dir = root.join("train").join(wnid);
        let images_dir = class_dir.join("images");
        let dir = if images_dir.is_dir() { images_dir } else { class_dir };
        let images: Vec<PathBuf> = list_dir(&dir)?.into_iter().filter(|p| is_image(p)).collect();
        if images.is_empty() {
            return Err(DataError::EmptyClass { path: dir });
        }
        files.extend(images.into_iter().map(|p| (p, label)));
    }
    Ok(files)
}

/// The validation images of `classes`: from `val_annotations.txt`, or from `val/<wnid>/` folders.
fn val_files(root: &Path, classes: &[String]) -> DataResult<Vec<(PathBuf, usize)>> {
    let val = root.join("val");
    let annotations = val.join("val_annotations.txt");
    let label_of: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, w)| (w.as_str(), i)).collect();
    if !annotations.is_file() {
        if classes.iter().all(|w| val.join(w).is_dir()) {
            let mut files = Vec::new();
            for (label, wnid) in classes.iter().enumerate() {
                let dir = val.join(wnid);
                files.extend(list_dir(&dir)?.into_iter().filter(|p| is_image(p)).map(|p| (p, label)));
            }
            return Ok(files);
        }
        return Err(DataError::io(
            &annotations,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "Tiny-ImageNet's validation labels are missing (nor are there val/<wnid>/ folders)",
            ),
        ));
    }
    let known = tiny_imagenet_classes(root)?;
    let text = std::fs::read_to_string(&annotations).map_err(|e| DataError::io(&annotations, e))?;
    let bad = |line: usize, reason: String| DataError::Format {
        path: annotations.clone(),
        format: "Tiny-ImageNet val_annotations.txt",
        reason: format!("line {line}: {reason}"),
    };
    let mut files = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(file), Some(wnid)) = (fields.next(), fields.next()) else {
            return Err(bad(i + 1, format!("expected 'file wnid ...', found {line:?}")));
        };
        if known.binary_search_by(|w| w.as_str().cmp(wnid)).is_err() {
            return Err(bad(i + 1, format!("class {wnid:?} is not in wnids.txt")));
        }
        if let Some(&label) = label_of.get(wnid) {
            files.push((val.join("images").join(file), label));
        }
    }
    if let Some(empty) = (0..classes.len()).find(|c| files.iter().all(|(_, l)| l != c)) {
        return Err(DataError::invalid(format!(
            "{} names no validation image of class {}",
            annotations.display(),
            classes[empty]
        )));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A miniature release: three classes, 4x4 images (one grey), two validation images per class.
    fn release(root: &Path) {
        let wnids = ["n02", "n01", "n03"];
        std::fs::write(root.join("wnids.txt"), wnids.join("\n") + "\n").unwrap();
        for (k, wnid) in wnids.iter().enumerate() {
            let dir = root.join("train").join(wnid).join("images");
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..3 {
                let value = (10 * k + i) as u8;
                image::RgbImage::from_pixel(4, 4, image::Rgb([value, 0, 0]))
                    .save(dir.join(format!("{wnid}_{i}.JPEG")).with_extension("png"))
                    .unwrap();
            }
        }
        image::GrayImage::from_pixel(4, 4, image::Luma([77]))
            .save(root.join("train/n03/images/grey.png"))
            .unwrap();
        let val = root.join("val/images");
        std::fs::create_dir_all(&val).unwrap();
        let mut annotations = String::new();
        for (i, wnid) in ["n01", "n02", "n03", "n03", "n01", "n02"].iter().enumerate() {
            image::RgbImage::from_pixel(4, 4, image::Rgb([i as u8, 1, 2]))
                .save(val.join(format!("val_{i}.png")))
                .unwrap();
            annotations += &format!("val_{i}.png\t{wnid}\t0\t0\t3\t3\n");
        }
        std::fs::write(root.join("val/val_annotations.txt"), annotations).unwrap();
    }

    #[test]
    fn loads_sorted_wnids_converts_grey_and_reads_validation_labels() {
        let dir = tempfile::tempdir().unwrap();
        release(dir.path());
        let train = load_tiny_imagenet(dir.path(), Split::Train, None).unwrap();
        assert_eq!(train.classes(), &["n01", "n02", "n03"]);
        assert_eq!(train.class_counts(), vec![3, 3, 4]);
        // The grey image became RGB with equal planes (its file sorts first among n03's).
        let grey = train.labels().iter().position(|&l| l == 2).unwrap();
        let image = train.image(grey).unwrap();
        assert!(image.iter().all(|&v| v == 77), "{image:?}");
        // Class n01 is the second wnid in the file but label 0; its first image has red value 10.
        assert_eq!(train.image(0).unwrap()[0], 10);

        let test = load_tiny_imagenet(dir.path(), Split::Test, None).unwrap();
        assert_eq!(test.class_counts(), vec![2, 2, 2]);
        let first_n03 = test.labels().iter().position(|&l| l == 2).unwrap();
        assert_eq!(test.image(first_n03).unwrap()[0], 2, "val_2 is n03's first image");

        let first_two = load_tiny_imagenet(dir.path(), Split::Test, Some(2)).unwrap();
        assert_eq!(first_two.classes(), &["n01", "n02"]);
        assert_eq!(first_two.len(), 4);
    }

    #[test]
    fn bad_layouts_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_tiny_imagenet(dir.path(), Split::Train, None).unwrap_err();
        assert!(err.to_string().contains("wnids.txt"), "{err}");
        release(dir.path());
        let err = load_tiny_imagenet(dir.path(), Split::Train, Some(4)).unwrap_err();
        assert!(err.to_string().contains("cannot keep 4 classes"), "{err}");
        let annotations = dir.path().join("val/val_annotations.txt");
        std::fs::write(&annotations, "val_0.png\tn01\n\nval_1.png\tn09\n").unwrap();
        let err = load_tiny_imagenet(dir.path(), Split::Test, None).unwrap_err();
        assert!(
            err.to_string().contains("line 3") && err.to_string().contains("n09"),
            "{err}"
        );
        std::fs::write(&annotations, "val_0.png\n").unwrap();
        let err = load_tiny_imagenet(dir.path(), Split::Test, None).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::write(&annotations, "val_0.png\tn01\nmissing.png\tn02\nval_2.png\tn03\n").unwrap();
        let err = load_tiny_imagenet(dir.path(), Split::Test, None).unwrap_err();
        assert!(err.to_string().contains("missing.png"), "{err}");
        std::fs::remove_file(&annotations).unwrap();
        let err = load_tiny_imagenet(dir.path(), Split::Test, None).unwrap_err();
        assert!(err.to_string().contains("val_annotations.txt"), "{err}");
    }
}
