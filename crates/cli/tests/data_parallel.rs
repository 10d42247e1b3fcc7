//! `tailguard train` data-parallel across processes: two nodes on 127.0.0.1 (burn-collective's global mode, with
//! `tailguard orchestrate`) train what one process trains; a node that dies makes the other stop with an error
//! within the peer timeout, its last checkpoint intact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use tailguard_flex::Flex;
use tailguard_longtail::{CifarVariant, ImageDataset, ImageShape, write_cifar_archive};

fn tailguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailguard"))
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the process when dropped, so a failing test leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_data_and_config(dir: &Path, epochs: usize) -> PathBuf {
    let make = |per_class: usize, offset: usize| {
        let n = per_class * 10;
        let pixels = (0..n * 3072)
            .map(|p| (((p / 3072) % 10 * 20 + (p * 7 + p / 3072 * 13 + offset) % 50) % 256) as u8)
            .collect();
        let labels = (0..n).map(|i| i % 10).collect();
        let classes = (0..10).map(|c| format!("class{c}")).collect();
        ImageDataset::new(pixels, labels, classes, ImageShape::CIFAR).unwrap()
    };
    let archive = dir.join("tiny.tar.gz");
    write_cifar_archive(&archive, &make(12, 0), &make(2, 5), CifarVariant::Cifar10).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
seed = 11
[data]
dataset = "cifar10"
data_dir = "{}"
imbalance = 2.0
[model]
arch = "linear"
[optim]
epochs = {epochs}
batch_size = 20
lr = 0.05
schedule = {{ name = "multi-step", milestones = [1], gamma = 0.5 }}
[attack]
eps = "8/255"
step_size = "2/255"
steps = 2
start = "none"
[method]
name = "taet"
ce_epochs = 1
"#,
            archive.display()
        ),
    )
    .unwrap();
    config
}

/// Node `rank` of a two-node run (one CPU device each); node 0 writes into `out`.
fn node(config: &Path, rank: usize, orchestrator: u16, out: Option<&Path>, timeout: &str) -> Running {
    let mut command = tailguard();
    command.args(["train", "--config"]).arg(config);
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    command
        .args(["--devices", "cpu:0", "--nodes", "2", "--node-rank", &rank.to_string()])
        .args(["--orchestrator", &format!("ws://127.0.0.1:{orchestrator}")])
        .args(["--node-address", &format!("ws://127.0.0.1:{}", free_port())])
        .args(["--peer-timeout", timeout, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Running(command.spawn().unwrap())
}

fn orchestrator() -> (Running, u16) {
    let port = free_port();
    let child = tailguard()
        .args(["orchestrate", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It listens within moments; nodes connecting before that would fail.
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the orchestrator did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Running(child), port)
}

/// Waits for `node` to exit within `limit`; its output.
fn finish(node: Running, limit: Duration) -> Output {
    let mut node = node;
    let start = Instant::now();
    loop {
        if node.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(start.elapsed() < limit, "the node did not stop within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let child = std::mem::replace(&mut node.0, tailguard().arg("--version").spawn().unwrap());
    child.wait_with_output().unwrap()
}

fn checkpoint_weights(dir: &Path) -> Vec<f32> {
    struct Flatten(Vec<f32>);
    impl ModuleVisitor<Flex> for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0
                .extend(param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
        }
    }
    let (model, _) = tailguard_models::load_checkpoint::<Flex>(dir, &Default::default()).unwrap();
    let mut flat = Flatten(Vec::new());
    model.visit(&mut flat);
    flat.0
}

#[test]
fn two_nodes_on_localhost_train_what_one_process_trains() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_data_and_config(dir.path(), 2);
    let alone = tailguard()
        .args(["train", "--json", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("alone"))
        .output()
        .unwrap();
    assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stderr));

    let (_orchestrator, port) = orchestrator();
    let out = dir.path().join("two-nodes");
    let writer = node(&config, 0, port, Some(&out), "120");
    let other = node(&config, 1, port, None, "120");
    let writer = finish(writer, Duration::from_secs(240));
    let other = finish(other, Duration::from_secs(60));
    assert!(
        writer.status.success(),
        "node 0: {}",
        String::from_utf8_lossy(&writer.stderr)
    );
    assert!(
        other.status.success(),
        "node 1: {}",
        String::from_utf8_lossy(&other.stderr)
    );
    // Node 1 wrote nothing; node 0 wrote the run.
    assert!(out.join("last").is_dir());
    let a = checkpoint_weights(&dir.path().join("alone/last"));
    let b = checkpoint_weights(&out.join("last"));
    let difference = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(difference < 1e-5, "weights differ by {difference}");
    // Both epochs logged, by node 0 only, with the single process's losses.
    let lines = |d: &Path| std::fs::read_to_string(d.join("log.jsonl")).unwrap();
    let loss = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let (one, two) = (lines(&dir.path().join("alone")), lines(&out));
    assert_eq!(two.lines().count(), 2);
    // The epoch's mean loss is large here (about 36: a tiny model under attack); the nodes' half-batches go through
    // other product tiles than the whole batch, so it agrees to rounding relative to its size, not to 1e-5 absolute.
    for (x, y) in one.lines().zip(two.lines()) {
        assert!((loss(x) - loss(y)).abs() <= 1e-5 * loss(x).abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn a_node_that_dies_stops_the_other_within_the_timeout_and_the_checkpoint_survives() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_data_and_config(dir.path(), 100_000);
    let (_orchestrator, port) = orchestrator();
    let out = dir.path().join("run");
    let writer = node(&config, 0, port, Some(&out), "5");
    let mut other = node(&config, 1, port, None, "5");
    // Once node 0 has a checkpoint, node 1 dies without a word.
    let start = Instant::now();
    while std::fs::read_to_string(out.join("log.jsonl")).map_or(0, |l| l.lines().count()) < 2 {
        assert!(start.elapsed() < Duration::from_secs(120), "no epoch finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    other.0.kill().unwrap();
    let killed = Instant::now();
    let writer = finish(writer, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&writer.stderr);
    assert!(!writer.status.success());
    assert!(stderr.contains("data-parallel"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        killed.elapsed() < Duration::from_secs(45),
        "stopped after {:?}",
        killed.elapsed()
    );
    // The last checkpoint is complete: a single process resumes from it.
    let resumed =
        tailguard_trainers::TrainConfig::resume_run::<burn::backend::Autodiff<Flex>>(&out, &Default::default());
    let run = resumed.map_err(|e| tailguard_trainers::chain(&e)).unwrap();
    assert!(run.trainer.next_epoch >= 2);
}
