//! Times the convolutions of a CIFAR ResNet-18 (forward, input gradient, weight gradient) on the published
//! burn-flex 0.21 (its tiled forward, burn-backend's default transposed-convolution input gradient and
//! batch-swapped weight gradient) and on this crate's paths (batched im2col + gemm; Winograd F(2x2, 3x3) for the
//! forward pass and input gradient where it applies, `-` elsewhere), in one run on the same tensors. Each row
//! counts as often as ResNet-18 has the layer: the last rows sum over the network, with each path where it applies
//! and with the path Flex chooses per layer.
//!
//!     cargo run --release -p tailguard-flex --example conv2d_layers -- [BATCH]

use std::time::Instant;

use burn_backend::DType;
use burn_backend::ops::{ConvOptions, ModuleOps};
use burn_std::{Bytes, Shape};
use tailguard_flex::{FlexTensor, Layout, conv2d_paths};

type Published = burn_flex::Flex;

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
    // (channels in, channels out, input size, stride, kernel, times in the network) of each distinct ResNet-18
    // convolution.
    let layers = [
        (3, 64, 32, 1, 3, 1),
        (64, 64, 32, 1, 3, 4),
        (64, 128, 32, 2, 3, 1),
        (64, 128, 32, 2, 1, 1),
        (128, 128, 16, 1, 3, 3),
        (128, 256, 16, 2, 3, 1),
        (128, 256, 16, 2, 1, 1),
        (256, 256, 8, 1, 3, 3),
        (256, 512, 8, 2, 3, 1),
        (256, 512, 8, 2, 1, 1),
        (512, 512, 4, 1, 3, 3),
    ];
    println!(
        "batch {batch}, {} rayon threads; milliseconds (GFLOP/s)",
        rayon::current_num_threads()
    );
    println!(
        "| layer (x times) | forward burn-flex | im2col | Winograd | input gradient burn-flex | im2col | Winograd | \
         weight gradient burn-flex | im2col | Winograd |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut totals = [0.0f64; 9];
    let mut flex = [0.0f64; 3];
    for (c_in, c_out, size, stride, kernel, repeats) in layers {
        let pad = kernel / 2;
        let out = (size + 2 * pad - kernel) / stride + 1;
        let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
        let (x, w, dy) = (
            filled(&[batch, c_in, size, size]),
            filled(&[c_out, c_in, kernel, kernel]),
            filled(&[batch, c_out, out, out]),
        );
        let winograd = conv2d_paths::forward_winograd(&x, &w, None, &options).is_some();
        let chosen = conv2d_paths::winograd_chosen([batch, c_in, size, size], [c_out, c_in, kernel, kernel], &options);
        let times = [
            Some(best(|| Published::conv2d(x.clone(), w.clone(), None, options.clone()))),
            Some(best(|| {
                conv2d_paths::forward_im2col(x.clone(), w.clone(), None, &options)
            })),
            winograd.then(|| best(|| conv2d_paths::forward_winograd(&x, &w, None, &options).unwrap())),
            Some(best(|| {
                Published::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), options.clone())
            })),
            Some(best(|| {
                conv2d_paths::x_backward_im2col(x.clone(), w.clone(), dy.clone(), &options)
            })),
            winograd.then(|| best(|| conv2d_paths::x_backward_winograd(&x, &w, &dy, &options).unwrap())),
            Some(best(|| {
                Published::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), options.clone())
            })),
            Some(best(|| {
                conv2d_paths::weight_backward_im2col(x.clone(), w.clone(), dy.clone(), &options)
            })),
            winograd.then(|| best(|| conv2d_paths::weight_backward_winograd(&x, &w, &dy, &options).unwrap())),
        ];
        let flops = 2.0 * (batch * c_out * out * out * c_in * kernel * kernel) as f64;
        let cells: Vec<String> = times
            .iter()
            .map(|t| t.map_or("-".into(), |t| format!("{:.1} ({:.0})", t * 1e3, flops / t / 1e9)))
            .collect();
        println!(
            "| {c_in}->{c_out}, {size}px, stride {stride}, {kernel}x{kernel} (x{repeats}) | {} |",
            cells.join(" | ")
        );
        // A path that does not apply counts as the im2col path before it (what Flex runs there).
        for (i, total) in totals.iter_mut().enumerate() {
            *total += repeats as f64 * times[i].or_else(|| times[i - 1]).unwrap_or(0.0);
        }
        let pick = |im2col: usize| times[if chosen { im2col + 1 } else { im2col }].unwrap_or(0.0);
        for (total, time) in flex.iter_mut().zip([pick(1), pick(4), pick(7)]) {
            *total += repeats as f64 * time;
        }
    }
    let cells: Vec<String> = totals.iter().map(|t| format!("{:.1}", t * 1e3)).collect();
    println!("| all, each path where it applies | {} |", cells.join(" | "));
    println!(
        "| all, as Flex chooses | | | {:.1} | | | {:.1} | | | {:.1} |",
        flex[0] * 1e3,
        flex[1] * 1e3,
        flex[2] * 1e3
    );
}
