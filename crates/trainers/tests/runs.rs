//! Whole training runs on a tiny synthetic CIFAR-format archive: resume is bit-identical, TAET switches stage on
//! time, checkpoints and logs are complete.

use std::path::Path;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;

use tailguard_flex::Flex;
use tailguard_trainers::{Silent, TrainConfig};

use crate::common::tiny_archive;

type B = Autodiff<Flex>;

fn config(data: &Path, epochs: usize) -> TrainConfig {
    config_with(
        data,
        epochs,
        "name = \"taet\"\nce_epochs = 1",
        "robustlt = { alpha = 0.3, beta = 0.5 }",
    )
}

fn config_with(data: &Path, epochs: usize, method: &str, robustlt: &str) -> TrainConfig {
    let text = format!(
        r#"
seed = 3
{robustlt}
[data]
dataset = "cifar10"
data_dir = "{}"
imbalance = 2.0
validation_fraction = 0.2
[model]
arch = "small-cnn-2"
[optim]
epochs = {epochs}
batch_size = 16
lr = 0.05
schedule = {{ name = "multi-step", milestones = [1], gamma = 0.5 }}
[attack]
eps = "8/255"
step_size = "2/255"
steps = 2
start = "uniform"
[method]
{method}
[validation]
attack_steps = 2
"#,
        data.display()
    );
    TrainConfig::parse(&text, &[]).unwrap()
}

/// Every float tensor of a model (parameters and running statistics), in visiting order.
fn all_tensors(model: &tailguard_models::Model<Flex>) -> Vec<Vec<f32>> {
    tailguard_models::testing::float_tensors(model)
}

#[test]
fn resume_continues_bit_identically() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let device = Default::default();

    let straight = dir.path().join("straight");
    let mut run = config(&data, 2).start_run::<B>(&straight, &device, false).unwrap();
    let first = run.run_epoch(&mut Silent).unwrap();
    let second = run.run_epoch(&mut Silent).unwrap();
    assert!(run.finished());
    drop(run);

    let interrupted = dir.path().join("interrupted");
    let mut run = config(&data, 2).start_run::<B>(&interrupted, &device, false).unwrap();
    run.run_epoch(&mut Silent).unwrap();
    drop(run); // the process stops here
    let mut run = TrainConfig::resume_run::<B>(&interrupted, &device).unwrap();
    assert!(!run.finished());
    let resumed = run.run_epoch(&mut Silent).unwrap();
    assert!(run.finished());

    assert_eq!(
        resumed.loss, second.loss,
        "the resumed epoch must compute exactly the same loss"
    );
    assert_eq!(resumed.validation_robust, second.validation_robust);
    // Every parameter and BatchNorm statistic is identical (parameter ids differ between the two runs, since
    // each run created its own model, so the files are compared tensor by tensor). The optimizer's momentum is
    // covered too: epoch 2's updates depend on it.
    let (a, _) = tailguard_models::load_checkpoint::<Flex>(&straight.join("last"), &device).unwrap();
    let (b, _) = tailguard_models::load_checkpoint::<Flex>(&interrupted.join("last"), &device).unwrap();
    let (ta, tb) = (all_tensors(&a), all_tensors(&b));
    assert_eq!(ta.len(), tb.len());
    for (i, (x, y)) in ta.iter().zip(&tb).enumerate() {
        assert!(x == y, "tensor {i} differs after resuming");
    }
    let log = std::fs::read_to_string(interrupted.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2);

    // TAET: epoch 1 is clean cross-entropy, epoch 2 adversarial (HARL); RobustLT's warm-up starts at zero budget.
    assert_eq!(first.stage, "clean");
    assert!(first.clean_accuracy.is_some() && first.adversarial_accuracy.is_none());
    assert_eq!(second.stage, "adversarial");
    assert!(second.adversarial_accuracy.is_some());
    let eps_first = first.eps_per_class.clone().unwrap();
    assert!(
        eps_first.iter().all(|&e| e == 0.0),
        "warm-up intensity 0 in the first epoch: {eps_first:?}"
    );
    let eps_second = second.eps_per_class.clone().unwrap();
    assert!(
        eps_second[9] > eps_second[0],
        "tail classes get larger budgets: {eps_second:?}"
    );
}

#[test]
fn an_averaged_run_keeps_saves_and_resumes_its_average_bit_identically() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let device = Default::default();
    let averaged = |epochs| {
        let mut config = config(&data, epochs);
        config.ema = Some(tailguard_trainers::config::EmaSection {
            decay: 0.9,
            warmup: true,
        });
        config
    };
    let straight = dir.path().join("straight");
    let mut run = averaged(2).start_run::<B>(&straight, &device, false).unwrap();
    let steps = run.trainer.steps_per_epoch() as u64;
    run.run_to_end(&mut Silent).unwrap();
    let second = std::fs::read_to_string(straight.join("log.jsonl")).unwrap();
    drop(run);

    let interrupted = dir.path().join("interrupted");
    let mut run = averaged(2).start_run::<B>(&interrupted, &device, false).unwrap();
    run.run_epoch(&mut Silent).unwrap();
    drop(run);
    let mut run = TrainConfig::resume_run::<B>(&interrupted, &device).unwrap();
    run.run_epoch(&mut Silent).unwrap();
    drop(run);

    use tailguard_models::{Weights, load_checkpoint_weights, read_checkpoint_meta};
    let meta = read_checkpoint_meta(&straight.join("last")).unwrap();
    let average = meta.average.clone().expect("the checkpoint names its average");
    assert_eq!((average.decay, average.updates), (0.9, 2 * steps));
    let load = |run: &Path, weights| {
        all_tensors(
            &load_checkpoint_weights::<Flex>(&run.join("last"), weights, &device)
                .unwrap()
                .0,
        )
    };
    assert_eq!(
        load(&straight, Weights::Ema),
        load(&interrupted, Weights::Ema),
        "the average resumes exactly"
    );
    assert_eq!(load(&straight, Weights::Raw), load(&interrupted, Weights::Raw));
    assert_ne!(
        load(&straight, Weights::Ema),
        load(&straight, Weights::Raw),
        "the average is not the last weights"
    );
    // Validation measured the average, in both runs alike.
    let resumed = std::fs::read_to_string(interrupted.join("log.jsonl")).unwrap();
    let robust = |log: &str| -> Vec<Option<f64>> {
        log.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["validation_robust"].as_f64())
            .collect()
    };
    assert_eq!(robust(&second), robust(&resumed));
    // Keeping an average does not change training: the raw weights equal those of a run without one.
    // A checkpoint without an average refuses `--weights ema`, and picks the raw weights by default.
    let plain = dir.path().join("plain");
    let mut run = config(&data, 2).start_run::<B>(&plain, &device, false).unwrap();
    run.run_to_end(&mut Silent).unwrap();
    drop(run);
    assert_eq!(
        load(&plain, Weights::Raw),
        load(&straight, Weights::Raw),
        "the average changed training"
    );
    let plain_meta = read_checkpoint_meta(&plain.join("last")).unwrap();
    assert_eq!(Weights::resolve(None, &plain_meta, &plain).unwrap(), Weights::Raw);
    assert_eq!(Weights::resolve(None, &meta, &straight).unwrap(), Weights::Ema);
    let err = load_checkpoint_weights::<Flex>(&plain.join("last"), Weights::Ema, &device).unwrap_err();
    assert!(err.to_string().contains("last"), "{err}");
}

#[test]
fn checkpoints_record_what_evaluation_needs() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let out = dir.path().join("run");
    let mut run = config(&data, 1)
        .start_run::<B>(&out, &Default::default(), false)
        .unwrap();
    run.run_epoch(&mut Silent).unwrap();
    let meta = tailguard_models::read_checkpoint_meta(&out.join("last")).unwrap();
    assert_eq!(meta.epoch, Some(1));
    let counts: Vec<usize> = serde_json::from_value(meta.training["class_counts"].clone()).unwrap();
    assert_eq!(counts.len(), 10);
    assert_eq!(meta.training["method"], "taet");
    assert!(
        out.join("best").join("model.mpk").exists(),
        "validation is on, so a best checkpoint exists"
    );
    assert!(out.join("config.toml").exists());
    // Starting again in the same folder is refused rather than overwriting.
    let err = config(&data, 1)
        .start_run::<B>(&out, &Default::default(), false)
        .err()
        .unwrap();
    assert!(matches!(err, tailguard_trainers::TrainError::RunExists(_)), "{err}");
    assert!(err.to_string().contains("Run::resume"), "{err}");
}

#[test]
fn robal_trains_a_cosine_head() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let config = config_with(&data, 1, "name = \"robal\"", "");
    let config = TrainConfig::parse(
        &config.to_toml(),
        &["model.head=cosine".into(), "attack.start=uniform-positive".into()],
    )
    .unwrap();
    let out = dir.path().join("robal");
    let mut run = config.start_run::<B>(&out, &Default::default(), false).unwrap();
    let record = run.run_epoch(&mut Silent).unwrap();
    assert!(record.loss.is_finite() && record.loss > 0.0, "{record:?}");
    assert!(record.clean_accuracy.is_some() && record.adversarial_accuracy.is_some());
    let meta = tailguard_models::read_checkpoint_meta(&out.join("last")).unwrap();
    assert_eq!(meta.model.unwrap().head, tailguard_models::HeadKind::ROBAL);
}

#[test]
fn reat_trains_and_carries_its_counts_through_a_resume() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let device = Default::default();
    let out = dir.path().join("reat");
    let mut run = config_with(&data, 2, "name = \"reat\"", "")
        .start_run::<B>(&out, &device, false)
        .unwrap();
    let record = run.run_epoch(&mut Silent).unwrap();
    assert!(record.loss.is_finite(), "{record:?}");
    drop(run);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("last").join("train_state.json")).unwrap()).unwrap();
    let counts: Vec<f64> = serde_json::from_value(state["method"]["predicted_counts"].clone()).unwrap();
    // m_c after epoch 1 counts the adversarial predictions of every training image once.
    let train_images = config_with(&data, 2, "name = \"reat\"", "")
        .load_data()
        .unwrap()
        .train
        .len();
    assert_eq!(counts.iter().sum::<f64>() as usize, train_images);
    let mut run = TrainConfig::resume_run::<B>(&out, &device).unwrap();
    assert!(run.run_epoch(&mut Silent).unwrap().loss.is_finite());
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let config = config_with(&data, 2, "name = \"pgd-at\"", "");
    // The learning rate jumps by 1e36 after the first epoch.
    let config = TrainConfig::parse(&config.to_toml(), &["optim.schedule.gamma=1e36".into()]).unwrap();
    let out = dir.path().join("diverge");
    let mut run = config.start_run::<B>(&out, &Default::default(), false).unwrap();
    run.run_epoch(&mut Silent).unwrap();
    let err = run.run_epoch(&mut Silent).unwrap_err().to_string();
    assert!(
        err.contains("diverged in epoch 2") && err.contains("last good checkpoint"),
        "{err}"
    );
    let meta = tailguard_models::read_checkpoint_meta(&out.join("last")).unwrap();
    assert_eq!(meta.epoch, Some(1), "last/ still holds the good epoch");
    assert_eq!(
        std::fs::read_to_string(out.join("log.jsonl")).unwrap().lines().count(),
        1
    );
}

#[test]
fn trainer_parts_that_do_not_fit_each_other_are_refused() {
    let _serial = crate::serial();
    use tailguard_models::{Architecture, ModelConfig};
    use tailguard_trainers::{BudgetPolicy, Trainer, TrainerConfig};
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_archive(dir.path());
    let config = config_with(&path, 2, "name = \"reat\"", "");
    let data = config.load_data().unwrap();
    let device = Default::default();
    let small = Architecture::SmallCnn { width: 2 };
    // REAT (which needs features) with the given architecture, output count, budget policy and settings.
    let refusal = |arch, classes, budget: BudgetPolicy, settings: TrainerConfig| {
        let model = ModelConfig::new(arch, classes).init::<B>(&device).unwrap();
        match Trainer::new(
            model,
            config.method(&data.counts).unwrap(),
            budget,
            settings,
            &data,
            &device,
        ) {
            Err(e) => (e.to_string(), tailguard_trainers::chain(&e)),
            Ok(_) => panic!("the parts were accepted"),
        }
    };
    let budget = || config.budget_policy(&data.counts);
    let (message, _) = refusal(small, 5, budget(), config.trainer_config());
    assert!(message.contains("5 outputs but the data has 10 classes"), "{message}");
    let (message, _) = refusal(small, 10, BudgetPolicy::uniform(0.03, 3), config.trainer_config());
    assert!(message.contains("budget policy covers 3 classes"), "{message}");
    let (message, _) = refusal(Architecture::Linear, 10, budget(), config.trainer_config());
    assert!(message.contains("reat needs penultimate features"), "{message}");
    // A message names the problem; its cause is the source, printed once in the chain.
    let (message, chain) = refusal(small, 10, budget(), config.trainer_config().with_batch_size(0));
    assert_eq!(message, "invalid trainer setting");
    assert_eq!(chain, "invalid trainer setting: batch_size must be at least 1, got 0");
}

#[test]
fn open_starts_or_resumes_and_builds_the_trainer_once_the_folder_is_checked() {
    let _serial = crate::serial();
    use tailguard_trainers::{Opening, Run, RunDescription, TrainError};
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let device = Default::default();
    let config = config(&data, 2);
    let train_data = config.load_data().unwrap();
    let build = |meta: Option<&tailguard_models::CheckpointMeta>, seen: &mut Vec<Option<usize>>| {
        seen.push(meta.map(|m| m.epoch.unwrap_or(0)));
        Ok((config.trainer::<B>(&train_data, &device)?, RunDescription::default()))
    };
    let out = dir.path().join("run");
    let mut seen = Vec::new();
    // A new folder: a new run, built without a checkpoint.
    let mut run = Run::open(&out, Opening::StartOrResume, |meta| build(meta, &mut seen)).unwrap();
    run.run_epoch(&mut Silent).unwrap();
    drop(run);
    // The same call again continues it: the builder sees the checkpoint of epoch 1.
    let mut run = Run::open(&out, Opening::StartOrResume, |meta| build(meta, &mut seen)).unwrap();
    assert_eq!(run.trainer.next_epoch, 1);
    run.run_epoch(&mut Silent).unwrap();
    assert!(run.finished());
    drop(run);
    assert_eq!(seen, vec![None, Some(1)]);
    // A start over it is refused before the trainer is built (no data loaded, nothing changed).
    let error = Run::open(&out, Opening::Start, |meta| build(meta, &mut seen))
        .err()
        .unwrap();
    assert!(matches!(error, TrainError::RunExists(_)), "{error}");
    assert_eq!(seen.len(), 2, "the builder ran for a refused folder");
    // Resuming a folder without a checkpoint says so, also before building.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let error = Run::open(&empty, Opening::Resume, |meta| build(meta, &mut seen))
        .err()
        .unwrap();
    assert!(matches!(error, TrainError::NoCheckpoint { .. }), "{error}");
    assert_eq!(seen.len(), 2);
}

#[test]
fn fine_tuning_starts_from_a_checkpoints_weights_and_resumes_without_it() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let device = Default::default();
    let source = dir.path().join("source");
    let mut run = config(&data, 1).start_run::<B>(&source, &device, false).unwrap();
    run.run_to_end(&mut Silent).unwrap();
    drop(run);
    let (trained, _) = tailguard_models::load_checkpoint::<Flex>(&source.join("last"), &device).unwrap();

    let with_init = |arch: &str| {
        let mut config = config(&data, 2);
        let text = config.to_toml().replace("small-cnn-2", arch);
        let init = format!(
            "model.init_from={}",
            serde_json::json!(source.join("last").display().to_string())
        );
        config = TrainConfig::parse(&text, &[init]).unwrap();
        config
    };
    // The trainer's model starts as the checkpoint's weights, every parameter and statistic.
    let tuned = with_init("small-cnn-2");
    let train_data = tuned.load_data().unwrap();
    let trainer = tuned.trainer::<B>(&train_data, &device).unwrap();
    let start: Vec<Vec<f32>> = tailguard_models::testing::float_tensors(&trainer.model().valid());
    assert_eq!(start, all_tensors(&trained));
    // Without it, the same configuration starts elsewhere.
    let fresh = config(&data, 2).trainer::<B>(&train_data, &device).unwrap();
    assert_ne!(tailguard_models::testing::float_tensors(&fresh.model().valid()), start);

    // A run of it resumes once the checkpoint it started from is gone: the run's own checkpoint holds the network.
    let out = dir.path().join("tuned");
    let mut run = tuned.start_run::<B>(&out, &device, false).unwrap();
    run.run_epoch(&mut Silent).unwrap();
    drop(run);
    std::fs::remove_dir_all(&source).unwrap();
    let mut run = TrainConfig::resume_run::<B>(&out, &device).unwrap();
    run.run_epoch(&mut Silent).unwrap();
    assert!(run.finished());

    // A checkpoint of another architecture is refused, naming the key and what to set; so is a missing one.
    std::fs::create_dir_all(&source).unwrap();
    let error = tuned
        .start_run::<B>(&dir.path().join("x"), &device, false)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("model.init_from"), "{error}");
    let mut run = config(&data, 1)
        .start_run::<B>(&dir.path().join("src2"), &device, false)
        .unwrap();
    run.run_to_end(&mut Silent).unwrap();
    drop(run);
    let mut other = config(&data, 1);
    let text = other.to_toml().replace("small-cnn-2", "small-cnn-4");
    let init = format!(
        "model.init_from={}",
        serde_json::json!(dir.path().join("src2/last").display().to_string())
    );
    other = TrainConfig::parse(&text, &[init]).unwrap();
    let error = other
        .start_run::<B>(&dir.path().join("y"), &device, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("model.init_from") && error.contains("small-cnn-2") && error.contains("model.arch"),
        "{error}"
    );
}
