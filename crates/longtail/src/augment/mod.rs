//! Training-time augmentation: random crop from a zero-padded image and random horizontal flip (the standard CIFAR
//! recipe, `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`), optionally after a learned policy (AutoAugment
//! or RandAugment, in AT-BSL's and RobustLT's order: policy, crop, flip).

mod geometry;
pub mod ops;
pub mod policy;

pub use ops::ImageOp;
pub use policy::AugmentPolicy;

use crate::dataset::ImageShape;
use crate::rng::SeedStream;

/// Which augmentations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augmentation {
    /// Zero padding on each side before a crop back to the original size; 0 disables cropping.
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2.
    pub horizontal_flip: bool,
    /// A policy applied before crop and flip.
    #[serde(default)]
    pub policy: AugmentPolicy,
}

impl Default for Augmentation {
    fn default() -> Self {
        Self {
            crop_padding: 4,
            horizontal_flip: true,
            policy: AugmentPolicy::None,
        }
    }
}

impl Augmentation {
    /// No change to the image.
    pub fn none() -> Self {
        Self {
            crop_padding: 0,
            horizontal_flip: false,
            policy: AugmentPolicy::None,
        }
    }

    /// `policy`, then crop and flip (the papers' default).
    pub fn with_policy(policy: AugmentPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Writes the augmented image `source` (CHW u8) to `out` (CHW f32 in [0, 1]); `rng` decides the policy's draws,
    /// the crop and the flip, in that order.
    pub fn apply(&self, source: &[u8], shape: ImageShape, rng: &mut SeedStream, out: &mut [f32]) {
        if self.policy == AugmentPolicy::None {
            crop_flip(self, source, shape, rng, out);
            return;
        }
        // The policy works on the u8 image, as on a PIL image, before the crop (AT-BSL's and RobustLT's order:
        // `Compose([AutoAugment(CIFAR10), RandomCrop(32, 4), RandomHorizontalFlip(), ToTensor()])`).
        let mut image = source.to_vec();
        let mut scratch = Vec::with_capacity(shape.len());
        self.policy.apply(&mut image, shape, rng, &mut scratch);
        crop_flip(self, &image, shape, rng, out);
    }
}

/// Writes the cropped (zero-padded) and possibly flipped `source` to `out`, in [0, 1].
fn crop_flip(aug: &Augmentation, source: &[u8], shape: ImageShape, rng: &mut SeedStream, out: &mut [f32]) {
    let ImageShape {
        channels,
        height,
        width,
    } = shape;
    debug_assert_eq!(source.len(), shape.len());
    debug_assert_eq!(out.len(), shape.len());
    let pad = aug.crop_padding as isize;
    let (dy, dx) = if pad > 0 {
        let span = 2 * aug.crop_padding as u64 + 1;
        (rng.below(span) as isize - pad, rng.below(span) as isize - pad)
    } else {
        (0, 0)
    };
    let flip = aug.horizontal_flip && rng.coin();
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
            policy: AugmentPolicy::None,
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
            policy: AugmentPolicy::None,
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

    #[test]
    fn policies_are_reproducible_and_change_images() {
        let shape = ImageShape::CIFAR;
        let source: Vec<u8> = (0..shape.len()).map(|i| ((i * 37) % 251) as u8).collect();
        let augment = |aug: Augmentation, seed: u64| {
            let mut out = vec![0.0; shape.len()];
            aug.apply(&source, shape, &mut SeedStream::new(seed), &mut out);
            out
        };
        for policy in [AugmentPolicy::AutoAugment, AugmentPolicy::RandAugment] {
            let aug = Augmentation::with_policy(policy);
            let mut changed = 0;
            for seed in 0..200 {
                let once = augment(aug, seed);
                assert_eq!(once, augment(aug, seed), "{policy:?} must be reproducible");
                let plain = Augmentation {
                    crop_padding: 0,
                    horizontal_flip: false,
                    policy,
                };
                if augment(plain, seed) != augment(Augmentation::none(), seed) {
                    changed += 1;
                }
            }
            // By the table AutoAugment applies at least one step to 77.7 % of images (a few steps leave this image
            // as it is); RandAugment draws Identity for both steps 1 time in 196. Wrong probabilities or a lost
            // step fall outside these bounds.
            let (lo, hi) = match policy {
                AugmentPolicy::AutoAugment => (125, 170),
                _ => (185, 200),
            };
            assert!(
                (lo..=hi).contains(&changed),
                "{policy:?} changed {changed} of 200 images"
            );
        }
    }

    #[test]
    fn policy_parses_from_config_names() {
        #[derive(serde::Deserialize)]
        struct Holder {
            policy: AugmentPolicy,
        }
        let parse = |text: &str| serde_json::from_str::<Holder>(text).map(|h| h.policy);
        assert_eq!(
            parse(r#"{"policy":"autoaugment"}"#).unwrap(),
            AugmentPolicy::AutoAugment
        );
        assert_eq!(parse(r#"{"policy":"aua"}"#).unwrap(), AugmentPolicy::AutoAugment);
        assert_eq!(
            parse(r#"{"policy":"randaugment"}"#).unwrap(),
            AugmentPolicy::RandAugment
        );
        assert_eq!(parse(r#"{"policy":"none"}"#).unwrap(), AugmentPolicy::None);
        assert!(parse(r#"{"policy":"trivialaugment"}"#).is_err());
    }
}
