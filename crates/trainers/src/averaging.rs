//! Weight averaging: an exponential moving average (EMA) of the weights, taken after every optimizer step, as
//! current adversarial training does (Rebuffi et al. 2021, Gowal et al. 2020: decay about 0.999-0.9995, 1-2 points
//! of AutoAttack robustness). RobustLT's official code carries an `ema_tau` it never uses; here it is a section of
//! its own, `[ema]`, for every method.
//!
//! Every float tensor of the model is averaged, BatchNorm's running statistics included (Burn's module visitor sees
//! them as float tensors): the averaged model then normalises with statistics of the same average, not of the last
//! weights, and needs no extra pass over the data.

use burn::config::Config;
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::Inner;

use crate::error::InvalidSetting;

/// How the average moves: `average = d * average + (1 - d) * weights` after each step, with
/// `d = min(decay, (1 + t) / (10 + t))` at update `t` (0-based) when `warmup` is on, so the first steps' weights,
/// far from the trained ones, fade out in tens of steps instead of thousands (TensorFlow's `num_updates` rule).
#[derive(Config, Debug, PartialEq)]
pub struct WeightAverageConfig {
    /// The weight of the previous average at each step, in [0, 1).
    #[config(default = 0.9995)]
    pub decay: f64,
    /// Warm the decay up over the first steps.
    #[config(default = true)]
    pub warmup: bool,
}

impl WeightAverageConfig {
    /// Rejects a decay outside [0, 1).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(0.0..1.0).contains(&self.decay) {
            return Err(InvalidSetting::new("decay", "must lie in [0, 1)", self.decay));
        }
        Ok(())
    }

    /// The decay of update `t` (0-based).
    pub fn decay_at(&self, t: u64) -> f64 {
        if self.warmup {
            self.decay.min((1.0 + t as f64) / (10.0 + t as f64))
        } else {
            self.decay
        }
    }

    /// An average that starts at `model`'s weights.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(&self, model: &M) -> WeightAverage<B, M> {
        WeightAverage {
            average: detached(model),
            config: self.clone(),
            updates: 0,
            _backend: std::marker::PhantomData,
        }
    }
}

/// The averaged weights of a model being trained: a module of the model's own type whose tensors track no gradient.
#[derive(Debug)]
pub struct WeightAverage<B: AutodiffBackend, M: AutodiffModule<B>> {
    average: M,
    config: WeightAverageConfig,
    updates: u64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> WeightAverage<B, M> {
    /// Moves the average towards `model`'s current weights (one update, after one optimizer step).
    pub fn update(&mut self, model: &M) {
        tailguard_models::sync_running_statistics(model);
        let mut take = Take::<B>(Vec::new());
        model.visit(&mut take);
        let decay = self.config.decay_at(self.updates);
        let mut blend = Blend::<B> {
            weights: take.0.into_iter(),
            decay,
        };
        // The average's running statistics are its own (see `detached`): mapping a clone writes them in place.
        self.average = self.average.clone().map(&mut blend);
        self.updates += 1;
    }

    /// The averaged model.
    pub fn model(&self) -> &M {
        &self.average
    }

    /// Updates taken so far (what the warm-up counts).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The settings.
    pub fn config(&self) -> &WeightAverageConfig {
        &self.config
    }

    /// The average restored from a checkpoint: `average` after `updates` updates.
    pub fn restore(&mut self, average: M, updates: u64) {
        self.average = detached(&average);
        self.updates = updates;
    }
}

/// A copy of `model` with every tensor cut from the autodiff graph, tracking no gradient, and running statistics of
/// its own (clones of a Burn module share their running statistics; a round trip through the inner backend does not).
fn detached<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> M {
    struct Detach;
    impl<B: AutodiffBackend> ModuleMapper<B> for Detach {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let id = param.id;
            Param::initialized(id, Tensor::from_inner(param.val().inner())).set_require_grad(false)
        }
    }
    M::from_inner(model.valid()).map(&mut Detach)
}

/// Every float tensor of a model, in visiting order, without autodiff.
struct Take<B: AutodiffBackend>(Vec<Tensor<Inner<B>, 1>>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Take<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val().inner();
        let n = tensor.shape().num_elements();
        self.0.push(tensor.reshape([n]));
    }
}

/// `d * average + (1 - d) * weights`, tensor by tensor in visiting order (the same module type visits the same
/// tensors in the same order).
struct Blend<B: AutodiffBackend> {
    weights: std::vec::IntoIter<Tensor<Inner<B>, 1>>,
    decay: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let id = param.id;
        let average = param.val().inner();
        let weights = self
            .weights
            .next()
            .expect("the average and the model are modules of one type")
            .reshape(average.shape());
        let blended = average.mul_scalar(self.decay) + weights.mul_scalar(1.0 - self.decay);
        Param::initialized(id, Tensor::from_inner(blended)).set_require_grad(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::Module;
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use tailguard_flex::Flex;

    type AD = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Tiny<B: burn::tensor::backend::Backend> {
        linear: Linear<B>,
        norm: BatchNorm<B>,
    }

    fn tiny() -> Tiny<AD> {
        let device = Default::default();
        Tiny {
            linear: LinearConfig::new(3, 2).init(&device),
            norm: BatchNormConfig::new(2).init(&device),
        }
    }

    fn with_weights(model: &Tiny<AD>, value: f32) -> Tiny<AD> {
        struct Fill(f32);
        impl ModuleMapper<AD> for Fill {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<AD, D>>) -> Param<Tensor<AD, D>> {
                let id = param.id;
                let tensor = param.val();
                Param::initialized(id, tensor.ones_like().mul_scalar(self.0))
            }
        }
        // A module of its own (clones would share the running statistics).
        Tiny::from_inner(model.valid()).map(&mut Fill(value))
    }

    fn values(model: &Tiny<AD>) -> Vec<f32> {
        let mut take = Take::<AD>(Vec::new());
        model.visit(&mut take);
        take.0
            .into_iter()
            .flat_map(|t| t.into_data().to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn the_decay_warms_up_to_its_setting() {
        let config = WeightAverageConfig::new();
        assert_eq!(config.decay_at(0), 0.1);
        assert_eq!(config.decay_at(2), 3.0 / 12.0);
        assert_eq!(config.decay_at(1_000_000), 0.9995);
        assert_eq!(config.with_warmup(false).decay_at(0), 0.9995);
        assert!(WeightAverageConfig::new().with_decay(1.0).validate().is_err());
    }

    #[test]
    fn three_updates_equal_the_hand_computed_average() {
        let model = tiny();
        let start = with_weights(&model, 1.0);
        let mut average = WeightAverageConfig::new().with_decay(0.5).init::<AD, _>(&start);
        // Warm-up decays: min(0.5, 1/10) = 0.1, min(0.5, 2/11) = 2/11, min(0.5, 3/12) = 0.25.
        let mut expected = 1.0f64;
        for (t, weight) in [(0u64, 3.0f32), (1, -2.0), (2, 10.0)] {
            average.update(&with_weights(&model, weight));
            let d = [0.1, 2.0 / 11.0, 0.25][t as usize];
            expected = d * expected + (1.0 - d) * weight as f64;
        }
        assert_eq!(average.updates(), 3);
        let got = values(average.model());
        // linear weight (6) + bias (2) + norm gamma, beta, running mean, running var (2 each): every tensor averaged.
        assert_eq!(got.len(), 16);
        for value in got {
            assert!((value as f64 - expected).abs() < 1e-5, "{value} vs {expected}");
        }
        // By hand: 0.1*1 + 0.9*3 = 2.8; (2/11)*2.8 - (9/11)*2 = -1.1272...; 0.25*(-1.1272...) + 0.75*10 = 7.2181...
        assert!((expected - 7.218_181_818).abs() < 1e-6);
    }

    #[test]
    fn the_average_tracks_no_gradient() {
        let model = tiny();
        let mut average = WeightAverageConfig::new().init::<AD, _>(&model);
        average.update(&model);
        assert!(!average.model().linear.weight.val().is_require_grad());
    }

    #[test]
    fn the_average_keeps_running_statistics_of_its_own() {
        let model = tiny();
        let live = with_weights(&model, 4.0);
        let average = WeightAverageConfig::new().init::<AD, _>(&live);
        // Training moves the live model's running statistics in place (a Burn running state is shared by clones).
        struct Move;
        impl ModuleMapper<AD> for Move {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<AD, D>>) -> Param<Tensor<AD, D>> {
                let id = param.id;
                Param::initialized(id, param.val().mul_scalar(2.0))
            }
        }
        let _ = live.clone().map(&mut Move);
        assert_eq!(values(&live)[12..], [8.0; 4], "the live statistics moved");
        let averaged = values(average.model());
        assert!(averaged.iter().all(|&v| v == 4.0), "{averaged:?}");
    }
}
