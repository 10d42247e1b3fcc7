//! BatchNorm whose mode is chosen per forward pass.

use burn::config::Config;
use burn::module::{Module, Param, ParamId, RunningState};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, backend::Backend};
use tailguard_flex::batch_norm::{batch_norm_on_batch, channel_affine};

use crate::mode::Mode;

/// Configuration of a [`ModalBatchNorm`]; defaults are PyTorch's (`eps` 1e-5, momentum 0.1).
#[derive(Config, Debug)]
pub struct ModalBatchNormConfig {
    /// Channels normalised.
    pub num_features: usize,
    /// Added to the variance.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of the new batch statistic in the running average (PyTorch convention).
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// 2-D batch normalisation with an explicit [`Mode`].
///
/// In [`Mode::Train`] it normalises with the batch statistics and updates the running mean and the running
/// *unbiased* variance as PyTorch does; in [`Mode::BatchStatistics`] it normalises the same way without updating
/// them. In [`Mode::Inference`] it uses the running statistics as constants, leaves
/// them untouched, and remains differentiable with respect to its input, which adversarial attacks need.
#[derive(Module, Debug)]
pub struct ModalBatchNorm<B: Backend> {
    /// Scale.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift.
    pub beta: Param<Tensor<B, 1>>,
    /// Running mean, used in inference mode.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance, used in inference mode.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Weight of the new batch in the running statistics (PyTorch: 0.1).
    pub momentum: f64,
    /// Added to the variance.
    pub epsilon: f64,
}

impl ModalBatchNormConfig {
    /// Scale 1, shift 0, running mean 0 and running variance 1.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ModalBatchNorm<B> {
        let n = self.num_features;
        ModalBatchNorm {
            gamma: Param::from_tensor(Tensor::ones([n], device)),
            beta: Param::from_tensor(Tensor::zeros([n], device)),
            running_mean: RunningState::new(Tensor::zeros([n], device)),
            running_var: RunningState::new(Tensor::ones([n], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
        }
    }
}

impl<B: Backend> ModalBatchNorm<B> {
    /// (N, C, H, W) -> (N, C, H, W)
    pub fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        self.forward_then(x, mode, false)
    }

    /// This BatchNorm followed by a ReLU, (N, C, H, W) -> (N, C, H, W). With [`tailguard_flex::Flex`] (with or
    /// without autodiff) both are one fused operation, in every mode (`batch_norm_on_batch` and `channel_affine`:
    /// the same values to float rounding).
    pub fn forward_relu(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        self.forward_then(x, mode, true)
    }

    fn forward_then(&self, x: Tensor<B, 4>, mode: Mode, then_relu: bool) -> Tensor<B, 4> {
        match mode {
            Mode::Train => self.forward_train(x, true, then_relu),
            Mode::BatchStatistics => self.forward_train(x, false, then_relu),
            Mode::Inference => self.forward_inference(x, then_relu),
        }
    }

    /// `conv` followed by this BatchNorm, (N, C_in, H, W) -> (N, C, H', W'). In [`Mode::Inference`] the
    /// normalisation is folded into the convolution (weights scaled per output channel, the shift as its bias), so
    /// the activations are not read and written twice more: the same function of the input and of every parameter
    /// (gradients included), with a different rounding (about 1e-7 of the activations).
    pub fn after_conv(&self, conv: &Conv2d<B>, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        if mode != Mode::Inference {
            return self.forward(conv.forward(x), mode);
        }
        self.folded_into(conv, x)
    }

    /// [`Self::after_conv`] followed by a ReLU (fused with the BatchNorm where [`Self::forward_relu`] says).
    pub fn after_conv_relu(&self, conv: &Conv2d<B>, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        match mode {
            Mode::Inference => relu(self.folded_into(conv, x)),
            _ => self.forward_relu(conv.forward(x), mode),
        }
    }

    /// `conv` with this BatchNorm's inference affine folded into its weights and bias, applied to `x`.
    fn folded_into(&self, conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (scale, shift) = self.inference_affine(&x.device());
        let channels = scale.dims()[0];
        let mut folded = conv.clone();
        folded.weight = Param::initialized(
            ParamId::new(),
            conv.weight.val() * scale.clone().reshape([channels, 1, 1, 1]),
        );
        let bias = match &conv.bias {
            Some(bias) => bias.val() * scale + shift,
            None => shift,
        };
        folded.bias = Some(Param::initialized(ParamId::new(), bias));
        folded.forward(x)
    }

    /// The per-channel scale and shift (C) that inference mode applies: `gamma / sqrt(var + eps)` and
    /// `beta - mean * scale`.
    fn inference_affine(&self, device: &B::Device) -> (Tensor<B, 1>, Tensor<B, 1>) {
        // `value_sync` folds in a pending update from an earlier training pass on this thread.
        let mean = self.running_mean.value_sync().to_device(device);
        let var = self.running_var.value_sync().to_device(device);
        let scale = self.gamma.val() * var.add_scalar(self.epsilon).sqrt().recip();
        let shift = self.beta.val() - mean * scale.clone();
        (scale, shift)
    }

    /// The running statistics' scale and shift, then the ReLU when `then_relu`: one fused operation where the
    /// backend has it, else two element-wise passes (and the ReLU's).
    fn forward_inference(&self, x: Tensor<B, 4>, then_relu: bool) -> Tensor<B, 4> {
        let (scale, shift) = self.inference_affine(&x.device());
        match channel_affine(x, scale.clone(), shift.clone(), then_relu) {
            Ok(y) => y,
            Err(x) => {
                let [n, channels, h, w] = x.dims();
                let x = x.reshape([n, channels, h * w]);
                let y = (x * per_row(scale, n) + per_row(shift, n)).reshape([n, channels, h, w]);
                if then_relu { relu(y) } else { y }
            }
        }
    }

    /// Normalises with the batch statistics (then the ReLU when `then_relu`); updates the running statistics when
    /// `track`. The fused operation where the backend has one, else the composition below.
    fn forward_train(&self, x: Tensor<B, 4>, track: bool, then_relu: bool) -> Tensor<B, 4> {
        let [n, _, h, w] = x.dims();
        let count = (n * h * w) as f64;
        match batch_norm_on_batch(x, self.gamma.val(), self.beta.val(), self.epsilon, then_relu) {
            Ok(fused) => {
                if track {
                    self.track(fused.mean, fused.variance, count, &fused.output.device());
                }
                fused.output
            }
            Err(x) => {
                let (y, mean, var) = self.normalise_composed(x);
                if track {
                    self.track(mean, var, count, &y.device());
                }
                if then_relu { relu(y) } else { y }
            }
        }
    }

    /// The BatchNorm on the batch's statistics from tensor operations: the output, the mean and the biased variance.
    fn normalise_composed(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>) {
        let [n, channels, h, w] = x.dims();
        let count = (n * h * w) as f64;
        // Statistics over (N, H, W): the contiguous inner reduction first, then the small one over N.
        let x = x.reshape([n, channels, h * w]);
        let mean = x.clone().sum_dim(2).sum_dim(0).reshape([channels]).div_scalar(count); // (C)
        let centered = x - per_row(mean.clone(), n);
        let var = centered
            .clone()
            .square()
            .sum_dim(2)
            .sum_dim(0)
            .reshape([channels])
            .div_scalar(count); // biased
        let scale = var.clone().add_scalar(self.epsilon).sqrt().recip() * self.gamma.val();
        let y = (centered * per_row(scale, n) + per_row(self.beta.val(), n)).reshape([n, channels, h, w]);
        (y, mean, var)
    }

    /// Moves the running statistics towards a batch's mean and biased variance over `count` values per channel.
    fn track(&self, mean: Tensor<B, 1>, var: Tensor<B, 1>, count: f64, device: &B::Device) {
        let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
        let m = self.momentum;
        let running_mean =
            self.running_mean.value_sync().to_device(device).mul_scalar(1.0 - m) + mean.detach().mul_scalar(m);
        let running_var =
            self.running_var.value_sync().to_device(device).mul_scalar(1.0 - m) + var.detach().mul_scalar(m * unbiased);
        self.running_mean.update(running_mean);
        self.running_var.update(running_var);
    }
}

/// A per-channel vector (C) laid out as a contiguous (N, C, 1) tensor. Broadcasting it over (N, C, H*W) walks its
/// storage in order, which CPU backends (burn-flex) run as a vectorised per-row loop; a (1, C, 1, 1) view instead
/// falls back to a scalar strided loop several times slower, in the forward pass and again in the backward pass.
fn per_row<B: Backend>(values: Tensor<B, 1>, n: usize) -> Tensor<B, 3> {
    let channels = values.dims()[0];
    values.reshape([1, channels, 1]).repeat_dim(0, n)
}
