//! Decoding one image file to the dataset's shape: what an image folder reads up front and a streamed dataset
//! reads per batch.

use std::path::Path;

use crate::error::{DataError, DataResult};

/// How an image file of another size becomes the dataset's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFit {
    /// Resize the shorter side to the target (bilinear), then crop the centre (torchvision's `Resize(s)` +
    /// `CenterCrop(s)`, the usual ImageNet-LT / Places-LT test transform).
    #[default]
    CenterCrop,
    /// Resize to exactly the target, ignoring the aspect ratio.
    Stretch,
}

/// Decodes one file, converts it to `channels` channels and fits it to `height` x `width` by `fit`; planar CHW
/// bytes.
pub(crate) fn decode_fitted(path: &Path, [channels, height, width]: [usize; 3], fit: ImageFit) -> DataResult<Vec<u8>> {
    use image::imageops::FilterType;
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let image = image::load_from_memory(&bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let (th, tw) = (height as u32, width as u32);
    let image = if (image.height(), image.width()) == (th, tw) {
        image
    } else {
        match fit {
            ImageFit::Stretch => image.resize_exact(tw, th, FilterType::Triangle),
            ImageFit::CenterCrop => {
                // Shorter side to the target, then the centre.
                let scale = (th as f64 / image.height() as f64).max(tw as f64 / image.width() as f64);
                let h = ((image.height() as f64 * scale).round() as u32).max(th);
                let w = ((image.width() as f64 * scale).round() as u32).max(tw);
                image
                    .resize_exact(w, h, FilterType::Triangle)
                    .crop_imm((w - tw) / 2, (h - th) / 2, tw, th)
            }
        }
    };
    let interleaved = match channels {
        1 => image.into_luma8().into_raw(),
        _ => image.into_rgb8().into_raw(),
    };
    Ok(planar(&interleaved, channels, (th * tw) as usize))
}

/// HWC (as decoded) -> CHW (as stored).
pub(crate) fn planar(interleaved: &[u8], channels: usize, plane: usize) -> Vec<u8> {
    let mut planar = vec![0u8; interleaved.len()];
    for (pixel, values) in interleaved.chunks_exact(channels).enumerate() {
        for (channel, &value) in values.iter().enumerate() {
            planar[channel * plane + pixel] = value;
        }
    }
    planar
}
