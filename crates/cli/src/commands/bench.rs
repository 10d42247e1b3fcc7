//! `tailguard bench`: throughput of training steps and attacks, FLOP/s against the device's matrix-multiply peak,
//! and peak memory, as JSON that `benches/pytorch/compare.py` puts beside PyTorch's figures.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tailguard_attacks::{ApgdConfig, AttackPreset, FrozenModel, Inner, predictions};
use tailguard_models::{Architecture, Model, ModelConfig, forward_flops};
use tailguard_trainers::{
    EvaluationAttack, GroupedSgd, Method, PresetAttack, StepInput, TrainConfig, WeightAverageConfig, train_step,
};

use crate::backend::{self, Compute, Train};
use crate::memory;
use crate::report::write_report;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  tailguard bench --arch resnet18 --batch 32 --json\n  \
    tailguard bench --arch resnet18,wrn-34-10 --batch 128 --out bench.json\n\n\
    FLOP counts: forward F (convolutions and linear layers, 2 per multiply-add); a training step with parameter \
    gradients 3F; an attack step (input gradient only) 2F.")]
pub struct BenchArgs {
    /// Architectures, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "resnet18")]
    arch: Vec<Architecture>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Workloads, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "natural,pgd10-at,taet-stage2,pgd20-eval,apgd-ce-eval"
    )]
    workloads: Vec<Workload>,
    /// Timed repetitions of each workload (after the warm-up).
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Untimed repetitions first (compilation, autotuning, allocator warm-up).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Iterations of APGD-CE (AutoAttack: 100).
    #[arg(long, default_value_t = 100)]
    apgd_iterations: usize,
    /// Side of the square matrices for the matrix-multiply peak.
    #[arg(long, default_value_t = 2048)]
    matmul_size: usize,
    /// Classes of the models.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Seed of the weights and the random batch.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file (an existing one only with --force, and only if tailguard wrote it).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Replace an earlier --out report that tailguard wrote.
    #[arg(long, requires = "out")]
    force: bool,
    #[command(flatten)]
    device: crate::backend::DeviceArg,
}

/// What one timed iteration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// One clean cross-entropy training step (forward, backward, SGD).
    Natural,
    /// One PGD-AT step: PGD-10 (eps 8/255, step 2/255) in inference mode, then a training step on the result.
    Pgd10At,
    /// One TAET stage-2 step with the official settings (PGD-10 of 0.003, extra clean forward, HARL).
    TaetStage2,
    /// PGD-20 (eps 8/255, step 2/255) and the prediction on its result: the papers' PGD evaluation.
    Pgd20Eval,
    /// One APGD-CE run (AutoAttack's settings) on every image of the batch.
    ApgdCeEval,
    /// One update of the weight average (`[ema]`): the pass over every parameter and statistic that follows each
    /// training step when a run keeps an average (its cost, to set against a step's).
    EmaUpdate,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Natural => "natural",
            Workload::Pgd10At => "pgd10-at",
            Workload::TaetStage2 => "taet-stage2",
            Workload::Pgd20Eval => "pgd20-eval",
            Workload::ApgdCeEval => "apgd-ce-eval",
            Workload::EmaUpdate => "ema-update",
        }
    }

    /// Cost in forward passes per image: an attack step is 2 (forward and input gradient), a training step 3.
    fn forward_equivalents(self, apgd_iterations: usize) -> f64 {
        match self {
            Workload::Natural => 3.0,
            Workload::Pgd10At => 10.0 * 2.0 + 3.0,
            Workload::TaetStage2 => 10.0 * 2.0 + 1.0 + 3.0,
            Workload::Pgd20Eval => 20.0 * 2.0 + 1.0,
            // The start's gradient, one per iteration, and the final prediction.
            Workload::ApgdCeEval => (apgd_iterations as f64 + 1.0) * 2.0 + 1.0,
            // No pass through the network: a multiply-add per weight.
            Workload::EmaUpdate => 0.0,
        }
    }
}

/// One row of the report.
#[derive(Debug, Serialize)]
struct BenchResult {
    arch: String,
    workload: Workload,
    batch: usize,
    seconds: Vec<f64>,
    median_seconds: f64,
    images_per_second: f64,
    flops_per_image: f64,
    achieved_gflops: f64,
    fraction_of_matmul_peak: f64,
    /// Peak resident memory of the process during the workload (CPU), in bytes.
    peak_memory_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    tool: &'static str,
    version: &'static str,
    backend: &'static str,
    threads: usize,
    /// The CPU's model, and the matrix-multiply kernels it runs (CPU backend).
    cpu: String,
    cpu_matmul_kernels: &'static str,
    matmul_size: usize,
    matmul_peak_gflops: f64,
    results: Vec<BenchResult>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    validate(&args)?;
    if let Some(path) = &args.out {
        tailguard_output::prepare_file(path, args.force)?;
    }
    let device = args.device.open()?;
    <Train as Backend>::seed(&device, args.seed);
    eprintln!("matrix-multiply peak ({0}x{0} by {0}x{0}) ...", args.matmul_size);
    let peak = matmul_peak_gflops(args.matmul_size, &device);
    let mut results = Vec::new();
    for &arch in &args.arch {
        for &workload in &args.workloads {
            eprintln!("{arch} {} batch {} ...", workload.name(), args.batch);
            let result = bench_one(&args, arch, workload, peak, &device)?;
            eprintln!(
                "  {:.2} images/s ({:.3} s per batch, {:.1} GFLOP/s)",
                result.images_per_second, result.median_seconds, result.achieved_gflops
            );
            results.push(result);
        }
    }
    let report = BenchReport {
        tool: "tailguard",
        version: env!("CARGO_PKG_VERSION"),
        backend: backend::name(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: crate::cpu::model(),
        cpu_matmul_kernels: crate::cpu::matmul_kernels(),
        matmul_size: args.matmul_size,
        matmul_peak_gflops: peak,
        results,
    };
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.out {
        write_report(path, text.as_bytes())?;
    }
    if args.json {
        println!("{text}");
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The largest `--matmul-size`: 16384 x 16384 floats are 1 GB per matrix.
const MAX_MATMUL_SIZE: usize = 16_384;
/// The largest `--batch`.
const MAX_BATCH: usize = 65_536;

fn validate(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    anyhow::ensure!(args.apgd_iterations > 0, "--apgd-iterations must be at least 1");
    anyhow::ensure!(
        (1..=MAX_MATMUL_SIZE).contains(&args.matmul_size),
        "--matmul-size must be between 1 and {MAX_MATMUL_SIZE} (three matrices of that side, 3 GB at the most), got {}",
        args.matmul_size
    );
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&args.batch),
        "--batch must be at most {MAX_BATCH}, got {}",
        args.batch
    );
    anyhow::ensure!(args.classes >= 2, "--classes must be at least 2");
    for arch in &args.arch {
        // Sizes before anything is allocated (architecture, classes, weights).
        ModelConfig::new(*arch, args.classes).validate()?;
    }
    Ok(())
}

fn print_table(report: &BenchReport) {
    println!(
        "backend {}, {} threads on {} ({} kernels), matrix-multiply peak {:.1} GFLOP/s",
        report.backend, report.threads, report.cpu, report.cpu_matmul_kernels, report.matmul_peak_gflops
    );
    println!(
        "{:<12} {:<13} {:>6} {:>10} {:>10} {:>10} {:>7} {:>10}",
        "arch", "workload", "batch", "s/batch", "images/s", "GFLOP/s", "peak", "memory MB"
    );
    for r in &report.results {
        let memory = r
            .peak_memory_bytes
            .map_or("-".to_string(), |b| format!("{:.0}", b as f64 / 1e6));
        println!(
            "{:<12} {:<13} {:>6} {:>10.3} {:>10.2} {:>10.1} {:>6.1}% {:>10}",
            r.arch,
            r.workload.name(),
            r.batch,
            r.median_seconds,
            r.images_per_second,
            r.achieved_gflops,
            100.0 * r.fraction_of_matmul_peak,
            memory
        );
    }
}

/// Best of five timed `n x n` by `n x n` products after two untimed ones, in GFLOP/s.
fn matmul_peak_gflops(n: usize, device: &burn::tensor::Device<Compute>) -> f64 {
    let a = Tensor::<Compute, 2>::random([n, n], Distribution::Uniform(-1.0, 1.0), device);
    let b = Tensor::<Compute, 2>::random([n, n], Distribution::Uniform(-1.0, 1.0), device);
    let mut best = f64::INFINITY;
    for round in 0..7 {
        let start = Instant::now();
        let product = a.clone().matmul(b.clone());
        let _ = product.slice([0..1, 0..1]).into_scalar();
        if round >= 2 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// Training configurations of the papers' CIFAR-10-LT runs, for their methods and attack settings.
const NATURAL: &str = include_str!("../../configs/cifar10-lt/natural-rho100.toml");
const PGD_AT: &str = include_str!("../../configs/cifar10-lt/pgd-at-rho100.toml");
const TAET: &str = include_str!("../../configs/cifar10-lt/taet-rho100.toml");

/// The training configuration a training workload steps with. PGD-10 AT is the textbook step its PyTorch twin and
/// its description time: the attack with BatchNorm on the running statistics (`model.eval()`), then one training
/// step. `pgd-at`'s own defaults follow RobustLT's port instead (batch statistics during the attack, and two
/// logging forward passes after the step), which made the step about 1.5x longer on the CPU and 2x on an H200 and
/// is not what the twin times.
fn training_config(workload: Workload) -> anyhow::Result<TrainConfig> {
    Ok(match workload {
        Workload::Natural => TrainConfig::parse(NATURAL, &[])?,
        Workload::Pgd10At => TrainConfig::parse(
            PGD_AT,
            &[
                "attack.batch_norm=running".to_string(),
                "method.logging_forwards=false".to_string(),
            ],
        )?,
        Workload::TaetStage2 => TrainConfig::parse(TAET, &[])?,
        other => anyhow::bail!("{} is not a training workload", other.name()),
    })
}

fn bench_one(
    args: &BenchArgs,
    arch: Architecture,
    workload: Workload,
    peak_gflops: f64,
    device: &burn::tensor::Device<Train>,
) -> anyhow::Result<BenchResult> {
    let model_config = ModelConfig::new(arch, args.classes);
    let model: Model<Train> = model_config.init(device)?;
    let n = args.batch;
    let images = Tensor::<Train, 4>::random([n, 3, 32, 32], Distribution::Uniform(0.0, 1.0), device);
    let labels_host: Vec<i64> = (0..n).map(|i| (i % args.classes) as i64).collect();
    let labels = Tensor::<Train, 1, Int>::from_data(TensorData::new(labels_host, [n]), device);

    let mut step: Box<dyn FnMut()> = match workload {
        Workload::Natural | Workload::Pgd10At | Workload::TaetStage2 => {
            let config = training_config(workload)?;
            let mut method: Box<dyn Method<Train, Model<Train>>> = config.method(&vec![1; args.classes])?;
            let eps = config.attack.eps.0;
            let epoch = match workload {
                Workload::TaetStage2 => 1_000, // past TAET's clean stage
                _ => 0,
            };
            let mut optimizer = GroupedSgd::new(&config.sgd(), &model);
            let options = config.trainer_config().step_options();
            let mut model = model;
            let input = StepInput {
                images,
                labels,
                eps: Tensor::<Inner<Train>, 1>::full([n], eps, device),
                epoch,
                start: None,
                exchange: None,
                label_smoothing: 0.0,
            };
            Box::new(move || {
                let output = train_step(method.as_mut(), &mut model, &mut optimizer, &input, 0.01, options)
                    .expect("one device: no exchange can fail");
                let _ = output.loss.into_scalar().elem::<f64>();
            })
        }
        Workload::Pgd20Eval => {
            // Exactly what `tailguard eval --attacks pgd20` runs on each batch.
            let attack = PresetAttack::linf(AttackPreset::Pgd20, 8.0 / 255.0);
            let images = images.inner();
            let labels = labels.inner();
            Box::new(move || {
                let frozen = FrozenModel::new(&model);
                let outcome = attack.attack(&frozen, images.clone(), labels.clone());
                let _ = outcome.robust.int().sum().into_scalar().elem::<i64>();
            })
        }
        Workload::ApgdCeEval => {
            let attack = ApgdConfig::new().with_iterations(args.apgd_iterations);
            let images = images.inner();
            let labels = labels.inner();
            Box::new(move || {
                let frozen = FrozenModel::new(&model);
                let everyone = labels.clone().greater_equal_elem(0);
                let (adversarial, _) = attack.apgd_ce(&frozen, images.clone(), labels.clone(), everyone);
                count_correct(&frozen, adversarial, &labels);
            })
        }
        Workload::EmaUpdate => {
            let mut average = WeightAverageConfig::new().init(&model);
            // Copy on the CPU backend, not on the GPU ones.
            #[allow(clippy::clone_on_copy)]
            let device = device.clone();
            Box::new(move || {
                average.update(&model);
                // The work has finished on the device before the clock stops.
                let _ = <Train as burn::tensor::backend::Backend>::sync(&device);
            })
        }
    };

    for _ in 0..args.warmup {
        step();
    }
    memory::reset_peak();
    let mut seconds = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let start = Instant::now();
        step();
        seconds.push(start.elapsed().as_secs_f64());
    }
    let peak_memory_bytes = memory::peak_bytes();
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median_seconds = sorted[sorted.len() / 2];
    let images_per_second = n as f64 / median_seconds;
    let flops_per_image = forward_flops(&model_config) as f64 * workload.forward_equivalents(args.apgd_iterations);
    let achieved_gflops = flops_per_image * images_per_second / 1e9;
    Ok(BenchResult {
        arch: arch.to_string(),
        workload,
        batch: n,
        seconds,
        median_seconds,
        images_per_second,
        flops_per_image,
        achieved_gflops,
        fraction_of_matmul_peak: achieved_gflops / peak_gflops,
        peak_memory_bytes,
    })
}

/// Robust images of an evaluation, read on the host so the timed work has finished on the device.
fn count_correct(
    model: &FrozenModel<Train, Model<Train>>,
    adversarial: Tensor<Inner<Train>, 4>,
    labels: &Tensor<Inner<Train>, 1, Int>,
) -> i64 {
    let correct = predictions(model.logits(adversarial)).equal(labels.clone()).int().sum();
    correct.into_scalar().elem::<i64>()
}

#[cfg(test)]
mod tests {
    use tailguard_trainers::AttackBatchNorm;

    use super::*;

    /// Every training workload attacks as its PyTorch twin does: BatchNorm on the running statistics.
    #[test]
    fn training_workloads_attack_with_the_running_statistics_as_the_twin_does() {
        for workload in [Workload::Pgd10At, Workload::TaetStage2] {
            let config = training_config(workload).unwrap();
            let options = config.trainer_config().step_options();
            assert_eq!(
                options.attack_batch_norm,
                AttackBatchNorm::Running,
                "{}",
                workload.name()
            );
            assert!(!options.logging_forwards, "{}", workload.name());
        }
        // The run's own defaults differ, which is why the bench names them.
        let default = TrainConfig::parse(PGD_AT, &[]).unwrap().trainer_config().step_options();
        assert_eq!(default.attack_batch_norm, AttackBatchNorm::Batch);
        assert!(default.logging_forwards);
    }
}
