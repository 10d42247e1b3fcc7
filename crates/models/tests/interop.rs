//! Safetensors export under PyTorch names, and import back: identical logits.

use burn::tensor::{Distribution, Tensor};
use tailguard_flex::Flex;
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
    let model = tailguard_models::import_weights(
        config.init::<Flex>(&device).unwrap(),
        Architecture::Linear,
        &path,
        Default::default(),
    )
    .unwrap();
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
    let err = tailguard_models::import_weights(wrong, Architecture::Linear, &path, Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
}

/// A torch.save-style zip named hostile.pt in `dir`.
fn torch_zip(dir: &std::path::Path, pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
    let path = dir.join("hostile.pt");
    let storages: Vec<(&str, &[u8])> = storages.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    tailguard_models::testing::write_torch_zip(&path, pickle, &storages).unwrap();
    path
}

fn linear_model() -> tailguard_models::Model<Flex> {
    ModelConfig::new(Architecture::Linear, 2)
        .with_input_shape([3, 2, 2])
        .init::<Flex>(&Default::default())
        .unwrap()
}

fn import_error(path: &std::path::Path, options: tailguard_models::ImportOptions) -> String {
    match tailguard_models::import_weights(linear_model(), Architecture::Linear, path, options) {
        Ok(_) => panic!("the import of {} must fail", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn deeply_nested_pickles_fail_cleanly_instead_of_overflowing_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    // 200,000 nested tuples: "(((...ttt" -- recursion over this would overflow the stack.
    let pickle = tailguard_models::testing::nested_tuples_pickle(200_000);
    let path = torch_zip(dir.path(), &pickle, &[]);
    let err = import_error(&path, Default::default());
    assert!(
        err.contains("nest more than 100 deep") && err.contains("hostile.pt"),
        "{err}"
    );
}

#[test]
fn memo_bombs_hit_the_work_limit_quickly() {
    let dir = tempfile::tempdir().unwrap();
    // Each level is a tuple of ten copies of the previous level: 10^9 values after nine levels.
    let pickle = tailguard_models::testing::memo_bomb_pickle(9);
    let path = torch_zip(dir.path(), &pickle, &[]);
    let start = std::time::Instant::now();
    let err = import_error(&path, Default::default());
    assert!(err.contains("values (memo copies included)"), "{err}");
    assert!(start.elapsed().as_secs() < 20, "the limit must stop the work early");
}

#[test]
fn code_in_a_pickle_is_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let command = format!("touch {}", marker.display());
    // os.system("touch ...") through GLOBAL + REDUCE.
    let mut pickle = b"\x80\x02cos\nsystem\nX".to_vec();
    pickle.extend((command.len() as u32).to_le_bytes());
    pickle.extend(command.as_bytes());
    pickle.extend(b"\x85R.");
    let path = torch_zip(dir.path(), &pickle, &[]);
    let err = import_error(&path, Default::default());
    assert!(err.contains("not a dictionary"), "{err}");
    assert!(!marker.exists(), "the pickle's command ran");
}

/// A pickle of `{name: tensor}` for float32 storages, as torch.save writes it (protocol 2 opcodes).
fn state_dict_pickle(tensors: &[(&str, &str, &[usize], &str)]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    let text = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    };
    for (name, key, shape, storage) in tensors {
        text(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        // persistent id ('storage', torch.<Storage>, key, 'cpu', numel)
        p.push(b'(');
        text(&mut p, "storage");
        p.extend(format!("ctorch\n{storage}\n").as_bytes());
        text(&mut p, key);
        text(&mut p, "cpu");
        p.extend([b'K', 1, b't', b'Q']);
        p.extend([b'K', 0, b'(']);
        for d in *shape {
            p.extend(b"J");
            p.extend((*d as i32).to_le_bytes());
        }
        p.push(b't');
        p.push(b'(');
        let mut stride = 1;
        let mut strides = vec![0; shape.len()];
        for (i, d) in shape.iter().enumerate().rev() {
            strides[i] = stride;
            stride *= d;
        }
        for s in strides {
            p.extend(b"J");
            p.extend((s as i32).to_le_bytes());
        }
        p.extend([b't', 0x89, b')', b't', b'R']);
    }
    p.extend([b'u', b'.']);
    p
}

fn floats(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn imports_refuse_non_finite_unknown_and_mistyped_tensors_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let weight = ("head.weight", "0", &[2usize, 12][..], "FloatStorage");
    let bias = ("head.bias", "1", &[2usize][..], "FloatStorage");
    let good_weight = floats((0..24).map(|i| i as f32 * 0.01));
    let nan_bias = floats([f32::NAN, 1.0]);
    let path = torch_zip(
        dir.path(),
        &state_dict_pickle(&[weight, bias]),
        &[("0", good_weight.clone()), ("1", nan_bias)],
    );
    let err = import_error(&path, Default::default());
    assert!(
        err.contains("head.bias holds 1 non-finite") && err.contains("ImportOptions::allow_non_finite"),
        "{err}"
    );
    let allowed = tailguard_models::ImportOptions {
        allow_non_finite: true,
        ..Default::default()
    };
    tailguard_models::import_weights(linear_model(), Architecture::Linear, &path, allowed).unwrap();

    // An extra tensor is refused by name, and dropped only on request.
    let extra = ("features.0.weight", "2", &[3usize][..], "FloatStorage");
    let path = torch_zip(
        dir.path(),
        &state_dict_pickle(&[weight, bias, extra]),
        &[
            ("0", good_weight.clone()),
            ("1", floats([0.5, -0.25])),
            ("2", floats([1.0; 3])),
        ],
    );
    let err = import_error(&path, Default::default());
    assert!(
        err.contains("features.0.weight") && err.contains("ImportOptions::drop_unknown"),
        "{err}"
    );
    let dropped = tailguard_models::ImportOptions {
        drop_unknown: true,
        ..Default::default()
    };
    tailguard_models::import_weights(linear_model(), Architecture::Linear, &path, dropped).unwrap();

    // An integer tensor where a float is expected is named as a dtype mismatch, not as missing.
    let long_bias = ("head.bias", "1", &[2usize][..], "LongStorage");
    let path = torch_zip(
        dir.path(),
        &state_dict_pickle(&[weight, long_bias]),
        &[("0", good_weight.clone()), ("1", vec![0u8; 16])],
    );
    let err = import_error(&path, Default::default());
    assert!(err.contains("head.bias has dtype I64"), "{err}");

    // A shape whose extent overflows, and a storage shorter than its tensor.
    let huge = ("head.weight", "0", &[1usize << 30, 1 << 30][..], "FloatStorage");
    let path = torch_zip(
        dir.path(),
        &state_dict_pickle(&[huge, bias]),
        &[("0", good_weight.clone()), ("1", floats([0.0; 2]))],
    );
    let err = import_error(&path, Default::default());
    assert!(err.contains("too large") || err.contains("too short"), "{err}");
    let path = torch_zip(
        dir.path(),
        &state_dict_pickle(&[weight, bias]),
        &[("0", floats([1.0; 4])), ("1", floats([0.0; 2]))],
    );
    let err = import_error(&path, Default::default());
    assert!(err.contains("storage 0 is too short"), "{err}");
}

#[test]
fn safetensors_exports_name_their_producer_and_bad_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    export_safetensors(&linear_model(), Architecture::Linear, &path).unwrap();
    assert!(tailguard_models::written_by_tailguard(&path));
    // An offset past the end of the file.
    let header = br#"{"head.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,4000000000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend([0u8; 8]);
    std::fs::write(&path, &bytes).unwrap();
    let err = import_error(&path, Default::default());
    assert!(err.contains("is not a safetensors file"), "{err}");
    assert!(!tailguard_models::written_by_tailguard(&path));
    // A header length larger than the file.
    std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
    assert!(import_error(&path, Default::default()).contains("is not a safetensors file"));
}
