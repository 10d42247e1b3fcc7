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

/// An untrained small CNN checkpoint for CIFAR-10's classes, with recorded training counts.
fn small_checkpoint(dir: &std::path::Path) -> std::path::PathBuf {
    use tailguard_models::{Architecture, CheckpointMeta, ModelConfig, save_checkpoint};
    let config = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10);
    let model = config.init::<tailguard_flex::Flex>(&Default::default()).unwrap();
    let classes = tailguard_longtail::sources::cifar::CIFAR10_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut meta = CheckpointMeta::new(config, classes);
    meta.training = serde_json::json!({"class_counts": [500, 387, 299, 232, 179, 139, 107, 83, 64, 50]});
    let path = dir.join("ckpt");
    save_checkpoint(&path, &model, &meta).unwrap();
    path
}

#[test]
fn eval_writes_json_markdown_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = small_checkpoint(dir.path());
    let report_dir = dir.path().join("report");
    let output = tailguard(&[
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--data-dir",
        &embedded(),
        "--attacks",
        "clean,fgsm,pgd20,aa-lite",
        "--eps",
        "8/255",
        "--limit",
        "60",
        "--batch-size",
        "32",
        "--report",
        report_dir.to_str().unwrap(),
        "--json",
        "--robustbench-json",
        dir.path().join("entry.json").to_str().unwrap(),
    ]);
    let report = stdout_json(&output);
    assert_eq!(report["test_images"], 60);
    assert_eq!(report["arch"], "small-cnn-4");
    assert!((report["eps_255"].as_f64().unwrap() - 8.0).abs() < 1e-9);
    let attacks = report["attacks"].as_array().unwrap();
    let names: Vec<&str> = attacks.iter().map(|a| a["attack"].as_str().unwrap()).collect();
    assert_eq!(names, ["clean", "fgsm", "pgd20", "aa-lite"]);
    let accuracy = |i: usize| attacks[i]["accuracy"].as_f64().unwrap();
    assert!(accuracy(3) <= accuracy(0), "AA-lite cannot beat clean accuracy");
    // Per-class accuracies average to the balanced accuracy.
    let per_class: Vec<f64> = attacks[0]["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let mean = per_class.iter().sum::<f64>() / per_class.len() as f64;
    assert!((mean - attacks[0]["balanced_accuracy"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(report["groups"]["many"], serde_json::json!([0, 1, 2, 3, 4, 5, 6]));
    let stages = &attacks[3]["stages"];
    assert!((stages["clean"].as_f64().unwrap() / 60.0 - accuracy(0)).abs() < 1e-12);
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(
        md.contains("Balanced robustness") && md.contains("| aa-lite |") && md.contains("per_class.png"),
        "{md}"
    );
    let png = image::open(report_dir.join("per_class.png")).unwrap();
    assert!(png.width() >= 640 && png.height() == 480);
    // Per image: a row per test image, a cell per attack; the cells agree with the counts of report.json.
    let csv = std::fs::read_to_string(report_dir.join("per_image.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("image,label,clean,fgsm,pgd20,aa-lite"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 60);
    for (column, attack) in attacks.iter().enumerate() {
        let robust = rows.iter().filter(|r| r[2 + column] == "-").count();
        let correct: u64 = attack["correct"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(robust as u64, correct, "{}", attack["attack"]);
    }
    // AA-lite names the stage that broke each image; the stages' counts follow.
    let broken_by = |stage: &str| rows.iter().filter(|r| r[5] == stage).count() as u64;
    let count = |key: &str| stages[key].as_u64().unwrap();
    assert_eq!(broken_by("clean"), 60 - count("clean"));
    assert_eq!(broken_by("apgd-ce"), count("clean") - count("apgd_ce"));
    assert_eq!(broken_by("apgd-t"), count("apgd_ce") - count("apgd_t"));
    // AutoAttack counts a clean miss as broken at its clean stage, and only those.
    for row in &rows {
        assert_eq!(row[2] == "x", row[5] == "clean", "{row:?}");
        assert!(row[1].parse::<usize>().unwrap() < 10);
    }

    // An evaluation with AutoAttack runs the gradient-masking checks and says what they found.
    let checks = report["masking_checks"]
        .as_array()
        .expect("masking checks with AutoAttack");
    for warning in checks {
        assert!(
            warning["check"].is_string() && warning["advice"].is_string(),
            "{warning}"
        );
    }
    assert!(md.contains("Gradient-masking"), "{md}");
    // The RobustBench entry: the leaderboard's fields, as its model_info files write them, and the long-tail ones.
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("entry.json")).unwrap()).unwrap();
    assert_eq!(entry["eps"], "8/255");
    assert_eq!(entry["dataset"], "cifar10");
    assert_eq!(entry["architecture"], "small-cnn-4");
    assert_eq!(entry["clean_acc"], format!("{:.2}", 100.0 * accuracy(0)));
    assert_eq!(entry["autoattack_acc"], format!("{:.2}", 100.0 * accuracy(3)));
    assert_eq!(entry["number_forward_passes"], 1);
    assert_eq!(entry["tailguard"]["autoattack"], "lite");
    assert_eq!(
        entry["tailguard"]["balanced_autoattack_acc"],
        attacks[3]["balanced_accuracy"]
    );
    assert_eq!(entry["tailguard"]["per_class_autoattack_acc"], attacks[3]["per_class"]);
    assert!(entry["footnote"].as_str().unwrap().contains("60 images"), "{entry}");
    for key in [
        "link",
        "name",
        "authors",
        "additional_data",
        "venue",
        "reported",
        "unreliable",
    ] {
        assert!(entry.get(key).is_some(), "{key}");
    }

    // Two runs side by side.
    let compare_dir = dir.path().join("compare");
    let output = tailguard(&[
        "compare",
        report_dir.to_str().unwrap(),
        report_dir.to_str().unwrap(),
        "--out",
        compare_dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("aa-lite (balanced)") && table.lines().count() >= 4,
        "{table}"
    );
    assert!(compare_dir.join("compare.png").exists() && compare_dir.join("compare.md").exists());
    assert_clean_failure(&tailguard(&["compare", checkpoint.to_str().unwrap()]), "report.json");
}

#[test]
fn eval_adjusts_logits_after_the_fact() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = small_checkpoint(dir.path());
    let data = embedded();
    let eval = |name: &str, extra: &[&str]| {
        let report = dir.path().join(name);
        let mut args = vec![
            "eval",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--dataset",
            "cifar10",
            "--data-dir",
            &data,
            "--attacks",
            "clean,pgd10",
            "--limit",
            "100",
            "--report",
            report.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        stdout_json(&tailguard(&args))
    };
    // A huge tau drowns the untrained model's logits: every image goes to the rarest class (truck, 50 images),
    // clean and attacked alike.
    let report = eval("huge", &["--logit-adjustment", "1000"]);
    assert_eq!(
        report["logit_adjustment"],
        serde_json::json!({"tau": 1000.0, "scale": 1.0})
    );
    for attack in report["attacks"].as_array().unwrap() {
        let per_class = attack["per_class"].as_array().unwrap();
        for (class, accuracy) in per_class.iter().enumerate() {
            if let Some(accuracy) = accuracy.as_f64() {
                assert_eq!(
                    accuracy,
                    if class == 9 { 1.0 } else { 0.0 },
                    "{}: class {class}",
                    attack["attack"]
                );
            }
        }
    }
    let md = std::fs::read_to_string(dir.path().join("huge/report.md")).unwrap();
    assert!(md.contains("`1 z - 1000 log(pi)`"), "{md}");
    // RoBal-N's preset, recorded; without adjustment the field is absent.
    let report = eval("robal-n", &["--robal-n"]);
    assert_eq!(
        report["logit_adjustment"],
        serde_json::json!({"tau": 0.1, "scale": 10.0})
    );
    assert!(eval("plain", &[]).get("logit_adjustment").is_none());
}

#[test]
fn bad_eval_input_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = small_checkpoint(dir.path());
    let ckpt = checkpoint.to_str().unwrap();
    let report = dir.path().join("r");
    let report = report.to_str().unwrap();
    let data = embedded();
    let base = [
        "eval",
        "--checkpoint",
        ckpt,
        "--dataset",
        "cifar10",
        "--data-dir",
        &data,
        "--report",
        report,
    ];
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        tailguard(&args)
    };
    assert_clean_failure(&with(&["--eps=-1/255"]), "eps must be a non-negative number");
    assert_clean_failure(&with(&["--attacks", "clean,deepfool"]), "deepfool");
    assert_clean_failure(&with(&["--lt-test", "0.5"]), ">= 1");
    assert_clean_failure(&with(&["--train-counts", "1,2,3"]), "3 training counts");
    assert_clean_failure(&with(&["--logit-adjustment", "0.1", "--logit-scale", "0"]), "positive");
    let no_counts = &["--logit-adjustment", "0.1", "--train-counts", "5,5,5,5,5,5,5,5,5,0"];
    assert_clean_failure(&with(no_counts), "class 9 has no training images");
    let missing = [
        "eval",
        "--checkpoint",
        "/no/ckpt",
        "--dataset",
        "cifar10",
        "--data-dir",
        &data,
        "--report",
        report,
    ];
    assert_clean_failure(&tailguard(&missing), "/no/ckpt");
    let wrong = [
        "eval",
        "--checkpoint",
        ckpt,
        "--dataset",
        "cifar100",
        "--data-dir",
        &data,
        "--report",
        report,
    ];
    assert_clean_failure(&tailguard(&wrong), "cifar");
}

fn config_path(name: &str) -> String {
    format!("{}/../../configs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn train_dry_run_shows_the_plan() {
    let data = format!("data.data_dir={}", embedded());
    let config = config_path("cifar10-lt/taet-rho10.toml");
    let plan = stdout_json(&tailguard(&[
        "train",
        "--config",
        &config,
        "--set",
        &data,
        "--set",
        "data.n_max=500",
        "--dry-run",
        "--json",
    ]));
    assert_eq!(plan["method"], "taet");
    let stages: Vec<String> = serde_json::from_value(plan["stages"].clone()).unwrap();
    assert_eq!(stages.len(), 100);
    assert!(stages[..40].iter().all(|s| s == "clean") && stages[40..].iter().all(|s| s == "adversarial"));
    assert_eq!(
        plan["train_counts"],
        serde_json::json!([500, 387, 299, 232, 179, 139, 107, 83, 64, 50])
    );
    assert!(
        plan.get("eps_per_class").is_none(),
        "no RobustLT, no class-wise budgets"
    );

    let plan = stdout_json(&tailguard(&[
        "train",
        "--config",
        &config_path("cpu/robustlt-at-bsl-small.toml"),
        "--set",
        &data,
        "--dry-run",
        "--json",
    ]));
    let eps: Vec<f64> = serde_json::from_value(plan["eps_per_class"].clone()).unwrap();
    assert!(
        (eps[0] - 0.7 * 8.0).abs() < 1e-9,
        "head class gets (1 - alpha) eps: {eps:?}"
    );
    assert!(
        eps.windows(2).all(|w| w[0] < w[1]),
        "budgets grow towards the tail: {eps:?}"
    );
    assert_eq!(plan["intensity"][0], 0.0);
}

#[test]
fn train_runs_and_resumes_through_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let data = format!("data.data_dir={}", embedded());
    let config = config_path("cpu/natural-small.toml");
    let output = tailguard(&[
        "train",
        "--config",
        &config,
        "--set",
        &data,
        "--set",
        "data.n_max=50",
        "--set",
        "optim.epochs=1",
        "--out",
        out,
        "--json",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let record: serde_json::Value =
        serde_json::from_slice(output.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(record["epoch"], 1);
    assert_eq!(record["stage"], "clean");
    assert!(record["loss"].as_f64().unwrap().is_finite());
    for chart in ["curves_accuracy.png", "curves_loss.png", "curves_lr.png"] {
        assert!(std::path::Path::new(out).join(chart).exists(), "{chart}");
    }
    let output = tailguard(&["train", "--resume", out]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("finished"));
    // Starting a new run over it is refused.
    let again = tailguard(&["train", "--config", &config, "--set", &data, "--out", out]);
    assert_clean_failure(&again, "--resume");
}

#[test]
fn bad_training_configs_fail_with_one_line() {
    let config = config_path("cifar10-lt/taet-rho10.toml");
    let with = |sets: &[&str]| {
        let mut args = vec!["train", "--config", config.as_str(), "--dry-run"];
        for s in sets {
            args.push("--set");
            args.push(s);
        }
        tailguard(&args)
    };
    assert_clean_failure(&with(&["method.ce_epochs=200"]), "exceeds optim.epochs");
    assert_clean_failure(&with(&["optim.learning_rate=0.1"]), "learning_rate");
    assert_clean_failure(&with(&["attack.eps=-1"]), "[0, 1]");
    assert_clean_failure(&with(&["data.data_dir=/no/such/data"]), "/no/such/data");
    assert_clean_failure(
        &tailguard(&["train", "--config", "/no/config.toml", "--out", "x"]),
        "/no/config.toml",
    );
    let dir = tempfile::tempdir().unwrap();
    assert_clean_failure(
        &tailguard(&["train", "--resume", dir.path().to_str().unwrap()]),
        "config.toml",
    );
}

#[test]
fn demo_trains_evaluates_and_compares() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let output = tailguard(&[
        "demo",
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        &embedded(),
        "--quick",
        "--limit",
        "20",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for row in ["[natural]", "[PGD-AT]", "[TAET]", "[RobustLT + PGD-AT]"] {
        assert!(md.contains(row), "no row {row}: {md}");
    }
    assert!(
        md.contains("balanced robustness") && md.contains("What the numbers show"),
        "{md}"
    );
    // The reading compares TAET and RobustLT with PGD-AT in words, whichever way it went.
    assert!(md.contains("PGD-AT here in balanced AA-lite robustness"), "{md}");
    for model in ["natural", "pgd-at", "taet", "robustlt-pgd-at"] {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(model).join("report/report.json")).unwrap()).unwrap();
        assert_eq!(report["test_images"], 20);
        let log = std::fs::read_to_string(out.join(model).join("log.jsonl")).unwrap();
        assert_eq!(log.lines().count(), 3);
    }
    assert!(out.join("per_class_aa.png").exists());
    // Each model's report links its training curves.
    let md = std::fs::read_to_string(out.join("taet/report/report.md")).unwrap();
    assert!(md.contains("](../curves_loss.png)"), "{md}");
    let taet_log = std::fs::read_to_string(out.join("taet/log.jsonl")).unwrap();
    assert!(taet_log.lines().next().unwrap().contains("\"stage\":\"clean\""));
    assert!(taet_log.lines().last().unwrap().contains("\"stage\":\"adversarial\""));
}

#[test]
fn export_and_import_round_trip_through_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = small_checkpoint(dir.path());
    let weights = dir.path().join("w.safetensors");
    let output = tailguard(&[
        "export",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--format",
        "safetensors",
        "--out",
        weights.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let imported = dir.path().join("imported");
    let output = tailguard(&[
        "import",
        "--from",
        weights.to_str().unwrap(),
        "--arch",
        "small-cnn-4",
        "--dataset",
        "cifar10",
        "--out",
        imported.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Identical predictions: evaluating both gives the same per-class accuracies.
    let eval = |ckpt: &std::path::Path, name: &str| {
        let report = dir.path().join(name);
        stdout_json(&tailguard(&[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--dataset",
            "cifar10",
            "--data-dir",
            &embedded(),
            "--attacks",
            "clean",
            "--limit",
            "50",
            "--report",
            report.to_str().unwrap(),
            "--json",
        ]))["attacks"][0]["per_class"]
            .clone()
    };
    assert_eq!(eval(&checkpoint, "a"), eval(&imported, "b"));
    assert_clean_failure(
        &tailguard(&[
            "import",
            "--from",
            "model.pt",
            "--arch",
            "resnet18",
            "--dataset",
            "cifar10",
            "--out",
            "x",
        ]),
        "model.pt",
    );
    assert_clean_failure(
        &tailguard(&[
            "import",
            "--from",
            weights.to_str().unwrap(),
            "--arch",
            "resnet18",
            "--dataset",
            "cifar10",
            "--out",
            "x",
        ]),
        "missing",
    );
}

#[test]
fn bench_reports_consistent_throughput_and_flops() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let line = format!(
        "bench --arch small-cnn-4 --batch 4 --iterations 2 --warmup 1 --apgd-iterations 3 --matmul-size 64 \
         --json --out {}",
        out.display()
    );
    let report = stdout_json(&run(&line));
    assert_eq!(
        report,
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&out).unwrap()).unwrap()
    );
    assert!(report["matmul_peak_gflops"].as_f64().unwrap() > 0.0);
    let results = report["results"].as_array().unwrap();
    let workloads: Vec<&str> = results.iter().map(|r| r["workload"].as_str().unwrap()).collect();
    assert_eq!(
        workloads,
        ["natural", "pgd10-at", "taet-stage2", "pgd20-eval", "apgd-ce-eval"]
    );
    // small-cnn-4 on 32x32: 3*4*9*1024 + 4*8*9*256 + 8*16*9*64 + 16*10 multiply-adds per forward pass.
    let forward = 2.0 * (3 * 4 * 9 * 1024 + 4 * 8 * 9 * 256 + 8 * 16 * 9 * 64 + 16 * 10) as f64;
    let passes = [3.0, 23.0, 24.0, 41.0, 9.0]; // forward passes per image; APGD-CE: (3 + 1) * 2 + 1
    for (result, passes) in results.iter().zip(passes) {
        let seconds: Vec<f64> = result["seconds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        assert_eq!(seconds.len(), 2);
        let median = result["median_seconds"].as_f64().unwrap();
        assert!(seconds.contains(&median) && median > 0.0);
        let rate = result["images_per_second"].as_f64().unwrap();
        assert!((rate - 4.0 / median).abs() < 1e-9 * rate);
        assert_eq!(result["flops_per_image"].as_f64().unwrap(), forward * passes);
        let gflops = result["achieved_gflops"].as_f64().unwrap();
        assert!((gflops - forward * passes * rate / 1e9).abs() < 1e-9 * gflops);
        if cfg!(target_os = "linux") {
            assert!(result["peak_memory_bytes"].as_u64().unwrap() > 1 << 20);
        }
    }
}

#[test]
fn bad_bench_input_fails_with_one_line() {
    assert_clean_failure(&run("bench --arch small-cnn --batch 0"), "--batch");
    assert_clean_failure(&run("bench --arch wrn-30-10"), "6n + 4");
    assert_clean_failure(&run("bench --arch small-cnn --iterations 0"), "--iterations");
}

#[test]
fn devices_are_listed_and_a_missing_one_is_a_clear_error() {
    let output = tailguard(&["devices", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listing = stdout_json(&output);
    assert_eq!(listing["backend"], "flex (CPU)");
    assert_eq!(listing["devices"][0]["device"], "cpu");
    assert_eq!(listing["devices"][0]["usable"], true);
    let output = tailguard(&["model", "--arch", "small-cnn", "--device", "cpu", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for device in ["cuda:0", "wgpu:discrete:0", "gpu"] {
        assert_clean_failure(
            &tailguard(&["model", "--arch", "small-cnn", "--device", device]),
            &format!("unknown device '{device}' (expected cpu"),
        );
    }
}

#[test]
fn curves_are_drawn_for_any_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let record = |epoch: usize, loss: f64| {
        serde_json::json!({
            "epoch": epoch, "stage": "adversarial", "lr": 0.1, "loss": loss, "clean_accuracy": 0.3,
            "adversarial_accuracy": 0.1, "eps_per_class": null, "images_per_second": 100.0, "seconds": 1.0,
            "validation_clean": null, "validation_robust": null
        })
        .to_string()
    };
    std::fs::write(
        dir.path().join("log.jsonl"),
        format!("{}\n{}\n", record(1, 2.0), record(2, 1.5)),
    )
    .unwrap();
    let output = tailguard(&["curves", "--run", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let png = std::fs::read(dir.path().join("curves_loss.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    assert_clean_failure(
        &tailguard(&["curves", "--run", dir.path().join("none").to_str().unwrap()]),
        "none",
    );
}

/// One epoch of `configs/cpu/natural-small.toml` without validation, with `sets` on top, into `out`.
fn train_one_natural_epoch(sets: &[&str], out: &std::path::Path) {
    let config = config_path("cpu/natural-small.toml");
    let mut args = vec!["train", "--config", &config, "--out", out.to_str().unwrap()];
    for set in sets.iter().chain(&["data.validation_fraction=0.0", "optim.epochs=1"]) {
        args.extend(["--set", set]);
    }
    let output = tailguard(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Clean accuracy of `run/last` on `dataset` at `data`, as report.json.
fn evaluate_clean(run: &std::path::Path, dataset: &str, data: &str, report: &std::path::Path) -> serde_json::Value {
    let checkpoint = run.join("last");
    stdout_json(&tailguard(&[
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--dataset",
        dataset,
        "--data-dir",
        data,
        "--attacks",
        "clean",
        "--report",
        report.to_str().unwrap(),
        "--json",
    ]))
}

/// A miniature Tiny-ImageNet release: `classes` wnids (in reverse order in wnids.txt), 8x8 images, `train` per class
/// (the first of each class grey), two validation images per class listed in val_annotations.txt.
fn tiny_imagenet_release(root: &std::path::Path, classes: usize, train: usize) {
    let wnids: Vec<String> = (0..classes).rev().map(|c| format!("n{c:08}")).collect();
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("wnids.txt"), wnids.join("\n")).unwrap();
    let val = root.join("val/images");
    std::fs::create_dir_all(&val).unwrap();
    let mut annotations = String::new();
    for (k, wnid) in wnids.iter().enumerate() {
        let dir = root.join("train").join(wnid).join("images");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..train {
            let path = dir.join(format!("{wnid}_{i}.JPEG"));
            let pixel = |x: u32, y: u32| [(40 * k as u32 + x * 9) as u8, (y * 20) as u8, (i * 7) as u8];
            if i == 0 {
                image::GrayImage::from_fn(8, 8, |x, y| image::Luma([pixel(x, y)[0]]))
                    .save_with_format(&path, image::ImageFormat::Jpeg)
                    .unwrap();
            } else {
                image::RgbImage::from_fn(8, 8, |x, y| image::Rgb(pixel(x, y)))
                    .save_with_format(&path, image::ImageFormat::Jpeg)
                    .unwrap();
            }
        }
        for j in 0..2 {
            let name = format!("val_{k}_{j}.JPEG");
            image::RgbImage::from_pixel(8, 8, image::Rgb([k as u8 * 30, j as u8, 0]))
                .save_with_format(val.join(&name), image::ImageFormat::Jpeg)
                .unwrap();
            annotations += &format!("{name}\t{wnid}\t0\t0\t7\t7\n");
        }
    }
    std::fs::write(root.join("val/val_annotations.txt"), annotations).unwrap();
}

#[test]
fn tiny_imagenet_lt_splits_trains_and_evaluates_its_first_classes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiny-imagenet-200");
    tiny_imagenet_release(&root, 5, 20);
    let data = root.to_str().unwrap();
    // RobustLT's protocol on the first 4 of 5 classes: n_c = int(20 * 10^(-c/3)).
    let split = stdout_json(&run(&format!(
        "data --dataset tinyimagenet --data-dir {data} --imbalance 10 --classes 4 --json"
    )));
    assert_eq!(split["counts"], serde_json::json!([20, 9, 4, 2]));
    let run_dir = dir.path().join("run");
    train_one_natural_epoch(
        &[
            "data.dataset=tinyimagenet",
            &format!("data.data_dir={data}"),
            "data.classes=4",
        ],
        &run_dir,
    );
    // The checkpoint knows 4 classes; evaluation keeps the test set's first 4 (2 images each).
    let report = evaluate_clean(&run_dir, "tinyimagenet", data, &dir.path().join("report"));
    assert_eq!(report["test_images"], 8);
    assert_eq!(
        report["classes"],
        serde_json::json!(["n00000000", "n00000001", "n00000002", "n00000003"])
    );
    assert_eq!(report["train_counts"], serde_json::json!([20, 9, 4, 2]));
}

#[test]
fn list_file_datasets_split_train_and_evaluate_at_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lt");
    // ImageNet-LT's layout in miniature: images of several sizes under the root, `Toy_LT_{train,test}.txt` lists.
    for (split, per_class) in [("train", [12usize, 6, 3]), ("test", [2, 2, 2])] {
        let mut list = String::new();
        for (label, &n) in per_class.iter().enumerate() {
            let folder = root.join(split).join(format!("class{label}"));
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                let (w, h) = (10 + i as u32 % 3, 9);
                let name = format!("{i}.jpg");
                image::RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([(label * 80) as u8, (x * 20) as u8, (y * 25) as u8])
                })
                .save_with_format(folder.join(&name), image::ImageFormat::Jpeg)
                .unwrap();
                list += &format!("{split}/class{label}/{name} {label}\n");
            }
        }
        std::fs::write(root.join(format!("Toy_LT_{split}.txt")), list).unwrap();
    }
    let data = root.to_str().unwrap();
    assert_clean_failure(
        &run(&format!("data --dataset list --data-dir {data} --imbalance 2")),
        "needs an image size",
    );
    let split = stdout_json(&run(&format!(
        "data --dataset list --data-dir {data} --imbalance 4 --image-size 8 --json"
    )));
    assert_eq!(split["counts"], serde_json::json!([12, 6, 3]));
    let run_dir = dir.path().join("run");
    let data_dir = format!("data.data_dir={data}");
    train_one_natural_epoch(
        &["data.dataset=list", &data_dir, "data.image_size=8", "data.imbalance=4"],
        &run_dir,
    );
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("last/checkpoint.json")).unwrap()).unwrap();
    assert_eq!(
        checkpoint["model"]["input_shape"],
        serde_json::json!([3, 8, 8]),
        "{checkpoint}"
    );
    let report = evaluate_clean(&run_dir, "list", data, &dir.path().join("report"));
    assert_eq!(report["test_images"], 6);
    assert_eq!(report["classes"], serde_json::json!(["0", "1", "2"]));
}

/// `tailguard eval` of `checkpoint` on the embedded dataset into `report` with `--json`, and `extra` arguments.
fn eval_embedded(checkpoint: &std::path::Path, report: &std::path::Path, extra: &[&str]) -> Output {
    let data = embedded();
    let mut args = vec![
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--data-dir",
        &data,
        "--report",
        report.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    tailguard(&args)
}

#[test]
fn averaged_weights_are_evaluated_exported_and_compared_by_choice() {
    let dir = tempfile::tempdir().unwrap();
    let (run_dir, plain) = (dir.path().join("run"), dir.path().join("plain"));
    let data = format!("data.data_dir={}", embedded());
    train_one_natural_epoch(&[&data, "data.n_max=40", "ema.decay=0.9"], &run_dir);
    train_one_natural_epoch(&[&data, "data.n_max=40"], &plain);
    let eval = |run: &std::path::Path, weights: &[&str], report: &str| {
        let mut extra = vec!["--attacks", "clean", "--limit", "60"];
        extra.extend(weights);
        eval_embedded(&run.join("last"), &dir.path().join(report), &extra)
    };
    // The average is the default where there is one; raw is chosen explicitly.
    let ema = stdout_json(&eval(&run_dir, &[], "ema"));
    assert_eq!(ema["weights"], "ema");
    let raw = stdout_json(&eval(&run_dir, &["--weights", "raw"], "raw"));
    assert_eq!(raw["weights"], "raw");
    assert_eq!(stdout_json(&eval(&plain, &[], "plain_report"))["weights"], "raw");
    assert_clean_failure(&eval(&plain, &["--weights", "ema"], "plain_ema"), "no weight average");
    // Exports of the two weights differ.
    let export = |weights: &str| {
        let out = dir.path().join(format!("{weights}.safetensors"));
        let last = run_dir.join("last");
        let output = tailguard(&[
            "export",
            "--checkpoint",
            last.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--weights",
            weights,
        ]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        std::fs::read(out).unwrap()
    };
    assert_ne!(export("ema"), export("raw"));
    // compare --weights picks the report of those weights in each folder and names a folder without one.
    std::fs::rename(dir.path().join("ema"), run_dir.join("report-ema")).unwrap();
    std::fs::rename(dir.path().join("raw"), run_dir.join("report")).unwrap();
    let compared = tailguard(&["compare", run_dir.to_str().unwrap(), "--weights", "ema"]);
    let table = String::from_utf8_lossy(&compared.stdout).to_string();
    assert!(compared.status.success() && table.contains("| ema |"), "{table}");
    let compared = tailguard(&["compare", run_dir.to_str().unwrap(), "--weights", "raw"]);
    assert!(String::from_utf8_lossy(&compared.stdout).contains("| raw |"));
    assert_clean_failure(
        &tailguard(&["compare", plain.to_str().unwrap(), "--weights", "ema"]),
        "holds no report",
    );
}

/// TensorBoard event files decoded by hand, independently of the writer: TFRecord framing with its masked CRC-32C
/// (a bitwise CRC here), then the protocol-buffer wire format of `Event` and `Summary`. (step, tag, value) of every
/// scalar, from every file of `dir`.
fn read_tensorboard_scalars(dir: &std::path::Path) -> Vec<(i64, String, f32)> {
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn masked(data: &[u8]) -> u32 {
        let crc = crc32c(data);
        crc.rotate_right(15).wrapping_add(0xa282_ead8)
    }
    fn varint(bytes: &[u8], pos: &mut usize) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = bytes[*pos];
            *pos += 1;
            value |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    /// (field number, wire type, payload bytes) of every field of a message.
    fn fields(bytes: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        let (mut pos, mut out) = (0, Vec::new());
        while pos < bytes.len() {
            let key = varint(bytes, &mut pos);
            let (field, wire) = (key >> 3, key & 7);
            let payload = match wire {
                0 => varint(bytes, &mut pos).to_le_bytes().to_vec(),
                1 => {
                    pos += 8;
                    bytes[pos - 8..pos].to_vec()
                }
                2 => {
                    let len = varint(bytes, &mut pos) as usize;
                    pos += len;
                    bytes[pos - len..pos].to_vec()
                }
                5 => {
                    pos += 4;
                    bytes[pos - 4..pos].to_vec()
                }
                other => panic!("wire type {other}"),
            };
            out.push((field, wire, payload));
        }
        out
    }
    let mut scalars = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let bytes = std::fs::read(entry.path()).unwrap();
        let mut pos = 0;
        let mut first = true;
        while pos < bytes.len() {
            let length = &bytes[pos..pos + 8];
            assert_eq!(
                u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()),
                masked(length)
            );
            let len = u64::from_le_bytes(length.try_into().unwrap()) as usize;
            let data = &bytes[pos + 12..pos + 12 + len];
            let crc = u32::from_le_bytes(bytes[pos + 12 + len..pos + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked(data), "event checksum");
            pos += 16 + len;
            let event = fields(data);
            let step = event
                .iter()
                .find(|f| f.0 == 2)
                .map_or(0, |f| u64::from_le_bytes(f.2.clone().try_into().unwrap()) as i64);
            if first {
                let version = event.iter().find(|f| f.0 == 3).expect("a file starts with its version");
                assert_eq!(version.2, b"brain.Event:2");
                first = false;
            }
            for summary in event.iter().filter(|f| f.0 == 5) {
                for value in fields(&summary.2).into_iter().filter(|f| f.0 == 1) {
                    let value = fields(&value.2);
                    let tag = String::from_utf8(value.iter().find(|f| f.0 == 1).unwrap().2.clone()).unwrap();
                    let simple = value.iter().find(|f| f.0 == 2 && f.1 == 5).unwrap();
                    scalars.push((step, tag, f32::from_le_bytes(simple.2.clone().try_into().unwrap())));
                }
            }
        }
    }
    scalars
}

#[test]
fn tensorboard_events_hold_the_values_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let config = config_path("cpu/natural-small.toml");
    let data = format!("data.data_dir={}", embedded());
    let train = |rest: &[&str]| {
        let mut args = vec!["train", "--config", &config, "--set", &data, "--set", "data.n_max=40"];
        args.extend(rest);
        let output = tailguard(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    train(&[
        "--set",
        "optim.epochs=2",
        "--set",
        "validation.attack_steps=1",
        // Small batches: the loop reads its figures every 10 steps, and each read is a per-step event.
        "--set",
        "optim.batch_size=8",
        "--out",
        run_dir.to_str().unwrap(),
        "--tensorboard",
    ]);
    let scalars = read_tensorboard_scalars(&run_dir.join("tensorboard"));
    let value = |step: i64, tag: &str| {
        scalars
            .iter()
            .find(|(s, t, _)| *s == step && t == tag)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {tag} at {step}: {scalars:?}"))
    };
    let log = std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2);
    for record in &records {
        let epoch = record["epoch"].as_i64().unwrap();
        for (tag, key) in [
            ("epoch/loss", "loss"),
            ("epoch/lr", "lr"),
            ("epoch/train_clean_accuracy", "clean_accuracy"),
            ("epoch/validation_clean_balanced", "validation_clean"),
            ("epoch/validation_robust_balanced", "validation_robust"),
        ] {
            assert_eq!(
                value(epoch, tag),
                record[key].as_f64().unwrap() as f32,
                "{tag} at epoch {epoch}"
            );
        }
        let per_class = record["validation_robust_per_class"].as_array().unwrap();
        assert_eq!(per_class.len(), 10);
        for (class, v) in per_class.iter().enumerate() {
            if let Some(v) = v.as_f64() {
                assert_eq!(value(epoch, &format!("validation_robust_per_class/{class}")), v as f32);
            }
        }
    }
    assert!(scalars.iter().any(|(_, t, _)| t == "step/loss"), "per-step scalars");
    let manifest = std::fs::read_to_string(run_dir.join(".tailguard-outputs.json")).unwrap();
    assert!(manifest.contains("\"tensorboard\""), "{manifest}");
    // The configuration key does the same, for a run that another tailguard continues.
    let keyed = dir.path().join("keyed");
    train(&[
        "--set",
        "optim.epochs=1",
        "--set",
        "data.validation_fraction=0.0",
        "--set",
        "logging.tensorboard=true",
        "--out",
        keyed.to_str().unwrap(),
    ]);
    assert!(!read_tensorboard_scalars(&keyed.join("tensorboard")).is_empty());
}

#[test]
fn evaluation_split_across_devices_counts_as_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = small_checkpoint(dir.path());
    let eval = |extra: &[&str], report: &str| {
        let mut args = vec!["--limit", "75", "--batch-size", "16"];
        args.extend(extra);
        let report = dir.path().join(report);
        let output = eval_embedded(&checkpoint, &report, &args);
        (
            stdout_json(&output),
            std::fs::read_to_string(report.join("per_image.csv")).unwrap(),
        )
    };
    let (one, one_images) = eval(&["--attacks", "clean,fgsm"], "one");
    let (two, two_images) = eval(&["--attacks", "clean,fgsm", "--devices", "cpu:0,cpu:1"], "two");
    assert_eq!(one["attacks"][0]["correct"], two["attacks"][0]["correct"]);
    assert_eq!(one["attacks"][1]["correct"], two["attacks"][1]["correct"]);
    assert_eq!(
        one_images, two_images,
        "the same images, in the same order, with the same outcomes"
    );
    // A random-start attack runs on every image too (its starts, not its validity, differ between devices).
    let (aa, aa_images) = eval(&["--attacks", "clean,aa-lite", "--devices", "cpu:0,cpu:1"], "aa");
    assert_eq!(aa["test_images"], 75);
    assert_eq!(aa_images.lines().count(), 76);
    let stages = &aa["attacks"][1]["stages"];
    assert_eq!(
        stages["clean"].as_u64(),
        aa["attacks"][0]["correct"]
            .as_array()
            .map(|c| c.iter().map(|v| v.as_u64().unwrap()).sum())
    );
    assert_clean_failure(
        &eval_embedded(&checkpoint, &dir.path().join("bad"), &["--devices", "cpu:0,,cpu:1"]),
        "empty entry",
    );
}

#[test]
fn a_robustbench_model_imports_by_id_and_fine_tuning_checks_it_fits() {
    use tailguard_models::robustbench::{Threat, ZooDataset, zoo_model};
    let dir = tempfile::tempdir().unwrap();
    // Wong et al.'s network under RobustBench's tensor names (a RobustBench file holds the same names; the .pt
    // reading, wrappers and prefixes are tested against the package's own files in crates/models/tests).
    let zoo = zoo_model("Wong2020Fast", ZooDataset::Cifar10, Threat::Linf).unwrap();
    let model = zoo.config().init::<tailguard_flex::Flex>(&Default::default()).unwrap();
    let weights = dir.path().join("Wong2020Fast.safetensors");
    tailguard_models::export_safetensors(&model, zoo.arch, &weights).unwrap();
    let ckpt = dir.path().join("wong");
    let output = tailguard(&[
        "import",
        "--from",
        weights.to_str().unwrap(),
        "--robustbench",
        "Wong2020Fast",
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(meta["training"]["robustbench"]["id"], "Wong2020Fast");
    let mean = &meta["model"]["normalization"]["mean"];
    assert_eq!(mean[0].as_f64().unwrap() as f32, 0.4914f32, "{meta}");
    assert!(
        (meta["model"]["normalization"]["std"][0].as_f64().unwrap() - 0.2471).abs() < 1e-6,
        "{meta}"
    );
    // The weights went in whole: exported again, every tensor is the file's.
    let again = dir.path().join("again.safetensors");
    let output = tailguard(&[
        "export",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--format",
        "safetensors",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (a, b) = (
        tailguard_models::read_safetensors(&weights).unwrap(),
        tailguard_models::read_safetensors(&again).unwrap(),
    );
    assert_eq!(a, b);
    // Fine-tuning from it with another architecture named is refused before anything is written.
    let config = format!("{}/../../configs/cpu/natural-small.toml", env!("CARGO_MANIFEST_DIR"));
    let run_dir = dir.path().join("run");
    let data = format!("data.data_dir={}", serde_json::json!(embedded()));
    let output = tailguard(&[
        "train",
        "--config",
        &config,
        "--set",
        &data,
        "--init-from",
        ckpt.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert_clean_failure(&output, "set model.arch = \"preact-resnet18-wong\"");
    assert!(!run_dir.join("log.jsonl").exists());
    // With the architecture named, the plan takes the checkpoint's network, normalisation included.
    let plan = stdout_json(&tailguard(&[
        "train",
        "--config",
        &config,
        "--set",
        &data,
        "--set",
        "model.arch=preact-resnet18-wong",
        "--init-from",
        ckpt.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]));
    assert_eq!(
        plan["model"]["arch"]["name"], "preact-resnet18-wong",
        "{}",
        plan["model"]
    );
    let as_f32 = |v: &serde_json::Value| -> Vec<f32> {
        let values = v["mean"].as_array().unwrap().iter().chain(v["std"].as_array().unwrap());
        values.map(|x| x.as_f64().unwrap() as f32).collect()
    };
    assert_eq!(
        as_f32(&plan["model"]["normalization"]),
        as_f32(&meta["model"]["normalization"])
    );
    // Ids are checked against the table of the leaderboard asked for.
    assert_clean_failure(
        &tailguard(&[
            "import",
            "--from",
            weights.to_str().unwrap(),
            "--robustbench",
            "Wong2020Fast",
            "--threat",
            "l2",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ]),
        "Rice2020Overfitting",
    );
}

#[test]
fn eval_runs_the_l2_threat_model_and_refuses_what_it_lacks_there() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = small_checkpoint(dir.path());
    let report = dir.path().join("l2");
    let entry = dir.path().join("entry.json");
    let json = stdout_json(&tailguard(&[
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--data-dir",
        &embedded(),
        "--attacks",
        "clean,fgsm,aa-lite",
        "--norm",
        "l2",
        "--limit",
        "16",
        "--report",
        report.to_str().unwrap(),
        "--robustbench-json",
        entry.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(json["norm"], "l2");
    assert_eq!(json["eps"], 0.5, "L2's default budget");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("L2 eps = 0.5"), "{md}");
    let entry: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&entry).unwrap()).unwrap();
    assert_eq!(entry["tailguard"]["threat_model"], "L2");
    assert_eq!(entry["eps"], "0.5");
    // Individual mode: AA-lite's two attacks each alone on every clean-correct point, with their own counts; the
    // ensemble can only be as robust as the weaker of them.
    let individual = stdout_json(&tailguard(&[
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--data-dir",
        &embedded(),
        "--attacks",
        "clean,aa-lite",
        "--individual",
        "--norm",
        "l2",
        "--limit",
        "16",
        "--report",
        dir.path().join("individual").to_str().unwrap(),
        "--json",
    ]));
    let accuracy = |report: &serde_json::Value, name: &str| -> f64 {
        let attacks = report["attacks"].as_array().unwrap();
        attacks.iter().find(|a| a["attack"] == name).unwrap()["accuracy"]
            .as_f64()
            .unwrap()
    };
    let names: Vec<&str> = individual["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attack"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["clean", "apgd-ce", "apgd-t"]);
    let ensemble = accuracy(&json, "aa-lite");
    assert!(ensemble <= accuracy(&individual, "apgd-ce").min(accuracy(&individual, "apgd-t")));
    assert_eq!(accuracy(&individual, "clean"), accuracy(&json, "clean"));
    // TAET's training attack is L-inf by definition: refused before any work.
    let refused = dir.path().join("refused");
    assert_clean_failure(
        &tailguard(&[
            "eval",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--dataset",
            "cifar10",
            "--data-dir",
            &embedded(),
            "--attacks",
            "clean,taet-training",
            "--norm",
            "l2",
            "--report",
            refused.to_str().unwrap(),
        ]),
        "taet-training is not available in the l2 ball",
    );
    assert!(!refused.exists());
    assert_clean_failure(
        &tailguard(&[
            "eval",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--dataset",
            "cifar10",
            "--data-dir",
            &embedded(),
            "--eps",
            "2",
            "--report",
            refused.to_str().unwrap(),
        ]),
        "[0, 1] in linf",
    );
}
