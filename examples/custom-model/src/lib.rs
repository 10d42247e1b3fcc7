//! Embedding tailguard: your own Burn model, trained with TAET + RobustLT budgets, attacked with AA-lite.
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Tensor, activation::relu, backend::Backend};
use tailguard_attacks::{AutoAttackLiteConfig, FrozenModel};
use tailguard_longtail::{BatchLoader, BatchLoaderConfig, ClassGroups, ClassTally, DatasetKind, LongTailSpec, Split};
use tailguard_models::{Classifier, ModalBatchNorm, ModalBatchNormConfig, Mode};
use tailguard_trainers::{Silent, TrainConfig, TrainData, Trainer};

/// Your model: conv -> BatchNorm (tailguard's, for the mode switch) -> ReLU -> pooling -> linear.
#[derive(Module, Debug)]
pub struct TinyNet<B: Backend> {
    conv: Conv2d<B>,
    norm: ModalBatchNorm<B>,
    head: Linear<B>,
}

impl<B: Backend> TinyNet<B> {
    pub fn new(device: &B::Device) -> Self {
        let conv = Conv2dConfig::new([3, 16], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1));
        Self {
            conv: conv.init(device),
            norm: ModalBatchNormConfig::new(16).init(device),
            head: LinearConfig::new(16, 10).init(device),
        }
    }
}

/// The one trait tailguard needs: images in [0, 1] and a mode in, logits out.
impl<B: Backend> Classifier<B> for TinyNet<B> {
    fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let x = relu(self.norm.forward(self.conv.forward(images), mode)); // (N, 16, H/2, W/2)
        let [n, c, _, _] = x.dims();
        self.head.forward(x.mean_dim(3).mean_dim(2).reshape([n, c]))
    }

    fn num_classes(&self) -> usize {
        10
    }
}

/// Trains on the embedded long-tailed CIFAR-10 subset and returns the balanced robustness under AA-lite.
pub fn run(epochs: usize, test_images: usize) -> Result<f64, Box<dyn std::error::Error>> {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let data_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/cifar10-lt-mini.tar.gz");
    let config = TrainConfig::parse(
        &format!(
            r#"data = {{ dataset = "cifar10", data_dir = "{data_dir}", imbalance = 10.0 }}
model = {{ arch = "small-cnn" }} # not used: the model is ours
optim = {{ epochs = {epochs}, batch_size = 64, lr = 0.05, schedule = {{ name = "cosine", min_lr = 0.0 }} }}
attack = {{ eps = "8/255", step_size = "2/255", steps = 3 }}
method = {{ name = "taet", ce_epochs = {ce} }}
robustlt = {{ alpha = 0.3, beta = 0.8 }}"#,
            ce = epochs / 2
        ),
        &[],
    )?;
    let mut trainer = Trainer::new(&config, &TrainData::load(&config)?, TinyNet::<B>::new(&device), &device)?;
    while trainer.next_epoch < trainer.epochs() {
        let record = trainer.run_epoch(&mut Silent)?;
        println!("epoch {} ({}): loss {:.3}", record.epoch, record.stage, record.loss);
    }

    let test = DatasetKind::Cifar10.load(data_dir.as_ref(), Split::Test)?;
    let per_class = LongTailSpec {
        n_max: Some(test_images / 10),
        ..LongTailSpec::exp(1.0)
    };
    let test = Arc::new(per_class.select(&test)?.apply(&test)?);
    let frozen = FrozenModel::new(&trainer.model);
    let mut tally = ClassTally::new(10);
    for batch in BatchLoader::new(test, BatchLoaderConfig::evaluation(100))?.batches::<Flex>(0, &device) {
        let (_, robust, _) = AutoAttackLiteConfig::new().run(&frozen, batch.images, batch.labels.clone());
        tally.add_batch(batch.labels, robust);
    }
    Ok(tally.summary(&ClassGroups::default()).balanced_accuracy)
}
