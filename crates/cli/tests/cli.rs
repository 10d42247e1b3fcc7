//! The `tailguard` program as a user runs it.

use std::process::{Command, Output};

fn tailguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailguard"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command line without quoting (arguments split on whitespace).
fn run(line: &str) -> Output {
    tailguard(&line.split_whitespace().collect::<Vec<_>>())
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A failed run: non-zero exit, an `error:` line, no panic.
fn assert_clean_failure(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should fail: {stderr}");
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{stderr}"
    );
    assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
}

#[test]
fn data_prints_standard_cifar10_lt_counts() {
    let report = stdout_json(&run("data --dataset cifar10 --imbalance 100 --json"));
    assert_eq!(report["dataset"], "cifar10");
    assert_eq!(report["imbalance"], 100.0);
    let counts: Vec<u64> = serde_json::from_value(report["counts"].clone()).unwrap();
    assert_eq!(counts, vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
    assert_eq!(report["total"], 12406);

    let report = stdout_json(&run("data --dataset cifar100 --imbalance 10 --json"));
    assert_eq!(report["total"], 19573);
    let report = stdout_json(&run("data --dataset cifar10 --imbalance 10 --profile step --json"));
    assert_eq!(report["total"], 5 * 5000 + 5 * 500);
    let report = stdout_json(&run("data --dataset cifar100 --imbalance 10 --classes 20 --json"));
    assert_eq!(report["counts"].as_array().unwrap().len(), 20);
    assert_eq!(report["counts"][19], 50);
}

#[test]
fn data_table_is_readable() {
    let output = run("data --dataset cifar10 --imbalance 10");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        text.contains("airplane") && text.contains("truck") && text.contains("20431"),
        "{text}"
    );
}

#[test]
fn data_on_a_real_image_folder_saves_a_split() {
    let dir = tempfile::tempdir().unwrap();
    for (class, n) in [("cat", 8), ("dog", 8)] {
        let folder = dir.path().join("train").join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..n {
            image::RgbImage::from_pixel(4, 4, image::Rgb([i as u8, 0, 0]))
                .save(folder.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let split = dir.path().join("split.json");
    let root = dir.path().to_str().unwrap();
    let report = stdout_json(&tailguard(&[
        "data",
        "--dataset",
        "imagefolder",
        "--data-dir",
        root,
        "--imbalance",
        "4",
        "--json",
        "--save-split",
        split.to_str().unwrap(),
    ]));
    assert_eq!(report["counts"], serde_json::json!([8, 2]));
    assert_eq!(report["classes"], serde_json::json!(["cat", "dog"]));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&split).unwrap()).unwrap();
    assert_eq!(saved["indices"].as_array().unwrap().len(), 10);
}

#[test]
fn bad_data_input_fails_with_one_line() {
    assert_clean_failure(&run("data --dataset cifar10 --imbalance 0.5"), ">= 1");
    assert_clean_failure(
        &run("data --dataset cifar10 --data-dir /no/such/dir --imbalance 10"),
        "/no/such/dir",
    );
    assert_clean_failure(&run("data --dataset imagefolder --imbalance 10"), "--data-dir");
    assert_clean_failure(&run("data --dataset mnist --imbalance 10"), "mnist");
    assert_clean_failure(&run("data --dataset cifar10 --imbalance 1e9"), "no image");
}

#[test]
fn model_reports_parameters_and_output_shape() {
    let report = stdout_json(&run("model --arch resnet18 --classes 10 --json"));
    assert_eq!(report["arch"], "resnet18");
    assert_eq!(report["classes"], 10);
    assert_eq!(report["parameters"], 11_173_962);
    assert_eq!(report["output_shape"], serde_json::json!([1, 10]));
    let report = stdout_json(&run("model --arch small-cnn --classes 100 --json"));
    assert_eq!(report["output_shape"], serde_json::json!([1, 100]));
}

#[test]
fn bad_model_input_fails_with_one_line() {
    assert_clean_failure(&run("model --arch vgg16"), "vgg16");
    assert_clean_failure(&run("model --arch wrn-30-10"), "6n + 4");
    assert_clean_failure(&run("model --arch linear --classes 0"), "at least one class");
}

/// The embedded demo dataset, shipped in the repository.
fn embedded() -> String {
    format!("{}/../../datasets/cifar10-lt-mini.tar.gz", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn embedded_dataset_is_cifar10_lt_and_goes_through_a_model() {
    let data = embedded();
    let report = stdout_json(&tailguard(&[
        "data",
        "--dataset",
        "cifar10",
        "--data-dir",
        &data,
        "--imbalance",
        "10",
        "--arch",
        "small-cnn",
        "--batches",
        "1",
        "--batch-size",
        "16",
        "--json",
    ]));
    assert_eq!(
        report["counts"],
        serde_json::json!([500, 387, 299, 232, 179, 139, 107, 83, 64, 50])
    );
    assert_eq!(report["classes"][0], "airplane");
    assert_eq!(report["pipeline"]["images_shape"], serde_json::json!([16, 3, 32, 32]));
    assert_eq!(report["pipeline"]["logits_shape"], serde_json::json!([16, 10]));

    // A more imbalanced split can be cut from it; a less imbalanced one cannot.
    let report = stdout_json(&tailguard(&[
        "data",
        "--dataset",
        "cifar10",
        "--data-dir",
        &data,
        "--imbalance",
        "100",
        "--json",
    ]));
    assert_eq!(
        report["counts"],
        serde_json::json!([500, 299, 179, 107, 64, 38, 23, 13, 8, 5])
    );
    assert_clean_failure(
        &tailguard(&["data", "--dataset", "cifar10", "--data-dir", &data, "--imbalance", "5"]),
        "asks for",
    );
}

#[test]
fn export_writes_an_archive_that_loads_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.tar.gz");
    let report = stdout_json(&tailguard(&[
        "data",
        "--dataset",
        "cifar10",
        "--data-dir",
        &embedded(),
        "--imbalance",
        "10",
        "--n-max",
        "40",
        "--seed",
        "3",
        "--export",
        out.to_str().unwrap(),
        "--test-per-class",
        "4",
        "--json",
    ]));
    let counts = serde_json::json!([40, 30, 23, 18, 14, 11, 8, 6, 5, 4]);
    assert_eq!(report["counts"], counts);
    assert_eq!(report["total"], 159);

    use tailguard_longtail::{DatasetKind, Split};
    let train = DatasetKind::Cifar10.load(&out, Split::Train).unwrap();
    let test = DatasetKind::Cifar10.load(&out, Split::Test).unwrap();
    assert_eq!(serde_json::json!(train.class_counts()), counts);
    assert_eq!(test.class_counts(), vec![4; 10]);
    assert_eq!(train.classes()[9], "truck");
}
