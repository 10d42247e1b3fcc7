//! Metrics that expose the tail: per-class accuracy, balanced accuracy (mean per-class recall), balanced robustness
//! (the same under attack), worst class, and accuracy of class groups by training frequency.
//!
//! A class with no test example is reported as absent, never averaged in as 0 or 1.

/// Class indices (N) read to the host.
pub fn host_labels<B: burn::tensor::backend::Backend>(
    labels: burn::tensor::Tensor<B, 1, burn::tensor::Int>,
) -> Vec<usize> {
    labels
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap_or_default()
        .into_iter()
        .map(|l| l as usize)
        .collect()
}

/// Correct predictions and support per class.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClassTally {
    /// Points per class.
    pub support: Vec<usize>,
    /// Correct (or robust) points per class.
    pub correct: Vec<usize>,
}

/// Per-class accuracy and its summaries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccuracySummary {
    /// Correct / total over all examples.
    pub accuracy: f64,
    /// Mean per-class accuracy over the classes present in the test set. Under attack this is balanced robustness.
    pub balanced_accuracy: f64,
    /// Accuracy per class; `None` for classes with no test example.
    pub per_class: Vec<Option<f64>>,
    /// The class with the lowest accuracy.
    pub worst_class: Option<WorstClass>,
    /// Mean per-class accuracy of each frequency group (`None` when no class of the group is present).
    pub groups: GroupAccuracy,
    /// Classes with no test example.
    pub absent: Vec<usize>,
}

/// The class with the lowest accuracy (the first such class on ties).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorstClass {
    /// The class.
    pub class: usize,
    /// Its accuracy.
    pub accuracy: f64,
}

/// Mean per-class accuracy of the frequency groups.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct GroupAccuracy {
    /// Mean accuracy of the many-shot classes.
    pub many: Option<f64>,
    /// Mean accuracy of the medium-shot classes.
    pub medium: Option<f64>,
    /// Mean accuracy of the few-shot classes.
    pub few: Option<f64>,
    /// Mean accuracy of the tail classes.
    pub tail: Option<f64>,
}

impl ClassTally {
    /// An empty tally for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            support: vec![0; num_classes],
            correct: vec![0; num_classes],
        }
    }

    /// Adds examples with true classes `labels` and whether each was classified correctly.
    pub fn add(&mut self, labels: &[usize], correct: &[bool]) {
        assert_eq!(labels.len(), correct.len(), "one flag per label");
        for (&label, &ok) in labels.iter().zip(correct) {
            self.support[label] += 1;
            self.correct[label] += ok as usize;
        }
    }

    /// Adds a batch from device tensors: true classes (N) and whether each was classified correctly (N).
    pub fn add_batch<B: burn::tensor::backend::Backend>(
        &mut self,
        labels: burn::tensor::Tensor<B, 1, burn::tensor::Int>,
        correct: burn::tensor::Tensor<B, 1, burn::tensor::Bool>,
    ) {
        let labels = host_labels(labels);
        let correct: Vec<bool> = correct.into_data().convert::<bool>().to_vec().unwrap_or_default();
        self.add(&labels, &correct);
    }

    /// Number of examples.
    pub fn total(&self) -> usize {
        self.support.iter().sum()
    }

    /// Accuracy per class; `None` where the class has no example.
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.support
            .iter()
            .zip(&self.correct)
            .map(|(&n, &k)| (n > 0).then(|| k as f64 / n as f64))
            .collect()
    }

    /// Mean per-class accuracy of the present classes among `classes`.
    pub fn mean_over(&self, classes: &[usize]) -> Option<f64> {
        let per_class = self.per_class();
        let present: Vec<f64> = classes.iter().filter_map(|&c| per_class[c]).collect();
        (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
    }

    /// All summaries, with groups defined by the training counts `groups`.
    pub fn summary(&self, groups: &ClassGroups) -> AccuracySummary {
        let per_class = self.per_class();
        let all: Vec<usize> = (0..self.support.len()).collect();
        let total = self.total();
        let worst_class = per_class
            .iter()
            .enumerate()
            .filter_map(|(class, a)| a.map(|accuracy| WorstClass { class, accuracy }))
            .min_by(|a, b| a.accuracy.total_cmp(&b.accuracy));
        AccuracySummary {
            accuracy: if total > 0 {
                self.correct.iter().sum::<usize>() as f64 / total as f64
            } else {
                0.0
            },
            balanced_accuracy: self.mean_over(&all).unwrap_or(0.0),
            worst_class,
            groups: GroupAccuracy {
                many: self.mean_over(&groups.many),
                medium: self.mean_over(&groups.medium),
                few: self.mean_over(&groups.few),
                tail: self.mean_over(&groups.tail),
            },
            absent: (0..per_class.len()).filter(|&c| per_class[c].is_none()).collect(),
            per_class,
        }
    }
}

/// Classes grouped by their number of training images.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ClassGroups {
    /// More than 100 training images.
    pub many: Vec<usize>,
    /// 20 to 100 training images.
    pub medium: Vec<usize>,
    /// Fewer than 20 training images.
    pub few: Vec<usize>,
    /// RobustLT's tail: the 80 % least frequent classes (ties broken towards higher class indices).
    pub tail: Vec<usize>,
}

impl ClassGroups {
    /// Groups from per-class training counts.
    pub fn from_train_counts(counts: &[usize]) -> Self {
        let pick =
            |keep: &dyn Fn(usize) -> bool| -> Vec<usize> { (0..counts.len()).filter(|&c| keep(counts[c])).collect() };
        let mut by_rarity: Vec<usize> = (0..counts.len()).collect();
        by_rarity.sort_by(|&a, &b| counts[a].cmp(&counts[b]).then(b.cmp(&a)));
        let tail_len = ((counts.len() as f64 * 0.8).floor() as usize).max(1).min(counts.len());
        let mut tail = by_rarity[..tail_len].to_vec();
        tail.sort_unstable();
        Self {
            many: pick(&|n| n > 100),
            medium: pick(&|n| (20..=100).contains(&n)),
            few: pick(&|n| n < 20),
            tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracies_by_hand() {
        let mut tally = ClassTally::new(3);
        // Class 0: 3 of 4 right; class 1: the single example wrong; class 2: no example.
        tally.add(&[0, 0, 0, 0, 1], &[true, true, false, true, false]);
        let groups = ClassGroups::from_train_counts(&[500, 50, 5]);
        let summary = tally.summary(&groups);
        assert_eq!(summary.accuracy, 3.0 / 5.0);
        assert_eq!(summary.per_class, vec![Some(0.75), Some(0.0), None]);
        assert_eq!(summary.balanced_accuracy, 0.375, "the absent class is not averaged in");
        assert_eq!(
            summary.worst_class,
            Some(WorstClass {
                class: 1,
                accuracy: 0.0
            })
        );
        assert_eq!(summary.absent, vec![2]);
        assert_eq!(summary.groups.many, Some(0.75));
        assert_eq!(summary.groups.medium, Some(0.0));
        assert_eq!(summary.groups.few, None, "the only few-shot class is absent");
    }

    #[test]
    fn single_sample_classes_count_fully() {
        let mut tally = ClassTally::new(2);
        tally.add(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1], &[true; 10]);
        let summary = tally.summary(&ClassGroups::from_train_counts(&[10, 1]));
        assert_eq!(summary.balanced_accuracy, 1.0);
        tally.add(&[1], &[false]);
        let summary = tally.summary(&ClassGroups::from_train_counts(&[10, 1]));
        assert_eq!(summary.per_class[1], Some(0.5));
        assert_eq!(summary.balanced_accuracy, 0.75);
    }

    #[test]
    fn groups_follow_training_counts() {
        let counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
        let groups = ClassGroups::from_train_counts(&counts);
        assert_eq!(groups.many, (0..8).collect::<Vec<_>>());
        assert_eq!(groups.medium, vec![8, 9]);
        assert!(groups.few.is_empty());
        assert_eq!(groups.tail, (2..10).collect::<Vec<_>>());
        // Ties: equal counts, the later class is the rarer.
        let groups = ClassGroups::from_train_counts(&[10, 10, 10, 10, 10]);
        assert_eq!(groups.tail, vec![1, 2, 3, 4]);
        assert_eq!(groups.few, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn batches_from_tensors() {
        use burn::tensor::{Bool, Int, Tensor, TensorData};
        use tailguard_flex::Flex;
        let device = Default::default();
        let labels = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![1i64, 0, 1], [3]), &device);
        let correct = Tensor::<Flex, 1, Bool>::from_data(TensorData::new(vec![true, false, false], [3]), &device);
        let mut tally = ClassTally::new(2);
        tally.add_batch(labels, correct);
        assert_eq!(tally.support, vec![1, 2]);
        assert_eq!(tally.correct, vec![0, 1]);
    }

    #[test]
    fn empty_tally_has_no_accuracy() {
        let summary = ClassTally::new(2).summary(&ClassGroups::default());
        assert_eq!(summary.per_class, vec![None, None]);
        assert_eq!(summary.worst_class, None);
        assert_eq!(summary.absent, vec![0, 1]);
    }
}
