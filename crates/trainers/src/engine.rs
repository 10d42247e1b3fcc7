//! The training engine: data, one readable training step, epochs, validation.

use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use tailguard_attacks::{FrozenModel, Inner, PgdConfig, predictions};
use tailguard_longtail::{
    Augmentation, BatchLoader, BatchLoaderConfig, ClassGroups, ClassTally, DataError, ImageDataset, LongTailSpec,
    Sampling, SeedStream, Split, carve_validation,
};
use tailguard_models::Classifier;

use crate::budget::BudgetPolicy;
use crate::config::{ConfigError, MethodConfig, TrainConfig};
use crate::method::{Method, StepInput, StepOutput};
use crate::methods::{AtBsl, Natural, PgdAt, Reat, Robal, Taet, Trades};
use crate::optimizer::GroupedSgd;

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(
        "training diverged in epoch {epoch} (loss is {loss}); the last good checkpoint is kept. Lower optim.lr or \
         check the data"
    )]
    Diverged { epoch: usize, loss: f64 },
    #[error("{0}")]
    Checkpoint(String),
    #[error(transparent)]
    CheckpointFile(#[from] tailguard_models::CheckpointError),
    #[error(transparent)]
    Output(#[from] tailguard_output::OutputError),
}

/// The training images, split into training and validation parts.
pub struct TrainData {
    pub train: Arc<ImageDataset>,
    pub validation: Option<Arc<ImageDataset>>,
    /// Images per class in the training part (what RobustLT's budgets and AT-BSL's prior use).
    pub counts: Vec<usize>,
    pub classes: Vec<String>,
}

impl TrainData {
    /// Loads the dataset, cuts the long-tailed split and holds out the validation fraction.
    pub fn load(config: &TrainConfig) -> Result<Self, TrainError> {
        let d = &config.data;
        let source = d.dataset.load(&d.data_dir, Split::Train)?;
        let spec = LongTailSpec {
            imbalance: d.imbalance,
            profile: d.profile,
            n_max: d.n_max,
            seed: d.split_seed,
        };
        let long_tailed = spec.select(&source)?.apply(&source)?;
        Self::from_dataset(long_tailed, d.validation_fraction, d.split_seed)
    }

    /// From an already long-tailed dataset.
    pub fn from_dataset(dataset: ImageDataset, validation_fraction: f64, seed: u64) -> Result<Self, TrainError> {
        let (train, validation) = if validation_fraction > 0.0 {
            let (train, validation) = carve_validation(&dataset, validation_fraction, seed)?;
            (train, (!validation.is_empty()).then(|| Arc::new(validation)))
        } else {
            (dataset, None)
        };
        Ok(Self {
            counts: train.class_counts(),
            classes: train.classes().to_vec(),
            train: Arc::new(train),
            validation,
        })
    }
}

/// The budget policy a configuration asks for.
pub fn budget_policy(config: &TrainConfig, counts: &[usize]) -> BudgetPolicy {
    let eps = config.attack.eps.0;
    match config.robustlt {
        Some(r) => BudgetPolicy::robust_lt(eps, counts, r, config.optim.epochs),
        None => BudgetPolicy::uniform(eps, counts.len()),
    }
}

/// The method a configuration asks for.
pub fn build_method<B: AutodiffBackend, M: Classifier<B> + 'static>(
    config: &TrainConfig,
    counts: &[usize],
) -> Result<Box<dyn Method<B, M>>, ConfigError> {
    let attack = config.attack()?;
    Ok(match &config.method {
        MethodConfig::Natural => Box::new(Natural),
        MethodConfig::PgdAt => Box::new(PgdAt { attack }),
        MethodConfig::Trades { beta } => Box::new(Trades { attack, beta: *beta }),
        MethodConfig::AtBsl { tau } => Box::new(AtBsl::new(attack, counts, *tau)),
        MethodConfig::Reat { tau } => Box::new(Reat::new(attack, counts, *tau)),
        MethodConfig::Robal {
            scale,
            margin,
            tau_m,
            tau_b,
            adversarial_weight,
            kl_weight,
        } => Box::new(Robal::new(
            attack,
            counts,
            *scale,
            *margin,
            *tau_m,
            *tau_b,
            *adversarial_weight,
            *kl_weight,
        )),
        MethodConfig::Taet {
            ce_epochs,
            alpha,
            beta,
            gamma,
            extra_clean_forward,
            absent_classes,
        } => Box::new(Taet {
            attack,
            ce_epochs: *ce_epochs,
            weights: [*alpha, *beta, *gamma],
            extra_clean_forward: *extra_clean_forward,
            absent_classes: *absent_classes,
            num_classes: counts.len(),
        }),
    })
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    pub stage: String,
    pub lr: f64,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy on clean images, when the method computes clean logits.
    pub clean_accuracy: Option<f64>,
    /// Training accuracy on adversarial images, when the method makes them.
    pub adversarial_accuracy: Option<f64>,
    /// Per-class budgets of the epoch in units of 1/255, when they are not uniform (RobustLT).
    pub eps_per_class: Option<Vec<f64>>,
    pub images_per_second: f64,
    pub seconds: f64,
    /// Balanced clean accuracy on the validation split.
    pub validation_clean: Option<f64>,
    /// Balanced robust accuracy (PGD) on the validation split: the best-checkpoint criterion.
    pub validation_robust: Option<f64>,
}

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

/// Hooks for progress display.
pub trait TrainObserver {
    /// After each step; `figures` come every few steps (reading them waits for the device).
    fn on_step(&mut self, _epoch: usize, _step: usize, _steps: usize, _figures: Option<StepFigures>) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl TrainObserver for Silent {}

/// How often the loss is read back during an epoch (divergence check and progress).
const LOSS_READ_EVERY: usize = 10;

/// Trains a model with a method, epoch by epoch.
pub struct Trainer<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>> {
    pub model: M,
    pub optimizer: GroupedSgd<B, M>,
    method: Box<dyn Method<B, M>>,
    budget: BudgetPolicy,
    config: TrainConfig,
    loader: BatchLoader,
    validation: Option<BatchLoader>,
    device: B::Device,
    /// 0-based index of the next epoch to run.
    pub next_epoch: usize,
}

impl<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B> + 'static> Trainer<B, M> {
    /// A trainer at epoch 0.
    pub fn new(config: &TrainConfig, data: &TrainData, model: M, device: &B::Device) -> Result<Self, TrainError> {
        let method = build_method::<B, M>(config, &data.counts)?;
        if method.needs_features() {
            let shape = data.train.shape();
            let probe = Tensor::<B, 4>::zeros([1, shape.channels, shape.height, shape.width], device);
            if model
                .features_and_logits(probe, tailguard_models::Mode::Inference)
                .is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "{} needs penultimate features, which this model does not expose (Classifier::features_and_logits)",
                    config.method_name()
                ))
                .into());
            }
        }
        let loader_config = BatchLoaderConfig {
            batch_size: config.optim.batch_size,
            sampling: if config.data.class_balanced {
                Sampling::ClassBalanced
            } else {
                Sampling::Shuffled
            },
            augmentation: config.data.augment.then(Augmentation::default),
            drop_last: false,
            seed: config.seed,
            prefetch: 2,
        };
        let validation = match &data.validation {
            Some(v) => Some(BatchLoader::new(
                v.clone(),
                BatchLoaderConfig::evaluation(config.optim.batch_size),
            )?),
            None => None,
        };
        Ok(Self {
            optimizer: GroupedSgd::new(&config.sgd(), &model),
            model,
            method,
            budget: budget_policy(config, &data.counts),
            loader: BatchLoader::new(data.train.clone(), loader_config)?,
            validation,
            config: config.clone(),
            device: device.clone(),
            next_epoch: 0,
        })
    }

    /// Total epochs of the run.
    pub fn epochs(&self) -> usize {
        self.config.optim.epochs
    }

    /// The method's stage in `epoch`.
    pub fn stage(&self, epoch: usize) -> &'static str {
        self.method.stage(epoch)
    }

    /// Batches per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.loader.num_batches()
    }

    /// Runs the next epoch.
    pub fn run_epoch(&mut self, observer: &mut dyn TrainObserver) -> Result<EpochRecord, TrainError> {
        let epoch = self.next_epoch;
        let start = Instant::now();
        // Attack starts draw from the backend's generator: seeding it per epoch makes a resumed run identical.
        <B as Backend>::seed(
            &self.device,
            SeedStream::derive(self.config.seed, &[0x6174_7461_636b, epoch as u64]).next_u64(),
        );
        let lr = self
            .config
            .optim
            .schedule
            .lr(self.config.optim.lr, epoch, self.epochs());
        let steps = self.loader.num_batches();
        let inner_device = self.device.clone();
        let mut loss_sum = Tensor::<Inner<B>, 1>::zeros([1], &inner_device);
        let mut clean_correct = Tensor::<Inner<B>, 1, Int>::zeros([1], &inner_device);
        let mut adversarial_correct = Tensor::<Inner<B>, 1, Int>::zeros([1], &inner_device);
        let (mut seen, mut clean_seen, mut adversarial_seen) = (0usize, 0usize, 0usize);

        for (step, host) in self.loader.host_batches(epoch).enumerate() {
            let n = host.len();
            let labels_host: Vec<usize> = host.labels.iter().map(|&l| l as usize).collect();
            let eps = Tensor::<Inner<B>, 1>::from_data(
                TensorData::new(self.budget.for_labels(epoch, &labels_host), [n]),
                &inner_device,
            );
            let batch = host.into_device::<B>(&self.device);
            let input = StepInput {
                images: batch.images,
                labels: batch.labels,
                eps,
                epoch,
            };

            let output = train_step(self.method.as_mut(), &mut self.model, &mut self.optimizer, &input, lr);

            // Metrics stay on the device; the host reads them every few steps and at the end of the epoch.
            let labels = input.labels.inner();
            let step_loss = output.loss.detach().inner();
            loss_sum = loss_sum + step_loss.clone().mul_scalar(n as f64);
            if let Some(logits) = output.clean_logits {
                clean_correct = clean_correct + predictions(logits.inner()).equal(labels.clone()).int().sum();
                clean_seen += n;
            }
            if let Some(logits) = output.adversarial_logits {
                adversarial_correct = adversarial_correct + predictions(logits.inner()).equal(labels).int().sum();
                adversarial_seen += n;
            }
            seen += n;
            let figures = ((step + 1) % LOSS_READ_EVERY == 0).then(|| {
                let rate = |t: &Tensor<Inner<B>, 1, Int>, n: usize| {
                    (n > 0).then(|| t.clone().into_scalar().elem::<i64>() as f64 / n as f64)
                };
                StepFigures {
                    loss: step_loss.into_scalar().elem::<f64>(),
                    clean_accuracy: rate(&clean_correct, clean_seen),
                    adversarial_accuracy: rate(&adversarial_correct, adversarial_seen),
                }
            });
            if let Some(f) = figures
                && !f.loss.is_finite()
            {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    loss: f.loss,
                });
            }
            observer.on_step(epoch, step + 1, steps, figures);
        }

        self.method.end_epoch();
        let loss = loss_sum.into_scalar().elem::<f64>() / seen.max(1) as f64;
        if !loss.is_finite() {
            return Err(TrainError::Diverged { epoch: epoch + 1, loss });
        }
        let fraction =
            |t: Tensor<Inner<B>, 1, Int>, n: usize| (n > 0).then(|| t.into_scalar().elem::<i64>() as f64 / n as f64);
        let seconds_training = start.elapsed().as_secs_f64();
        let validate = self.validation.is_some()
            && ((epoch + 1).is_multiple_of(self.config.validation.every) || epoch + 1 == self.epochs());
        let (validation_clean, validation_robust) = if validate { self.validate() } else { (None, None) };
        self.next_epoch += 1;
        Ok(EpochRecord {
            epoch: epoch + 1,
            stage: self.method.stage(epoch).to_string(),
            lr,
            loss,
            clean_accuracy: fraction(clean_correct, clean_seen),
            adversarial_accuracy: fraction(adversarial_correct, adversarial_seen),
            eps_per_class: (!self.budget.is_uniform())
                .then(|| self.budget.budgets(epoch).iter().map(|e| e * 255.0).collect()),
            images_per_second: seen as f64 / seconds_training.max(1e-9),
            seconds: start.elapsed().as_secs_f64(),
            validation_clean,
            validation_robust,
        })
    }

    /// Balanced clean and robust accuracy on the validation split (PGD at the training eps, step 2/255).
    pub fn validate(&self) -> (Option<f64>, Option<f64>) {
        let Some(loader) = &self.validation else {
            return (None, None);
        };
        let attack = PgdConfig::new()
            .with_eps(self.config.attack.eps.0)
            .with_steps(self.config.validation.attack_steps);
        let (clean, robust) = evaluate(&FrozenModel::new(&self.model), loader, &attack, &self.device);
        let groups = ClassGroups::default();
        (
            Some(clean.summary(&groups).balanced_accuracy),
            Some(robust.summary(&groups).balanced_accuracy),
        )
    }

    /// The method's state (saved with checkpoints).
    pub fn method_state(&self) -> serde_json::Value {
        self.method.state()
    }

    /// Restores the method's state.
    pub fn load_method_state(&mut self, state: &serde_json::Value) -> Result<(), TrainError> {
        self.method.load_state(state).map_err(TrainError::Checkpoint)
    }

    /// The per-class budgets at full intensity.
    pub fn full_budgets(&self) -> &[f64] {
        self.budget.full_budgets()
    }
}

/// One optimisation step of `method` on `input`: attack (inference mode), loss (training mode), backward, optimizer
/// step at learning rate `lr`. The training loop and `tailguard bench` both run exactly this.
pub fn train_step<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>>(
    method: &mut dyn Method<B, M>,
    model: &mut M,
    optimizer: &mut GroupedSgd<B, M>,
    input: &StepInput<B>,
    lr: f64,
) -> StepOutput<B> {
    let adversarial = method.adversarial(&FrozenModel::new(model), input);
    let output = method.loss(model, input, adversarial.map(Tensor::from_inner));
    let grads = output.loss.backward();
    *model = optimizer.step(lr, model.clone(), grads);
    method.after_step(input, &output);
    output
}

/// Per-class clean and robust (under `attack`, final iterate) correctness over every batch of `loader`.
pub fn evaluate<B: AutodiffBackend, M: Classifier<B>>(
    model: &FrozenModel<B, M>,
    loader: &BatchLoader,
    attack: &PgdConfig,
    device: &B::Device,
) -> (ClassTally, ClassTally) {
    let classes = loader.dataset().num_classes();
    let (mut clean, mut robust) = (ClassTally::new(classes), ClassTally::new(classes));
    for batch in loader.batches::<Inner<B>>(0, device) {
        clean.add_batch(
            batch.labels.clone(),
            model.correct(batch.images.clone(), batch.labels.clone()),
        );
        let adversarial = attack.perturb(model, batch.images, batch.labels.clone(), None);
        robust.add_batch(batch.labels.clone(), model.correct(adversarial, batch.labels));
    }
    (clean, robust)
}
