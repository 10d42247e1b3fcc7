//! Square (Andriushchenko et al. 2020), the black-box random-search attack in the L-inf ball, as AutoAttack's
//! standard version runs it (`fra31/auto-attack`, `square.py`, `resc_schedule=False`): start from vertical stripes
//! `x + eps * (+-1)` per column and channel, then 5,000 queries that each try one square of side
//! `round(sqrt(p * H * W))` (the same place and per-channel signs for the whole batch, as the reference draws them)
//! set to `+-2 eps`, projected, kept when the margin `z_y - max_{j != y} z_j` falls or the point becomes
//! misclassified. `p` starts at 0.8 and halves after 10, 50, 200, 500, 1000, 2000, 4000 (and 6000, 8000) queries.
//! A point stops being queried once it is misclassified.
//!
//! In the L2 ball (`square.py`'s L2 branch): the start is a grid of 5 x 5 tiles, each holding the "meta
//! pseudo-Gaussian" pattern (two opposite halves of nested rectangles weighted 1 / k^2) with a random sign per
//! sample and channel, scaled to length eps; each query moves the mass of one window of side
//! `max(round(sqrt(p * H * W)), 3)` (odd) onto another window with a fresh pattern, rescaled so the whole
//! perturbation keeps length eps, and is kept by the same rule.

use burn::config::Config;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Distribution, ElementConversion, Int, Tensor, TensorData};
use tailguard_models::Classifier;

use crate::ball::{Norm, l2_norm, l2_normalize};
use crate::probe::{FrozenModel, Inner, predictions};
use crate::subset::Subset;

/// Configuration of Square; defaults are AutoAttack's standard L-inf settings.
#[derive(Config, Debug, PartialEq)]
pub struct SquareConfig {
    /// Budget, in `norm`.
    #[config(default = "8.0 / 255.0")]
    pub eps: f64,
    /// The ball's norm.
    #[config(default = "Norm::Linf")]
    pub norm: Norm,
    /// Queries per point (after the first).
    #[config(default = 5000)]
    pub queries: usize,
    /// Initial fraction of the image a square covers.
    #[config(default = 0.8)]
    pub p_init: f64,
    /// Seeds the stripes and the squares (AutoAttack uses seed 0).
    #[config(default = 0)]
    pub seed: u64,
}

impl SquareConfig {
    /// The square fraction at query `iteration` (`p_selection` without rescaling).
    pub fn fraction(&self, iteration: usize) -> f64 {
        let halvings = match iteration {
            0..=10 => 0,
            11..=50 => 1,
            51..=200 => 2,
            201..=500 => 3,
            501..=1000 => 4,
            1001..=2000 => 5,
            2001..=4000 => 6,
            4001..=6000 => 7,
            6001..=8000 => 8,
            _ => 9,
        };
        self.p_init / f64::from(1u32 << halvings)
    }

    /// Square on the rows of `images` still flagged `robust` (those rows must hold their clean image). Returns the
    /// adversarial images (unchanged where nothing succeeded) and the robust flags.
    pub fn square<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        robust: Tensor<Inner<B>, 1, Bool>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        let Some(subset) = Subset::of(&robust) else {
            return (images, robust);
        };
        let clean = subset.rows(&images);
        let y = subset.rows(&labels);
        let best = match self.norm {
            Norm::Linf => self.search(model, clean, y.clone()),
            Norm::L2 => self.search_l2(model, clean, y.clone()),
        };
        let still = predictions(model.logits(best.clone())).equal(y);
        subset.merge(images, robust, best, still)
    }

    /// The random search on `clean` (N, C, H, W); returns the best images found.
    fn search<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        clean: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
    ) -> Tensor<Inner<B>, 4> {
        let [n, c, h, w] = clean.dims();
        let device = clean.device();
        let mut draws = SplitMix(self.seed);
        <Inner<B> as Backend>::seed(&device, self.seed);
        let stripes = Tensor::<Inner<B>, 4>::random([n, c, 1, w], Distribution::Uniform(-1.0, 1.0), &device)
            .sign()
            .expand([n, c, h, w]);
        // The ball and the image range in one pair of bounds (the same values as clipping to each in turn, as clean
        // images lie in [0, 1]): one element-wise pass fewer per query.
        let low = clean.clone().sub_scalar(self.eps).clamp_min(0.0);
        let high = clean.clone().add_scalar(self.eps).clamp_max(1.0);
        let mut best = (clean.clone() + stripes.mul_scalar(self.eps)).clamp(0.0, 1.0);
        let margin_of = |x: Tensor<Inner<B>, 4>| margin(model.logits(x), labels.clone());
        let mut best_margin = margin_of(best.clone());
        for iteration in 0..self.queries {
            let active = best_margin.clone().greater_elem(0.0);
            if !any(&active) {
                break;
            }
            let side = ((self.fraction(iteration) * (h * w) as f64).sqrt().round() as usize).clamp(1, h.min(w));
            let top = draws.below(h - side);
            let left = draws.below(w - side);
            let signs: Vec<f32> = (0..c).map(|_| if draws.coin() { 1.0 } else { -1.0 }).collect();
            let square = square_delta::<Inner<B>>(&signs, [c, h, w], top, left, side, 2.0 * self.eps, &device);
            // As (N, C*H*W) + (1, C*H*W): burn-flex adds a row shared by every sample with its vector kernel, while
            // a (1, C, H, W) square expanded over the batch took its element-by-element strided path (10 % of
            // Square's time on the small CNN).
            let candidate = (best.clone().reshape([n, c * h * w]) + square.reshape([1, c * h * w]))
                .reshape([n, c, h, w])
                .max_pair(low.clone())
                .min_pair(high.clone());
            let candidate_margin = margin_of(candidate.clone());
            (best, best_margin) = keep_better((best, best_margin), (candidate, candidate_margin), active);
        }
        best
    }

    /// The L2 random search on `clean` (N, C, H, W); returns the best images found.
    fn search_l2<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        clean: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
    ) -> Tensor<Inner<B>, 4> {
        let [n, c, h, w] = clean.dims();
        let device = clean.device();
        let mut draws = SplitMix(self.seed);
        // The start: 5 x 5 tiles of side h / 5, centred, each a pattern with a sign per sample and channel.
        let tile = h / 5;
        let mut start = vec![0f32; n * c * h * w];
        if tile > 0 {
            let offset = (h - 5 * tile) / 2;
            for row in 0..h / tile {
                for col in 0..w / tile {
                    let pattern = eta(tile, &mut draws);
                    for image in 0..n * c {
                        let sign = if draws.coin() { 1.0 } else { -1.0 };
                        for i in 0..tile {
                            for j in 0..tile {
                                let (y, x) = (offset + row * tile + i, offset + col * tile + j);
                                if y < h && x < w {
                                    start[image * h * w + y * w + x] += sign * pattern[i * tile + j];
                                }
                            }
                        }
                    }
                }
            }
        }
        let start = Tensor::<Inner<B>, 4>::from_data(TensorData::new(start, [n, c, h, w]), &device);
        let place =
            |delta: Tensor<Inner<B>, 4>| (clean.clone() + l2_normalize(delta).mul_scalar(self.eps)).clamp(0.0, 1.0);
        let mut best = place(start);
        let margin_of = |x: Tensor<Inner<B>, 4>| margin(model.logits(x), labels.clone());
        let mut best_margin = margin_of(best.clone());
        // Per sample and channel: the L2 norm over the pixels, (N, C, 1, 1).
        let channel_norm = |x: Tensor<Inner<B>, 4>| x.powi_scalar(2).sum_dim(3).sum_dim(2).sqrt();
        let window = |top: usize, left: usize, side: usize| -> Tensor<Inner<B>, 4> {
            let mut mask = vec![0f32; h * w];
            for y in top..top + side {
                mask[y * w + left..y * w + left + side].fill(1.0);
            }
            Tensor::from_data(TensorData::new(mask, [1, 1, h, w]), &device)
        };
        for iteration in 0..self.queries {
            let active = best_margin.clone().greater_elem(0.0);
            if !any(&active) {
                break;
            }
            let side = ((self.fraction(iteration) * (h * w) as f64).sqrt().round() as usize).max(3);
            let side = if side.is_multiple_of(2) { side + 1 } else { side }.min(h.min(w));
            let delta = best.clone() - clean.clone();
            let (top, left) = (draws.below(h - side), draws.below(w - side));
            let first = window(top, left, side);
            let (top2, left2) = (draws.below(h - side), draws.below(w - side));
            let second = window(top2, left2, side);
            let union = first.clone().max_pair(second);
            let window_norm = channel_norm(delta.clone() * first.clone());
            let image_norm = l2_norm(delta.clone());
            let union_norm = channel_norm(delta.clone() * union.clone());
            // A fresh pattern on the first window, with a sign per sample and channel, plus the mass already there.
            let pattern = eta(side, &mut draws);
            let mut placed = vec![0f32; h * w];
            for i in 0..side {
                for j in 0..side {
                    placed[(top + i) * w + left + j] = pattern[i * side + j];
                }
            }
            let placed = Tensor::<Inner<B>, 4>::from_data(TensorData::new(placed, [1, 1, h, w]), &device);
            let signs: Vec<f32> = (0..n * c).map(|_| if draws.coin() { 1.0 } else { -1.0 }).collect();
            let signs = Tensor::<Inner<B>, 4>::from_data(TensorData::new(signs, [n, c, 1, 1]), &device);
            let fresh = placed.expand([n, c, h, w]) * signs + delta.clone() * first / window_norm.add_scalar(1e-12);
            // Rescaled so the whole perturbation keeps length eps: the room left in the ball, shared by the channels,
            // plus what the two windows held.
            let room = (image_norm.powi_scalar(2).neg().add_scalar(self.eps * self.eps))
                .clamp_min(0.0)
                .div_scalar(c as f64)
                + union_norm.powi_scalar(2);
            let fresh = fresh.clone() / channel_norm(fresh).add_scalar(1e-12) * room.sqrt();
            let candidate = place(delta * union.neg().add_scalar(1.0) + fresh);
            let candidate_margin = margin_of(candidate.clone());
            (best, best_margin) = keep_better((best, best_margin), (candidate, candidate_margin), active);
        }
        best
    }
}

/// The reference's "meta pseudo-Gaussian" pattern of side `s` (row-major, unit L2 norm): nested rectangles weighted
/// 1 / k^2 on the top half and their negation on the bottom half, transposed on a coin flip.
fn eta(s: usize, draws: &mut SplitMix) -> Vec<f32> {
    let mut delta = vec![0f64; s * s];
    let top = s / 2;
    let halves = [(0, top, 1.0), (top, s - top, -1.0)];
    for (first_row, rows, sign) in halves {
        let rect = eta_rectangles(rows, s);
        for i in 0..rows {
            for j in 0..s {
                delta[(first_row + i) * s + j] = sign * rect[i * s + j];
            }
        }
    }
    let norm = delta.iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    let mut out: Vec<f32> = delta.iter().map(|v| (v / norm) as f32).collect();
    if draws.coin() {
        let copy = out.clone();
        for i in 0..s {
            for j in 0..s {
                out[i * s + j] = copy[j * s + i];
            }
        }
    }
    out
}

/// `eta_rectangles(x, y)` of the reference's L2 branch: rectangles growing from the centre, each adding
/// 1 / (k + 1)^2, normalised to unit L2 norm (all zero for an empty block).
fn eta_rectangles(x: usize, y: usize) -> Vec<f64> {
    let mut delta = vec![0f64; x * y];
    if x == 0 || y == 0 {
        return delta;
    }
    let (xc, yc) = (x / 2 + 1, y / 2 + 1);
    let (mut r, mut c) = (xc as i64 - 1, yc as i64 - 1);
    for k in 0..xc.max(yc) as i64 {
        let (r0, r1) = (r.max(0) as usize, ((r + 2 * k + 1).min(x as i64)).max(0) as usize);
        let (c0, c1) = (c.max(0) as usize, ((c + 2 * k + 1).min(y as i64)).max(0) as usize);
        for i in r0..r1 {
            for j in c0..c1 {
                delta[i * y + j] += 1.0 / ((k + 1) * (k + 1)) as f64;
            }
        }
        r -= 1;
        c -= 1;
    }
    let norm = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        delta.iter_mut().for_each(|v| *v /= norm);
    }
    delta
}

/// The search's acceptance rule: a candidate replaces the best image where its margin fell or the point is
/// misclassified, for the points still being queried (`active`). Takes and returns (images, margins).
fn keep_better<B: Backend>(
    (best, best_margin): (Tensor<B, 4>, Tensor<B, 1>),
    (candidate, candidate_margin): (Tensor<B, 4>, Tensor<B, 1>),
    active: Tensor<B, 1, Bool>,
) -> (Tensor<B, 4>, Tensor<B, 1>) {
    let [n, c, h, w] = best.dims();
    let improved = candidate_margin
        .clone()
        .lower(best_margin.clone())
        .bool_or(candidate_margin.clone().lower_equal_elem(0.0))
        .bool_and(active);
    let rows = improved.clone().reshape([n, 1, 1, 1]).expand([n, c, h, w]);
    (
        best.mask_where(rows, candidate),
        best_margin.mask_where(improved, candidate_margin),
    )
}

/// `z_y - max_{j != y} z_j` per row, (N).
fn margin<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, classes] = logits.dims();
    let labels = labels.reshape([n, 1]);
    let true_logit = logits.clone().gather(1, labels.clone());
    let is_true = labels.expand([n, classes]).equal(
        Tensor::arange(0..classes as i64, &logits.device())
            .unsqueeze::<2>()
            .expand([n, classes]),
    );
    let others = logits.mask_fill(is_true, f32::NEG_INFINITY).max_dim(1);
    (true_logit - others).reshape([n])
}

/// Whether any flag is set (one small host read per query).
fn any<B: Backend>(flags: &Tensor<B, 1, Bool>) -> bool {
    flags.clone().int().sum().into_scalar().elem::<i64>() > 0
}

/// A (C, H, W) tensor that is `value * signs[c]` on the square and 0 elsewhere.
fn square_delta<B: Backend>(
    signs: &[f32],
    [c, h, w]: [usize; 3],
    top: usize,
    left: usize,
    side: usize,
    value: f64,
    device: &B::Device,
) -> Tensor<B, 3> {
    let mut data = vec![0f32; c * h * w];
    for (channel, sign) in signs.iter().enumerate() {
        for row in top..top + side {
            let start = channel * h * w + row * w + left;
            data[start..start + side].fill(sign * value as f32);
        }
    }
    Tensor::from_data(TensorData::new(data, [c, h, w]), device)
}

/// SplitMix64 for the square positions and signs (host-side, so every backend draws the same squares).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound`, or 0 when `bound` is 0 (the reference's `random_int(0, 0)`).
    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            0
        } else {
            (self.next() % bound as u64) as usize
        }
    }

    fn coin(&mut self) -> bool {
        self.next() >> 63 == 1
    }
}
