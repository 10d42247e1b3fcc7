//! 3x3 stride-1 convolutions with Winograd's F(2x2, 3x3): 16 multiplications per 2x2 output tile and channel pair
//! instead of 36.
//!
//! A 3x3 stride-1 convolution is most of the FLOPs of ResNet-18 and the WideResNets, in the forward pass, in the
//! input gradient (itself a 3x3 stride-1 convolution of the output gradient with the flipped, transposed kernel) and
//! in the weight gradient (the same bilinear form read the other way, [`weight_gradient`]).
//! With the output cut into 2x2 tiles, each read from a 4x4 input patch `d`, Winograd's minimal filtering gives
//!
//! `y = A^T [ (G g G^T) ⊙ (B^T d B) ] A`,
//!
//! so over channels the element-wise products become 16 independent matrix products, one per position `ξ` of the
//! 4x4 transformed tile: `M[ξ][c_out, tiles] = U[ξ][c_out, c_in] @ V[ξ][c_in, tiles]` with `U = G g G^T` (the
//! transformed weights) and `V = B^T d B` (the transformed input patches). The transforms are additions (and halves
//! for `G`), so the work left is 16/36 of im2col + gemm's multiplications plus the transforms' passes.
//!
//! Numerics: F(2x2, 3x3)'s transforms have entries 0, ±1/2 and ±1 only, so its error is close to the direct
//! sum's (the larger F(4x4, 3x3) has entries up to 8 and loses digits in f32); the tests here bound it against the
//! definition in f64 and in f32.
//!
//! Work is split as in `conv2d_gemm.rs`: units of whole images, one per thread where the batch allows; inside a
//! unit, chunks of tiles sized so the transformed patches stay near the cache.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::{Mul, Sub};

use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_flex::FlexTensor;

use crate::conv2d_gemm::{
    ConvElement, Geometry, for_each_unit, grow, product, shape4, split_pairs, sum_in_order, tensor, threads,
    with_buffers,
};
use crate::simd::widest_vectors;

/// Fewest and most 2x2 tiles per chunk of the 16 products.
const MIN_CHUNK_TILES: usize = 64;
/// Bytes of transformed patches per chunk (and as many of products): both stay in a core's L2 cache.
const CHUNK_BYTES: usize = 1 << 20;
const MAX_CHUNK_TILES: usize = 1024;

/// Fewest channels (in and out) for which Winograd pays: with fewer, the products are too thin for the saved
/// multiplications to outweigh the transforms (the first convolution of a network, with 3 input channels, keeps
/// im2col + gemm).
const MIN_CHANNELS: usize = 16;

/// Fewest output rows and columns for which Winograd pays: at 4x4 pixels (a CIFAR ResNet's last stage) a tile row
/// holds two tiles and the transforms' loops cost more than the products save (measured in PATCHED.md).
const MIN_SIDE: usize = 8;

/// Element types Winograd computes in: those with exact halves (f16 keeps im2col + gemm, as its range is too small
/// for the transforms' sums).
pub(crate) trait WinogradElement: ConvElement + Sub<Output = Self> + Mul<Output = Self> {
    const HALF: Self;
}

impl WinogradElement for f32 {
    const HALF: Self = 0.5;
}

impl WinogradElement for f64 {
    const HALF: Self = 0.5;
}

/// Whether Winograd can compute the forward pass of `g` (and its input and weight gradients): a 3x3
/// kernel, stride 1, no dilation, one group, padding at most 2 (so the input gradient's padding `2 - p` is not
/// negative).
pub(crate) fn applies(g: &Geometry) -> bool {
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.padding[0] <= 2
        && g.padding[1] <= 2
        && g.out_h > 0
        && g.out_w > 0
}

/// Whether Winograd is faster than im2col + gemm for `g`, so [`crate::Flex`] takes it: it [`applies`], with at least
/// [`MIN_CHANNELS`] channels both ways and [`MIN_SIDE`] output rows and columns (the input gradient's output is the
/// input, as large).
pub(crate) fn pays(g: &Geometry) -> bool {
    applies(g)
        && g.channels_in >= MIN_CHANNELS
        && g.channels_out >= MIN_CHANNELS
        && g.out_h.min(g.in_h) >= MIN_SIDE
        && g.out_w.min(g.in_w) >= MIN_SIDE
}

/// The shape of one Winograd convolution (3x3 kernel, stride 1): the forward pass, or the input gradient seen as a
/// forward pass of the output gradient.
#[derive(Clone, Copy, Debug)]
struct Plan {
    batch: usize,
    channels_in: usize,
    in_h: usize,
    in_w: usize,
    channels_out: usize,
    out_h: usize,
    out_w: usize,
    padding: [usize; 2],
}

impl Plan {
    /// The forward pass of `g` (also the shape the weight gradient's tiles follow).
    fn forward(g: &Geometry) -> Self {
        Self {
            batch: g.batch,
            channels_in: g.channels_in,
            in_h: g.in_h,
            in_w: g.in_w,
            channels_out: g.channels_out,
            out_h: g.out_h,
            out_w: g.out_w,
            padding: g.padding,
        }
    }

    fn tiles_h(&self) -> usize {
        self.out_h.div_ceil(2)
    }

    fn tiles_w(&self) -> usize {
        self.out_w.div_ceil(2)
    }

    fn tiles_per_image(&self) -> usize {
        self.tiles_h() * self.tiles_w()
    }

    fn image_len(&self) -> usize {
        self.channels_in * self.in_h * self.in_w
    }

    fn output_image_len(&self) -> usize {
        self.channels_out * self.out_h * self.out_w
    }

    /// Tiles per chunk: the transformed patches `V[16, channels_in, tiles]` near `TILE_BYTES`.
    fn chunk_tiles<T>(&self) -> usize {
        (CHUNK_BYTES / (16 * self.channels_in.max(self.channels_out) * core::mem::size_of::<T>()).max(1))
            .clamp(MIN_CHUNK_TILES, MAX_CHUNK_TILES)
    }

    /// Images per unit of parallel work: a multiple of the thread count of units, each of at most a few chunks.
    fn images_per_unit<T>(&self, threads: usize) -> usize {
        let threads = threads.max(1);
        let tiles = self.batch * self.tiles_per_image();
        let rounds = tiles.div_ceil(threads * 4 * self.chunk_tiles::<T>()).max(1);
        self.batch.div_ceil(threads * rounds).max(1)
    }
}

/// `U[16, rows, cols] = G k G^T` for each 3x3 kernel `k = kernel(row, col)` (9 values, row-major), with
/// `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`.
// `offset` indexes the inner dimension of `staged`, as a column of the block.
#[allow(clippy::needless_range_loop)]
fn transform_kernels<T: WinogradElement>(rows: usize, cols: usize, kernel: impl Fn(usize, usize) -> [T; 9]) -> Vec<T> {
    // Columns per block: a block's 16 transformed values per kernel are staged and written as 16 contiguous runs.
    // Written kernel by kernel, each kernel's 16 values went to 16 planes a whole plane apart (1.6 MB for a 640x640
    // layer): a seventh of a WideResNet-34-10 training step at batch 8.
    const BLOCK: usize = 64;
    let plane = rows * cols;
    let mut u = vec![T::ZERO; 16 * plane];
    let mut staged = [[T::ZERO; BLOCK]; 16];
    for row in 0..rows {
        for first in (0..cols).step_by(BLOCK) {
            let n = BLOCK.min(cols - first);
            for offset in 0..n {
                let k = kernel(row, first + offset);
                // G k: 4x3.
                let mut gk = [[T::ZERO; 3]; 4];
                for j in 0..3 {
                    let (k0, k1, k2) = (k[j], k[3 + j], k[6 + j]);
                    gk[0][j] = k0;
                    gk[1][j] = T::HALF * (k0 + k1 + k2);
                    gk[2][j] = T::HALF * (k0 - k1 + k2);
                    gk[3][j] = k2;
                }
                // (G k) G^T: 4x4.
                for (i, r) in gk.iter().enumerate() {
                    let values = [
                        r[0],
                        T::HALF * (r[0] + r[1] + r[2]),
                        T::HALF * (r[0] - r[1] + r[2]),
                        r[2],
                    ];
                    for (j, value) in values.into_iter().enumerate() {
                        staged[i * 4 + j][offset] = value;
                    }
                }
            }
            for (xi, values) in staged.iter().enumerate() {
                let at = xi * plane + row * cols + first;
                u[at..at + n].copy_from_slice(&values[..n]);
            }
        }
    }
    u
}

/// The tile rows `first_row .. first_row + rows` (global: image `row / tiles_h`, tile row `row % tiles_h` in it) cut
/// at image borders: `(image, first tile row in the image, tile rows, offset of the first tile in the chunk)`.
fn image_segments(p: &Plan, first_row: usize, rows: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let (tiles_h, tiles_w, end) = (p.tiles_h(), p.tiles_w(), first_row + rows);
    let mut row = first_row;
    core::iter::from_fn(move || {
        (row < end).then(|| {
            let (image, top) = (row / tiles_h, row % tiles_h);
            let count = (tiles_h - top).min(end - row);
            let segment = (image, top, count, (row - first_row) * tiles_w);
            row += count;
            segment
        })
    })
}

/// One row-wise combination `j` of `B^T d` (`d0 - d2`, `d1 + d2`, `d2 - d1`, `d1 - d3`) followed by the four
/// column-wise ones (`c0 - c2`, `c1 + c2`, `c2 - c1`, `c1 - c3`), over a whole image segment at once: `top[c]` and
/// `bottom[c]` hold column kind `c` (patch columns 0..4 of every tile) of the patch rows the combination reads
/// (rows `j`'s first and second operand), and `v[q]` receives output `4 j + q`. Flat loops over the segment's tiles,
/// so they vectorise however few tiles a row has.
#[inline(always)]
fn input_tile_rows<T: WinogradElement, const J: usize>(top: [&[T]; 4], bottom: [&[T]; 4], v: [&mut [T]; 4]) {
    let combine = |a: T, b: T| match J {
        0 | 3 => a - b,
        1 => a + b,
        _ => b - a,
    };
    let [v0, v1, v2, v3] = v;
    let len = v0.len();
    let (t0, t1, t2, t3) = (&top[0][..len], &top[1][..len], &top[2][..len], &top[3][..len]);
    let (b0, b1, b2, b3) = (
        &bottom[0][..len],
        &bottom[1][..len],
        &bottom[2][..len],
        &bottom[3][..len],
    );
    let (v1, v2, v3) = (&mut v1[..len], &mut v2[..len], &mut v3[..len]);
    for k in 0..len {
        let (c0, c1, c2, c3) = (
            combine(t0[k], b0[k]),
            combine(t1[k], b1[k]),
            combine(t2[k], b2[k]),
            combine(t3[k], b3[k]),
        );
        v0[k] = c0 - c2;
        v1[k] = c1 + c2;
        v2[k] = c2 - c1;
        v3[k] = c1 - c3;
    }
}

/// Splits a padded input row (`2 tiles_w + 2` values) into the four patch columns of every tile: tile `k` reads
/// columns `2k .. 2k + 4`. One pass over pairs (vector shuffles); a gather per kind ran element by element.
#[inline(always)]
fn split_tile_columns<T: WinogradElement>(padded: &[T], kinds: [&mut [T]; 4]) {
    let [kind0, kind1, kind2, kind3] = kinds;
    let tiles_w = kind0.len();
    let (kind1, kind2, kind3) = (&mut kind1[..tiles_w], &mut kind2[..tiles_w], &mut kind3[..tiles_w]);
    let pairs = padded.chunks_exact(2).zip(padded[2..].chunks_exact(2));
    let kinds = kind0
        .iter_mut()
        .zip(kind1.iter_mut())
        .zip(kind2.iter_mut().zip(kind3.iter_mut()));
    for (((k0, k1), (k2, k3)), (left, right)) in kinds.zip(pairs) {
        (*k0, *k1, *k2, *k3) = (left[0], left[1], right[0], right[1]);
    }
}

/// `V[16, channels_in, n]` for the `rows` tile rows from global tile row `first_row` on (whole images from
/// `first_image` on in `x`; `n = rows * tiles_w`): `B^T d B` of each tile's 4x4 input patch `d` (zeros outside the
/// image), with `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
///
/// Per image segment and channel: each padded input row is read once and split into the four patch columns of
/// every tile (tile `k` reads columns `2k .. 2k + 4`), even and odd rows apart, so patch row `i` of tile row `t` is
/// row `t + i / 2` of the even or odd rows; then the combinations run as flat loops over the segment's tiles.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_input<T: WinogradElement>(
    p: &Plan,
    x: &[T],
    first_image: usize,
    first_row: usize,
    rows: usize,
    v: &mut [T],
    scratch: &mut Vec<T>,
) {
    let tiles_w = p.tiles_w();
    let n = rows * tiles_w;
    let plane = p.channels_in * n;
    let width = 2 * tiles_w + 2;
    // The padded row, then [even, odd rows][column kind][(rows + 1) * tiles_w].
    let kind_len = (rows + 1) * tiles_w;
    let scratch = grow(scratch, width + 8 * kind_len);
    let (padded, columns) = scratch.split_at_mut(width);
    let (first_column, last_column) = (p.padding[1], (p.in_w + p.padding[1]).min(width));
    padded[..first_column.min(width)].fill(T::ZERO);
    padded[last_column.max(first_column).min(width)..].fill(T::ZERO);
    let mut planes: Vec<&mut [T]> = v[..16 * plane].chunks_exact_mut(plane).collect();
    for (image, top, count, offset) in image_segments(p, first_row, rows) {
        let len = count * tiles_w;
        for channel in 0..p.channels_in {
            let base = ((image - first_image) * p.channels_in + channel) * p.in_h * p.in_w;
            // Padded rows 2 top .. 2 (top + count) + 2.
            for i in 0..2 * (count + 1) {
                let row_columns = |kind: usize| {
                    let at = ((i % 2) * 4 + kind) * kind_len + (i / 2) * tiles_w;
                    at..at + tiles_w
                };
                match (2 * top + i).checked_sub(p.padding[0]).filter(|&ih| ih < p.in_h) {
                    Some(ih) if first_column < last_column => {
                        // The padding columns were zeroed once, above.
                        let from = base + ih * p.in_w;
                        padded[first_column..last_column].copy_from_slice(&x[from..from + last_column - first_column]);
                        let start = row_columns(0).start;
                        let kinds = &mut columns[start..start + 3 * kind_len + tiles_w];
                        let (kind0, rest) = kinds.split_at_mut(kind_len);
                        let (kind1, rest) = rest.split_at_mut(kind_len);
                        let (kind2, kind3) = rest.split_at_mut(kind_len);
                        split_tile_columns(padded, [kind0, kind1, kind2, kind3].map(|kind| &mut kind[..tiles_w]));
                    }
                    _ => (0..4).for_each(|kind| columns[row_columns(kind)].fill(T::ZERO)),
                }
            }
            let kinds = |parity: usize, shift: usize| -> [&[T]; 4] {
                core::array::from_fn(|kind| {
                    let at = (parity * 4 + kind) * kind_len + shift * tiles_w;
                    &columns[at..at + len]
                })
            };
            let (even, odd, even_next, odd_next) = (kinds(0, 0), kinds(1, 0), kinds(0, 1), kinds(1, 1));
            let at = channel * n + offset;
            for j in 0..4 {
                let [v0, v1, v2, v3] = &mut planes[4 * j..4 * j + 4] else {
                    unreachable!()
                };
                let v = [
                    &mut v0[at..at + len],
                    &mut v1[at..at + len],
                    &mut v2[at..at + len],
                    &mut v3[at..at + len],
                ];
                // Patch rows d0 = even, d1 = odd, d2 = even_next, d3 = odd_next.
                match j {
                    0 => input_tile_rows::<T, 0>(even, even_next, v),
                    1 => input_tile_rows::<T, 1>(odd, even_next, v),
                    2 => input_tile_rows::<T, 2>(odd, even_next, v),
                    _ => input_tile_rows::<T, 3>(odd, odd_next, v),
                }
            }
        }
    }
}

/// `first = x_0 + x_1 + x_2 + shift` and `second = x_1 - x_2 - x_3 + shift`, element-wise: `A^T`'s two rows
/// applied across four streams.
#[inline(always)]
fn tile_ends<T: WinogradElement>(x: [&[T]; 4], shift: T, first: &mut [T], second: &mut [T]) {
    let len = first.len();
    let (x0, x1, x2, x3) = (&x[0][..len], &x[1][..len], &x[2][..len], &x[3][..len]);
    let second = &mut second[..len];
    for k in 0..len {
        first[k] = x0[k] + x1[k] + x2[k] + shift;
        second[k] = x1[k] - x2[k] - x3[k] + shift;
    }
}

/// Writes `A^T M A` of each tile of `M[16, channels_out, n]` (tile rows as in [`transform_input`]) plus the bias
/// into `y` (whole images from `first_image` on), with `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`; the row and column
/// past an odd output edge are dropped. Per image segment and channel: the four outputs of every tile (top and
/// bottom row, even and odd column) in flat loops over the segment's tiles, then interleaved into the output rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_output<T: WinogradElement>(
    p: &Plan,
    m: &[T],
    bias: Option<&[T]>,
    first_image: usize,
    first_row: usize,
    rows: usize,
    y: &mut [T],
    scratch: &mut Vec<T>,
) {
    let tiles_w = p.tiles_w();
    let n = rows * tiles_w;
    let plane = p.channels_out * n;
    // [a_0..a_3, b_0..b_3, top even, top odd, bottom even, bottom odd][n].
    let scratch = grow(scratch, 12 * n);
    let (sums, outputs) = scratch.split_at_mut(8 * n);
    for (image, top, count, offset) in image_segments(p, first_row, rows) {
        let len = count * tiles_w;
        for channel in 0..p.channels_out {
            let shift = bias.map_or(T::ZERO, |bias| bias[channel]);
            let at = channel * n + offset;
            let ms: [&[T]; 16] = core::array::from_fn(|i| &m[i * plane + at..i * plane + at + len]);
            // A^T M gives, per column j of the 4x4 tile, a_j = m_j + m_4+j + m_8+j (top output row) and
            // b_j = m_4+j - m_8+j - m_12+j (bottom); then A gives even = x_0 + x_1 + x_2, odd = x_1 - x_2 - x_3.
            // Two passes of four streams each: one pass over all sixteen kept the compiler from vectorising it.
            let (a, b) = sums.split_at_mut(4 * n);
            for j in 0..4 {
                let (a_j, b_j) = (&mut a[j * n..j * n + len], &mut b[j * n..j * n + len]);
                tile_ends([ms[j], ms[4 + j], ms[8 + j], ms[12 + j]], T::ZERO, a_j, b_j);
            }
            let a: [&[T]; 4] = core::array::from_fn(|j| &a[j * n..j * n + len]);
            let b: [&[T]; 4] = core::array::from_fn(|j| &b[j * n..j * n + len]);
            let (top_even, rest) = outputs.split_at_mut(len);
            let (top_odd, rest) = rest.split_at_mut(len);
            let (bottom_even, rest) = rest.split_at_mut(len);
            let bottom_odd = &mut rest[..len];
            tile_ends(a, shift, top_even, top_odd);
            tile_ends(b, shift, bottom_even, bottom_odd);
            let base = ((image - first_image) * p.channels_out + channel) * p.out_h * p.out_w;
            for t in 0..count {
                let tile_row = t * tiles_w..(t + 1) * tiles_w;
                for (i, (even, odd)) in [(&*top_even, &*top_odd), (&*bottom_even, &*bottom_odd)]
                    .into_iter()
                    .enumerate()
                {
                    let out_row = 2 * (top + t) + i;
                    if out_row >= p.out_h {
                        break;
                    }
                    let row = &mut y[base + out_row * p.out_w..][..p.out_w];
                    // Whole pairs straight into the output row; past an odd edge the last even column alone.
                    let (even, odd) = (&even[tile_row.clone()], &odd[tile_row.clone()]);
                    for ((pair, e), o) in row.chunks_exact_mut(2).zip(even).zip(odd) {
                        pair[0] = *e;
                        pair[1] = *o;
                    }
                    if p.out_w % 2 == 1 {
                        row[p.out_w - 1] = even[p.out_w / 2];
                    }
                }
            }
        }
    }
}

/// `E[16, channels_out, n]` for the `rows` tile rows from global tile row `first_row` on (`dy` holds the whole
/// batch): `A e A^T` of each tile's 2x2 output gradient `e` (zeros past an odd edge), with
/// `A = [[1, 0], [1, 1], [1, -1], [0, -1]]` (F(2x2, 3x3)'s `A^T` transposed: the weight gradient is the forward
/// pass's bilinear form read the other way, `dW = G^T [sum over tiles (A e A^T) ⊙ (B^T d B)] G`). Per image segment
/// and channel: the tiles' two output-gradient rows split into even and odd columns, then flat loops over the
/// segment's tiles.
#[inline(always)]
fn transform_output_gradient<T: WinogradElement>(
    p: &Plan,
    dy: &[T],
    first_row: usize,
    rows: usize,
    e: &mut [T],
    scratch: &mut Vec<T>,
) {
    let tiles_w = p.tiles_w();
    let n = rows * tiles_w;
    let plane = p.channels_out * n;
    // [top row even, top row odd, bottom row even, bottom row odd][n].
    let scratch = grow(scratch, 4 * n);
    let mut planes: Vec<&mut [T]> = e[..16 * plane].chunks_exact_mut(plane).collect();
    for (image, top, count, offset) in image_segments(p, first_row, rows) {
        let len = count * tiles_w;
        for channel in 0..p.channels_out {
            let base = (image * p.channels_out + channel) * p.out_h * p.out_w;
            for t in 0..count {
                for i in 0..2 {
                    let out_row = 2 * (top + t) + i;
                    let (even, odd) = scratch.split_at_mut((2 * i + 1) * n);
                    let even = &mut even[2 * i * n + t * tiles_w..2 * i * n + (t + 1) * tiles_w];
                    let odd = &mut odd[t * tiles_w..(t + 1) * tiles_w];
                    if out_row < p.out_h {
                        let row = &dy[base + out_row * p.out_w..base + (out_row + 1) * p.out_w];
                        split_pairs(row, 0, even, odd);
                        if p.out_w % 2 == 1 {
                            // Past an odd edge the last even column stands alone.
                            odd[p.out_w / 2] = T::ZERO;
                        }
                    } else {
                        even.fill(T::ZERO);
                        odd.fill(T::ZERO);
                    }
                }
            }
            let part = |i: usize| &scratch[i * n..i * n + len];
            let (a_even, a_odd, b_even, b_odd) = (part(0), part(1), part(2), part(3));
            let at = channel * n + offset;
            // A e: rows a, a + b, a - b, -b; then each times A^T: even, even + odd, even - odd, -odd.
            for i in 0..4 {
                let [e0, e1, e2, e3] = &mut planes[4 * i..4 * i + 4] else {
                    unreachable!()
                };
                let (e0, e1, e2, e3) = (
                    &mut e0[at..at + len],
                    &mut e1[at..at + len],
                    &mut e2[at..at + len],
                    &mut e3[at..at + len],
                );
                for k in 0..len {
                    let (even, odd) = match i {
                        0 => (a_even[k], a_odd[k]),
                        1 => (a_even[k] + b_even[k], a_odd[k] + b_odd[k]),
                        2 => (a_even[k] - b_even[k], a_odd[k] - b_odd[k]),
                        _ => (T::ZERO - b_even[k], T::ZERO - b_odd[k]),
                    };
                    e0[k] = even;
                    e1[k] = even + odd;
                    e2[k] = even - odd;
                    e3[k] = T::ZERO - odd;
                }
            }
        }
    }
}

/// One of the three transforms, with what it reads and writes.
enum Transform<'a, T> {
    /// `x` (the unit's images) -> `V` ([`transform_input`]).
    Input { x: &'a [T], v: &'a mut [T] },
    /// `M` plus the bias -> `y` (the unit's images) ([`transform_output`]).
    Output {
        m: &'a [T],
        bias: Option<&'a [T]>,
        y: &'a mut [T],
    },
    /// The output gradient `dy` (the whole batch) -> `E` ([`transform_output_gradient`]).
    OutputGradient { dy: &'a [T], e: &'a mut [T] },
}

/// Tile rows `first_row .. first_row + rows` of a unit whose first image is `first_image`.
#[derive(Clone, Copy)]
struct TileRows {
    first_image: usize,
    first_row: usize,
    rows: usize,
}

widest_vectors! {
    /// Runs a transform compiled for the widest vector unit the CPU has: the crate is built for baseline x86-64,
    /// whose 4-wide vectors would leave the transforms slower than the products they save on AVX-512 machines.
    fn transform<T: WinogradElement>(p: &Plan, step: Transform<'_, T>, tiles: TileRows, scratch: &mut Vec<T>) {
        let TileRows {
            first_image,
            first_row,
            rows,
        } = tiles;
        match step {
            Transform::Input { x, v } => transform_input(p, x, first_image, first_row, rows, v, scratch),
            Transform::Output { m, bias, y } => transform_output(p, m, bias, first_image, first_row, rows, y, scratch),
            Transform::OutputGradient { dy, e } => transform_output_gradient(p, dy, first_row, rows, e, scratch),
        }
    }
}

/// The convolution of `p` with transformed kernels `u[16, channels_out, channels_in]`.
fn convolve<T: WinogradElement>(p: &Plan, x: &[T], u: &[T], bias: Option<&[T]>) -> Vec<T> {
    let mut y = vec![T::ZERO; p.batch * p.output_image_len()];
    if y.is_empty() {
        return y;
    }
    let threads = threads();
    let images = p.images_per_unit::<T>(threads);
    let chunk = p.chunk_tiles::<T>();
    let parallel_product = p.batch.div_ceil(images) < threads;
    let (c_in, c_out, tiles_w) = (p.channels_in, p.channels_out, p.tiles_w());
    // Chunks of whole tile rows.
    let chunk_rows = (chunk / tiles_w).max(1);
    for_each_unit(
        &mut y,
        images * p.output_image_len(),
        |unit, y_unit, (v, m, scratch)| {
            let first_image = unit * images;
            let x_unit = &x[first_image * p.image_len()..];
            let unit_start = first_image * p.tiles_h();
            let unit_end = unit_start + y_unit.len() / p.output_image_len() * p.tiles_h();
            for first_row in (unit_start..unit_end).step_by(chunk_rows) {
                let rows = (first_row + chunk_rows).min(unit_end) - first_row;
                let n = rows * tiles_w;
                let v = grow(v, 16 * c_in * n);
                let tiles = TileRows {
                    first_image,
                    first_row,
                    rows,
                };
                transform(p, Transform::Input { x: x_unit, v: &mut *v }, tiles, scratch);
                let m = grow(m, 16 * c_out * n);
                for xi in 0..16 {
                    product(
                        (c_out, n, c_in),
                        &mut m[xi * c_out * n..(xi + 1) * c_out * n],
                        false,
                        &u[xi * c_out * c_in..(xi + 1) * c_out * c_in],
                        (c_in, 1),
                        &v[xi * c_in * n..(xi + 1) * c_in * n],
                        (n, 1),
                        parallel_product,
                    );
                }
                let output = Transform::Output {
                    m: &*m,
                    bias,
                    y: &mut *y_unit,
                };
                transform(p, output, tiles, scratch);
            }
        },
    );
    y
}

/// Forward: `x [batch, channels_in, in_h, in_w]`, `w [channels_out, channels_in, 3, 3]`, `bias [channels_out]` ->
/// `[batch, channels_out, out_h, out_w]`, for a geometry Winograd [`applies`] to.
pub(crate) fn forward<T: WinogradElement>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    debug_assert!(applies(g));
    let p = Plan::forward(g);
    let u = transform_kernels(g.channels_out, g.channels_in, |co, ci| {
        let at = (co * g.channels_in + ci) * 9;
        core::array::from_fn(|k| w[at + k])
    });
    convolve(&p, x, &u, bias)
}

/// Input gradient: `dy [batch, channels_out, out_h, out_w]` -> `dx [batch, channels_in, in_h, in_w]`, for a geometry
/// Winograd [`applies`] to: the stride-1 convolution of `dy`, padded by `2 - padding`, with the kernel flipped in both axes
/// and its channel axes swapped.
pub(crate) fn input_gradient<T: WinogradElement>(g: &Geometry, w: &[T], dy: &[T]) -> Vec<T> {
    debug_assert!(applies(g));
    let p = Plan {
        batch: g.batch,
        channels_in: g.channels_out,
        in_h: g.out_h,
        in_w: g.out_w,
        channels_out: g.channels_in,
        out_h: g.in_h,
        out_w: g.in_w,
        padding: [2 - g.padding[0], 2 - g.padding[1]],
    };
    let u = transform_kernels(g.channels_in, g.channels_out, |ci, co| {
        let at = (co * g.channels_in + ci) * 9;
        core::array::from_fn(|k| w[at + 8 - k])
    });
    convolve(&p, dy, &u, None)
}

/// Weight gradient: `x`, `dy` -> `dw [channels_out, channels_in, 3, 3]`, for a geometry Winograd [`applies`] to:
/// `dW = G^T M G` with `M[ξ][c_out, c_in] = sum over tiles E[ξ][c_out, tile] V[ξ][c_in, tile]`, 16 products over the
/// batch's tiles. The tile rows are split in one fixed part per thread, summed in order (bit for bit repeatable).
pub(crate) fn weight_gradient<T: WinogradElement>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    debug_assert!(applies(g));
    let p = Plan::forward(g);
    let (c_in, c_out, tiles_w) = (p.channels_in, p.channels_out, p.tiles_w());
    let tile_rows = p.batch * p.tiles_h();
    let parts = threads().clamp(1, tile_rows.max(1));
    let per_part = tile_rows.div_ceil(parts).max(1);
    let chunk_rows = (p.chunk_tiles::<T>() / tiles_w).max(1);
    let (plane, parallel_product) = (c_out * c_in, parts < threads());
    let m = sum_in_order(parts, 16 * plane, |part| {
        let mut m = vec![T::ZERO; 16 * plane];
        let (start, end) = ((part * per_part).min(tile_rows), ((part + 1) * per_part).min(tile_rows));
        with_buffers(|(v, e, scratch)| {
            for (index, first_row) in (start..end).step_by(chunk_rows).enumerate() {
                let rows = (first_row + chunk_rows).min(end) - first_row;
                let n = rows * tiles_w;
                let tiles = TileRows {
                    first_image: 0,
                    first_row,
                    rows,
                };
                let v = grow(v, 16 * c_in * n);
                transform(&p, Transform::Input { x, v: &mut *v }, tiles, scratch);
                let e = grow(e, 16 * c_out * n);
                transform(&p, Transform::OutputGradient { dy, e: &mut *e }, tiles, scratch);
                for xi in 0..16 {
                    // M[ξ][c_out, c_in] += E[ξ][c_out, n] @ V[ξ][c_in, n]^T
                    product(
                        (c_out, c_in, n),
                        &mut m[xi * plane..(xi + 1) * plane],
                        index > 0,
                        &e[xi * c_out * n..(xi + 1) * c_out * n],
                        (n, 1),
                        &v[xi * c_in * n..(xi + 1) * c_in * n],
                        (1, n),
                        parallel_product,
                    );
                }
            }
        });
        m
    });
    // G^T M G for each channel pair, with G^T = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]].
    let mut dw = vec![T::ZERO; plane * 9];
    let g_t = |v: [T; 4]| {
        let (sum, difference) = (T::HALF * (v[1] + v[2]), T::HALF * (v[1] - v[2]));
        [v[0] + sum, difference, sum + v[3]]
    };
    for (pair, kernel) in dw.chunks_exact_mut(9).enumerate() {
        let columns: [[T; 3]; 4] =
            core::array::from_fn(|j| g_t(core::array::from_fn(|i| m[(i * 4 + j) * plane + pair])));
        for kh in 0..3 {
            let row = g_t(core::array::from_fn(|j| columns[j][kh]));
            kernel[kh * 3..kh * 3 + 3].copy_from_slice(&row);
        }
    }
    dw
}

/// The weight gradient of an f32 or f64 convolution whose geometry passes `rule`; `None` for any other.
pub(crate) fn weight_backward_winograd(
    x: &FlexTensor,
    weight: &FlexTensor,
    output_grad: &FlexTensor,
    options: &ConvOptions<2>,
    rule: fn(&Geometry) -> bool,
) -> Option<FlexTensor> {
    let w_shape = shape4(weight);
    let g = Geometry::new(&shape4(x), &w_shape, options);
    if !rule(&g) || output_grad.dtype() != x.dtype() {
        return None;
    }
    assert_eq!(
        shape4(output_grad),
        [g.batch, g.channels_out, g.out_h, g.out_w],
        "conv2d_weight_backward: output gradient shape"
    );
    let [x, dy] = [x, output_grad].map(|tensor| tensor.to_contiguous());
    match x.dtype() {
        DType::F32 => Some(tensor(
            weight_gradient::<f32>(&g, x.storage(), dy.storage()),
            w_shape,
            DType::F32,
        )),
        DType::F64 => Some(tensor(
            weight_gradient::<f64>(&g, x.storage(), dy.storage()),
            w_shape,
            DType::F64,
        )),
        _ => None,
    }
}

/// The forward pass of an f32 or f64 convolution whose geometry passes `rule` ([`applies`] or [`pays`]); `None`
/// for any other.
pub(crate) fn forward_winograd(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    options: &ConvOptions<2>,
    rule: fn(&Geometry) -> bool,
) -> Option<FlexTensor> {
    let g = Geometry::new(&shape4(x), &shape4(weight), options);
    if !rule(&g) || weight.dtype() != x.dtype() || bias.is_some_and(|bias| bias.dtype() != x.dtype()) {
        return None;
    }
    let [x, weight] = [x, weight].map(|tensor| tensor.to_contiguous());
    let bias = bias.map(|bias| bias.to_contiguous());
    let shape = [g.batch, g.channels_out, g.out_h, g.out_w];
    match x.dtype() {
        DType::F32 => {
            let bias = bias.as_ref().map(|bias| bias.storage::<f32>());
            Some(tensor(
                forward::<f32>(&g, x.storage(), weight.storage(), bias),
                shape,
                DType::F32,
            ))
        }
        DType::F64 => {
            let bias = bias.as_ref().map(|bias| bias.storage::<f64>());
            Some(tensor(
                forward::<f64>(&g, x.storage(), weight.storage(), bias),
                shape,
                DType::F64,
            ))
        }
        _ => None,
    }
}

/// The input gradient of an f32 or f64 convolution whose geometry passes `rule`; `None` for any other.
pub(crate) fn x_backward_winograd(
    x: &FlexTensor,
    weight: &FlexTensor,
    output_grad: &FlexTensor,
    options: &ConvOptions<2>,
    rule: fn(&Geometry) -> bool,
) -> Option<FlexTensor> {
    let x_shape = shape4(x);
    let g = Geometry::new(&x_shape, &shape4(weight), options);
    if !rule(&g) || output_grad.dtype() != weight.dtype() {
        return None;
    }
    assert_eq!(
        shape4(output_grad),
        [g.batch, g.channels_out, g.out_h, g.out_w],
        "conv2d_x_backward: output gradient shape"
    );
    let [weight, dy] = [weight, output_grad].map(|tensor| tensor.to_contiguous());
    match weight.dtype() {
        DType::F32 => Some(tensor(
            input_gradient::<f32>(&g, weight.storage(), dy.storage()),
            x_shape,
            DType::F32,
        )),
        DType::F64 => Some(tensor(
            input_gradient::<f64>(&g, weight.storage(), dy.storage()),
            x_shape,
            DType::F64,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv2d_gemm;
    use burn_backend::ops::ConvOptions;

    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(7);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    /// Winograd's forward pass and input gradient against im2col + gemm's, which its own tests hold to the
    /// definition; f64 to 1e-12, f32 to 2e-5 relative to the sum of absolute products.
    fn check(x_shape: [usize; 4], c_out: usize, padding: usize) {
        let options = ConvOptions::new([1, 1], [padding, padding], [1, 1], 1);
        let w_shape = [c_out, x_shape[1], 3, 3];
        let g = Geometry::new(&x_shape, &w_shape, &options);
        assert!(applies(&g), "{x_shape:?} {w_shape:?} pad {padding}");
        let x = values(x_shape.iter().product(), 1);
        let w = values(w_shape.iter().product(), 2);
        let dy = values(g.batch * g.channels_out * g.out_h * g.out_w, 3);
        let bias = values(c_out, 4);
        let want_y = conv2d_gemm::forward(&g, &x, &w, Some(&bias));
        let want_dx = conv2d_gemm::input_gradient(&g, &w, &dy);
        let want_dw = conv2d_gemm::weight_gradient(&g, &x, &dy);
        let close = |name: &str, got: &[f64], want: &[f64], tolerance: f64| {
            assert_eq!(got.len(), want.len(), "{name} length");
            for (i, (a, b)) in got.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() <= tolerance,
                    "{name}[{i}]: {a} vs {b} for {x_shape:?} {w_shape:?} pad {padding}"
                );
            }
        };
        close("forward", &forward(&g, &x, &w, Some(&bias)), &want_y, 1e-12);
        close("input gradient", &input_gradient(&g, &w, &dy), &want_dx, 1e-12);
        close("weight gradient", &weight_gradient(&g, &x, &dy), &want_dw, 1e-11);
        // f32: each output is a sum of channels_in * 9 products of values below 0.5 in size.
        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        let scale = |channels: usize| channels as f64 * 9.0 * 0.25;
        close(
            "f32 forward",
            &widen(forward(&g, &f32s(&x), &f32s(&w), Some(&f32s(&bias)))),
            &want_y,
            2e-6 * scale(g.channels_in),
        );
        close(
            "f32 input gradient",
            &widen(input_gradient(&g, &f32s(&w), &f32s(&dy))),
            &want_dx,
            2e-6 * scale(g.channels_out),
        );
        // Each weight gradient is a sum of batch * out_h * out_w products.
        close(
            "f32 weight gradient",
            &widen(weight_gradient(&g, &f32s(&x), &f32s(&dy))),
            &want_dw,
            2e-6 * (g.batch * g.out_h * g.out_w) as f64 * 0.25,
        );
    }

    #[test]
    fn matches_im2col_and_gemm() {
        // ResNet shapes (padding 1), odd sides (a last tile half outside), no padding and padding 2.
        check([2, 16, 8, 8], 16, 1);
        check([3, 16, 7, 5], 24, 1);
        check([2, 17, 9, 6], 16, 0);
        check([2, 16, 5, 7], 18, 2);
        check([1, 32, 3, 3], 16, 1);
        check([2, 16, 3, 4], 16, 0);
        // Over 64 channels both ways: the kernel transform's blocks of 64 columns, the last one partial.
        check([1, 70, 4, 4], 130, 1);
    }

    #[test]
    fn many_images_per_chunk_and_many_chunks_per_image() {
        // 1x1 outputs in one tile each: a chunk holds many images.
        check([70, 16, 3, 3], 16, 0);
        // 48x40 outputs: 480 tiles per image, over several chunks.
        check([2, 16, 48, 40], 16, 1);
    }

    #[test]
    fn chosen_only_where_it_applies_and_pays() {
        let g = |x: [usize; 4], w: [usize; 4], stride, padding, dilation, groups| {
            Geometry::new(
                &x,
                &w,
                &ConvOptions::new([stride; 2], [padding; 2], [dilation; 2], groups),
            )
        };
        assert!(pays(&g([1, 64, 8, 8], [64, 64, 3, 3], 1, 1, 1, 1)));
        assert!(
            pays(&g([1, 16, 32, 32], [16, 16, 3, 3], 1, 1, 1, 1)),
            "a WideResNet's first stage"
        );
        assert!(applies(&g([1, 3, 8, 8], [64, 3, 3, 3], 1, 1, 1, 1)));
        assert!(!pays(&g([1, 3, 8, 8], [64, 3, 3, 3], 1, 1, 1, 1)), "3 input channels");
        assert!(!pays(&g([1, 64, 8, 8], [3, 64, 3, 3], 1, 1, 1, 1)), "3 output channels");
        assert!(applies(&g([1, 512, 4, 4], [512, 512, 3, 3], 1, 1, 1, 1)));
        assert!(!pays(&g([1, 512, 4, 4], [512, 512, 3, 3], 1, 1, 1, 1)), "4x4 pixels");
        assert!(!pays(&g([1, 64, 9, 9], [64, 64, 3, 3], 1, 0, 1, 1)), "7x7 outputs");
        assert!(!applies(&g([1, 64, 8, 8], [64, 64, 3, 3], 2, 1, 1, 1)), "stride 2");
        assert!(!applies(&g([1, 64, 8, 8], [64, 64, 3, 3], 1, 2, 2, 1)), "dilation 2");
        assert!(!applies(&g([1, 64, 8, 8], [64, 32, 3, 3], 1, 1, 1, 2)), "groups");
        assert!(!applies(&g([1, 64, 8, 8], [64, 64, 1, 1], 1, 0, 1, 1)), "1x1");
        assert!(!applies(&g([1, 64, 8, 8], [64, 64, 3, 3], 1, 3, 1, 1)), "padding 3");
    }
}
