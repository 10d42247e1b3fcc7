//! tailguard patch: times the convolutions of a CIFAR ResNet-18 (forward, input gradient, weight gradient) with
//! the patched products (`conv2d_gemm`, through `ModuleOps`) and with burn-flex 0.21's own paths (its tiled
//! forward, burn-backend's default transposed-convolution input gradient and batch-swapped weight gradient), in
//! one run on the same tensors.
//!
//!     cargo run --release --example conv2d_layers -- [BATCH]

use std::time::Instant;

use burn_backend::ops::conv::calculate_padding_out;
use burn_backend::ops::{ConvOptions, ConvTransposeOptions, FloatTensorOps, ModuleOps};
use burn_backend::{DType, Slice, TensorMetadata};
use burn_std::{Bytes, Shape};
use tailguard_flex::{Flex, FlexTensor, Layout};

fn filled(shape: &[usize]) -> FlexTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::from(shape.to_vec())),
        DType::F32,
    )
}

/// Best of three after one warm-up, in seconds.
fn best(mut f: impl FnMut() -> FlexTensor) -> f64 {
    std::hint::black_box(f().shape());
    (0..3)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f().shape());
            start.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// burn-backend 0.21's default weight gradient for groups == 1, on burn-flex's own forward convolution.
fn weight_gradient_unpatched(
    x: &FlexTensor,
    dy: &FlexTensor,
    w_shape: [usize; 4],
    options: &ConvOptions<2>,
) -> FlexTensor {
    let swapped = tailguard_flex::ops::conv::conv2d_f32(
        Flex::float_swap_dims(x.clone(), 0, 1),
        Flex::float_swap_dims(dy.clone(), 0, 1),
        None,
        &ConvOptions::new(options.dilation, options.padding, options.stride, 1),
    );
    let grad = Flex::float_swap_dims(swapped, 0, 1);
    let slices = w_shape.map(|dim| Slice::from(0..dim));
    Flex::float_slice(grad, &slices)
}

fn main() {
    let batch: usize = std::env::args()
        .nth(1)
        .map_or(32, |arg| arg.parse().expect("BATCH: a number"));
    // (channels in, channels out, input size, stride, kernel) of each distinct ResNet-18 convolution.
    let layers = [
        (3, 64, 32, 1, 3),
        (64, 64, 32, 1, 3),
        (64, 128, 32, 2, 3),
        (64, 128, 32, 2, 1),
        (128, 128, 16, 1, 3),
        (128, 256, 16, 2, 3),
        (256, 256, 8, 1, 3),
        (256, 512, 8, 2, 3),
        (512, 512, 4, 1, 3),
    ];
    println!(
        "batch {batch}, {} rayon threads; milliseconds (GFLOP/s)",
        rayon::current_num_threads()
    );
    println!(
        "| layer | forward before | after | input gradient before | after | weight gradient before | after |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut totals = [0.0f64; 6];
    for (c_in, c_out, size, stride, kernel) in layers {
        let pad = kernel / 2;
        let out = (size + 2 * pad - kernel) / stride + 1;
        let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
        let (x, w, dy) = (
            filled(&[batch, c_in, size, size]),
            filled(&[c_out, c_in, kernel, kernel]),
            filled(&[batch, c_out, out, out]),
        );
        let pad_out = calculate_padding_out(kernel, stride, pad, 1, size, out);
        let transpose =
            ConvTransposeOptions::new([stride, stride], [pad, pad], [pad_out, pad_out], [1, 1], 1);
        let times = [
            best(|| tailguard_flex::ops::conv::conv2d_f32(x.clone(), w.clone(), None, &options)),
            best(|| Flex::conv2d(x.clone(), w.clone(), None, options.clone())),
            best(|| Flex::conv_transpose2d(dy.clone(), w.clone(), None, transpose.clone())),
            best(|| Flex::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), options.clone())),
            best(|| weight_gradient_unpatched(&x, &dy, [c_out, c_in, kernel, kernel], &options)),
            best(|| {
                Flex::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), options.clone())
            }),
        ];
        let flops = 2.0 * (batch * c_out * out * out * c_in * kernel * kernel) as f64;
        let cells: Vec<String> = times
            .iter()
            .map(|t| format!("{:.1} ({:.0})", t * 1e3, flops / t / 1e9))
            .collect();
        println!(
            "| {c_in}->{c_out}, {size}px, stride {stride}, {kernel}x{kernel} | {} |",
            cells.join(" | ")
        );
        for (total, time) in totals.iter_mut().zip(times) {
            *total += time;
        }
    }
    let cells: Vec<String> = totals.iter().map(|t| format!("{:.1}", t * 1e3)).collect();
    println!("| all | {} |", cells.join(" | "));
}
