//! BatchNorm on running statistics, folded into one scale and one shift per channel (then a ReLU), as one operation.

use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy, NoCheckpointing};
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::{DType, TensorMetadata};
use burn_flex::FlexTensor;
use burn_std::Bytes;
use burn_tensor::Tensor;
use burn_tensor::backend::Backend;

use super::kernels::{gradient_sums, normalise_plane, scale_plane};
use super::{AutodiffTensor, Extent, Fused, cast, float, fusable, per_channel, per_image, vector, wrap};
use crate::Flex;

/// `x * scale + shift` per channel of `x` (N, C, H, W) with `scale` and `shift` (C), then a ReLU when `relu`:
/// BatchNorm in inference mode, its running statistics folded into the scale and shift. One operation (one step on
/// the autodiff tape, differentiable with respect to all three inputs). `Err(x)` as for
/// [`super::batch_norm_on_batch`]: another backend, not f32, or not one scale and shift per channel.
pub fn channel_affine<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
    relu: bool,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    match Fused::of::<B>() {
        Some(_) if !fusable(&x, [&scale, &shift]) => Err(x),
        Some(Fused::Flex) => Ok(cast(on_flex(cast(x), cast(scale), cast(shift), relu))),
        Some(Fused::Autodiff) => Ok(cast(on_autodiff::<NoCheckpointing>(
            cast(x),
            cast(scale),
            cast(shift),
            relu,
        ))),
        Some(Fused::AutodiffCheckpointed) => Ok(cast(on_autodiff::<BalancedCheckpointing>(
            cast(x),
            cast(scale),
            cast(shift),
            relu,
        ))),
        None => Err(x),
    }
}

fn on_flex(x: Tensor<Flex, 4>, scale: Tensor<Flex, 1>, shift: Tensor<Flex, 1>, relu: bool) -> Tensor<Flex, 4> {
    wrap(apply(&float(x), &float(scale), &float(shift), relu))
}

fn on_autodiff<C: CheckpointStrategy>(
    x: Tensor<Autodiff<Flex, C>, 4>,
    scale: Tensor<Autodiff<Flex, C>, 1>,
    shift: Tensor<Autodiff<Flex, C>, 1>,
    relu: bool,
) -> Tensor<Autodiff<Flex, C>, 4> {
    let (x, scale, shift): (AutodiffTensor, AutodiffTensor, AutodiffTensor) = (float(x), float(scale), float(shift));
    let output = apply(&x.primitive, &scale.primitive, &shift.primitive, relu);
    let output = match ChannelAffineBackward
        .prepare::<C>([x.node.clone(), scale.node.clone(), shift.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = AffineState {
                x: x.primitive,
                scale: scale.primitive,
                output: relu.then(|| output.clone()),
            };
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    wrap(output)
}

/// `x * scale + shift` per channel, then the ReLU when `relu`.
fn apply(x: &FlexTensor, scale: &FlexTensor, shift: &FlexTensor, relu: bool) -> FlexTensor {
    let extent = Extent::of(x);
    let x = x.to_contiguous();
    let (scale, shift) = (scale.to_contiguous(), shift.to_contiguous());
    let (xs, scale, shift): (&[f32], &[f32], &[f32]) = (x.storage(), scale.storage(), shift.storage());
    let mut y = vec![0.0f32; xs.len()];
    per_image(&mut y, extent, |n, image| {
        for c in 0..extent.channels {
            let out = &mut image[c * extent.plane..(c + 1) * extent.plane];
            normalise_plane(&xs[extent.segment(n, c)], out, scale[c], shift[c], relu);
        }
    });
    FlexTensor::new(
        Bytes::from_elems(y),
        burn_flex::Layout::contiguous(x.shape()),
        DType::F32,
    )
}

/// What the backward pass needs: the input (for the scale's gradient), the scale, and the output when a ReLU
/// followed (its mask).
#[derive(Clone, Debug)]
struct AffineState {
    x: FlexTensor,
    scale: FlexTensor,
    output: Option<FlexTensor>,
}

#[derive(Debug)]
struct ChannelAffineBackward;

impl Backward<Flex, 3> for ChannelAffineBackward {
    type State = AffineState;

    /// `dx = g scale`, `dscale = sum g x`, `dshift = sum g`, with `g` the output gradient (zero where the ReLU cut).
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_scale, node_shift] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let state = ops.state;
        let extent = Extent::of(&state.x);
        let output = state.output.as_ref().map(|output| output.to_contiguous());
        let ys: Option<&[f32]> = output.as_ref().map(|output| output.storage());
        let dys: &[f32] = dy.storage();
        if node_scale.is_some() || node_shift.is_some() {
            let x = state.x.to_contiguous();
            let xs: &[f32] = x.storage();
            let sums: Vec<(f64, f64)> = per_channel(extent.channels, |c| {
                (0..extent.images).fold((0.0, 0.0), |(total, weighted), n| {
                    let range = extent.segment(n, c);
                    let (t, w) = gradient_sums(&xs[range.clone()], &dys[range.clone()], ys.map(|ys| &ys[range]), 0.0);
                    (total + t, weighted + w)
                })
            });
            if let Some(node) = node_scale {
                grads.register::<Flex>(node.id, vector(sums.iter().map(|&(_, w)| w as f32).collect()));
            }
            if let Some(node) = node_shift {
                grads.register::<Flex>(node.id, vector(sums.iter().map(|&(t, _)| t as f32).collect()));
            }
        }
        if let Some(node) = node_x {
            let scale = state.scale.to_contiguous();
            let scale: &[f32] = scale.storage();
            let mut dx = vec![0.0f32; dys.len()];
            per_image(&mut dx, extent, |n, image| {
                for c in 0..extent.channels {
                    let range = extent.segment(n, c);
                    let out = &mut image[c * extent.plane..(c + 1) * extent.plane];
                    scale_plane(&dys[range.clone()], ys.map(|ys| &ys[range]), out, scale[c]);
                }
            });
            let dx = FlexTensor::new(
                Bytes::from_elems(dx),
                burn_flex::Layout::contiguous(dy.shape()),
                DType::F32,
            );
            grads.register::<Flex>(node.id, dx);
        }
    }
}
