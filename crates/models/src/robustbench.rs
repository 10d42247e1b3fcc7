//! RobustBench model-zoo checkpoints: which tailguard architecture and input normalisation each model id is, and
//! how its file's tensor names become the architecture's (the table follows `robustbench` 1.1.1's
//! `model_zoo/cifar10.py` and `cifar100.py`; `crates/models/tests/fixtures/robustbench/make_fixtures.py` checks every
//! entry against the package's own definitions).
//!
//! RobustBench keeps a model as `models/<dataset>/<threat>/<id>.pt`: a `torch.save`d state dict, sometimes wrapped
//! (`{"state_dict": ...}`), with DataParallel's `module.` prefix, a `model.` prefix, or in half precision. The
//! reader unwraps and widens ([`crate::torch_file`]); [`clean_names`] removes the prefixes as RobustBench's loader
//! does, and drops the tensors the definitions carry but never use in the forward pass.

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::architecture::{Architecture, Model, ModelConfig};
use crate::dm_wide_resnet::Activation;
use crate::interop::{ImportOptions, InteropError, ParameterNames, load_tensors, read_any_weights_file};
use crate::normalization::InputNormalizationConfig;
use crate::weights_file::WeightsFile;

/// The dataset a zoo model was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZooDataset {
    /// CIFAR-10 (10 classes).
    Cifar10,
    /// CIFAR-100 (100 classes).
    Cifar100,
}

impl ZooDataset {
    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            ZooDataset::Cifar10 => 10,
            ZooDataset::Cifar100 => 100,
        }
    }
}

impl std::fmt::Display for ZooDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ZooDataset::Cifar10 => "cifar10",
            ZooDataset::Cifar100 => "cifar100",
        })
    }
}

/// The threat model of a leaderboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Threat {
    /// L-infinity ball (eps 8/255 on CIFAR).
    Linf,
    /// L2 ball (eps 0.5 on CIFAR).
    L2,
}

impl std::fmt::Display for Threat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Threat::Linf => "Linf",
            Threat::L2 => "L2",
        })
    }
}

/// One model of the zoo.
#[derive(Debug, Clone, PartialEq)]
pub struct ZooModel {
    /// RobustBench's id (`Wong2020Fast`).
    pub id: &'static str,
    /// Its dataset.
    pub dataset: ZooDataset,
    /// Its leaderboard.
    pub threat: Threat,
    /// The network.
    pub arch: Architecture,
    /// Mean and standard deviation the definition subtracts and divides by inside the model, if any.
    pub normalization: Option<([f32; 3], [f32; 3])>,
    /// Prefixes of tensors the definition has but never uses (Carmon et al.'s `sub_block1`): dropped on import.
    pub unused: &'static [&'static str],
}

impl ZooModel {
    /// The tailguard model configuration: architecture, classes and the normalisation inside.
    pub fn config(&self) -> ModelConfig {
        ModelConfig::new(self.arch, self.dataset.classes()).with_normalization(
            self.normalization
                .map(|(mean, std)| InputNormalizationConfig::new(mean.to_vec(), std.to_vec())),
        )
    }
}

/// `(x - mu) / sigma` of Wong et al., Rice et al. and DeepMind's CIFAR-10 models.
const CIFAR10_DM: ([f32; 3], [f32; 3]) = ([0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]);
/// Engstrom et al.'s (the robustness library's) CIFAR-10 statistics.
const CIFAR10_ENGSTROM: ([f32; 3], [f32; 3]) = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]);
/// DeepMind's CIFAR-100 statistics.
const CIFAR100_DM: ([f32; 3], [f32; 3]) = ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]);

const WRN_28_10: Architecture = Architecture::WideResNet { depth: 28, widen: 10 };
const DM_WRN_28_10_SILU: Architecture = Architecture::DmWideResNet {
    depth: 28,
    width: 10,
    activation: Activation::Silu,
};

const fn entry(
    id: &'static str,
    dataset: ZooDataset,
    threat: Threat,
    arch: Architecture,
    normalization: Option<([f32; 3], [f32; 3])>,
) -> ZooModel {
    ZooModel {
        id,
        dataset,
        threat,
        arch,
        normalization,
        unused: &[],
    }
}

/// Every zoo model tailguard imports.
pub const ZOO: &[ZooModel] = {
    use Threat::{L2, Linf};
    use ZooDataset::{Cifar10 as C10, Cifar100 as C100};
    &[
        entry("Standard", C10, Linf, WRN_28_10, None),
        entry(
            "Wong2020Fast",
            C10,
            Linf,
            Architecture::PreActResNet18Wong,
            Some(CIFAR10_DM),
        ),
        ZooModel {
            unused: &["sub_block1."],
            ..entry("Carmon2019Unlabeled", C10, Linf, WRN_28_10, None)
        },
        entry(
            "Rice2020Overfitting",
            C10,
            Linf,
            Architecture::WideResNet { depth: 34, widen: 20 },
            Some(CIFAR10_DM),
        ),
        entry(
            "Gowal2020Uncovering_28_10_extra",
            C10,
            Linf,
            DM_WRN_28_10_SILU,
            Some(CIFAR10_DM),
        ),
        entry(
            "Rebuffi2021Fixing_28_10_cutmix_ddpm",
            C10,
            Linf,
            DM_WRN_28_10_SILU,
            Some(CIFAR10_DM),
        ),
        entry(
            "Wang2023Better_WRN-28-10",
            C10,
            Linf,
            DM_WRN_28_10_SILU,
            Some(CIFAR10_DM),
        ),
        entry(
            "Engstrom2019Robustness",
            C10,
            Linf,
            Architecture::ResNet50,
            Some(CIFAR10_ENGSTROM),
        ),
        entry("Standard", C10, L2, WRN_28_10, None),
        entry(
            "Rice2020Overfitting",
            C10,
            L2,
            Architecture::PreActResNet18,
            Some(CIFAR10_DM),
        ),
        entry(
            "Engstrom2019Robustness",
            C10,
            L2,
            Architecture::ResNet50,
            Some(CIFAR10_ENGSTROM),
        ),
        entry(
            "Rebuffi2021Fixing_28_10_cutmix_ddpm",
            C10,
            L2,
            DM_WRN_28_10_SILU,
            Some(CIFAR10_DM),
        ),
        entry("Wang2023Better_WRN-28-10", C10, L2, DM_WRN_28_10_SILU, Some(CIFAR10_DM)),
        entry(
            "Rebuffi2021Fixing_28_10_cutmix_ddpm",
            C100,
            Linf,
            DM_WRN_28_10_SILU,
            Some(CIFAR100_DM),
        ),
        entry(
            "Pang2022Robustness_WRN28_10",
            C100,
            Linf,
            DM_WRN_28_10_SILU,
            Some(CIFAR100_DM),
        ),
        entry(
            "Wang2023Better_WRN-28-10",
            C100,
            Linf,
            DM_WRN_28_10_SILU,
            Some(CIFAR100_DM),
        ),
    ]
};

/// The zoo model `id` of `dataset`'s `threat` leaderboard; an unknown one is an error listing those known there.
pub fn zoo_model(id: &str, dataset: ZooDataset, threat: Threat) -> Result<&'static ZooModel, InteropError> {
    ZOO.iter()
        .find(|m| m.id == id && m.dataset == dataset && m.threat == threat)
        .ok_or_else(|| {
            let known: Vec<&str> = ZOO
                .iter()
                .filter(|m| m.dataset == dataset && m.threat == threat)
                .map(|m| m.id)
                .collect();
            InteropError::Invalid(format!(
                "tailguard does not know RobustBench's {dataset} {threat} model '{id}'; it imports {}",
                known.join(", ")
            ))
        })
}

/// Removes what RobustBench's loader removes and what the definitions never use: a leading `module.` (DataParallel)
/// and then `model.` (wrappers), the tensors of Engstrom et al.'s `attacker` and `normalizer` copies, the
/// normalisation buffers (`mu`, `sigma`, `mean`, `std`: tailguard's model holds them, from the table) and
/// `zoo.unused`.
pub fn clean_names(file: WeightsFile, zoo: &ZooModel) -> WeightsFile {
    let clean = |name: &str| -> Option<String> {
        let name = name.strip_prefix("module.").unwrap_or(name);
        if name.starts_with("attacker.") || name.starts_with("normalizer.") || name.starts_with("normalize.") {
            return None;
        }
        let name = name.strip_prefix("model.").unwrap_or(name);
        let buffer = matches!(name, "mu" | "sigma" | "mean" | "std");
        let unused = zoo.unused.iter().any(|prefix| name.starts_with(prefix));
        (!buffer && !unused).then(|| name.to_string())
    };
    WeightsFile {
        floats: file
            .floats
            .into_iter()
            .filter_map(|(name, tensor)| clean(&name).map(|name| (name, tensor)))
            .collect(),
        others: file
            .others
            .into_iter()
            .filter_map(|(name, dtype)| clean(&name).map(|name| (name, dtype)))
            .collect(),
    }
}

/// Reads the RobustBench checkpoint at `path` into `model`, which must have `zoo`'s architecture (built from
/// [`ZooModel::config`], or a narrower instance of the same definition); strict as [`crate::import_weights`] is
/// once [`clean_names`] has run.
pub fn import_zoo_weights<B: Backend>(
    model: Model<B>,
    zoo: &ZooModel,
    path: &Path,
    options: ImportOptions,
) -> Result<Model<B>, InteropError> {
    let file = clean_names(read_any_weights_file(path)?, zoo);
    load_tensors(model, ZooNames(zoo), file, path, options)
}

/// The architecture's tensor names, with messages that name the zoo model.
struct ZooNames<'a>(&'a ZooModel);

impl ParameterNames for ZooNames<'_> {
    fn name(&self, path: &[String]) -> (String, bool) {
        self.0.arch.name(path)
    }

    fn describe(&self) -> String {
        format!(
            "RobustBench's {} {} {} ({})",
            self.0.dataset, self.0.threat, self.0.id, self.0.arch
        )
    }
}
