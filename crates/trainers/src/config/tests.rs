//! Reading, overriding and validating configuration files.

use super::*;
use crate::losses::AbsentClasses;
use crate::method::ExtraCleanForward;
use tailguard_attacks::{StartClip, StartRadius};
use tailguard_longtail::augment::AugmentPolicy;
use tailguard_models::Architecture;

const BASE: &str = r#"
seed = 1
[data]
dataset = "cifar10"
data_dir = "datasets/cifar10-lt-mini.tar.gz"
imbalance = 10
[model]
arch = "small-cnn"
[optim]
epochs = 4
lr = 0.05
schedule = { name = "multi-step", milestones = [3], gamma = 0.1 }
[attack]
eps = "8/255"
step_size = "2/255"
steps = 3
[method]
name = "taet"
ce_epochs = 2
"#;

#[test]
fn quirks_default_to_the_reference_code_and_can_be_set() {
    // The base without TAET's own keys, so any method can be named.
    let base = BASE.replace("ce_epochs = 2\n", "");
    let parse = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        TrainConfig::parse(&base, &sets).unwrap()
    };
    // PGD-AT's reference (RobustLT's port): batch statistics, start clipped to [0, 1].
    let pgd_at = parse(&["method.name=pgd-at"]);
    assert_eq!(pgd_at.attack_batch_norm(), AttackBatchNorm::Batch);
    assert_eq!(pgd_at.attack().unwrap().start_clip, StartClip::Box);
    // ... and its base code's logging passes, for PGD-AT and AWP too; a named switch turns them off.
    assert!(pgd_at.trainer_config().logging_forwards);
    assert!(parse(&["method.name=awp"]).trainer_config().logging_forwards);
    assert!(
        !parse(&["method.name=pgd-at", "method.logging_forwards=false"])
            .trainer_config()
            .logging_forwards
    );
    assert!(!parse(&["method.name=trades"]).trainer_config().logging_forwards);
    // TAET's notebook: running statistics, unclipped start, the extra clean pass first.
    let taet = parse(&["method.name=taet", "method.ce_epochs=1"]);
    assert_eq!(taet.attack_batch_norm(), AttackBatchNorm::Running);
    assert_eq!(taet.attack().unwrap().start_clip, StartClip::None);
    assert!(!taet.trainer_config().logging_forwards);
    // Under RobustLT, its port's quirks; each can be set back.
    let port = parse(&["method.name=at-bsl", "robustlt.alpha=0.3", "robustlt.beta=0.8"]);
    assert_eq!(port.attack_batch_norm(), AttackBatchNorm::Batch);
    assert!(port.trainer_config().logging_forwards);
    assert_eq!(
        port.method.official_extra_clean_forward(true),
        ExtraCleanForward::AfterAdversarial
    );
    let set_back = parse(&[
        "method.name=at-bsl",
        "robustlt.alpha=0.3",
        "robustlt.beta=0.8",
        "robustlt.logging_forwards=false",
        "attack.batch_norm=running",
        "attack.start_clip=ball",
    ]);
    assert_eq!(set_back.attack_batch_norm(), AttackBatchNorm::Running);
    assert!(!set_back.trainer_config().logging_forwards);
    assert_eq!(set_back.attack().unwrap().start_clip, StartClip::Ball);
    assert_eq!(port.attack().unwrap().start_radius, StartRadius::Configured);
    assert_eq!(pgd_at.attack().unwrap().start_radius, StartRadius::Budget);
    // The extra pass is spelled as a place or, as older files do, a flag; anything else is refused by name.
    let after = parse(&[
        "method.name=taet",
        "method.ce_epochs=1",
        "method.extra_clean_forward=after-adversarial",
    ]);
    assert!(matches!(
        after.method,
        MethodConfig::Taet {
            extra_clean_forward: Some(ExtraCleanForward::AfterAdversarial),
            ..
        }
    ));
    let off = parse(&[
        "method.name=taet",
        "method.ce_epochs=1",
        "method.extra_clean_forward=false",
    ]);
    assert!(matches!(
        off.method,
        MethodConfig::Taet {
            extra_clean_forward: Some(ExtraCleanForward::None),
            ..
        }
    ));
    let bad = TrainConfig::parse(&base, &["method.extra_clean_forward=sometimes".into()]).unwrap_err();
    assert!(bad.to_string().contains("sometimes"), "{bad}");
}

#[test]
fn parses_with_defaults_and_fractions() {
    let config = TrainConfig::parse(BASE, &[]).unwrap();
    assert_eq!(config.attack.eps.0, 8.0 / 255.0);
    assert_eq!(config.optim.batch_size, 128);
    assert!(config.data.augment);
    assert_eq!(config.data.augment_policy, AugmentPolicy::None);
    match config.method {
        MethodConfig::Taet {
            ce_epochs,
            alpha,
            extra_clean_forward,
            absent_classes,
            ..
        } => {
            assert_eq!((ce_epochs, alpha, extra_clean_forward), (2, 0.1, None));
            assert_eq!(absent_classes, AbsentClasses::Zero);
        }
        _ => panic!("not TAET"),
    }
    // Round trip through TOML.
    assert_eq!(TrainConfig::parse(&config.to_toml(), &[]).unwrap(), config);
}

#[test]
fn overrides_apply_dotted_keys() {
    let sets = [
        "optim.lr=0.2".to_string(),
        "attack.eps=0.031".into(),
        "robustlt.alpha=0.3".into(),
        "robustlt.beta=0.8".into(),
    ];
    let config = TrainConfig::parse(BASE, &sets).unwrap();
    assert_eq!(config.optim.lr, 0.2);
    assert_eq!(config.attack.eps.0, 0.031);
    assert_eq!(config.robustlt, Some(RobustLtConfig::new(0.3, 0.8)));
    let config = TrainConfig::parse(BASE, &["model.arch=resnet18".to_string()]).unwrap();
    assert_eq!(config.model.arch, Architecture::ResNet18);
}

#[test]
fn impossible_values_are_clear_errors() {
    let err = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        TrainConfig::parse(BASE, &sets).unwrap_err().to_string()
    };
    assert!(err(&["attack.eps=-0.1"]).contains("[0, 1]"));
    assert!(err(&["method.ce_epochs=9"]).contains("ce_epochs (9) exceeds optim.epochs (4)"));
    let awp = |set: &str| {
        let base = BASE.replace("ce_epochs = 2\n", "").replace("\"taet\"", "\"awp\"");
        TrainConfig::parse(&base, &[set.to_string()]).unwrap_err().to_string()
    };
    assert!(awp("method.gamma=-1").contains("method.gamma must be a finite number >= 0, got -1"));
    assert!(awp("method.warmup=4").contains("method.warmup (4) leaves no epoch"));
    assert!(awp("method.proxy=adam").contains("adam"));
    assert!(err(&["optim.epochs=0"]).contains("epochs must be at least 1"));
    assert!(err(&["optim.colour=3"]).contains("colour"), "unknown keys are rejected");
    assert!(err(&["model.arch=vgg"]).contains("unknown architecture"));
    assert!(err(&["data.imbalance=0.5"]).contains(">= 1"));
    assert!(err(&["method.name=magic"]).contains("magic"));
    assert!(err(&["optim.schedule.milestones=[3, 2]"]).contains("increase"));
    assert!(err(&["nonsense"]).contains("key=value"));
}

#[test]
fn the_augment_policy_reaches_the_loop() {
    let parse = |set: &str| TrainConfig::parse(BASE, &[set.to_string()]);
    let config = parse("data.augment_policy=\"autoaugment\"").unwrap();
    assert_eq!(config.trainer_config().augment_policy, AugmentPolicy::AutoAugment);
    assert!(config.trainer_config().augment);
    let config = parse("data.augment_policy=\"ra\"").unwrap();
    assert_eq!(config.trainer_config().augment_policy, AugmentPolicy::RandAugment);
    let bad = parse("data.augment_policy=\"trivial\"").unwrap_err().to_string();
    assert!(
        bad.starts_with("data.augment_policy: ") && bad.contains("autoaugment"),
        "{bad}"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    let err = |set: &str| TrainConfig::parse(BASE, &[set.to_string()]).unwrap_err().to_string();
    for (set, key) in [
        ("model.head=round", "model.head"),
        ("model.normalization=imagenet", "model.normalization"),
        ("model.arch=vgg", "model.arch"),
        ("attack.start=sideways", "attack.start"),
        ("data.imbalance=ten", "data.imbalance"),
        ("data.augment=3", "data.augment"),
        ("optim.epochs=many", "optim.epochs"),
    ] {
        let message = err(set);
        assert!(message.starts_with(&format!("{key}: ")), "{set}: {message}");
    }
    assert!(err("model.arch=vgg").contains("unknown architecture 'vgg'"));
    assert!(
        err("attack.start=sideways").contains("uniform-positive"),
        "lists the choices"
    );
}

#[test]
fn an_error_names_the_line_of_its_key() {
    let with = |from: &str, to: &str| {
        TrainConfig::parse(&BASE.replace(from, to), &[])
            .unwrap_err()
            .to_string()
    };
    // BASE's lines: 1 is empty, `[attack]` opens at 13, `steps` is 16, `[method]`'s ce_epochs is 19.
    let steps = with("steps = 3", "steps = -3");
    assert!(steps.starts_with("line 16: attack.steps: "), "{steps}");
    let ce = with("ce_epochs = 2", "ce_epochs = 9");
    assert!(ce.starts_with("line 19: "), "{ce}");
    let alpha = with("ce_epochs = 2", "ce_epochs = 2\nalpha = nan");
    assert!(alpha.starts_with("line 20: method.alpha must be"), "{alpha}");
    let missing = with("lr = 0.05\n", "");
    assert!(missing.starts_with("[optim]: missing field `lr`"), "{missing}");
    let set = TrainConfig::parse(BASE, &["attack.steps=-3".into()])
        .unwrap_err()
        .to_string();
    assert!(
        set.starts_with("attack.steps: ") && set.ends_with("(set by --set)"),
        "{set}"
    );
}

#[test]
fn keys_are_found_in_sections_and_dotted_names() {
    let text = "seed = 1\n[method]\nname = \"taet\"\n# alpha = 2\n\"alpha\" = 1\n[data]\nlong_tail.n_max = 5\n";
    assert_eq!(overrides::key_line(text, "seed"), Some(1));
    assert_eq!(overrides::key_line(text, "method.alpha"), Some(5));
    assert_eq!(overrides::key_line(text, "data.long_tail.n_max"), Some(7));
    assert_eq!(overrides::key_line(text, "method.beta"), None);
}

#[test]
fn label_smoothing_is_a_method_key_that_survives_the_round_trip() {
    let config = TrainConfig::parse(BASE, &["method.label_smoothing=0.1".into()]).unwrap();
    assert_eq!(config.label_smoothing, 0.1);
    assert_eq!(config.trainer_config().label_smoothing, 0.1);
    let text = config.to_toml();
    assert!(text.contains("label_smoothing = 0.1"), "{text}");
    assert_eq!(TrainConfig::parse(&text, &[]).unwrap(), config);
    // The stored JSON (checkpoints) reads back too.
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), config);
    assert_eq!(
        TrainConfig::parse(BASE, &[]).unwrap().trainer_config().label_smoothing,
        0.0
    );
    let err = |set: &str| TrainConfig::parse(BASE, &[set.to_string()]).unwrap_err().to_string();
    assert!(err("method.label_smoothing=1.0").contains("method.label_smoothing must lie in [0, 1)"));
    assert!(err("method.label_smoothing=nan").contains("method.label_smoothing"));
    assert!(err("label_smoothing=0.1").contains("belongs in [method]"));
}
