//! Times the forward pass of thin convolutions (the small CNN's three layers, ResNet-18's first layer and its 1x1
//! stride-2 shortcuts) as im2col + gemm and as the direct path, in one run on the same tensors, and checks that
//! both give the same values (to 1e-4 of the largest). What `direct::MAX_ROWS` was set from.
//!
//!     cargo run --release -p tailguard-flex --example conv2d_direct -- [BATCH]

use std::time::Instant;

use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};
use tailguard_flex::{FlexTensor, Layout, conv2d_paths};

fn filled(shape: &[usize]) -> FlexTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::from(shape.to_vec())),
        DType::F32,
    )
}

/// Best of five after one warm-up, in seconds.
fn best(mut f: impl FnMut() -> FlexTensor) -> f64 {
    std::hint::black_box(f().layout().shape().clone());
    (0..5)
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
    // (network, channels in, channels out, input size, stride, kernel)
    let layers = [
        ("small CNN", 3, 16, 32, 1, 3),
        ("small CNN", 16, 32, 32, 2, 3),
        ("small CNN", 32, 64, 16, 2, 3),
        ("ResNet-18", 3, 64, 32, 1, 3),
        ("ResNet-18", 64, 128, 32, 2, 1),
        ("ResNet-18", 128, 256, 16, 2, 1),
        ("ResNet-18", 256, 512, 8, 2, 1),
        ("ResNet-18", 64, 128, 32, 2, 3),
        ("ResNet-18", 128, 256, 16, 2, 3),
        ("ResNet-18", 256, 512, 8, 2, 3),
    ];
    println!(
        "batch {batch}, {} rayon threads; milliseconds (GFLOP/s), best of five",
        rayon::current_num_threads()
    );
    println!("| layer | C_in x kh x kw | im2col + gemm | direct | chosen |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for (network, c_in, c_out, size, stride, kernel) in layers {
        let pad = kernel / 2;
        let out = (size + 2 * pad - kernel) / stride + 1;
        let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
        let (x, w) = (
            filled(&[batch, c_in, size, size]),
            filled(&[c_out, c_in, kernel, kernel]),
        );
        let im2col = conv2d_paths::forward_im2col(x.clone(), w.clone(), None, &options);
        let direct = conv2d_paths::forward_direct(&x, &w, None, &options).expect("the direct path applies");
        let (a, b) = (im2col.storage::<f32>(), direct.storage::<f32>());
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "{network} {c_in}->{c_out}: paths differ by {worst} (scale {scale})"
        );
        let t_im2col = best(|| conv2d_paths::forward_im2col(x.clone(), w.clone(), None, &options));
        let t_direct = best(|| conv2d_paths::forward_direct(&x, &w, None, &options).unwrap());
        let flops = 2.0 * (batch * c_out * out * out * c_in * kernel * kernel) as f64;
        let chosen = conv2d_paths::direct_chosen([batch, c_in, size, size], [c_out, c_in, kernel, kernel], &options);
        println!(
            "| {network} {c_in}->{c_out}, {size}px, stride {stride}, {kernel}x{kernel} | {} | {:.2} ({:.0}) | {:.2} ({:.0}) | {} |",
            c_in * kernel * kernel,
            t_im2col * 1e3,
            flops / t_im2col / 1e9,
            t_direct * 1e3,
            flops / t_direct / 1e9,
            if chosen { "direct" } else { "im2col" }
        );
    }
}
