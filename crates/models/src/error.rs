//! Why a model configuration cannot be built.

/// An impossible or unknown model configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelConfigError {
    /// An architecture name tailguard does not ship.
    #[error(
        "unknown architecture '{0}' (expected resnet18, preact-resnet18, wrn-28-10, wrn-34-10, wrn-D-K, small-cnn, \
         small-cnn-W or linear)"
    )]
    UnknownArchitecture(String),
    /// A WideResNet depth that is not 6n + 4.
    #[error("WideResNet depth must be 6n + 4 with n >= 1 (e.g. 28, 34), got {0}")]
    WideResNetDepth(usize),
    /// A width (WideResNet widening factor, small-CNN width) of zero.
    #[error("{0} must be at least 1")]
    ZeroWidth(&'static str),
    /// A classifier with no classes.
    #[error("a classifier needs at least one class")]
    NoClasses,
    /// An input shape with an empty dimension.
    #[error("input shape {0:?} has an empty dimension")]
    EmptyInput([usize; 3]),
    /// Normalisation statistics that do not fit the input channels or each other.
    #[error("normalisation has {means} means and {stds} standard deviations for {channels} input channels")]
    NormalizationChannels {
        /// Number of means.
        means: usize,
        /// Number of standard deviations.
        stds: usize,
        /// Input channels of the model.
        channels: usize,
    },
    /// A standard deviation that is zero, negative or not finite.
    #[error("normalisation std must be positive, got {0}")]
    NormalizationStd(f32),
    /// A logit adjustment whose prior does not fit the classifier, or whose settings are not finite.
    #[error("logit adjustment: {0}")]
    LogitAdjustment(String),
    /// The linear classifier with another head.
    #[error("the linear classifier has no other head than a linear one")]
    LinearHead,
    /// More classes than a classifier may have.
    #[error("{classes} classes is more than tailguard builds a classifier for (at most {max})")]
    TooManyClasses {
        /// Classes asked for.
        classes: usize,
        /// [`crate::size::MAX_CLASSES`].
        max: usize,
    },
    /// An input image side beyond [`crate::size::MAX_IMAGE_SIDE`].
    #[error("input shape {shape:?} is larger than tailguard builds a model for (image sides at most {max} pixels)")]
    InputTooLarge {
        /// Channels, height, width asked for.
        shape: [usize; 3],
        /// [`crate::size::MAX_IMAGE_SIDE`].
        max: usize,
    },
    /// A network with more weights than tailguard allocates.
    #[error(
        "{arch} with {classes} classes would have about {weights} weights, more than tailguard allocates (at most \
         {max}, 4 GB in f32)"
    )]
    TooManyWeights {
        /// The architecture's name.
        arch: String,
        /// Its classes.
        classes: usize,
        /// `ModelConfig::weight_count`.
        weights: u128,
        /// [`crate::size::MAX_WEIGHTS`].
        max: u128,
    },
}
