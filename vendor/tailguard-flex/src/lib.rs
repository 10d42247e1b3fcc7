//! Burn's CPU backend as tailguard runs it: every tensor operation of the published `burn-flex` 0.21.0, but for 2D
//! convolutions and their gradients, which are batched im2col + gemm products here, or Winograd F(2x2, 3x3) for 3x3
//! stride-1 layers where it pays (`conv2d.rs`), with gemm's AVX-512 kernels on; and one operation Burn's backends
//! lack, BatchNorm on a batch's statistics with its own backward pass ([`batch_norm`]). `tailguard-models`
//! re-exports [`Flex`]; a Burn project that trains with tailguard names that type for the fast CPU path.
//!
//! ```
//! use burn::tensor::Tensor;
//! use tailguard_flex::Flex;
//!
//! let tensor: Tensor<Flex, 2> = Tensor::from_data([[1.0, 2.0], [3.0, 4.0]], &Default::default());
//! assert_eq!(tensor.sum().into_scalar(), 10.0);
//! ```

extern crate alloc;

mod allocator;
pub mod batch_norm;
mod conv2d;
mod conv2d_gemm;
mod delegated;
mod direct;
mod simd;
mod winograd;

use alloc::string::String;

pub use allocator::keep_freed_memory;
use burn_backend::{Backend, BackendTypes, DType, DTypeUsageSet};
pub use burn_flex::{FlexDevice, FlexQTensor, FlexTensor, Layout};
pub use conv2d::paths as conv2d_paths;

type Published = burn_flex::Flex;

/// The CPU backend: burn-flex's tensors, devices and operations, tailguard's 2D convolutions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flex;

impl BackendTypes for Flex {
    type Device = FlexDevice;
    type FloatTensorPrimitive = FlexTensor;
    type FloatElem = f32;
    type IntTensorPrimitive = FlexTensor;
    type IntElem = i32;
    type BoolTensorPrimitive = FlexTensor;
    type BoolElem = bool;
    type QuantizedTensorPrimitive = FlexQTensor;
}

impl Backend for Flex {
    fn name(device: &Self::Device) -> String {
        <Published as Backend>::name(device)
    }

    /// Seeds burn-flex's generator, which every random operation here draws from.
    fn seed(device: &Self::Device, seed: u64) {
        <Published as Backend>::seed(device, seed)
    }

    fn device_count(type_id: u16) -> usize {
        <Published as Backend>::device_count(type_id)
    }

    fn dtype_usage(device: &Self::Device, dtype: DType) -> DTypeUsageSet {
        <Published as Backend>::dtype_usage(device, dtype)
    }
}
