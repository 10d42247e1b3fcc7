//! Direct 2D convolution, forward pass, for thin layers: those whose column buffer is large next to the product it
//! feeds (CIFAR's RGB first layer: 27 values written per pixel for 16-64 multiply-adds each; the small CNN that
//! AutoAttack's reference comparison runs). im2col + gemm writes every input value kh x kw times into a buffer and
//! reads it back; Square's 5,000 forward passes spent as much time there as in the products (docs/benchmarks.md).
//! Here each image is copied once into zero-padded planes (split into even and odd columns for stride 2, so that
//! every read is contiguous), and a register block of output channels x output columns accumulates over
//! (input channel, kernel row, kernel column): one vector load feeds `CO_BLOCK` multiply-adds.

use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_flex::FlexTensor;

use crate::conv2d_gemm::{Geometry, for_each_unit, grow, shape4, split_pairs, tensor};

/// Output channels accumulated together: each loaded input vector is multiplied by this many weights.
const CO_BLOCK: usize = 8;
/// Largest `channels_in * kh * kw` taken here: above it the product outweighs im2col's copy and gemm's blocking
/// wins (the small CNN's 32->64 layer, 288, is 20 % slower direct; `examples/conv2d_direct.rs`, docs/benchmarks.md).
const MAX_ROWS: usize = 144;

/// Whether the direct path can compute `g`: ungrouped, undilated, stride 1 or 2, a kernel of at most 7x7.
fn applies(g: &Geometry) -> bool {
    g.groups == 1
        && g.dilation == [1, 1]
        && (1..=2).contains(&g.stride[0])
        && (1..=2).contains(&g.stride[1])
        && g.kernel_h <= 7
        && g.kernel_w <= 7
        && g.out_h > 0
        && g.out_w > 0
}

/// Whether [`crate::Flex`] takes the direct path for `g`: it [`applies`], the layer is thin (at most [`MAX_ROWS`]
/// input values per output value) and its kernel is not 1x1 (a 1x1 layer's column buffer is the input itself, read
/// once: ResNet-18's stride-2 shortcuts ran 2-4x slower direct).
pub(crate) fn pays(g: &Geometry) -> bool {
    applies(g) && g.kernel_h * g.kernel_w > 1 && g.channels_in * g.kernel_h * g.kernel_w <= MAX_ROWS
}

/// The forward pass of an f32 convolution whose geometry passes `rule`; `None` for any other (f64 and half
/// precision keep im2col + gemm).
pub(crate) fn forward_direct(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    options: &ConvOptions<2>,
    rule: fn(&Geometry) -> bool,
) -> Option<FlexTensor> {
    let g = Geometry::new(&shape4(x), &shape4(weight), options);
    if !applies(&g)
        || !rule(&g)
        || x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || bias.is_some_and(|bias| bias.dtype() != DType::F32)
    {
        return None;
    }
    let [x, weight] = [x, weight].map(|tensor| tensor.to_contiguous());
    let bias = bias.map(|bias| bias.to_contiguous());
    let bias = bias.as_ref().map(|b| b.storage::<f32>());
    let y = forward(&g, x.storage(), weight.storage(), bias, Kernel::detect());
    Some(tensor(y, [g.batch, g.channels_out, g.out_h, g.out_w], DType::F32))
}

/// The widest vectors the CPU has, chosen once per convolution.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    /// 16 columns per block in one 512-bit register (8 in a 256-bit one for narrow outputs).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 8 columns per block in one 256-bit register.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain loops (8 columns per block).
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = std::is_x86_feature_detected!("fma");
            if std::is_x86_feature_detected!("avx512f") && fma {
                return Kernel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && fma {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// Output columns per register block for outputs `out_w` wide.
    fn block_w(self, out_w: usize) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if out_w > 8 => 16,
            _ => 8,
        }
    }
}

/// How one image's padded planes are laid out: `[channels_in][stride_w phases][padded rows][width]`; phase `q`
/// holds the padded columns `q, q + s, q + 2s, ...`.
#[derive(Clone, Copy)]
struct Planes {
    phases: usize,
    rows: usize,
    width: usize,
    /// Output columns per register block.
    block_w: usize,
}

impl Planes {
    fn new(g: &Geometry, block_w: usize) -> Self {
        let blocks = g.out_w.div_ceil(block_w);
        let s = g.stride[1];
        // Every block reads `block_w` columns from `kw / s` on: room for the last block of the widest kernel
        // column, and for the padded image itself.
        let width = (blocks * block_w + (g.kernel_w - 1) / s).max((g.in_w + 2 * g.padding[1]).div_ceil(s));
        Self {
            phases: s,
            rows: g.in_h + 2 * g.padding[0],
            width,
            block_w,
        }
    }

    fn plane_len(&self) -> usize {
        self.rows * self.width
    }

    fn channel_len(&self) -> usize {
        self.phases * self.plane_len()
    }

    /// Where each tap (input channel, kernel row, kernel column, in the weights' order) reads, from the block's
    /// first output column in its first row.
    fn tap_offsets(&self, g: &Geometry) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(g.channels_in * g.kernel_h * g.kernel_w);
        let sw = g.stride[1];
        for ci in 0..g.channels_in {
            for kh in 0..g.kernel_h {
                for kw in 0..g.kernel_w {
                    offsets.push(ci * self.channel_len() + (kw % sw) * self.plane_len() + kh * self.width + kw / sw);
                }
            }
        }
        offsets
    }
}

/// Copies one image `[channels_in, in_h, in_w]` into zero-padded, phase-split planes.
fn fill_planes(g: &Geometry, p: &Planes, image: &[f32], planes: &mut [f32]) {
    planes.fill(0.0);
    let (s, pad) = (p.phases, g.padding[1]);
    for ci in 0..g.channels_in {
        let channel = &mut planes[ci * p.channel_len()..(ci + 1) * p.channel_len()];
        for row in 0..g.in_h {
            let src = &image[(ci * g.in_h + row) * g.in_w..][..g.in_w];
            let r = row + g.padding[0];
            match s {
                1 => channel[r * p.width + pad..][..g.in_w].copy_from_slice(src),
                2 => {
                    let (even, odd) = channel.split_at_mut(p.plane_len());
                    split_pairs(
                        src,
                        pad,
                        &mut even[r * p.width..][..p.width],
                        &mut odd[r * p.width..][..p.width],
                    );
                }
                _ => {
                    for q in 0..s {
                        // Input columns c with (c + pad) % s == q, at plane column (c + pad) / s.
                        let first = (q + s - pad % s) % s;
                        let dst = &mut channel[q * p.plane_len() + r * p.width..][..p.width];
                        let t = (first + pad) / s;
                        for (slot, &value) in dst[t..].iter_mut().zip(src.iter().skip(first).step_by(s)) {
                            *slot = value;
                        }
                    }
                }
            }
        }
    }
}

/// Weights regrouped as `[channel blocks][channels_in][kh][kw][CO_BLOCK]` (zeros past `channels_out`), so each
/// tap's `CO_BLOCK` weights are adjacent.
fn pack_weights(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let taps = g.channels_in * g.kernel_h * g.kernel_w;
    let blocks = g.channels_out.div_ceil(CO_BLOCK);
    let mut packed = vec![0.0; blocks * taps * CO_BLOCK];
    for co in 0..g.channels_out {
        let (block, lane) = (co / CO_BLOCK, co % CO_BLOCK);
        for tap in 0..taps {
            packed[(block * taps + tap) * CO_BLOCK + lane] = w[co * taps + tap];
        }
    }
    packed
}

/// `x [batch, channels_in, in_h, in_w]`, `w [channels_out, channels_in, kh, kw]`, `bias [channels_out]` ->
/// `[batch, channels_out, out_h, out_w]`, in parallel over images, with `kernel`'s vectors.
fn forward(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, kernel: Kernel) -> Vec<f32> {
    let out_image = g.channels_out * g.out_h * g.out_w;
    let mut y = vec![0.0f32; g.batch * out_image];
    if y.is_empty() {
        return y;
    }
    let p = Planes::new(g, kernel.block_w(g.out_w));
    let packed = pack_weights(g, w);
    let offsets = p.tap_offsets(g);
    let in_image = g.channels_in * g.in_h * g.in_w;
    for_each_unit(&mut y, out_image, |image, y_image, (planes, _, _)| {
        let planes = grow(planes, g.channels_in * p.channel_len());
        fill_planes(g, &p, &x[image * in_image..][..in_image], planes);
        convolve_image(g, &p, kernel, planes, &offsets, &packed, bias, y_image);
    });
    y
}

/// One image's output from its planes, block by block: `CO_BLOCK` output channels x `block_w` columns of one
/// output row each.
#[allow(clippy::too_many_arguments)]
fn convolve_image(
    g: &Geometry,
    p: &Planes,
    kernel: Kernel,
    planes: &[f32],
    offsets: &[usize],
    packed: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let taps = offsets.len();
    let pixels = g.out_h * g.out_w;
    let bw = p.block_w;
    // Every read is inside `planes`: the last block's base plus the farthest tap plus a block's columns.
    let last_base = (g.out_h - 1) * g.stride[0] * p.width + (g.out_w.div_ceil(bw) - 1) * bw;
    let farthest = offsets.iter().copied().max().unwrap_or(0);
    assert!(
        last_base + farthest + bw <= planes.len(),
        "direct conv2d: planes too short"
    );
    let mut out = [0.0f32; CO_BLOCK * 16];
    for block in 0..g.channels_out.div_ceil(CO_BLOCK) {
        let weights = &packed[block * taps * CO_BLOCK..(block + 1) * taps * CO_BLOCK];
        let first_co = block * CO_BLOCK;
        let channels = CO_BLOCK.min(g.channels_out - first_co);
        let mut start = [0.0f32; CO_BLOCK];
        if let Some(bias) = bias {
            start[..channels].copy_from_slice(&bias[first_co..first_co + channels]);
        }
        for oy in 0..g.out_h {
            for ox in (0..g.out_w).step_by(bw) {
                let base = oy * g.stride[0] * p.width + ox;
                match kernel {
                    // SAFETY: the CPU has the features (`Kernel::detect`); every read, `base + offset + bw` at
                    // most, is inside `planes` (asserted above).
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512 => unsafe { tile_avx512(planes, base, offsets, weights, &start, bw, &mut out) },
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 => unsafe { tile_avx2(planes, base, offsets, weights, &start, &mut out) },
                    Kernel::Portable => tile_portable(planes, base, offsets, weights, &start, &mut out),
                }
                let width = bw.min(g.out_w - ox);
                for lane in 0..channels {
                    let at = (first_co + lane) * pixels + oy * g.out_w + ox;
                    y[at..at + width].copy_from_slice(&out[lane * bw..lane * bw + width]);
                }
            }
        }
    }
}

/// One block with 512-bit registers (`bw` 16) or 256-bit ones (`bw` 8): `out[lane * bw + column]`.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA; `base + offset + bw <= planes.len()` for every offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_avx512(
    planes: &[f32],
    base: usize,
    offsets: &[usize],
    weights: &[f32],
    start: &[f32; CO_BLOCK],
    bw: usize,
    out: &mut [f32; CO_BLOCK * 16],
) {
    use core::arch::x86_64::*;
    let from = planes.as_ptr().wrapping_add(base);
    if bw == 16 {
        let mut acc: [__m512; CO_BLOCK] = core::array::from_fn(|lane| _mm512_set1_ps(start[lane]));
        for (&offset, w) in offsets.iter().zip(weights.chunks_exact(CO_BLOCK)) {
            // SAFETY: inside `planes` (the caller's contract).
            let v = unsafe { _mm512_loadu_ps(from.add(offset)) };
            for (a, &weight) in acc.iter_mut().zip(w) {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(weight), v, *a);
            }
        }
        for (lane, a) in acc.iter().enumerate() {
            // SAFETY: `out` holds CO_BLOCK x 16 values.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(lane * 16), *a) };
        }
    } else {
        let mut acc: [__m256; CO_BLOCK] = core::array::from_fn(|lane| _mm256_set1_ps(start[lane]));
        for (&offset, w) in offsets.iter().zip(weights.chunks_exact(CO_BLOCK)) {
            // SAFETY: inside `planes` (the caller's contract).
            let v = unsafe { _mm256_loadu_ps(from.add(offset)) };
            for (a, &weight) in acc.iter_mut().zip(w) {
                *a = _mm256_fmadd_ps(_mm256_set1_ps(weight), v, *a);
            }
        }
        for (lane, a) in acc.iter().enumerate() {
            // SAFETY: `out` holds CO_BLOCK x 16 values.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(lane * 8), *a) };
        }
    }
}

/// One block of 8 columns with 256-bit registers: `out[lane * 8 + column]`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `base + offset + 8 <= planes.len()` for every offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    planes: &[f32],
    base: usize,
    offsets: &[usize],
    weights: &[f32],
    start: &[f32; CO_BLOCK],
    out: &mut [f32; CO_BLOCK * 16],
) {
    use core::arch::x86_64::*;
    let from = planes.as_ptr().wrapping_add(base);
    let mut acc: [__m256; CO_BLOCK] = core::array::from_fn(|lane| _mm256_set1_ps(start[lane]));
    for (&offset, w) in offsets.iter().zip(weights.chunks_exact(CO_BLOCK)) {
        // SAFETY: inside `planes` (the caller's contract).
        let v = unsafe { _mm256_loadu_ps(from.add(offset)) };
        for (a, &weight) in acc.iter_mut().zip(w) {
            *a = _mm256_fmadd_ps(_mm256_set1_ps(weight), v, *a);
        }
    }
    for (lane, a) in acc.iter().enumerate() {
        // SAFETY: `out` holds CO_BLOCK x 16 values.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(lane * 8), *a) };
    }
}

/// One block of 8 columns in plain loops (CPUs without AVX2 and FMA): `out[lane * 8 + column]`.
fn tile_portable(
    planes: &[f32],
    base: usize,
    offsets: &[usize],
    weights: &[f32],
    start: &[f32; CO_BLOCK],
    out: &mut [f32; CO_BLOCK * 16],
) {
    let mut acc = [[0.0f32; 8]; CO_BLOCK];
    for (row, &value) in acc.iter_mut().zip(start) {
        *row = [value; 8];
    }
    for (&offset, w) in offsets.iter().zip(weights.chunks_exact(CO_BLOCK)) {
        let v = &planes[base + offset..base + offset + 8];
        for (row, &weight) in acc.iter_mut().zip(w) {
            for (a, &value) in row.iter_mut().zip(v) {
                *a += weight * value;
            }
        }
    }
    for (lane, row) in acc.iter().enumerate() {
        out[lane * 8..lane * 8 + 8].copy_from_slice(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv2d_gemm::tests::{reference, values};

    fn narrow(values: Vec<f64>) -> Vec<f32> {
        values.into_iter().map(|v| v as f32).collect()
    }

    fn wide(values: &[f32]) -> Vec<f64> {
        values.iter().map(|&v| v as f64).collect()
    }

    fn check(x_shape: [usize; 4], w_shape: [usize; 4], stride: usize, padding: [usize; 2], with_bias: bool) {
        let options = ConvOptions::new([stride, stride], padding, [1, 1], 1);
        let g = Geometry::new(&x_shape, &w_shape, &options);
        assert!(applies(&g));
        let x = narrow(values(x_shape.iter().product(), 1));
        let w = narrow(values(w_shape.iter().product(), 2));
        let bias = with_bias.then(|| narrow(values(w_shape[0], 3)));
        // The definition in f64 on the same f32 values, plus the bias.
        let pixels = g.out_h * g.out_w;
        let no_gradient = vec![0.0; g.batch * g.channels_out * pixels];
        let (mut want, _, _) = reference(&g, &wide(&x), &wide(&w), &no_gradient);
        if let Some(bias) = &bias {
            for (i, y) in want.iter_mut().enumerate() {
                *y += bias[(i / pixels) % g.channels_out] as f64;
            }
        }
        // The kernel this CPU picks, and the portable one whatever it picks.
        for kernel in [Kernel::detect(), Kernel::Portable] {
            let got = forward(&g, &x, &w, bias.as_deref(), kernel);
            assert_eq!(got.len(), want.len());
            for (i, (&got, &want)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{kernel:?} {x_shape:?} {w_shape:?} stride {stride} padding {padding:?}: element {i} is {got}, \
                     the definition {want}"
                );
            }
        }
    }

    #[test]
    fn matches_the_definition() {
        // The small CNN's three layers and ResNet-18's first, a few images each.
        check([2, 3, 32, 32], [16, 3, 3, 3], 1, [1, 1], false);
        check([3, 16, 32, 32], [32, 16, 3, 3], 2, [1, 1], true);
        check([2, 32, 16, 16], [64, 32, 3, 3], 2, [1, 1], false);
        check([1, 3, 32, 32], [64, 3, 3, 3], 1, [1, 1], true);
        // Odd sides, channels not a multiple of the block, no padding, padding 2, a 1x1, a 5x5 and a 7x7 kernel,
        // outputs narrower than a vector and wider than two.
        check([2, 5, 7, 9], [11, 5, 3, 3], 1, [1, 1], true);
        check([1, 4, 9, 11], [3, 4, 3, 3], 2, [0, 0], false);
        check([2, 3, 10, 37], [9, 3, 3, 3], 2, [2, 2], true);
        check([1, 6, 8, 8], [10, 6, 1, 1], 2, [0, 0], true);
        check([1, 2, 12, 13], [5, 2, 5, 5], 1, [2, 1], false);
        check([1, 3, 15, 15], [4, 3, 7, 7], 2, [3, 3], true);
        check([1, 1, 3, 40], [2, 1, 3, 3], 1, [1, 1], false);
    }
}
