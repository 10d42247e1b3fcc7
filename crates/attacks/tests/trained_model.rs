//! On a model trained to high clean accuracy: PGD-20 hurts, is at least as strong as FGSM, AA-lite is at least as
//! strong as PGD-20, and standard AutoAttack at least as strong as AA-lite.

use burn::backend::Autodiff;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use tailguard_attacks::{AttackPreset, FrozenModel, loss::cross_entropy_per_sample};
use tailguard_flex::Flex;
use tailguard_models::{Architecture, Classifier, Mode, Model, ModelConfig};

type B = Autodiff<Flex>;

/// Four classes, each a fixed random pattern on 3x8x8 plus noise; deterministic (xorshift).
fn synthetic(n: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut pattern_state = 0x1234_5678u64;
    let mut pattern = move || {
        pattern_state ^= pattern_state << 13;
        pattern_state ^= pattern_state >> 7;
        pattern_state ^= pattern_state << 17;
        (pattern_state >> 11) as f32 / (1u64 << 53) as f32
    };
    let prototypes: Vec<Vec<f32>> = (0..4).map(|_| (0..192).map(|_| pattern() - 0.5).collect()).collect();
    let mut pixels = Vec::with_capacity(n * 192);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 4;
        labels.push(class as i64);
        for &p in &prototypes[class] {
            pixels.push((0.5 + 0.4 * p + 0.3 * (next() - 0.5)).clamp(0.0, 1.0));
        }
    }
    (pixels, labels)
}

fn batch(n: usize, seed: u64) -> (Tensor<Flex, 4>, Tensor<Flex, 1, Int>) {
    let (pixels, labels) = synthetic(n, seed);
    let device = Default::default();
    (
        Tensor::from_data(TensorData::new(pixels, [n, 3, 8, 8]), &device),
        Tensor::from_data(TensorData::new(labels, [n]), &device),
    )
}

use crate::serial;

fn trained_model() -> Model<B> {
    let device = Default::default();
    let mut model = ModelConfig::new(Architecture::SmallCnn { width: 8 }, 4)
        .init::<B>(&device)
        .unwrap();
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }))
        .init();
    for step in 0..60 {
        let (x, y) = batch(32, step + 1);
        let logits = model.forward(Tensor::from_inner(x), Mode::Train);
        let loss = cross_entropy_per_sample(logits, Tensor::from_inner(y)).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.05, model, grads);
    }
    model
}

fn accuracy(flags: Tensor<Flex, 1, burn::tensor::Bool>) -> f64 {
    let values: Vec<bool> = flags.into_data().convert::<bool>().to_vec().unwrap();
    values.iter().filter(|&&f| f).count() as f64 / values.len() as f64
}

#[test]
fn aa_lite_is_at_least_as_strong_as_pgd20() {
    let _serial = serial();
    // Seeded: the initial weights and the attacks' random starts are the same on every run.
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), 3);
    let model = trained_model();
    let frozen = FrozenModel::new(&model);
    let (x, y) = batch(96, 10_000);
    let eps = 12.0 / 255.0;
    let clean = accuracy(AttackPreset::Clean.run(&frozen, x.clone(), y.clone(), eps).robust);
    let fgsm = accuracy(AttackPreset::Fgsm.run(&frozen, x.clone(), y.clone(), eps).robust);
    let pgd = accuracy(AttackPreset::Pgd20.run(&frozen, x.clone(), y.clone(), eps).robust);
    let full = AttackPreset::Aa.run(&frozen, x.clone(), y.clone(), eps);
    let aa = AttackPreset::AaLite.run(&frozen, x, y, eps);
    let stages = aa.stages.unwrap();
    let aa = accuracy(aa.robust);
    // Standard AutoAttack runs AA-lite's two stages first (same seed, same result), then FAB-T and Square on what
    // is left: never weaker, and each stage keeps or lowers the count.
    let full_stages = full.stages.unwrap();
    let full = accuracy(full.robust);
    assert_eq!(
        (full_stages.clean, full_stages.apgd_ce, full_stages.apgd_t),
        (stages.clean, stages.apgd_ce, stages.apgd_t)
    );
    let (fab_t, square) = (full_stages.fab_t.unwrap(), full_stages.square.unwrap());
    assert!(square <= fab_t && fab_t <= stages.apgd_t, "{full_stages:?}");
    assert_eq!(square as f64 / 96.0, full);
    assert!(full_stages.seconds.square.unwrap() > 0.0);
    eprintln!("clean {clean}, FGSM {fgsm}, PGD-20 {pgd}, AA-lite {aa} ({stages:?})");
    assert!(clean >= 0.9, "training failed: clean accuracy {clean}");
    assert!(pgd < clean - 0.2, "PGD-20 should hurt: clean {clean}, PGD-20 {pgd}");
    assert!(pgd <= fgsm, "PGD-20 {pgd} weaker than FGSM {fgsm}");
    assert!(aa <= pgd, "AA-lite {aa} weaker than PGD-20 {pgd}");
    assert!(
        stages.apgd_t <= stages.apgd_ce && stages.apgd_ce <= stages.clean,
        "{stages:?}"
    );
    assert_eq!(stages.apgd_t as f64 / 96.0, aa);
}

/// The trained model with every logit multiplied by `scale` (a loss that rescales logits, taken to the extreme).
#[derive(burn::module::Module, Debug)]
struct Scaled<B: burn::tensor::backend::Backend> {
    inner: Model<B>,
    scale: f64,
}

impl<B: burn::tensor::backend::Backend> Classifier<B> for Scaled<B> {
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        self.inner.forward(images, mode).mul_scalar(self.scale)
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
}

/// The trained model answering probabilities (softmax of its logits).
#[derive(burn::module::Module, Debug)]
struct Softmaxed<B: burn::tensor::backend::Backend> {
    inner: Model<B>,
}

impl<B: burn::tensor::backend::Backend> Classifier<B> for Softmaxed<B> {
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        burn::tensor::activation::softmax(self.inner.forward(images, mode), 1)
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
}

/// The trained model seeing its images through Gaussian noise, at test time too (a randomised defence).
#[derive(burn::module::Module, Debug)]
struct Noisy<B: burn::tensor::backend::Backend> {
    inner: Model<B>,
    std: f64,
}

impl<B: burn::tensor::backend::Backend> Classifier<B> for Noisy<B> {
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let noise = images.random_like(burn::tensor::Distribution::Normal(0.0, self.std));
        self.inner.forward(images + noise, mode)
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
}

/// The trained model on its input quantised to `levels` levels: the gradient through the quantisation is zero.
#[derive(burn::module::Module, Debug)]
struct Quantized<B: burn::tensor::backend::Backend> {
    inner: Model<B>,
    levels: f64,
}

impl<B: burn::tensor::backend::Backend> Classifier<B> for Quantized<B> {
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let levels = images
            .clone()
            .mul_scalar(self.levels)
            .round()
            .div_scalar(self.levels)
            .detach();
        self.inner.forward(images.mul_scalar(0.0) + levels, mode)
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
}

/// The trained model with a hidden failure no gradient leads to: when the first pixel sits in a narrow band of its
/// range (a tenth of every `period`), the least likely class gets a large bonus. A random start lands in the band
/// about one time in ten; projected gradient steps go to the ball's corners, which keep the clean pixel's place in
/// the period. So each restart breaks about a tenth more of the points.
#[derive(burn::module::Module, Debug)]
struct Banded<B: burn::tensor::backend::Backend> {
    inner: Model<B>,
    period: f64,
}

impl<B: burn::tensor::backend::Backend> Classifier<B> for Banded<B> {
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let logits = self.inner.forward(images.clone(), mode);
        let [n, classes] = logits.dims();
        let pixel = images.slice([0..n, 0..1, 0..1, 0..1]).reshape([n, 1]).detach();
        let phase = pixel.clone().div_scalar(self.period) - pixel.div_scalar(self.period).floor();
        let in_band = phase
            .clone()
            .greater_elem(0.45)
            .bool_and(phase.lower_elem(0.55))
            .float();
        let weakest = logits.clone().detach().argmin(1);
        let bonus = Tensor::<B, 2>::zeros([n, classes], &logits.device()).scatter(
            1,
            weakest,
            in_band.mul_scalar(100.0),
            burn::tensor::IndexingUpdateOp::Add,
        );
        logits + bonus
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
}

#[test]
fn masking_checks_trip_on_models_built_to_trip_them_and_not_on_a_plain_one() {
    use tailguard_attacks::{AttackPreset, Norm, check_model, check_restarts, check_stages};
    let _serial = serial();
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), 3);
    let model = trained_model();
    let (x, y) = batch(64, 20_000);
    // A budget at which PGD-20 breaks part of the batch (this synthetic task resists 8/255 entirely).
    let eps = 16.0 / 255.0;
    let checks = |warnings: Vec<tailguard_attacks::MaskingWarning>| -> Vec<&'static str> {
        for w in &warnings {
            eprintln!("{}: {} ({})", w.check, w.finding, w.advice);
        }
        warnings.iter().map(|w| w.check).collect()
    };
    let plain = checks(check_model(&FrozenModel::new(&model), x.clone(), y.clone(), eps));
    assert!(plain.is_empty(), "a plain model trips {plain:?}");
    // Restarts, at 8/255 where APGD-CE leaves the plain model's points robust: the plain model gains nothing from
    // them; the banded one's hidden failure is found by random starts, more of them with five restarts than one.
    let calm = 8.0 / 255.0;
    let plain = check_restarts(&FrozenModel::new(&model), x.clone(), y.clone(), calm, Norm::Linf);
    assert!(plain.is_none(), "{plain:?}");
    let banded = Banded {
        inner: model.clone(),
        period: calm,
    };
    let tripped = check_restarts(&FrozenModel::new(&banded), x.clone(), y.clone(), calm, Norm::Linf);
    eprintln!("{tripped:?}");
    assert_eq!(tripped.map(|w| w.check), Some("restarts"));
    let noisy = Noisy {
        inner: model.clone(),
        std: 0.05,
    };
    assert!(checks(check_model(&FrozenModel::new(&noisy), x.clone(), y.clone(), eps)).contains(&"randomness"));
    let softmaxed = Softmaxed { inner: model.clone() };
    assert!(checks(check_model(&FrozenModel::new(&softmaxed), x.clone(), y.clone(), eps)).contains(&"probabilities"));
    let scaled = Scaled {
        inner: model.clone(),
        scale: 1e4,
    };
    let tripped = checks(check_model(&FrozenModel::new(&scaled), x.clone(), y.clone(), eps));
    assert!(
        tripped.contains(&"zero-gradients") && tripped.contains(&"logit-scale"),
        "{tripped:?}"
    );
    // The stage check: a model that quantises its input gives every gradient attack a zero gradient, and Square,
    // which needs none, finds what they missed.
    let quantized = Quantized {
        inner: model.clone(),
        levels: 4.0,
    };
    let outcome = AttackPreset::Aa.run(&FrozenModel::new(&quantized), x.clone(), y.clone(), eps);
    let stages = outcome.stages.unwrap();
    eprintln!(
        "{:?}",
        (stages.clean, stages.apgd_ce, stages.apgd_t, stages.fab_t, stages.square)
    );
    let plain_stages = AttackPreset::Aa
        .run(&FrozenModel::new(&model), x, y, eps)
        .stages
        .unwrap();
    assert!(check_stages(&plain_stages, 64).is_none(), "{plain_stages:?}");
    assert!(check_stages(&stages, 64).is_some(), "{stages:?}");
}
