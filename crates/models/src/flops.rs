//! Arithmetic cost of a forward pass, for throughput figures (achieved FLOP/s against the hardware's peak).
//!
//! Counts the multiply-adds of convolutions and linear layers, the convention of papers and of tools such as
//! `thop`/`fvcore`; BatchNorm, ReLU, pooling and additions are a few percent and left out.

use crate::architecture::{Architecture, ModelConfig};
use crate::layers::{BlockPlan, stage_plan};

/// Multiply-adds of one forward pass of one image through `config`'s network.
pub fn forward_multiply_adds(config: &ModelConfig) -> u64 {
    let [channels, height, width] = config.input_shape.map(|d| d as u64);
    let classes = config.num_classes as u64;
    let conv = |c_in: u64, c_out: u64, kernel: u64, pixels: u64| c_in * c_out * kernel * kernel * pixels;
    // Residual networks: a 3x3 stem at full resolution, then 3x3 convolutions (and 1x1 projections) per block.
    let residual = |stem: u64, plan: &[BlockPlan]| {
        let mut pixels = height * width;
        let mut total = conv(channels, stem, 3, pixels);
        for block in plan {
            let stride = block.stride as u64;
            pixels /= stride * stride;
            let (c_in, c_out) = (block.in_channels as u64, block.out_channels as u64);
            total += conv(c_in, c_out, 3, pixels) + conv(c_out, c_out, 3, pixels);
            if block.stride != 1 || block.in_channels != block.out_channels {
                total += conv(c_in, c_out, 1, pixels);
            }
        }
        let features = plan.last().map_or(stem, |b| b.out_channels as u64);
        total + features * classes
    };
    match config.arch {
        Architecture::ResNet18 | Architecture::PreActResNet18 | Architecture::PreActResNet18Wong => {
            residual(64, &stage_plan(64, &[64, 128, 256, 512], &[2, 2, 2, 2]))
        }
        Architecture::ResNet50 => {
            // Bottlenecks: 1x1 in at the input resolution, 3x3 (the stride) and 1x1 out (x4) at the output's.
            let mut pixels = height * width;
            let mut total = conv(channels, 64, 3, pixels);
            let mut c_in = 64;
            for block in stage_plan(64, &[64, 128, 256, 512], &[3, 4, 6, 3]) {
                let planes = block.out_channels as u64;
                let input_pixels = pixels;
                pixels /= (block.stride * block.stride) as u64;
                total += conv(c_in, planes, 1, input_pixels) + conv(planes, planes, 3, pixels);
                total += conv(planes, 4 * planes, 1, pixels);
                if block.stride != 1 || c_in != 4 * planes {
                    total += conv(c_in, 4 * planes, 1, pixels);
                }
                c_in = 4 * planes;
            }
            total + c_in * classes
        }
        Architecture::WideResNet { depth, widen }
        | Architecture::DmWideResNet {
            depth, width: widen, ..
        } => {
            let per_stage = depth.saturating_sub(4) / 6;
            residual(
                16,
                &stage_plan(16, &[16 * widen, 32 * widen, 64 * widen], &[per_stage; 3]),
            )
        }
        Architecture::SmallCnn { width: w } => {
            let w = w as u64;
            let pixels = height * width;
            conv(channels, w, 3, pixels)
                + conv(w, 2 * w, 3, pixels / 4)
                + conv(2 * w, 4 * w, 3, pixels / 16)
                + 4 * w * classes
        }
        Architecture::Linear => channels * height * width * classes,
    }
}

/// Floating-point operations (2 per multiply-add) of one forward pass of one image.
pub fn forward_flops(config: &ModelConfig) -> u64 {
    2 * forward_multiply_adds(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet18_matches_the_published_count() {
        // 555.42 M multiply-adds: the figure thop and the CIFAR ResNet literature give for ResNet-18 at 32x32.
        let config = ModelConfig::new(Architecture::ResNet18, 10);
        assert_eq!(forward_multiply_adds(&config), 555_422_720);
        let preact = ModelConfig::new(Architecture::PreActResNet18, 10);
        assert_eq!(forward_multiply_adds(&preact), 555_422_720);
    }

    #[test]
    fn wide_resnets_match_hand_counts() {
        // WRN-28-10: stem 3->16 (0.44 M), then 4 blocks per stage of 160/320/640 channels at 32/16/8 pixels.
        let wrn28 = ModelConfig::new(Architecture::WideResNet { depth: 28, widen: 10 }, 10);
        let stage = |c_in: u64, c: u64, pixels: u64, blocks: u64| {
            c_in * c * 9 * pixels + c * c * 9 * pixels * (2 * blocks - 1) + c_in * c * pixels
        };
        let expected =
            3 * 16 * 9 * 1024 + stage(16, 160, 1024, 4) + stage(160, 320, 256, 4) + stage(320, 640, 64, 4) + 640 * 10;
        assert_eq!(forward_multiply_adds(&wrn28), expected);
        // About 5.25 G multiply-adds, the published figure for WRN-28-10.
        assert!((5.2e9..5.3e9).contains(&(expected as f64)));
        let wrn34 = ModelConfig::new(Architecture::WideResNet { depth: 34, widen: 10 }, 10);
        assert!(forward_multiply_adds(&wrn34) > expected);
    }

    #[test]
    fn small_models_are_counted_layer_by_layer() {
        let cnn = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10);
        assert_eq!(
            forward_multiply_adds(&cnn),
            3 * 4 * 9 * 1024 + 4 * 8 * 9 * 256 + 8 * 16 * 9 * 64 + 16 * 10
        );
        assert_eq!(
            forward_flops(&ModelConfig::new(Architecture::Linear, 10)),
            2 * 3 * 1024 * 10
        );
    }
}
