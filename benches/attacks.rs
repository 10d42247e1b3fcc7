//! Attack throughput: PGD-10 and APGD-CE (100 iterations) on the small CNN and ResNet-18, on the Flex (CPU)
//! backend. Run with `cargo bench --bench attacks`; results go to docs/benchmarks.md.
//!
//! APGD-CE is timed with one run on every image of the batch (what it costs per attacked image), not through
//! AA-lite, which skips points that are already misclassified.

use std::time::Instant;

use burn::backend::Autodiff;

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use tailguard_attacks::{ApgdConfig, AttackLoss, Ball, FrozenModel, PgdConfig};
use tailguard_flex::Flex;
use tailguard_models::{Architecture, Classifier, Mode, ModelConfig};

type B = Autodiff<Flex>;

struct Case {
    arch: Architecture,
    batch: usize,
}

fn main() {
    let device = Default::default();
    let cases = [
        Case {
            arch: Architecture::SmallCnn { width: 16 },
            batch: 128,
        },
        Case {
            arch: Architecture::ResNet18,
            batch: 16,
        },
    ];
    let mut rows = Vec::new();
    for case in cases {
        let model = ModelConfig::new(case.arch, 10).init::<B>(&device).unwrap();
        // Realistic BatchNorm statistics instead of the initial (0, 1).
        let warm = Tensor::<B, 4>::random([32, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
        let _ = model.forward(warm, Mode::Train);
        let frozen = FrozenModel::new(&model);
        let images = Tensor::<Flex, 4>::random([case.batch, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
        let labels: Vec<i64> = (0..case.batch as i64).map(|i| i % 10).collect();
        let labels = Tensor::<Flex, 1, Int>::from_data(TensorData::new(labels, [case.batch]), &device);

        // Warm-up step (allocations, first-call costs).
        let _ = PgdConfig::new()
            .with_steps(1)
            .perturb(&frozen, images.clone(), labels.clone(), None);

        let start = Instant::now();
        let adv = PgdConfig::new().perturb(&frozen, images.clone(), labels.clone(), None);
        let _ = adv.sum().into_scalar();
        let pgd = start.elapsed().as_secs_f64();
        rows.push((case.arch.to_string(), "PGD-10", case.batch, pgd, 10));

        let ball = Ball::uniform(images.clone(), 8.0 / 255.0);
        let start = Instant::now();
        let run = ApgdConfig::new().run_once(&frozen, &ball, AttackLoss::CrossEntropy, labels.clone(), None);
        let _ = run.best_loss.sum().into_scalar();
        let apgd = start.elapsed().as_secs_f64();
        rows.push((case.arch.to_string(), "APGD-CE (100 it.)", case.batch, apgd, 101));
    }
    println!(
        "attack throughput, Flex backend, {} rayon threads",
        rayon::current_num_threads()
    );
    println!(
        "{:<16} {:<18} {:>6} {:>10} {:>10} {:>16}",
        "model", "attack", "batch", "seconds", "images/s", "grad steps/s"
    );
    for (arch, attack, batch, seconds, steps) in &rows {
        println!(
            "{arch:<16} {attack:<18} {batch:>6} {seconds:>10.2} {:>10.2} {:>16.1}",
            *batch as f64 / seconds,
            (*batch * *steps) as f64 / seconds
        );
    }
}
