//! The three operations tailguard computes itself: 2D convolution (ungrouped; grouped and depthwise ones keep
//! burn-flex's paths) and both of its gradients (all groups), as im2col + gemm products over the whole batch
//! (`conv2d_gemm.rs`). burn-flex computes the forward pass one image at a time and leaves both gradients to
//! burn-backend's defaults, which waste the cores a CPU training step has (`PATCHED.md`).

use burn_backend::ops::{ConvOptions, ModuleOps};
use burn_flex::FlexTensor;

use crate::conv2d_gemm::{forward_gemm, weight_backward_gemm, x_backward_gemm};

/// `x [N, C_in, H, W]` convolved with `weight [C_out, C_in / groups, kh, kw]` -> `[N, C_out, H', W']`.
pub(crate) fn conv2d(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: ConvOptions<2>,
) -> FlexTensor {
    if options.groups == 1 {
        forward_gemm(x, weight, bias, &options)
    } else {
        <burn_flex::Flex as ModuleOps<burn_flex::Flex>>::conv2d(x, weight, bias, options)
    }
}

/// Gradient of [`conv2d`] with respect to `x` (shape of `x`).
pub(crate) fn conv2d_x_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    x_backward_gemm(x, weight, output_grad, &options)
}

/// Gradient of [`conv2d`] with respect to `weight` (shape of `weight`).
pub(crate) fn conv2d_weight_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    weight_backward_gemm(x, weight, output_grad, &options)
}
