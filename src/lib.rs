//! Helpers shared by the workspace's integration tests (`tests/`) and benchmarks (`benches/`): finding the
//! project's shared CIFAR-10 JPEG archives and unpacking them once into a cache folder.

use std::path::{Path, PathBuf};

/// The `shared/datasets` folder beside the repository (or `$TAILGUARD_SHARED/datasets`), if present.
pub fn shared_datasets() -> Option<PathBuf> {
    let root = std::env::var_os("TAILGUARD_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("shared"));
    let datasets = root.join("datasets");
    datasets.join("cifar10-jpeg-train.tar").is_file().then_some(datasets)
}

/// Unpacks the CIFAR-10 JPEG archives into `cache` (once; later calls reuse them) and returns the image-folder root
/// holding `train/` and `test/`. `None` when the shared datasets are absent.
pub fn cifar10_jpeg(cache: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(datasets) = shared_datasets() else {
        return Ok(None);
    };
    // Tests run as threads of one process: unpack once at a time.
    static UNPACKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = UNPACKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = cache.join("cifar10-jpeg");
    for split in ["train", "test"] {
        let done = root.join(format!(".{split}-complete"));
        if done.exists() {
            continue;
        }
        let archive = datasets.join(format!("cifar10-jpeg-{split}.tar"));
        let staging = cache.join(format!("cifar10-jpeg-{split}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        tar::Archive::new(std::fs::File::open(&archive)?).unpack(&staging)?;
        std::fs::create_dir_all(&root)?;
        let target = root.join(split);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(staging.join(split), &target)?;
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::write(done, b"")?;
    }
    Ok(Some(root))
}

/// Prints why a test that needs the shared data is skipped.
pub fn skip_without_shared_data(test: &str) {
    eprintln!("skipping {test}: ../shared/datasets (CIFAR-10 JPEG archives) not found");
}

// Every Rust snippet of the README and the docs is compiled (and run, where it runs on its own) by `cargo test
// --doc`, so the documentation cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/architecture.md")]
pub struct ArchitectureSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/scaling.md")]
pub struct ScalingSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/methods.md")]
pub struct MethodsSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/interop.md")]
pub struct InteropSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/attacks.md")]
pub struct AttacksSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/benchmarks.md")]
pub struct BenchmarksSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/reproducing.md")]
pub struct ReproducingSnippets;
