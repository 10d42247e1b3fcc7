//! BatchNorm on a batch's statistics as one operation with its own backward pass, optionally followed by a ReLU.
//!
//! Burn 0.21 has no BatchNorm operation in its backend traits: a BatchNorm built from tensor operations records a
//! dozen element-wise and reduction steps on the autodiff tape, each a full pass over the activations forward and
//! again backward. Here the forward pass is three passes (the mean, the variance, the normalised output with the
//! ReLU applied) and the backward pass two (two sums per channel, then the input gradient), registered on the tape
//! as one step through burn-autodiff's backward-operation mechanism.
//!
//! Rust has no specialisation, so [`batch_norm_on_batch`] is generic over the backend and takes the fused path when
//! the backend is this crate's [`Flex`] or `Autodiff<Flex>` (checked by type, at no cost) and the tensors are f32;
//! otherwise it hands the input back and the caller composes the operation from tensor operations.

use core::any::{Any, TypeId};

use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::{AutodiffBackend, BackendTypes, DType, TensorMetadata, TensorPrimitive};
use burn_flex::FlexTensor;
use burn_std::{Bytes, Shape};
use burn_tensor::Tensor;
use burn_tensor::backend::Backend;

use crate::Flex;
use crate::simd::widest_vectors;

/// What [`batch_norm_on_batch`] returns: the normalised activations and the statistics they were normalised with,
/// for the running averages (not differentiated).
#[derive(Debug)]
pub struct BatchNormOnBatch<B: Backend> {
    /// `gamma * (x - mean) / sqrt(variance + epsilon) + beta`, then the ReLU if asked, (N, C, H, W).
    pub output: Tensor<B, 4>,
    /// The batch's mean per channel (C).
    pub mean: Tensor<B, 1>,
    /// The batch's biased variance per channel (C), as PyTorch normalises with it.
    pub variance: Tensor<B, 1>,
}

/// BatchNorm of `x` (N, C, H, W) with its own statistics over (N, H, W), scale `gamma` (C) and shift `beta` (C),
/// followed by a ReLU when `relu`, as one operation (one step on the autodiff tape, differentiable with respect to
/// all three inputs). `Err(x)` when the backend is neither [`Flex`] nor `Autodiff<Flex>` (with or without
/// checkpointing), a tensor is not f32 or `gamma` and `beta` do not hold one value per channel: compose the operation
/// from tensor operations then.
pub fn batch_norm_on_batch<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    relu: bool,
) -> Result<BatchNormOnBatch<B>, Tensor<B, 4>> {
    let channels = x.dims()[1];
    if [x.dtype(), gamma.dtype(), beta.dtype()] != [DType::F32; 3]
        || gamma.dims() != [channels]
        || beta.dims() != [channels]
    {
        // Other element types, and shapes the composition will report in Burn's words.
        return Err(x);
    }
    let options = Options { epsilon, relu };
    let id = TypeId::of::<B>();
    if id == TypeId::of::<Flex>() {
        Ok(cast_output(on_flex(cast(x), cast(gamma), cast(beta), options)))
    } else if id == TypeId::of::<Autodiff<Flex, NoCheckpointing>>() {
        Ok(cast_output(on_autodiff::<NoCheckpointing>(
            cast(x),
            cast(gamma),
            cast(beta),
            options,
        )))
    } else if id == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>() {
        Ok(cast_output(on_autodiff::<BalancedCheckpointing>(
            cast(x),
            cast(gamma),
            cast(beta),
            options,
        )))
    } else {
        Err(x)
    }
}

/// `value` as `U`, which the caller has checked is the same type as `T`.
fn cast<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .expect("cast between types checked equal")
}

/// The same output under the backend name the caller used (the types were checked equal).
fn cast_output<B1: Backend, B2: Backend>(out: BatchNormOnBatch<B1>) -> BatchNormOnBatch<B2> {
    BatchNormOnBatch {
        output: cast(out.output),
        mean: cast(out.mean),
        variance: cast(out.variance),
    }
}

#[derive(Clone, Copy, Debug)]
struct Options {
    epsilon: f64,
    relu: bool,
}

fn float<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> B::FloatTensorPrimitive {
    tensor.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(primitive: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

fn on_flex(
    x: Tensor<Flex, 4>,
    gamma: Tensor<Flex, 1>,
    beta: Tensor<Flex, 1>,
    options: Options,
) -> BatchNormOnBatch<Flex> {
    let (x, gamma, beta) = (float(x), float(gamma), float(beta));
    let forward = forward(&x, &gamma, &beta, options);
    BatchNormOnBatch {
        output: wrap(forward.output),
        mean: wrap(vector(forward.mean)),
        variance: wrap(vector(forward.variance)),
    }
}

fn on_autodiff<C: CheckpointStrategy>(
    x: Tensor<Autodiff<Flex, C>, 4>,
    gamma: Tensor<Autodiff<Flex, C>, 1>,
    beta: Tensor<Autodiff<Flex, C>, 1>,
    options: Options,
) -> BatchNormOnBatch<Autodiff<Flex, C>> {
    let (x, gamma, beta): (AutodiffTensor, AutodiffTensor, AutodiffTensor) = (float(x), float(gamma), float(beta));
    let out = forward(&x.primitive, &gamma.primitive, &beta.primitive, options);
    let (mean, variance) = (
        wrap_untracked(vector(out.mean.clone())),
        wrap_untracked(vector(out.variance.clone())),
    );
    let output = match BatchNormBackward
        .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = BatchNormState {
                x: x.primitive,
                gamma: gamma.primitive,
                output: options.relu.then(|| out.output.clone()),
                mean: out.mean,
                inverse_std: out.inverse_std,
            };
            prep.finish(state, out.output)
        }
        OpsKind::UnTracked(prep) => prep.finish(out.output),
    };
    BatchNormOnBatch {
        output: wrap(output),
        mean,
        variance,
    }
}

fn wrap_untracked<C: CheckpointStrategy>(primitive: FlexTensor) -> Tensor<Autodiff<Flex, C>, 1> {
    wrap(<Autodiff<Flex, C> as AutodiffBackend>::from_inner(primitive))
}

/// burn-autodiff's tensor (its type is not exported by name; its fields are).
type AutodiffTensor = <Autodiff<Flex> as BackendTypes>::FloatTensorPrimitive;

/// What the backward pass needs: the input, the scale, the output when a ReLU followed (its mask), and the
/// statistics the forward pass normalised with.
#[derive(Clone, Debug)]
struct BatchNormState {
    x: FlexTensor,
    gamma: FlexTensor,
    output: Option<FlexTensor>,
    mean: Vec<f32>,
    inverse_std: Vec<f32>,
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = BatchNormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let gradients = backward(&ops.state, &dy);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, gradients.x);
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, vector(gradients.gamma));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, vector(gradients.beta));
        }
    }
}

/// A (C) f32 tensor.
fn vector(values: Vec<f32>) -> FlexTensor {
    let len = values.len();
    FlexTensor::new(
        Bytes::from_elems(values),
        burn_flex::Layout::contiguous(Shape::from(vec![len])),
        DType::F32,
    )
}

/// The activations as `[N, C, plane]` with `plane = H * W`.
#[derive(Clone, Copy)]
struct Extent {
    images: usize,
    channels: usize,
    plane: usize,
}

impl Extent {
    fn of(x: &FlexTensor) -> Self {
        let shape = x.shape();
        Extent {
            images: shape[0],
            channels: shape[1],
            plane: shape[2] * shape[3],
        }
    }

    /// Values per channel.
    fn count(&self) -> usize {
        self.images * self.plane
    }

    /// Channel `c`'s plane in image `n`.
    fn segment(&self, n: usize, c: usize) -> core::ops::Range<usize> {
        let at = (n * self.channels + c) * self.plane;
        at..at + self.plane
    }
}

struct Forward {
    output: FlexTensor,
    mean: Vec<f32>,
    variance: Vec<f32>,
    inverse_std: Vec<f32>,
}

fn forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, options: Options) -> Forward {
    let extent = Extent::of(x);
    let x = x.to_contiguous();
    let (gamma, beta) = (gamma.to_contiguous(), beta.to_contiguous());
    let (xs, gamma, beta): (&[f32], &[f32], &[f32]) = (x.storage(), gamma.storage(), beta.storage());
    let count = extent.count() as f64;
    // Two passes, as PyTorch's CPU BatchNorm computes them (sums in f64): the mean, then the mean square around it.
    let mean: Vec<f32> = per_channel(extent.channels, |c| {
        let sum: f64 = (0..extent.images).map(|n| sum(&xs[extent.segment(n, c)])).sum();
        (sum / count) as f32
    });
    let variance: Vec<f64> = per_channel(extent.channels, |c| {
        let m = mean[c];
        let sum: f64 = (0..extent.images)
            .map(|n| sum_squares_around(&xs[extent.segment(n, c)], m))
            .sum();
        sum / count
    });
    let inverse_std: Vec<f32> = variance
        .iter()
        .map(|&v| (1.0 / (v + options.epsilon).sqrt()) as f32)
        .collect();
    let mut y = vec![0.0f32; xs.len()];
    per_image(&mut y, extent, |n, image| {
        for c in 0..extent.channels {
            // PyTorch's form: one scale and one shift per channel.
            let scale = inverse_std[c] * gamma[c];
            let shift = beta[c] - mean[c] * scale;
            let out = &mut image[c * extent.plane..(c + 1) * extent.plane];
            normalise_plane(&xs[extent.segment(n, c)], out, scale, shift, options.relu);
        }
    });
    let shape = x.shape();
    Forward {
        output: FlexTensor::new(Bytes::from_elems(y), burn_flex::Layout::contiguous(shape), DType::F32),
        mean,
        variance: variance.iter().map(|&v| v as f32).collect(),
        inverse_std,
    }
}

struct BatchNormGradients {
    x: FlexTensor,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// `dbeta = sum g`, `dgamma = sum g x̂`, `dx = gamma / std (g - mean g - x̂ mean(g x̂))` with `g` the output
/// gradient (zero where the ReLU cut) and `x̂ = (x - mean) / std`.
fn backward(state: &BatchNormState, dy: &FlexTensor) -> BatchNormGradients {
    let extent = Extent::of(&state.x);
    let (x, dy) = (state.x.to_contiguous(), dy.to_contiguous());
    let gamma = state.gamma.to_contiguous();
    let output = state.output.as_ref().map(|output| output.to_contiguous());
    let (xs, dys, gamma): (&[f32], &[f32], &[f32]) = (x.storage(), dy.storage(), gamma.storage());
    let ys: Option<&[f32]> = output.as_ref().map(|output| output.storage());
    let (mean, inverse_std) = (&state.mean, &state.inverse_std);
    // Per channel: sum g and sum g (x - mean), in f64 as PyTorch sums them.
    let sums: Vec<(f64, f64)> = per_channel(extent.channels, |c| {
        let (mut total, mut weighted) = (0.0f64, 0.0f64);
        for n in 0..extent.images {
            let range = extent.segment(n, c);
            let (t, w) = gradient_sums(
                &xs[range.clone()],
                &dys[range.clone()],
                ys.map(|ys| &ys[range]),
                mean[c],
            );
            total += t;
            weighted += w;
        }
        (total, weighted)
    });
    let count = extent.count() as f64;
    let mut dx = vec![0.0f32; xs.len()];
    per_image(&mut dx, extent, |n, image| {
        for c in 0..extent.channels {
            let (total, weighted) = sums[c];
            let s = inverse_std[c] as f64;
            let (mean_g, slope) = ((total / count) as f32, (weighted * s * s / count) as f32);
            let scale = gamma[c] * inverse_std[c];
            let m = mean[c];
            let range = extent.segment(n, c);
            let out = &mut image[c * extent.plane..(c + 1) * extent.plane];
            let kept = ys.map(|ys| &ys[range.clone()]);
            let affine = PlaneGradient {
                mean: m,
                slope,
                mean_gradient: mean_g,
                scale,
            };
            gradient_plane(&xs[range.clone()], &dys[range], kept, out, affine);
        }
    });
    BatchNormGradients {
        x: FlexTensor::new(
            Bytes::from_elems(dx),
            burn_flex::Layout::contiguous(x.shape()),
            DType::F32,
        ),
        gamma: sums
            .iter()
            .zip(inverse_std)
            .map(|(&(_, weighted), &s)| (weighted * s as f64) as f32)
            .collect(),
        beta: sums.iter().map(|&(total, _)| total as f32).collect(),
    }
}

/// Lanes of partial sums, so the loops vectorise (a single running sum is a chain the compiler must keep in order).
const LANES: usize = 8;

widest_vectors! {
    /// The sum of `values`, in f64.
    fn sum(values: &[f32]) -> f64 {
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
    fn sum_squares_around(values: &[f32], mean: f32) -> f64 {
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
    fn normalise_plane(x: &[f32], out: &mut [f32], scale: f32, shift: f32, relu: bool) {
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
struct PlaneGradient {
    mean: f32,
    slope: f32,
    mean_gradient: f32,
    scale: f32,
}

/// The output gradient where the ReLU (whose output is `y`) let it through.
#[inline(always)]
fn kept(g: f32, y: f32) -> f32 {
    if y > 0.0 { g } else { 0.0 }
}

widest_vectors! {
    /// The input gradient over one plane, `g` zeroed where the ReLU's output `y` is not positive.
    fn gradient_plane(x: &[f32], dy: &[f32], y: Option<&[f32]>, out: &mut [f32], c: PlaneGradient) {
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
    fn gradient_sums(x: &[f32], dy: &[f32], y: Option<&[f32]>, mean: f32) -> (f64, f64) {
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

/// `f(c)` for every channel, channels spread over the threads.
fn per_channel<T: Send>(channels: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..channels).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        (0..channels).map(f).collect()
    }
}

/// `f(n, image n's values)` for every image of `data` (N, C, plane), images spread over the threads.
fn per_image(data: &mut [f32], extent: Extent, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let len = (extent.channels * extent.plane).max(1);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(len).enumerate().for_each(|(n, image)| f(n, image));
    }
    #[cfg(not(feature = "rayon"))]
    {
        data.chunks_mut(len).enumerate().for_each(|(n, image)| f(n, image));
    }
}
