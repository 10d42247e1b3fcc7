//! The typed API gives what `tailguard train` gives: a method built from [`Recipe`]'s constructors, with a
//! `TrainerConfig` written by hand (as an embedding program does, knowing nothing of the step options), trains the
//! same weights, bit for bit, as the same experiment read from a configuration file. TAET, PGD-AT and RoBal as their own code runs them, and RobustLT on every base.
//! Also: the library's errors for a wrong-shaped loss, a wrong model on resume and a start over an existing run are
//! typed and name no command-line flag.

use std::path::Path;

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use tailguard_attacks::{FrozenModel, Inner};
use tailguard_flex::Flex;
use tailguard_models::{Classifier, Mode, Model};
use tailguard_trainers::{
    AttackSection, Budget, BudgetPolicy, LrSchedule, Method, MethodConfig, Recipe, RobustLtConfig, Run, RunDescription,
    Silent, StepInput, StepOutput, TrainConfig, TrainData, TrainError, Trainer, TrainerConfig,
};

use crate::common::tiny_archive;

type B = Autodiff<Flex>;

const SEED: u64 = 3;
const EPOCHS: usize = 2;

/// The file an experiment would be: `method` and `robustlt` lines, the rest fixed.
fn file_config(data: &Path, method: &str, robustlt: &str, head: &str, start: &str) -> TrainConfig {
    let text = format!(
        r#"
seed = {SEED}
{robustlt}
[data]
dataset = "cifar10"
data_dir = "{}"
imbalance = 2.0
[model]
arch = "small-cnn-2"
head = "{head}"
[optim]
epochs = {EPOCHS}
batch_size = 16
lr = 0.05
schedule = {{ name = "multi-step", milestones = [1], gamma = 0.5 }}
[attack]
eps = "8/255"
step_size = "2/255"
steps = 2
start = "{start}"
[method]
{method}
"#,
        data.display()
    );
    TrainConfig::parse(&text, &[]).unwrap()
}

/// The attack section the file above spells, built in code.
fn attack() -> AttackSection {
    AttackSection::new(Budget(8.0 / 255.0), Budget(2.0 / 255.0), 2)
}

/// The loop settings the file above spells, written by hand: nothing about BatchNorm or logging passes.
fn loop_settings() -> TrainerConfig {
    TrainerConfig::new(EPOCHS, 0.05)
        .with_schedule(LrSchedule::MultiStep {
            milestones: vec![1],
            gamma: 0.5,
        })
        .with_batch_size(16)
        .with_seed(SEED)
}

fn train(mut trainer: Trainer<B, Model<B>>) -> Vec<Vec<f32>> {
    while !trainer.finished() {
        trainer.run_epoch(&mut Silent).unwrap();
    }
    tailguard_models::testing::float_tensors(&trainer.into_model())
}

/// A model as `TrainConfig::trainer` makes one: the backend seeded, then initialised.
fn model(config: &TrainConfig, data: &TrainData) -> Model<B> {
    let device = Default::default();
    <B as Backend>::seed(&device, SEED);
    config.model_config_for(data).unwrap().init::<B>(&device).unwrap()
}

#[test]
fn typed_recipes_train_what_the_configuration_file_trains() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data_path = tiny_archive(dir.path());
    let robustlt = RobustLtConfig::new(0.3, 0.5);
    let robustlt_line = "robustlt = { alpha = 0.3, beta = 0.5 }";
    // (case, [method] lines, [robustlt] line, head, attack start, the recipe built in code)
    let cases: Vec<(&str, &str, &str, &str, &str, Recipe)> = vec![
        (
            "taet",
            "name = \"taet\"\nce_epochs = 1",
            "",
            "linear",
            "gaussian",
            Recipe::taet(1, attack()),
        ),
        (
            "pgd-at",
            "name = \"pgd-at\"",
            "",
            "linear",
            "uniform",
            Recipe::new(MethodConfig::pgd_at(), attack()),
        ),
        (
            "robal",
            "name = \"robal\"",
            "",
            "cosine",
            "uniform",
            Recipe::new(MethodConfig::robal(), attack()),
        ),
        (
            "robustlt-pgd-at",
            "name = \"pgd-at\"",
            robustlt_line,
            "linear",
            "uniform",
            Recipe::robust_lt(MethodConfig::pgd_at(), attack(), robustlt),
        ),
        (
            "robustlt-awp",
            "name = \"awp\"",
            robustlt_line,
            "linear",
            "uniform",
            Recipe::robust_lt(MethodConfig::awp(), attack(), robustlt),
        ),
        (
            "robustlt-trades",
            "name = \"trades\"",
            robustlt_line,
            "linear",
            "uniform",
            Recipe::robust_lt(MethodConfig::trades(), attack(), robustlt),
        ),
        (
            "robustlt-at-bsl",
            "name = \"at-bsl\"",
            robustlt_line,
            "linear",
            "uniform",
            Recipe::robust_lt(MethodConfig::at_bsl(), attack(), robustlt),
        ),
        (
            "robustlt-robal",
            "name = \"robal\"",
            robustlt_line,
            "cosine",
            "uniform",
            Recipe::robust_lt(MethodConfig::robal(), attack(), robustlt),
        ),
        (
            "robustlt-reat",
            "name = \"reat\"",
            robustlt_line,
            "linear",
            "uniform",
            Recipe::robust_lt(MethodConfig::reat(), attack(), robustlt),
        ),
        (
            "robustlt-taet",
            "name = \"taet\"\nce_epochs = 1",
            robustlt_line,
            "linear",
            "uniform",
            Recipe::robust_lt(MethodConfig::taet(1), attack(), robustlt),
        ),
    ];
    let device = Default::default();
    for (case, method, robustlt_text, head, start, recipe) in cases {
        let config = file_config(&data_path, method, robustlt_text, head, start);
        assert_eq!(
            config.recipe(),
            recipe,
            "{case}: the constructors spell the file's settings"
        );
        let data = config.load_data().unwrap();
        let from_file = train(config.trainer::<B>(&data, &device).unwrap());
        let typed = recipe
            .trainer(model(&config, &data), loop_settings(), &data, &device)
            .unwrap();
        let from_parts = train(typed);
        assert!(
            from_file == from_parts,
            "{case}: the typed parts trained other weights than the file"
        );
        if recipe.robustlt.is_some() || recipe.step_options().logging_forwards {
            // The same method and budgets without the recipe's step options (what an embedder got before): other
            // weights, so the step options are what makes the two equal (PGD-AT: its base code's logging passes).
            let bare = Trainer::new(
                model(&config, &data),
                recipe.method(&data.counts).unwrap(),
                recipe.budget_policy(&data.counts, EPOCHS),
                loop_settings(),
                &data,
                &device,
            )
            .unwrap();
            assert!(train(bare) != from_file, "{case}: the step options changed nothing");
        }
    }
}

#[test]
fn the_recipe_carries_robustlt_quirks_that_a_bare_budget_policy_does_not() {
    let _serial = crate::serial();
    let attack = attack();
    let plain = Recipe::new(MethodConfig::at_bsl(), attack.clone());
    let robust_lt = Recipe::robust_lt(MethodConfig::at_bsl(), attack, RobustLtConfig::new(0.3, 0.8));
    // AT-BSL's own code attacks with running statistics; RobustLT's port with batch statistics, then logs twice.
    assert_eq!(
        plain.step_options().attack_batch_norm,
        tailguard_trainers::AttackBatchNorm::Running
    );
    assert!(!plain.step_options().logging_forwards);
    assert_eq!(
        robust_lt.step_options().attack_batch_norm,
        tailguard_trainers::AttackBatchNorm::Batch
    );
    assert!(robust_lt.step_options().logging_forwards);
    // The port also starts uniformly in the configured radius and clips the start to the image box.
    let start = robust_lt.attack().unwrap();
    assert_eq!(start.start_radius, tailguard_attacks::StartRadius::Configured);
    assert_eq!(start.start_clip, tailguard_attacks::StartClip::Box);
    assert_eq!(plain.attack().unwrap().start_clip, tailguard_attacks::StartClip::None);
    // Its logging passes can be turned off explicitly, and then the recipe says so.
    let quiet = Recipe::robust_lt(
        MethodConfig::at_bsl(),
        plain.attack.clone(),
        RobustLtConfig {
            logging_forwards: false,
            ..RobustLtConfig::new(0.3, 0.8)
        },
    );
    assert!(!quiet.step_options().logging_forwards);
    let trainer = quiet.trainer_config(TrainerConfig::new(3, 0.1));
    assert!(!trainer.logging_forwards);
    assert_eq!(trainer.attack_batch_norm, tailguard_trainers::AttackBatchNorm::Batch);
}

/// A method whose loss is per-sample (not reduced): the step refuses it before backward.
struct PerSample;

impl<Bk: AutodiffBackend, M: Classifier<Bk>> Method<Bk, M> for PerSample {
    fn name(&self) -> &'static str {
        "per-sample"
    }

    fn adversarial(&self, _: &FrozenModel<Bk, M>, _: &StepInput<Bk>) -> Option<Tensor<Inner<Bk>, 4>> {
        None
    }

    fn loss(&self, model: &M, input: &StepInput<Bk>, _: Option<Tensor<Bk, 4>>) -> StepOutput<Bk> {
        let logits = model.forward(input.images.clone(), Mode::Train);
        let loss = tailguard_attacks::loss::cross_entropy_per_sample(logits.clone(), input.labels.clone());
        StepOutput {
            loss,
            clean_logits: Some(logits),
            adversarial_logits: None,
        }
    }
}

fn custom_trainer(
    config: &TrainConfig,
    data: &TrainData,
    method: Box<dyn Method<B, Model<B>>>,
) -> Result<Trainer<B, Model<B>>, TrainError> {
    let budget = BudgetPolicy::uniform(8.0 / 255.0, data.counts.len());
    Trainer::new(
        model(config, data),
        method,
        budget,
        loop_settings(),
        data,
        &Default::default(),
    )
}

fn assert_no_flag(message: &str) {
    for flag in ["--resume", "--force", "--out", "optim.lr", "--set", "--allow", "--drop"] {
        assert!(!message.contains(flag), "a library error names {flag}: {message}");
    }
}

#[test]
fn library_errors_are_typed_and_name_no_flag() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let data_path = tiny_archive(dir.path());
    let config = file_config(&data_path, "name = \"natural\"", "", "linear", "uniform");
    let data = config.load_data().unwrap();

    // A per-sample loss: a typed error with both shapes, before any backward.
    let mut trainer = custom_trainer(&config, &data, Box::new(PerSample)).unwrap();
    let error = trainer.run_epoch(&mut Silent).unwrap_err();
    match &error {
        TrainError::LossShape {
            method,
            expected,
            given,
        } => {
            assert_eq!(*method, "per-sample");
            assert_eq!(expected, &vec![1]);
            assert_eq!(given, &vec![16]);
        }
        other => panic!("expected LossShape, got {other}"),
    }
    assert_no_flag(&error.to_string());

    // A run in a folder; starting another there is refused with the API's remedy.
    let run_dir = dir.path().join("run");
    let trainer = custom_trainer(&config, &data, Box::new(tailguard_trainers::methods::Natural)).unwrap();
    let mut run = Run::start(trainer, RunDescription::default(), &run_dir, false).unwrap();
    run.run_epoch(&mut Silent).unwrap();
    drop(run);
    let trainer = custom_trainer(&config, &data, Box::new(tailguard_trainers::methods::Natural)).unwrap();
    let error = Run::start(trainer, RunDescription::default(), &run_dir, false)
        .err()
        .expect("a second start is refused");
    assert!(matches!(error, TrainError::RunExists(_)), "{error}");
    assert!(error.to_string().contains("Run::resume"), "{error}");
    assert_no_flag(&error.to_string());

    // Resuming into another model: the first tensor that differs is named.
    let wider = file_config(&data_path, "name = \"natural\"", "", "linear", "uniform");
    let mut wider_model_config = wider.model_config_for(&data).unwrap();
    wider_model_config.arch = tailguard_models::Architecture::SmallCnn { width: 3 };
    let device = Default::default();
    let other = wider_model_config.init::<B>(&device).unwrap();
    let budget = BudgetPolicy::uniform(8.0 / 255.0, data.counts.len());
    let trainer = Trainer::new(
        other,
        Box::new(tailguard_trainers::methods::Natural),
        budget,
        loop_settings(),
        &data,
        &device,
    )
    .unwrap();
    let error = Run::resume(trainer, RunDescription::default(), &run_dir)
        .err()
        .expect("another model is refused");
    let message = tailguard_trainers::chain(&error);
    assert!(
        matches!(
            error,
            TrainError::CheckpointFile(tailguard_models::CheckpointError::OtherModel { .. })
        ),
        "{message}"
    );
    assert!(message.contains("has shape") && message.contains("weight"), "{message}");
    assert_no_flag(&message);

    // Divergence says whether a checkpoint is kept only when there is one.
    let never = TrainError::Diverged {
        epoch: 1,
        loss: f64::NAN,
        checkpoint: None,
    };
    assert!(!never.to_string().contains("checkpoint"), "{never}");
    assert_no_flag(&never.to_string());
}
