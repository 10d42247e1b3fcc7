//! burn-store 0.21's `PytorchReader` and tailguard's `read_torch_file` on the same `.pt` files: a valid state dict
//! and the hostile pickles of tailguard's bad-input suite. Each (file, reader) runs in a child process, so a crash
//! (stack overflow, out of memory) is reported instead of ending the comparison; the child's memory is capped
//! (`ulimit -v`, 4 GiB) so a runaway reader cannot take the machine down.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tailguard_models::testing::{memo_bomb_pickle, nested_tuples_pickle, write_torch_zip};

const READERS: [&str; 2] = ["tailguard", "burn-store"];
const MEMORY_CAP_KIB: u64 = 4 * 1024 * 1024;

/// A pickled `OrderedDict` of `count` float32 tensors of `len` values each, as torch.save writes it.
fn state_dict_pickle(count: usize, len: usize) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut p = vec![0x80, 2];
    p.extend(b"ccollections\nOrderedDict\nq\x00)Rq\x01(");
    let mut storages = Vec::new();
    for i in 0..count {
        let name = format!("layer{i}.weight");
        p.push(b'X');
        p.extend((name.len() as u32).to_le_bytes());
        p.extend(name.as_bytes());
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x02(");
        // persistent id: ('storage', torch.FloatStorage, key, 'cpu', len)
        let key = i.to_string();
        p.extend(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nq\x03X");
        p.extend((key.len() as u32).to_le_bytes());
        p.extend(key.as_bytes());
        p.extend(b"X\x03\x00\x00\x00cpu");
        p.push(b'J');
        p.extend((len as i32).to_le_bytes());
        p.extend(b"tQ"); // tuple, persistent load
        p.extend(b"K\x00"); // storage offset
        p.push(b'J');
        p.extend((len as i32).to_le_bytes());
        p.extend(b"\x85"); // size (len,)
        p.extend(b"K\x01\x85"); // stride (1,)
        p.extend(b"\x89ccollections\nOrderedDict\nq\x04)Rq\x05tR"); // requires_grad, hooks; call
        p.push(b'u'); // setitems (pairs so far)
        p.push(b'('); // next mark
        let values: Vec<u8> = (0..len).flat_map(|v| (v as f32 * 1e-3).to_le_bytes()).collect();
        storages.push((key, values));
    }
    p.pop(); // no mark after the last pair
    p.push(b'.');
    (p, storages)
}

/// `{"a": {"a": ... {} ...}}`, `depth` dictionaries deep.
fn nested_dicts_pickle(depth: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    for _ in 0..depth {
        p.extend(b"}X\x01\x00\x00\x00a");
    }
    p.push(b'}');
    p.extend(std::iter::repeat_n(b's', depth));
    p.push(b'.');
    p
}

fn files(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    let mut write = |name: &'static str, pickle: Vec<u8>, storages: Vec<(String, Vec<u8>)>| {
        let path = dir.join(format!("{name}.pt"));
        let refs: Vec<(&str, &[u8])> = storages.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        write_torch_zip(&path, &pickle, &refs).expect("write test file");
        out.push((name, path));
    };
    let (pickle, storages) = state_dict_pickle(62, 37_000); // about ResNet-18's tensor count, 9 MB
    write("state-dict-62-tensors", pickle, storages);
    let (pickle, mut storages) = state_dict_pickle(62, 37_000);
    storages[61].1.truncate(1_000); // the last tensor claims more values than its storage holds
    write("storage-too-short", pickle, storages);
    write("nested-tuples-100k", nested_tuples_pickle(100_000), Vec::new());
    write("nested-dicts-100k", nested_dicts_pickle(100_000), Vec::new());
    write("memo-bomb-10^8", memo_bomb_pickle(8), Vec::new());
    out
}

/// In the child: reads `path` with `reader`, prints the tensor count.
fn child(reader: &str, path: &Path) -> Result<usize, String> {
    match reader {
        "tailguard" => tailguard_models::torch_file::read_torch_file(path)
            .map(|file| file.floats.len() + file.others.len())
            .map_err(|e| e.to_string()),
        // burn-store reads lazily: every tensor's data is materialised, as loading into a model would.
        _ => burn_store::pytorch::PytorchReader::new(path)
            .map_err(|e| e.to_string())
            .and_then(|reader| {
                for snapshot in reader.tensors().values() {
                    snapshot.to_data().map_err(|e| e.to_string())?;
                }
                Ok(reader.len())
            }),
    }
}

fn peak_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--child" {
        let outcome = child(&args[2], Path::new(&args[3]));
        let line = match outcome {
            Ok(n) => format!("ok: {n} tensors"),
            Err(e) => format!("refused: {}", e.chars().take(150).collect::<String>()),
        };
        println!("{line}\t{}", peak_memory_kib());
        return;
    }
    let dir = std::env::temp_dir().join(format!("tailguard-interop-libraries-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let exe = std::env::current_exe().expect("own path");
    println!("| file | reader | outcome | seconds | peak memory (MiB) |");
    println!("| --- | --- | --- | ---: | ---: |");
    for (name, path) in files(&dir) {
        for reader in READERS {
            let start = Instant::now();
            let output = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "ulimit -v {MEMORY_CAP_KIB}; exec \"$0\" --child {reader} \"$1\""
                ))
                .arg(&exe)
                .arg(&path)
                .output()
                .expect("run child");
            let seconds = start.elapsed().as_secs_f64();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let (outcome, memory) = match stdout.trim().split_once('\t') {
                Some((outcome, kib)) => (
                    outcome.replace(&format!("{}/", dir.display()), "").replace('|', "/"),
                    format!("{:.0}", kib.parse::<f64>().unwrap_or(0.0) / 1024.0),
                ),
                None => {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                    (
                        format!(
                            "crashed ({}): {}",
                            output.status,
                            last.chars().take(80).collect::<String>()
                        ),
                        "-".into(),
                    )
                }
            };
            println!("| {name} | {reader} | {outcome} | {seconds:.2} | {memory} |");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
