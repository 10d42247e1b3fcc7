//! Data-pipeline throughput: JPEG decode of the CIFAR-10 training images, augmentation (crop + flip, AutoAugment,
//! RandAugment) and batching
//! onto the Flex backend. Run with `cargo bench --bench data_pipeline`; results go to docs/benchmarks.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tailguard_flex::Flex;
use tailguard_longtail::augment::AugmentPolicy;
use tailguard_longtail::{
    Augmentation, BatchLoader, BatchLoaderConfig, DatasetKind, ImageDataset, ImageShape, LongTailSpec, Split,
};

fn rate(images: usize, seconds: f64) -> f64 {
    images as f64 / seconds
}

fn main() -> anyhow::Result<()> {
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-data");
    std::fs::create_dir_all(&cache)?;
    let threads = rayon::current_num_threads();
    let mut results = Vec::new();

    let train: ImageDataset = match tailguard_suite::cifar10_jpeg(&cache)? {
        Some(root) => {
            let _warm = DatasetKind::Cifar10.load(&root, Split::Test)?; // file cache warm-up
            let start = Instant::now();
            let train = DatasetKind::Cifar10.load(&root, Split::Train)?;
            let seconds = start.elapsed().as_secs_f64();
            results.push(("decode JPEG (image folder, 50,000 files)", train.len(), seconds));
            train
        }
        None => {
            eprintln!("shared CIFAR-10 JPEGs not found: skipping decode, using synthetic 32x32 images");
            let n = 50_000;
            let pixels = (0..n * 3072).map(|i| (i * 31 % 251) as u8).collect();
            let labels = (0..n).map(|i| i % 10).collect();
            let names = (0..10).map(|c| format!("c{c}")).collect();
            ImageDataset::new(pixels, labels, names, ImageShape::CIFAR)?
        }
    };

    let lt = Arc::new(LongTailSpec::exp(100.0).select(&train)?.apply(&train)?);
    let loader = BatchLoader::new(lt.clone(), BatchLoaderConfig::training(0))?;

    // Augmentation and host batching only.
    let start = Instant::now();
    let count: usize = loader
        .host_batches(0)
        .map(|b| b.map(|b| b.len()))
        .sum::<Result<_, _>>()?;
    results.push((
        "augment + host batch (crop 4, flip, batch 128)",
        count,
        start.elapsed().as_secs_f64(),
    ));

    // Learned policies on top of crop and flip (AT-BSL's AuA and RA), host batching only.
    for (policy, label) in [
        (
            AugmentPolicy::AutoAugment,
            "augment + host batch (AutoAugment CIFAR-10, crop, flip)",
        ),
        (
            AugmentPolicy::RandAugment,
            "augment + host batch (RandAugment 2/8, crop, flip)",
        ),
    ] {
        let config = BatchLoaderConfig {
            augmentation: Some(Augmentation::with_policy(policy)),
            ..BatchLoaderConfig::training(0)
        };
        let loader = BatchLoader::new(lt.clone(), config)?;
        let start = Instant::now();
        let count: usize = loader
            .host_batches(0)
            .map(|b| b.map(|b| b.len()))
            .sum::<Result<_, _>>()?;
        results.push((label, count, start.elapsed().as_secs_f64()));
    }

    // Full pipeline to Flex tensors.
    let device = Default::default();
    let start = Instant::now();
    let mut count = 0;
    for batch in loader.batches::<Flex>(1, &device) {
        count += batch?.images.dims()[0];
    }
    results.push(("augment + batch to Flex tensors", count, start.elapsed().as_secs_f64()));

    // Evaluation path: no augmentation.
    let eval = BatchLoader::new(lt, BatchLoaderConfig::evaluation(256))?;
    let start = Instant::now();
    let count: usize = eval
        .batches::<Flex>(0, &device)
        .map(|b| b.map(|b| b.images.dims()[0]))
        .sum::<Result<_, _>>()?;
    results.push((
        "plain batch to Flex tensors (batch 256)",
        count,
        start.elapsed().as_secs_f64(),
    ));

    println!("data pipeline on {threads} rayon threads (CIFAR-10-LT rho 100 = 12,406 images for batching)");
    println!("{:<48} {:>8} {:>9} {:>12}", "stage", "images", "seconds", "images/s");
    for (stage, images, seconds) in &results {
        println!(
            "{stage:<48} {images:>8} {seconds:>9.3} {:>12.0}",
            rate(*images, *seconds)
        );
    }
    let json: Vec<_> = results
        .iter()
        .map(|(stage, images, seconds)| {
            serde_json::json!({"stage": stage, "images": images, "seconds": seconds, "images_per_s": rate(*images, *seconds)})
        })
        .collect();
    println!("{}", serde_json::Value::Array(json));
    Ok(())
}
