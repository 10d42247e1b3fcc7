//! Parity with the official code of every method. The fixtures under `tests/parity/fixtures` were written by
//! `tests/parity/generate.py`, which re-expresses each method's official loss and training step in PyTorch (float64);
//! these tests run tailguard's on the same inputs and require a relative error of at most 1e-4:
//!
//! - losses: value and gradient with respect to logits (and features) of every method's loss, on a batch where
//!   some classes are absent;
//! - steps: two complete training steps of a small CNN per method (and per RobustLT base) from identical weights,
//!   batches and attack starts: the adversarial images, the loss, and every weight and BatchNorm statistic after
//!   each step, with the state carried between epochs (REAT's counts, RobustLT's budgets and warm-up, TAET's stage).
//!
//! The methods are built from configuration text with only the attack's numbers and the method's name set, so the
//! defaults of every quirk (start clipping, BatchNorm during the attack, extra forward passes) are checked too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;

use burn::tensor::{Int, Tensor, TensorData};
use tailguard_attacks::loss::cross_entropy_per_sample;
use tailguard_attacks::{FrozenModel, PgdConfig};
use tailguard_flex::Flex;
use tailguard_models::interop::{ImportOptions, ParameterNames, import_weights, read_safetensors, safetensors_bytes};
use tailguard_models::{Architecture, Model};
use tailguard_trainers::losses::{
    AbsentClasses, balanced_softmax, cross_entropy, harl, log_prior, robal_kl, robal_logits, robal_margins, trades_kl,
};
use tailguard_trainers::methods::Reat;
use tailguard_trainers::{GroupedSgd, Method, StepInput, TrainConfig, update_step};

type B = Autodiff<Flex>;
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

const TOLERANCE: f64 = 1e-4;
/// Fraction of an attack's pixels allowed to land elsewhere through a sign tie (see `run_case`). TRADES' first step
/// from `x + 0.001 N(0, 1)` ascends a KL divergence of about 1e-6 whose gradient float32 resolves to about 1e-4
/// relative; on the fixture's second batch 17 of 3,072 pixels ended elsewhere with BatchNorm composed from tensor
/// operations and none with the fused BatchNorm, whose sums are PyTorch's (f64); a wrong formula moves hundreds.
const TIED_PIXELS: f64 = 0.01;
const ARCH: Architecture = Architecture::SmallCnn { width: 4 };

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/fixtures")
}

fn load(name: &str) -> Tensors {
    read_safetensors(&fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn get<'a>(t: &'a Tensors, name: &str) -> &'a (Vec<usize>, Vec<f32>) {
    t.get(name)
        .unwrap_or_else(|| panic!("the fixture has no tensor {name}"))
}

fn floats<const D: usize>(t: &Tensors, name: &str) -> Tensor<B, D> {
    let (shape, values) = get(t, name);
    Tensor::from_data(TensorData::new(values.clone(), shape.clone()), &Default::default())
}

fn labels(t: &Tensors, name: &str) -> Tensor<B, 1, Int> {
    let (_, values) = get(t, name);
    let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    let n = ints.len();
    Tensor::from_data(TensorData::new(ints, [n]), &Default::default())
}

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// max |a - b| / max |b| (absolute when `b` is all zeros).
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    if scale > 0.0 { diff / scale } else { diff }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let error = relative_error(got, want);
    assert!(
        error <= TOLERANCE,
        "{what}: relative error {error:.2e} > {TOLERANCE:.0e}"
    );
}

const COUNTS: [usize; 10] = [50, 30, 20, 12, 8, 5, 3, 2, 2, 1];

/// A loss of some tracked inputs: checks its value and its gradient with respect to each.
fn check_loss<const N: usize>(
    t: &Tensors,
    name: &str,
    inputs: [&str; N],
    loss: impl Fn([Tensor<B, 2>; N]) -> Tensor<B, 1>,
) {
    let tracked: [Tensor<B, 2>; N] = inputs.map(|input| floats::<2>(t, input).require_grad());
    let value = loss(tracked.clone());
    let grads = value.backward();
    assert_close(
        &format!("{name} value"),
        &host(value),
        &get(t, &format!("{name}.value")).1,
    );
    for (i, input) in tracked.iter().enumerate() {
        let grad = input.grad(&grads).expect("a gradient");
        let want = &get(t, &format!("{name}.grad{i}")).1;
        let got: Vec<f32> = grad.into_data().convert::<f32>().to_vec().unwrap();
        assert_close(&format!("{name} gradient {i}"), &got, want);
    }
}

#[test]
fn every_loss_and_its_gradients_equal_the_official_code() {
    let _serial = crate::serial();
    let t = load("losses.safetensors");
    let y = labels(&t, "labels");
    let device = Default::default();
    let prior = Tensor::<B, 1>::from_floats(log_prior(&COUNTS).as_slice(), &device);
    check_loss(&t, "cross_entropy", ["logits"], |[z]| cross_entropy(z, y.clone()));
    check_loss(&t, "balanced_softmax", ["logits"], |[z]| {
        balanced_softmax(z, y.clone(), prior.clone(), 1.0)
    });
    check_loss(&t, "trades_kl", ["logits", "logits_other"], |[clean, adv]| {
        trades_kl(clean, adv)
    });
    let margins = Tensor::<B, 1>::from_floats(robal_margins(&COUNTS, 0.1, 0.3, 10.0).as_slice(), &device);
    check_loss(&t, "robal", ["cosine_adv", "cosine"], |[adv, clean]| {
        let shifted = robal_logits(adv.clone(), y.clone(), margins.clone(), 10.0, prior.clone(), 1.5);
        cross_entropy(shifted, y.clone()) + robal_kl(clean, adv).mul_scalar(6.0)
    });
    let reat = Reat::<B>::new(PgdConfig::new(), &COUNTS, 1.0);
    check_loss(&t, "reat_outer", ["logits", "features"], |[z, f]| {
        reat.outer_loss(f, z, y.clone())
    });
    check_loss(&t, "harl", ["logits"], |[z]| {
        harl(
            cross_entropy_per_sample(z, y.clone()),
            y.clone(),
            10,
            [0.1; 3],
            AbsentClasses::Zero,
        )
    });
}

#[test]
fn reat_inner_weights_equal_the_official_code() {
    let _serial = crate::serial();
    let t = load("losses.safetensors");
    let mut reat = Reat::<B>::new(PgdConfig::new(), &COUNTS, 1.0);
    let predicted: Vec<f64> = get(&t, "reat.predicted").1.iter().map(|&v| v as f64).collect();
    Method::<B, Model<B>>::load_state(&mut reat, &serde_json::json!({ "predicted_counts": predicted })).unwrap();
    assert_close("REAT weights", &reat.class_weights(), &get(&t, "reat.weights").1);
}

/// The fixture's names under a prefix (`init.convs.0.weight`), PyTorch's otherwise.
struct Prefixed(&'static str);

impl ParameterNames for Prefixed {
    fn name(&self, path: &[String]) -> (String, bool) {
        let (name, transposed) = ARCH.name(path);
        (format!("{}.{name}", self.0), transposed)
    }

    fn describe(&self) -> String {
        ARCH.describe()
    }
}

/// Every parameter and statistic of `model` under its PyTorch name.
fn model_tensors(model: &Model<B>) -> Tensors {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, safetensors_bytes(model, ARCH).unwrap()).unwrap();
    read_safetensors(&path).unwrap()
}

const BASE: &str = r#"
[data]
dataset = "cifar10"
data_dir = "unused"
imbalance = 50
[model]
arch = "small-cnn-4"
[optim]
epochs = 4
batch_size = 16
schedule = { name = "constant" }
lr = 0.1
momentum = 0.9
weight_decay = 0.0005
[attack]
eps = "8/255"
step_size = "2/255"
steps = 10
[method]
name = "natural"
"#;

#[derive(serde::Deserialize)]
struct Listing {
    counts: Vec<usize>,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    sets: Vec<String>,
    step_epochs: Vec<usize>,
    epochs: usize,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
}

/// Runs one case; returns what disagrees.
fn run_case(case: &Case, counts: &[usize]) -> Vec<String> {
    let t = load(&format!("{}.safetensors", case.name));
    let mut sets = case.sets.clone();
    sets.extend([
        format!("optim.epochs={}", case.epochs),
        format!("optim.lr={}", case.lr),
        format!("optim.momentum={}", case.momentum),
        format!("optim.weight_decay={}", case.weight_decay),
    ]);
    let config = TrainConfig::parse(BASE, &sets).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let device = Default::default();
    let model = config.model_config(counts.len()).unwrap().init::<B>(&device).unwrap();
    let options = ImportOptions {
        drop_unknown: true,
        ..Default::default()
    };
    let path = fixtures().join(format!("{}.safetensors", case.name));
    let mut model = import_weights(model, Prefixed("init"), &path, options).unwrap();
    let mut method: Box<dyn Method<B, Model<B>>> = config.method(counts).unwrap();
    let mut optimizer = GroupedSgd::new(&config.sgd(), &model);
    let trainer = config.trainer_config();
    let policy = config.budget_policy(counts);
    let mut found = Findings {
        case: &case.name,
        failures: Vec::new(),
    };
    for (k, &epoch) in case.step_epochs.iter().enumerate() {
        if k > 0 && epoch != case.step_epochs[k - 1] {
            method.end_epoch();
        }
        let y = labels(&t, &format!("step{k}.labels"));
        let host_labels: Vec<usize> = get(&t, &format!("step{k}.labels"))
            .1
            .iter()
            .map(|&v| v as usize)
            .collect();
        let budgets = policy.for_labels(epoch, &host_labels);
        if let Some((_, want)) = t.get(&format!("step{k}.eps")) {
            found.check(format!("step {k} budgets"), &budgets, want);
        }
        let n = host_labels.len();
        let input = StepInput {
            images: floats::<4>(&t, &format!("step{k}.images")),
            labels: y,
            eps: Tensor::from_data(TensorData::new(budgets, [n]), &device),
            epoch,
            start: t
                .get(&format!("step{k}.start"))
                .map(|_| floats::<4>(&t, &format!("step{k}.start")).inner()),
            exchange: None,
            label_smoothing: 0.0,
        };
        // The attack on its own, then the update from the official adversarial images: sign-gradient PGD turns a
        // gradient component within rounding of zero into a full step either way, so a few pixels of an attack may
        // legitimately differ between float32 and float64; everything after the attack must agree within 1e-4.
        method.prepare(&model, &input);
        let frozen = FrozenModel::in_mode(&model, trainer.attack_batch_norm.mode());
        let adversarial = method.adversarial(&frozen, &input);
        let official = t
            .get(&format!("step{k}.adversarial"))
            .map(|_| floats::<4>(&t, &format!("step{k}.adversarial")));
        match (adversarial, &official) {
            (Some(got), Some(want)) => {
                let got: Vec<f32> = got.into_data().convert::<f32>().to_vec().unwrap();
                found.check_attack(k, &got, &host(want.clone()));
            }
            (None, None) => {}
            (got, want) => found.note(format!(
                "step {k}: adversarial images made: {}, by the official code: {}",
                got.is_some(),
                want.is_some()
            )),
        }
        let lr = trainer.lr_at(epoch);
        let output = update_step(
            method.as_mut(),
            &mut model,
            &mut optimizer,
            &input,
            official,
            lr,
            trainer.step_options(),
        )
        .expect("one device: no exchange can fail");
        found.check(
            format!("step {k} loss"),
            &host(output.loss),
            &get(&t, &format!("step{k}.loss")).1,
        );
        let ours = model_tensors(&model);
        let prefix = format!("after{k}.");
        for (name, (_, want)) in t.iter().filter(|(name, _)| name.starts_with(&prefix)) {
            let key = &name[prefix.len()..];
            match ours.get(key) {
                Some((_, got)) => found.check(format!("step {k} {key}"), got, want),
                None => found.note(format!("the model has no tensor {key}")),
            }
        }
    }
    if let Some((_, want)) = t.get("reat.tally") {
        method.end_epoch();
        let state = method.state();
        let got: Vec<f32> = serde_json::from_value::<Vec<f64>>(state["predicted_counts"].clone())
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        found.check("REAT's counts of the epoch".into(), &got, want);
    }
    found.failures
}

/// What disagrees in one case.
struct Findings<'a> {
    case: &'a str,
    failures: Vec<String>,
}

impl Findings<'_> {
    fn check(&mut self, what: String, got: &[f32], want: &[f32]) {
        let error = relative_error(got, want);
        if error > TOLERANCE {
            self.note(format!("{what}: relative error {error:.2e}"));
        }
    }

    /// Adversarial images: at most [`TIED_PIXELS`] of the pixels may differ (sign ties), the rest within 1e-4.
    fn check_attack(&mut self, k: usize, got: &[f32], want: &[f32]) {
        let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        let differing = got
            .iter()
            .zip(want)
            .filter(|&(&a, &b)| (a as f64 - b as f64).abs() > TOLERANCE * scale)
            .count();
        if differing as f64 > TIED_PIXELS * want.len() as f64 {
            self.note(format!(
                "step {k}: {differing} of {} adversarial pixels differ",
                want.len()
            ));
        }
    }

    fn note(&mut self, message: String) {
        self.failures.push(format!("{}: {message}", self.case));
    }
}

#[test]
fn two_training_steps_of_every_method_equal_the_official_code() {
    let _serial = crate::serial();
    let listing: Listing =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json")).unwrap()).unwrap();
    let mut failures = Vec::new();
    for case in &listing.cases {
        failures.extend(run_case(case, &listing.counts));
    }
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
