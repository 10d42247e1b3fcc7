//! One epoch's figures: the running tally kept on the device, and the record written to the log.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor};
use tailguard_attacks::{Inner, predictions};

use crate::error::TrainError;
use crate::method::StepOutput;

/// Running figures of an epoch, read back from the device every few steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFigures {
    /// Loss of the latest step.
    pub loss: f64,
    /// Clean training accuracy so far in the epoch, when the method computes clean logits.
    pub clean_accuracy: Option<f64>,
    /// Adversarial training accuracy so far in the epoch, when the method makes adversarial examples.
    pub adversarial_accuracy: Option<f64>,
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// The method's stage (TAET: "clean", then "adversarial").
    pub stage: String,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy on clean images, when the method computes clean logits.
    pub clean_accuracy: Option<f64>,
    /// Training accuracy on adversarial images, when the method makes them.
    pub adversarial_accuracy: Option<f64>,
    /// Per-class budgets of the epoch in units of 1/255, when they are not uniform (RobustLT).
    pub eps_per_class: Option<Vec<f64>>,
    /// Training throughput.
    pub images_per_second: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// Balanced clean accuracy on the validation split.
    pub validation_clean: Option<f64>,
    /// Balanced robust accuracy (PGD) on the validation split: the best-checkpoint criterion.
    pub validation_robust: Option<f64>,
    /// Robust accuracy (PGD) of each class on the validation split (absent in logs of tailguard < 0.1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_robust_per_class: Option<Vec<Option<f64>>>,
}

/// Loss and accuracy sums of an epoch, kept on the device so that a step never waits for the host.
pub struct EpochTally<B: AutodiffBackend> {
    loss_sum: Tensor<Inner<B>, 1>,
    clean_correct: Tensor<Inner<B>, 1, Int>,
    adversarial_correct: Tensor<Inner<B>, 1, Int>,
    latest_loss: Option<Tensor<Inner<B>, 1>>,
    seen: usize,
    clean_seen: usize,
    adversarial_seen: usize,
}

impl<B: AutodiffBackend> EpochTally<B> {
    /// An empty tally on `device`.
    pub fn new(device: &B::Device) -> Self {
        Self {
            loss_sum: Tensor::zeros([1], device),
            clean_correct: Tensor::zeros([1], device),
            adversarial_correct: Tensor::zeros([1], device),
            latest_loss: None,
            seen: 0,
            clean_seen: 0,
            adversarial_seen: 0,
        }
    }

    /// Adds a step's output for a batch with true classes `labels` (N).
    pub fn add(&mut self, output: &StepOutput<B>, labels: &Tensor<B, 1, Int>) {
        let n = labels.dims()[0];
        let labels = labels.clone().inner();
        let loss = output.loss.clone().detach().inner();
        self.loss_sum = self.loss_sum.clone() + loss.clone().mul_scalar(n as f64);
        self.latest_loss = Some(loss);
        let correct = |logits: &Tensor<B, 2>| predictions(logits.clone().inner()).equal(labels.clone()).int().sum();
        if let Some(logits) = &output.clean_logits {
            self.clean_correct = self.clean_correct.clone() + correct(logits);
            self.clean_seen += n;
        }
        if let Some(logits) = &output.adversarial_logits {
            self.adversarial_correct = self.adversarial_correct.clone() + correct(logits);
            self.adversarial_seen += n;
        }
        self.seen += n;
    }

    /// Images seen so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The latest loss and the accuracies so far (reads the device).
    pub fn figures(&self) -> StepFigures {
        StepFigures {
            loss: self
                .latest_loss
                .clone()
                .map_or(f64::NAN, |l| l.into_scalar().elem::<f64>()),
            clean_accuracy: rate(&self.clean_correct, self.clean_seen),
            adversarial_accuracy: rate(&self.adversarial_correct, self.adversarial_seen),
        }
    }

    /// As [`EpochTally::figures`], with the loss averaged over the `devices` of a data-parallel run whose sum
    /// over devices `sum` is (see [`crate::Exchange::figures`]).
    pub fn figures_across(
        &self,
        devices: usize,
        sum: impl FnOnce(Tensor<Inner<B>, 1>) -> Result<Tensor<Inner<B>, 1>, TrainError>,
    ) -> Result<StepFigures, TrainError> {
        let mut figures = self.figures();
        let summed = sum(Tensor::<Inner<B>, 1>::from_floats(
            [figures.loss as f32],
            &self.loss_sum.device(),
        ))?;
        figures.loss = summed.into_scalar().elem::<f64>() / devices as f64;
        Ok(figures)
    }

    /// Replaces this device's sums and counts by their sums `sum` over every device of a data-parallel run (see
    /// [`crate::Exchange::combine`]): afterwards
    /// [`EpochTally::finish`] and [`EpochTally::seen`] describe the whole epoch.
    pub fn combine(
        &mut self,
        sum: impl FnOnce(Tensor<Inner<B>, 1>) -> Result<Tensor<Inner<B>, 1>, TrainError>,
    ) -> Result<(), TrainError> {
        let read_int = |t: &Tensor<Inner<B>, 1, Int>| t.clone().into_scalar().elem::<i64>() as f32;
        let local = [
            self.loss_sum.clone().into_scalar().elem::<f32>(),
            read_int(&self.clean_correct),
            read_int(&self.adversarial_correct),
            self.seen as f32,
            self.clean_seen as f32,
            self.adversarial_seen as f32,
        ];
        let device = &self.loss_sum.device();
        let summed = sum(Tensor::<Inner<B>, 1>::from_floats(local, device))?;
        let g: Vec<f32> = summed.into_data().convert::<f32>().to_vec().unwrap_or_default();
        self.loss_sum = Tensor::from_floats([g[0]], device);
        self.clean_correct = Tensor::from_ints([g[1] as i64], device);
        self.adversarial_correct = Tensor::from_ints([g[2] as i64], device);
        (self.seen, self.clean_seen, self.adversarial_seen) = (g[3] as usize, g[4] as usize, g[5] as usize);
        Ok(())
    }

    /// Mean loss and the accuracies of the epoch (reads the device).
    pub fn finish(&self) -> (f64, Option<f64>, Option<f64>) {
        (
            self.loss_sum.clone().into_scalar().elem::<f64>() / self.seen.max(1) as f64,
            rate(&self.clean_correct, self.clean_seen),
            rate(&self.adversarial_correct, self.adversarial_seen),
        )
    }
}

fn rate<B: burn::tensor::backend::Backend>(correct: &Tensor<B, 1, Int>, n: usize) -> Option<f64> {
    (n > 0).then(|| correct.clone().into_scalar().elem::<i64>() as f64 / n as f64)
}
