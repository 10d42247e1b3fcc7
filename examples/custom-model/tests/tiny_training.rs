//! The embedding example proves the API: the program's own model and method train, checkpoint, resume, export and
//! evaluate through tailguard without any change to tailguard.

use burn::tensor::{Distribution, Tensor};
use tailguard_example_custom_model::model::{TinyNet, TorchNames};
use tailguard_example_custom_model::{B, Training, balanced_robustness, train, training_data};
use tailguard_models::{
    BurnNames, Classifier, ImportOptions, Mode, export_safetensors, import_weights, read_weights_file,
    safetensors_bytes,
};

/// The backend's random generator is global: runs that must be reproducible cannot overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_resumed_run_equals_the_uninterrupted_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = training_data(40).unwrap();
    let straight = train(Training::Mart, &data, 3, &dir.path().join("straight"), None).unwrap();
    let interrupted = dir.path().join("interrupted");
    train(Training::Mart, &data, 3, &interrupted, Some(1)).unwrap();
    let resumed = train(Training::Mart, &data, 3, &interrupted, None).unwrap();
    let bytes = |model: &TinyNet<B>| safetensors_bytes(model, BurnNames).unwrap();
    assert!(
        bytes(&straight) == bytes(&resumed),
        "the resumed run diverged from the uninterrupted one"
    );
    // The log holds one line per epoch, the interruption included.
    let log = std::fs::read_to_string(interrupted.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    // A trainer built with another method is refused on resume.
    let err = match tailguard_trainers::Run::resume(
        tailguard_example_custom_model::trainer(Training::Natural, &data, 3, 1).unwrap(),
        Default::default(),
        &interrupted,
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a natural trainer resumed a MART run"),
    };
    assert!(err.contains("method: mart -> natural"), "{err}");
}

#[test]
fn export_uses_the_programs_names_and_imports_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let model = TinyNet::<B>::new(10, &device);
    let path = dir.path().join("tinynet.safetensors");
    export_safetensors(&model, TorchNames, &path).unwrap();
    let file = read_weights_file(&path).unwrap();
    assert_eq!(file.floats["fc.weight"].0, vec![10, 32], "PyTorch layout: [out, in]");
    assert!(file.floats.contains_key("bn2.running_var") && file.floats.contains_key("conv1.bias"));
    let imported = import_weights(
        TinyNet::<B>::new(10, &device),
        TorchNames,
        &path,
        ImportOptions::default(),
    )
    .unwrap();
    let images = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
    let (a, b) = (
        model.forward(images.clone(), Mode::Inference),
        imported.forward(images, Mode::Inference),
    );
    a.into_data().assert_eq(&b.into_data(), true);
}

#[test]
fn mart_in_robustlt_budgets_is_more_robust_than_natural_training() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = training_data(200).unwrap();
    let epochs = 15;
    let natural = train(Training::Natural, &data, epochs, &dir.path().join("natural"), None).unwrap();
    let mart = train(Training::Mart, &data, epochs, &dir.path().join("mart"), None).unwrap();
    let (natural_clean, natural_robust) = balanced_robustness(&natural, 50).unwrap();
    let (mart_clean, mart_robust) = balanced_robustness(&mart, 50).unwrap();
    eprintln!(
        "natural: clean {natural_clean:.3}, AA-lite {natural_robust:.3}; MART: clean {mart_clean:.3}, AA-lite {mart_robust:.3}"
    );
    assert!(
        natural_clean > 0.15,
        "natural training learned nothing: {natural_clean}"
    );
    assert!(
        mart_robust > natural_robust + 0.03,
        "MART {mart_robust} vs natural {natural_robust} under AA-lite"
    );
}

#[test]
fn the_program_stops_resumes_exports_and_evaluates() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (accuracy, robustness) = tailguard_example_custom_model::run(dir.path(), 2, 5).unwrap();
    assert!(
        robustness <= accuracy,
        "robustness {robustness} above accuracy {accuracy}"
    );
    let log = std::fs::read_to_string(dir.path().join("mart/log.jsonl")).unwrap();
    assert_eq!(
        log.lines().count(),
        2,
        "one epoch before the stop, one after the resume"
    );
    let weights = read_weights_file(&dir.path().join("tinynet.safetensors")).unwrap();
    assert_eq!(weights.floats["fc.weight"].0, vec![10, 32]);
}
