//! End to end on real images (the embedded long-tailed CIFAR-10 subset): a model trained with PGD-AT is more robust
//! under PGD than one trained naturally with the same budget.

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::Autodiff;

use tailguard_attacks::{AttackPreset, PgdConfig};
use tailguard_flex::Flex;
use tailguard_longtail::{BatchLoader, BatchLoaderConfig, ClassGroups, DatasetKind, LongTailSpec, Split};
use tailguard_trainers::{PresetAttack, Silent, TrainConfig, evaluate};

type B = Autodiff<Flex>;

fn embedded() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("datasets")
        .join("cifar10-lt-mini.tar.gz")
}

fn config(method: &str) -> TrainConfig {
    let text = format!(
        r#"
seed = 7
[data]
dataset = "cifar10"
data_dir = "{}"
imbalance = 10.0
n_max = 200
[model]
arch = "small-cnn-8"
[optim]
epochs = 8
batch_size = 32
lr = 0.05
schedule = {{ name = "cosine", min_lr = 0.0 }}
[attack]
eps = "8/255"
step_size = "3/255"
steps = 3
[method]
name = "{method}"
"#,
        embedded().display()
    );
    TrainConfig::parse(&text, &[]).unwrap()
}

/// Balanced clean and PGD-10 accuracy on 300 test images.
fn balanced_accuracies(checkpoint: &std::path::Path) -> (f64, f64) {
    let device = Default::default();
    let (model, _) = tailguard_models::load_checkpoint::<B>(checkpoint, &device).unwrap();
    let test = DatasetKind::Cifar10.load(&embedded(), Split::Test).unwrap();
    let test = LongTailSpec {
        n_max: Some(30),
        ..LongTailSpec::exp(1.0)
    }
    .select(&test)
    .unwrap()
    .apply(&test)
    .unwrap();
    let loader = BatchLoader::new(Arc::new(test), BatchLoaderConfig::evaluation(100)).unwrap();
    let clean = PresetAttack::linf(AttackPreset::Clean, 0.0);
    let results = evaluate(
        &model,
        &loader,
        &[&clean, &PgdConfig::new().with_steps(10)],
        0,
        &device,
        &mut Silent,
    )
    .unwrap();
    let groups = ClassGroups::default();
    (
        results[0].tally.summary(&groups).balanced_accuracy,
        results[1].tally.summary(&groups).balanced_accuracy,
    )
}

#[test]
fn pgd_at_beats_natural_training_under_pgd() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let mut results = Vec::new();
    for method in ["natural", "pgd-at"] {
        let out = dir.path().join(method);
        let mut run = config(method).start_run::<B>(&out, &device, false).unwrap();
        run.run_to_end(&mut Silent).unwrap();
        results.push(balanced_accuracies(&out.join("last")));
    }
    let ((natural_clean, natural_robust), (at_clean, at_robust)) = (results[0], results[1]);
    eprintln!(
        "natural: clean {natural_clean:.3} PGD-10 {natural_robust:.3}; PGD-AT: clean {at_clean:.3} PGD-10 {at_robust:.3}"
    );
    // Eight short epochs on 812 images: far from converged, but clearly above chance (0.10).
    assert!(
        natural_clean > 0.15,
        "natural training learned nothing: {natural_clean}"
    );
    assert!(
        at_robust > natural_robust + 0.02,
        "PGD-AT {at_robust} vs natural {natural_robust} under PGD-10"
    );
}
