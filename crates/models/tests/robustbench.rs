//! RobustBench zoo checkpoints against the `robustbench` package's own definitions (fixtures made by
//! `fixtures/robustbench/make_fixtures.py`): every zoo entry's tensors, shapes, parameter count and normalisation at
//! full size, and the logits of narrow instances of each definition, saved the ways real checkpoints are.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use tailguard_flex::Flex;
use tailguard_models::bottleneck_resnet::BottleneckResNetConfig;
use tailguard_models::preact_resnet::PreActResNetConfig;
use tailguard_models::robustbench::{Threat, ZOO, ZooDataset, ZooModel, import_zoo_weights, zoo_model};
use tailguard_models::{
    Architecture, Classifier, ImportOptions, InputNormalizationConfig, Mode, Model, ModelConfig, Network,
    ParameterNames,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/robustbench")
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

/// The PyTorch name and shape of every tensor `model` holds, under `arch`'s names.
fn expected_tensors<B: Backend>(model: &Model<B>, arch: Architecture) -> BTreeMap<String, Vec<usize>> {
    struct Names {
        arch: Architecture,
        path: Vec<String>,
        found: BTreeMap<String, Vec<usize>>,
    }
    impl<B: Backend> ModuleVisitor<B> for Names {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let (name, transposed) = self.arch.name(&self.path);
            let mut dims = param.val().dims().to_vec();
            if transposed {
                dims.swap(0, 1);
            }
            self.found.insert(name, dims);
        }
    }
    let mut names = Names {
        arch,
        path: Vec::new(),
        found: BTreeMap::new(),
    };
    model.visit(&mut names);
    names.found
}

fn dataset(name: &str) -> ZooDataset {
    match name {
        "cifar10" => ZooDataset::Cifar10,
        "cifar100" => ZooDataset::Cifar100,
        other => panic!("unknown dataset {other}"),
    }
}

fn threat(name: &str) -> Threat {
    match name {
        "Linf" => Threat::Linf,
        "L2" => Threat::L2,
        other => panic!("unknown threat {other}"),
    }
}

#[test]
fn every_zoo_entry_has_the_packages_tensors_parameters_and_normalisation() {
    let device = Default::default();
    let reference = json("zoo.json");
    let reference = reference.as_array().unwrap();
    assert_eq!(reference.len(), ZOO.len(), "zoo.json and ZOO list different models");
    // One build per distinct network: the full-size models are large.
    let mut built: BTreeMap<String, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
    for entry in reference {
        let id = entry["id"].as_str().unwrap();
        let zoo = zoo_model(
            id,
            dataset(entry["dataset"].as_str().unwrap()),
            threat(entry["threat"].as_str().unwrap()),
        )
        .unwrap();
        let config = zoo.config();
        let ours = built
            .entry(format!("{} {}", zoo.arch, config.num_classes))
            .or_insert_with(|| expected_tensors(&config.init::<Flex>(&device).unwrap(), zoo.arch));
        // The package's tensors, less what the import drops: step counters, unused blocks, normalisation buffers.
        let theirs: BTreeMap<String, Vec<usize>> = entry["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| {
                !name.ends_with("num_batches_tracked")
                    && !zoo.unused.iter().any(|prefix| name.starts_with(prefix))
                    && !matches!(name.as_str(), "mu" | "sigma" | "mean" | "std")
            })
            .map(|(name, shape)| {
                let shape = shape.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize);
                (name.clone(), shape.collect())
            })
            .collect();
        assert_eq!(ours, &theirs, "{id} ({}): tensors differ", zoo.arch);
        // Parameters: the package counts trainable tensors (not running statistics), unused blocks included.
        let unused: usize = entry["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| zoo.unused.iter().any(|prefix| name.starts_with(prefix)) && !name.contains("running_"))
            .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
            .map(|(_, shape)| {
                shape
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .product::<usize>()
            })
            .sum();
        let our_parameters: usize = ours
            .iter()
            .filter(|(name, _)| !name.contains("running_"))
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum();
        assert_eq!(
            our_parameters + unused,
            entry["parameters"].as_u64().unwrap() as usize,
            "{id}: parameter count"
        );
        // The normalisation inside, as the package's definition holds it.
        let normalization = zoo.normalization.map(|(mean, std)| (mean.to_vec(), std.to_vec()));
        let theirs = entry["normalization"].as_array().map(|pair| {
            let values = |i: usize| -> Vec<f32> {
                pair[i]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            };
            (values(0), values(1))
        });
        assert_eq!(normalization, theirs, "{id}: normalisation");
        let activations: Vec<&str> = entry["activations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let silu = matches!(
            zoo.arch,
            Architecture::DmWideResNet {
                activation: tailguard_models::dm_wide_resnet::Activation::Silu,
                ..
            }
        );
        assert_eq!(
            silu,
            activations.iter().any(|a| *a == "SiLU" || *a == "Swish"),
            "{id}: activation {activations:?}"
        );
    }
}

/// A narrow instance of `arch` (the fixtures' widths) with the fixture's normalisation.
fn narrow_model(meta: &serde_json::Value) -> (Model<Flex>, Architecture) {
    let device = Default::default();
    let arch: Architecture = meta["arch"].as_str().unwrap().parse().unwrap();
    let classes = meta["classes"].as_u64().unwrap() as usize;
    let floats = |key: &str| -> Option<Vec<f32>> {
        meta[key]
            .as_array()
            .map(|v| v.iter().map(|x| x.as_f64().unwrap() as f32).collect())
    };
    let normalization = floats("mean").map(|mean| InputNormalizationConfig::new(mean, floats("std").unwrap()));
    let width = meta["width"].as_u64().map(|w| w as usize);
    let model = match (arch, width) {
        (Architecture::PreActResNet18 | Architecture::PreActResNet18Wong, Some(width)) => Model {
            normalization: normalization.map(|n| n.init(&device).unwrap()),
            network: Network::PreActResNet(
                PreActResNetConfig::new(classes)
                    .with_width(width)
                    .with_wong_variant(arch == Architecture::PreActResNet18Wong)
                    .init(&device),
            ),
            num_classes: classes,
        },
        (Architecture::ResNet50, Some(width)) => Model {
            normalization: normalization.map(|n| n.init(&device).unwrap()),
            network: Network::BottleneckResNet(BottleneckResNetConfig::new(classes).with_width(width).init(&device)),
            num_classes: classes,
        },
        _ => ModelConfig::new(arch, classes)
            .with_normalization(normalization)
            .init(&device)
            .unwrap(),
    };
    (model, arch)
}

fn logits_of_fixture(case: &str) -> (Vec<f32>, Vec<f32>) {
    let meta = json(&format!("{case}.json"));
    let (model, arch) = narrow_model(&meta);
    let unused: &'static [&'static str] = if meta["unused"].is_array() {
        &["sub_block1."]
    } else {
        &[]
    };
    let zoo = ZooModel {
        id: "fixture",
        dataset: ZooDataset::Cifar10,
        threat: Threat::Linf,
        arch,
        normalization: None,
        unused,
    };
    let path = fixtures().join(format!("{case}.pt"));
    let model =
        import_zoo_weights(model, &zoo, &path, ImportOptions::default()).unwrap_or_else(|e| panic!("{case}: {e}"));
    let pixels: Vec<f32> = meta["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as f32 / 255.0)
        .collect();
    let n = pixels.len() / (3 * 32 * 32);
    let images = Tensor::<Flex, 4>::from_data(TensorData::new(pixels, [n, 3, 32, 32]), &Default::default());
    let ours: Vec<f32> = model.forward(images, Mode::Inference).into_data().to_vec().unwrap();
    let theirs: Vec<f32> = meta["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    (ours, theirs)
}

#[test]
fn narrow_instances_of_every_definition_give_the_packages_logits() {
    for case in [
        "dm_wrn_10_1_swish",
        "dm_wrn_16_1_relu_c100",
        "wrn_10_1_sub_block1",
        "preact_wong_w8_half",
        "preact_v2_w8",
        "resnet50_w4_robustness_lib",
    ] {
        let (ours, theirs) = logits_of_fixture(case);
        assert_eq!(ours.len(), theirs.len(), "{case}");
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let scale = theirs.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        eprintln!("{case}: max |difference| {worst:.2e} (logits up to {scale:.2})");
        assert!(worst < 1e-4, "{case}: logits differ by {worst}");
    }
}

#[test]
fn a_checkpoint_read_as_another_definition_is_refused_and_unknown_ids_list_the_known() {
    // Wong et al.'s and Rice et al.'s pre-activation networks hold the same tensors but for Rice's final BatchNorm:
    // Rice's file read as Wong's network leaves `bn.*` unknown, and the import refuses it.
    let (model, _) = narrow_model(&serde_json::json!({"arch": "preact-resnet18-wong", "width": 8, "classes": 10}));
    let zoo = ZooModel {
        id: "fixture",
        dataset: ZooDataset::Cifar10,
        threat: Threat::Linf,
        arch: Architecture::PreActResNet18Wong,
        normalization: None,
        unused: &[],
    };
    let error = import_zoo_weights(
        model,
        &zoo,
        &fixtures().join("preact_v2_w8.pt"),
        ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("bn.weight"), "{error}");
    // Without the `sub_block1.` rule, Carmon et al.'s unused block is refused as unknown tensors.
    let (model, arch) = narrow_model(&json("wrn_10_1_sub_block1.json"));
    let zoo = ZooModel { arch, ..zoo };
    let error = import_zoo_weights(
        model,
        &zoo,
        &fixtures().join("wrn_10_1_sub_block1.pt"),
        ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("sub_block1."), "{error}");
    let error = zoo_model("Wong2020Fast", ZooDataset::Cifar10, Threat::L2)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Rice2020Overfitting") && error.contains("Standard"),
        "{error}"
    );
}
