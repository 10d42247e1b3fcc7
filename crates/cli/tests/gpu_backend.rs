//! The GPU path, executed and compared with the CPU backend (Flex): every architecture's forward and backward pass
//! (with tailguard's BatchNorm in both modes), PGD and APGD from the same start, one training step of every method,
//! and a checkpoint written on the GPU and read on the CPU. Built only with `--features wgpu` or `--features cuda`;
//! without a GPU, wgpu runs on Mesa's lavapipe (`.ci/run` installs it), which executes the same shaders on the CPU.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::backend::Autodiff;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use tailguard_attacks::{ApgdConfig, AttackLoss, Ball, FrozenModel, PgdConfig, RandomStart};
use tailguard_flex::Flex;
use tailguard_models::{Architecture, Classifier, HeadKind, InputNormalizationConfig, Mode, Model, ModelConfig};
use tailguard_trainers::{GroupedSgd, StepInput, TrainConfig, train_step};

#[cfg(feature = "cuda")]
type Gpu = burn::backend::Cuda;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
type Gpu = burn::backend::Wgpu;
type Cpu = Flex;

/// Relative tolerance of the comparisons: GPU kernels sum in other orders and may fuse operations.
#[cfg(not(feature = "cuda"))]
const TOLERANCE: f32 = 1e-3;
/// On CUDA the products are coarser: cubek's matrix-product and convolution kernels stage f32 operands as TF32 on
/// tensor-core GPUs (10-bit mantissa; cubek-matmul 0.2, `definition/blueprint.rs`), as PyTorch's cuDNN convolutions do
/// by default. The first H200 run (2026-12-04, docs/benchmarks.md) found a convolution weight gradient 1.7 % of its
/// largest value away from the CPU's under the tolerance above; a wrong kernel is off by the order of the value itself.
#[cfg(feature = "cuda")]
const TOLERANCE: f32 = 5e-2;

/// A deterministic pseudo-random batch in [0, 1], (n, 3, 32, 32), and labels.
fn batch(n: usize, classes: usize, salt: u32) -> (Vec<f32>, Vec<i64>) {
    batch_of(n, 32, classes, salt)
}

/// As [`batch`], with `side` x `side` images.
fn batch_of(n: usize, side: usize, classes: usize, salt: u32) -> (Vec<f32>, Vec<i64>) {
    let images = (0..n * 3 * side * side)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(salt.wrapping_mul(40_503))
                >> 8;
            (x % 1000) as f32 / 999.0
        })
        .collect();
    let labels = (0..n).map(|i| (i % classes) as i64).collect();
    (images, labels)
}

fn images<B: Backend>(values: &[f32], n: usize, device: &B::Device) -> Tensor<B, 4> {
    let side = ((values.len() / n / 3) as f64).sqrt() as usize;
    Tensor::from_data(TensorData::new(values.to_vec(), [n, 3, side, side]), device)
}

fn labels<B: Backend>(values: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// How many flags are set.
fn count<B: Backend>(flags: Tensor<B, 1, burn::tensor::Bool>) -> i64 {
    use burn::tensor::ElementConversion;
    flags.int().sum().into_scalar().elem::<i64>()
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// `Err` unless `gpu` equals `cpu` within the tolerance, relative to the largest magnitude of `cpu`.
fn check_close(what: &str, cpu: &[f32], gpu: &[f32]) -> Result<(), String> {
    if cpu.len() != gpu.len() {
        return Err(format!("{what}: lengths differ"));
    }
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let (index, worst) = cpu
        .iter()
        .zip(gpu)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0f32), |best, (i, d)| if d > best.1 { (i, d) } else { best });
    if worst <= TOLERANCE * scale {
        return Ok(());
    }
    Err(format!(
        "{what}: element {index} differs by {worst} (cpu {}, gpu {}, scale {scale})",
        cpu[index], gpu[index]
    ))
}

fn assert_close(what: &str, cpu: &[f32], gpu: &[f32]) {
    if let Err(e) = check_close(what, cpu, gpu) {
        panic!("{e}");
    }
}

/// The same module on another backend, through Burn's record bytes (as a checkpoint carries it).
fn transfer<A: Backend, B: Backend, M: Module<A>, N: Module<B>>(module: &M, empty: N, device: &B::Device) -> N {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder.record(module.clone().into_record(), ()).unwrap();
    empty.load_record(recorder.load(bytes, device).unwrap())
}

#[test]
fn a_checkpoint_written_on_the_cpu_reads_back_on_the_gpu() {
    let config = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10);
    let cpu = config.init::<Cpu>(&Default::default()).unwrap();
    let gpu_device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let classes: Vec<String> = (0..10).map(|c| format!("c{c}")).collect();
    tailguard_models::save_checkpoint(
        &dir.path().join("ckpt"),
        &cpu,
        &tailguard_models::CheckpointMeta::new(config.clone(), classes),
    )
    .unwrap();
    // The checkpoint loader, into a model that has never been touched.
    let (gpu, _) = tailguard_models::load_checkpoint_into(
        &dir.path().join("ckpt"),
        config.init::<Gpu>(&gpu_device).unwrap(),
        &gpu_device,
    )
    .unwrap();
    assert_modules_close("a checkpoint loaded on the GPU", &cpu, &gpu);
}

use tailguard_models::testing::float_tensors as tensors;

/// The gradient of every trainable float tensor, in visiting order (empty for running statistics).
fn gradients<B: AutodiffBackend, M: Module<B>>(module: &M, grads: &B::Gradients) -> Vec<Vec<f32>> {
    struct Collect<'a, B: AutodiffBackend>(&'a B::Gradients, Vec<Vec<f32>>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.1.push(param.val().grad(self.0).map(host).unwrap_or_default());
        }
    }
    let mut collect = Collect::<B>(grads, Vec::new());
    module.visit(&mut collect);
    collect.1
}

fn check_modules_close<A: Backend, B: Backend>(
    what: &str,
    cpu: &impl Module<A>,
    gpu: &impl Module<B>,
) -> Result<(), String> {
    for (i, (c, g)) in tensors(cpu).iter().zip(tensors(gpu)).enumerate() {
        check_close(&format!("{what}, tensor {i}"), c, &g)?;
    }
    Ok(())
}

fn assert_modules_close<A: Backend, B: Backend>(what: &str, cpu: &impl Module<A>, gpu: &impl Module<B>) {
    if let Err(e) = check_modules_close(what, cpu, gpu) {
        panic!("{e}");
    }
}

/// Side of the images of the architecture comparison: every layer and kernel of the 32x32 networks runs, on a
/// sixteenth of the pixels (the software GPU of CI is slow).
const SIDE: usize = 8;

fn architectures() -> Vec<ModelConfig> {
    let small = Architecture::SmallCnn { width: 4 };
    let shape = [3, SIDE, SIDE];
    vec![
        ModelConfig::new(small, 10),
        ModelConfig::new(small, 10).with_head(HeadKind::ROBAL),
        ModelConfig::new(Architecture::Linear, 10),
        ModelConfig::new(Architecture::ResNet18, 10).with_normalization(Some(InputNormalizationConfig::cifar10())),
        ModelConfig::new(Architecture::PreActResNet18, 10),
        // WideResNet at reduced size: depth 10, widening 1 (the 28-10 / 34-10 kernels are the same, only more).
        ModelConfig::new(Architecture::WideResNet { depth: 10, widen: 1 }, 10),
    ]
    .into_iter()
    .map(|config| config.with_input_shape(shape))
    .collect()
}

#[test]
fn every_architecture_matches_the_cpu_forward_and_backward_in_both_modes() {
    let (cpu_device, gpu_device) = (Default::default(), Default::default());
    // Eight images: training-mode BatchNorm of the last 1x1 stage normalises over the batch alone.
    let n = 8;
    let (x, y) = batch_of(n, SIDE, 10, 1);
    for config in architectures() {
        let what = format!("{} ({:?} head)", config.arch, config.head);
        eprintln!("{what}");
        <Cpu as Backend>::seed(&cpu_device, 5);
        let cpu = config.init::<Autodiff<Cpu>>(&cpu_device).unwrap();
        let gpu = transfer(&cpu, config.init::<Autodiff<Gpu>>(&gpu_device).unwrap(), &gpu_device);
        assert_modules_close(&format!("{what} after transfer"), &cpu, &gpu);

        // Inference mode: running statistics, no update.
        let cpu_logits = cpu.forward(images(&x, n, &cpu_device), Mode::Inference);
        let gpu_logits = gpu.forward(images(&x, n, &gpu_device), Mode::Inference);
        assert_close(
            &format!("{what} inference logits"),
            &host(cpu_logits),
            &host(gpu_logits),
        );

        // Training mode: batch statistics, running statistics updated, gradients of every parameter.
        use tailguard_trainers::losses::cross_entropy as loss;
        let cpu_logits = cpu.forward(images(&x, n, &cpu_device), Mode::Train);
        let gpu_logits = gpu.forward(images(&x, n, &gpu_device), Mode::Train);
        assert_close(
            &format!("{what} training logits"),
            &host(cpu_logits.clone()),
            &host(gpu_logits.clone()),
        );
        let cpu_grads = loss(cpu_logits, labels(&y, &cpu_device)).backward();
        let gpu_grads = loss(gpu_logits, labels(&y, &gpu_device)).backward();
        for (i, (c, g)) in gradients(&cpu, &cpu_grads)
            .iter()
            .zip(gradients(&gpu, &gpu_grads))
            .enumerate()
        {
            assert_close(&format!("{what} gradient {i}"), c, &g);
        }
        assert_modules_close(
            &format!("{what} after a training-mode forward"),
            &cpu.valid(),
            &gpu.valid(),
        );
    }
}

/// A small CNN trained a few steps on the CPU, so attacks have something to break.
fn trained_small_cnn() -> Model<Autodiff<Cpu>> {
    let device = Default::default();
    <Cpu as Backend>::seed(&device, 11);
    let config = TrainConfig::parse(CONFIG, &["method.name=natural".into()]).unwrap();
    let mut model = ModelConfig::new(Architecture::SmallCnn { width: 8 }, 10)
        .init(&device)
        .unwrap();
    let mut method = config.method::<Autodiff<Cpu>, Model<_>>(&[1; 10]).unwrap();
    let mut optimizer = GroupedSgd::new(&config.sgd(), &model);
    for step in 0..20 {
        let (x, y) = batch(32, 10, step);
        let input = StepInput {
            images: images(&x, 32, &device),
            labels: labels(&y, &device),
            eps: Tensor::full([32], 8.0 / 255.0, &device),
            epoch: 0,
            start: None,
            exchange: None,
            label_smoothing: 0.0,
        };
        train_step(
            method.as_mut(),
            &mut model,
            &mut optimizer,
            &input,
            0.05,
            config.trainer_config().step_options(),
        )
        .unwrap();
    }
    model
}

/// APGD-CE on `x` (labels `y`) from the start direction `t` (values in [0, 1], mapped to [-1, 1]).
fn apgd_from<B: AutodiffBackend>(
    apgd: &ApgdConfig,
    model: &FrozenModel<B, Model<B>>,
    x: &[f32],
    t: &[f32],
    y: &[i64],
    device: &B::Device,
) -> tailguard_attacks::apgd::ApgdRun<B> {
    let n = y.len();
    apgd.run_from(
        model,
        &Ball::uniform(images(x, n, device), apgd.eps),
        images(t, n, device).mul_scalar(2.0).sub_scalar(1.0),
        AttackLoss::CrossEntropy,
        labels(y, device),
        None,
    )
}

#[test]
fn pgd_and_apgd_from_the_same_start_break_the_same_points() {
    let (cpu_device, gpu_device) = (Default::default(), Default::default());
    let cpu = trained_small_cnn();
    let gpu = transfer(
        &cpu,
        ModelConfig::new(Architecture::SmallCnn { width: 8 }, 10)
            .init::<Autodiff<Gpu>>(&gpu_device)
            .unwrap(),
        &gpu_device,
    );
    let (cpu_frozen, gpu_frozen) = (FrozenModel::new(&cpu), FrozenModel::new(&gpu));
    let n = 64;
    let (x, y) = batch(n, 10, 99);
    let pgd = PgdConfig::new().with_steps(10).with_start(RandomStart::None);
    let cpu_adv = pgd.perturb(&cpu_frozen, images(&x, n, &cpu_device), labels(&y, &cpu_device), None);
    let gpu_adv = pgd.perturb(&gpu_frozen, images(&x, n, &gpu_device), labels(&y, &gpu_device), None);
    let cpu_robust = count(cpu_frozen.correct(cpu_adv, labels(&y, &cpu_device)));
    let gpu_robust = count(gpu_frozen.correct(gpu_adv, labels(&y, &gpu_device)));
    assert_eq!(cpu_robust, gpu_robust, "PGD-10 robust points");

    let apgd = ApgdConfig::new().with_iterations(20);
    let (t, _) = batch(n, 10, 7);
    let cpu_run = apgd_from(&apgd, &cpu_frozen, &x, &t, &y, &cpu_device);
    let gpu_run = apgd_from(&apgd, &gpu_frozen, &x, &t, &y, &gpu_device);
    let cpu_robust = count(cpu_run.robust);
    let gpu_robust = count(gpu_run.robust);
    assert_eq!(cpu_robust, gpu_robust, "APGD-CE robust points");
    assert!(
        cpu_robust < n as i64,
        "the attack broke nothing: the comparison would be empty"
    );
}

const CONFIG: &str = r#"
[data]
dataset = "cifar10"
data_dir = "unused"
imbalance = 10
[model]
arch = "small-cnn-4"
[optim]
epochs = 10
lr = 0.05
schedule = { name = "constant" }
[attack]
eps = "8/255"
step_size = "2/255"
steps = 3
start = "none"
[method]
name = "natural"
"#;

#[test]
fn one_training_step_of_every_method_matches_the_cpu() {
    let (cpu_device, gpu_device) = (Default::default(), Default::default());
    let counts = [50, 30, 20, 12, 8, 5, 3, 2, 2, 1];
    let n = 16;
    let (x, y) = batch(n, 10, 3);
    let mut failures = Vec::new();
    for method in ["natural", "pgd-at", "awp", "trades", "at-bsl", "reat", "robal", "taet"] {
        let mut sets = vec![format!("method.name={method}")];
        if method == "taet" {
            sets.push("method.ce_epochs=1".into());
        }
        let config = TrainConfig::parse(CONFIG, &sets).unwrap();
        let model_config = config.model_config(10).unwrap();
        <Cpu as Backend>::seed(&cpu_device, 2);
        let mut cpu = model_config.init::<Autodiff<Cpu>>(&cpu_device).unwrap();
        let mut gpu = transfer(
            &cpu,
            model_config.init::<Autodiff<Gpu>>(&gpu_device).unwrap(),
            &gpu_device,
        );
        let mut cpu_method = config.method::<Autodiff<Cpu>, Model<_>>(&counts).unwrap();
        let mut gpu_method = config.method::<Autodiff<Gpu>, Model<_>>(&counts).unwrap();
        let mut cpu_optimizer = GroupedSgd::new(&config.sgd(), &cpu);
        let mut gpu_optimizer = GroupedSgd::new(&config.sgd(), &gpu);
        let bn = config.trainer_config().step_options();
        let epoch = 1; // TAET's adversarial stage
        // Attacks start at the clean image (the random starts of the two backends differ). TRADES' inner loss, the KL
        // to the clean prediction, has a zero gradient there, so its first PGD step follows rounding noise on any two
        // machines: it runs with a zero budget (its loss, backward and update are still compared; its PGD loop is the
        // one PGD-AT and the PGD test exercise).
        let eps = if method == "trades" { 0.0 } else { 8.0 / 255.0 };
        let cpu_input = StepInput {
            images: images(&x, n, &cpu_device),
            labels: labels(&y, &cpu_device),
            eps: Tensor::full([n], eps, &cpu_device),
            epoch,
            start: None,
            exchange: None,
            label_smoothing: 0.0,
        };
        let gpu_input = StepInput {
            images: images(&x, n, &gpu_device),
            labels: labels(&y, &gpu_device),
            eps: Tensor::full([n], eps, &gpu_device),
            epoch,
            start: None,
            exchange: None,
            label_smoothing: 0.0,
        };
        let cpu_loss = train_step(cpu_method.as_mut(), &mut cpu, &mut cpu_optimizer, &cpu_input, 0.05, bn)
            .unwrap()
            .loss;
        let gpu_loss = train_step(gpu_method.as_mut(), &mut gpu, &mut gpu_optimizer, &gpu_input, 0.05, bn)
            .unwrap()
            .loss;
        let outcome = check_close(&format!("{method} loss"), &host(cpu_loss), &host(gpu_loss))
            .and_then(|()| check_modules_close(&format!("{method} weights after one step"), &cpu, &gpu));
        eprintln!("{method}: {outcome:?}");
        failures.extend(outcome.err());
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_checkpoint_written_on_the_gpu_reads_back_on_the_cpu() {
    let gpu_device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10);
    let gpu = config.init::<Gpu>(&gpu_device).unwrap();
    let classes: Vec<String> = (0..10).map(|c| format!("c{c}")).collect();
    let path = dir.path().join("ckpt");
    tailguard_models::save_checkpoint(&path, &gpu, &tailguard_models::CheckpointMeta::new(config, classes)).unwrap();
    let (cpu, _) = tailguard_models::load_checkpoint::<Cpu>(&path, &Default::default()).unwrap();
    let (x, _) = batch(2, 10, 4);
    let gpu_logits = gpu.forward(images(&x, 2, &gpu_device), Mode::Inference);
    let cpu_logits = cpu.forward(images(&x, 2, &Default::default()), Mode::Inference);
    assert_close("logits after the round trip", &host(cpu_logits), &host(gpu_logits));
}

#[test]
fn the_program_lists_its_gpu_devices_and_refuses_a_missing_one() {
    // TAILGUARD_BIN: the program beside this binary when both were copied to a GPU machine (benches/gpu-check.sh).
    let program = std::env::var_os("TAILGUARD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_tailguard").into());
    let tailguard = |args: &[&str]| std::process::Command::new(&program).args(args).output().unwrap();
    let output = tailguard(&["devices", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let devices = listing["devices"].as_array().unwrap();
    let usable: Vec<&str> = devices
        .iter()
        .filter(|d| d["usable"] == true)
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert!(!usable.is_empty(), "no usable device in {listing}");
    // The first usable device computes; one that does not exist is refused in one line.
    let output = tailguard(&["model", "--arch", "small-cnn", "--json", "--device", usable[0]]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let missing = if cfg!(feature = "cuda") {
        "cuda:99"
    } else {
        "wgpu:discrete:99"
    };
    let output = tailguard(&["model", "--arch", "small-cnn", "--device", missing]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.starts_with("error:"), "{stderr}");
    assert!(stderr.contains(&format!("device {missing} does not exist")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
