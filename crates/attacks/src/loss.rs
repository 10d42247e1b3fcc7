//! Per-sample losses that attacks maximise.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

/// What an attack maximises.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum AttackLoss {
    /// Cross-entropy of the true class (untargeted) or minus the cross-entropy of the target (targeted).
    CrossEntropy,
    /// Carlini-Wagner margin as in RoBal and AT-BSL (the CAT implementation): `-max(z_y - max_{i!=y} z_i + kappa, 0)`;
    /// targeted: `-max(max_{i!=t} z_i - z_t + kappa, 0)`. The papers use kappa = 50.
    CwMargin {
        /// Confidence margin.
        kappa: f64,
    },
    /// Difference of logits ratio (Croce and Hein 2020): `-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12)`;
    /// targeted: `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`. Needs 3 (4 targeted) classes.
    Dlr,
}

impl AttackLoss {
    /// The CW-inf loss of the long-tailed AT papers.
    pub const CW: AttackLoss = AttackLoss::CwMargin { kappa: 50.0 };

    /// Smallest number of classes the loss is defined for.
    pub fn min_classes(&self, targeted: bool) -> usize {
        match (self, targeted) {
            (AttackLoss::Dlr, false) => 3,
            (AttackLoss::Dlr, true) => 4,
            _ => 2,
        }
    }

    /// Loss per sample, (N). `logits`: (N, C); `labels`: true classes (N); `targets`: target classes for a
    /// targeted attack.
    pub fn per_sample<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        labels: Tensor<B, 1, Int>,
        targets: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 1> {
        let [n, _] = logits.dims();
        match (self, targets) {
            (AttackLoss::CrossEntropy, None) => cross_entropy_per_sample(logits, labels),
            (AttackLoss::CrossEntropy, Some(targets)) => cross_entropy_per_sample(logits, targets).neg(),
            (AttackLoss::CwMargin { kappa }, None) => (class_logit(logits.clone(), labels.clone())
                - max_other(logits, labels))
            .add_scalar(*kappa)
            .clamp_min(0.0)
            .neg(),
            (AttackLoss::CwMargin { kappa }, Some(targets)) => (max_other(logits.clone(), targets.clone())
                - class_logit(logits, targets))
            .add_scalar(*kappa)
            .clamp_min(0.0)
            .neg(),
            (AttackLoss::Dlr, None) => {
                let sorted = top_logits(logits.clone(), 3);
                let scale = column(sorted.clone(), 0) - column(sorted, 2);
                let margin = class_logit(logits.clone(), labels.clone()) - max_other(logits, labels);
                (margin / scale.add_scalar(1e-12)).neg()
            }
            (AttackLoss::Dlr, Some(targets)) => {
                let sorted = top_logits(logits.clone(), 4);
                let scale = column(sorted.clone(), 0) - (column(sorted.clone(), 2) + column(sorted, 3)).mul_scalar(0.5);
                let margin = class_logit(logits.clone(), labels) - class_logit(logits, targets);
                (margin / scale.add_scalar(1e-12)).neg()
            }
        }
        .reshape([n])
    }
}

/// Cross-entropy per sample: `-log softmax(z)_y`, (N).
pub fn cross_entropy_per_sample<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let n = labels.dims()[0];
    log_softmax(logits, 1)
        .gather(1, labels.reshape([n, 1]))
        .reshape([n])
        .neg()
}

/// `z_y` per sample, (N).
pub fn class_logit<B: Backend>(logits: Tensor<B, 2>, classes: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let n = classes.dims()[0];
    logits.gather(1, classes.reshape([n, 1])).reshape([n])
}

/// `max_{i != y} z_i` per sample, (N).
pub fn max_other<B: Backend>(logits: Tensor<B, 2>, classes: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, c] = logits.dims();
    let is_class = classes.one_hot::<2>(c).equal_elem(1);
    // A finite stand-in for minus infinity keeps the gradient of the masked entry an exact zero.
    logits.mask_fill(is_class, -1e30).max_dim(1).reshape([n])
}

/// The `k` largest logits per sample, in descending order, (N, k). Gradients flow to the chosen entries.
fn top_logits<B: Backend>(logits: Tensor<B, 2>, k: usize) -> Tensor<B, 2> {
    let [n, _] = logits.dims();
    let (_, order) = logits.clone().detach().sort_descending_with_indices(1);
    logits.gather(1, order.slice([0..n, 0..k]))
}

fn column<B: Backend>(x: Tensor<B, 2>, index: usize) -> Tensor<B, 1> {
    let n = x.dims()[0];
    x.slice([0..n, index..index + 1]).reshape([n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tailguard_flex::Flex;

    fn logits(values: Vec<f32>, n: usize) -> Tensor<Flex, 2> {
        let c = values.len() / n;
        Tensor::from_data(TensorData::new(values, [n, c]), &Default::default())
    }

    fn labels(values: Vec<i64>) -> Tensor<Flex, 1, Int> {
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [n]), &Default::default())
    }

    fn values(t: Tensor<Flex, 1>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn cross_entropy_by_hand() {
        let z = logits(vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0], 2);
        let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        close(
            &values(cross_entropy_per_sample(z.clone(), labels(vec![0, 2]))),
            &[lse - 1.0, 3f32.ln()],
        );
        let targeted = AttackLoss::CrossEntropy.per_sample(z, labels(vec![0, 0]), Some(labels(vec![2, 1])));
        close(&values(targeted), &[-(lse - 3.0), -(3f32.ln())]);
    }

    #[test]
    fn cw_margin_by_hand() {
        let z = logits(vec![5.0, 1.0, 2.0, 0.0, 4.0, 1.0], 2);
        let loss = AttackLoss::CwMargin { kappa: 1.0 }.per_sample(z.clone(), labels(vec![0, 0]), None);
        // Sample 0: -(5 - 2 + 1) = -4. Sample 1: z_y - other + kappa = 0 - 4 + 1 < 0, clamped to 0.
        close(&values(loss), &[-4.0, 0.0]);
        let targeted = AttackLoss::CwMargin { kappa: 1.0 }.per_sample(z, labels(vec![0, 0]), Some(labels(vec![1, 1])));
        // Sample 0 towards 1: -(max(5, 2) - 1 + 1) = -5. Sample 1 towards 1: -(max(0, 1) - 4 + 1) -> 0.
        close(&values(targeted), &[-5.0, 0.0]);
    }

    #[test]
    fn dlr_by_hand() {
        // Sorted: 4, 3, 1, 0. True class 1 (z = 3) is second: margin 3 - 4 = -1, scale 4 - 1 = 3.
        let z = logits(vec![0.0, 3.0, 4.0, 1.0], 1);
        close(
            &values(AttackLoss::Dlr.per_sample(z.clone(), labels(vec![1]), None)),
            &[1.0 / 3.0],
        );
        // True class 2 (top): margin 4 - 3 = 1 -> -1/3.
        close(
            &values(AttackLoss::Dlr.per_sample(z.clone(), labels(vec![2]), None)),
            &[-1.0 / 3.0],
        );
        // Targeted, y = 2, t = 0: -(4 - 0) / (4 - (1 + 0) / 2).
        let t = AttackLoss::Dlr.per_sample(z, labels(vec![2]), Some(labels(vec![0])));
        close(&values(t), &[-4.0 / 3.5]);
    }

    #[test]
    fn dlr_is_shift_and_scale_invariant() {
        let z = logits(vec![0.3, -1.0, 2.0, 0.7, 1.1], 1);
        let shifted = z.clone().mul_scalar(7.0).add_scalar(-3.0);
        let a = values(AttackLoss::Dlr.per_sample(z, labels(vec![3]), None));
        let b = values(AttackLoss::Dlr.per_sample(shifted, labels(vec![3]), None));
        close(&a, &b);
    }
}

#[cfg(test)]
mod gradient_tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;
    use tailguard_flex::Flex;

    type A = Autodiff<Flex>;

    #[test]
    fn dlr_gradient_by_hand() {
        let device = Default::default();
        // Sorted: 4 (class 2), 3 (class 1), 1 (class 3), 0 (class 0). y = 1: margin 3 - 4, scale 4 - 1.
        let z = Tensor::<A, 2>::from_data(TensorData::new(vec![0.0f32, 3.0, 4.0, 1.0], [1, 4]), &device).require_grad();
        let y = Tensor::<A, 1, Int>::from_data(TensorData::new(vec![1i64], [1]), &device);
        let loss = AttackLoss::Dlr.per_sample(z.clone(), y, None).sum();
        let g: Vec<f32> = z.grad(&loss.backward()).unwrap().into_data().to_vec().unwrap();
        // L = -(z1 - z2) / (z2 - z3): dL/dz1 = -1/3, dL/dz2 = 1/3 + (z1 - z2)/(z2 - z3)^2 = 1/3 - 1/9,
        // dL/dz3 = -(z1 - z2)/(z2 - z3)^2 = 1/9.
        let expected = [0.0, -1.0 / 3.0, 1.0 / 3.0 - 1.0 / 9.0, 1.0 / 9.0];
        for (a, b) in g.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{g:?} vs {expected:?}");
        }
    }
}
