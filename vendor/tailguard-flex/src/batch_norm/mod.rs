//! BatchNorm as single operations with their own backward passes, optionally followed by a ReLU: on a batch's
//! statistics ([`batch_norm_on_batch`]) and on running statistics folded into one scale and shift per channel
//! ([`channel_affine`]).
//!
//! Burn 0.21 has no BatchNorm operation in its backend traits: a BatchNorm built from tensor operations records a
//! dozen element-wise and reduction steps on the autodiff tape, each a full pass over the activations forward and
//! again backward. Here the batch-statistics forward pass is three passes (the mean, the variance, the normalised
//! output with the ReLU applied) and its backward pass two (two sums per channel, then the input gradient); the
//! running-statistics form is one pass each way (and the two sums when the scale and shift need gradients). Each is
//! one step on the tape, through burn-autodiff's backward-operation mechanism.
//!
//! Rust has no specialisation, so both functions are generic over the backend and take the fused path when the
//! backend is this crate's [`Flex`] or `Autodiff<Flex>` (checked by type, at no cost) and the tensors are f32;
//! otherwise they hand the input back and the caller composes the operation from tensor operations.

mod affine;
mod kernels;
mod on_batch;

use core::any::{Any, TypeId};

use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
use burn_backend::{BackendTypes, DType, TensorMetadata, TensorPrimitive};
use burn_flex::FlexTensor;
use burn_std::{Bytes, Shape};
use burn_tensor::Tensor;
use burn_tensor::backend::Backend;

pub use affine::channel_affine;
pub use on_batch::{BatchNormOnBatch, batch_norm_on_batch};

use crate::Flex;

/// Which of the fused operations' backends `B` is.
enum Fused {
    /// [`Flex`] itself: forward passes only.
    Flex,
    /// `Autodiff<Flex>` without checkpointing (burn's default).
    Autodiff,
    /// `Autodiff<Flex>` with burn-autodiff's balanced checkpointing.
    AutodiffCheckpointed,
}

impl Fused {
    /// `None` for every other backend.
    fn of<B: Backend>() -> Option<Self> {
        let id = TypeId::of::<B>();
        if id == TypeId::of::<Flex>() {
            Some(Fused::Flex)
        } else if id == TypeId::of::<Autodiff<Flex, NoCheckpointing>>() {
            Some(Fused::Autodiff)
        } else if id == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>() {
            Some(Fused::AutodiffCheckpointed)
        } else {
            None
        }
    }
}

/// Whether `x` and the per-channel vectors are f32 with one value per channel.
fn fusable<B: Backend>(x: &Tensor<B, 4>, per_channel: [&Tensor<B, 1>; 2]) -> bool {
    let channels = x.dims()[1];
    x.dtype() == DType::F32
        && per_channel
            .iter()
            .all(|v| v.dtype() == DType::F32 && v.dims() == [channels])
}

/// `value` as `U`, which the caller has checked is the same type as `T`.
fn cast<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .expect("cast between types checked equal")
}

fn float<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> B::FloatTensorPrimitive {
    tensor.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(primitive: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// burn-autodiff's tensor (its type is not exported by name; its fields are).
type AutodiffTensor = <Autodiff<Flex> as BackendTypes>::FloatTensorPrimitive;

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
