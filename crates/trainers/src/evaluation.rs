//! The one evaluation entry point: a model, a loader and attacks in; per-class tallies (and AutoAttack's stages)
//! out. `tailguard eval`, the demo, validation during training and embedding programs all run this; reports are the
//! program's business.

use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use tailguard_attacks::{
    AttackOutcome, AttackPreset, AutoAttackStages, FrozenModel, Inner, Norm, PgdConfig, host_flags,
};
use tailguard_longtail::{BatchLoader, ClassTally, DataError};
use tailguard_models::Classifier;

use crate::observer::EvaluationObserver;

/// An attack an evaluation runs on every batch.
pub trait EvaluationAttack<B: AutodiffBackend, M: Classifier<B>> {
    /// Name in reports and progress.
    fn name(&self) -> String;

    /// The fewest classes the attack is defined for (checked before it runs).
    fn min_classes(&self) -> usize {
        1
    }

    /// Attacks a batch (N, C, H, W) with true classes (N); reports which points stay correctly classified.
    fn attack(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
    ) -> AttackOutcome<B>;
}

/// A named attack preset at budget `eps` in the ball of `norm` (see [`AttackPreset::run`] for how each counts
/// robustness).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetAttack {
    /// The preset.
    pub preset: AttackPreset,
    /// Budget, in `norm`.
    pub eps: f64,
    /// The threat model's norm (the preset must support it: [`AttackPreset::supports`]).
    pub norm: Norm,
}

impl PresetAttack {
    /// `preset` at L-inf budget `eps`.
    pub fn linf(preset: AttackPreset, eps: f64) -> Self {
        Self {
            preset,
            eps,
            norm: Norm::Linf,
        }
    }
}

impl<B: AutodiffBackend, M: Classifier<B>> EvaluationAttack<B, M> for PresetAttack {
    fn name(&self) -> String {
        self.preset.name().to_string()
    }

    fn min_classes(&self) -> usize {
        self.preset.min_classes()
    }

    fn attack(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
    ) -> AttackOutcome<B> {
        self.preset.run_in(model, images, labels, self.eps, self.norm)
    }
}

/// Any PGD configuration, counting the final iterate.
impl<B: AutodiffBackend, M: Classifier<B>> EvaluationAttack<B, M> for PgdConfig {
    fn name(&self) -> String {
        format!("pgd{}", self.steps)
    }

    fn min_classes(&self) -> usize {
        self.loss.min_classes(false)
    }

    fn attack(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
    ) -> AttackOutcome<B> {
        self.outcome(model, images, labels)
    }
}

/// What one attack did over the whole loader.
#[derive(Debug, Clone)]
pub struct AttackResult {
    /// The attack's name.
    pub name: String,
    /// Robust (for "clean": correct) points per class.
    pub tally: ClassTally,
    /// AutoAttack's robust points after each stage, summed over batches, and the stage that broke each image.
    pub stages: Option<AutoAttackStages>,
    /// Whether each image, in the loader's order, stayed correctly classified (robust; for "clean": correct).
    pub robust: Vec<bool>,
    /// Wall time of the attack.
    pub seconds: f64,
}

/// Runs every attack over every batch of `loader` against `model` (inference mode). Each attack starts from the
/// backend generator seeded with `seed`, so results do not depend on which attacks ran before.
pub fn evaluate<B: AutodiffBackend, M: Classifier<B>>(
    model: &M,
    loader: &BatchLoader,
    attacks: &[&dyn EvaluationAttack<B, M>],
    seed: u64,
    device: &B::Device,
    observer: &mut dyn EvaluationObserver,
) -> Result<Vec<AttackResult>, DataError> {
    let frozen = FrozenModel::new(model);
    let classes = loader.dataset().num_classes();
    let total = loader.dataset().len();
    // Refused before any attack runs: an attack outside its domain would fail inside the backend.
    if let Some(attack) = attacks.iter().find(|a| a.min_classes() > classes) {
        return Err(DataError::Invalid(format!(
            "{} needs a classifier of at least {} classes; this data has {classes}",
            attack.name(),
            attack.min_classes()
        )));
    }
    let mut results = Vec::with_capacity(attacks.len());
    for attack in attacks {
        let name = attack.name();
        <Inner<B> as Backend>::seed(device, seed);
        let start = Instant::now();
        let mut tally = ClassTally::new(classes);
        let mut stages: Option<AutoAttackStages> = None;
        let mut done = 0;
        let mut robust = Vec::with_capacity(total);
        for batch in loader.batches::<Inner<B>>(0, device) {
            let batch = batch?;
            done += batch.labels.dims()[0];
            let outcome = attack.attack(&frozen, batch.images, batch.labels.clone());
            // One read of the flags and labels serves the tally and the per-image record.
            let flags = host_flags::<B>(outcome.robust);
            let labels: Vec<usize> = batch
                .labels
                .into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .unwrap_or_default()
                .into_iter()
                .map(|l| l as usize)
                .collect();
            tally.add(&labels, &flags);
            robust.extend(flags);
            if let Some(s) = outcome.stages {
                stages.get_or_insert_default().add(&s);
            }
            observer.on_batch(&name, done, total, &tally);
        }
        results.push(AttackResult {
            name,
            tally,
            stages,
            robust,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(results)
}

/// [`evaluate`] with the images of `loader` split across `devices`: contiguous, near-equal shares in order, one
/// thread per device, each with its own copy of `model`; the results are combined as if one device had run them
/// (tallies summed, AutoAttack's stage counts summed and its per-image stages and every per-image flag concatenated in
/// the images' order, the seconds of the slowest device). Inference mode treats every image alone, so a deterministic
/// attack (clean, FGSM) gives exactly one device's counts. Attacks with random starts draw from the backend's
/// generator, which burn 0.21 keeps per process: each device seeds it with `seed` before its share, but the devices'
/// draws interleave, so their starts (not their validity) differ from one device's run to run. With one device this
/// is [`evaluate`] without progress.
pub fn evaluate_on_devices<B, M, A>(
    model: &M,
    loader: &BatchLoader,
    attacks: &[A],
    seed: u64,
    devices: &[B::Device],
) -> Result<Vec<AttackResult>, DataError>
where
    B: AutodiffBackend,
    M: Classifier<B>,
    A: EvaluationAttack<B, M> + Sync,
{
    let dataset = loader.dataset();
    let total = dataset.len();
    let batch_size = loader.config().batch_size;
    let refs: Vec<&dyn EvaluationAttack<B, M>> = attacks.iter().map(|a| a as _).collect();
    if devices.len() <= 1 {
        let device = devices.first().cloned().unwrap_or_default();
        return evaluate(
            &model.clone().fork(&device),
            loader,
            &refs,
            seed,
            &device,
            &mut crate::observer::Silent,
        );
    }
    let shares: Vec<Vec<usize>> = (0..devices.len())
        .map(|k| (k * total / devices.len()..(k + 1) * total / devices.len()).collect())
        .collect();
    let per_device: Vec<Result<Vec<AttackResult>, DataError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .zip(&shares)
            .map(|(device, share)| {
                let model = model.clone();
                scope.spawn(move || {
                    let part = std::sync::Arc::new(dataset.subset(share)?);
                    let loader = BatchLoader::new(part, tailguard_longtail::BatchLoaderConfig::evaluation(batch_size))?;
                    let model = model.fork(device);
                    let refs: Vec<&dyn EvaluationAttack<B, M>> = attacks.iter().map(|a| a as _).collect();
                    evaluate(&model, &loader, &refs, seed, device, &mut crate::observer::Silent)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(DataError::Invalid("an evaluation device failed".into())))
            })
            .collect()
    });
    let mut combined: Option<Vec<AttackResult>> = None;
    for results in per_device {
        let results = results?;
        match &mut combined {
            None => combined = Some(results),
            Some(sum) => {
                for (into, part) in sum.iter_mut().zip(results) {
                    for (a, b) in into.tally.support.iter_mut().zip(&part.tally.support) {
                        *a += b;
                    }
                    for (a, b) in into.tally.correct.iter_mut().zip(&part.tally.correct) {
                        *a += b;
                    }
                    if let Some(stages) = &part.stages {
                        into.stages.get_or_insert_default().add(stages);
                    }
                    into.robust.extend(part.robust);
                    into.seconds = into.seconds.max(part.seconds);
                }
            }
        }
    }
    Ok(combined.unwrap_or_default())
}
