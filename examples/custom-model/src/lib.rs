//! Embedding tailguard in another Burn program: the program's own model ([`model::TinyNet`]) and its own training
//! method ([`mart::Mart`]), trained with RobustLT's class-wise budgets, checkpointed and resumed by a
//! [`tailguard_trainers::Run`], exported to safetensors under the program's own tensor names, and evaluated with
//! AA-lite through tailguard's one evaluation entry point. No tailguard crate knows about either.

pub mod mart;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Autodiff;

use burn::tensor::backend::Backend;
use tailguard_attacks::{AttackPreset, PgdConfig};
use tailguard_flex::Flex;
use tailguard_longtail::{BatchLoader, BatchLoaderConfig, ClassGroups, DatasetKind, LongTailSpec, Split};
use tailguard_models::{Classifier, export_safetensors};
use tailguard_trainers::methods::Natural;
use tailguard_trainers::{
    BudgetPolicy, LrSchedule, Method, PresetAttack, RobustLtConfig, Run, RunDescription, Silent, TrainData, Trainer,
    TrainerConfig, evaluate,
};

use crate::mart::Mart;
use crate::model::TinyNet;

/// The backend: Burn's CPU backend with autodiff (any `AutodiffBackend` works the same).
pub type B = Autodiff<Flex>;

/// Which method trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Training {
    /// Cross-entropy on clean images (tailguard's built-in `Natural`), the baseline.
    Natural,
    /// This program's MART, in RobustLT budgets.
    Mart,
}

/// The embedded long-tailed CIFAR-10 subset that ships with tailguard.
pub fn embedded_data() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../datasets/cifar10-lt-mini.tar.gz"
    ))
}

/// The long-tailed training split (imbalance 10, at most `per_class` images in the head class).
pub fn training_data(per_class: usize) -> Result<TrainData, Box<dyn std::error::Error>> {
    let source = DatasetKind::Cifar10.load(&embedded_data(), Split::Train)?;
    let spec = LongTailSpec {
        n_max: Some(per_class),
        ..LongTailSpec::exp(10.0)
    };
    Ok(TrainData::from_dataset(spec.select(&source)?.apply(&source)?, 0.0, 0)?)
}

/// A trainer at epoch 0: a freshly seeded model, the method, and RobustLT budgets (eps 8/255, alpha 0.3, warm-up
/// over 80 % of the epochs) for MART, uniform ones for natural training.
pub fn trainer(
    training: Training,
    data: &TrainData,
    epochs: usize,
    seed: u64,
) -> Result<Trainer<B, TinyNet<B>>, Box<dyn std::error::Error>> {
    let device = Default::default();
    <B as Backend>::seed(&device, seed);
    let model = TinyNet::new(data.classes.len(), &device);
    let eps = 8.0 / 255.0;
    let (method, budget): (Box<dyn Method<B, TinyNet<B>>>, _) = match training {
        Training::Natural => (Box::new(Natural), BudgetPolicy::uniform(eps, data.counts.len())),
        Training::Mart => (
            Box::new(Mart {
                attack: PgdConfig::new().with_eps(eps).with_step_size(2.0 / 255.0).with_steps(3),
                beta: 6.0,
            }),
            BudgetPolicy::robust_lt(eps, &data.counts, RobustLtConfig::new(0.3, 0.8), epochs),
        ),
    };
    let config = TrainerConfig::new(epochs, 0.1)
        .with_schedule(LrSchedule::Cosine { min_lr: 0.0 })
        .with_batch_size(32)
        .with_seed(seed);
    Ok(Trainer::new(model, method, budget, config, data, &device)?)
}

/// Trains into the run folder `dir`: starts it, or resumes it when it holds a checkpoint. Stops after
/// `stop_after` epochs of this call when given (as if the process had been stopped), else at the end.
pub fn train(
    training: Training,
    data: &TrainData,
    epochs: usize,
    dir: &Path,
    stop_after: Option<usize>,
) -> Result<TinyNet<B>, Box<dyn std::error::Error>> {
    let trainer = trainer(training, data, epochs, 1)?;
    let description = RunDescription::default();
    let mut run = if dir.join("last").exists() {
        Run::resume(trainer, description, dir)?
    } else {
        Run::start(trainer, description, dir, false)?
    };
    let mut done = 0;
    while !run.finished() && stop_after.is_none_or(|n| done < n) {
        let record = run.run_epoch(&mut Silent)?;
        println!("epoch {} ({}): loss {:.3}", record.epoch, record.stage, record.loss);
        done += 1;
    }
    Ok(run.trainer.into_model())
}

/// Balanced accuracy and balanced robustness under AA-lite (eps 8/255) on `per_class` test images of each class.
pub fn balanced_robustness(model: &TinyNet<B>, per_class: usize) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let test = DatasetKind::Cifar10.load(&embedded_data(), Split::Test)?;
    let spec = LongTailSpec {
        n_max: Some(per_class),
        ..LongTailSpec::exp(1.0)
    };
    let test = Arc::new(spec.select(&test)?.apply(&test)?);
    let loader = BatchLoader::new(test, BatchLoaderConfig::evaluation(100))?;
    let attack = |preset| PresetAttack::linf(preset, 8.0 / 255.0);
    let (clean, aa) = (attack(AttackPreset::Clean), attack(AttackPreset::AaLite));
    let results = evaluate(model, &loader, &[&clean, &aa], 0, &Default::default(), &mut Silent)?;
    let groups = ClassGroups::default();
    Ok((
        results[0].tally.summary(&groups).balanced_accuracy,
        results[1].tally.summary(&groups).balanced_accuracy,
    ))
}

/// The whole program: MART with RobustLT budgets for `epochs` epochs in `dir` (stopped halfway and resumed), the
/// weights exported to `dir/tinynet.safetensors`, balanced accuracy and robustness under AA-lite.
pub fn run(dir: &Path, epochs: usize, test_per_class: usize) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let data = training_data(200)?;
    let run_dir = dir.join("mart");
    train(Training::Mart, &data, epochs, &run_dir, Some(epochs / 2))?;
    println!("stopped; resuming from {}", run_dir.join("last").display());
    let model = train(Training::Mart, &data, epochs, &run_dir, None)?;
    let weights = dir.join("tinynet.safetensors");
    export_safetensors(&model, model::TorchNames, &weights)?;
    println!("exported {} ({} classes)", weights.display(), model.num_classes());
    balanced_robustness(&model, test_per_class)
}
