//! Training-time augmentation: random crop from a zero-padded image and random horizontal flip (the standard CIFAR
//! recipe, `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`).

use crate::dataset::ImageShape;
use crate::rng::SeedStream;

/// Which augmentations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augmentation {
    /// Zero padding on each side before a crop back to the original size; 0 disables cropping.
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2.
    pub horizontal_flip: bool,
}

impl Default for Augmentation {
    fn default() -> Self {
        Self {
            crop_padding: 4,
            horizontal_flip: true,
        }
    }
}

impl Augmentation {
    /// No change to the image.
    pub fn none() -> Self {
        Self {
            crop_padding: 0,
            horizontal_flip: false,
        }
    }

    /// Writes the augmented image `source` (CHW u8) to `out` (CHW f32 in [0, 1]); `rng` decides the crop and flip.
    pub fn apply(&self, source: &[u8], shape: ImageShape, rng: &mut SeedStream, out: &mut [f32]) {
        let ImageShape {
            channels,
            height,
            width,
        } = shape;
        debug_assert_eq!(source.len(), shape.len());
        debug_assert_eq!(out.len(), shape.len());
        let pad = self.crop_padding as isize;
        let (dy, dx) = if pad > 0 {
            let span = 2 * self.crop_padding as u64 + 1;
            (rng.below(span) as isize - pad, rng.below(span) as isize - pad)
        } else {
            (0, 0)
        };
        let flip = self.horizontal_flip && rng.coin();
        for c in 0..channels {
            let plane = &source[c * height * width..(c + 1) * height * width];
            let out_plane = &mut out[c * height * width..(c + 1) * height * width];
            for y in 0..height {
                let sy = y as isize + dy;
                let row = &mut out_plane[y * width..(y + 1) * width];
                if sy < 0 || sy >= height as isize {
                    row.fill(0.0);
                    continue;
                }
                let src_row = &plane[sy as usize * width..(sy as usize + 1) * width];
                for (x, value) in row.iter_mut().enumerate() {
                    let cx = if flip { width - 1 - x } else { x };
                    let sx = cx as isize + dx;
                    *value = if sx < 0 || sx >= width as isize {
                        0.0
                    } else {
                        src_row[sx as usize] as f32 / 255.0
                    };
                }
            }
        }
    }
}

/// Converts CHW u8 to CHW f32 in [0, 1] without augmentation.
pub fn to_unit_range(source: &[u8], out: &mut [f32]) {
    for (o, &s) in out.iter_mut().zip(source) {
        *o = s as f32 / 255.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ImageShape = ImageShape {
        channels: 1,
        height: 3,
        width: 3,
    };

    fn image() -> Vec<u8> {
        (1..=9).map(|v| v * 10).collect()
    }

    fn run(aug: Augmentation, seed: u64) -> Vec<f32> {
        let mut out = vec![0.0; 9];
        aug.apply(&image(), SHAPE, &mut SeedStream::new(seed), &mut out);
        out
    }

    #[test]
    fn none_is_identity_scaled() {
        let out = run(Augmentation::none(), 0);
        let expected: Vec<f32> = image().iter().map(|&v| v as f32 / 255.0).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn flip_mirrors_rows() {
        let aug = Augmentation {
            crop_padding: 0,
            horizontal_flip: true,
        };
        let outcomes: Vec<Vec<f32>> = (0..16).map(|s| run(aug, s)).collect();
        let mirrored: Vec<f32> = [30, 20, 10, 60, 50, 40, 90, 80, 70]
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect();
        assert!(outcomes.contains(&mirrored));
        assert!(outcomes.contains(&run(Augmentation::none(), 0)));
    }

    #[test]
    fn crop_shifts_in_zero_padding() {
        let aug = Augmentation {
            crop_padding: 1,
            horizontal_flip: false,
        };
        for seed in 0..32 {
            let out = run(aug, seed);
            // Every output pixel is either zero padding or a source pixel; a shift keeps their relative layout.
            let nonzero: Vec<f32> = out.iter().copied().filter(|&v| v > 0.0).collect();
            assert!(nonzero.len() >= 4, "{out:?}");
            for (i, &v) in out.iter().enumerate() {
                if v > 0.0 && i % 3 < 2 && out[i + 1] > 0.0 {
                    assert!((out[i + 1] - v - 10.0 / 255.0).abs() < 1e-6);
                }
            }
        }
        // With padding 1 on a 3x3 image, all nine shifts occur.
        let distinct: std::collections::HashSet<Vec<u32>> = (0..200)
            .map(|s| run(aug, s).iter().map(|v| v.to_bits()).collect())
            .collect();
        assert_eq!(distinct.len(), 9);
    }
}
