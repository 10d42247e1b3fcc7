//! The three operations tailguard computes itself: 2D convolution (ungrouped; grouped and depthwise ones keep
//! burn-flex's paths) and both of its gradients (all groups). 3x3 stride-1 convolutions with at least 16 channels
//! and 8x8 pixels take Winograd's F(2x2, 3x3) for the forward pass and both gradients (`winograd.rs`), where it
//! was measured faster; thin layers (a kernel over 1x1 and at most 144 input values per output value: an RGB first
//! layer, the small CNN's first two) take a direct forward pass without a column buffer (`direct.rs`); the rest are
//! im2col + gemm products over the whole batch (`conv2d_gemm.rs`). burn-flex computes the forward pass one image at a time and
//! leaves both gradients to burn-backend's defaults, which waste the cores a CPU training step has (`PATCHED.md`).

use burn_backend::ops::{ConvOptions, ModuleOps};
use burn_flex::FlexTensor;

use crate::conv2d_gemm::{forward_gemm, weight_backward_gemm, x_backward_gemm};
use crate::direct::forward_direct;
use crate::winograd::{forward_winograd, pays, weight_backward_winograd, x_backward_winograd};

/// `x [N, C_in, H, W]` convolved with `weight [C_out, C_in / groups, kh, kw]` -> `[N, C_out, H', W']`.
pub(crate) fn conv2d(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: ConvOptions<2>,
) -> FlexTensor {
    if let Some(y) = forward_winograd(&x, &weight, bias.as_ref(), &options, pays) {
        y
    } else if let Some(y) = forward_direct(&x, &weight, bias.as_ref(), &options, crate::direct::pays) {
        y
    } else if options.groups == 1 {
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
    match x_backward_winograd(&x, &weight, &output_grad, &options, pays) {
        Some(dx) => dx,
        None => x_backward_gemm(x, weight, output_grad, &options),
    }
}

/// Gradient of [`conv2d`] with respect to `weight` (shape of `weight`).
pub(crate) fn conv2d_weight_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    match weight_backward_winograd(&x, &weight, &output_grad, &options, pays) {
        Some(dw) => dw,
        None => weight_backward_gemm(x, weight, output_grad, &options),
    }
}

/// Each path on its own, whatever the shape, for benchmarks and comparisons (`examples/conv2d_layers.rs`);
/// [`crate::Flex`] picks among them per shape as above.
pub mod paths {
    use burn_backend::ops::ConvOptions;
    use burn_flex::FlexTensor;

    /// The forward pass as im2col + gemm (groups 1).
    pub fn forward_im2col(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        options: &ConvOptions<2>,
    ) -> FlexTensor {
        crate::conv2d_gemm::forward_gemm(x, weight, bias, options)
    }

    /// The forward pass with Winograd F(2x2, 3x3), or `None` where it does not apply (not 3x3 stride 1, groups,
    /// dilation, padding over 2, or neither f32 nor f64); unlike [`crate::Flex`], also where it does not pay.
    pub fn forward_winograd(
        x: &FlexTensor,
        weight: &FlexTensor,
        bias: Option<&FlexTensor>,
        options: &ConvOptions<2>,
    ) -> Option<FlexTensor> {
        crate::winograd::forward_winograd(x, weight, bias, options, crate::winograd::applies)
    }

    /// The forward pass computed directly, without a column buffer, or `None` where it does not apply (groups,
    /// dilation, a stride over 2, a kernel over 7x7, or not f32); unlike [`crate::Flex`], also where it does not
    /// pay.
    pub fn forward_direct(
        x: &FlexTensor,
        weight: &FlexTensor,
        bias: Option<&FlexTensor>,
        options: &ConvOptions<2>,
    ) -> Option<FlexTensor> {
        crate::direct::forward_direct(x, weight, bias, options, |_| true)
    }

    /// Whether [`crate::Flex`] takes the direct forward pass for this convolution (when Winograd does not
    /// apply): a thin layer, a kernel over 1x1 and at most 144 values of `C_in * kh * kw`.
    pub fn direct_chosen(x_shape: [usize; 4], weight_shape: [usize; 4], options: &ConvOptions<2>) -> bool {
        let geometry = crate::conv2d_gemm::Geometry::new(&x_shape, &weight_shape, options);
        !crate::winograd::pays(&geometry) && crate::direct::pays(&geometry)
    }

    /// Whether [`crate::Flex`] takes Winograd for this convolution and its gradients (3x3 stride 1,
    /// at least 16 channels both ways and 8x8 output pixels); `x_shape` `[N, C_in, H, W]`, `weight_shape`
    /// `[C_out, C_in / groups, kh, kw]`.
    pub fn winograd_chosen(x_shape: [usize; 4], weight_shape: [usize; 4], options: &ConvOptions<2>) -> bool {
        crate::winograd::pays(&crate::conv2d_gemm::Geometry::new(&x_shape, &weight_shape, options))
    }

    /// The input gradient as gemm + col2im.
    pub fn x_backward_im2col(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        options: &ConvOptions<2>,
    ) -> FlexTensor {
        crate::conv2d_gemm::x_backward_gemm(x, weight, output_grad, options)
    }

    /// The weight gradient as im2col + gemm.
    pub fn weight_backward_im2col(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        options: &ConvOptions<2>,
    ) -> FlexTensor {
        crate::conv2d_gemm::weight_backward_gemm(x, weight, output_grad, options)
    }

    /// The weight gradient with Winograd F(2x2, 3x3), or `None` where it does not apply.
    pub fn weight_backward_winograd(
        x: &FlexTensor,
        weight: &FlexTensor,
        output_grad: &FlexTensor,
        options: &ConvOptions<2>,
    ) -> Option<FlexTensor> {
        crate::winograd::weight_backward_winograd(x, weight, output_grad, options, crate::winograd::applies)
    }

    /// The input gradient with Winograd F(2x2, 3x3), or `None` where it does not apply.
    pub fn x_backward_winograd(
        x: &FlexTensor,
        weight: &FlexTensor,
        output_grad: &FlexTensor,
        options: &ConvOptions<2>,
    ) -> Option<FlexTensor> {
        crate::winograd::x_backward_winograd(x, weight, output_grad, options, crate::winograd::applies)
    }
}
