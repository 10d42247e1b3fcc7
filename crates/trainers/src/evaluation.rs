//! The one evaluation entry point: a model, a loader and attacks in; per-class tallies (and AutoAttack's stages)
//! out. `tailguard eval`, the demo, validation during training and embedding programs all run this; reports are the
//! program's business.

use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use tailguard_attacks::{
    AttackOutcome, AttackPreset, AutoAttackStages, FrozenModel, Inner, Norm, PgdConfig, host_flags,
};
use tailguard_longtail::{BatchLoader, ClassTally, DataError, host_labels};
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

    /// Whether only points the model classifies correctly can stay robust, so the attack need only see those
    /// (AutoAttack and its attacks, which start from the clean-correct points). [`evaluate`] then attacks batches
    /// of such points gathered across the loader's batches, as the reference AutoAttack does: with 25 % clean
    /// accuracy, attacking each loader batch's correct points alone ran APGD on a quarter of a batch, at twice
    /// the time per point.
    fn attacks_correct_points_only(&self) -> bool {
        false
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

    fn attacks_correct_points_only(&self) -> bool {
        self.preset.attacks_correct_points_only()
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
/// backend generator seeded with `seed`, so results do not depend on which attacks ran before. An attack that
/// starts from the clean-correct points ([`EvaluationAttack::attacks_correct_points_only`]: AutoAttack) sees
/// batches of the loader's batch size made of those points alone, gathered across the loader's batches.
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
        let mut run = if attack.attacks_correct_points_only() {
            attack_correct_points(*attack, &frozen, loader, &name, device, observer)?
        } else {
            attack_every_batch(*attack, &frozen, loader, &name, device, observer)?
        };
        run.seconds = start.elapsed().as_secs_f64();
        results.push(run);
    }
    Ok(results)
}

/// Runs `attack` on each batch of `loader` as it comes.
fn attack_every_batch<B: AutodiffBackend, M: Classifier<B>>(
    attack: &dyn EvaluationAttack<B, M>,
    frozen: &FrozenModel<B, M>,
    loader: &BatchLoader,
    name: &str,
    device: &B::Device,
    observer: &mut dyn EvaluationObserver,
) -> Result<AttackResult, DataError> {
    let total = loader.dataset().len();
    let mut tally = ClassTally::new(loader.dataset().num_classes());
    let mut stages: Option<AutoAttackStages> = None;
    let mut robust = Vec::with_capacity(total);
    for batch in loader.batches::<Inner<B>>(0, device) {
        let batch = batch?;
        let outcome = attack.attack(frozen, batch.images, batch.labels.clone());
        // One read of the flags and labels serves the tally and the per-image record.
        let flags = host_flags::<B>(outcome.robust);
        tally.add(&host_labels(batch.labels), &flags);
        robust.extend(flags);
        if let Some(s) = outcome.stages {
            stages.get_or_insert_default().add(&s);
        }
        observer.on_batch(name, robust.len(), total, &tally);
    }
    Ok(AttackResult {
        name: name.to_string(),
        tally,
        stages,
        robust,
        seconds: 0.0,
    })
}
/// Clean-correct images waiting for an attack, in the loader's order, with their positions in it.
struct Pending<B: AutodiffBackend> {
    images: Option<Tensor<Inner<B>, 4>>,
    labels: Option<Tensor<Inner<B>, 1, Int>>,
    positions: Vec<usize>,
}

impl<B: AutodiffBackend> Pending<B> {
    fn push(&mut self, images: Tensor<Inner<B>, 4>, labels: Tensor<Inner<B>, 1, Int>, positions: Vec<usize>) {
        self.images = Some(match self.images.take() {
            Some(held) => Tensor::cat(vec![held, images], 0),
            None => images,
        });
        self.labels = Some(match self.labels.take() {
            Some(held) => Tensor::cat(vec![held, labels], 0),
            None => labels,
        });
        self.positions.extend(positions);
    }

    /// The first `count` images (all when fewer), removed.
    #[allow(clippy::type_complexity)]
    fn take(&mut self, count: usize) -> Option<(Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Int>, Vec<usize>)> {
        let held = self.positions.len();
        let (images, labels) = (self.images.take()?, self.labels.take()?);
        if count >= held {
            return Some((images, labels, std::mem::take(&mut self.positions)));
        }
        self.images = Some(images.clone().slice(count..held));
        self.labels = Some(labels.clone().slice(count..held));
        let rest = self.positions.split_off(count);
        let positions = std::mem::replace(&mut self.positions, rest);
        Some((images.slice(0..count), labels.slice(0..count), positions))
    }
}

/// What [`attack_correct_points`] has learnt so far, per image in the loader's order.
struct Gathered {
    labels: Vec<usize>,
    robust: Vec<bool>,
    /// AutoAttack's stage that broke each image (0: misclassified clean).
    broken_at: Vec<Option<u8>>,
    stages: Option<AutoAttackStages>,
    tally: ClassTally,
    /// Images whose result is known.
    done: usize,
}

impl Gathered {
    /// Attacks the first `count` pending points and records what became of each.
    fn attack_pending<B: AutodiffBackend, M: Classifier<B>>(
        &mut self,
        attack: &dyn EvaluationAttack<B, M>,
        frozen: &FrozenModel<B, M>,
        pending: &mut Pending<B>,
        count: usize,
    ) {
        let Some((images, labels, positions)) = pending.take(count) else {
            return;
        };
        let outcome = attack.attack(frozen, images, labels);
        let flags = host_flags::<B>(outcome.robust);
        for (&position, &flag) in positions.iter().zip(&flags) {
            self.robust[position] = flag;
        }
        let attacked: Vec<usize> = positions.iter().map(|&p| self.labels[p]).collect();
        self.tally.add(&attacked, &flags);
        if let Some(s) = outcome.stages {
            for (&position, &stage) in positions.iter().zip(&s.broken_at) {
                self.broken_at[position] = stage;
            }
            self.stages.get_or_insert_default().add(&s);
        }
        self.done += positions.len();
    }
}

/// Runs `attack` on full batches of the points the model classifies correctly, gathered across the loader's
/// batches (misclassified points are not robust, and AutoAttack's stages record them as broken by the clean pass).
fn attack_correct_points<B: AutodiffBackend, M: Classifier<B>>(
    attack: &dyn EvaluationAttack<B, M>,
    frozen: &FrozenModel<B, M>,
    loader: &BatchLoader,
    name: &str,
    device: &B::Device,
    observer: &mut dyn EvaluationObserver,
) -> Result<AttackResult, DataError> {
    let total = loader.dataset().len();
    let batch_size = loader.config().batch_size.max(1);
    let mut gathered = Gathered {
        labels: Vec::with_capacity(total),
        robust: Vec::with_capacity(total),
        broken_at: Vec::with_capacity(total),
        stages: None,
        tally: ClassTally::new(loader.dataset().num_classes()),
        done: 0,
    };
    let mut pending = Pending::<B> {
        images: None,
        labels: None,
        positions: Vec::new(),
    };
    let mut clean_seconds = 0.0;
    for batch in loader.batches::<Inner<B>>(0, device) {
        let batch = batch?;
        let first = gathered.robust.len();
        let labels = host_labels(batch.labels.clone());
        let start = Instant::now();
        let correct = host_flags::<B>(frozen.correct(batch.images.clone(), batch.labels.clone()));
        clean_seconds += start.elapsed().as_secs_f64();
        let misclassified: Vec<usize> = labels
            .iter()
            .zip(&correct)
            .filter(|&(_, &c)| !c)
            .map(|(&l, _)| l)
            .collect();
        gathered.tally.add(&misclassified, &vec![false; misclassified.len()]);
        gathered.done += misclassified.len();
        gathered.robust.extend(std::iter::repeat_n(false, correct.len()));
        gathered
            .broken_at
            .extend(correct.iter().map(|&c| if c { None } else { Some(0) }));
        gathered.labels.extend(labels);
        let rows: Vec<usize> = (0..correct.len()).filter(|&r| correct[r]).collect();
        if !rows.is_empty() {
            let index = Tensor::<Inner<B>, 1, Int>::from_data(
                TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]),
                device,
            );
            let images = batch.images.select(0, index.clone());
            pending.push(
                images,
                batch.labels.select(0, index),
                rows.iter().map(|&r| first + r).collect(),
            );
        }
        while pending.positions.len() >= batch_size {
            gathered.attack_pending(attack, frozen, &mut pending, batch_size);
        }
        observer.on_batch(name, gathered.done, total, &gathered.tally);
    }
    if !pending.positions.is_empty() {
        gathered.attack_pending(attack, frozen, &mut pending, batch_size);
        observer.on_batch(name, gathered.done, total, &gathered.tally);
    }
    let Gathered {
        robust,
        broken_at,
        mut stages,
        tally,
        ..
    } = gathered;
    if let Some(s) = &mut stages {
        // The stages' per-image record in the loader's order, and the clean pass that chose the points.
        s.broken_at = broken_at;
        s.seconds.clean += clean_seconds;
    }
    Ok(AttackResult {
        name: name.to_string(),
        tally,
        stages,
        robust,
        seconds: 0.0,
    })
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::Arc;

    use burn::backend::Autodiff;
    use burn::tensor::Bool;
    use tailguard_flex::Flex;
    use tailguard_longtail::{BatchLoaderConfig, ImageDataset, ImageShape};
    use tailguard_models::{Architecture, Model, ModelConfig};

    use super::*;
    use crate::observer::Silent;

    type B = Autodiff<Flex>;

    /// Keeps the points of even class and breaks the others "in APGD-CE", recording the batch sizes it was given.
    struct EvenClassesSurvive {
        batches: RefCell<Vec<usize>>,
    }

    impl EvaluationAttack<B, Model<B>> for EvenClassesSurvive {
        fn name(&self) -> String {
            "even-classes-survive".into()
        }

        fn attacks_correct_points_only(&self) -> bool {
            true
        }

        fn attack(
            &self,
            _model: &FrozenModel<B, Model<B>>,
            images: Tensor<Inner<B>, 4>,
            labels: Tensor<Inner<B>, 1, Int>,
        ) -> AttackOutcome<B> {
            let even: Vec<bool> = host_labels(labels).iter().map(|l| l.is_multiple_of(2)).collect();
            self.batches.borrow_mut().push(even.len());
            let device = images.device();
            let stages = AutoAttackStages {
                clean: even.len(),
                apgd_ce: even.iter().filter(|&&e| e).count(),
                broken_at: even.iter().map(|&e| if e { None } else { Some(1) }).collect(),
                ..Default::default()
            };
            AttackOutcome {
                robust: Tensor::<Inner<B>, 1, Bool>::from_data(TensorData::new(even.clone(), [even.len()]), &device),
                adversarial: images,
                stages: Some(stages),
            }
        }
    }

    #[test]
    fn correct_points_are_attacked_in_full_batches_and_put_back_in_order() {
        let device = Default::default();
        <B as Backend>::seed(&device, 3);
        let (n, classes) = (45, 4);
        let pixels: Vec<u8> = (0..n * 3072).map(|i| ((i * 7919) % 251) as u8).collect();
        let labels: Vec<usize> = (0..n).map(|i| (i * 7) % classes).collect();
        let names = (0..classes).map(|c| format!("c{c}")).collect();
        let data = ImageDataset::new(pixels, labels.clone(), names, ImageShape::CIFAR).unwrap();
        let loader = BatchLoader::new(Arc::new(data), BatchLoaderConfig::evaluation(5)).unwrap();
        let model = ModelConfig::new(Architecture::Linear, classes)
            .init::<B>(&device)
            .unwrap();
        let attack = EvenClassesSurvive {
            batches: RefCell::new(Vec::new()),
        };
        let clean = PresetAttack::linf(AttackPreset::Clean, 0.0);
        let results = evaluate(&model, &loader, &[&clean, &attack], 0, &device, &mut Silent).unwrap();
        let correct = &results[0].robust;
        let correct_count = correct.iter().filter(|&&c| c).count();
        assert!(
            correct_count > 10 && correct_count < n,
            "a mix of correct and wrong points: {correct_count}"
        );

        // Only correct points were attacked, in batches of the loader's size but the last.
        let batches = attack.batches.borrow().clone();
        assert_eq!(batches.iter().sum::<usize>(), correct_count);
        assert!(batches[..batches.len() - 1].iter().all(|&b| b == 5), "{batches:?}");
        assert!(*batches.last().unwrap() <= 5);

        // Every flag back at its image.
        let result = &results[1];
        let expected: Vec<bool> = (0..n).map(|i| correct[i] && labels[i].is_multiple_of(2)).collect();
        assert_eq!(result.robust, expected);
        let stages = result.stages.as_ref().unwrap();
        let broken: Vec<Option<u8>> = (0..n)
            .map(|i| match (correct[i], labels[i].is_multiple_of(2)) {
                (false, _) => Some(0),
                (true, false) => Some(1),
                (true, true) => None,
            })
            .collect();
        assert_eq!(stages.broken_at, broken);
        assert_eq!(
            (stages.clean, stages.apgd_ce),
            (correct_count, expected.iter().filter(|&&r| r).count())
        );
        let mut tally = ClassTally::new(classes);
        tally.add(&labels, &expected);
        assert_eq!(result.tally.correct, tally.correct);
        assert_eq!(result.tally.support, tally.support);
    }
}
