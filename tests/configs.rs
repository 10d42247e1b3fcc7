//! Every configuration shipped in configs/ parses and validates, and names the method its file name says.

use std::path::PathBuf;

use tailguard_longtail::augment::AugmentPolicy;
use tailguard_trainers::TrainConfig;

#[test]
fn shipped_configs_are_valid() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = 0;
    for folder in ["cifar10-lt", "cifar100-lt", "tiny-imagenet-lt", "cpu"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let config = TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let method = name.trim_start_matches("robustlt-");
            assert!(
                method.starts_with(config.method_name()),
                "{name}: method {}",
                config.method_name()
            );
            assert_eq!(name.starts_with("robustlt-"), config.robustlt.is_some(), "{name}");
            // AT-BSL's paper setting ("AuA") augments with AutoAugment; every other paper config crops and flips
            // only; the CPU configs keep one augmentation for every method so their study compares like with like.
            let autoaugment = method.starts_with("at-bsl") && folder != "cpu";
            assert_eq!(
                config.data.augment_policy == AugmentPolicy::AutoAugment,
                autoaugment,
                "{name}: {:?}",
                config.data.augment_policy
            );
            if folder == "tiny-imagenet-lt" {
                // RobustLT's Tiny-ImageNet-LT: the first 20 classes at imbalance 10.
                assert_eq!(
                    config.data.dataset,
                    tailguard_longtail::DatasetKind::TinyImageNet,
                    "{name}"
                );
                assert_eq!(
                    (config.data.classes, config.data.long_tail.imbalance),
                    (Some(20), 10.0),
                    "{name}"
                );
            }
            checked += 1;
        }
    }
    // 4 CIFAR settings x (8 methods + RoBal-N + 6 RobustLT variants), Tiny-ImageNet-LT's 6 RobustLT bases with and
    // without RobustLT, and 9 CPU configurations.
    assert_eq!(checked, 4 * 15 + 12 + 9);
}
