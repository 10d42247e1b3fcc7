//! A training run stopped by `kill -9` at any moment, including while a checkpoint is being written, resumes to the
//! same weights as a run that was never stopped: the exported safetensors are byte-identical.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn tailguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailguard"))
}

fn embedded() -> String {
    format!("{}/../../datasets/cifar10-lt-mini.tar.gz", env!("CARGO_MANIFEST_DIR"))
}

fn config() -> String {
    format!("{}/../../configs/cpu/natural-small.toml", env!("CARGO_MANIFEST_DIR"))
}

const EPOCHS: usize = 3;

fn train_command(out: &Path) -> Command {
    let mut command = tailguard();
    command.args([
        "train",
        "--config",
        &config(),
        "--set",
        &format!("data.data_dir={}", embedded()),
        "--set",
        "data.n_max=40",
        "--set",
        &format!("optim.epochs={EPOCHS}"),
        "--set",
        "validation.attack_steps=2",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    command
}

fn resume_command(out: &Path) -> Command {
    let mut command = tailguard();
    command.args(["train", "--resume", out.to_str().unwrap(), "--json"]);
    command
}

fn succeed(mut command: Command) -> Output {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Runs `command` with the abort hook set to `point`; it must die (not exit cleanly).
fn abort_at(mut command: Command, point: &str) {
    let output = command.env("TAILGUARD_TEST_ABORT_AT", point).output().unwrap();
    assert!(!output.status.success(), "{point}: the run should have been stopped");
    assert!(
        output.status.code().is_none(),
        "{point}: stopped by a signal, not an error"
    );
}

fn export(run: &Path, dir: &Path, name: &str) -> Vec<u8> {
    let out = dir.join(format!("{name}.safetensors"));
    let mut command = tailguard();
    command.args([
        "export",
        "--checkpoint",
        run.join("last").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    succeed(command);
    std::fs::read(out).unwrap()
}

fn epochs_logged(run: &Path) -> usize {
    std::fs::read_to_string(run.join("log.jsonl")).unwrap().lines().count()
}

/// Resumes until the run has finished every epoch.
fn finish(run: &Path) {
    succeed(resume_command(run));
    assert_eq!(epochs_logged(run), EPOCHS);
}

fn stray_temporaries(run: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tailguard-tmp-"))
        .collect()
}

#[test]
fn killed_runs_resume_to_byte_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    succeed(train_command(&straight));
    let reference = export(&straight, dir.path(), "straight");

    // Exact moments through the abort hook (the process dies as under kill -9), each followed by a resume.
    for (i, point) in [
        "checkpoint-staged:2", // the new checkpoint is written beside the old one
        "checkpoint-aside:2",  // the old checkpoint is moved aside, the new one not yet in place
        "log-written:2",       // the log has epoch 2, the checkpoint does not
        "checkpoint-aside:3",
    ]
    .iter()
    .enumerate()
    {
        let run = dir.path().join(format!("run{i}"));
        abort_at(train_command(&run), point);
        finish(&run);
        assert!(
            stray_temporaries(&run).is_empty(),
            "{point}: {:?}",
            stray_temporaries(&run)
        );
        assert_eq!(export(&run, dir.path(), &format!("run{i}")), reference, "{point}");
    }

    // Killed in its first epoch's checkpoint: nothing to resume, said so, and a forced restart gets there.
    let run = dir.path().join("first");
    abort_at(train_command(&run), "checkpoint-aside:1");
    let output = resume_command(&run).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("no checkpoint yet") && stderr.contains("--force"),
        "{stderr}"
    );
    let mut restart = train_command(&run);
    restart.arg("--force");
    succeed(restart);
    assert_eq!(export(&run, dir.path(), "first"), reference);

    // Real SIGKILLs at several moments of a run, resumed (and killed again) until it finishes.
    let run = dir.path().join("killed");
    let next_command = |run: &Path| {
        if run.join("last").exists() {
            resume_command(run)
        } else if run.exists() {
            // Stopped before its first checkpoint: start over in the same folder.
            let mut restart = train_command(run);
            restart.arg("--force");
            restart
        } else {
            train_command(run)
        }
    };
    for delay_ms in [150u64, 500, 900, 1400] {
        let mut child = next_command(&run)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    succeed(next_command(&run));
    if epochs_logged(&run) < EPOCHS {
        finish(&run);
    }
    assert_eq!(epochs_logged(&run), EPOCHS);
    assert_eq!(export(&run, dir.path(), "killed"), reference);
}
