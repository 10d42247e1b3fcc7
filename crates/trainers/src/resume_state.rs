//! What a run needs besides weights and optimizer to continue exactly: the next epoch, the best validation
//! robustness, the method's state, and the method and loop settings it was trained with. One type for both ways a
//! trainer is continued: from a checkpoint on disk (`train_state.json`) and from device 0 when a data-parallel run
//! starts; one "same run" comparison for both.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;
use tailguard_models::Classifier;

use crate::error::MethodStateError;
use crate::settings::TrainerConfig;
use crate::trainer::Trainer;

/// Progress that is not in the model or optimizer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResumeState {
    /// 0-based index of the next epoch to run.
    pub next_epoch: usize,
    /// Best balanced validation robustness so far (a run's; `None` elsewhere).
    pub best_validation_robust: Option<f64>,
    /// The method's own state ([`crate::Method::state`]).
    #[serde(default)]
    pub method: serde_json::Value,
    /// The method's name (absent in runs of tailguard < 0.1.1).
    #[serde(default)]
    pub method_name: Option<String>,
    /// The loop settings the run was started with (absent in runs of tailguard < 0.1.1).
    #[serde(default)]
    pub trainer: Option<TrainerConfig>,
}

/// Which settings may differ between the state's trainer and the one continuing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameRun {
    /// A resumed run: only the number of epochs may change.
    AnyEpochs,
    /// Devices of one data-parallel run: nothing may differ.
    Exactly,
}

impl ResumeState {
    /// The state of `trainer`, with the best validation robustness `best`.
    pub fn of<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>>(
        trainer: &Trainer<B, M>,
        best: Option<f64>,
    ) -> Self {
        Self {
            next_epoch: trainer.next_epoch,
            best_validation_robust: best,
            method: trainer.method_state(),
            method_name: Some(trainer.method_name().to_string()),
            trainer: Some(trainer.config().clone()),
        }
    }

    /// Every way `trainer` differs from the trainer this state was taken from (`key: old -> new`); empty when it
    /// may continue the state.
    pub fn differences<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>>(
        &self,
        trainer: &Trainer<B, M>,
        same: SameRun,
    ) -> Vec<String> {
        let mut changes = Vec::new();
        if let Some(name) = &self.method_name
            && name != trainer.method_name()
        {
            changes.push(format!("method: {name} -> {}", trainer.method_name()));
        }
        if let Some(stored) = &self.trainer {
            let mut stored = stored.clone();
            if same == SameRun::AnyEpochs {
                stored.epochs = trainer.config().epochs;
            }
            changes.extend(
                crate::run::changed_keys(&json!(stored), &json!(trainer.config()))
                    .into_iter()
                    .map(|(_, change)| change),
            );
        }
        changes
    }

    /// Puts `trainer` at this state's epoch with this state's method state.
    pub fn restore<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>>(
        &self,
        trainer: &mut Trainer<B, M>,
    ) -> Result<(), MethodStateError> {
        trainer.next_epoch = self.next_epoch;
        trainer.load_method_state(&self.method)
    }
}
