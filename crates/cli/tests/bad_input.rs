//! Bad input, table-driven: every case must end with a non-zero exit and one `error:` line that names the problem,
//! show no panic, and leave every file that existed before exactly as it was (hashed before and after).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tailguard_flex::Flex;
use tailguard_models::{Architecture, CheckpointMeta, ModelConfig, save_checkpoint};

fn tailguard(args: &[String]) -> std::process::Output {
    limited_tailguard(args, None)
}

/// Runs tailguard with at most `file_size` bytes per file written (`ulimit -f`): a write past it fails as it would
/// on a disk that fills, which is how the cases below fill a disk midway through a command.
fn limited_tailguard(args: &[String], file_size: Option<u64>) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_tailguard"));
    command.args(args);
    if let Some(bytes) = file_size {
        // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    command.output().unwrap()
}

/// A case line's file-size limit (`{FSIZE=N} command ...`) and the command.
fn file_size_limit(line: &str) -> (Option<u64>, &str) {
    match line.strip_prefix("{FSIZE=").and_then(|rest| rest.split_once("} ")) {
        Some((bytes, command)) => (Some(bytes.parse().unwrap()), command),
        None => (None, line),
    }
}

fn embedded() -> String {
    format!("{}/../../datasets/cifar10-lt-mini.tar.gz", env!("CARGO_MANIFEST_DIR"))
}

fn configs() -> String {
    format!("{}/../../configs", env!("CARGO_MANIFEST_DIR"))
}

/// Content hash of every file under `root`, by path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = path.symlink_metadata().unwrap();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            if meta.file_type().is_symlink() {
                // A link is its target's name, whether or not something is there.
                std::fs::read_link(&path).unwrap().hash(&mut hasher);
                files.insert(path, hasher.finish());
            } else if meta.is_dir() {
                stack.push(path);
            } else {
                std::fs::read(&path).unwrap().hash(&mut hasher);
                files.insert(path, hasher.finish());
            }
        }
    }
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn torch_zip(path: &Path, pickle: &[u8], storages: &[(&str, &[u8])]) {
    tailguard_models::testing::write_torch_zip(path, pickle, storages).unwrap();
}

/// A safetensors file from (name, dtype, shape, raw bytes); offsets are laid out in order.
fn safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut body = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = body.len();
        body.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, body.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(body);
    std::fs::write(path, file).unwrap();
}

fn floats(n: usize, value: f32) -> Vec<u8> {
    (0..n).flat_map(|_| value.to_le_bytes()).collect()
}

/// Everything the cases point at, built once: checkpoints, a trained run, user files, broken variants.
fn world(w: &Path) {
    let cifar: Vec<String> = tailguard_longtail::sources::cifar::CIFAR10_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    // An imported-style small CNN checkpoint.
    let config = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10);
    let model = config.init::<Flex>(&Default::default()).unwrap();
    let mut meta = CheckpointMeta::new(config, cifar.clone());
    meta.training = serde_json::json!({"imported_from": "test"});
    save_checkpoint(&w.join("ckpt"), &model, &meta).unwrap();
    // RobustBench-style files: a narrow Rice et al. network (not the zoo's size) and a whole pickled module.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/robustbench");
    for name in ["preact_v2_w8.pt", "full_module.pt"] {
        std::fs::copy(fixtures.join(name), w.join(name)).unwrap();
    }
    // A linear model's weights under PyTorch names, for the import cases (head.weight [10, 3072], head.bias [10]).
    let linear = ModelConfig::new(Architecture::Linear, 10);
    let linear_model = linear.init::<Flex>(&Default::default()).unwrap();
    tailguard_models::export_safetensors(&linear_model, Architecture::Linear, &w.join("good.safetensors")).unwrap();
    let weight = |v: f32| ("head.weight", "F32", vec![10, 3072], floats(30_720, v));
    let bias = |v: f32| ("head.bias", "F32", vec![10], floats(10, v));
    safetensors(&w.join("nan.safetensors"), &[weight(0.1), bias(f32::NAN)]);
    safetensors(&w.join("inf.safetensors"), &[weight(f32::INFINITY), bias(0.0)]);
    safetensors(
        &w.join("extra.safetensors"),
        &[
            weight(0.1),
            bias(0.0),
            ("features.0.weight", "F32", vec![2], floats(2, 1.0)),
        ],
    );
    safetensors(
        &w.join("i64.safetensors"),
        &[weight(0.1), ("head.bias", "I64", vec![10], vec![0; 80])],
    );
    safetensors(
        &w.join("u8.safetensors"),
        &[weight(0.1), ("head.bias", "U8", vec![10], vec![0; 10])],
    );
    safetensors(
        &w.join("shape.safetensors"),
        &[weight(0.1), ("head.bias", "F32", vec![11], floats(11, 0.0))],
    );
    safetensors(&w.join("missing.safetensors"), &[weight(0.1)]);
    let good = std::fs::read(w.join("good.safetensors")).unwrap();
    std::fs::write(w.join("truncated.safetensors"), &good[..good.len() / 2]).unwrap();
    std::fs::write(w.join("garbage.safetensors"), b"this is not a safetensors file at all").unwrap();
    std::fs::write(w.join("empty.safetensors"), b"").unwrap();
    std::fs::write(w.join("hugeheader.safetensors"), u64::MAX.to_le_bytes()).unwrap();
    let header = br#"{"head.bias":{"dtype":"F32","shape":[10],"data_offsets":[0,99999999999]}}"#;
    let mut offsets = (header.len() as u64).to_le_bytes().to_vec();
    offsets.extend(header);
    offsets.extend([0u8; 40]);
    std::fs::write(w.join("offsets.safetensors"), offsets).unwrap();
    let header = br#"{"head.bias":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,40]}}"#;
    let mut huge = (header.len() as u64).to_le_bytes().to_vec();
    huge.extend(header);
    huge.extend([0u8; 40]);
    std::fs::write(w.join("hugeshape.safetensors"), huge).unwrap();

    // Hostile and broken pickles.
    torch_zip(
        &w.join("deep.pt"),
        &tailguard_models::testing::nested_tuples_pickle(300_000),
        &[],
    );
    torch_zip(&w.join("bomb.pt"), &tailguard_models::testing::memo_bomb_pickle(9), &[]);
    let command = format!("touch {}", w.join("pwned").display());
    let mut exec = b"\x80\x02cos\nsystem\nX".to_vec();
    exec.extend((command.len() as u32).to_le_bytes());
    exec.extend(command.as_bytes());
    exec.extend(b"\x85R.");
    torch_zip(&w.join("exec.pt"), &exec, &[]);
    torch_zip(
        &w.join("eval.pt"),
        b"\x80\x02cbuiltins\neval\n(X\x03\x00\x00\x001+1tR.",
        &[],
    );
    torch_zip(&w.join("opcode.pt"), b"\x80\x02S'text'\n.", &[]);
    torch_zip(&w.join("truncpickle.pt"), b"\x80\x02}(X\x05\x00\x00\x00ab", &[]);
    torch_zip(&w.join("notdict.pt"), b"\x80\x02]q\x00.", &[]);
    torch_zip(&w.join("emptydict.pt"), b"\x80\x02}.", &[]);
    torch_zip(&w.join("memo.pt"), b"\x80\x02h\x07.", &[]);
    torch_zip(&w.join("mark.pt"), b"\x80\x02t.", &[]);
    std::fs::write(w.join("notzip.pt"), b"PK not really a zip").unwrap();
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(w.join("nopkl.pt")).unwrap());
        zip.start_file("archive/readme.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"no pickle").unwrap();
        zip.finish().unwrap();
    }

    // User files tailguard never wrote.
    std::fs::create_dir_all(w.join("user")).unwrap();
    std::fs::write(w.join("user/notes.txt"), b"my notes").unwrap();
    std::fs::write(w.join("user/log.jsonl"), b"{\"mine\": true}\n").unwrap();
    std::fs::write(w.join("user/compare.md"), b"my comparison").unwrap();
    std::fs::write(w.join("user/report.md"), b"my report").unwrap();
    std::fs::write(w.join("user/w.safetensors"), b"my weights").unwrap();
    std::fs::write(w.join("user/split.json"), b"{}").unwrap();
    std::fs::write(w.join("user/bench.json"), b"{}").unwrap();
    std::fs::create_dir_all(w.join("user/ckdir")).unwrap();
    std::fs::write(w.join("user/ckdir/model.mpk"), b"not a model").unwrap();
    std::fs::write(w.join("user/ckdir/keep.txt"), b"keep").unwrap();
    // A folder whose manifest claims nothing: tailguard's manifest format, but the user's log.
    std::fs::create_dir_all(w.join("userlog")).unwrap();
    std::fs::write(w.join("userlog/log.jsonl"), b"{\"mine\": true}\n").unwrap();
    std::fs::write(
        w.join("userlog/.tailguard-outputs.json"),
        br#"{"written_by":"tailguard","entries":[]}"#,
    )
    .unwrap();

    // Broken checkpoints.
    for name in [
        "ck_trunc",
        "ck_nometa",
        "ck_badjson",
        "ck_format",
        "ck_arch",
        "ck_nomodel",
        "ck_classes",
    ] {
        copy_dir(&w.join("ckpt"), &w.join(name));
    }
    let model_bytes = std::fs::read(w.join("ckpt/model.mpk")).unwrap();
    std::fs::write(w.join("ck_trunc/model.mpk"), &model_bytes[..model_bytes.len() / 3]).unwrap();
    std::fs::remove_file(w.join("ck_nometa/checkpoint.json")).unwrap();
    std::fs::write(w.join("ck_badjson/checkpoint.json"), b"{\"format\": ").unwrap();
    let edit_meta = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let path = w.join(name).join("checkpoint.json");
        let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut meta);
        std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    };
    edit_meta("ck_format", &|m| m["format"] = "someone-else/9".into());
    edit_meta("ck_arch", &|m| {
        m["model"]["arch"] = serde_json::json!({"name": "small-cnn", "width": 8})
    });
    edit_meta("ck_classes", &|m| m["classes"] = serde_json::json!(["a", "b"]));
    std::fs::remove_file(w.join("ck_nomodel/model.mpk")).unwrap();

    // A trained run (one epoch) and broken copies of it.
    let output = tailguard(&args(
        w,
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={D} --set data.n_max=30 --set optim.epochs=1 \
         --set validation.attack_steps=1 --out {W}/run --json",
    ));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for name in [
        "run_state",
        "run_opt",
        "run_edit",
        "run_seed",
        "run_noconf",
        "run_nock",
        "run_badconf",
        "run_lock",
    ] {
        copy_dir(&w.join("run"), &w.join(name));
    }
    std::fs::write(w.join("run_state/last/train_state.json"), b"{\"next_epoch\": ").unwrap();
    std::fs::remove_file(w.join("run_opt/last/optimizer.mpk")).unwrap();
    let config = std::fs::read_to_string(w.join("run/config.toml")).unwrap();
    std::fs::write(w.join("run_edit/config.toml"), config.replace("small-cnn", "resnet18")).unwrap();
    std::fs::write(w.join("run_seed/config.toml"), config.replace("seed = 0", "seed = 7")).unwrap();
    std::fs::remove_file(w.join("run_noconf/config.toml")).unwrap();
    std::fs::remove_dir_all(w.join("run_nock/last")).unwrap();
    std::fs::write(w.join("run_badconf/config.toml"), b"[optim\nepochs = ").unwrap();

    // A report and an export folder that tailguard wrote, for the disks that fill midway.
    let output = tailguard(&args(
        w,
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --attacks clean --limit 20 --report {W}/rep_old",
    ));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::create_dir(w.join("exports")).unwrap();
    let output = tailguard(&args(
        w,
        "export --checkpoint {W}/ckpt --out {W}/exports/first.safetensors",
    ));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // Configurations and data.
    std::fs::write(w.join("syntax.toml"), b"[data\ndataset = ").unwrap();
    std::fs::write(w.join("empty.toml"), b"").unwrap();
    let small = std::fs::read_to_string(format!("{}/cpu/natural-small.toml", configs())).unwrap();
    std::fs::write(w.join("unknown.toml"), format!("{small}\n[extra]\nkey = 1\n")).unwrap();
    std::fs::write(w.join("types.toml"), small.replace("epochs = 6", "epochs = \"six\"")).unwrap();
    std::fs::write(w.join("corrupt.tar.gz"), b"\x1f\x8b\x08garbage garbage").unwrap();
    std::fs::create_dir_all(w.join("emptydata/train")).unwrap();
    std::fs::create_dir_all(w.join("badimages/train/cat")).unwrap();
    std::fs::write(w.join("badimages/train/cat/0.png"), b"not a png").unwrap();
    std::fs::write(w.join("notes.txt"), b"a user's file").unwrap();
    // A user's link that points nowhere (yet), and one to the user's notes.
    std::os::unix::fs::symlink(w.join("not-yet-there.safetensors"), w.join("dangling.safetensors")).unwrap();
    std::os::unix::fs::symlink(w.join("notes.txt"), w.join("tonotes.safetensors")).unwrap();

    // Sizes and values from files that must be bounded or checked before anything is allocated or drawn.
    // A 4.6 KB tar whose one header declares a 1 PiB CIFAR member.
    let mut header = tar::Header::new_gnu();
    header.set_path("cifar-10-batches-bin/data_batch_1.bin").unwrap();
    header.set_size(1 << 50);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_cksum();
    let mut hostile = header.as_bytes().to_vec();
    hostile.extend([0u8; 4096]);
    std::fs::write(w.join("hugemember.tar"), hostile).unwrap();
    // Configuration text: a second [data], a duplicate key, a non-ASCII bare key, an integer too large, a 10 MB value.
    std::fs::write(w.join("twodata.toml"), format!("{small}\n[data]\nimbalance = 2.0\n")).unwrap();
    std::fs::write(
        w.join("dupkey.toml"),
        small.replacen("[optim]\n", "[optim]\nlr = 0.3\n", 1),
    )
    .unwrap();
    // Keys at known lines, for errors that name the line.
    let placed = |steps: &str, alpha: &str| {
        format!(
            "[attack]\neps = \"8/255\"\nstep_size = \"2/255\"\nsteps = {steps}\n[method]\nname = \"taet\"\n\
             ce_epochs = 1\nalpha = {alpha}\n[data]\ndataset = \"cifar10\"\ndata_dir = \"x\"\nimbalance = 10.0\n\
             [model]\narch = \"small-cnn\"\n[optim]\nepochs = 2\nlr = 0.05\n\
             schedule = {{ name = \"cosine\", min_lr = 0.0 }}\n"
        )
    };
    std::fs::write(w.join("line4.toml"), placed("-3", "1.0")).unwrap();
    std::fs::write(w.join("line8.toml"), placed("3", "nan")).unwrap();
    std::fs::write(w.join("nonascii.toml"), format!("clé = 1\n{small}")).unwrap();
    std::fs::write(
        w.join("bigint.toml"),
        small.replace("seed = 0", "seed = 99999999999999999999999"),
    )
    .unwrap();
    std::fs::write(
        w.join("longvalue.toml"),
        small.replace(
            "dataset = \"cifar10\"",
            &format!("dataset = \"{}\"", "x".repeat(10_000_000)),
        ),
    )
    .unwrap();
    // A one-class image folder and a one-class model: attacks that compare with another class are refused.
    for split in ["train", "test"] {
        std::fs::create_dir_all(w.join(format!("oneclass/{split}/cat"))).unwrap();
        for i in 0..2u8 {
            image::RgbImage::from_pixel(32, 32, image::Rgb([40 * i, 90, 200]))
                .save(w.join(format!("oneclass/{split}/cat/{i}.png")))
                .unwrap();
        }
    }
    // ... and one whose class name holds a newline.
    for split in ["train", "test"] {
        std::fs::create_dir_all(w.join(format!("nlclass/{split}/a\nb"))).unwrap();
        image::RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]))
            .save(w.join(format!("nlclass/{split}/a\nb/0.png")))
            .unwrap();
    }
    let one = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 1);
    let one_model = one.init::<Flex>(&Default::default()).unwrap();
    save_checkpoint(
        &w.join("ck_one"),
        &one_model,
        &CheckpointMeta::new(one, vec!["cat".into()]),
    )
    .unwrap();
    // Logs that are not one run: empty, per-class budgets of changing length, one line that is not JSON.
    let record: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(w.join("run/log.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(w.join("log_empty")).unwrap();
    std::fs::write(w.join("log_empty/log.jsonl"), b"").unwrap();
    std::fs::create_dir_all(w.join("log_budgets")).unwrap();
    let mut lines = String::new();
    for (epoch, classes) in [(1, 10), (2, 3)] {
        let mut r = record.clone();
        r["epoch"] = epoch.into();
        r["eps_per_class"] = serde_json::json!(vec![8.0; classes]);
        lines.push_str(&format!("{r}\n"));
    }
    std::fs::write(w.join("log_budgets/log.jsonl"), lines).unwrap();
    std::fs::create_dir_all(w.join("log_garbage")).unwrap();
    std::fs::write(w.join("log_garbage/log.jsonl"), format!("{record}\nnot json\n")).unwrap();
}

/// Ports for the multi-machine cases: one a listener of the test holds ({BUSY}), one nothing listens on ({CLOSED}).
static PORTS: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();

/// Splits a command line on whitespace after filling in {W} (world), {C} (configs), {D} (embedded data) and the
/// ports.
fn args(w: &Path, line: &str) -> Vec<String> {
    let (busy, closed) = PORTS.get().copied().unwrap_or_default();
    line.replace("{W}", w.to_str().unwrap())
        .replace("{C}", &configs())
        .replace("{D}", &embedded())
        .replace("{BUSY}", &busy.to_string())
        .replace("{CLOSED}", &closed.to_string())
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// (command line, text the error must contain).
const CASES: &[(&str, &str)] = &[
    // Configurations and --set.
    ("train --config {W}/nothere.toml --dry-run", "nothere.toml"),
    (
        "import --from {W}/full_module.pt --robustbench Wong2020Fast --out {W}/rb1",
        "whole module (torch.save(model)), not a state dict",
    ),
    (
        "import --from {W}/preact_v2_w8.pt --robustbench Wong2020Fast --out {W}/rb2",
        "does not fit RobustBench's cifar10 Linf Wong2020Fast (preact-resnet18-wong): conv1.weight has shape [8, 3, 3, 3]",
    ),
    (
        "import --from {W}/preact_v2_w8.pt --robustbench Nope --out {W}/rb3",
        "cifar10 Linf model 'Nope'; it imports Standard, Wong2020Fast",
    ),
    (
        "import --from {W}/preact_v2_w8.pt --robustbench Wong2020Fast --threat l2 --out {W}/rb4",
        "cifar10 L2 model 'Wong2020Fast'",
    ),
    (
        "import --from {W}/preact_v2_w8.pt --robustbench Standard --threat l3 --out {W}/rb5",
        "--threat must be linf or l2, got 'l3'",
    ),
    (
        "import --from {W}/nothere.pt --robustbench Standard --out {W}/rb6",
        "nothere.pt",
    ),
    (
        "import --from {W}/preact_v2_w8.pt --robustbench Standard --arch resnet18 --out {W}/rb7",
        "cannot be used with",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={D} --init-from {W}/nothere --dry-run",
        "model.init_from",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={D} --init-from {W}/ckpt --set model.arch=resnet18 --dry-run",
        "set model.arch = \"small-cnn-4\"",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --norm l3 --report {W}/n1",
        "the norm must be linf or l2",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --norm l2 --attacks taet-training --report {W}/n2",
        "taet-training is not available in the l2 ball",
    ),
    ("train --config {W}/syntax.toml --dry-run", "syntax.toml"),
    ("train --config {W}/empty.toml --dry-run", "missing field"),
    ("train --config {W}/unknown.toml --dry-run", "extra"),
    ("train --config {W}/types.toml --dry-run", "six"),
    (
        "train --config {C}/cpu/natural-small.toml --set optim.lr --dry-run",
        "optim.lr",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set =3 --dry-run",
        "empty part",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set optim.lr=-1 --dry-run",
        "optim.lr",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set optim.epochs=0 --dry-run",
        "epochs",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set optim.batch_size=0 --dry-run",
        "batch_size",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.imbalance=0.5 --dry-run",
        "data.imbalance",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.validation_fraction=2 --dry-run",
        "validation_fraction",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={W}/nodata --dry-run",
        "nodata",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={W}/corrupt.tar.gz --dry-run",
        "corrupt.tar.gz",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={W}/notes.txt --dry-run",
        "notes.txt",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set model.arch=resnet99 --dry-run",
        "resnet99",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set method.name=magic --dry-run",
        "magic",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set attack.eps=2 --dry-run",
        "[0, 1]",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set attack.eps=\"8/0\" --dry-run",
        "zero",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set attack.steps=-3 --dry-run",
        "attack.steps",
    ),
    (
        "train --config {C}/cifar10-lt/taet-rho10.toml --set method.ce_epochs=999 --dry-run",
        "exceeds optim.epochs",
    ),
    (
        "train --config {C}/cifar10-lt/taet-rho10.toml --set optim.learning_rate=0.1 --dry-run",
        "learning_rate",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set seed=-1 --dry-run",
        "seed",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.dataset=mnist --dry-run",
        "mnist",
    ),
    // Where a run is written.
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={D} --out {W}/user",
        "not empty",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={D} --out {W}/userlog --force",
        "log.jsonl",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={D} --out {W}/run",
        "--resume",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --set data.data_dir={D} --out {W}/notes.txt",
        "notes.txt",
    ),
    (
        "train --config {C}/cpu/natural-small.toml --out {W}/x --resume {W}/run",
        "cannot be used with",
    ),
    // Resume.
    ("train --resume {W}/nothere", "nothere"),
    ("train --resume {W}/user", "no config.toml"),
    ("train --resume {W}/run_noconf", "no config.toml"),
    ("train --resume {W}/run_nock", "no checkpoint yet"),
    ("train --resume {W}/run_state", "train_state.json"),
    ("train --resume {W}/run_opt", "optimizer.mpk"),
    ("train --resume {W}/run_edit", "model.arch"),
    ("train --resume {W}/run_seed", "seed: 0 -> 7"),
    ("train --resume {W}/run_badconf", "run_badconf/config.toml"),
    ("train --resume {W}/run_lock", "in use"),
    // Checkpoints.
    (
        "eval --checkpoint {W}/nothere --dataset cifar10 --data-dir {D} --report {W}/r1",
        "nothere",
    ),
    (
        "eval --checkpoint {W}/ck_trunc --dataset cifar10 --data-dir {D} --report {W}/r2",
        "truncated or damaged",
    ),
    (
        "eval --checkpoint {W}/ck_nometa --dataset cifar10 --data-dir {D} --report {W}/r3",
        "checkpoint.json",
    ),
    (
        "eval --checkpoint {W}/ck_badjson --dataset cifar10 --data-dir {D} --report {W}/r4",
        "checkpoint.json",
    ),
    (
        "eval --checkpoint {W}/ck_format --dataset cifar10 --data-dir {D} --report {W}/r5",
        "someone-else/9",
    ),
    (
        "eval --checkpoint {W}/ck_arch --dataset cifar10 --data-dir {D} --report {W}/r6",
        "another model than small-cnn-8",
    ),
    (
        "eval --checkpoint {W}/ck_nomodel --dataset cifar10 --data-dir {D} --report {W}/r7",
        "model.mpk",
    ),
    (
        "eval --checkpoint {W}/ck_classes --dataset cifar10 --data-dir {D} --report {W}/r8",
        "class",
    ),
    (
        "eval --checkpoint {W}/notes.txt --dataset cifar10 --data-dir {D} --report {W}/r9",
        "notes.txt",
    ),
    (
        "export --checkpoint {W}/ck_trunc --out {W}/e1.safetensors",
        "truncated or damaged",
    ),
    (
        "export --checkpoint {W}/ck_arch --out {W}/e2.safetensors",
        "another model than small-cnn-8",
    ),
    ("export --checkpoint {W}/nothere --out {W}/e3.safetensors", "nothere"),
    // Evaluation.
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --report {W}/user",
        "not empty",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --report {W}/user --force",
        "report.md",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --report {W}/notes.txt",
        "notes.txt",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {W}/nodata --report {W}/r10",
        "nodata",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {W}/corrupt.tar.gz --report {W}/r11",
        "corrupt.tar.gz",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar100 --data-dir {D} --report {W}/r12",
        "cifar",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --report {W}/r13 --eps=-1/255",
        "eps must be a non-negative number",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --report {W}/r14 --attacks fgsm,deepfool",
        "deepfool",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --report {W}/r15 --lt-test 0.5",
        ">= 1",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --report {W}/r16 --train-counts 1,2",
        "2 training counts",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --report {W}/r17 --batch-size 0",
        "--batch-size",
    ),
    // Export.
    (
        "export --checkpoint {W}/ckpt --out {W}/ckpt/model.mpk",
        "already exists",
    ),
    (
        "export --checkpoint {W}/ckpt --out {W}/ckpt/model.mpk --force",
        "not written by tailguard",
    ),
    (
        "export --checkpoint {W}/ckpt --out {W}/user/w.safetensors --force",
        "not written by tailguard",
    ),
    (
        "export --checkpoint {W}/ckpt --out {W}/good.safetensors",
        "already exists",
    ),
    (
        "export --checkpoint {W}/ckpt --out {W}/user",
        "not written by tailguard",
    ),
    ("export --checkpoint {W}/ckpt --format onnx --out {W}/e4.onnx", "onnx"),
    (
        "export --checkpoint {W}/ckpt --out {W}/nofolder/deeper/e5.safetensors",
        "nofolder",
    ),
    // Import: targets.
    (
        "import --from {W}/good.safetensors --arch linear --dataset cifar10 --out {W}/ckpt",
        "already exists",
    ),
    (
        "import --from {W}/good.safetensors --arch linear --dataset cifar10 --out {W}/run/last --force",
        "trained checkpoint",
    ),
    (
        "import --from {W}/good.safetensors --arch linear --dataset cifar10 --out {W}/user --force",
        "not written by tailguard",
    ),
    (
        "import --from {W}/good.safetensors --arch linear --dataset cifar10 --out {W}/user/ckdir --force",
        "ckdir",
    ),
    (
        "import --from {W}/good.safetensors --arch linear --dataset cifar10 --out {W}/notes.txt",
        "notes.txt",
    ),
    (
        "import --from {W}/good.safetensors --arch linear --dataset imagefolder --out {W}/i0",
        "cifar10 or cifar100",
    ),
    (
        "import --from {W}/good.safetensors --arch linear --dataset cifar10 --normalization imagenet --out {W}/i0",
        "imagenet",
    ),
    // Import: safetensors contents.
    (
        "import --from {W}/nothere.safetensors --arch linear --dataset cifar10 --out {W}/i1",
        "nothere.safetensors",
    ),
    (
        "import --from {W}/nan.safetensors --arch linear --dataset cifar10 --out {W}/i2",
        "head.bias holds 10 non-finite",
    ),
    (
        "import --from {W}/inf.safetensors --arch linear --dataset cifar10 --out {W}/i3",
        "non-finite",
    ),
    (
        "import --from {W}/extra.safetensors --arch linear --dataset cifar10 --out {W}/i4",
        "features.0.weight",
    ),
    (
        "import --from {W}/i64.safetensors --arch linear --dataset cifar10 --out {W}/i5",
        "dtype I64",
    ),
    (
        "import --from {W}/u8.safetensors --arch linear --dataset cifar10 --out {W}/i6",
        "dtype U8",
    ),
    (
        "import --from {W}/shape.safetensors --arch linear --dataset cifar10 --out {W}/i7",
        "[11]",
    ),
    (
        "import --from {W}/missing.safetensors --arch linear --dataset cifar10 --out {W}/i8",
        "head.bias is missing",
    ),
    (
        "import --from {W}/truncated.safetensors --arch linear --dataset cifar10 --out {W}/i9",
        "not a safetensors file",
    ),
    (
        "import --from {W}/garbage.safetensors --arch linear --dataset cifar10 --out {W}/i10",
        "not a safetensors file",
    ),
    (
        "import --from {W}/empty.safetensors --arch linear --dataset cifar10 --out {W}/i11",
        "not a safetensors file",
    ),
    (
        "import --from {W}/hugeheader.safetensors --arch linear --dataset cifar10 --out {W}/i12",
        "not a safetensors file",
    ),
    (
        "import --from {W}/offsets.safetensors --arch linear --dataset cifar10 --out {W}/i13",
        "not a safetensors file",
    ),
    (
        "import --from {W}/hugeshape.safetensors --arch linear --dataset cifar10 --out {W}/i14",
        "not a safetensors file",
    ),
    (
        "import --from {W}/good.safetensors --arch resnet18 --dataset cifar10 --out {W}/i15",
        "missing",
    ),
    // Import: pickles.
    (
        "import --from {W}/deep.pt --arch linear --dataset cifar10 --out {W}/p1",
        "nest more than",
    ),
    (
        "import --from {W}/bomb.pt --arch linear --dataset cifar10 --out {W}/p2",
        "memo copies",
    ),
    (
        "import --from {W}/exec.pt --arch linear --dataset cifar10 --out {W}/p3",
        "not a dictionary",
    ),
    (
        "import --from {W}/eval.pt --arch linear --dataset cifar10 --out {W}/p4",
        "not a dictionary",
    ),
    (
        "import --from {W}/opcode.pt --arch linear --dataset cifar10 --out {W}/p5",
        "opcode 0x53",
    ),
    (
        "import --from {W}/truncpickle.pt --arch linear --dataset cifar10 --out {W}/p6",
        "truncated pickle",
    ),
    (
        "import --from {W}/notdict.pt --arch linear --dataset cifar10 --out {W}/p7",
        "not a dictionary",
    ),
    (
        "import --from {W}/emptydict.pt --arch linear --dataset cifar10 --out {W}/p8",
        "head.weight is missing",
    ),
    (
        "import --from {W}/memo.pt --arch linear --dataset cifar10 --out {W}/p9",
        "unknown memo",
    ),
    (
        "import --from {W}/mark.pt --arch linear --dataset cifar10 --out {W}/p10",
        "missing mark",
    ),
    (
        "import --from {W}/notzip.pt --arch linear --dataset cifar10 --out {W}/p11",
        "not a zip archive",
    ),
    (
        "import --from {W}/nopkl.pt --arch linear --dataset cifar10 --out {W}/p12",
        "no data.pkl",
    ),
    // Data.
    ("data --dataset cifar10 --imbalance 0.5", ">= 1"),
    ("data --dataset cifar10 --imbalance 10 --data-dir {W}/nodata", "nodata"),
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {W}/corrupt.tar.gz",
        "corrupt.tar.gz",
    ),
    (
        "data --dataset imagefolder --imbalance 10 --data-dir {W}/emptydata",
        "emptydata",
    ),
    (
        "data --dataset imagefolder --imbalance 10 --data-dir {W}/badimages",
        "0.png",
    ),
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {D} --export {W}/notes.txt",
        "already exists",
    ),
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {D} --export {W}/notes.txt --force",
        "not written by tailguard",
    ),
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {D} --save-split {W}/user/split.json",
        "already exists",
    ),
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {D} --save-split {W}/user/split.json --force",
        "not written",
    ),
    (
        "data --dataset cifar10 --imbalance 10 --save-split {W}/s.json",
        "--data-dir",
    ),
    // Compare, bench, demo.
    ("compare {W}/nothere", "nothere"),
    ("compare {W}/user", "report.json"),
    ("compare {W}/run --out {W}/r18", "no report.json"),
    (
        "bench --arch small-cnn --batch 2 --iterations 1 --warmup 0 --out {W}/user/bench.json",
        "already exists",
    ),
    (
        "bench --arch small-cnn --batch 2 --iterations 1 --warmup 0 --out {W}/user/bench.json --force",
        "not written",
    ),
    ("bench --arch small-cnn --batch 0", "batch"),
    ("demo --out {W}/user --epochs 3 --limit 2", "not empty"),
    // Round two (issue 25), class 1: every size bounded before it is allocated, every value checked before Burn.
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {W}/hugemember.tar",
        "declares 1125899906842624 bytes",
    ),
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {D} --n-max 100000000000000000",
        "largest class",
    ),
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {D} --n-max 501",
        "500 images",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set optim.epochs=1000000000 --dry-run",
        "optim.epochs = 1000000000",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set optim.batch_size=100000000 --dry-run",
        "optim.batch_size",
    ),
    (
        "data --dataset list --imbalance 10 --data-dir {W} --image-size 100000",
        "1 to 4096 pixels",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set data.image_size=100000 --dry-run",
        "data.image_size",
    ),
    ("model --arch wrn-10-100000", "weights"),
    ("model --arch small-cnn-100000000", "weights"),
    (
        "model --arch small-cnn --classes 18446744073709551615",
        "at most 1000000",
    ),
    ("model --arch small-cnn --classes 4000000000", "classes"),
    ("bench --arch small-cnn --matmul-size 1000000", "--matmul-size"),
    ("bench --arch small-cnn --batch 100000000", "--batch"),
    ("bench --arch small-cnn --classes 4000000000", "classes"),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set attack.start=gaussian --set attack.start_std=nan --dry-run",
        "attack.start_std",
    ),
    ("curves --run {W}/log_budgets", "not one run"),
    (
        "eval --checkpoint {W}/ck_one --dataset imagefolder --data-dir {W}/oneclass --attacks clean,cw20 --report {W}/rep_one",
        "cw20 needs a classifier of at least 2 classes",
    ),
    (
        "eval --checkpoint {W}/ck_one --dataset imagefolder --data-dir {W}/oneclass --attacks aa-lite --report {W}/rep_one",
        "at least 4 classes",
    ),
    // Class 4: every numeric key checked against its domain when the configuration is read, every flag first.
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set attack.start_std=-1 --dry-run",
        "attack.start_std must be a finite number > 0",
    ),
    (
        "train --config {C}/demo/taet.toml --set data.data_dir={D} --set method.alpha=nan --dry-run",
        "method.alpha",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set method.name=reat --set method.tau=-inf --dry-run",
        "method.tau",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set method.name=robal --set model.head=cosine --set method.margin=nan --dry-run",
        "method.margin",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set method.name=robal --set model.head=cosine --set method.kl_weight=-1 --dry-run",
        "method.kl_weight",
    ),
    (
        "train --config {C}/demo/taet.toml --set data.data_dir={D} --set method.gamma=inf --dry-run",
        "method.gamma",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set method.name=awp --set method.gamma=-0.1 --dry-run",
        "method.gamma",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --nodes 0 --dry-run",
        "--nodes",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --nodes 2 --node-rank 2",
        "--node-rank 2",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --peer-timeout nan",
        "--peer-timeout",
    ),
    ("demo --limit 0 --out {W}/demo0", "--limit"),
    ("demo --epochs 100000 --out {W}/demo1", "--epochs 100000"),
    // Class 5: messages that name file, line and key, cut long values, and fail when nothing was written.
    (
        "train --config {W}/twodata.toml --set data.data_dir={D} --dry-run",
        "(`[data]`): duplicate key",
    ),
    (
        "train --config {W}/dupkey.toml --set data.data_dir={D} --dry-run",
        "duplicate key",
    ),
    (
        "train --config {W}/nonascii.toml --set data.data_dir={D} --dry-run",
        "line 1",
    ),
    (
        "train --config {W}/bigint.toml --set data.data_dir={D} --dry-run",
        "line 2 (`seed",
    ),
    (
        "train --config {C}/demo/taet.toml --set data.data_dir={D} --set method.ce_epochs=-1 --dry-run",
        "method.ce_epochs",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --set method.name=trades --set method.beta=nan --dry-run",
        "method.beta",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir= --dry-run",
        "data.data_dir is empty",
    ),
    (
        "train --config {W}/longvalue.toml --set data.data_dir={D} --dry-run",
        "characters)",
    ),
    ("curves --run {W}/log_empty", "no curves written"),
    (
        "train --config {W}/line4.toml --set data.data_dir={D} --dry-run",
        "line4.toml: line 4: attack.steps: invalid value: integer `-3`",
    ),
    (
        "train --config {W}/line8.toml --set data.data_dir={D} --dry-run",
        "line8.toml: line 8: method.alpha must be a finite number",
    ),
    (
        "train --config {W}/line8.toml --set data.data_dir={D} --set method.alpha=-inf --dry-run",
        "method.alpha must be a finite number >= 0, got -inf (set by --set)",
    ),
    // Class 3: a multi-machine run checks the orchestrator and its own port first, within seconds.
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --nodes 2 --node-rank 0 --out {W}/node_run \
         --orchestrator ws://127.0.0.1:{CLOSED} --node-address ws://127.0.0.1:{BUSY} --connect-timeout 2",
        "cannot reach the orchestrator at ws://127.0.0.1:",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --nodes 2 --node-rank 1 \
         --orchestrator ws://127.0.0.1:{BUSY} --node-address ws://127.0.0.1:{BUSY}",
        "cannot be listened on here",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --nodes 2 --node-rank 1 \
         --orchestrator http://127.0.0.1:{BUSY} --node-address ws://127.0.0.1:{CLOSED}",
        "orchestrator must be ws://HOST:PORT",
    ),
    (
        "train --config {C}/demo/pgd-at.toml --set data.data_dir={D} --nodes 2 --node-rank 1 --connect-timeout 0",
        "--connect-timeout",
    ),
    // Class 2: a user's links are theirs, whatever they point to (or not).
    (
        "export --checkpoint {W}/ckpt --out {W}/dangling.safetensors",
        "already exists",
    ),
    (
        "export --checkpoint {W}/ckpt --out {W}/dangling.safetensors --force",
        "not written by tailguard",
    ),
    (
        "export --checkpoint {W}/ckpt --out {W}/tonotes.safetensors --force",
        "not written by tailguard",
    ),
    // Class 2: an export the reader would refuse is refused when it is written.
    (
        "data --dataset imagefolder --imbalance 1 --data-dir {W}/oneclass --export {W}/one.tar.gz",
        "holds exactly 10 classes",
    ),
    (
        "data --dataset imagefolder --imbalance 1 --data-dir {W}/nlclass --export {W}/nl.tar.gz",
        "cannot be written to",
    ),
    // Class 2: a disk that fills midway (at most FSIZE bytes per file) keeps every earlier output whole and claims
    // no name it did not write: the report (report.json fits, the chart does not), an export, the curves, a split.
    (
        "{FSIZE=6000} eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --attacks clean --limit 20 \
         --report {W}/rep_old --force",
        "per_class.png",
    ),
    (
        "{FSIZE=2000} export --checkpoint {W}/ckpt --out {W}/exports/second.safetensors",
        "second.safetensors",
    ),
    ("{FSIZE=20000} curves --run {W}/run", "curves_"),
    (
        "{FSIZE=4000} data --dataset cifar10 --imbalance 10 --data-dir {D} --save-split {W}/exports/split.tar.gz",
        "split.tar.gz",
    ),
    // A RobustBench entry needs what the leaderboard reports, and never replaces a user's file.
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --attacks clean,fgsm --report {W}/r_rb \
         --robustbench-json {W}/rb.json",
        "needs clean and aa (or aa-plus, aa-rand, aa-lite)",
    ),
    (
        "eval --checkpoint {W}/ckpt --dataset cifar10 --data-dir {D} --attacks clean,aa-lite --report {W}/r_rb \
         --robustbench-json {W}/notes.txt",
        "notes.txt",
    ),
    // Class 2: two outputs of one command on one path.
    (
        "data --dataset cifar10 --imbalance 10 --data-dir {D} --save-split {W}/same.tar.gz --export {W}/same.tar.gz",
        "both name",
    ),
    ("curves --run {W}/log_garbage", "log.jsonl"),
    ("demo --out {W}/notes.txt --epochs 3 --limit 2", "notes.txt"),
];

#[test]
fn every_bad_input_fails_cleanly_and_changes_no_file() {
    assert!(CASES.len() >= 80, "{} cases", CASES.len());
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    world(w);
    // A second writer on a run: the lock is held by this process while the case runs.
    let _lock = tailguard_output::RunLock::acquire(&w.join("run_lock")).unwrap();
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    PORTS.set((busy.local_addr().unwrap().port(), closed)).unwrap();
    let mut failures = Vec::new();
    for (line, needle) in CASES {
        let before = snapshot(w);
        let (file_size, command) = file_size_limit(line);
        let output = limited_tailguard(&args(w, command), file_size);
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        let after = snapshot(w);
        let changed: Vec<&PathBuf> = before
            .iter()
            .filter(|(p, h)| after.get(*p) != Some(h))
            .map(|(p, _)| p)
            .collect();
        let needle = needle.replace("{W}", w.to_str().unwrap());
        let mut problems = Vec::new();
        if output.status.success() {
            problems.push("exit 0".to_string());
        }
        // A disk that fills at the end of a command's work fails after its progress lines; any other case fails
        // before work starts, with the error alone.
        let error_line = match file_size {
            Some(_) => stderr.trim_end().lines().last().unwrap_or_default(),
            None => &stderr,
        };
        if !error_line.starts_with("error:") || stderr.matches("error:").count() != 1 {
            problems.push("not one `error:` line".into());
        }
        if !stderr.contains(&needle) {
            problems.push(format!("no '{needle}'"));
        }
        for bad in ["panicked", "internal error", "backtrace", "record-backward-compat"] {
            if stderr.contains(bad) {
                problems.push(format!("'{bad}' shown"));
            }
        }
        if !changed.is_empty() {
            problems.push(format!("changed {changed:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{line}\n    {}\n    stderr: {}",
                problems.join("; "),
                stderr.trim()
            ));
        }
    }
    assert!(!w.join("pwned").exists(), "a pickle ran code");
    assert!(!w.join("node_run").exists(), "a run that never started left its folder");
    for (dir, name) in [("exports", "second.safetensors"), ("exports", "split.tar.gz")] {
        let manifest = tailguard_output::Manifest::read(&w.join(dir)).unwrap();
        assert!(!manifest.owns(name), "a failed write claimed {dir}/{name}");
        assert!(!w.join(dir).join(name).exists(), "{dir}/{name} half-written");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
