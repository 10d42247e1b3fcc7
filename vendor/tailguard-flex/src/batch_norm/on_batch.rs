//! BatchNorm on a batch's statistics (then a ReLU) as one operation.

use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::{AutodiffBackend, DType, TensorMetadata};
use burn_flex::FlexTensor;
use burn_std::Bytes;
use burn_tensor::Tensor;
use burn_tensor::backend::Backend;

use super::kernels::{PlaneGradient, gradient_plane, gradient_sums, normalise_plane, sum, sum_squares_around};
use super::{AutodiffTensor, Extent, Fused, cast, float, fusable, per_channel, per_image, vector, wrap};
use crate::Flex;

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
    let options = Options { epsilon, relu };
    match Fused::of::<B>() {
        Some(_) if !fusable(&x, [&gamma, &beta]) => Err(x),
        Some(Fused::Flex) => Ok(cast_output(on_flex(cast(x), cast(gamma), cast(beta), options))),
        Some(Fused::Autodiff) => {
            let out = on_autodiff::<NoCheckpointing>(cast(x), cast(gamma), cast(beta), options);
            Ok(cast_output(out))
        }
        Some(Fused::AutodiffCheckpointed) => {
            let out = on_autodiff::<BalancedCheckpointing>(cast(x), cast(gamma), cast(beta), options);
            Ok(cast_output(out))
        }
        // Other backends, other element types, and shapes the composition will report in Burn's words.
        None => Err(x),
    }
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
