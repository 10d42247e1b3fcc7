//! Batches for training and evaluation: epoch order (shuffled, class-balanced or sequential), augmentation in
//! parallel, and the next batch prepared on a background thread while the current one computes.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use rayon::prelude::*;

use crate::augment::{Augmentation, to_unit_range};
use crate::dataset::{ImageDataset, ImageShape};
use crate::error::{DataError, DataResult};
use crate::rng::SeedStream;

/// The order in which an epoch visits the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Dataset order (evaluation).
    Sequential,
    /// A fresh permutation every epoch.
    #[default]
    Shuffled,
    /// As many draws as images, each picking a class uniformly, then an image of it uniformly (with replacement).
    ClassBalanced,
}

/// How a [`BatchLoader`] cuts epochs into batches.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchLoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Order of the images in an epoch.
    pub sampling: Sampling,
    /// `None` feeds images unchanged.
    pub augmentation: Option<Augmentation>,
    /// Skip the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seeds the order and the augmentation.
    pub seed: u64,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

impl BatchLoaderConfig {
    /// Shuffled, augmented (crop 4 + flip), batch 128: the papers' training loader.
    pub fn training(seed: u64) -> Self {
        Self {
            batch_size: 128,
            sampling: Sampling::Shuffled,
            augmentation: Some(Augmentation::default()),
            drop_last: false,
            seed,
            prefetch: 2,
        }
    }

    /// Sequential, no augmentation: for evaluation.
    pub fn evaluation(batch_size: usize) -> Self {
        Self {
            batch_size,
            sampling: Sampling::Sequential,
            augmentation: None,
            drop_last: false,
            seed: 0,
            prefetch: 2,
        }
    }

    /// Sets the batch size.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
}

/// A batch on the host: f32 pixels in [0, 1], NCHW, and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Pixels in [0, 1], (N, C, H, W) row-major.
    pub images: Vec<f32>,
    /// Class of each image.
    pub labels: Vec<i64>,
    /// Shape of one image.
    pub shape: ImageShape,
}

impl HostBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Moves the batch to a device.
    pub fn into_device<B: Backend>(self, device: &B::Device) -> Batch<B> {
        let n = self.len();
        let ImageShape {
            channels,
            height,
            width,
        } = self.shape;
        let images = Tensor::from_data(TensorData::new(self.images, [n, channels, height, width]), device);
        let labels = Tensor::from_data(TensorData::new(self.labels, [n]), device);
        Batch { images, labels }
    }
}

/// A batch on a device.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// (N, C, H, W) in [0, 1].
    pub images: Tensor<B, 4>,
    /// (N) class indices.
    pub labels: Tensor<B, 1, Int>,
}

/// Cuts a dataset into batches, epoch after epoch.
#[derive(Debug, Clone)]
pub struct BatchLoader {
    dataset: Arc<ImageDataset>,
    config: BatchLoaderConfig,
}

impl BatchLoader {
    /// Checks the configuration against the dataset.
    pub fn new(dataset: Arc<ImageDataset>, config: BatchLoaderConfig) -> DataResult<Self> {
        if config.batch_size == 0 {
            return Err(DataError::invalid("batch size must be at least 1"));
        }
        if dataset.is_empty() {
            return Err(DataError::invalid("cannot batch an empty dataset"));
        }
        if config.drop_last && dataset.len() < config.batch_size {
            return Err(DataError::invalid(format!(
                "drop_last with batch size {} leaves no batch of a {}-image dataset",
                config.batch_size,
                dataset.len()
            )));
        }
        Ok(Self { dataset, config })
    }

    /// The dataset being batched.
    pub fn dataset(&self) -> &Arc<ImageDataset> {
        &self.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &BatchLoaderConfig {
        &self.config
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.config.drop_last {
            n / self.config.batch_size
        } else {
            n.div_ceil(self.config.batch_size)
        }
    }

    /// Image indices visited in `epoch`, in order.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let n = self.dataset.len();
        let mut rng = SeedStream::derive(self.config.seed, &[crate::rng::stream::EPOCH_ORDER, epoch as u64]);
        match self.config.sampling {
            Sampling::Sequential => (0..n).collect(),
            Sampling::Shuffled => {
                let mut order: Vec<usize> = (0..n).collect();
                rng.shuffle(&mut order);
                order
            }
            Sampling::ClassBalanced => {
                let by_class: Vec<Vec<usize>> = self
                    .dataset
                    .indices_by_class()
                    .into_iter()
                    .filter(|pool| !pool.is_empty())
                    .collect();
                (0..n)
                    .map(|_| {
                        let pool = &by_class[rng.below(by_class.len() as u64) as usize];
                        pool[rng.below(pool.len() as u64) as usize]
                    })
                    .collect()
            }
        }
    }

    /// Builds the host batch of the images `order[start..end]` of `epoch`.
    fn host_batch(&self, epoch: usize, order: &[usize], start: usize) -> Result<HostBatch, DataError> {
        let shape = self.dataset.shape();
        let image_len = shape.len();
        let mut images = vec![0f32; order.len() * image_len];
        images
            .par_chunks_mut(image_len)
            .zip(order.par_iter())
            .enumerate()
            .try_for_each(|(offset, (out, &index))| {
                // A streamed dataset reads the file here; a file that cannot be read ends the epoch with its error.
                let source = self.dataset.image(index)?;
                match &self.config.augmentation {
                    Some(aug) => {
                        let position = (start + offset) as u64;
                        let mut rng = SeedStream::derive(self.config.seed, &[epoch as u64, position]);
                        aug.apply(&source, shape, &mut rng, out);
                    }
                    None => to_unit_range(&source, out),
                }
                Ok::<(), DataError>(())
            })?;
        let labels = order.iter().map(|&i| self.dataset.label(i) as i64).collect();
        Ok(HostBatch { images, labels, shape })
    }

    /// The host batches of `epoch`, prepared `prefetch` batches ahead on a background thread. A failure of that
    /// thread ends the epoch with an error item, never silently early.
    pub fn host_batches(&self, epoch: usize) -> HostBatches {
        let loader = self.clone();
        HostBatches::spawn(self.config.prefetch, move |send| {
            let order = loader.epoch_order(epoch);
            let batch_size = loader.config.batch_size;
            for (batch_index, chunk) in order.chunks(batch_size).enumerate() {
                if loader.config.drop_last && chunk.len() < batch_size {
                    break;
                }
                let batch = loader.host_batch(epoch, chunk, batch_index * batch_size);
                let failed = batch.is_err();
                if !send(batch) || failed {
                    break; // the consumer stopped early, or the batch could not be made
                }
            }
        })
    }

    /// Images in batch `index` of an epoch (the last one may be short).
    pub fn batch_len(&self, index: usize) -> usize {
        let size = self.config.batch_size;
        self.dataset.len().saturating_sub(index * size).min(size)
    }

    /// Batches per epoch when every batch is split into `shards` parts: a batch smaller than `shards` (only the
    /// last can be) is skipped, since it cannot give every part an image.
    pub fn num_shard_batches(&self, shards: usize) -> usize {
        (0..self.num_batches())
            .filter(|&index| self.batch_len(index) >= shards)
            .count()
    }

    /// Part `shard` of `shards` of every host batch of `epoch` ([`shard_rows`] of each batch), augmented exactly as
    /// those images are in [`BatchLoader::host_batches`]: the parts of all shards together are the same batches.
    /// Batches smaller than `shards` are skipped. One shard of one is [`BatchLoader::host_batches`].
    pub fn host_batch_shards(&self, epoch: usize, shard: usize, shards: usize) -> HostBatches {
        if shards <= 1 {
            return self.host_batches(epoch);
        }
        let loader = self.clone();
        HostBatches::spawn(self.config.prefetch, move |send| {
            let order = loader.epoch_order(epoch);
            let batch_size = loader.config.batch_size;
            for (batch_index, chunk) in order.chunks(batch_size).enumerate() {
                if (loader.config.drop_last && chunk.len() < batch_size) || chunk.len() < shards {
                    break;
                }
                let rows = shard_rows(chunk.len(), shard, shards);
                let batch = loader.host_batch(epoch, &chunk[rows.clone()], batch_index * batch_size + rows.start);
                let failed = batch.is_err();
                if !send(batch) || failed {
                    break;
                }
            }
        })
    }

    /// The batches of `epoch` on `device`.
    pub fn batches<B: Backend>(
        &self,
        epoch: usize,
        device: &B::Device,
    ) -> impl Iterator<Item = Result<Batch<B>, DataError>> {
        let device = device.clone();
        self.host_batches(epoch)
            .map(move |batch| batch.map(|batch| batch.into_device(&device)))
    }
}

/// The rows of a batch of `n` images that part `shard` of `shards` holds: contiguous, sizes differing by at most
/// one, every row in exactly one part.
pub fn shard_rows(n: usize, shard: usize, shards: usize) -> std::ops::Range<usize> {
    shard * n / shards..(shard + 1) * n / shards
}

/// Iterator over prefetched host batches: `Ok` batches, then, if a batch could not be made or the prefetch thread
/// failed, one `Err`.
pub struct HostBatches {
    receiver: Option<Receiver<Result<HostBatch, DataError>>>,
    worker: Option<JoinHandle<()>>,
}

impl HostBatches {
    /// Runs `produce` on a background thread; it hands each batch to `send`, which returns false once the consumer
    /// has stopped. At most `prefetch` batches wait in between.
    fn spawn(
        prefetch: usize,
        produce: impl FnOnce(&dyn Fn(Result<HostBatch, DataError>) -> bool) + Send + 'static,
    ) -> Self {
        let (sender, receiver) = sync_channel(prefetch.max(1));
        let worker = std::thread::spawn(move || produce(&|batch| sender.send(batch).is_ok()));
        Self {
            receiver: Some(receiver),
            worker: Some(worker),
        }
    }
}

impl Iterator for HostBatches {
    type Item = Result<HostBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Ok(batch) = self.receiver.as_ref()?.recv() {
            if batch.is_err() {
                self.receiver.take();
            }
            return Some(batch);
        }
        // The channel closed: the thread finished or died. A panic is reported once, as an error.
        self.receiver.take();
        let outcome = self.worker.take()?.join();
        outcome.err().map(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(DataError::Prefetch(message))
        })
    }
}

impl Drop for HostBatches {
    fn drop(&mut self) {
        // Closing the channel first makes a worker blocked on `send` return, so the join cannot hang.
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailguard_flex::Flex;

    fn dataset(n: usize, classes: usize) -> Arc<ImageDataset> {
        let shape = ImageShape {
            channels: 3,
            height: 4,
            width: 4,
        };
        let pixels = (0..n * shape.len()).map(|i| (i / shape.len()) as u8).collect();
        let labels = (0..n)
            .map(|i| if i < n - 2 { 0 } else { 1 + i % (classes - 1) })
            .collect();
        let names = (0..classes).map(|c| format!("c{c}")).collect();
        Arc::new(ImageDataset::new(pixels, labels, names, shape).unwrap())
    }

    #[test]
    fn sequential_batches_cover_the_dataset_in_order() {
        let data = dataset(10, 3);
        let loader = BatchLoader::new(data.clone(), BatchLoaderConfig::evaluation(4)).unwrap();
        assert_eq!(loader.num_batches(), 3);
        let batches: Vec<Batch<Flex>> = loader.batches(0, &Default::default()).map(Result::unwrap).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].images.dims(), [4, 3, 4, 4]);
        assert_eq!(batches[2].images.dims(), [2, 3, 4, 4]);
        // Image i holds the value i everywhere, so the mean of batch 1 is mean(4..8)/255.
        let mean: f32 = batches[1].images.clone().mean().into_scalar();
        assert!((mean - 5.5 / 255.0).abs() < 1e-6, "{mean}");
        let labels: Vec<i64> = batches[2].labels.to_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(labels, vec![data.label(8) as i64, data.label(9) as i64]);
    }

    #[test]
    fn shards_of_every_batch_put_together_are_the_batch() {
        // 23 images in batches of 8: 8, 8, 7; three shards. Augmented, so the draws must follow the image's place.
        let loader = BatchLoader::new(dataset(23, 3), BatchLoaderConfig::training(5).with_batch_size(8)).unwrap();
        let whole: Vec<HostBatch> = loader.host_batches(2).map(Result::unwrap).collect();
        let parts: Vec<Vec<HostBatch>> = (0..3)
            .map(|shard| loader.host_batch_shards(2, shard, 3).map(Result::unwrap).collect())
            .collect();
        assert_eq!(loader.num_shard_batches(3), 3);
        assert_eq!((loader.batch_len(0), loader.batch_len(2)), (8, 7));
        for (b, batch) in whole.iter().enumerate() {
            let sizes: Vec<usize> = parts.iter().map(|p| p[b].len()).collect();
            assert_eq!(sizes.iter().sum::<usize>(), batch.len());
            assert!(
                sizes
                    .iter()
                    .all(|&s| s + 1 >= batch.len() / 3 && s <= batch.len().div_ceil(3)),
                "{sizes:?}"
            );
            let images: Vec<f32> = parts.iter().flat_map(|p| p[b].images.clone()).collect();
            let labels: Vec<i64> = parts.iter().flat_map(|p| p[b].labels.clone()).collect();
            assert_eq!(images, batch.images, "batch {b}");
            assert_eq!(labels, batch.labels);
        }
        // A last batch smaller than the number of shards is skipped by every shard.
        let loader = BatchLoader::new(dataset(17, 3), BatchLoaderConfig::training(5).with_batch_size(8)).unwrap();
        assert_eq!(loader.num_shard_batches(4), 2);
        assert_eq!(loader.host_batch_shards(0, 3, 4).count(), 2);
        assert_eq!(shard_rows(10, 0, 4), 0..2);
        assert_eq!(shard_rows(10, 3, 4), 7..10);
    }

    #[test]
    fn shuffled_epochs_are_permutations_that_differ_and_repeat() {
        let loader = BatchLoader::new(dataset(50, 3), BatchLoaderConfig::training(9).with_batch_size(8)).unwrap();
        let first = loader.epoch_order(0);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(loader.epoch_order(1), first);
        assert_eq!(loader.epoch_order(0), first);
        let a: Vec<HostBatch> = loader.host_batches(3).map(Result::unwrap).collect();
        let b: Vec<HostBatch> = loader.host_batches(3).map(Result::unwrap).collect();
        assert_eq!(a, b, "augmentation must be reproducible");
        assert_eq!(a.iter().map(HostBatch::len).sum::<usize>(), 50);
    }

    #[test]
    fn a_failing_prefetch_thread_ends_the_epoch_with_an_error() {
        let loader = BatchLoader::new(dataset(10, 3), BatchLoaderConfig::evaluation(4)).unwrap();
        let producer = loader.clone();
        let mut batches = HostBatches::spawn(1, move |send| {
            send(producer.host_batch(0, &[0, 1], 0));
            panic!("decoder failed on image 2");
        });
        assert_eq!(batches.next().unwrap().unwrap().len(), 2);
        let err = batches.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("decoder failed on image 2"), "{err}");
        assert!(batches.next().is_none(), "the error is reported once");
    }

    #[test]
    fn class_balanced_sampling_evens_out_classes() {
        let data = dataset(300, 3); // 298 images of class 0, one each of classes 1 and 2
        let mut config = BatchLoaderConfig::training(1);
        config.sampling = Sampling::ClassBalanced;
        let loader = BatchLoader::new(data.clone(), config).unwrap();
        let mut counts = [0usize; 3];
        for index in loader.epoch_order(0) {
            counts[data.label(index)] += 1;
        }
        for count in counts {
            assert!((70..130).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn drop_last_and_bad_configs() {
        let mut config = BatchLoaderConfig::evaluation(4);
        config.drop_last = true;
        let loader = BatchLoader::new(dataset(10, 3), config).unwrap();
        assert_eq!(loader.host_batches(0).count(), 2);
        assert!(BatchLoader::new(dataset(10, 3), BatchLoaderConfig::evaluation(0)).is_err());
    }

    #[test]
    fn dropping_an_epoch_early_does_not_hang() {
        let loader = BatchLoader::new(dataset(64, 3), BatchLoaderConfig::evaluation(1)).unwrap();
        let mut batches = loader.host_batches(0);
        assert!(batches.next().is_some());
        drop(batches);
    }
}
