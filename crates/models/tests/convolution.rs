//! The CPU backend's 2D convolution and both its gradients, as every model uses them, against the definition.
//!
//! tailguard computes burn-flex's convolutions itself (vendor/tailguard-flex/PATCHED.md: products over tiles that
//! span the batch, Winograd F(2x2, 3x3) for 3x3 stride-1 layers with 16+ channels and 8x8+ pixels); these tests go
//! through burn's public `conv2d` on `Autodiff<Flex>`, so the forward pass, the input gradient
//! and the weight gradient the trainers and attacks get are the ones checked.

use burn::backend::Autodiff;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use tailguard_flex::Flex;

type B = Autodiff<Flex>;

/// One convolution: input `[n, c_in, h, w]`, weight `[c_out, c_in / groups, kh, kw]`.
struct Case {
    input: [usize; 4],
    weight: [usize; 4],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

impl Case {
    fn output_size(&self, axis: usize) -> usize {
        let span = self.dilation[axis] * (self.weight[2 + axis] - 1) + 1;
        (self.input[2 + axis] + 2 * self.padding[axis] - span) / self.stride[axis] + 1
    }

    fn output(&self) -> [usize; 4] {
        [self.input[0], self.weight[0], self.output_size(0), self.output_size(1)]
    }
}

/// Reproducible values in [-0.5, 0.5).
fn values(len: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect()
}

/// Output, input gradient and weight gradient of `sum(conv(x, w) * dy)`, by the definition, in f64.
fn definition(case: &Case, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [n, c_in, h, wd] = case.input;
    let [c_out, per_group, kh, kw] = case.weight;
    let [_, _, oh, ow] = case.output();
    let out_per_group = c_out / case.groups;
    let (mut y, mut dx, mut dw) = (vec![0.0; n * c_out * oh * ow], vec![0.0; x.len()], vec![0.0; w.len()]);
    for b in 0..n {
        for co in 0..c_out {
            for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                let yi = ((b * c_out + co) * oh + oy) * ow + ox;
                for ci in 0..per_group {
                    let channel = co / out_per_group * per_group + ci;
                    for (ky, kx) in (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx))) {
                        let iy = (oy * case.stride[0] + ky * case.dilation[0]) as isize - case.padding[0] as isize;
                        let ix = (ox * case.stride[1] + kx * case.dilation[1]) as isize - case.padding[1] as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                            continue;
                        }
                        let xi = ((b * c_in + channel) * h + iy as usize) * wd + ix as usize;
                        let wi = ((co * per_group + ci) * kh + ky) * kw + kx;
                        y[yi] += w[wi] * x[xi];
                        dx[xi] += w[wi] * dy[yi];
                        dw[wi] += x[xi] * dy[yi];
                    }
                }
            }
        }
    }
    (y, dx, dw)
}

fn tensor(values: &[f64], shape: [usize; 4]) -> Tensor<B, 4> {
    let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn assert_close(name: &str, got: Tensor<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend, 4>, want: &[f64]) {
    let got = got.into_data().to_vec::<f32>().unwrap();
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * scale,
            "{name}[{i}]: {g} against the definition's {w}"
        );
    }
}

fn check(case: Case) {
    let output = case.output();
    let x = values(case.input.iter().product(), 1);
    let w = values(case.weight.iter().product(), 2);
    let dy = values(output.iter().product(), 3);
    let bias = values(case.weight[0], 4);
    let (y_want, dx_want, dw_want) = definition(&case, &x, &w, &dy);

    let xt = tensor(&x, case.input).require_grad();
    let wt = tensor(&w, case.weight).require_grad();
    let bt = Tensor::<B, 1>::from_data(
        TensorData::new(bias.iter().map(|&v| v as f32).collect::<Vec<_>>(), [bias.len()]),
        &Default::default(),
    )
    .require_grad();
    let options = ConvOptions::new(case.stride, case.padding, case.dilation, case.groups);
    let y = conv2d(xt.clone(), wt.clone(), Some(bt.clone()), options);
    let y_with_bias: Vec<f64> = y_want
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i / (output[2] * output[3]) % output[1]])
        .collect();
    assert_close("forward", y.clone().inner(), &y_with_bias);

    let grads = (y * tensor(&dy, output)).sum().backward();
    assert_close("input gradient", xt.grad(&grads).unwrap(), &dx_want);
    assert_close("weight gradient", wt.grad(&grads).unwrap(), &dw_want);
    let db = bt.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    let pixels = output[2] * output[3];
    for (co, &got) in db.iter().enumerate() {
        let want: f64 = (0..output[0])
            .flat_map(|b| dy[(b * output[1] + co) * pixels..][..pixels].iter())
            .sum();
        assert!(
            (got as f64 - want).abs() < 1e-4,
            "bias gradient[{co}]: {got} against {want}"
        );
    }
}

fn case(input: [usize; 4], weight: [usize; 4], stride: usize, padding: usize) -> Case {
    Case {
        input,
        weight,
        stride: [stride; 2],
        padding: [padding; 2],
        dilation: [1, 1],
        groups: 1,
    }
}

#[test]
fn resnet_convolutions_match_the_definition() {
    // Stem, 3x3 stride 1 and 2, 1x1 stride-2 shortcut, a 2x2 last stage where a product spans many images.
    check(case([2, 3, 8, 8], [8, 3, 3, 3], 1, 1));
    check(case([3, 8, 8, 8], [8, 8, 3, 3], 1, 1));
    check(case([3, 8, 8, 8], [16, 8, 3, 3], 2, 1));
    check(case([3, 8, 8, 8], [16, 8, 1, 1], 2, 0));
    check(case([24, 16, 2, 2], [16, 16, 3, 3], 1, 1));
}

#[test]
fn winograd_layers_match_the_definition() {
    // 3x3 stride 1 with at least 16 channels and 8x8 pixels: the forward pass and input gradient take Winograd
    // F(2x2, 3x3); odd sides leave a last tile half outside; padding 0 and 2 mirror to 2 and 0 in the input gradient.
    check(case([2, 16, 8, 8], [16, 16, 3, 3], 1, 1));
    check(case([3, 16, 11, 9], [24, 16, 3, 3], 1, 1));
    check(case([2, 20, 12, 10], [16, 20, 3, 3], 1, 0));
    check(case([2, 16, 8, 9], [16, 16, 3, 3], 1, 2));
}

#[test]
fn images_larger_than_a_tile_match_the_definition() {
    // 48 x 44 = 2112 output pixels per image: more than one product's columns.
    check(case([2, 2, 48, 44], [3, 2, 3, 3], 1, 1));
}

#[test]
fn dilated_grouped_and_rectangular_convolutions_match_the_definition() {
    check(Case {
        input: [2, 4, 9, 7],
        weight: [6, 2, 3, 2],
        stride: [1, 2],
        padding: [2, 0],
        dilation: [2, 1],
        groups: 2,
    });
    // Depthwise, as burn's grouped forward path and the patched gradients meet.
    check(Case {
        input: [2, 4, 6, 6],
        weight: [4, 1, 3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 4,
    });
    // Padding wider than the kernel reach and a stride larger than the kernel.
    check(case([3, 2, 3, 3], [3, 2, 3, 3], 3, 4));
}
