//! List-file datasets as ImageNet-LT, Places-LT and iNaturalist-LT ship them: an image root and one text file per
//! split with `relative/path label` lines (`ImageNet_LT_train.txt`, `Places_LT_test.txt`, ...). Images of any size
//! are fitted to a configured square size; datasets whose decoded pixels would exceed a memory limit (1 GiB by
//! default) stay on disk and are decoded batch by batch.
//!
//! Where the lists are: `ROOT/train.txt` and `ROOT/test.txt`, or the single `ROOT/*_train.txt` / `ROOT/*_test.txt`
//! (the names the LT releases use). Class names come from `ROOT/classes.txt` (one per line, in label order) when it
//! exists, else they are the label numbers; without that file the classes are 0 to the largest training label.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::Split;
use crate::dataset::{ImageDataset, ImageFit, ImageShape};
use crate::decode::decode_fitted;
use crate::error::{DataError, DataResult};

/// Decoded bytes a list-file dataset may hold in memory before it is streamed from disk instead.
pub const MEMORY_LIMIT: usize = 1 << 30;

/// How to read a list-file dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFileOptions {
    /// Height and width every image is fitted to.
    pub size: usize,
    /// How images of another size are fitted.
    pub fit: ImageFit,
    /// Keep only the first K classes.
    pub classes: Option<usize>,
    /// Decoded bytes held in memory at most; larger datasets are streamed.
    pub memory_limit: usize,
}

impl ListFileOptions {
    /// Images fitted to `size` x `size` by centre crop, the first `classes` classes, the default memory limit.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            fit: ImageFit::CenterCrop,
            classes: None,
            memory_limit: MEMORY_LIMIT,
        }
    }
}

/// The list file of `split` in `root`.
pub fn list_path(root: &Path, split: Split) -> DataResult<PathBuf> {
    let name = split.folder_name();
    let plain = root.join(format!("{name}.txt"));
    if plain.is_file() {
        return Ok(plain);
    }
    let suffix = format!("_{name}.txt");
    let entries = std::fs::read_dir(root).map_err(|e| DataError::io(root, e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(DataError::io(
            &plain,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no list of {name} images (expected {name}.txt or one *{suffix})"),
            ),
        )),
        _ => Err(DataError::invalid(format!(
            "{} holds several *{suffix} lists ({}); keep one",
            root.display(),
            found
                .iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The `(path, label)` entries of a list file, paths joined to `root`; every file must exist.
pub fn read_list(list: &Path, root: &Path) -> DataResult<Vec<(PathBuf, usize)>> {
    let text = std::fs::read_to_string(list).map_err(|e| DataError::io(list, e))?;
    let bad = |line: usize, reason: String| DataError::Format {
        path: list.to_path_buf(),
        format: "image list",
        reason: format!("line {line}: {reason}"),
    };
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        // The path may contain spaces; the label is the last field.
        let Some((path, label)) = line.rsplit_once(char::is_whitespace) else {
            return Err(bad(i + 1, format!("expected 'relative/path label', found {line:?}")));
        };
        let label: usize = label
            .parse()
            .map_err(|_| bad(i + 1, format!("the label {label:?} is not a non-negative integer")))?;
        let path = root.join(path.trim());
        if !path.is_file() {
            return Err(bad(i + 1, format!("{} does not exist", path.display())));
        }
        entries.push((path, label));
    }
    if entries.is_empty() {
        return Err(bad(0, "it lists no image".into()));
    }
    Ok(entries)
}

/// Class names: `root/classes.txt`, else the label numbers up to the largest label of the training list.
fn class_names(root: &Path) -> DataResult<Vec<String>> {
    let names = root.join("classes.txt");
    if names.is_file() {
        let text = std::fs::read_to_string(&names).map_err(|e| DataError::io(&names, e))?;
        let classes: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if classes.is_empty() {
            return Err(DataError::invalid(format!("{} names no class", names.display())));
        }
        return Ok(classes);
    }
    let train = read_list(&list_path(root, Split::Train)?, root)?;
    let largest = train.iter().map(|(_, l)| *l).max().unwrap_or(0);
    Ok((0..=largest).map(|c| c.to_string()).collect())
}

/// Loads `split` of the list-file dataset in `root`.
pub fn load_list_file(root: &Path, split: Split, options: &ListFileOptions) -> DataResult<ImageDataset> {
    if !root.is_dir() {
        return Err(DataError::io(
            root,
            std::io::Error::new(std::io::ErrorKind::NotFound, "image root not found"),
        ));
    }
    if options.size == 0 {
        return Err(DataError::invalid("the image size must be at least 1"));
    }
    let mut classes = class_names(root)?;
    let list = list_path(root, split)?;
    let mut entries = read_list(&list, root)?;
    if let Some((path, label)) = entries.iter().find(|(_, l)| *l >= classes.len()) {
        return Err(DataError::invalid(format!(
            "{}: {} has label {label}, unknown: the dataset has {} classes (labels 0 to {})",
            list.display(),
            path.display(),
            classes.len(),
            classes.len() - 1
        )));
    }
    if let Some(k) = options.classes {
        if k == 0 || k > classes.len() {
            return Err(DataError::invalid(format!(
                "cannot keep {k} classes of {}",
                classes.len()
            )));
        }
        classes.truncate(k);
        entries.retain(|(_, l)| *l < k);
    }
    let shape = ImageShape {
        channels: 3,
        height: options.size,
        width: options.size,
    };
    let (files, labels): (Vec<PathBuf>, Vec<usize>) = entries.into_iter().unzip();
    if files.len().saturating_mul(shape.len()) > options.memory_limit {
        return ImageDataset::streamed(files, labels, classes, shape, options.fit);
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|path| decode_fitted(path, shape.chw(), options.fit))
        .collect::<DataResult<_>>()?;
    ImageDataset::new(decoded.concat(), labels, classes, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three classes of 10x6 images (value = 40 * label + index) under `root/img/<label>/`, lists in ImageNet-LT's
    /// naming.
    fn release(root: &Path, train: &[usize], test: &[usize]) {
        for (split, counts) in [("train", train), ("test", test)] {
            let mut list = String::new();
            for (label, &n) in counts.iter().enumerate() {
                let dir = root.join("img").join(label.to_string());
                std::fs::create_dir_all(&dir).unwrap();
                for i in 0..n {
                    let value = (40 * label + i) as u8;
                    let name = format!("{split} {i}.png"); // a space in the name
                    image::RgbImage::from_pixel(10, 6, image::Rgb([value, value, value]))
                        .save(dir.join(&name))
                        .unwrap();
                    list += &format!("img/{label}/{name} {label}\n");
                }
            }
            std::fs::write(root.join(format!("Toy_LT_{split}.txt")), list).unwrap();
        }
    }

    #[test]
    fn loads_fits_and_streams_the_same_pixels() {
        let dir = tempfile::tempdir().unwrap();
        release(dir.path(), &[4, 2, 1], &[1, 1, 1]);
        let options = ListFileOptions::new(4);
        let train = load_list_file(dir.path(), Split::Train, &options).unwrap();
        assert!(!train.is_streamed());
        assert_eq!(train.classes(), &["0", "1", "2"]);
        assert_eq!(train.class_counts(), vec![4, 2, 1]);
        assert_eq!(
            train.shape(),
            ImageShape {
                channels: 3,
                height: 4,
                width: 4
            }
        );
        // A uniform image stays uniform through resize and crop.
        assert!(train.image(5).unwrap().iter().all(|&v| v == 41));
        // Over the memory limit the same dataset streams, with identical pixels.
        let streamed = load_list_file(
            dir.path(),
            Split::Train,
            &ListFileOptions {
                memory_limit: 10,
                ..options.clone()
            },
        )
        .unwrap();
        assert!(streamed.is_streamed());
        for i in 0..train.len() {
            assert_eq!(train.image(i).unwrap(), streamed.image(i).unwrap());
        }
        let kept = streamed.subset(&[6, 0]).unwrap();
        assert!(kept.is_streamed() && kept.labels() == [2, 0]);
        assert_eq!(kept.image(0).unwrap()[0], 80);
        let test = load_list_file(
            dir.path(),
            Split::Test,
            &ListFileOptions {
                classes: Some(2),
                ..options
            },
        )
        .unwrap();
        assert_eq!(test.classes(), &["0", "1"]);
        assert_eq!(test.len(), 2);
    }

    #[test]
    fn a_streamed_dataset_batches_like_an_in_memory_one_and_reports_a_lost_file() {
        use crate::batcher::{BatchLoader, BatchLoaderConfig};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        release(dir.path(), &[4, 2, 1], &[1, 1, 1]);
        let options = ListFileOptions::new(4);
        let memory = load_list_file(dir.path(), Split::Train, &options).unwrap();
        let streamed = load_list_file(
            dir.path(),
            Split::Train,
            &ListFileOptions {
                memory_limit: 0,
                ..options
            },
        )
        .unwrap();
        let batches = |data: ImageDataset| {
            let loader = BatchLoader::new(Arc::new(data), BatchLoaderConfig::training(3).with_batch_size(4)).unwrap();
            loader.host_batches(0).collect::<Vec<_>>()
        };
        let (a, b) = (batches(memory), batches(streamed.clone()));
        assert_eq!(a.len(), 2);
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
            assert_eq!(
                (&x.images, &x.labels),
                (&y.images, &y.labels),
                "augmentation and order are the same"
            );
        }
        std::fs::remove_file(dir.path().join("img/1/train 0.png")).unwrap();
        let outcome = batches(streamed);
        let error = outcome
            .iter()
            .find_map(|b| b.as_ref().err())
            .expect("the lost file ends the epoch");
        assert!(error.to_string().contains("train 0.png"), "{error}");
    }

    #[test]
    fn centre_crop_keeps_the_middle_and_stretch_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        // 8 wide, 4 high: left half black, right half white.
        let path = dir.path().join("half.png");
        image::RgbImage::from_fn(8, 4, |x, _| {
            if x < 4 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255; 3])
            }
        })
        .save(&path)
        .unwrap();
        let shape = ImageShape {
            channels: 3,
            height: 2,
            width: 2,
        };
        let crop = decode_fitted(&path, shape.chw(), ImageFit::CenterCrop).unwrap();
        let stretch = decode_fitted(&path, shape.chw(), ImageFit::Stretch).unwrap();
        // Centre crop of the 4x2 resize: columns 1 and 2, one dark and one light.
        assert!(crop[0] < 128 && crop[1] > 128, "{crop:?}");
        assert!(stretch[0] < 64 && stretch[1] > 192, "{stretch:?}");
    }

    #[test]
    fn bad_lists_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        release(dir.path(), &[2, 1], &[1, 1]);
        let options = ListFileOptions::new(4);
        let err = |split| load_list_file(dir.path(), split, &options).unwrap_err().to_string();
        let test_list = dir.path().join("Toy_LT_test.txt");
        std::fs::write(&test_list, "img/0/test 0.png 0\nimg/1/test 0.png 5\n").unwrap();
        assert!(err(Split::Test).contains("label 5, unknown"), "{}", err(Split::Test));
        std::fs::write(&test_list, "img/0/test 0.png zero\n").unwrap();
        assert!(err(Split::Test).contains("line 1") && err(Split::Test).contains("\"zero\""));
        std::fs::write(&test_list, "img/0/missing.png 0\n").unwrap();
        assert!(err(Split::Test).contains("missing.png does not exist"));
        std::fs::write(&test_list, "justonefield\n").unwrap();
        assert!(err(Split::Test).contains("expected 'relative/path label'"));
        std::fs::write(dir.path().join("Other_LT_test.txt"), "").unwrap();
        assert!(err(Split::Test).contains("several"));
        std::fs::write(dir.path().join("img/0/train 1.png"), b"not an image").unwrap();
        assert!(err(Split::Train).contains("train 1.png"), "{}", err(Split::Train));
        let err = load_list_file(&dir.path().join("nowhere"), Split::Train, &options).unwrap_err();
        assert!(err.to_string().contains("nowhere"));
    }
}
