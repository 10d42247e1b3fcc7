//! One forward (and backward) pass of a frozen model for an attack: loss, logits and the loss gradient with
//! respect to the input only.
//!
//! Attack iterates live on the inner (non-autodiff) backend, so projections and bookkeeping build no autodiff
//! graph; only the model call is lifted onto the autodiff backend.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Int, Tensor};
use tailguard_models::{Classifier, Mode};

use crate::loss::AttackLoss;

/// Plain tensors of the inner backend of `B`.
pub type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// A model prepared for attacks: parameters do not require gradients, so a backward pass differentiates the input
/// only, and every call runs in [`Mode::Inference`] (running BatchNorm statistics, never updated), or in
/// [`Mode::BatchStatistics`] for training attacks that normalise with the batch's statistics.
pub struct FrozenModel<B: AutodiffBackend, M: Classifier<B>> {
    model: M,
    mode: Mode,
    _backend: std::marker::PhantomData<B>,
}

/// What one gradient call returns, on the inner backend.
pub struct Probe<B: AutodiffBackend> {
    /// Attack loss per sample, (N).
    pub loss: Tensor<Inner<B>, 1>,
    /// d(sum of losses) / d(input), (N, C, H, W).
    pub gradient: Tensor<Inner<B>, 4>,
    /// Logits at the input, (N, classes).
    pub logits: Tensor<Inner<B>, 2>,
}

impl<B: AutodiffBackend, M: Classifier<B>> FrozenModel<B, M> {
    /// A frozen copy of `model` (the original keeps its gradient tracking).
    pub fn new(model: &M) -> Self {
        Self::in_mode(model, Mode::Inference)
    }

    /// A frozen copy of `model` whose forward passes run in `mode`; [`Mode::Train`] is taken as
    /// [`Mode::BatchStatistics`], since an attack must never move the running statistics.
    pub fn in_mode(model: &M, mode: Mode) -> Self {
        // A clone of a model whose parameters are still lazy would draw its own random weights.
        tailguard_models::initialize_parameters(model);
        Self {
            model: model.clone().no_grad(),
            mode: match mode {
                Mode::Train => Mode::BatchStatistics,
                other => other,
            },
            _backend: std::marker::PhantomData,
        }
    }

    /// The mode of its forward passes.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.model.num_classes()
    }

    /// Logits without gradients, (N, classes).
    pub fn logits(&self, images: Tensor<Inner<B>, 4>) -> Tensor<Inner<B>, 2> {
        self.model.forward(Tensor::from_inner(images), self.mode).inner()
    }

    /// Whether each image is classified as its label, (N).
    pub fn correct(&self, images: Tensor<Inner<B>, 4>, labels: Tensor<Inner<B>, 1, Int>) -> Tensor<Inner<B>, 1, Bool> {
        predictions(self.logits(images)).equal(labels)
    }

    /// Loss, gradient and logits at `images`.
    pub fn probe(
        &self,
        images: Tensor<Inner<B>, 4>,
        loss: AttackLoss,
        labels: Tensor<Inner<B>, 1, Int>,
        targets: Option<Tensor<Inner<B>, 1, Int>>,
    ) -> Probe<B> {
        let labels = Tensor::<B, 1, Int>::from_inner(labels);
        let targets = targets.map(Tensor::from_inner);
        self.probe_with(images, |logits| {
            loss.per_sample(logits, labels.clone(), targets.clone())
        })
    }

    /// Loss, gradient and logits at `images` for any per-sample loss of the logits, (N, classes) -> (N).
    pub fn probe_with(&self, images: Tensor<Inner<B>, 4>, loss: impl Fn(Tensor<B, 2>) -> Tensor<B, 1>) -> Probe<B> {
        let input = Tensor::<B, 4>::from_inner(images).require_grad();
        let logits = self.model.forward(input.clone(), self.mode);
        let per_sample = loss(logits.clone());
        let grads = per_sample.clone().sum().backward();
        let gradient = input
            .grad(&grads)
            .expect("the input of an attack step requires gradients");
        Probe {
            loss: per_sample.inner(),
            gradient,
            logits: logits.inner(),
        }
    }
}

/// Boolean flags (N) read to the host (which waits for the device).
pub fn host_flags<B: AutodiffBackend>(flags: Tensor<Inner<B>, 1, Bool>) -> Vec<bool> {
    let values = flags
        .int()
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap_or_default();
    values.into_iter().map(|f| f != 0).collect()
}

/// Predicted class per sample, (N).
pub fn predictions<B: burn::tensor::backend::Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1, Int> {
    let n = logits.dims()[0];
    logits.argmax(1).reshape([n])
}
