//! 2D convolution, its input gradient and its weight gradient as im2col + gemm over column
//! tiles that span images.
//!
//! burn-flex 0.21 multiplies one image at a time: at 4x4 pixels (the last stage of a CIFAR ResNet) each product
//! has 16 columns and re-reads the whole weight matrix, the input gradient goes through a single-threaded col2im,
//! and the weight gradient is a convolution of the batch-transposed input whose "kernel" is the whole output
//! gradient (9 output columns per product). Here the columns of every product are output pixels of the batch
//! (`column = image * pixels + pixel`), so each product is large whatever the image size:
//!
//! - forward: `y[:, cols] = W[c_out, K] @ col[K, cols]`;
//! - input gradient: `col[K, cols] = W^T @ dy[:, cols]`, then col2im adds the columns back into `dx`;
//! - weight gradient: `dW[c_out, K] = sum over tiles of dy[:, cols] @ col[K, cols]^T`,
//!
//! with `K = channels_in / groups * kernel_h * kernel_w` and `col` built straight from the NCHW input (no layout
//! copy). Work is split into units of whole images (so col2im never writes another unit's images), one unit per
//! thread where the batch allows; inside a unit, tiles are sized to keep the column buffer near the cache.
//! The weight gradient sums a fixed number of partial products (one per thread) in order, so a run repeats
//! bit for bit on the same machine.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::ops::Add;
use std::thread::LocalKey;

use burn_backend::ops::ConvOptions;
use burn_backend::ops::conv::calculate_conv_output_size;
use burn_backend::{DType, Element};
use burn_std::{Bytes, Shape, bf16, f16};

use burn_flex::{FlexTensor, Layout};

use crate::simd::widest_vectors;

/// Column-buffer size a tile aims at; the product then streams its columns from cache.
pub(crate) const TILE_BYTES: usize = 4 << 20;
/// Fewest and most output columns per product.
const MIN_TILE_COLUMNS: usize = 64;
const MAX_TILE_COLUMNS: usize = 1024;

/// The element types gemm multiplies natively.
pub(crate) trait ConvElement:
    Element + bytemuck::Pod + Copy + Send + Sync + Add<Output = Self> + 'static
{
    const ZERO: Self;
    const ONE: Self;

    /// This thread's work buffers for this element type (see [`with_buffers`]).
    fn buffers() -> &'static LocalKey<Cell<Buffers<Self>>>;
}

macro_rules! conv_element {
    ($t:ty, $zero:expr, $one:expr) => {
        impl ConvElement for $t {
            const ZERO: Self = $zero;
            const ONE: Self = $one;

            fn buffers() -> &'static LocalKey<Cell<Buffers<Self>>> {
                std::thread_local!(static BUFFERS: Cell<Buffers<$t>> = const { Cell::new((Vec::new(), Vec::new(), Vec::new())) });
                &BUFFERS
            }
        }
    };
}

conv_element!(f32, 0.0, 1.0);
conv_element!(f64, 0.0, 1.0);
conv_element!(f16, f16::ZERO, f16::ONE);

/// Three work buffers (column tiles, product tiles, a transform's rows), grown with [`grow`].
pub(crate) type Buffers<T> = (Vec<T>, Vec<T>, Vec<T>);

/// Runs `f` with this thread's work buffers, kept between convolutions. Fresh buffers per call (per rayon job)
/// were allocated and zero-filled every time, past 128 KiB through mmap and a page fault per 4 KiB: a tenth of
/// AutoAttack's time on the small CNN. A nested call on the same thread (rayon runs another unit while a product
/// waits) finds empty buffers and allocates its own.
pub(crate) fn with_buffers<T: ConvElement, R>(f: impl FnOnce(&mut Buffers<T>) -> R) -> R {
    let mut buffers = T::buffers().take();
    let result = f(&mut buffers);
    T::buffers().set(buffers);
    result
}

/// Shapes and options of one 2D convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) batch: usize,
    pub(crate) channels_in: usize,
    pub(crate) in_h: usize,
    pub(crate) in_w: usize,
    pub(crate) channels_out: usize,
    pub(crate) kernel_h: usize,
    pub(crate) kernel_w: usize,
    pub(crate) stride: [usize; 2],
    pub(crate) padding: [usize; 2],
    pub(crate) dilation: [usize; 2],
    pub(crate) groups: usize,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
}

impl Geometry {
    /// `x_shape`: `[batch, channels_in, in_h, in_w]`; `w_shape`: `[channels_out, channels_in / groups, kh, kw]`.
    pub(crate) fn new(x_shape: &[usize], w_shape: &[usize], options: &ConvOptions<2>) -> Self {
        let out_h = calculate_conv_output_size(
            w_shape[2],
            options.stride[0],
            options.padding[0],
            options.dilation[0],
            x_shape[2],
        );
        let out_w = calculate_conv_output_size(
            w_shape[3],
            options.stride[1],
            options.padding[1],
            options.dilation[1],
            x_shape[3],
        );
        let geometry = Self {
            batch: x_shape[0],
            channels_in: x_shape[1],
            in_h: x_shape[2],
            in_w: x_shape[3],
            channels_out: w_shape[0],
            kernel_h: w_shape[2],
            kernel_w: w_shape[3],
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
            groups: options.groups,
            out_h,
            out_w,
        };
        assert!(
            geometry.groups > 0
                && geometry.channels_in.is_multiple_of(geometry.groups)
                && geometry.channels_out.is_multiple_of(geometry.groups)
                && w_shape[1] * geometry.groups == geometry.channels_in,
            "conv2d: {x_shape:?} input and {w_shape:?} weight do not match {} groups",
            geometry.groups
        );
        [geometry.batch, geometry.channels_out, out_h, out_w]
            .iter()
            .chain(&[geometry.channels_in, geometry.in_h, geometry.in_w])
            .try_fold(1usize, |size, &dim| size.checked_mul(dim))
            .expect("conv2d: tensor sizes overflow");
        geometry
    }

    fn pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    fn columns(&self) -> usize {
        self.batch * self.pixels()
    }

    fn in_per_group(&self) -> usize {
        self.channels_in / self.groups
    }

    fn out_per_group(&self) -> usize {
        self.channels_out / self.groups
    }

    /// Rows of a column buffer: one per (input channel of the group, kernel row, kernel column).
    fn rows(&self) -> usize {
        self.in_per_group() * self.kernel_h * self.kernel_w
    }

    fn image_len(&self) -> usize {
        self.channels_in * self.in_h * self.in_w
    }

    /// Columns per product: the column buffer near `TILE_BYTES`.
    fn tile_columns<T>(&self) -> usize {
        (TILE_BYTES / (self.rows() * core::mem::size_of::<T>()).max(1)).clamp(MIN_TILE_COLUMNS, MAX_TILE_COLUMNS)
    }

    /// Images per unit of parallel work: a multiple of the thread count of units (so no thread waits on a last,
    /// lone unit), each of at most a few tiles.
    fn images_per_unit<T>(&self, threads: usize) -> usize {
        let threads = threads.max(1);
        let rounds = self.columns().div_ceil(threads * 4 * self.tile_columns::<T>()).max(1);
        self.batch.div_ceil(threads * rounds).max(1)
    }

    /// Input row read by output row `oh` at kernel row `kh`, if inside the image.
    fn input_row(&self, oh: usize, kh: usize) -> Option<usize> {
        let row = oh * self.stride[0] + kh * self.dilation[0];
        row.checked_sub(self.padding[0]).filter(|&row| row < self.in_h)
    }

    /// Output columns `[lo, hi)` whose input column at kernel column `kw` is inside the image.
    fn valid_out_columns(&self, kw: usize) -> (usize, usize) {
        let offset = kw * self.dilation[1];
        let stride = self.stride[1];
        let pad = self.padding[1];
        let lo = if offset >= pad {
            0
        } else {
            (pad - offset).div_ceil(stride)
        };
        let hi = (self.in_w + pad)
            .checked_sub(offset)
            .map_or(0, |room| room.div_ceil(stride))
            .min(self.out_w);
        (lo.min(hi), hi)
    }

    /// Input column read by output column `ow` at kernel column `kw` (inside `valid_out_columns`).
    fn input_column(&self, ow: usize, kw: usize) -> usize {
        ow * self.stride[1] + kw * self.dilation[1] - self.padding[1]
    }
}

/// Calls `f(image, first pixel, length, offset in the tile)` for each image's run of pixels in `[start, end)`.
fn for_each_image_run(g: &Geometry, start: usize, end: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let pixels = g.pixels();
    let mut column = start;
    while column < end {
        let image = column / pixels;
        let pixel = column % pixels;
        let len = (pixels - pixel).min(end - column);
        f(image, pixel, len, column - start);
        column += len;
    }
}

/// One run of a column-buffer row: output pixels `[at, at + len)` of the tile, on one output row of one image.
struct PatchRun {
    at: usize,
    len: usize,
    /// Start of the input row the kernel row reads (in the unit's images), or `None` when it falls in the padding.
    input_row: Option<usize>,
    /// Offsets in the run whose input column is inside the image.
    inside: core::ops::Range<usize>,
    /// Input column read at `inside.start`.
    first_input_column: usize,
}

/// The runs of row `row` (input channel of `group`, kernel row, kernel column) of the column buffer of output columns
/// `[start, end)`, one per output row; the input holds whole images from `first_image` on. Divisions once, then
/// counters (a run is only 8-32 pixels in a CIFAR network).
struct PatchRuns<'a> {
    g: &'a Geometry,
    /// Offset of the channel's first input row in the unit's images.
    channel_offset: usize,
    kh: usize,
    kw: usize,
    /// Output columns whose input column at `kw` is inside the image.
    valid: (usize, usize),
    image: usize,
    oh: usize,
    ow: usize,
    at: usize,
    n: usize,
}

impl<'a> PatchRuns<'a> {
    #[inline(always)]
    fn new(g: &'a Geometry, first_image: usize, group: usize, row: usize, start: usize, end: usize) -> Self {
        let kernel = g.kernel_h * g.kernel_w;
        let channel = group * g.in_per_group() + row / kernel;
        let kw = row % g.kernel_w;
        let (pixels, first) = (g.pixels(), start.min(end));
        let pixel = first % pixels;
        Self {
            g,
            channel_offset: (channel * g.in_h) * g.in_w,
            kh: (row % kernel) / g.kernel_w,
            kw,
            valid: g.valid_out_columns(kw),
            // Image counted from the unit's first, as the input slice starts there.
            image: first / pixels - first_image,
            oh: pixel / g.out_w,
            ow: pixel % g.out_w,
            at: 0,
            n: end.saturating_sub(start),
        }
    }
}

impl Iterator for PatchRuns<'_> {
    type Item = PatchRun;

    #[inline(always)]
    fn next(&mut self) -> Option<PatchRun> {
        if self.at >= self.n {
            return None;
        }
        let g = self.g;
        let (ow, len) = (self.ow, (g.out_w - self.ow).min(self.n - self.at));
        let input_row = g
            .input_row(self.oh, self.kh)
            .map(|ih| self.image * g.image_len() + self.channel_offset + ih * g.in_w);
        let (first, last) = (self.valid.0.clamp(ow, ow + len), self.valid.1.clamp(ow, ow + len));
        let run = PatchRun {
            at: self.at,
            len,
            input_row,
            inside: first - ow..last - ow,
            first_input_column: if first < last {
                g.input_column(first, self.kw)
            } else {
                0
            },
        };
        self.at += len;
        self.ow = 0;
        self.oh += 1;
        if self.oh == g.out_h {
            self.oh = 0;
            self.image += 1;
        }
        Some(run)
    }
}

widest_vectors! {
    /// `col[rows, end - start]` (row-major): the input patches of output columns `[start, end)` for `group`.
    /// `x` holds whole images from image `first_image` on. Compiled again for AVX-512 and AVX2, chosen at run
    /// time: the stride-2 gather's blocks then become one permute of two vectors instead of eight scalar copies.
    fn im2col<T: ConvElement>(
        g: &Geometry,
        x: &[T],
        first_image: usize,
        group: usize,
        start: usize,
        end: usize,
        col: &mut [T],
    ) {
        im2col_any(g, x, first_image, group, start, end, col)
    }
}

#[inline(always)]
fn im2col_any<T: ConvElement>(
    g: &Geometry,
    x: &[T],
    first_image: usize,
    group: usize,
    start: usize,
    end: usize,
    col: &mut [T],
) {
    let n = end - start;
    for (row, dst) in col[..g.rows() * n].chunks_exact_mut(n).enumerate() {
        for run in PatchRuns::new(g, first_image, group, row, start, end) {
            let out = &mut dst[run.at..run.at + run.len];
            let Some(row_start) = run.input_row else {
                out.fill(T::ZERO);
                continue;
            };
            out[..run.inside.start].fill(T::ZERO);
            out[run.inside.end..].fill(T::ZERO);
            if !run.inside.is_empty() {
                let src = &x[row_start + run.first_input_column..row_start + g.in_w];
                gather(&mut out[run.inside], src, g.stride[1]);
            }
        }
    }
}

/// `out[i] = src[i * stride]`.
#[inline(always)]
fn gather<T: ConvElement>(out: &mut [T], src: &[T], stride: usize) {
    if stride == 1 {
        out.copy_from_slice(&src[..out.len()]);
    } else if stride == 2 {
        // Blocks of 8 outputs from 16 inputs, a fixed size the compiler turns into vector loads and shuffles: a run
        // is often only 8 pixels (a 16x16 input at stride 2), too short for the loop vectoriser, and indexed reads
        // were 19 % of Square's time on the small CNN's stride-2 layer.
        debug_assert!(src.len() + 1 >= 2 * out.len());
        let blocks = (out.len() / 8).min(src.len() / 16);
        for (block, pairs) in out[..blocks * 8].chunks_exact_mut(8).zip(src.chunks_exact(16)) {
            let block: &mut [T; 8] = block.try_into().expect("8 outputs");
            let pairs: &[T; 16] = pairs.try_into().expect("16 inputs");
            for (i, value) in block.iter_mut().enumerate() {
                *value = pairs[2 * i];
            }
        }
        for i in blocks * 8..out.len() {
            out[i] = src[2 * i];
        }
    } else if let Some(last) = out.len().checked_sub(1) {
        // Indexed reads from a slice cut to the last one read: no bounds checks in the loop.
        let src = &src[..last * stride + 1];
        for (i, value) in out.iter_mut().enumerate() {
            *value = src[i * stride];
        }
    }
}

/// Adds `col[rows, end - start]` back into the input gradient `dx` (whole images from `first_image` on).
fn col2im_add<T: ConvElement>(
    g: &Geometry,
    col: &[T],
    first_image: usize,
    group: usize,
    start: usize,
    end: usize,
    dx: &mut [T],
) {
    let n = end - start;
    let stride = g.stride[1];
    for (row, src) in col[..g.rows() * n].chunks_exact(n).enumerate() {
        for run in PatchRuns::new(g, first_image, group, row, start, end) {
            let Some(row_start) = run.input_row else {
                continue;
            };
            let values = &src[run.at + run.inside.start..run.at + run.inside.end];
            let Some(last) = values.len().checked_sub(1) else {
                continue;
            };
            // Cut to the last element written, so the loops carry no bounds checks.
            let from = row_start + run.first_input_column;
            let dst = &mut dx[from..from + last * stride + 1];
            if stride == 1 {
                for (d, &v) in dst.iter_mut().zip(values) {
                    *d = *d + v;
                }
            } else {
                for (i, &v) in values.iter().enumerate() {
                    dst[i * stride] = dst[i * stride] + v;
                }
            }
        }
    }
}

/// `tile[out_per_group, end - start]`: the output gradient of `group` at columns `[start, end)`.
fn gather_output<T: ConvElement>(g: &Geometry, dy: &[T], group: usize, start: usize, end: usize, tile: &mut [T]) {
    let n = end - start;
    let pixels = g.pixels();
    for (local, dst) in tile[..g.out_per_group() * n].chunks_exact_mut(n).enumerate() {
        let channel = group * g.out_per_group() + local;
        for_each_image_run(g, start, end, |image, pixel, len, at| {
            let from = (image * g.channels_out + channel) * pixels + pixel;
            dst[at..at + len].copy_from_slice(&dy[from..from + len]);
        });
    }
}

/// Writes `tile[out_per_group, end - start]` (plus the bias) into the output `y` (whole images from `first_image`).
#[allow(clippy::too_many_arguments)]
fn scatter_output<T: ConvElement>(
    g: &Geometry,
    tile: &[T],
    bias: Option<&[T]>,
    first_image: usize,
    group: usize,
    start: usize,
    end: usize,
    y: &mut [T],
) {
    let n = end - start;
    let pixels = g.pixels();
    for (local, src) in tile[..g.out_per_group() * n].chunks_exact(n).enumerate() {
        let channel = group * g.out_per_group() + local;
        let shift = bias.map(|bias| bias[channel]);
        for_each_image_run(g, start, end, |image, pixel, len, at| {
            let to = ((image - first_image) * g.channels_out + channel) * pixels + pixel;
            let dst = &mut y[to..to + len];
            match shift {
                None => dst.copy_from_slice(&src[at..at + len]),
                Some(shift) => {
                    for (d, &v) in dst.iter_mut().zip(&src[at..at + len]) {
                        *d = v + shift;
                    }
                }
            }
        });
    }
}

/// `dst[m, n] = (read ? dst : 0) + lhs @ rhs`, every operand given by its row and column strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product<T: ConvElement>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    read: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) {
    debug_assert!(dst.len() >= m * n);
    debug_assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    let parallelism = if parallel && m * n * k >= 64 * 64 * 64 {
        parallelism_all()
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the strides address `m x k`, `k x n` and `m x n` elements inside the three slices (checked above in
    // debug builds, by construction at every call site); `dst` does not alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            read,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(feature = "rayon")]
fn parallelism_all() -> gemm::Parallelism {
    gemm::Parallelism::Rayon(0)
}

#[cfg(not(feature = "rayon"))]
fn parallelism_all() -> gemm::Parallelism {
    gemm::Parallelism::None
}

pub(crate) fn threads() -> usize {
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "rayon"))]
    {
        1
    }
}

/// Runs `f(unit index, unit's chunk, this thread's work buffers)` on `data.chunks_mut(chunk)`, in parallel with rayon.
pub(crate) fn for_each_unit<T: ConvElement>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T], &mut Buffers<T>) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(unit, part)| with_buffers(|buffers| f(unit, part, buffers)));
    }
    #[cfg(not(feature = "rayon"))]
    for (unit, part) in data.chunks_mut(chunk).enumerate() {
        with_buffers(|buffers| f(unit, part, buffers));
    }
}

pub(crate) fn grow<T: ConvElement>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::ZERO);
    }
    &mut buffer[..len]
}

/// Column `c + pad` of `src` goes to `even` or `odd` (by its parity) at column `(c + pad) / 2`, in one pass over
/// pairs that the compiler turns into vector shuffles (an element-by-element strided copy was 15 % of Square's time
/// on the small CNN): the direct path's stride-2 planes and Winograd's output-gradient columns.
#[inline(always)]
pub(crate) fn split_pairs<T: Copy>(src: &[T], pad: usize, even: &mut [T], odd: &mut [T]) {
    let (mut src, mut column) = (src, pad);
    if column % 2 == 1 {
        let Some((&first, rest)) = src.split_first() else {
            return;
        };
        odd[column / 2] = first;
        (src, column) = (rest, column + 1);
    }
    let (base, pairs) = (column / 2, src.len() / 2);
    let (even_part, odd_part) = (&mut even[base..base + pairs], &mut odd[base..base + pairs]);
    for ((e, o), pair) in even_part.iter_mut().zip(odd_part.iter_mut()).zip(src.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
    if src.len() % 2 == 1 {
        even[base + pairs] = src[src.len() - 1];
    }
}

/// Forward: `x [batch, channels_in, in_h, in_w]`, `w [channels_out, channels_in / groups, kh, kw]`,
/// `bias [channels_out]` -> `[batch, channels_out, out_h, out_w]`.
pub(crate) fn forward<T: ConvElement>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let mut y = vec![T::ZERO; g.batch * g.channels_out * g.pixels()];
    if y.is_empty() {
        return y;
    }
    let threads = threads();
    let images = g.images_per_unit::<T>(threads);
    let tile = g.tile_columns::<T>();
    let parallel_product = g.batch.div_ceil(images) < threads;
    let (rows, out_per_group, pixels) = (g.rows(), g.out_per_group(), g.pixels());
    for_each_unit(
        &mut y,
        images * g.channels_out * pixels,
        |unit, y_unit, (col, out, _)| {
            let first_image = unit * images;
            let x_unit = &x[first_image * g.image_len()..];
            let unit_start = first_image * pixels;
            let unit_end = unit_start + y_unit.len() / g.channels_out;
            for start in (unit_start..unit_end).step_by(tile) {
                let end = (start + tile).min(unit_end);
                let n = end - start;
                for group in 0..g.groups {
                    let col = grow(col, rows * n);
                    im2col(g, x_unit, first_image, group, start, end, col);
                    let out = grow(out, out_per_group * n);
                    let w_group = &w[group * out_per_group * rows..(group + 1) * out_per_group * rows];
                    product(
                        (out_per_group, n, rows),
                        out,
                        false,
                        w_group,
                        (rows, 1),
                        col,
                        (n, 1),
                        parallel_product,
                    );
                    scatter_output(g, out, bias, first_image, group, start, end, y_unit);
                }
            }
        },
    );
    y
}

/// Input gradient: `dy [batch, channels_out, out_h, out_w]` -> `dx [batch, channels_in, in_h, in_w]`.
pub(crate) fn input_gradient<T: ConvElement>(g: &Geometry, w: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = vec![T::ZERO; g.batch * g.image_len()];
    if dx.is_empty() || g.pixels() == 0 {
        return dx;
    }
    let threads = threads();
    let images = g.images_per_unit::<T>(threads);
    let tile = g.tile_columns::<T>();
    let parallel_product = g.batch.div_ceil(images) < threads;
    let (rows, out_per_group, pixels) = (g.rows(), g.out_per_group(), g.pixels());
    for_each_unit(&mut dx, images * g.image_len(), |unit, dx_unit, (col, dy_tile, _)| {
        let first_image = unit * images;
        let unit_start = first_image * pixels;
        let unit_end = unit_start + dx_unit.len() / g.image_len() * pixels;
        for start in (unit_start..unit_end).step_by(tile) {
            let end = (start + tile).min(unit_end);
            let n = end - start;
            for group in 0..g.groups {
                let dy_tile = grow(dy_tile, out_per_group * n);
                gather_output(g, dy, group, start, end, dy_tile);
                let col = grow(col, rows * n);
                let w_group = &w[group * out_per_group * rows..(group + 1) * out_per_group * rows];
                // col[rows, n] = w_group^T [rows, out_per_group] @ dy_tile[out_per_group, n]
                product(
                    (rows, n, out_per_group),
                    col,
                    false,
                    w_group,
                    (1, rows),
                    dy_tile,
                    (n, 1),
                    parallel_product,
                );
                col2im_add(g, col, first_image, group, start, end, dx_unit);
            }
        }
    });
    dx
}

/// Weight gradient: `x`, `dy` -> `dw [channels_out, channels_in / groups, kh, kw]`.
pub(crate) fn weight_gradient<T: ConvElement>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (rows, out_per_group) = (g.rows(), g.out_per_group());
    let weight_len = g.channels_out * rows;
    let columns = g.columns();
    // A fixed split of the columns (one part per thread), summed in order: the same result on every run.
    let parts = threads().clamp(1, columns.max(1));
    let per_part = columns.div_ceil(parts).max(1);
    let tile = g.tile_columns::<T>();
    let partial = |part: usize| -> Vec<T> {
        let mut dw = vec![T::ZERO; weight_len];
        let (part_start, part_end) = ((part * per_part).min(columns), ((part + 1) * per_part).min(columns));
        with_buffers(|(col, dy_tile, _)| {
            for (index, start) in (part_start..part_end).step_by(tile).enumerate() {
                let end = (start + tile).min(part_end);
                let n = end - start;
                for group in 0..g.groups {
                    let col = grow(col, rows * n);
                    im2col(g, x, 0, group, start, end, col);
                    let dy_tile = grow(dy_tile, out_per_group * n);
                    gather_output(g, dy, group, start, end, dy_tile);
                    // dw_group[out_per_group, rows] += dy_tile[out_per_group, n] @ col^T [n, rows]
                    let dw_group = &mut dw[group * out_per_group * rows..(group + 1) * out_per_group * rows];
                    product(
                        (out_per_group, rows, n),
                        dw_group,
                        index > 0,
                        dy_tile,
                        (n, 1),
                        col,
                        (1, n),
                        parts < threads(),
                    );
                }
            }
        });
        dw
    };
    sum_in_order(parts, weight_len, partial)
}

/// `partial(0) + partial(1) + ... + partial(parts - 1)`, each `len` long, computed in parallel and summed in that
/// order, so the result repeats bit for bit on the same machine (a weight gradient's parts of the batch).
pub(crate) fn sum_in_order<T: ConvElement>(
    parts: usize,
    len: usize,
    partial: impl Fn(usize) -> Vec<T> + Sync + Send,
) -> Vec<T> {
    #[cfg(feature = "rayon")]
    let partials: Vec<Vec<T>> = {
        use rayon::prelude::*;
        (0..parts).into_par_iter().map(partial).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let partials: Vec<Vec<T>> = (0..parts).map(partial).collect();
    let mut partials = partials.into_iter();
    let mut sum = partials.next().unwrap_or_else(|| vec![T::ZERO; len]);
    for other in partials {
        for (d, v) in sum.iter_mut().zip(other) {
            *d = *d + v;
        }
    }
    sum
}

pub(crate) fn shape4(tensor: &FlexTensor) -> [usize; 4] {
    let shape = tensor.layout().shape();
    assert_eq!(shape.num_dims(), 4, "conv2d: expected a 4D tensor, got {shape:?}");
    [shape[0], shape[1], shape[2], shape[3]]
}

pub(crate) fn tensor<T: ConvElement>(data: Vec<T>, shape: [usize; 4], dtype: DType) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(Shape::from(shape.to_vec())),
        dtype,
    )
}

/// A bf16 tensor as f32 (bf16 convolutions compute in f32, as burn-flex's do).
fn bf16_to_f32(tensor: &FlexTensor) -> FlexTensor {
    let tensor = tensor.to_contiguous();
    let data: Vec<f32> = tensor.storage::<bf16>().iter().map(|x| x.to_f32()).collect();
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(tensor.layout().shape().clone()),
        DType::F32,
    )
}

/// An f32 tensor rounded to bf16.
fn f32_to_bf16(tensor: &FlexTensor) -> FlexTensor {
    let data: Vec<bf16> = tensor.storage::<f32>().iter().map(|&x| bf16::from_f32(x)).collect();
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(tensor.layout().shape().clone()),
        DType::BF16,
    )
}

/// Runs `f` on the element type of `dtype`; bf16 through f32, as burn-flex's other convolutions do.
macro_rules! by_dtype {
    ($dtype:expr, $name:literal, $tensors:expr, |$T:ident, $args:ident| $body:expr) => {{
        let tensors = $tensors;
        match $dtype {
            DType::F32 => {
                type $T = f32;
                let $args = tensors;
                $body
            }
            DType::F64 => {
                type $T = f64;
                let $args = tensors;
                $body
            }
            DType::F16 => {
                type $T = f16;
                let $args = tensors;
                $body
            }
            DType::BF16 => {
                type $T = f32;
                let $args = tensors.map(|tensor| tensor.map(|tensor| bf16_to_f32(&tensor)));
                let result: FlexTensor = $body;
                f32_to_bf16(&result)
            }
            dtype => panic!("{}: unsupported dtype {:?}", $name, dtype),
        }
    }};
}

/// 2D convolution (`x [N, C_in, H, W]`, `weight [C_out, C_in / groups, kh, kw]`) -> `[N, C_out, H', W']`.
pub(crate) fn forward_gemm(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let dtype = x.dtype();
    by_dtype!(dtype, "conv2d", [Some(x), Some(weight), bias], |T, args| {
        let [x, weight, bias] = args.map(|tensor| tensor.map(|tensor| tensor.to_contiguous()));
        let (x, weight) = (x.expect("input"), weight.expect("weight"));
        let g = Geometry::new(&shape4(&x), &shape4(&weight), options);
        let y = forward::<T>(&g, x.storage(), weight.storage(), bias.as_ref().map(|b| b.storage()));
        tensor(y, [g.batch, g.channels_out, g.out_h, g.out_w], x.dtype())
    })
}

/// Gradient of `conv2d` with respect to its input.
pub(crate) fn x_backward_gemm(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let dtype = x.dtype();
    let x_shape = shape4(&x);
    by_dtype!(
        dtype,
        "conv2d_x_backward",
        [Some(weight), Some(output_grad)],
        |T, args| {
            let [weight, dy] = args.map(|tensor| tensor.expect("operand").to_contiguous());
            let g = Geometry::new(&x_shape, &shape4(&weight), options);
            assert_eq!(
                shape4(&dy),
                [g.batch, g.channels_out, g.out_h, g.out_w],
                "conv2d_x_backward: output gradient shape"
            );
            let dx = input_gradient::<T>(&g, weight.storage(), dy.storage());
            tensor(dx, x_shape, weight.dtype())
        }
    )
}

/// Gradient of `conv2d` with respect to its weight.
pub(crate) fn weight_backward_gemm(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let dtype = x.dtype();
    let w_shape = shape4(&weight);
    by_dtype!(
        dtype,
        "conv2d_weight_backward",
        [Some(x), Some(output_grad)],
        |T, args| {
            let [x, dy] = args.map(|tensor| tensor.expect("operand").to_contiguous());
            let g = Geometry::new(&shape4(&x), &w_shape, options);
            assert_eq!(
                shape4(&dy),
                [g.batch, g.channels_out, g.out_h, g.out_w],
                "conv2d_weight_backward: output gradient shape"
            );
            let dw = weight_gradient::<T>(&g, x.storage(), dy.storage());
            tensor(dw, w_shape, x.dtype())
        }
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Direct convolution, its input gradient and weight gradient, by definition (f64).
    pub(crate) fn reference(g: &Geometry, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut y = vec![0.0; g.batch * g.channels_out * g.pixels()];
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let (ipg, opg) = (g.in_per_group(), g.out_per_group());
        for b in 0..g.batch {
            for co in 0..g.channels_out {
                let group = co / opg;
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        let yi = ((b * g.channels_out + co) * g.out_h + oh) * g.out_w + ow;
                        for ci in 0..ipg {
                            let c = group * ipg + ci;
                            for kh in 0..g.kernel_h {
                                for kw in 0..g.kernel_w {
                                    let ih = (oh * g.stride[0] + kh * g.dilation[0]) as isize - g.padding[0] as isize;
                                    let iw = (ow * g.stride[1] + kw * g.dilation[1]) as isize - g.padding[1] as isize;
                                    if ih < 0 || iw < 0 || ih >= g.in_h as isize || iw >= g.in_w as isize {
                                        continue;
                                    }
                                    let xi = ((b * g.channels_in + c) * g.in_h + ih as usize) * g.in_w + iw as usize;
                                    let wi = ((co * ipg + ci) * g.kernel_h + kh) * g.kernel_w + kw;
                                    y[yi] += w[wi] * x[xi];
                                    dx[xi] += w[wi] * dy[yi];
                                    dw[wi] += x[xi] * dy[yi];
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    pub(crate) fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
            })
            .collect()
    }

    fn check(x_shape: [usize; 4], w_shape: [usize; 4], options: ConvOptions<2>) {
        let g = Geometry::new(&x_shape, &w_shape, &options);
        let x = values(x_shape.iter().product(), 1);
        let w = values(w_shape.iter().product(), 2);
        let dy = values(g.batch * g.channels_out * g.pixels(), 3);
        let (y_ref, dx_ref, dw_ref) = reference(&g, &x, &w, &dy);
        let close = |name: &str, got: &[f64], want: &[f64]| {
            assert_eq!(got.len(), want.len(), "{name} length");
            for (i, (a, b)) in got.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-9,
                    "{name}[{i}]: {a} vs {b} for {x_shape:?} {w_shape:?} {options:?}"
                );
            }
        };
        close("forward", &forward(&g, &x, &w, None), &y_ref);
        close("input gradient", &input_gradient(&g, &w, &dy), &dx_ref);
        close("weight gradient", &weight_gradient(&g, &x, &dy), &dw_ref);
        // f32 through the public entry points, bias included.
        let to_f32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let flex = |v: &[f64], shape: [usize; 4]| tensor(to_f32(v), shape, DType::F32);
        let bias = values(g.channels_out, 4);
        let y = forward_gemm(
            flex(&x, x_shape),
            flex(&w, w_shape),
            Some(FlexTensor::new(
                Bytes::from_elems(to_f32(&bias)),
                Layout::contiguous(Shape::from(vec![g.channels_out])),
                DType::F32,
            )),
            &options,
        );
        let y: &[f32] = y.storage();
        for (i, (&a, &b)) in y.iter().zip(&y_ref).enumerate() {
            let want = b + bias[i / g.pixels() % g.channels_out];
            assert!((a as f64 - want).abs() < 1e-4, "f32 forward[{i}]: {a} vs {want}");
        }
    }

    #[test]
    fn matches_the_definition() {
        let o = |stride, padding, dilation, groups| ConvOptions::new(stride, padding, dilation, groups);
        check([2, 3, 7, 6], [4, 3, 3, 3], o([1, 1], [1, 1], [1, 1], 1));
        check([3, 4, 8, 8], [6, 4, 3, 3], o([2, 2], [1, 1], [1, 1], 1));
        check([2, 4, 9, 7], [5, 4, 1, 1], o([2, 2], [0, 0], [1, 1], 1));
        // Stride 2 with output rows of 9-10 pixels: the gather's blocks of 8 and their remainder.
        check([2, 3, 19, 18], [4, 3, 3, 3], o([2, 2], [1, 1], [1, 1], 1));
        check([1, 2, 35, 34], [3, 2, 3, 3], o([2, 2], [0, 0], [1, 1], 1));
        check([2, 4, 9, 7], [6, 2, 3, 2], o([1, 2], [2, 0], [2, 1], 2));
        check([1, 3, 5, 5], [2, 3, 5, 5], o([1, 1], [0, 0], [1, 1], 1));
        check([5, 2, 3, 3], [3, 2, 3, 3], o([3, 3], [4, 4], [1, 1], 1));
        check([4, 8, 4, 4], [8, 8, 3, 3], o([1, 1], [1, 1], [1, 1], 1));
    }

    #[test]
    fn many_images_per_tile_and_many_tiles_per_image() {
        // Few pixels, many images: several images share one product.
        check([40, 3, 2, 2], [4, 3, 3, 3], ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
        // Many pixels: an image spans several tiles.
        check(
            [2, 1, 48, 40],
            [2, 1, 3, 3],
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
    }
}
