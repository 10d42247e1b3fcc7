//! REAT (Li, Xu and Zhang 2023), as the RobustLT port runs it: the inner maximisation re-weights cross-entropy by
//! effective numbers computed from the previous epoch's adversarial predictions; the outer loss is the balanced
//! softmax on adversarial logits plus a tail feature term.
//!
//! Inner weights: `beta_c = (n_c - 1) / n_c`, `E_c = (1 - beta_c^{m_c}) / (1 - beta_c)`, `w_c ~ 1 / E_c` with
//! `sum_c w_c = C`, where `m_c` counts the training adversarial examples predicted as class c in the previous epoch
//! (`m_c = n_c` in the first epoch). With sign-gradient PGD and inference-mode BatchNorm every sample is attacked
//! independently, so a positive per-sample weight does not change the adversarial example; the weights are kept for
//! fidelity and for attacks where they matter.
//!
//! Tail term (tail classes: `floor(C/3) * 2 + 1 .. C - 1`, i.e. 7, 8, 9 on CIFAR-10): for each tail sample i of the
//! batch, the KL divergence from its detached feature distribution `softmax(F_i)` to every sample's `softmax(F_j)`,
//! averaged over j and feature dimensions first (the reference code's `KLDivLoss(size_average='none')` reduces to a
//! mean), times the mean over j of `idt_ij (w_{y_i} + w_{y_j})` with `idt = -1` for the same class and `+1`
//! otherwise and `w_c = sqrt(1 / prior_c)`; averaged over the tail samples.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor};
use tailguard_attacks::loss::cross_entropy_per_sample;
use tailguard_attacks::{FrozenModel, Inner, PgdConfig, predictions};
use tailguard_models::{Classifier, Mode};

use crate::error::{MethodStateError, TrainError};
use crate::losses::{class_prior, log_prior, smoothed_balanced_softmax};
use crate::method::{Method, StepInput, StepOutput, attack_from_start};
use crate::parallel::Exchange;

/// REAT with balanced-softmax weight `tau` (1 in the paper).
pub struct Reat<B: AutodiffBackend> {
    /// The inner maximisation.
    pub attack: PgdConfig,
    /// Weight of the log prior in the balanced softmax.
    pub tau: f64,
    counts: Vec<usize>,
    log_prior: Vec<f32>,
    /// `sqrt(1 / prior_c)`.
    omega: Vec<f32>,
    /// 1 for tail classes, 0 otherwise.
    tail: Vec<f32>,
    /// `m_c` of the previous epoch.
    predicted: Vec<f64>,
    /// Adversarial predictions per class so far in this epoch, on the device.
    tally: Option<Tensor<Inner<B>, 1>>,
}

impl<B: AutodiffBackend> Reat<B> {
    /// From per-class training counts.
    pub fn new(attack: PgdConfig, train_counts: &[usize], tau: f64) -> Self {
        let classes = train_counts.len();
        let prior = class_prior(train_counts);
        let first_tail = classes / 3 * 2 + 1;
        Self {
            attack,
            tau,
            counts: train_counts.to_vec(),
            log_prior: log_prior(train_counts),
            omega: prior.iter().map(|p| (1.0 / p).sqrt() as f32).collect(),
            tail: (0..classes).map(|c| if c >= first_tail { 1.0 } else { 0.0 }).collect(),
            predicted: train_counts.iter().map(|&n| n as f64).collect(),
            tally: None,
        }
    }

    /// The outer loss: balanced softmax of the adversarial logits (N, C) plus the tail term of their penultimate
    /// features (N, D), (1).
    pub fn outer_loss<B2: burn::tensor::backend::Backend>(
        &self,
        features: Tensor<B2, 2>,
        logits: Tensor<B2, 2>,
        labels: Tensor<B2, 1, Int>,
    ) -> Tensor<B2, 1> {
        self.smoothed_outer_loss(features, logits, labels, 0.0)
    }

    /// [`Reat::outer_loss`] with its balanced softmax against labels smoothed by `smoothing`, (1).
    pub fn smoothed_outer_loss<B2: burn::tensor::backend::Backend>(
        &self,
        features: Tensor<B2, 2>,
        logits: Tensor<B2, 2>,
        labels: Tensor<B2, 1, Int>,
        smoothing: f64,
    ) -> Tensor<B2, 1> {
        let device = logits.device();
        let log_prior = Tensor::<B2, 1>::from_floats(self.log_prior.as_slice(), &device);
        let omega = Tensor::<B2, 1>::from_floats(self.omega.as_slice(), &device);
        let tail = Tensor::<B2, 1>::from_floats(self.tail.as_slice(), &device);
        smoothed_balanced_softmax(logits, labels.clone(), log_prior, self.tau, smoothing)
            + reat_tail_term(features, labels, omega, tail)
    }

    /// The inner loss's class weights from the effective numbers, summing to C.
    pub fn class_weights(&self) -> Vec<f32> {
        let inverse: Vec<f64> = self
            .counts
            .iter()
            .zip(&self.predicted)
            .map(|(&n, &m)| {
                let beta = if n > 1 { (n as f64 - 1.0) / n as f64 } else { 0.0 };
                let effective = (1.0 - beta.powf(m)) / (1.0 - beta);
                // The official code's guard: a class never predicted (E = 0) gets weight 1e5 before normalising.
                1.0 / (effective + 1e-5)
            })
            .collect();
        let sum: f64 = inverse.iter().sum();
        let classes = inverse.len() as f64;
        inverse.iter().map(|w| (w / sum * classes) as f32).collect()
    }
}

/// REAT's tail term for penultimate features (N, D) and labels (N), (1).
pub fn reat_tail_term<B: burn::tensor::backend::Backend>(
    features: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    omega: Tensor<B, 1>,
    tail: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [n, d] = features.dims();
    let classes = omega.dims()[0];
    let anchor = softmax(features.clone().detach(), 1); // (N, D), the targets
    let anchor_entropy = (anchor.clone() * anchor.clone().log()).sum_dim(1); // (N, 1): sum_d t log t
    let log_q = log_softmax(features, 1); // (N, D)
    // K_ij = KL(anchor_i || q_j) = sum_d t_i log t_i - sum_d t_i log q_j
    let kl = anchor_entropy - anchor.matmul(log_q.transpose()); // (N, N)
    let kl_mean = kl.mean_dim(1).div_scalar(d as f64).reshape([n]); // mean over j and feature dimensions
    let one_hot = labels.clone().one_hot::<2>(classes).float(); // (N, C)
    let same = one_hot.clone().matmul(one_hot.clone().transpose()); // (N, N)
    let idt = same.mul_scalar(-2.0).add_scalar(1.0);
    let w = one_hot.clone().matmul(omega.reshape([classes, 1])).reshape([n]); // omega_{y_i}
    let pair = w.clone().reshape([n, 1]) + w.reshape([1, n]);
    let weight = (idt * pair).mean_dim(1).reshape([n]);
    let is_tail = one_hot.matmul(tail.reshape([classes, 1])).reshape([n]);
    let counter = is_tail.clone().sum().clamp_min(1.0);
    (is_tail * kl_mean * weight).sum() / counter
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for Reat<B> {
    fn name(&self) -> &'static str {
        "reat"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        let weights = Tensor::<B, 1>::from_floats(self.class_weights().as_slice(), &input.images.device());
        let labels = input.labels.clone();
        let sample_weights = weights.gather(0, labels.clone());
        Some(attack_from_start(&self.attack, model, input, |logits| {
            cross_entropy_per_sample(logits, labels.clone()) * sample_weights.clone()
        }))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let adversarial = adversarial.expect("REAT trains on adversarial examples");
        let (features, logits) = model
            .features_and_logits(adversarial, Mode::Train)
            .expect("checked when training started: the model exposes features");
        let loss = self.smoothed_outer_loss(features, logits.clone(), input.labels.clone(), input.label_smoothing);
        StepOutput {
            loss,
            clean_logits: None,
            adversarial_logits: Some(logits),
        }
    }

    fn needs_features(&self) -> bool {
        true
    }

    fn after_step(&mut self, _input: &StepInput<B>, output: &StepOutput<B>) {
        if let Some(logits) = &output.adversarial_logits {
            let classes = self.counts.len();
            let predicted = predictions(logits.clone().inner())
                .one_hot::<2>(classes)
                .float()
                .sum_dim(0)
                .reshape([classes]);
            self.tally = Some(match self.tally.take() {
                Some(tally) => tally + predicted,
                None => predicted,
            });
        }
    }

    /// The prediction counts of every device, so the next epoch's class weights are the same everywhere.
    fn share_statistics(&mut self, exchange: &Exchange<B>) -> Result<(), TrainError> {
        // Every device has a tally, or none has (the same method on the same number of steps).
        if let Some(local) = self.tally.take() {
            self.tally = Some(exchange.sum_statistics(local)?);
        }
        Ok(())
    }

    fn end_epoch(&mut self) {
        if let Some(tally) = self.tally.take() {
            let values: Vec<f32> = tally.into_data().convert::<f32>().to_vec().unwrap_or_default();
            self.predicted = values.iter().map(|&v| v.elem::<f64>()).collect();
        }
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "predicted_counts": self.predicted })
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<(), MethodStateError> {
        if state.is_null() {
            return Ok(());
        }
        let error = |reason: String| MethodStateError { method: "reat", reason };
        let predicted: Vec<f64> =
            serde_json::from_value(state["predicted_counts"].clone()).map_err(|e| error(e.to_string()))?;
        if predicted.len() != self.counts.len() {
            return Err(error(format!(
                "{} classes, the data has {}",
                predicted.len(),
                self.counts.len()
            )));
        }
        self.predicted = predicted;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;
    use tailguard_flex::Flex;

    #[test]
    fn effective_number_weights_by_hand() {
        let reat = Reat::<Autodiff<Flex>>::new(PgdConfig::new(), &[4, 2], 1.0);
        // beta = 3/4 and 1/2; m = n: E_0 = (1 - 0.75^4) / 0.25, E_1 = (1 - 0.25) / 0.5.
        let e0 = (1.0 - 0.75f64.powi(4)) / 0.25 + 1e-5;
        let e1 = 0.75 / 0.5 + 1e-5;
        let (w0, w1) = (1.0 / e0, 1.0 / e1);
        let w = reat.class_weights();
        assert!((w[0] as f64 - 2.0 * w0 / (w0 + w1)).abs() < 1e-6, "{w:?}");
        assert!((w[0] + w[1] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn tail_term_by_hand() {
        let device = Default::default();
        // Two samples: sample 0 in class 0 (head), sample 1 in class 1 (tail). Features of dimension 2.
        let f = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0.0f32, 0.0, 1.0, 0.0], [2, 2]), &device);
        let y = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![0i64, 1], [2]), &device);
        let omega = Tensor::<Flex, 1>::from_floats([1.0, 2.0], &device);
        let tail = Tensor::<Flex, 1>::from_floats([0.0, 1.0], &device);
        let term: f32 = reat_tail_term(f, y, omega, tail).into_scalar();
        // Anchor i = 1: t = softmax(1, 0) = (e/(e+1), 1/(e+1)). KL to q_0 = (1/2, 1/2), KL to q_1 = 0.
        let e = std::f64::consts::E;
        let t = [e / (e + 1.0), 1.0 / (e + 1.0)];
        let kl0 = t[0] * (t[0] / 0.5).ln() + t[1] * (t[1] / 0.5).ln();
        let kl_mean = (kl0 + 0.0) / 2.0 / 2.0;
        // Weights for i = 1: j = 0 other class: +(2 + 1); j = 1 same class: -(2 + 2). Mean = -0.5.
        let expected = kl_mean * -0.5;
        assert!((term as f64 - expected).abs() < 1e-6, "{term} vs {expected}");
    }
}
