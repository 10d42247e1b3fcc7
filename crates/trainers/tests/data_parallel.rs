//! Data-parallel training on several Flex devices (one thread each, burn-collective) against one device: the same
//! global batches give the same weights, for PGD-AT and for TAET (whose HARL needs the global batch's class
//! statistics). The model has no batch statistics, the attack starts at the clean image (per-device random starts
//! and per-device BatchNorm are the documented differences).
//!
//! Summing the gradients over devices rounds differently from one device's batch sum, so the weights differ by
//! rounding (about 3e-8 here) from the first step; a sign-gradient attack can turn such a difference into one
//! flipped pixel step (the parity tests meet the same effect). With eps 8/255 and steps of 2/255 one such flip moved
//! the weights of the 4-device PGD-AT run by 2.6e-5; the budget here (steps of 0.25/255) keeps any flip's effect
//! below 3e-6, under the 1e-5 tolerance, while a wrong shard, gradient share or reduction moves them by far more.

use std::path::Path;

use burn::backend::Autodiff;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use tailguard_flex::Flex;
use tailguard_models::Model;
use tailguard_trainers::{
    DataParallelConfig, EpochRecord, Replica, Run, Silent, TrainConfig, chain, train_data_parallel,
};

use crate::common::tiny_archive;

type B = Autodiff<Flex>;

fn config(data: &Path, method: &str, batch_size: usize) -> TrainConfig {
    let text = format!(
        r#"
seed = 7
[data]
dataset = "cifar10"
data_dir = "{}"
imbalance = 2.0
[model]
arch = "linear"
[optim]
epochs = 2
batch_size = {batch_size}
lr = 0.05
schedule = {{ name = "multi-step", milestones = [1], gamma = 0.5 }}
[attack]
eps = "1/255"
step_size = "0.25/255"
steps = 3
start = "none"
[method]
{method}
"#,
        data.display()
    );
    TrainConfig::parse(&text, &[]).unwrap()
}

fn weights(model: &Model<B>) -> Vec<f32> {
    struct Flatten(Vec<f32>);
    impl ModuleVisitor<B> for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .extend(param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
        }
    }
    let mut flat = Flatten(Vec::new());
    model.visit(&mut flat);
    flat.0
}

/// Trains `config` on one device; its weights and log.
fn alone(config: &TrainConfig, out: &Path) -> (Vec<f32>, Vec<EpochRecord>) {
    let mut run = config.start_run::<B>(out, &Default::default(), false).unwrap();
    let records = run.run_to_end(&mut Silent).unwrap();
    (weights(run.trainer.model()), records)
}

/// Trains `config` on `devices` Flex devices of this process.
fn data_parallel(config: &TrainConfig, out: &Path, devices: usize) -> Result<Run<B, Model<B>>, String> {
    let run = config.start_run::<B>(out, &Default::default(), false).unwrap();
    let followers = config.trainers::<B>(&vec![Default::default(); devices - 1]).unwrap();
    let mut replicas = vec![Replica::Writer {
        run,
        observer: Box::new(Silent),
    }];
    replicas.extend(followers.into_iter().map(Replica::Follower));
    let layout = DataParallelConfig::new()
        .with_local_devices(devices)
        .with_peer_timeout_seconds(60.0);
    train_data_parallel(&layout, replicas)
        .map(|run| run.expect("this process holds the writer"))
        .map_err(|e| chain(&e))
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_equal_to_one_device(method: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    // A batch size whose last batch still has an image for each of 4 devices (a smaller one would be skipped).
    let images: usize = config(&data, method, 20).load_data().unwrap().counts.iter().sum();
    let batch_size = (16..32).find(|&b| images.is_multiple_of(b) || images % b >= 4).unwrap();
    let config = config(&data, method, batch_size);
    let (reference, reference_log) = alone(&config, &dir.path().join("alone"));
    let initial = {
        let fresh = config
            .start_run::<B>(&dir.path().join("fresh"), &Default::default(), false)
            .unwrap();
        weights(fresh.trainer.model())
    };
    assert!(
        max_difference(&reference, &initial) > 1e-3,
        "{method}: training moved the weights"
    );
    for devices in [2, 4] {
        let run = data_parallel(&config, &dir.path().join(format!("dp{devices}")), devices).unwrap();
        let got = weights(run.trainer.model());
        let difference = max_difference(&reference, &got);
        let largest = reference.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        assert!(
            difference < 1e-5,
            "{method} on {devices} devices: weights differ by {difference} (largest weight {largest})"
        );
        // The log describes the whole epoch on every device: the same loss and accuracies as one device's.
        let log = std::fs::read_to_string(run.dir().join("log.jsonl")).unwrap();
        let records: Vec<EpochRecord> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(records.len(), reference_log.len());
        for (a, b) in records.iter().zip(&reference_log) {
            let tolerance = 1e-5 * b.loss.abs().max(1.0);
            assert!(
                (a.loss - b.loss).abs() < tolerance,
                "{method}: loss {} vs {}",
                a.loss,
                b.loss
            );
            assert_eq!(a.clean_accuracy, b.clean_accuracy);
            assert_eq!(a.adversarial_accuracy, b.adversarial_accuracy);
            assert_eq!(a.stage, b.stage);
        }
    }
}

#[test]
fn pgd_at_on_two_and_four_devices_equals_one_device() {
    let _serial = crate::serial();
    check_equal_to_one_device("name = \"pgd-at\"");
}

#[test]
fn taet_on_two_and_four_devices_equals_one_device() {
    let _serial = crate::serial();
    // One clean epoch, then HARL over the global batch's class statistics.
    check_equal_to_one_device("name = \"taet\"\nce_epochs = 1");
}

#[test]
fn harl_on_local_statistics_would_differ() {
    let _serial = crate::serial();
    // What the global statistics are for: HARL of the shards' own class means is not HARL of the batch.
    use tailguard_trainers::losses::{AbsentClasses, harl};
    let device = Default::default();
    let losses = Tensor::<Flex, 1>::from_floats([1.0, 4.0, 2.0, 0.5], &device);
    let labels = Tensor::<Flex, 1, burn::tensor::Int>::from_ints([0, 0, 1, 0], &device);
    let scalar = |t: Tensor<Flex, 1>| t.into_scalar() as f64;
    let whole = scalar(harl(
        losses.clone(),
        labels.clone(),
        2,
        [0.1, 0.1, 0.1],
        AbsentClasses::Zero,
    ));
    let halves = 0.5
        * (scalar(harl(
            losses.clone().narrow(0, 0, 2),
            labels.clone().narrow(0, 0, 2),
            2,
            [0.1; 3],
            AbsentClasses::Zero,
        )) + scalar(harl(
            losses.narrow(0, 2, 2),
            labels.narrow(0, 2, 2),
            2,
            [0.1; 3],
            AbsentClasses::Zero,
        )));
    assert!((whole - halves).abs() > 1e-3, "{whole} vs {halves}");
}

#[test]
fn a_device_that_fails_stops_the_others_with_its_error() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let config = config(&data, "name = \"pgd-at\"", 20);
    // The follower is built with another batch size: it must refuse device 0's state, and device 0, already
    // waiting for gradients, must stop too instead of hanging.
    let other = self::config(&data, "name = \"pgd-at\"", 10);
    let run = config
        .start_run::<B>(&dir.path().join("run"), &Default::default(), false)
        .unwrap();
    let follower = other.trainers::<B>(&[Default::default()]).unwrap().pop().unwrap();
    let layout = DataParallelConfig::new()
        .with_local_devices(2)
        .with_peer_timeout_seconds(60.0);
    let start = std::time::Instant::now();
    let error = train_data_parallel(
        &layout,
        vec![
            Replica::Writer {
                run,
                observer: Box::new(Silent),
            },
            Replica::Follower(follower),
        ],
    )
    .map(|_| ())
    .unwrap_err();
    let message = chain(&error);
    assert!(
        message.contains("every device and node must run the same configuration"),
        "{message}"
    );
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
    // The run folder holds no half-written checkpoint.
    assert!(!dir.path().join("run/last").exists());
    // A later run in the same process works: the failed session was cleared.
    let run = data_parallel(&config, &dir.path().join("again"), 2);
    assert!(run.is_ok(), "{:?}", run.err());
}

#[test]
fn a_layout_without_the_writer_is_refused() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let config = config(&data, "name = \"pgd-at\"", 20);
    let followers = config.trainers::<B>(&[Default::default(), Default::default()]).unwrap();
    let layout = DataParallelConfig::new().with_local_devices(2);
    let error = train_data_parallel(&layout, followers.into_iter().map(Replica::Follower).collect())
        .map(|_| ())
        .unwrap_err();
    assert!(
        chain(&error).contains("device 0 of the run is not the writer"),
        "{}",
        chain(&error)
    );
}

#[test]
fn a_data_parallel_run_resumes_where_it_stopped() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let images: usize = config(&data, "name = \"pgd-at\"", 20)
        .load_data()
        .unwrap()
        .counts
        .iter()
        .sum();
    let batch_size = (16..32).find(|&b| images.is_multiple_of(b) || images % b >= 2).unwrap();
    let two_epochs = config(&data, "name = \"taet\"\nce_epochs = 1", batch_size);
    // The reference is the same two devices without the stop: bit for bit what a resume must reproduce. (Against one
    // device the sums over shards round differently, and PGD's sign steps can turn that rounding into a visible
    // difference on CPUs whose matrix kernels block the sums otherwise; `check_equal_to_one_device` covers that
    // comparison where it holds.)
    let reference = weights(
        data_parallel(&two_epochs, &dir.path().join("uninterrupted"), 2)
            .unwrap()
            .trainer
            .model(),
    );
    // One epoch on two devices, then the run's configuration extended to two epochs and resumed on two devices:
    // the second epoch starts from the checkpoint's weights, momentum and epoch on every device.
    let mut one_epoch = two_epochs.clone();
    one_epoch.optim.epochs = 1;
    let out = dir.path().join("dp");
    data_parallel(&one_epoch, &out, 2).unwrap();
    let text = std::fs::read_to_string(out.join("config.toml")).unwrap();
    std::fs::write(
        out.join("config.toml"),
        text.replace("\nepochs = 1\n", "\nepochs = 2\n"),
    )
    .unwrap();
    let run = TrainConfig::resume_run::<B>(&out, &Default::default()).unwrap();
    assert_eq!(run.trainer.next_epoch, 1);
    let followers = two_epochs.trainers::<B>(&[Default::default()]).unwrap();
    let mut replicas = vec![Replica::Writer {
        run,
        observer: Box::new(Silent),
    }];
    replicas.extend(followers.into_iter().map(Replica::Follower));
    let layout = DataParallelConfig::new()
        .with_local_devices(2)
        .with_peer_timeout_seconds(60.0);
    let run = train_data_parallel(&layout, replicas).unwrap().unwrap();
    let difference = max_difference(&reference, &weights(run.trainer.model()));
    assert!(difference == 0.0, "resumed data-parallel run differs by {difference}");
    assert_eq!(
        std::fs::read_to_string(out.join("log.jsonl")).unwrap().lines().count(),
        2
    );
}

#[test]
fn a_data_parallel_run_keeps_one_average_and_saves_it() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_archive(dir.path());
    let mut config = config(&data, "name = \"pgd-at\"", 16);
    config.ema = Some(tailguard_trainers::config::EmaSection {
        decay: 0.9,
        warmup: true,
    });
    let run = data_parallel(&config, &dir.path().join("dp"), 2).unwrap();
    // Device 0 averages after every global step: as many updates as a run alone takes steps.
    let steps = (run.trainer.steps_per_epoch() * run.trainer.epochs()) as u64;
    let average = run.trainer.average().expect("device 0 keeps the average");
    assert_eq!(average.updates(), steps);
    let meta = tailguard_models::read_checkpoint_meta(&dir.path().join("dp/last")).unwrap();
    assert_eq!(meta.average.map(|a| a.updates), Some(steps));
    assert!(dir.path().join("dp/last/average.mpk").is_file());
}
