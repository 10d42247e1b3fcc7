//! Image-folder datasets: `ROOT/train/<class>/*.{png,jpg,jpeg}` and `ROOT/test/<class>/*`.
//!
//! Classes are the sub-folders in sorted order unless a class list is given. Files are decoded in parallel (rayon)
//! and must all have the same size and number of channels.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::Split;
use crate::dataset::{ImageDataset, ImageShape};
use crate::decode::planar;
use crate::error::{DataError, DataResult};

/// How to read an image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolderOptions {
    /// Class folders in label order; `None` means every sub-folder, sorted by name.
    pub classes: Option<Vec<String>>,
    /// Channels every image must have (1 = grey, 3 = RGB).
    pub channels: usize,
    /// Height and width every image must have; `None` takes the first image's size.
    pub size: Option<(usize, usize)>,
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        Self {
            classes: None,
            channels: 3,
            size: None,
        }
    }
}

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub(crate) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|known| e.eq_ignore_ascii_case(known)))
}

pub(crate) fn list_dir(path: &Path) -> DataResult<Vec<PathBuf>> {
    let entries = std::fs::read_dir(path).map_err(|e| DataError::io(path, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(path, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

/// Loads `root/<split>/<class>/*`.
pub fn load_image_folder(root: &Path, split: Split, options: &ImageFolderOptions) -> DataResult<ImageDataset> {
    let split_dir = root.join(split.folder_name());
    if !split_dir.is_dir() {
        return Err(DataError::io(
            &split_dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "expected a folder with one sub-folder per class",
            ),
        ));
    }
    let classes: Vec<String> = match &options.classes {
        Some(classes) => classes.clone(),
        None => list_dir(&split_dir)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
    };
    if classes.is_empty() {
        return Err(DataError::EmptyClass { path: split_dir });
    }
    if options.channels != 1 && options.channels != 3 {
        return Err(DataError::invalid(format!(
            "image folders hold grey (1) or RGB (3) images, not {} channels",
            options.channels
        )));
    }

    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = split_dir.join(class);
        let images: Vec<PathBuf> = list_dir(&class_dir)?.into_iter().filter(|p| is_image(p)).collect();
        if images.is_empty() {
            return Err(DataError::EmptyClass { path: class_dir });
        }
        files.extend(images.into_iter().map(|p| (p, label)));
    }

    assemble(&files, classes, options.channels, options.size, false)
}

/// Decodes `files` (path, label) in parallel into one dataset of `classes`; every image must have the size of
/// `size` (or of the first image). `convert` turns any colour type into `channels` (PIL's `convert("RGB")`), else
/// another channel count is an error.
pub(crate) fn assemble(
    files: &[(PathBuf, usize)],
    classes: Vec<String>,
    channels: usize,
    size: Option<(usize, usize)>,
    convert: bool,
) -> DataResult<ImageDataset> {
    let decoded: Vec<(Vec<u8>, (usize, usize))> = files
        .par_iter()
        .map(|(path, _)| decode_planar(path, channels, convert))
        .collect::<DataResult<_>>()?;
    let Some(first) = decoded.first() else {
        return Err(DataError::invalid("no images to load"));
    };
    let (height, width) = size.unwrap_or(first.1);
    let shape = ImageShape {
        channels,
        height,
        width,
    };
    let mut pixels = Vec::with_capacity(files.len() * shape.len());
    for ((path, _), (planar, size)) in files.iter().zip(&decoded) {
        if *size != (height, width) {
            return Err(DataError::ImageShape {
                path: path.clone(),
                found: format!("{}x{} pixels", size.1, size.0),
                expected: format!("{width}x{height} like the other images"),
            });
        }
        pixels.extend_from_slice(planar);
    }
    let labels = files.iter().map(|(_, label)| *label).collect();
    ImageDataset::new(pixels, labels, classes, shape)
}

/// Decodes one file into planar CHW bytes; returns them with (height, width).
fn decode_planar(path: &Path, channels: usize, convert: bool) -> DataResult<(Vec<u8>, (usize, usize))> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let image = image::load_from_memory(&bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let found = image.color().channel_count() as usize;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let interleaved = match (channels, found) {
        (3, 3) => image.into_rgb8().into_raw(),
        (1, 1) => image.into_luma8().into_raw(),
        (3, _) if convert => image.into_rgb8().into_raw(),
        (1, _) if convert => image.into_luma8().into_raw(),
        _ => {
            return Err(DataError::ImageShape {
                path: path.to_path_buf(),
                found: format!("{found} channels ({:?})", image.color()),
                expected: format!("{channels} channels"),
            });
        }
    };
    Ok((planar(&interleaved, channels, width * height), (height, width)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, width: u32, height: u32, seed: u8) {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([seed, x as u8, y as u8]));
        img.save(path).unwrap();
    }

    fn make_folder(root: &Path, classes: &[(&str, usize)]) {
        for (class, n) in classes {
            let dir = root.join("train").join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..*n {
                write_png(&dir.join(format!("{i:03}.png")), 4, 3, i as u8);
            }
        }
    }

    #[test]
    fn loads_sorted_classes_in_planar_order() {
        let dir = tempfile::tempdir().unwrap();
        make_folder(dir.path(), &[("zebra", 1), ("ant", 2)]);
        let data = load_image_folder(dir.path(), Split::Train, &Default::default()).unwrap();
        assert_eq!(data.classes(), &["ant".to_string(), "zebra".to_string()]);
        assert_eq!(data.labels(), &[0, 0, 1]);
        assert_eq!(
            data.shape(),
            ImageShape {
                channels: 3,
                height: 3,
                width: 4
            }
        );
        // Image 1 of "ant": red plane = 1 everywhere, green plane = x, blue plane = y.
        let img = data.image(1).unwrap();
        assert!(img[..12].iter().all(|&v| v == 1));
        assert_eq!(&img[12..16], &[0, 1, 2, 3]);
        assert_eq!(&img[24..28], &[0, 0, 0, 0]);
        assert_eq!(&img[32..36], &[2, 2, 2, 2]);
    }

    #[test]
    fn explicit_class_list_sets_label_order() {
        let dir = tempfile::tempdir().unwrap();
        make_folder(dir.path(), &[("zebra", 1), ("ant", 2)]);
        let options = ImageFolderOptions {
            classes: Some(vec!["zebra".into(), "ant".into()]),
            ..Default::default()
        };
        let data = load_image_folder(dir.path(), Split::Train, &options).unwrap();
        assert_eq!(data.class_counts(), vec![1, 2]);
    }

    #[test]
    fn empty_class_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        make_folder(dir.path(), &[("ant", 1), ("bee", 0)]);
        let err = load_image_folder(dir.path(), Split::Train, &Default::default()).unwrap_err();
        assert!(
            err.to_string().contains("bee") && err.to_string().contains("no images"),
            "{err}"
        );
    }

    #[test]
    fn wrong_size_and_channels_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        make_folder(dir.path(), &[("ant", 2)]);
        write_png(&dir.path().join("train/ant/odd.png"), 5, 3, 0);
        let err = load_image_folder(dir.path(), Split::Train, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("odd.png"), "{err}");

        std::fs::remove_file(dir.path().join("train/ant/odd.png")).unwrap();
        image::GrayImage::new(4, 3)
            .save(dir.path().join("train/ant/grey.png"))
            .unwrap();
        let err = load_image_folder(dir.path(), Split::Train, &Default::default()).unwrap_err();
        assert!(
            err.to_string().contains("grey.png") && err.to_string().contains("1 channels"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_file_and_missing_folder_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        make_folder(dir.path(), &[("ant", 1)]);
        std::fs::write(dir.path().join("train/ant/bad.jpg"), b"not a jpeg").unwrap();
        let err = load_image_folder(dir.path(), Split::Train, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("bad.jpg"), "{err}");
        let err = load_image_folder(dir.path(), Split::Test, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("test"), "{err}");
    }
}
