//! # tailguard-models
//!
//! CIFAR classifiers for adversarial training: ResNet-18, PreAct-ResNet-18, WideResNet-28-10/34-10, a small CNN and a
//! linear classifier, all generic over the Burn backend. Every forward pass takes a [`Mode`]: in
//! [`Mode::Inference`] BatchNorm uses (and never updates) its running statistics while staying differentiable with
//! respect to the input, also on autodiff backends, which is what adversarial attacks need.
//!
//! ```
//! use burn::backend::Autodiff;
//! use tailguard_flex::Flex;
//! use burn::tensor::{Distribution, Tensor};
//! use tailguard_models::{Architecture, Classifier, Mode, ModelConfig};
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let model = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10).init::<B>(&device).unwrap();
//! let images = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device).require_grad();
//! let logits = model.forward(images.clone(), Mode::Inference);
//! assert_eq!(logits.dims(), [2, 10]);
//! let grads = logits.sum().backward();
//! assert!(images.grad(&grads).is_some()); // gradients reach the input in inference mode
//! ```

#![warn(missing_docs)]

/// The CPU backend tailguard runs on: Burn 0.21's Flex with tailguard's batched convolution kernels and gemm's
/// AVX-512 products (the `tailguard-flex` crate). Name this type, not `burn::backend::Flex`, to train and attack at
/// the program's speed and with its exact arithmetic.
pub use tailguard_flex::Flex;
/// Tunes glibc's malloc for a backend that allocates every operation's output anew; call it first in `main` on the
/// CPU, as `tailguard` does (see the function's docs).
pub use tailguard_flex::keep_freed_memory;

pub mod architecture;
pub mod batch_norm;
pub mod bottleneck_resnet;
pub mod checkpoint;
pub mod classifier;
pub mod dm_wide_resnet;
pub mod error;
pub mod flops;
pub mod head;
pub mod interop;
pub mod layers;
pub mod linear_classifier;
pub mod logit_adjustment;
pub mod mode;
pub mod normalization;
pub mod parameters;
pub mod preact_resnet;
pub mod resnet;
pub mod robustbench;
pub mod size;
pub mod small_cnn;
pub mod testing;
pub mod torch_file;
pub mod weights_file;
pub mod wide_resnet;

pub use architecture::{Architecture, Model, ModelConfig, Network};
pub use batch_norm::{ModalBatchNorm, ModalBatchNormConfig};
pub use checkpoint::{
    AverageMeta, CheckpointError, CheckpointMeta, TensorEntry, Weights, load_average_into, load_checkpoint,
    load_checkpoint_into, load_checkpoint_weights, read_checkpoint_meta, recover_checkpoint, save_checkpoint,
    save_checkpoint_with, weights_bytes,
};
pub use classifier::{Classifier, ParameterGroups, trainable_parameter_count, trainable_parameters};
pub use error::ModelConfigError;
pub use flops::{forward_flops, forward_multiply_adds};
pub use head::{ClassifierHead, CosineHead, HeadKind};
pub use interop::{
    BurnNames, ImportOptions, InteropError, NamedTensors, ParameterNames, WeightsFile, export_safetensors,
    import_safetensors, import_weights, read_safetensors, read_weights_file, safetensors_bytes, torch_name,
    written_by_tailguard,
};
pub use logit_adjustment::{LogitAdjusted, LogitAdjustmentConfig};
pub use mode::Mode;
pub use normalization::{InputNormalization, InputNormalizationConfig};
pub use parameters::{initialize_parameters, sync_running_statistics};
