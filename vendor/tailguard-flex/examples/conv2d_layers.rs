//! Times the convolutions of a CIFAR ResNet-18 (forward, input gradient, weight gradient) on the published
//! burn-flex 0.21 (its tiled forward, burn-backend's default transposed-convolution input gradient and
//! batch-swapped weight gradient) and on this crate (batched im2col + gemm), in one run on the same tensors.
//!
//!     cargo run --release -p tailguard-flex --example conv2d_layers -- [BATCH]

use std::time::Instant;

use burn_backend::DType;
use burn_backend::ops::{ConvOptions, ModuleOps};
use burn_std::{Bytes, Shape};
use tailguard_flex::{FlexTensor, Layout};

type Published = burn_flex::Flex;
type Ours = tailguard_flex::Flex;

fn filled(shape: &[usize]) -> FlexTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::from(shape.to_vec())),
        DType::F32,
    )
}

/// Best of three after one warm-up, in seconds.
fn best(mut f: impl FnMut() -> FlexTensor) -> f64 {
    std::hint::black_box(f().layout().shape().clone());
    (0..3)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f().layout().shape().clone());
            start.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
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
    println!("| layer | forward before | after | input gradient before | after | weight gradient before | after |");
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
        let times = [
            best(|| Published::conv2d(x.clone(), w.clone(), None, options.clone())),
            best(|| Ours::conv2d(x.clone(), w.clone(), None, options.clone())),
            best(|| Published::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), options.clone())),
            best(|| Ours::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), options.clone())),
            best(|| Published::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), options.clone())),
            best(|| Ours::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), options.clone())),
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
