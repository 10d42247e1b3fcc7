use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::tensor::{Distribution, Tensor, TensorData};
use tailguard_flex::Flex;
use tailguard_models::{
    Architecture, CheckpointMeta, Classifier, InputNormalizationConfig, Mode, ModelConfig, load_checkpoint,
    read_checkpoint_meta, save_checkpoint, trainable_parameter_count,
};

type B = Autodiff<Flex>;
type Inner = Flex;

fn params(arch: Architecture) -> usize {
    trainable_parameter_count(&ModelConfig::new(arch, 10).init::<Inner>(&Default::default()).unwrap())
}

#[test]
fn parameter_counts_match_pytorch_references() {
    assert_eq!(params(Architecture::ResNet18), 11_173_962);
    assert_eq!(params(Architecture::PreActResNet18), 11_172_170);
    assert_eq!(params(Architecture::WideResNet { depth: 28, widen: 10 }), 36_479_194);
    assert_eq!(params(Architecture::WideResNet { depth: 34, widen: 10 }), 46_160_474);
    // Linear on 3x32x32: 3072 * 10 weights + 10 biases.
    assert_eq!(params(Architecture::Linear), 30_730);
}

#[test]
fn every_architecture_gives_logits_of_the_right_shape() {
    let device = Default::default();
    for arch in ["resnet18", "preact-resnet18", "wrn-10-1", "small-cnn", "linear"] {
        let arch: Architecture = arch.parse().unwrap();
        let model = ModelConfig::new(arch, 7).init::<Inner>(&device).unwrap();
        let x = Tensor::<Inner, 4>::random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
        assert_eq!(model.forward(x.clone(), Mode::Train).dims(), [2, 7], "{arch}");
        assert_eq!(model.forward(x, Mode::Inference).dims(), [2, 7], "{arch}");
    }
}

#[test]
fn architecture_names_round_trip_and_reject_nonsense() {
    for name in [
        "resnet18",
        "preact-resnet18",
        "wrn-28-10",
        "wrn-34-10",
        "small-cnn",
        "small-cnn-8",
        "linear",
    ] {
        let arch: Architecture = name.parse().unwrap();
        assert_eq!(arch.to_string(), name);
    }
    assert_eq!(
        "wrn-27-10".parse::<Architecture>(),
        Err(tailguard_models::ModelConfigError::WideResNetDepth(27))
    );
    let unknown = "vgg".parse::<Architecture>().unwrap_err().to_string();
    assert!(unknown.contains("unknown architecture 'vgg'"), "{unknown}");
    assert!(
        ModelConfig::new(Architecture::Linear, 0)
            .init::<Inner>(&Default::default())
            .is_err()
    );
}

fn running_stats(model: &tailguard_models::Model<B>) -> Vec<f32> {
    // Running statistics are not parameters; read them from the record.
    let record = model.clone().into_record();
    let bytes = burn::record::Recorder::<B>::record(
        &burn::record::NamedMpkBytesRecorder::<burn::record::FullPrecisionSettings>::new(),
        record,
        (),
    )
    .unwrap();
    bytes.iter().map(|&b| b as f32).collect()
}

fn warmed_up_model(device: &burn::tensor::Device<B>) -> tailguard_models::Model<B> {
    let model = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 5)
        .with_normalization(Some(InputNormalizationConfig::cifar10()))
        .init::<B>(device)
        .unwrap();
    // A few training-mode passes move the running statistics away from (0, 1).
    for seed in 0..3 {
        let x = Tensor::<B, 4>::random([8, 3, 16, 16], Distribution::Normal(0.5 + seed as f64, 0.3), device);
        let _ = model.forward(x, Mode::Train);
    }
    model
}

#[test]
fn training_mode_updates_running_statistics() {
    let device = Default::default();
    let model = ModelConfig::new(Architecture::SmallCnn { width: 2 }, 3)
        .init::<B>(&device)
        .unwrap();
    let before = running_stats(&model);
    let x = Tensor::<B, 4>::random([4, 3, 8, 8], Distribution::Uniform(0.0, 1.0), &device);
    let _ = model.forward(x, Mode::Train);
    assert_ne!(running_stats(&model), before);
}

#[test]
fn batch_norm_training_matches_pytorch_arithmetic() {
    use tailguard_models::ModalBatchNormConfig;
    let device = Default::default();
    let bn = ModalBatchNormConfig::new(1).init::<B>(&device);
    // One channel, values 1, 2, 3, 6: mean 3, biased variance 3.5, unbiased 14/3.
    let x = Tensor::<B, 4>::from_data(TensorData::new(vec![1f32, 2., 3., 6.], [1, 1, 2, 2]), &device);
    let y = bn.forward(x, Mode::Train);
    let expected: Vec<f32> = [1f32, 2., 3., 6.]
        .iter()
        .map(|v| (v - 3.0) / (3.5f32 + 1e-5).sqrt())
        .collect();
    let got: Vec<f32> = y.into_data().to_vec().unwrap();
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
    }
    let mean: Vec<f32> = bn.running_mean.value_sync().into_data().to_vec().unwrap();
    let var: Vec<f32> = bn.running_var.value_sync().into_data().to_vec().unwrap();
    assert!((mean[0] - 0.3).abs() < 1e-6, "{mean:?}");
    assert!((var[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-5, "{var:?}");
}

/// One BatchNorm pass (then a ReLU when `relu`) on backend `A` and a weighted sum's gradients: the output, the input,
/// scale and shift gradients, and the running statistics after it.
fn batch_norm_pass<A: burn::tensor::backend::AutodiffBackend>(
    x: &TensorData,
    weights: &TensorData,
    mode: Mode,
    relu: bool,
) -> [Vec<f32>; 6] {
    use burn::module::Param;
    use tailguard_models::ModalBatchNormConfig;
    let device = Default::default();
    let channels = x.shape[1];
    let mut bn = ModalBatchNormConfig::new(channels).init::<A>(&device);
    let affine = |offset: f32| {
        (0..channels)
            .map(|c| offset + 0.37 * c as f32 - 0.5)
            .collect::<Vec<f32>>()
    };
    bn.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(affine(1.2), [channels]), &device));
    bn.beta = Param::from_tensor(Tensor::from_data(TensorData::new(affine(0.1), [channels]), &device));
    // Running statistics away from (0, 1), so inference mode's folded scale and shift are not the affine alone.
    let statistic = |offset: f32| TensorData::new(affine(offset).iter().map(|v| v.abs()).collect(), [channels]);
    bn.running_mean = burn::module::RunningState::new(Tensor::from_data(statistic(0.3), &device));
    bn.running_var = burn::module::RunningState::new(Tensor::from_data(statistic(0.8), &device));
    let x = Tensor::<A, 4>::from_data(x.clone(), &device).require_grad();
    let y = if relu {
        bn.forward_relu(x.clone(), mode)
    } else {
        bn.forward(x.clone(), mode)
    };
    let grads = (y.clone() * Tensor::from_data(weights.clone(), &device))
        .sum()
        .backward();
    let values = |data: TensorData| data.to_vec::<f32>().unwrap();
    [
        values(y.into_data()),
        values(x.grad(&grads).unwrap().into_data()),
        values(bn.gamma.grad(&grads).unwrap().into_data()),
        values(bn.beta.grad(&grads).unwrap().into_data()),
        values(bn.running_mean.value_sync().into_data()),
        values(bn.running_var.value_sync().into_data()),
    ]
}

#[test]
fn fused_batch_norm_matches_its_composition_from_tensor_operations() {
    use tailguard_flex::batch_norm::batch_norm_on_batch;
    type Composed = Autodiff<burn_flex::Flex>;
    type Checkpointed = Autodiff<Flex, burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing>;
    let device = Default::default();
    // The fused operation is taken on tailguard's backend and not on the published one.
    let probe = |n: usize| Tensor::<B, 1>::ones([n], &device);
    let x = Tensor::<B, 4>::ones([1, 2, 1, 1], &device);
    assert!(batch_norm_on_batch(x, probe(2), probe(2), 1e-5, false).is_ok());
    let x = Tensor::<Composed, 4>::ones([1, 2, 1, 1], &device);
    let ones = Tensor::<Composed, 1>::ones([2], &device);
    assert!(batch_norm_on_batch(x, ones.clone(), ones, 1e-5, false).is_err());
    // Nor with one scale too few (the composition reports the shapes).
    let x = Tensor::<B, 4>::ones([1, 2, 1, 1], &device);
    assert!(batch_norm_on_batch(x, probe(1), probe(2), 1e-5, false).is_err());

    let mut seed = 11u64;
    let mut values = |len: usize, offset: f32| -> Vec<f32> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                offset + ((seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    };
    // A plane under the 16 lanes, one over them with a remainder, and one pixel per plane.
    for shape in [[3usize, 4, 3, 3], [2, 3, 6, 7], [5, 2, 1, 1]] {
        let len = shape.iter().product();
        let x = TensorData::new(values(len, 0.7), shape);
        let weights = TensorData::new(values(len, 0.0), shape);
        for mode in [Mode::Train, Mode::BatchStatistics, Mode::Inference] {
            for relu in [false, true] {
                let fused = batch_norm_pass::<B>(&x, &weights, mode, relu);
                let composed = batch_norm_pass::<Composed>(&x, &weights, mode, relu);
                // The same operation under burn-autodiff's checkpointing strategy, which stores its state differently.
                let checkpointed = batch_norm_pass::<Checkpointed>(&x, &weights, mode, relu);
                assert_eq!(checkpointed, fused, "{shape:?}, {mode:?}, relu {relu}");
                let what = [
                    "output",
                    "input gradient",
                    "scale gradient",
                    "shift gradient",
                    "mean",
                    "variance",
                ];
                for ((a, b), what) in fused.iter().zip(&composed).zip(what) {
                    assert_eq!(a.len(), b.len());
                    for (u, v) in a.iter().zip(b) {
                        assert!(
                            (u - v).abs() <= 1e-6 * v.abs().max(1.0),
                            "{what}: {u} vs {v} ({shape:?}, {mode:?}, relu {relu})"
                        );
                    }
                }
                // The ReLU cut something, and Train moved the statistics (the other modes not).
                let cut = fused[0].iter().filter(|&&v| v == 0.0).count();
                assert_eq!(cut > 0, relu, "{shape:?}");
                let initial: Vec<f32> = (0..shape[1]).map(|c| (0.3 + 0.37 * c as f32 - 0.5).abs()).collect();
                assert_eq!(fused[4] != initial, mode == Mode::Train);
            }
        }
    }
}

#[test]
fn batch_norm_folded_into_its_convolution_is_the_same_function_with_the_same_gradients() {
    use burn::module::Param;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use tailguard_models::ModalBatchNormConfig;
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 7);
    for (bias, stride) in [(false, 1), (true, 2)] {
        let conv = Conv2dConfig::new([3, 5], [3, 3])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(bias)
            .init::<B>(&device);
        let mut bn = ModalBatchNormConfig::new(5).init::<B>(&device);
        // Statistics and affine parameters far from the identity, so a wrong fold cannot pass.
        bn.running_mean = burn::module::RunningState::new(Tensor::from_data([0.3f32, -0.2, 0.5, 0.0, 1.0], &device));
        bn.running_var = burn::module::RunningState::new(Tensor::from_data([0.5f32, 2.0, 0.1, 1.5, 3.0], &device));
        bn.gamma = Param::from_tensor(Tensor::from_data([1.5f32, -0.7, 0.2, 2.0, 1.0], &device));
        bn.beta = Param::from_tensor(Tensor::from_data([0.1f32, 0.4, -0.3, 0.0, 2.0], &device));
        let x = Tensor::<B, 4>::random([2, 3, 9, 9], Distribution::Uniform(0.0, 1.0), &device);
        let weights = Tensor::<B, 4>::random(
            [2, 5, 9 / stride + 9 % stride, 9 / stride + 9 % stride],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let run = |folded: bool| {
            let x = x.clone().detach().require_grad();
            let y = if folded {
                bn.after_conv(&conv, x.clone(), Mode::Inference)
            } else {
                bn.forward(conv.forward(x.clone()), Mode::Inference)
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let values = |t: Tensor<Inner, 4>| t.into_data().to_vec::<f32>().unwrap();
            let gamma = bn.gamma.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            let w = conv.weight.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            let x_grad = values(x.grad(&grads).unwrap());
            (values(y.inner()), x_grad, gamma, w)
        };
        let (folded, unfolded) = (run(true), run(false));
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len());
            let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-5 * scale,
                    "{what}: {x} vs {y} (bias {bias}, stride {stride})"
                );
            }
        };
        close(&folded.0, &unfolded.0, "output");
        close(&folded.1, &unfolded.1, "input gradient");
        close(&folded.2, &unfolded.2, "scale gradient");
        close(&folded.3, &unfolded.3, "weight gradient");
        // Not the identity: the fold changed the output by more than the tolerance if BatchNorm were dropped.
        let plain: Vec<f32> = conv.forward(x.clone()).inner().into_data().to_vec().unwrap();
        assert!(plain.iter().zip(&folded.0).any(|(a, b)| (a - b).abs() > 0.1));
    }
}

#[test]
fn inference_mode_keeps_statistics_and_gives_true_input_gradients() {
    let device = Default::default();
    let model = warmed_up_model(&device);
    let before = running_stats(&model);

    let x = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Uniform(0.2, 0.8), &device);
    let weights = Tensor::<B, 2>::random([2, 5], Distribution::Normal(0.0, 1.0), &device);
    let x_tracked = x.clone().detach().require_grad();
    let loss = (model.forward(x_tracked.clone(), Mode::Inference) * weights.clone()).sum();
    let grads = loss.backward();
    let grad: Vec<f32> = x_tracked.grad(&grads).unwrap().into_data().to_vec().unwrap();
    assert_eq!(
        running_stats(&model),
        before,
        "inference mode must not touch running statistics"
    );

    // Central differences on the inner backend, where nothing is tracked.
    let inner = model.valid();
    let x_inner = x.inner();
    let w_inner = weights.inner();
    let loss_at = |data: Vec<f32>| -> f64 {
        let xi = Tensor::<Inner, 4>::from_data(TensorData::new(data, [2, 3, 16, 16]), &device);
        (inner.forward(xi, Mode::Inference) * w_inner.clone())
            .sum()
            .into_scalar() as f64
    };
    let base: Vec<f32> = x_inner.into_data().to_vec().unwrap();
    let compared = tailguard_models::testing::check_gradient(|data| loss_at(data.to_vec()), &base, &grad, 97).unwrap();
    assert!(compared > 10);
    assert_eq!(running_stats(&model), before);
}

#[test]
fn no_grad_model_still_differentiates_the_input() {
    let device = Default::default();
    let model = warmed_up_model(&device).no_grad();
    let x = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Uniform(0.0, 1.0), &device).require_grad();
    let grads = model.forward(x.clone(), Mode::Inference).sum().backward();
    let g = x.grad(&grads).unwrap();
    assert!(g.abs().sum().into_scalar() > 0.0);
}

#[test]
fn parameter_groups_split_weights_from_biases_and_norms() {
    let model = ModelConfig::new(Architecture::SmallCnn { width: 2 }, 3)
        .init::<Inner>(&Default::default())
        .unwrap();
    let groups = model.parameter_groups();
    // 3 conv weights + 1 linear weight decay; 3 x (BN scale, shift) + linear bias do not.
    assert_eq!(groups.decay.len(), 4);
    assert_eq!(groups.no_decay.len(), 7);
}

#[test]
fn checkpoint_round_trip_gives_identical_logits() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt");
    let config = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 3)
        .with_normalization(Some(InputNormalizationConfig::cifar10()));
    let model = config.init::<Inner>(&device).unwrap();
    let x = Tensor::<Inner, 4>::random([4, 3, 8, 8], Distribution::Uniform(0.0, 1.0), &device);
    let _ = model.forward(x.clone(), Mode::Train); // non-trivial running statistics
    let expected = model.forward(x.clone(), Mode::Inference);

    let classes = vec!["a".to_string(), "b".into(), "c".into()];
    let mut meta = CheckpointMeta::new(config.clone(), classes);
    meta.epoch = Some(3);
    save_checkpoint(&path, &model, &meta).unwrap();
    save_checkpoint(&path, &model, &meta).unwrap(); // overwriting works and leaves no debris
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let (loaded, loaded_meta) = load_checkpoint::<Inner>(&path, &device).unwrap();
    // The checkpoint records every tensor by module path and shape (what a load into another model is checked by).
    let tensors = loaded_meta.tensors.clone().expect("the tensor list is recorded");
    assert!(
        tensors.iter().any(|t| t.name.ends_with("weight") && t.shape.len() == 4),
        "{tensors:?}"
    );
    assert_eq!(
        CheckpointMeta {
            tensors: None,
            ..loaded_meta
        },
        meta
    );
    let got = loaded.forward(x, Mode::Inference);
    got.into_data().assert_eq(&expected.into_data(), true);
}

#[test]
fn broken_checkpoints_give_readable_errors() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let err = load_checkpoint::<Inner>(&dir.path().join("absent"), &device).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");

    let path = dir.path().join("ckpt");
    let config = ModelConfig::new(Architecture::SmallCnn { width: 2 }, 2);
    let model = config.init::<Inner>(&device).unwrap();
    save_checkpoint(
        &path,
        &model,
        &CheckpointMeta::new(config, vec!["a".into(), "b".into()]),
    )
    .unwrap();

    // Metadata that names another architecture than the stored weights.
    let meta_path = path.join("checkpoint.json");
    let text = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(&meta_path, text.replace("\"width\": 2", "\"width\": 3")).unwrap();
    assert!(read_checkpoint_meta(&path).is_ok());
    // The load names the first tensor that differs, with both shapes.
    let err = load_checkpoint::<Inner>(&path, &device).unwrap_err();
    assert!(
        matches!(err, tailguard_models::CheckpointError::OtherModel { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("small-cnn-3") && message.contains("has shape [2,"),
        "{message}"
    );
    // Without the tensor list (a checkpoint of an older tailguard), the weights file is still checked.
    let text = std::fs::read_to_string(&meta_path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.as_object_mut().unwrap().remove("tensors");
    std::fs::write(&meta_path, serde_json::to_string(&json).unwrap()).unwrap();
    let err = load_checkpoint::<Inner>(&path, &device).unwrap_err();
    assert!(err.to_string().contains("model.mpk"), "{err}");

    std::fs::write(&meta_path, b"{ not json").unwrap();
    let err = load_checkpoint::<Inner>(&path, &device).unwrap_err();
    assert!(err.to_string().contains("checkpoint.json"), "{err}");
}

fn weights<M: Module<Flex>>(model: &M) -> Vec<Vec<f32>> {
    tailguard_models::testing::float_tensors(model)
}

#[test]
fn a_fresh_model_and_its_clone_have_the_same_weights() {
    // Burn's parameters are lazy; a clone made before first use would draw its own random weights, so a checkpoint
    // or an attack's frozen copy of a fresh model would differ from the model. `init` gives them their values.
    let device = Default::default();
    for arch in [Architecture::SmallCnn { width: 4 }, Architecture::Linear] {
        let model = ModelConfig::new(arch, 10).init::<Flex>(&device).unwrap();
        let copy = model.clone();
        assert!(weights(&copy) == weights(&model), "{arch}: the clone has other weights");
    }
    // A module built without tailguard, made consistent by `initialize_parameters`.
    let linear = burn::nn::LinearConfig::new(8, 3).init::<Flex>(&device);
    tailguard_models::initialize_parameters(&linear);
    let copy = linear.clone();
    assert!(weights(&copy) == weights(&linear));
}
