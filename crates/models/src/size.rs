//! The largest sizes tailguard builds a model for. `ModelConfig::validate` checks them, with the weight count
//! computed from the configuration's numbers (`ModelConfig::weight_count`), before anything is allocated, so an
//! impossible size (`wrn-10-100000`, four billion classes) is a clear error instead of an aborted allocation.

/// The most classes a classifier may have (ImageNet-21k has 21,841).
pub const MAX_CLASSES: usize = 1_000_000;

/// The most weights a model may have: 4 GB in f32, the order of the largest network the field trains on a
/// long-tailed CIFAR (WRN-70-16 has 267 M; the largest tailguard names, WRN-34-10, 46 M).
pub const MAX_WEIGHTS: u128 = 1_000_000_000;

/// The largest image side a model or a dataset may have, in pixels.
pub const MAX_IMAGE_SIDE: usize = 4096;
