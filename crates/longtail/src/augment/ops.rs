//! The image operations of AutoAugment and RandAugment with Pillow's arithmetic.
//!
//! The official AT-BSL and RobustLT code augments PIL images with torchvision's `AutoAugment`, so each operation
//! here reproduces what torchvision's `_apply_op` does to a PIL image (nearest-neighbour geometry, float32 blends that
//! truncate, Pillow's luminance weights and 3x3 smoothing kernel), checked pixel for pixel against fixtures written
//! by `tests/augment/generate.py`. Images are planar u8 (CHW); one channel is treated as Pillow's `L` mode.

use super::geometry::{Affine, inverse_affine, rotation};
use crate::dataset::ImageShape;

/// One operation of torchvision's augmentation spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageOp {
    /// No change (RandAugment only).
    Identity,
    /// Horizontal shear by `magnitude` (the tangent of the shear angle), about the top-left corner.
    ShearX,
    /// Vertical shear by `magnitude`, about the top-left corner.
    ShearY,
    /// Horizontal shift by `int(magnitude)` pixels.
    TranslateX,
    /// Vertical shift by `int(magnitude)` pixels.
    TranslateY,
    /// Rotation by `magnitude` degrees (counter-clockwise) about the centre.
    Rotate,
    /// Blend with black by factor `1 + magnitude`.
    Brightness,
    /// Blend with the grey-scale image by factor `1 + magnitude` (saturation).
    Color,
    /// Blend with the mean grey level by factor `1 + magnitude`.
    Contrast,
    /// Blend with Pillow's SMOOTH-filtered image by factor `1 + magnitude`.
    Sharpness,
    /// Keep the `int(magnitude)` high bits of each value.
    Posterize,
    /// Invert the values at or above the threshold `magnitude`.
    Solarize,
    /// Stretch each channel's range to 0..=255.
    AutoContrast,
    /// Equalise each channel's histogram.
    Equalize,
    /// 255 minus each value.
    Invert,
}

impl ImageOp {
    /// torchvision's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "Identity",
            Self::ShearX => "ShearX",
            Self::ShearY => "ShearY",
            Self::TranslateX => "TranslateX",
            Self::TranslateY => "TranslateY",
            Self::Rotate => "Rotate",
            Self::Brightness => "Brightness",
            Self::Color => "Color",
            Self::Contrast => "Contrast",
            Self::Sharpness => "Sharpness",
            Self::Posterize => "Posterize",
            Self::Solarize => "Solarize",
            Self::AutoContrast => "AutoContrast",
            Self::Equalize => "Equalize",
            Self::Invert => "Invert",
        }
    }

    /// The operation torchvision calls `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        ALL.iter().copied().find(|op| op.name() == name)
    }

    /// Whether the augmentation draws a random sign for the magnitude.
    pub fn signed(self) -> bool {
        matches!(
            self,
            Self::ShearX
                | Self::ShearY
                | Self::TranslateX
                | Self::TranslateY
                | Self::Rotate
                | Self::Brightness
                | Self::Color
                | Self::Contrast
                | Self::Sharpness
        )
    }

    /// Magnitude `bin` of `bins` for an image of `height` x `width`, as torchvision's `_augmentation_space` tabulates
    /// it (float32 `linspace`, so the values carry float32 rounding); 0 for operations without a magnitude.
    pub fn magnitude(self, bin: usize, bins: usize, height: usize, width: usize) -> f64 {
        let linspace = |start: f64, end: f64| linspace_f32(start as f32, end as f32, bins, bin) as f64;
        match self {
            Self::ShearX | Self::ShearY => linspace(0.0, 0.3),
            Self::TranslateX => linspace(0.0, 150.0 / 331.0 * width as f64),
            Self::TranslateY => linspace(0.0, 150.0 / 331.0 * height as f64),
            Self::Rotate => linspace(0.0, 30.0),
            Self::Brightness | Self::Color | Self::Contrast | Self::Sharpness => linspace(0.0, 0.9),
            Self::Posterize => {
                let divisor = ((bins - 1) as f64 / 4.0) as f32;
                8.0 - ((bin as f32) / divisor).round_ties_even() as f64
            }
            Self::Solarize => linspace(255.0, 0.0),
            Self::Identity | Self::AutoContrast | Self::Equalize | Self::Invert => 0.0,
        }
    }

    /// Applies the operation with `magnitude` to `image` (CHW u8 of `shape`) in place; `scratch` is reused memory.
    pub fn apply(self, magnitude: f64, image: &mut [u8], shape: ImageShape, scratch: &mut Vec<u8>) {
        debug_assert_eq!(image.len(), shape.len());
        let (h, w) = (shape.height, shape.width);
        match self {
            Self::Identity => {}
            Self::ShearX | Self::ShearY => {
                let degrees = magnitude.atan().to_degrees();
                let shear = if self == Self::ShearX {
                    [degrees, 0.0]
                } else {
                    [0.0, degrees]
                };
                let matrix = inverse_affine([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, shear);
                warp(image, shape, &matrix, scratch);
            }
            Self::TranslateX | Self::TranslateY => {
                // torchvision truncates the shift to whole pixels.
                let shift = magnitude.trunc();
                let translate = if self == Self::TranslateX {
                    [shift, 0.0]
                } else {
                    [0.0, shift]
                };
                let centre = [w as f64 * 0.5, h as f64 * 0.5];
                let matrix = inverse_affine(centre, 0.0, translate, 1.0, [0.0, 0.0]);
                warp(image, shape, &matrix, scratch);
            }
            Self::Rotate => {
                if let Some(matrix) = rotation(magnitude, w, h) {
                    warp(image, shape, &matrix, scratch);
                }
            }
            Self::Brightness => {
                let alpha = (1.0 + magnitude) as f32;
                image.iter_mut().for_each(|v| *v = blend(0, *v, alpha));
            }
            Self::Color => {
                if shape.channels == 3 {
                    let alpha = (1.0 + magnitude) as f32;
                    let plane = h * w;
                    let (r, rest) = image.split_at_mut(plane);
                    let (g, b) = rest.split_at_mut(plane);
                    for i in 0..plane {
                        let grey = luminance(r[i], g[i], b[i]);
                        r[i] = blend(grey, r[i], alpha);
                        g[i] = blend(grey, g[i], alpha);
                        b[i] = blend(grey, b[i], alpha);
                    }
                }
            }
            Self::Contrast => {
                let alpha = (1.0 + magnitude) as f32;
                let mean = mean_luminance(image, shape);
                image.iter_mut().for_each(|v| *v = blend(mean, *v, alpha));
            }
            Self::Sharpness => {
                let alpha = (1.0 + magnitude) as f32;
                scratch.clear();
                scratch.extend_from_slice(image);
                for c in 0..shape.channels {
                    let plane = c * h * w..(c + 1) * h * w;
                    smooth(&scratch[plane.clone()], h, w, &mut image[plane.clone()]);
                    for (out, &original) in image[plane.clone()].iter_mut().zip(&scratch[plane]) {
                        *out = blend(*out, original, alpha);
                    }
                }
            }
            Self::Posterize => {
                let bits = magnitude.trunc().clamp(1.0, 8.0) as u32;
                let mask = !((1u16 << (8 - bits)) - 1) as u8;
                image.iter_mut().for_each(|v| *v &= mask);
            }
            Self::Solarize => image.iter_mut().for_each(|v| {
                if (*v as f64) >= magnitude {
                    *v = 255 - *v;
                }
            }),
            Self::AutoContrast => {
                for plane in image.chunks_mut(h * w) {
                    let lut = autocontrast_table(&histogram(plane));
                    plane.iter_mut().for_each(|v| *v = lut[*v as usize]);
                }
            }
            Self::Equalize => {
                for plane in image.chunks_mut(h * w) {
                    let lut = equalize_table(&histogram(plane));
                    plane.iter_mut().for_each(|v| *v = lut[*v as usize]);
                }
            }
            Self::Invert => image.iter_mut().for_each(|v| *v = 255 - *v),
        }
    }
}

/// Every operation, in declaration order.
pub const ALL: [ImageOp; 15] = [
    ImageOp::Identity,
    ImageOp::ShearX,
    ImageOp::ShearY,
    ImageOp::TranslateX,
    ImageOp::TranslateY,
    ImageOp::Rotate,
    ImageOp::Brightness,
    ImageOp::Color,
    ImageOp::Contrast,
    ImageOp::Sharpness,
    ImageOp::Posterize,
    ImageOp::Solarize,
    ImageOp::AutoContrast,
    ImageOp::Equalize,
    ImageOp::Invert,
];

/// Element `index` of `torch.linspace(start, end, steps)` in float32: PyTorch's CPU kernel counts the first half
/// up from `start` and the second half down from `end`, each with one fused multiply-add (checked against torch
/// 2.15 on an AVX-512 CPU).
pub fn linspace_f32(start: f32, end: f32, steps: usize, index: usize) -> f32 {
    if steps == 1 {
        return start;
    }
    let step = (end - start) / (steps - 1) as f32;
    if index < steps / 2 {
        step.mul_add(index as f32, start)
    } else {
        (-step).mul_add((steps - index - 1) as f32, end)
    }
}

/// Pillow's `Image.blend(degenerate, image, alpha)` for one value: float32 arithmetic, truncated, clipped when
/// extrapolating.
fn blend(degenerate: u8, value: u8, alpha: f32) -> u8 {
    let mixed = degenerate as f32 + alpha * (value as i32 - degenerate as i32) as f32;
    if (0.0..=1.0).contains(&alpha) {
        mixed as u8
    } else if mixed <= 0.0 {
        0
    } else if mixed >= 255.0 {
        255
    } else {
        mixed as u8
    }
}

/// Pillow's RGB to L conversion (ITU-R 601-2 weights in 16-bit fixed point, rounded).
fn luminance(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `int(mean(L) + 0.5)`: the grey level of Pillow's Contrast enhancer.
fn mean_luminance(image: &[u8], shape: ImageShape) -> u8 {
    let plane = shape.height * shape.width;
    let sum: u64 = if shape.channels == 3 {
        (0..plane)
            .map(|i| luminance(image[i], image[plane + i], image[2 * plane + i]) as u64)
            .sum()
    } else {
        image[..plane].iter().map(|&v| v as u64).sum()
    };
    (sum as f64 / plane as f64 + 0.5) as u8
}

/// Pillow's SMOOTH filter (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1 over 13, float32, rounded) on one plane; the border
/// rows and columns are copied unchanged, as Pillow does.
fn smooth(src: &[u8], h: usize, w: usize, out: &mut [u8]) {
    out.copy_from_slice(src);
    if h < 3 || w < 3 {
        return;
    }
    let edge = 1.0f32 / 13.0;
    let centre = 5.0f32 / 13.0;
    let row_sum = |row: &[u8], x: usize, middle: f32| {
        row[x - 1] as f32 * edge + row[x] as f32 * middle + row[x + 1] as f32 * edge
    };
    for y in 1..h - 1 {
        let above = &src[(y - 1) * w..y * w];
        let row = &src[y * w..(y + 1) * w];
        let below = &src[(y + 1) * w..(y + 2) * w];
        for x in 1..w - 1 {
            // Pillow sums the row below first (its kernel is applied flipped); float addition order matters.
            let mut sum = 0.5f32;
            sum += row_sum(below, x, edge);
            sum += row_sum(row, x, centre);
            sum += row_sum(above, x, edge);
            out[y * w + x] = if sum <= 0.0 {
                0
            } else if sum >= 255.0 {
                255
            } else {
                sum as u8
            };
        }
    }
}

fn histogram(plane: &[u8]) -> [u64; 256] {
    let mut counts = [0u64; 256];
    plane.iter().for_each(|&v| counts[v as usize] += 1);
    counts
}

/// `ImageOps.autocontrast` with no cut-off, for one channel.
fn autocontrast_table(counts: &[u64; 256]) -> [u8; 256] {
    let mut lut = identity_table();
    let lo = counts.iter().position(|&c| c > 0);
    let hi = counts.iter().rposition(|&c| c > 0);
    if let (Some(lo), Some(hi)) = (lo, hi)
        && hi > lo
    {
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        for (i, entry) in lut.iter_mut().enumerate() {
            *entry = (i as f64 * scale + offset).trunc().clamp(0.0, 255.0) as u8;
        }
    }
    lut
}

/// `ImageOps.equalize` for one channel.
fn equalize_table(counts: &[u64; 256]) -> [u8; 256] {
    let present: Vec<u64> = counts.iter().copied().filter(|&c| c > 0).collect();
    if present.len() <= 1 {
        return identity_table();
    }
    let step = (present.iter().sum::<u64>() - present[present.len() - 1]) / 255;
    if step == 0 {
        return identity_table();
    }
    let mut lut = [0u8; 256];
    let mut n = step / 2;
    for (entry, &count) in lut.iter_mut().zip(counts) {
        *entry = (n / step).min(255) as u8;
        n += count;
    }
    lut
}

fn identity_table() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// Pillow's nearest-neighbour affine transform with black fill: `matrix` maps output pixel centres to input
/// coordinates.
fn warp(image: &mut [u8], shape: ImageShape, matrix: &Affine, scratch: &mut Vec<u8>) {
    let (h, w) = (shape.height, shape.width);
    scratch.clear();
    scratch.extend_from_slice(image);
    let sources = matrix.nearest_sources(h, w);
    for c in 0..shape.channels {
        let src = &scratch[c * h * w..(c + 1) * h * w];
        let out = &mut image[c * h * w..(c + 1) * h * w];
        for (o, s) in out.iter_mut().zip(&sources) {
            *o = s.map_or(0, |i| src[i as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_truncates_and_clips() {
        assert_eq!(blend(0, 200, 0.5), 100);
        assert_eq!(blend(0, 201, 0.5), 100);
        assert_eq!(blend(0, 200, 1.9), 255);
        assert_eq!(blend(100, 0, 1.5), 0);
        assert_eq!(blend(100, 50, 0.0), 100);
    }

    #[test]
    fn equalize_spreads_two_levels() {
        let mut counts = [0u64; 256];
        counts[10] = 600;
        counts[20] = 424;
        let lut = equalize_table(&counts);
        // step = 600 / 255 = 2; n starts at 1: values up to 10 map to 0, above to (1 + 600) / 2 = 300 -> 255.
        assert_eq!(lut[10], 0);
        assert_eq!(lut[20], 255);
    }

    #[test]
    fn names_round_trip() {
        for op in ALL {
            assert_eq!(ImageOp::from_name(op.name()), Some(op));
        }
        assert_eq!(ImageOp::from_name("Blur"), None);
    }
}
