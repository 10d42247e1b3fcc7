//! The program's one epoch loop and its progress: a bar per epoch, then the run folder's curves and one line per
//! epoch. `train`, `train --devices` (through the library's data-parallel loop, as device 0's observer) and `demo`
//! all train through it; only the line differs.

use std::path::Path;

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use tailguard_models::Classifier;
use tailguard_trainers::{EpochRecord, Run, StepFigures, TensorBoardObserver, TrainObserver};

/// The folder of a run that holds its TensorBoard event files.
pub const TENSORBOARD_DIR: &str = "tensorboard";

use crate::progress;
use crate::report::percent;

/// How an epoch is reported once it has run.
pub enum EpochLine {
    /// `tailguard train`: a summary line on stderr, or the record as a JSON line on stdout with `--json`.
    Train {
        /// Machine-readable output.
        json: bool,
    },
    /// `tailguard demo`: the model's name, loss and training accuracies.
    Demo {
        /// The model being trained.
        name: String,
    },
}

/// Progress of a run: a bar per epoch, then curves and a line.
pub struct EpochReporter {
    bar: Option<ProgressBar>,
    hidden: bool,
    line: EpochLine,
    epochs: usize,
    /// The first failure to write curves: the loop stops on it; device 0 of a data-parallel run only warns.
    failure: Option<anyhow::Error>,
    /// TensorBoard events of the run, when asked for.
    tensorboard: Option<TensorBoardObserver>,
}

impl EpochReporter {
    /// A reporter for a run of `epochs` epochs; `hidden` hides the bars.
    pub fn new(line: EpochLine, epochs: usize, hidden: bool) -> Self {
        Self {
            bar: None,
            hidden,
            line,
            epochs,
            failure: None,
            tensorboard: None,
        }
    }

    /// Also writes the run's scalars as TensorBoard events into `dir` (a folder the run has claimed).
    pub fn with_tensorboard(mut self, dir: &Path) -> anyhow::Result<Self> {
        let observer = TensorBoardObserver::create(dir)
            .with_context(|| format!("cannot create TensorBoard events in {}", dir.display()))?;
        self.tensorboard = Some(observer);
        Ok(self)
    }

    fn label(&self, epoch: usize) -> String {
        match &self.line {
            EpochLine::Train { .. } => format!("epoch {}", epoch + 1),
            EpochLine::Demo { name } => format!("[{name}] epoch {}", epoch + 1),
        }
    }

    fn report(&self, dir: &Path, record: &EpochRecord) -> anyhow::Result<()> {
        crate::report::curves::write_training_curves(dir)?;
        match &self.line {
            EpochLine::Train { json: true } => println!("{}", serde_json::to_string(record)?),
            EpochLine::Train { json: false } => eprintln!("{}", summary(record, self.epochs)),
            EpochLine::Demo { name } => eprintln!(
                "[{name}] epoch {}/{} {:<11} loss {:.4}  training accuracy clean {}%  adversarial {}%",
                record.epoch,
                self.epochs,
                record.stage,
                record.loss,
                percent(record.clean_accuracy),
                percent(record.adversarial_accuracy)
            ),
        }
        Ok(())
    }
}

impl TrainObserver for EpochReporter {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, figures: Option<StepFigures>) {
        let label = self.label(epoch);
        let bar = self
            .bar
            .get_or_insert_with(|| progress::bar(self.hidden, steps as u64, label.clone()));
        bar.set_position(step as u64);
        if let Some(figures) = &figures {
            bar.set_message(format!("{label} {}", progress::step_message(figures)));
        }
        if let Some(tensorboard) = &mut self.tensorboard {
            tensorboard.on_step(epoch, step, steps, figures);
        }
    }

    fn on_epoch_end(&mut self, record: &EpochRecord, dir: &Path) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(tensorboard) = &mut self.tensorboard {
            tensorboard.on_epoch_end(record, dir);
        }
        let events = self
            .tensorboard
            .as_mut()
            .and_then(TensorBoardObserver::take_failure)
            .map(|e| {
                anyhow::Error::new(e).context(format!(
                    "cannot write TensorBoard events in {}",
                    dir.join(TENSORBOARD_DIR).display()
                ))
            });
        if let Err(error) = self.report(dir, record).and(events.map_or(Ok(()), Err))
            && self.failure.is_none()
        {
            self.failure = Some(error);
        }
    }
}

impl EpochReporter {
    /// For device 0 of a data-parallel run, whose loop the library drives: a failure to report is a warning.
    pub fn warn_only(self) -> WarnOnly {
        WarnOnly(self)
    }
}

/// An [`EpochReporter`] that prints its failures as warnings instead of stopping the run.
pub struct WarnOnly(EpochReporter);

impl TrainObserver for WarnOnly {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, figures: Option<StepFigures>) {
        self.0.on_step(epoch, step, steps, figures);
    }

    fn on_epoch_end(&mut self, record: &EpochRecord, dir: &Path) {
        self.0.on_epoch_end(record, dir);
        if let Some(error) = self.0.failure.take() {
            eprintln!("warning: {error:#}");
        }
    }
}

/// Trains `run` to its last epoch, reporting each epoch; stops at the first error, also one of reporting.
pub fn train_to_end<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>>(
    run: &mut Run<B, M>,
    reporter: &mut EpochReporter,
) -> anyhow::Result<()> {
    while !run.finished() {
        run.run_epoch(reporter)?;
        if let Some(error) = reporter.failure.take() {
            return Err(error);
        }
    }
    Ok(())
}

fn summary(r: &EpochRecord, epochs: usize) -> String {
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:5.1}%", 100.0 * v))
            .unwrap_or_else(|| "    -".into())
    };
    format!(
        "epoch {:>3}/{epochs} {:<11} lr {:.4}  loss {:.4}  train clean {}  adv {}  val clean {}  robust {}  {:.0} img/s",
        r.epoch,
        r.stage,
        r.lr,
        r.loss,
        pct(r.clean_accuracy),
        pct(r.adversarial_accuracy),
        pct(r.validation_clean),
        pct(r.validation_robust),
        r.images_per_second
    )
}
