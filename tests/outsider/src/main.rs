//! An outsider's program: a model and a method of its own, trained with tailguard's RobustLT budgets, stopped and
//! resumed in another process; and a configuration file trained through the library, for comparison with the
//! `tailguard` program's log. Commands (each exits non-zero with a message on any difference):
//!
//! - `custom DATA DIR EPOCHS STOP_AFTER`: trains (or resumes) the custom run in DIR for at most STOP_AFTER epochs.
//! - `config CONFIG DIR [KEY=VALUE ...]`: trains CONFIG with overrides into DIR through `TrainConfig`.
//! - `same-run DIR_A DIR_B`: the two runs logged the same losses and accuracies and hold the same weights, bit for bit.

use std::path::Path;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, activation::relu};
use tailguard_attacks::{FrozenModel, Inner};
use tailguard_longtail::{DatasetKind, LongTailSpec, Split};
#[cfg(not(feature = "published-flex"))]
use tailguard_models::Flex;
use tailguard_models::{Classifier, ModalBatchNorm, ModalBatchNormConfig, Mode};
use tailguard_trainers::method::pgd_examples;
use tailguard_trainers::{
    AttackSection, Budget, Method, MethodConfig, Recipe, RobustLtConfig, Run, RunDescription, Silent, StepInput,
    StepOutput, TrainConfig, TrainData, Trainer, TrainerConfig,
};

/// The backend tailguard's program runs on the CPU: Flex with tailguard's kernels. With the `published-flex` feature,
/// Burn's own Flex instead (what an embedder got before the forks became crates): benches/embedding.sh compares.
#[cfg(not(feature = "published-flex"))]
type CpuBackend = Flex;
#[cfg(feature = "published-flex")]
type CpuBackend = burn::backend::Flex;
type Cpu = Autodiff<CpuBackend>;

type Error = Box<dyn std::error::Error>;

/// conv (stride 2) -> BatchNorm -> ReLU -> global pooling -> linear.
#[derive(Module, Debug)]
struct OwnNet<B: Backend> {
    conv: Conv2d<B>,
    norm: ModalBatchNorm<B>,
    head: Linear<B>,
}

impl<B: Backend> OwnNet<B> {
    fn new(classes: usize, device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([3, 8], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            norm: ModalBatchNormConfig::new(8).init(device),
            head: LinearConfig::new(8, classes).init(device),
        }
    }
}

impl<B: Backend> Classifier<B> for OwnNet<B> {
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = relu(self.norm.forward(self.conv.forward(images), mode)); // (N, 8, H/2, W/2)
        let [n, c, _, _] = x.dims();
        self.head.forward(x.mean_dim(3).mean_dim(2).reshape([n, c])) // (N, classes)
    }

    fn num_classes(&self) -> usize {
        self.head.weight.dims()[1]
    }
}

/// A method tailguard does not ship: the mean of clean and adversarial cross-entropy.
struct HalfHalf {
    attack: tailguard_attacks::PgdConfig,
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for HalfHalf {
    fn name(&self) -> &'static str {
        "half-half"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        Some(pgd_examples(&self.attack, model, input))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let adversarial = adversarial.expect("HalfHalf attacks every batch");
        let clean = model.forward(input.images.clone(), Mode::Train);
        let adv = model.forward(adversarial, Mode::Train);
        let ce = |logits: Tensor<B, 2>| tailguard_trainers::losses::cross_entropy(logits, input.labels.clone());
        StepOutput {
            loss: (ce(clean.clone()) + ce(adv.clone())).mul_scalar(0.5),
            clean_logits: Some(clean),
            adversarial_logits: Some(adv),
        }
    }
}

fn custom(data_path: &Path, dir: &Path, epochs: usize, stop_after: usize) -> Result<(), Error> {
    let source = DatasetKind::Cifar10.load(data_path, Split::Train)?;
    let spec = LongTailSpec {
        n_max: Some(40),
        ..LongTailSpec::exp(10.0)
    };
    let data = TrainData::from_dataset(spec.select(&source)?.apply(&source)?, 0.0, 0)?;
    let device = Default::default();
    <Cpu as Backend>::seed(&device, 3);
    let model = OwnNet::<Cpu>::new(data.classes.len(), &device);
    // RobustLT's budgets and step options, carried by its recipe; the method is this program's own.
    let attack = AttackSection::new(Budget(8.0 / 255.0), Budget(2.0 / 255.0), 2);
    let recipe = Recipe::robust_lt(MethodConfig::pgd_at(), attack, RobustLtConfig::new(0.3, 0.5));
    let method = HalfHalf {
        attack: recipe.attack()?,
    };
    let config = recipe.trainer_config(TrainerConfig::new(epochs, 0.05).with_batch_size(32).with_seed(5));
    let budget = recipe.budget_policy(&data.counts, epochs);
    let trainer = Trainer::new(model, Box::new(method), budget, config, &data, &device)?;
    let mut run = if dir.join("last").exists() {
        Run::resume(trainer, RunDescription::default(), dir)?
    } else {
        Run::start(trainer, RunDescription::default(), dir, false)?
    };
    for _ in 0..stop_after {
        if run.finished() {
            break;
        }
        let record = run.run_epoch(&mut Silent)?;
        println!("custom epoch {}: loss {}", record.epoch, record.loss);
    }
    Ok(())
}

fn config(path: &Path, dir: &Path, overrides: &[String]) -> Result<(), Error> {
    let config = TrainConfig::load(path, overrides)?;
    let mut run = config.start_run::<Cpu>(dir, &Default::default(), false)?;
    for record in run.run_to_end(&mut Silent)? {
        println!("config epoch {}: loss {}", record.epoch, record.loss);
    }
    Ok(())
}

/// The figures of every epoch that depend only on the computation (not on time).
fn figures(dir: &Path) -> Result<Vec<serde_json::Value>, Error> {
    let log = std::fs::read_to_string(dir.join("log.jsonl"))?;
    log.lines()
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line)?;
            let object = record.as_object_mut().ok_or("a log line is not an object")?;
            object.retain(|key, _| !key.contains("second")); // timings: seconds_*, images_per_second
            Ok(record)
        })
        .collect()
}

/// Every float tensor of a run's last checkpoint (parameter ids, which are random per process, left out).
fn weights(dir: &Path) -> Result<Vec<Vec<f32>>, Error> {
    let last = dir.join("last");
    let device = Default::default();
    let meta = tailguard_models::read_checkpoint_meta(&last)?;
    Ok(match meta.model {
        Some(_) => tailguard_models::testing::float_tensors(
            &tailguard_models::load_checkpoint::<CpuBackend>(&last, &device)?.0,
        ),
        None => {
            let model = OwnNet::<CpuBackend>::new(meta.classes.len(), &device);
            let model = tailguard_models::load_checkpoint_into(&last, model, &device)?.0;
            tailguard_models::testing::float_tensors(&model)
        }
    })
}

fn same_run(a: &Path, b: &Path) -> Result<(), Error> {
    let (log_a, log_b) = (figures(a)?, figures(b)?);
    if log_a.is_empty() || log_a != log_b {
        return Err(format!(
            "the logs differ:\n{}: {log_a:?}\n{}: {log_b:?}",
            a.display(),
            b.display()
        )
        .into());
    }
    if weights(a)? != weights(b)? {
        return Err(format!("the weights in {} and {} differ", a.display(), b.display()).into());
    }
    println!(
        "same run: {} epochs, losses {:?}",
        log_a.len(),
        log_a.iter().map(|r| &r["loss"]).collect::<Vec<_>>()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    // What `tailguard` does first: freed tensors' memory serves the next operation.
    tailguard_models::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["custom", data, dir, epochs, stop] => epochs
            .parse()
            .map_err(Error::from)
            .and_then(|epochs| Ok((epochs, stop.parse()?)))
            .and_then(|(epochs, stop)| custom(Path::new(data), Path::new(dir), epochs, stop)),
        ["config", path, dir, overrides @ ..] => config(
            Path::new(path),
            Path::new(dir),
            &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ),
        ["same-run", a, b] => same_run(Path::new(a), Path::new(b)),
        _ => Err("usage: custom DATA DIR EPOCHS STOP_AFTER | config CONFIG DIR [KEY=VALUE ...] | same-run A B".into()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
