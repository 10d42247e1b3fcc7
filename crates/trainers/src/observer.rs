//! Hooks for progress display during training and evaluation.

use std::path::Path;

use tailguard_longtail::ClassTally;

use crate::epoch::{EpochRecord, StepFigures};

/// Hooks for training progress.
pub trait TrainObserver {
    /// After each step; `figures` come every few steps (reading them waits for the device).
    fn on_step(&mut self, _epoch: usize, _step: usize, _steps: usize, _figures: Option<StepFigures>) {}

    /// After a [`crate::Run`] has logged an epoch and written its checkpoint into `dir`.
    fn on_epoch_end(&mut self, _record: &EpochRecord, _dir: &Path) {}
}

/// Hooks for evaluation progress.
pub trait EvaluationObserver {
    /// After each batch of attack `attack`: images done so far of `total`, and the tally so far.
    fn on_batch(&mut self, _attack: &str, _done: usize, _total: usize, _tally: &ClassTally) {}
}

/// An observer that shows nothing.
pub struct Silent;

impl TrainObserver for Silent {}

impl EvaluationObserver for Silent {}
