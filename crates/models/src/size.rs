//! How many weights a configuration would allocate, computed from its numbers before anything is allocated, so an
//! impossible size (`wrn-10-100000`, four billion classes) is a clear error instead of an aborted allocation.

use crate::architecture::{Architecture, ModelConfig};

/// The most classes a classifier may have (ImageNet-21k has 21,841).
pub const MAX_CLASSES: usize = 1_000_000;

/// The most weights a model may have: 4 GB in f32, the order of the largest network the field trains on a
/// long-tailed CIFAR (WRN-70-16 has 267 M; the largest tailguard names, WRN-34-10, 46 M).
pub const MAX_WEIGHTS: u128 = 1_000_000_000;

/// The largest image side a model or a dataset may have, in pixels.
pub const MAX_IMAGE_SIDE: usize = 4096;

/// Weights of convolutions and linear layers (BatchNorm, biases and the cosine head's norms are a few percent and
/// left out), in exact integer arithmetic that cannot overflow for any `usize` inputs.
pub fn weight_count(config: &ModelConfig) -> u128 {
    let [channels, height, width] = config.input_shape.map(|d| d as u128);
    let classes = config.num_classes as u128;
    let conv = |c_in: u128, c_out: u128, kernel: u128| c_in.saturating_mul(c_out).saturating_mul(kernel * kernel);
    // A residual stage of `blocks` blocks from `c_in` to `c_out`: the first may project, the rest keep the width.
    let stage = |c_in: u128, c_out: u128, blocks: u128| {
        if blocks == 0 {
            return 0u128;
        }
        let first = conv(c_in, c_out, 3)
            .saturating_add(conv(c_out, c_out, 3))
            .saturating_add(conv(c_in, c_out, 1));
        let rest = conv(c_out, c_out, 3).saturating_mul(2).saturating_mul(blocks - 1);
        first.saturating_add(rest)
    };
    let residual = |stem: u128, widths: &[u128], blocks: u128| {
        let mut total = conv(channels, stem, 3);
        let mut c_in = stem;
        for &c_out in widths {
            total = total.saturating_add(stage(c_in, c_out, blocks));
            c_in = c_out;
        }
        total.saturating_add(c_in.saturating_mul(classes))
    };
    match config.arch {
        Architecture::ResNet18 | Architecture::PreActResNet18 => residual(64, &[64, 128, 256, 512], 2),
        Architecture::WideResNet { depth, widen } => {
            let k = widen as u128;
            let blocks = (depth.saturating_sub(4) / 6) as u128;
            residual(16, &[16 * k, 32 * k, 64 * k], blocks)
        }
        Architecture::SmallCnn { width } => {
            let w = width as u128;
            conv(channels, w, 3)
                .saturating_add(conv(w, 2 * w, 3))
                .saturating_add(conv(2 * w, 4 * w, 3))
                .saturating_add((4 * w).saturating_mul(classes))
        }
        Architecture::Linear => channels
            .saturating_mul(height)
            .saturating_mul(width)
            .saturating_mul(classes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_those_of_the_networks() {
        // ResNet-18 for CIFAR-10: 11.17 M parameters, of which convolutions and the head hold 11.16 M.
        let resnet = weight_count(&ModelConfig::new(Architecture::ResNet18, 10));
        assert!((11_150_000..11_180_000).contains(&resnet), "{resnet}");
        // WRN-34-10: 46.16 M parameters.
        let wrn = weight_count(&ModelConfig::new(Architecture::WideResNet { depth: 34, widen: 10 }, 10));
        assert!((46_000_000..46_200_000).contains(&wrn), "{wrn}");
        // Sizes that would overflow `usize` arithmetic saturate instead.
        let absurd = weight_count(&ModelConfig::new(
            Architecture::WideResNet {
                depth: usize::MAX,
                widen: usize::MAX,
            },
            usize::MAX,
        ));
        assert!(absurd > MAX_WEIGHTS);
    }
}
