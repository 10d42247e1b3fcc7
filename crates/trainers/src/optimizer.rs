//! SGD as PyTorch runs it (momentum with dampening 0, optional Nesterov, coupled weight decay), with an option to
//! exempt BatchNorm parameters and biases from weight decay.
//!
//! burn's SGD applies one weight decay to every parameter it is given, so the two parameter groups get an optimizer
//! each; a step hands each the gradients of its own group (`GradientsParams::from_params`).

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use tailguard_models::{Classifier, ParameterGroups};

use crate::error::{InvalidSetting, OptimizerStateError};

/// SGD settings; defaults are the papers' (momentum 0.9, no Nesterov, weight decay 5e-4 on every parameter).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdSettings {
    /// Momentum factor (dampening 0, as in PyTorch).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay, added to the gradient (coupled, as in PyTorch's SGD).
    pub weight_decay: f64,
    /// Apply weight decay to BatchNorm scales and shifts and to biases too (PyTorch's default, used by the papers).
    pub decay_norms_and_biases: bool,
}

impl Default for SgdSettings {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            decay_norms_and_biases: true,
        }
    }
}

impl SgdSettings {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(InvalidSetting::new("momentum", "must be in [0, 1)", self.momentum));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(InvalidSetting::new("weight_decay", "must be >= 0", self.weight_decay));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(InvalidSetting::new("nesterov", "needs momentum > 0", "momentum 0"));
        }
        Ok(())
    }

    fn build<B: AutodiffBackend, M: AutodiffModule<B>>(&self, weight_decay: f64) -> Adaptor<B, M> {
        let momentum = (self.momentum > 0.0).then_some(MomentumConfig {
            momentum: self.momentum,
            dampening: 0.0, // PyTorch's default; burn's is 0.1
            nesterov: self.nesterov,
        });
        SgdConfig::new()
            .with_momentum(momentum)
            .with_weight_decay((weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)))
            .init()
    }
}

type Adaptor<B, M> = OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, M, B>;

/// SGD over two parameter groups: with and without weight decay. Cloning copies the momentum buffers (AWP steps a
/// clone to find its direction).
#[derive(Clone)]
pub struct GroupedSgd<B: AutodiffBackend, M: AutodiffModule<B>> {
    decayed: Adaptor<B, M>,
    plain: Adaptor<B, M>,
    groups: ParameterGroups,
}

impl<B: AutodiffBackend, M: AutodiffModule<B> + Classifier<B>> GroupedSgd<B, M> {
    /// Optimizer state for `model`'s parameters.
    pub fn new(settings: &SgdSettings, model: &M) -> Self {
        let mut groups = model.parameter_groups();
        if settings.decay_norms_and_biases {
            groups.decay.append(&mut groups.no_decay);
        }
        Self {
            decayed: settings.build(settings.weight_decay),
            plain: settings.build(0.0),
            groups,
        }
    }

    /// One step at learning rate `lr` with the gradients of a backward pass.
    pub fn step(&mut self, lr: f64, model: M, mut grads: B::Gradients) -> M {
        let decayed = GradientsParams::from_params(&mut grads, &model, &self.groups.decay);
        let plain = GradientsParams::from_params(&mut grads, &model, &self.groups.no_decay);
        let model = self.decayed.step(lr, model, decayed);
        if plain.is_empty() {
            model
        } else {
            self.plain.step(lr, model, plain)
        }
    }

    /// The momentum buffers, serialised (for resumable checkpoints).
    pub fn to_bytes(&self) -> Result<Vec<u8>, OptimizerStateError> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let decayed = recorder.record(self.decayed.to_record(), ())?;
        let plain = recorder.record(self.plain.to_record(), ())?;
        let mut bytes = (decayed.len() as u64).to_le_bytes().to_vec();
        bytes.extend(decayed);
        bytes.extend(plain);
        Ok(bytes)
    }

    /// Restores buffers written by [`GroupedSgd::to_bytes`] for the same model.
    pub fn load_bytes(mut self, bytes: &[u8], device: &B::Device) -> Result<Self, OptimizerStateError> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let split = bytes
            .get(..8)
            .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
            .and_then(|len| len.checked_add(8))
            .filter(|&end| end <= bytes.len())
            .ok_or(OptimizerStateError::Truncated)?;
        let decayed = recorder.load(bytes[8..split].to_vec(), device)?;
        let plain = recorder.load(bytes[split..].to_vec(), device)?;
        self.decayed = self.decayed.load_record(decayed);
        self.plain = self.plain.load_record(plain);
        Ok(self)
    }
}
