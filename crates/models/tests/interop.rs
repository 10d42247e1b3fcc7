//! Safetensors export under PyTorch names, and import back: identical logits.

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use tailguard_models::{
    Architecture, Classifier, Mode, ModelConfig, export_safetensors, import_safetensors, read_safetensors,
};

fn round_trip(arch: Architecture) -> Vec<String> {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    let config = ModelConfig::new(arch, 10);
    let model = config.init::<Flex>(&device).unwrap();
    let x = Tensor::<Flex, 4>::random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
    let _ = model.forward(x.clone(), Mode::Train); // non-trivial BatchNorm statistics
    let expected = model.forward(x.clone(), Mode::Inference);
    export_safetensors(&model, arch, &path).unwrap();
    let fresh = config.init::<Flex>(&device).unwrap();
    let loaded = import_safetensors(fresh, arch, &path).unwrap();
    loaded
        .forward(x, Mode::Inference)
        .into_data()
        .assert_eq(&expected.into_data(), true);
    read_safetensors(&path).unwrap().keys().cloned().collect()
}

#[test]
fn resnet18_uses_pytorch_names_and_round_trips() {
    let names = round_trip(Architecture::ResNet18);
    for name in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer2.0.shortcut.0.weight",
        "layer2.0.shortcut.1.running_mean",
        "layer4.1.bn2.bias",
        "linear.weight",
        "linear.bias",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
    // 62 parameter tensors and 20 BatchNorms x 2 statistics (num_batches_tracked is an integer, not listed here).
    assert_eq!(names.len(), 62 + 40);
}

#[test]
fn preact_and_wide_resnets_use_pytorch_names_and_round_trip() {
    let names = round_trip(Architecture::PreActResNet18);
    for name in [
        "conv1.weight",
        "layer3.0.shortcut.0.weight",
        "bn.running_mean",
        "linear.weight",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing");
    }
    let names = round_trip(Architecture::WideResNet { depth: 10, widen: 1 });
    for name in [
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block2.layer.0.convShortcut.weight",
        "bn1.running_var",
        "fc.weight",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
    round_trip(Architecture::SmallCnn { width: 4 });
    round_trip(Architecture::Linear);
}

#[test]
fn linear_weights_are_stored_as_pytorch_out_by_in() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let model = ModelConfig::new(Architecture::ResNet18, 10)
        .init::<Flex>(&device)
        .unwrap();
    export_safetensors(&model, Architecture::ResNet18, &path).unwrap();
    let tensors = read_safetensors(&path).unwrap();
    assert_eq!(tensors["linear.weight"].0, vec![10, 512]);
    assert_eq!(tensors["conv1.weight"].0, vec![64, 3, 3, 3]);
}

#[test]
fn mismatched_weights_are_a_clear_error() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let small = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10)
        .init::<Flex>(&device)
        .unwrap();
    export_safetensors(&small, Architecture::SmallCnn { width: 4 }, &path).unwrap();
    let other = ModelConfig::new(Architecture::SmallCnn { width: 8 }, 10)
        .init::<Flex>(&device)
        .unwrap();
    let err = import_safetensors(other, Architecture::SmallCnn { width: 8 }, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
    std::fs::write(&path, b"nonsense").unwrap();
    let fresh = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10)
        .init::<Flex>(&device)
        .unwrap();
    let err = import_safetensors(fresh, Architecture::SmallCnn { width: 4 }, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a safetensors file"), "{err}");
}

#[test]
fn torch_save_files_are_read_without_pytorch() {
    // fixtures/linear.pt comes from fixtures/make_torch_file.py: torch.save's zip layout and pickle opcodes.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linear.pt");
    let device = Default::default();
    let config = ModelConfig::new(Architecture::Linear, 2).with_input_shape([3, 2, 2]);
    let model =
        tailguard_models::import_weights(config.init::<Flex>(&device).unwrap(), Architecture::Linear, &path).unwrap();
    // Input all ones: logit_k = sum_i w[k][i] + b[k], with w[k][i] = 0.01 (12 k + i).
    let x = Tensor::<Flex, 4>::ones([1, 3, 2, 2], &device);
    let logits: Vec<f32> = model.forward(x, Mode::Inference).into_data().to_vec().unwrap();
    let expected = [
        0.01 * (0..12).sum::<i32>() as f32 + 0.5,
        0.01 * (12..24).sum::<i32>() as f32 - 0.25,
    ];
    for (a, b) in logits.iter().zip(expected) {
        assert!((a - b).abs() < 1e-5, "{logits:?} vs {expected:?}");
    }
    // The same weights through the wrong architecture: a clear error.
    let wrong = ModelConfig::new(Architecture::Linear, 3)
        .with_input_shape([3, 2, 2])
        .init::<Flex>(&device)
        .unwrap();
    let err = tailguard_models::import_weights(wrong, Architecture::Linear, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
}
