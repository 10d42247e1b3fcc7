//! Learned augmentation policies on top of crop and flip: AutoAugment with the CIFAR-10 policy and RandAugment,
//! as torchvision defines them (AT-BSL's "AuA" and "RA" variants).

use super::ops::ImageOp;
use crate::dataset::ImageShape;
use crate::rng::SeedStream;

/// Which policy augments each training image before crop and flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentPolicy {
    /// Crop and flip only.
    #[default]
    None,
    /// torchvision's `AutoAugment(AutoAugmentPolicy.CIFAR10)`: one of 25 sub-policies, each two operations applied
    /// with their own probability at a fixed magnitude bin of 10, with a random sign.
    #[serde(rename = "autoaugment", alias = "aua")]
    AutoAugment,
    /// torchvision's `RandAugment(num_ops=2, magnitude=8)` over 31 magnitude bins (AT-BSL's "RA").
    #[serde(rename = "randaugment", alias = "ra")]
    RandAugment,
}

/// One operation of a sub-policy: what, with which probability, at which magnitude bin (of 10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyStep {
    /// The operation.
    pub op: ImageOp,
    /// Probability of applying it.
    pub probability: f64,
    /// Magnitude bin out of 10 (`None` for operations without a magnitude).
    pub bin: Option<usize>,
}

const fn step(op: ImageOp, probability: f64, bin: Option<usize>) -> PolicyStep {
    PolicyStep { op, probability, bin }
}

use ImageOp::*;

/// The 25 sub-policies of `AutoAugmentPolicy.CIFAR10`, in torchvision's order.
pub const CIFAR10_POLICY: [[PolicyStep; 2]; 25] = [
    [step(Invert, 0.1, None), step(Contrast, 0.2, Some(6))],
    [step(Rotate, 0.7, Some(2)), step(TranslateX, 0.3, Some(9))],
    [step(Sharpness, 0.8, Some(1)), step(Sharpness, 0.9, Some(3))],
    [step(ShearY, 0.5, Some(8)), step(TranslateY, 0.7, Some(9))],
    [step(AutoContrast, 0.5, None), step(Equalize, 0.9, None)],
    [step(ShearY, 0.2, Some(7)), step(Posterize, 0.3, Some(7))],
    [step(Color, 0.4, Some(3)), step(Brightness, 0.6, Some(7))],
    [step(Sharpness, 0.3, Some(9)), step(Brightness, 0.7, Some(9))],
    [step(Equalize, 0.6, None), step(Equalize, 0.5, None)],
    [step(Contrast, 0.6, Some(7)), step(Sharpness, 0.6, Some(5))],
    [step(Color, 0.7, Some(7)), step(TranslateX, 0.5, Some(8))],
    [step(Equalize, 0.3, None), step(AutoContrast, 0.4, None)],
    [step(TranslateY, 0.4, Some(3)), step(Sharpness, 0.2, Some(6))],
    [step(Brightness, 0.9, Some(6)), step(Color, 0.2, Some(8))],
    [step(Solarize, 0.5, Some(2)), step(Invert, 0.0, None)],
    [step(Equalize, 0.2, None), step(AutoContrast, 0.6, None)],
    [step(Equalize, 0.2, None), step(Equalize, 0.6, None)],
    [step(Color, 0.9, Some(9)), step(Equalize, 0.6, None)],
    [step(AutoContrast, 0.8, None), step(Solarize, 0.2, Some(8))],
    [step(Brightness, 0.1, Some(3)), step(Color, 0.7, Some(0))],
    [step(Solarize, 0.4, Some(5)), step(AutoContrast, 0.9, None)],
    [step(TranslateY, 0.9, Some(9)), step(TranslateY, 0.7, Some(9))],
    [step(AutoContrast, 0.9, None), step(Solarize, 0.8, Some(3))],
    [step(Equalize, 0.8, None), step(Invert, 0.1, None)],
    [step(TranslateY, 0.7, Some(9)), step(AutoContrast, 0.9, None)],
];

/// AutoAugment's magnitude bins.
pub const AUTOAUGMENT_BINS: usize = 10;

/// RandAugment's operations, in torchvision's order (it draws one uniformly per step).
pub const RANDAUGMENT_OPS: [ImageOp; 14] = [
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
];

/// RandAugment's settings in AT-BSL: two operations at magnitude bin 8 of 31.
pub const RANDAUGMENT_NUM_OPS: usize = 2;
/// See [`RANDAUGMENT_NUM_OPS`].
pub const RANDAUGMENT_MAGNITUDE: usize = 8;
/// See [`RANDAUGMENT_NUM_OPS`].
pub const RANDAUGMENT_BINS: usize = 31;

impl AugmentPolicy {
    /// Augments `image` (CHW u8) in place with draws from `rng`; `scratch` is reused memory.
    pub fn apply(self, image: &mut [u8], shape: ImageShape, rng: &mut SeedStream, scratch: &mut Vec<u8>) {
        match self {
            Self::None => {}
            Self::AutoAugment => {
                let index = rng.below(CIFAR10_POLICY.len() as u64) as usize;
                // torchvision draws both probabilities and both signs up front.
                let draws = [rng.unit_f64(), rng.unit_f64()];
                let positive = [rng.coin(), rng.coin()];
                let applied = [
                    draws[0] <= CIFAR10_POLICY[index][0].probability,
                    draws[1] <= CIFAR10_POLICY[index][1].probability,
                ];
                apply_sub_policy(index, applied, positive, image, shape, scratch);
            }
            Self::RandAugment => {
                for _ in 0..RANDAUGMENT_NUM_OPS {
                    let op = RANDAUGMENT_OPS[rng.below(RANDAUGMENT_OPS.len() as u64) as usize];
                    let mut magnitude =
                        op.magnitude(RANDAUGMENT_MAGNITUDE, RANDAUGMENT_BINS, shape.height, shape.width);
                    if op.signed() && rng.coin() {
                        magnitude = -magnitude;
                    }
                    op.apply(magnitude, image, shape, scratch);
                }
            }
        }
    }
}

/// Applies sub-policy `index` of [`CIFAR10_POLICY`] with the outcome of its coin flips: `applied[i]` says whether
/// step `i` runs, `positive[i]` whether its magnitude keeps its sign.
pub fn apply_sub_policy(
    index: usize,
    applied: [bool; 2],
    positive: [bool; 2],
    image: &mut [u8],
    shape: ImageShape,
    scratch: &mut Vec<u8>,
) {
    for (i, step) in CIFAR10_POLICY[index].iter().enumerate() {
        if !applied[i] {
            continue;
        }
        let mut magnitude = step.bin.map_or(0.0, |bin| {
            step.op.magnitude(bin, AUTOAUGMENT_BINS, shape.height, shape.width)
        });
        if step.op.signed() && !positive[i] {
            magnitude = -magnitude;
        }
        step.op.apply(magnitude, image, shape, scratch);
    }
}
