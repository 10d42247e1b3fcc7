//! The trainer: a model, a method, a budget policy and the loop's settings, run epoch by epoch.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use tailguard_attacks::{AttackPreset, Inner, PgdConfig};
use tailguard_longtail::augment::AugmentPolicy;
use tailguard_longtail::{Augmentation, BatchLoader, BatchLoaderConfig, ClassGroups, Sampling, SeedStream};
use tailguard_models::{Classifier, Mode};

use crate::averaging::WeightAverage;
use crate::budget::BudgetPolicy;
use crate::data::TrainData;
use crate::epoch::{EpochRecord, EpochTally};
use crate::error::{MethodStateError, TrainError};
use crate::evaluation::{PresetAttack, evaluate};
use crate::method::{Method, StepInput};
use crate::observer::{Silent, TrainObserver};
use crate::optimizer::GroupedSgd;
use crate::parallel::{Exchange, Peer};
use crate::resume_state::{ResumeState, SameRun};
use crate::settings::{TrainerConfig, ValidationConfig};
use crate::step::train_step;

/// How often the loss is read back during an epoch (divergence check and progress).
const LOSS_READ_EVERY: usize = 10;

/// Trains a model with a method, epoch by epoch. Built from typed parts, so a model or a method defined outside
/// tailguard plugs in the same way as the built-in ones ([`crate::TrainConfig`] builds these parts from a file).
pub struct Trainer<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>> {
    model: M,
    optimizer: GroupedSgd<B, M>,
    method: Box<dyn Method<B, M>>,
    budget: BudgetPolicy,
    config: TrainerConfig,
    loader: BatchLoader,
    validation: Option<(BatchLoader, ValidationConfig)>,
    classes: Vec<String>,
    counts: Vec<usize>,
    device: B::Device,
    /// This device's place in a data-parallel run (`None`: training alone).
    exchange: Option<Exchange<B>>,
    /// The average of the weights, when the settings keep one (device 0 alone keeps it in a data-parallel run).
    average: Option<WeightAverage<B, M>>,
    /// 0-based index of the next epoch to run.
    pub next_epoch: usize,
}

impl<B: AutodiffBackend, M: Classifier<B> + AutodiffModule<B>> Trainer<B, M> {
    /// A trainer at epoch 0: `model` trained by `method` in the per-class budgets of `budget`, on `data`.
    pub fn new(
        model: M,
        method: Box<dyn Method<B, M>>,
        budget: BudgetPolicy,
        config: TrainerConfig,
        data: &TrainData,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        // The optimizer, the attacks' frozen copies and checkpoints all work on this model's values.
        tailguard_models::initialize_parameters(&model);
        let classes = data.classes.len();
        if model.num_classes() != classes {
            return Err(TrainError::OutputsDifferFromClasses {
                outputs: model.num_classes(),
                classes,
            });
        }
        if budget.num_classes() != classes {
            return Err(TrainError::BudgetDiffersFromClasses {
                policy: budget.num_classes(),
                classes,
            });
        }
        if method.needs_features() {
            let shape = data.train.shape();
            let probe = Tensor::<B, 4>::zeros([1, shape.channels, shape.height, shape.width], device);
            if model.features_and_logits(probe, Mode::Inference).is_none() {
                return Err(TrainError::NeedsFeatures { method: method.name() });
            }
        }
        let loader_config = BatchLoaderConfig {
            batch_size: config.batch_size,
            sampling: if config.class_balanced {
                Sampling::ClassBalanced
            } else {
                Sampling::Shuffled
            },
            augmentation: augmentation(&config),
            drop_last: false,
            seed: config.seed,
            prefetch: 2,
        };
        let validation = match (&data.validation, &config.validation) {
            (Some(images), Some(settings)) => Some((
                BatchLoader::new(images.clone(), BatchLoaderConfig::evaluation(config.batch_size))?,
                settings.clone(),
            )),
            _ => None,
        };
        let average = config.weight_average.as_ref().map(|c| c.init(&model));
        Ok(Self {
            average,
            optimizer: GroupedSgd::new(&config.sgd, &model),
            model,
            method,
            budget,
            loader: BatchLoader::new(data.train.clone(), loader_config)?,
            validation,
            classes: data.classes.clone(),
            counts: data.counts.clone(),
            config,
            device: device.clone(),
            exchange: None,
            next_epoch: 0,
        })
    }

    /// The model in its latest state.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> M {
        self.model
    }

    /// Replaces the model (same structure, e.g. loaded from a checkpoint). The optimizer starts over for it: its
    /// parameter groups follow the parameters' identities, which a loaded record brings with it.
    pub fn set_model(&mut self, model: M) {
        self.optimizer = GroupedSgd::new(&self.config.sgd, &model);
        if let Some(average) = &mut self.average {
            // A new model starts a new average; a resumed run then restores its own (`restore_average`).
            *average = average.config().init(&model);
        }
        self.model = model;
    }

    /// The weight average, when the settings keep one.
    pub fn average(&self) -> Option<&WeightAverage<B, M>> {
        self.average.as_ref()
    }

    /// Puts back a saved average: its weights (`average`, a model of this trainer's structure) after `updates`
    /// updates. Without an average in the settings this does nothing.
    pub fn restore_average(&mut self, average: M, updates: u64) {
        if let Some(current) = &mut self.average {
            current.restore(average, updates);
        }
    }

    /// SGD with its momentum buffers.
    pub fn optimizer(&self) -> &GroupedSgd<B, M> {
        &self.optimizer
    }

    /// Restores the momentum buffers written by [`GroupedSgd::to_bytes`] for this model.
    pub fn load_optimizer_state(&mut self, bytes: &[u8]) -> Result<(), crate::error::OptimizerStateError> {
        let optimizer = GroupedSgd::new(&self.config.sgd, &self.model);
        self.optimizer = optimizer.load_bytes(bytes, &self.device)?;
        Ok(())
    }

    /// The loop's settings.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Total epochs of the run.
    pub fn epochs(&self) -> usize {
        self.config.epochs
    }

    /// Whether every epoch has run.
    pub fn finished(&self) -> bool {
        self.next_epoch >= self.config.epochs
    }

    /// The method's name.
    pub fn method_name(&self) -> &'static str {
        self.method.name()
    }

    /// The method's stage in `epoch`.
    pub fn stage(&self, epoch: usize) -> &'static str {
        self.method.stage(epoch)
    }

    /// Class names of the training data.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Images per class of the training data.
    pub fn class_counts(&self) -> &[usize] {
        &self.counts
    }

    /// The budget policy.
    pub fn budget(&self) -> &BudgetPolicy {
        &self.budget
    }

    /// The device the trainer runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Batches per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.loader.num_batches()
    }

    /// Runs the next epoch (on this device's shards, in a data-parallel run).
    pub fn run_epoch(&mut self, observer: &mut dyn TrainObserver) -> Result<EpochRecord, TrainError> {
        let epoch = self.next_epoch;
        let start = Instant::now();
        // Attack starts draw from the backend's generator: seeding it per epoch makes a resumed run identical.
        <B as Backend>::seed(
            &self.device,
            SeedStream::derive(self.config.seed, &[0x6174_7461_636b, epoch as u64]).next_u64(),
        );
        let lr = self.config.lr_at(epoch);
        let (rank, world) = self
            .exchange
            .as_ref()
            .map_or((0, 1), |e| (e.peer().rank(), e.peer().world()));
        if self.config.batch_size < world {
            return Err(TrainError::BatchSmallerThanDevices {
                batch_size: self.config.batch_size,
                devices: world,
            });
        }
        let steps = self.loader.num_shard_batches(world);
        let mut tally = EpochTally::<B>::new(&self.device);
        for (step, host) in self.loader.host_batch_shards(epoch, rank, world).enumerate() {
            let host = host?;
            let n = host.len();
            let labels: Vec<usize> = host.labels.iter().map(|&l| l as usize).collect();
            let eps = Tensor::<Inner<B>, 1>::from_data(
                TensorData::new(self.budget.for_labels(epoch, &labels), [n]),
                &self.device,
            );
            let batch = host.into_device::<B>(&self.device);
            let input = StepInput {
                images: batch.images,
                labels: batch.labels,
                eps,
                epoch,
                start: None,
                exchange: self
                    .exchange
                    .as_ref()
                    .map(|e| e.for_batch(n, self.loader.batch_len(step))),
                label_smoothing: self.config.label_smoothing,
            };
            let output = train_step(
                self.method.as_mut(),
                &mut self.model,
                &mut self.optimizer,
                &input,
                lr,
                self.config.step_options(),
            )?;
            if let Some(average) = &mut self.average {
                average.update(&self.model);
            }
            // Metrics stay on the device; the host reads them every few steps and at the end of the epoch.
            tally.add(&output, &input.labels);
            let figures = match ((step + 1) % LOSS_READ_EVERY == 0, &self.exchange) {
                (false, _) => None,
                (true, None) => Some(tally.figures()),
                // Every device decides on divergence from the same figure: the devices' mean loss.
                (true, Some(exchange)) => Some(exchange.figures(&tally)?),
            };
            if let Some(f) = figures
                && !f.loss.is_finite()
            {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    loss: f.loss,
                    checkpoint: None,
                });
            }
            observer.on_step(epoch, step + 1, steps, figures);
        }
        if let Some(exchange) = &self.exchange {
            exchange.combine(&mut tally)?;
            self.method.share_statistics(exchange)?;
            self.model = exchange.share_running_statistics(self.model.clone())?;
        }
        self.method.end_epoch();
        let (loss, clean_accuracy, adversarial_accuracy) = tally.finish();
        if !loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch: epoch + 1,
                loss,
                checkpoint: None,
            });
        }
        let seconds_training = start.elapsed().as_secs_f64();
        // Device 0 alone validates in a data-parallel run (it writes the run).
        let validate = rank == 0
            && self
                .validation
                .as_ref()
                .is_some_and(|(_, settings)| (epoch + 1).is_multiple_of(settings.every) || epoch + 1 == self.epochs());
        let (validation_clean, validation_robust, validation_robust_per_class) = if validate {
            self.validation_figures()?
        } else {
            (None, None, None)
        };
        self.next_epoch += 1;
        Ok(EpochRecord {
            epoch: epoch + 1,
            stage: self.method.stage(epoch).to_string(),
            lr,
            loss,
            clean_accuracy,
            adversarial_accuracy,
            eps_per_class: (!self.budget.is_uniform())
                .then(|| self.budget.budgets(epoch).iter().map(|e| e * 255.0).collect()),
            images_per_second: tally.seen() as f64 / seconds_training.max(1e-9),
            seconds: start.elapsed().as_secs_f64(),
            validation_clean,
            validation_robust,
            validation_robust_per_class,
        })
    }

    /// Balanced clean and robust accuracy on the validation split (PGD, step 2/255, uniform start), or `None`s
    /// without one.
    pub fn validate(&self) -> Result<(Option<f64>, Option<f64>), TrainError> {
        let (clean, robust, _) = self.validation_figures()?;
        Ok((clean, robust))
    }

    /// [`Trainer::validate`]'s figures and the robust accuracy of each class (`None` for a class the split lacks).
    #[allow(clippy::type_complexity)]
    fn validation_figures(&self) -> Result<(Option<f64>, Option<f64>, Option<Vec<Option<f64>>>), TrainError> {
        let Some((loader, settings)) = &self.validation else {
            return Ok((None, None, None));
        };
        let clean = PresetAttack::linf(AttackPreset::Clean, 0.0);
        let robust = PgdConfig::new()
            .with_eps(settings.eps)
            .with_steps(settings.attack_steps);
        let seed = SeedStream::derive(self.config.seed, &[0x76_616c_6964, self.next_epoch as u64]).next_u64();
        // With a weight average, the average is what a run keeps as its result, so it is what validation measures.
        let model = self.average.as_ref().map_or(&self.model, WeightAverage::model);
        let results = evaluate(model, loader, &[&clean, &robust], seed, &self.device, &mut Silent)?;
        let groups = ClassGroups::default();
        let (clean, robust) = (results[0].tally.summary(&groups), results[1].tally.summary(&groups));
        Ok((
            Some(clean.balanced_accuracy),
            Some(robust.balanced_accuracy),
            Some(robust.per_class),
        ))
    }

    /// The method's state (saved with checkpoints).
    pub fn method_state(&self) -> serde_json::Value {
        self.method.state()
    }

    /// What continues this trainer besides weights and optimizer, with the best validation robustness `best`.
    pub fn resume_state(&self, best: Option<f64>) -> ResumeState {
        ResumeState {
            next_epoch: self.next_epoch,
            best_validation_robust: best,
            method: self.method.state(),
            method_name: Some(self.method.name().to_string()),
            trainer: Some(self.config.clone()),
            average_updates: self.average.as_ref().map(WeightAverage::updates),
        }
    }

    /// Puts this trainer at `state`'s epoch with its method state.
    pub fn restore(&mut self, state: &ResumeState) -> Result<(), MethodStateError> {
        self.next_epoch = state.next_epoch;
        self.method.load_state(&state.method)
    }

    /// Restores the method's state.
    pub fn load_method_state(&mut self, state: &serde_json::Value) -> Result<(), MethodStateError> {
        self.method.load_state(state)
    }

    /// Makes this trainer one device of a data-parallel run (see [`crate::parallel`]): from the next epoch on it
    /// trains on its shard of every global batch and exchanges gradients and statistics with its peers.
    pub fn attach_peer(&mut self, peer: Peer<B>) {
        // Every device holds the same weights after each step; device 0, which validates and writes the run, keeps
        // the one average.
        if peer.rank() != 0 {
            self.average = None;
        }
        self.exchange = Some(Exchange::new(peer));
    }

    /// This device's place in a data-parallel run, if any.
    pub fn peer(&self) -> Option<&Peer<B>> {
        self.exchange.as_ref().map(Exchange::peer)
    }

    /// Everything a resumed run restores (weights with their parameter ids, running statistics, momentum, method
    /// state, next epoch) as bytes: what device 0 sends every other device when a data-parallel run starts.
    pub fn state_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let model = Recorder::<B>::record(&recorder, self.model.clone().into_record(), ()).map_err(|e| {
            TrainError::StateExchange {
                reason: format!("cannot encode the model: {e}"),
            }
        })?;
        let optimizer = self.optimizer.to_bytes().map_err(|e| TrainError::StateExchange {
            reason: format!("cannot encode the optimizer: {}", crate::error::chain(&e)),
        })?;
        let progress = serde_json::to_vec(&self.resume_state(None)).map_err(|e| TrainError::StateExchange {
            reason: format!("cannot encode the progress: {e}"),
        })?;
        let mut bytes = Vec::new();
        for part in [&model, &optimizer, &progress] {
            bytes.extend((part.len() as u64).to_le_bytes());
            bytes.extend(part.iter());
        }
        Ok(bytes)
    }

    /// Restores what [`Trainer::state_bytes`] wrote (on a trainer built like the writer's).
    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<(), TrainError> {
        let damaged = |what: &str| TrainError::StateExchange {
            reason: format!("the state received from device 0 is damaged ({what})"),
        };
        let mut parts = Vec::new();
        let mut rest = bytes;
        for _ in 0..3 {
            let len = rest
                .get(..8)
                .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
                .filter(|&len| len <= rest.len() - 8)
                .ok_or_else(|| damaged("truncated"))?;
            parts.push(&rest[8..8 + len]);
            rest = &rest[8 + len..];
        }
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let record =
            Recorder::<B>::load::<<M as burn::module::Module<B>>::Record>(&recorder, parts[0].to_vec(), &self.device)
                .map_err(|e| damaged(&e.to_string()))?;
        let model = self.model.clone().load_record(record);
        self.set_model(model);
        self.load_optimizer_state(parts[1])
            .map_err(|e| damaged(&crate::error::chain(&e)))?;
        let progress: ResumeState = serde_json::from_slice(parts[2]).map_err(|e| damaged(&e.to_string()))?;
        // Devices trained with other settings would fall out of step (or deadlock on a different number of steps).
        let differences = progress.differences(self.method.name(), &self.config, SameRun::Exactly);
        if !differences.is_empty() {
            return Err(TrainError::DevicesDiffer {
                differences: differences.join("; "),
            });
        }
        self.restore(&progress).map_err(|e| damaged(&e.to_string()))?;
        Ok(())
    }
}

/// The loader's augmentation: crop and flip when `augment` is on, then the policy, if any.
fn augmentation(config: &TrainerConfig) -> Option<Augmentation> {
    let base = if config.augment {
        Augmentation::default()
    } else {
        Augmentation::none()
    };
    (config.augment || config.augment_policy != AugmentPolicy::None).then_some(Augmentation {
        policy: config.augment_policy,
        ..base
    })
}
