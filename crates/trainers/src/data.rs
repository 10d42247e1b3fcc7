//! The training images, split into training and validation parts.

use std::sync::Arc;

use tailguard_longtail::{DataError, ImageDataset, carve_validation};

/// The training images, split into training and validation parts.
pub struct TrainData {
    /// The images trained on.
    pub train: Arc<ImageDataset>,
    /// The held-out images validation runs on, when a fraction is held out.
    pub validation: Option<Arc<ImageDataset>>,
    /// Images per class in the training part (what RobustLT's budgets and the logit adjustments use).
    pub counts: Vec<usize>,
    /// Class names in label order.
    pub classes: Vec<String>,
}

impl TrainData {
    /// From an already long-tailed dataset, holding out `validation_fraction` of each class (seeded).
    pub fn from_dataset(dataset: ImageDataset, validation_fraction: f64, seed: u64) -> Result<Self, DataError> {
        let (train, validation) = if validation_fraction > 0.0 {
            let (train, validation) = carve_validation(&dataset, validation_fraction, seed)?;
            (train, (!validation.is_empty()).then(|| Arc::new(validation)))
        } else {
            (dataset, None)
        };
        Ok(Self {
            counts: train.class_counts(),
            classes: train.classes().to_vec(),
            train: Arc::new(train),
            validation,
        })
    }
}
