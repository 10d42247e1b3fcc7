//! The per-plane loops of both operations, compiled for the widest vectors the CPU has.

use crate::simd::widest_vectors;

/// Lanes of partial sums, so the loops vectorise (a single running sum is a chain the compiler must keep in order).
pub(super) const LANES: usize = 8;

widest_vectors! {
    /// The sum of `values`, in f64.
    pub(super) fn sum(values: &[f32]) -> f64 {
        let mut lanes = [0.0f64; LANES];
        let chunks = values.chunks_exact(LANES);
        let rest: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
        for chunk in chunks {
            lanes.iter_mut().zip(chunk).for_each(|(lane, &v)| *lane += v as f64);
        }
        lanes.iter().sum::<f64>() + rest
    }
}

widest_vectors! {
    /// The sum of `(v - mean)^2` over `values`, in f64.
    pub(super) fn sum_squares_around(values: &[f32], mean: f32) -> f64 {
        let square = |v: f32| ((v - mean) * (v - mean)) as f64;
        let mut lanes = [0.0f64; LANES];
        let chunks = values.chunks_exact(LANES);
        let rest: f64 = chunks.remainder().iter().map(|&v| square(v)).sum();
        for chunk in chunks {
            lanes.iter_mut().zip(chunk).for_each(|(lane, &v)| *lane += square(v));
        }
        lanes.iter().sum::<f64>() + rest
    }
}

widest_vectors! {
    /// `out = x * scale + shift`, then the ReLU when `relu`.
    pub(super) fn normalise_plane(x: &[f32], out: &mut [f32], scale: f32, shift: f32, relu: bool) {
        let x = &x[..out.len()];
        if relu {
            out.iter_mut().zip(x).for_each(|(o, &v)| *o = (v * scale + shift).max(0.0));
        } else {
            out.iter_mut().zip(x).for_each(|(o, &v)| *o = v * scale + shift);
        }
    }
}

/// A channel's constants in the input gradient `(g - (x - mean) slope - mean_gradient) scale`.
#[derive(Clone, Copy)]
pub(super) struct PlaneGradient {
    pub(super) mean: f32,
    pub(super) slope: f32,
    pub(super) mean_gradient: f32,
    pub(super) scale: f32,
}

/// The output gradient where the ReLU (whose output is `y`) let it through.
#[inline(always)]
fn kept(g: f32, y: f32) -> f32 {
    if y > 0.0 { g } else { 0.0 }
}

widest_vectors! {
    /// The input gradient over one plane, `g` zeroed where the ReLU's output `y` is not positive.
    pub(super) fn gradient_plane(x: &[f32], dy: &[f32], y: Option<&[f32]>, out: &mut [f32], c: PlaneGradient) {
        let len = out.len();
        let (x, dy) = (&x[..len], &dy[..len]);
        let PlaneGradient { mean, slope, mean_gradient, scale } = c;
        match y {
            Some(y) => {
                let y = &y[..len];
                for (((o, &v), &g), &y) in out.iter_mut().zip(x).zip(dy).zip(y) {
                    *o = (kept(g, y) - (v - mean) * slope - mean_gradient) * scale;
                }
            }
            None => {
                for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
                    *o = (g - (v - mean) * slope - mean_gradient) * scale;
                }
            }
        }
    }
}

widest_vectors! {
    /// `(sum g, sum g (x - mean))` over one plane, `g` zeroed where the ReLU's output `y` is not positive. Whole
    /// blocks of [`LANES`] from slices of one length, so the loop has no bounds checks and vectorises.
    pub(super) fn gradient_sums(x: &[f32], dy: &[f32], y: Option<&[f32]>, mean: f32) -> (f64, f64) {
        let mut total = [0.0f64; LANES];
        let mut weighted = [0.0f64; LANES];
        let len = x.len();
        let (xs, dys) = (x.chunks_exact(LANES), dy[..len].chunks_exact(LANES));
        let (x_rest, dy_rest) = (xs.remainder(), dys.remainder());
        let (mut rest_total, mut rest_weighted) = (0.0f64, 0.0f64);
        match y {
            Some(y) => {
                let ys = y[..len].chunks_exact(LANES);
                let y_rest = ys.remainder();
                for ((x, dy), y) in xs.zip(dys).zip(ys) {
                    let lanes = total.iter_mut().zip(weighted.iter_mut());
                    for (((t, w), &v), (&g, &y)) in lanes.zip(x).zip(dy.iter().zip(y)) {
                        let g = kept(g, y);
                        *t += g as f64;
                        *w += ((v - mean) * g) as f64;
                    }
                }
                for ((&v, &g), &y) in x_rest.iter().zip(dy_rest).zip(y_rest) {
                    let g = kept(g, y);
                    rest_total += g as f64;
                    rest_weighted += ((v - mean) * g) as f64;
                }
            }
            None => {
                for (x, dy) in xs.zip(dys) {
                    let lanes = total.iter_mut().zip(weighted.iter_mut());
                    for (((t, w), &v), &g) in lanes.zip(x).zip(dy) {
                        *t += g as f64;
                        *w += ((v - mean) * g) as f64;
                    }
                }
                for (&v, &g) in x_rest.iter().zip(dy_rest) {
                    rest_total += g as f64;
                    rest_weighted += ((v - mean) * g) as f64;
                }
            }
        }
        (total.iter().sum::<f64>() + rest_total, weighted.iter().sum::<f64>() + rest_weighted)
    }
}

widest_vectors! {
    /// `out = g scale` over one plane, `g` zeroed where the ReLU's output `y` is not positive.
    pub(super) fn scale_plane(dy: &[f32], y: Option<&[f32]>, out: &mut [f32], scale: f32) {
        let dy = &dy[..out.len()];
        match y {
            Some(y) => {
                let y = &y[..out.len()];
                for ((o, &g), &y) in out.iter_mut().zip(dy).zip(y) {
                    *o = kept(g, y) * scale;
                }
            }
            None => out.iter_mut().zip(dy).for_each(|(o, &g)| *o = g * scale),
        }
    }
}
