//! Real data: the CIFAR-10 JPEG archives from ../shared/datasets, through loading, long-tailed splitting and
//! batching. Skipped (with a message) when the archives are absent.

use std::path::PathBuf;
use std::sync::Arc;

use tailguard_flex::Flex;
use tailguard_longtail::{BatchLoader, BatchLoaderConfig, DatasetKind, ImageShape, LongTailSpec, Split};
use tailguard_models::{Architecture, Classifier, Mode, ModelConfig};

fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

#[test]
fn cifar10_jpegs_load_split_and_batch() {
    let Some(root) = tailguard_suite::cifar10_jpeg(&cache()).unwrap() else {
        tailguard_suite::skip_without_shared_data("cifar10_jpegs_load_split_and_batch");
        return;
    };
    let train = DatasetKind::Cifar10.load(&root, Split::Train).unwrap();
    assert_eq!(train.len(), 50_000);
    assert_eq!(train.shape(), ImageShape::CIFAR);
    assert_eq!(train.class_counts(), vec![5000; 10]);
    assert_eq!(train.classes()[0], "airplane");
    assert_eq!(train.classes()[9], "truck");
    let test = DatasetKind::Cifar10.load(&root, Split::Test).unwrap();
    assert_eq!(test.class_counts(), vec![1000; 10]);
    // Real photographs, not blank files: the mean pixel of CIFAR-10 is about 0.47.
    let pixels = train.pixels().expect("CIFAR is held in memory");
    let mean = pixels.iter().map(|&p| p as f64).sum::<f64>() / pixels.len() as f64 / 255.0;
    assert!((0.43..0.51).contains(&mean), "mean pixel {mean}");

    let split = LongTailSpec::exp(100.0).select(&train).unwrap();
    assert_eq!(split.counts, vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
    let lt_train = Arc::new(split.apply(&train).unwrap());
    assert_eq!(lt_train.len(), 12_406);

    // TAET's long-tailed test split: same profile on the 1000-per-class test set.
    let lt_test = LongTailSpec::exp(10.0).select(&test).unwrap();
    assert_eq!(lt_test.len(), 4_084);

    let device = Default::default();
    let loader = BatchLoader::new(lt_train, BatchLoaderConfig::training(0)).unwrap();
    let batch = loader.batches::<Flex>(0, &device).next().unwrap().unwrap();
    assert_eq!(batch.images.dims(), [128, 3, 32, 32]);
    assert_eq!(batch.labels.dims(), [128]);
    let max: f32 = batch.images.clone().max().into_scalar();
    let min: f32 = batch.images.clone().min().into_scalar();
    assert!(min >= 0.0 && max <= 1.0 && max > 0.5, "pixels in [{min}, {max}]");

    let model = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10)
        .init::<Flex>(&device)
        .unwrap();
    assert_eq!(model.forward(batch.images, Mode::Train).dims(), [128, 10]);
}

#[test]
fn cifar10_binary_written_from_jpegs_loads_identically() {
    let Some(root) = tailguard_suite::cifar10_jpeg(&cache()).unwrap() else {
        tailguard_suite::skip_without_shared_data("cifar10_binary_written_from_jpegs_loads_identically");
        return;
    };
    let test = DatasetKind::Cifar10.load(&root, Split::Test).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&bin).unwrap();
    tailguard_longtail::write_cifar(
        &bin.join("test_batch.bin"),
        &test,
        tailguard_longtail::CifarVariant::Cifar10,
    )
    .unwrap();
    let loaded = DatasetKind::Cifar10.load(dir.path(), Split::Test).unwrap();
    assert_eq!(loaded, test);
}
