//! Training losses of the methods, each a pure function of logits and labels so it can be checked by hand.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use tailguard_attacks::loss::cross_entropy_per_sample;

/// Mean cross-entropy, (1).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    cross_entropy_per_sample(logits, labels).mean()
}

/// Cross-entropy against labels smoothed by `smoothing` (PyTorch's `label_smoothing`), per sample, (B): the target
/// puts `1 - smoothing` on the label and `smoothing / C` on every class, so the loss is
/// `(1 - smoothing) CE + smoothing mean_c(-log p_c)`. `smoothing = 0` computes plain cross-entropy, bit for bit.
pub fn smoothed_cross_entropy_per_sample<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    smoothing: f64,
) -> Tensor<B, 1> {
    if smoothing == 0.0 {
        return cross_entropy_per_sample(logits, labels);
    }
    let uniform = log_softmax(logits.clone(), 1).mean_dim(1).squeeze_dim::<1>(1).neg();
    cross_entropy_per_sample(logits, labels).mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing)
}

/// Mean of [`smoothed_cross_entropy_per_sample`], (1).
pub fn smoothed_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    smoothing: f64,
) -> Tensor<B, 1> {
    smoothed_cross_entropy_per_sample(logits, labels, smoothing).mean()
}

/// The class prior `n_c / N` of training counts. A class without images counts as one image, so its log stays
/// finite (such a class is never a label, and its logit adjustment must not be infinite).
pub fn class_prior(train_counts: &[usize]) -> Vec<f64> {
    let total = train_counts.iter().map(|&n| n.max(1)).sum::<usize>() as f64;
    train_counts.iter().map(|&n| n.max(1) as f64 / total).collect()
}

/// `log(n_c / N)` per class (see [`class_prior`] for the zero guard): the logit adjustment of balanced softmax,
/// RoBal and REAT.
pub fn log_prior(train_counts: &[usize]) -> Vec<f32> {
    class_prior(train_counts).iter().map(|p| p.ln() as f32).collect()
}

/// Balanced softmax (Ren et al. 2020; AT-BSL): cross-entropy of `z + tau * log(prior)`, where `log_prior` is
/// `log(n_c / N)` per class, (C). Returns the mean, (1).
pub fn balanced_softmax<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    log_prior: Tensor<B, 1>,
    tau: f64,
) -> Tensor<B, 1> {
    smoothed_balanced_softmax(logits, labels, log_prior, tau, 0.0)
}

/// [`balanced_softmax`] against labels smoothed by `smoothing` (see [`smoothed_cross_entropy_per_sample`]), (1).
pub fn smoothed_balanced_softmax<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    log_prior: Tensor<B, 1>,
    tau: f64,
    smoothing: f64,
) -> Tensor<B, 1> {
    let classes = log_prior.dims()[0];
    smoothed_cross_entropy(
        logits + log_prior.mul_scalar(tau).reshape([1, classes]),
        labels,
        smoothing,
    )
}

/// TRADES' regulariser: `(1/B) sum_i KL(softmax(clean_i) || softmax(adversarial_i))`, (1).
pub fn trades_kl<B: Backend>(clean_logits: Tensor<B, 2>, adversarial_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_p = log_softmax(clean_logits.clone(), 1);
    let p = softmax(clean_logits, 1);
    let log_q = log_softmax(adversarial_logits, 1);
    (p * (log_p - log_q)).sum_dim(1).mean()
}

/// RoBal's regulariser as its code computes it: `(1/B) sum_i sum_j p_ij (log p_ij - log(q_ij + 1e-12))` with
/// `p = softmax(clean)`, `q = softmax(adversarial)`, (1).
pub fn robal_kl<B: Backend>(clean_logits: Tensor<B, 2>, adversarial_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_p = log_softmax(clean_logits.clone(), 1);
    let p = softmax(clean_logits, 1);
    let log_q = softmax(adversarial_logits, 1).add_scalar(1e-12).log();
    (p * (log_p - log_q)).sum_dim(1).mean()
}

/// RoBal's class-aware margins `m_c = m + tau_m log(n_c / n_min) / s` (head classes get the larger margin).
pub fn robal_margins(train_counts: &[usize], margin: f64, tau_m: f64, scale: f64) -> Vec<f32> {
    let n_min = train_counts.iter().copied().filter(|&n| n > 0).min().unwrap_or(1) as f64;
    train_counts
        .iter()
        .map(|&n| (margin + tau_m * (n.max(1) as f64 / n_min).ln() / scale) as f32)
        .collect()
}

/// RoBal's training logits: `s (z - m_y 1[j = y]) + tau_b log(prior)`, (N, C), from cosine logits `z`, per-class
/// margins `margins` (C) and `log_prior` (C).
pub fn robal_logits<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    margins: Tensor<B, 1>,
    scale: f64,
    log_prior: Tensor<B, 1>,
    tau_b: f64,
) -> Tensor<B, 2> {
    let [_, classes] = logits.dims();
    let one_hot = labels.one_hot::<2>(classes).float();
    let shifted = logits - one_hot * margins.reshape([1, classes]);
    shifted.mul_scalar(scale) + log_prior.mul_scalar(tau_b).reshape([1, classes])
}

/// How HARL treats classes with no sample in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbsentClasses {
    /// The official code: an absent class has L_c = 0 and still counts in the means over C classes.
    #[default]
    Zero,
    /// Means over the classes present in the batch only.
    Exclude,
}

/// The three terms of TAET's hierarchical equalisation loss.
pub struct HarlTerms<B: Backend> {
    /// BCL: mean of the per-class mean losses.
    pub bcl: Tensor<B, 1>,
    /// HDL: variance of the per-class mean losses.
    pub hdl: Tensor<B, 1>,
    /// RCEL: sum of squared shares of the per-class mean losses.
    pub rcel: Tensor<B, 1>,
}

/// Per-class sums of per-sample losses `l`, (N), and the per-class counts, each (C).
pub fn class_sums<B: Backend>(
    per_sample: Tensor<B, 1>,
    labels: Tensor<B, 1, Int>,
    num_classes: usize,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let n = per_sample.dims()[0];
    let one_hot = labels.one_hot::<2>(num_classes).float(); // (N, C)
    let sums = (one_hot.clone() * per_sample.reshape([n, 1]))
        .sum_dim(0)
        .reshape([num_classes]);
    let counts = one_hot.sum_dim(0).reshape([num_classes]);
    (sums, counts)
}

/// BCL, HDL and RCEL over the per-class means `L_c = sum_{y_i = c} l_i / (n_c + 1e-10)` of per-sample losses `l`, (N).
pub fn harl_terms<B: Backend>(
    per_sample: Tensor<B, 1>,
    labels: Tensor<B, 1, Int>,
    num_classes: usize,
    absent: AbsentClasses,
) -> HarlTerms<B> {
    let (sums, counts) = class_sums(per_sample, labels, num_classes);
    harl_terms_from_sums(sums, counts, absent)
}

/// [`harl_terms`] from the per-class loss sums and counts, each (C) (in a data-parallel run, those of the global
/// batch).
pub fn harl_terms_from_sums<B: Backend>(
    sums: Tensor<B, 1>,
    counts: Tensor<B, 1>,
    absent: AbsentClasses,
) -> HarlTerms<B> {
    let num_classes = sums.dims()[0];
    let class_loss = sums / counts.clone().add_scalar(1e-10); // (C)
    let present = match absent {
        AbsentClasses::Zero => Tensor::ones([num_classes], &class_loss.device()),
        AbsentClasses::Exclude => counts.greater_elem(0.0).float(),
    };
    let n_present = present.clone().sum();
    let bcl = (class_loss.clone() * present.clone()).sum() / n_present.clone();
    let deviation = class_loss.clone() - bcl.clone();
    let hdl = (deviation.square() * present).sum() / n_present;
    let share = class_loss.clone() / class_loss.sum().add_scalar(1e-10);
    let rcel = share.square().sum();
    HarlTerms { bcl, hdl, rcel }
}

/// TAET's HARL: `alpha BCL + beta HDL + gamma RCEL`, (1).
pub fn harl<B: Backend>(
    per_sample: Tensor<B, 1>,
    labels: Tensor<B, 1, Int>,
    num_classes: usize,
    weights: [f64; 3],
    absent: AbsentClasses,
) -> Tensor<B, 1> {
    let (sums, counts) = class_sums(per_sample, labels, num_classes);
    harl_from_sums(sums, counts, weights, absent)
}

/// [`harl`] from the per-class loss sums and counts, each (C).
pub fn harl_from_sums<B: Backend>(
    sums: Tensor<B, 1>,
    counts: Tensor<B, 1>,
    weights: [f64; 3],
    absent: AbsentClasses,
) -> Tensor<B, 1> {
    let t = harl_terms_from_sums(sums, counts, absent);
    t.bcl.mul_scalar(weights[0]) + t.hdl.mul_scalar(weights[1]) + t.rcel.mul_scalar(weights[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tailguard_flex::Flex;

    fn floats(v: Vec<f32>, shape: [usize; 2]) -> Tensor<Flex, 2> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn ints(v: Vec<i64>) -> Tensor<Flex, 1, Int> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [n]), &Default::default())
    }

    fn scalar(t: Tensor<Flex, 1>) -> f64 {
        t.into_scalar() as f64
    }

    #[test]
    fn the_prior_of_an_empty_class_is_finite() {
        let prior = class_prior(&[6, 3, 0]);
        assert_eq!(prior, vec![0.6, 0.3, 0.1]);
        let logs = log_prior(&[6, 3, 0]);
        assert!((logs[0] as f64 - 0.6f64.ln()).abs() < 1e-6 && logs[2].is_finite());
    }

    #[test]
    fn label_smoothing_equals_the_closed_form() {
        // Logits [1, 2, 3], label 0: -log p = [lse - 1, lse - 2, lse - 3] with lse = log(e + e^2 + e^3).
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let (ce, mean) = (lse - 1.0, lse - 2.0);
        let logits = || floats(vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0], [2, 3]);
        let labels = || ints(vec![0, 2]);
        let per_sample = smoothed_cross_entropy_per_sample(logits(), labels(), 0.1)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // (1 - s) CE + s mean_c(-log p_c); the uniform second row gives log 3 whatever the smoothing.
        assert!(
            (per_sample[0] as f64 - (0.9 * ce + 0.1 * mean)).abs() < 1e-5,
            "{per_sample:?}"
        );
        assert!((per_sample[1] as f64 - 3f64.ln()).abs() < 1e-5);
        // PyTorch's F.cross_entropy([[1, 2, 3]], [0], label_smoothing=0.1) = 2.3076059.
        assert!((per_sample[0] as f64 - 2.307_605_9).abs() < 1e-5);
        // No smoothing is plain cross-entropy, bit for bit; balanced softmax smooths its adjusted logits.
        assert_eq!(
            scalar(smoothed_cross_entropy(logits(), labels(), 0.0)),
            scalar(cross_entropy(logits(), labels()))
        );
        let prior = || Tensor::<Flex, 1>::from_floats([0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()], &Default::default());
        let adjusted = floats(vec![1.0 + 0.5f32.ln(), 2.0 + 0.25f32.ln(), 3.0 + 0.25f32.ln()], [1, 3]);
        let expected = scalar(smoothed_cross_entropy(adjusted, ints(vec![0]), 0.2));
        let got = scalar(smoothed_balanced_softmax(
            floats(vec![1.0, 2.0, 3.0], [1, 3]),
            ints(vec![0]),
            prior(),
            1.0,
            0.2,
        ));
        assert!((got - expected).abs() < 1e-6);
    }

    #[test]
    fn harl_terms_by_hand() {
        // Losses 1, 3 (class 0), 2 (class 1); class 2 absent. L = [2, 2, 0].
        let l = Tensor::<Flex, 1>::from_floats([1.0, 3.0, 2.0], &Default::default());
        let t = harl_terms(l.clone(), ints(vec![0, 0, 1]), 3, AbsentClasses::Zero);
        assert!((scalar(t.bcl) - 4.0 / 3.0).abs() < 1e-6);
        // Variance of [2, 2, 0] around 4/3: (4/9 + 4/9 + 16/9) / 3 = 8/9.
        assert!((scalar(t.hdl) - 8.0 / 9.0).abs() < 1e-6);
        // Shares [0.5, 0.5, 0]: 0.25 + 0.25.
        assert!((scalar(t.rcel) - 0.5).abs() < 1e-6);
        let t = harl_terms(l.clone(), ints(vec![0, 0, 1]), 3, AbsentClasses::Exclude);
        assert!((scalar(t.bcl) - 2.0).abs() < 1e-6);
        assert!(scalar(t.hdl).abs() < 1e-6);
        let total = harl(l, ints(vec![0, 0, 1]), 3, [0.1, 0.2, 0.3], AbsentClasses::Zero);
        assert!((scalar(total) - (0.1 * 4.0 / 3.0 + 0.2 * 8.0 / 9.0 + 0.3 * 0.5)).abs() < 1e-6);
    }

    #[test]
    fn balanced_softmax_by_hand() {
        // Two classes, prior (0.8, 0.2): logits (0, 0) become (log 0.8, log 0.2); CE of class 1 = -log 0.2.
        let log_prior = Tensor::<Flex, 1>::from_floats([0.8f32.ln(), 0.2f32.ln()], &Default::default());
        let loss = balanced_softmax(floats(vec![0.0, 0.0], [1, 2]), ints(vec![1]), log_prior.clone(), 1.0);
        assert!((scalar(loss) + 0.2f64.ln()).abs() < 1e-6);
        // tau = 0 is plain cross-entropy: log 2.
        let loss = balanced_softmax(floats(vec![0.0, 0.0], [1, 2]), ints(vec![1]), log_prior, 0.0);
        assert!((scalar(loss) - 2f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn robal_margins_and_logits_by_hand() {
        // Counts 400, 100: n_min 100; m_0 = 0.1 + 0.3 ln 4 / 10, m_1 = 0.1.
        let margins = robal_margins(&[400, 100], 0.1, 0.3, 10.0);
        assert!((margins[0] as f64 - (0.1 + 0.03 * 4f64.ln())).abs() < 1e-6);
        assert!((margins[1] as f64 - 0.1).abs() < 1e-6);
        let device = Default::default();
        let m = Tensor::<Flex, 1>::from_floats([0.2, 0.1], &device);
        let log_prior = Tensor::<Flex, 1>::from_floats([0.8f32.ln(), 0.2f32.ln()], &device);
        let z = floats(vec![0.5, 0.3], [1, 2]);
        let out: Vec<f32> = robal_logits(z, ints(vec![0]), m, 10.0, log_prior, 1.5)
            .into_data()
            .to_vec()
            .unwrap();
        // True class 0: 10 (0.5 - 0.2) + 1.5 ln 0.8; class 1: 10 * 0.3 + 1.5 ln 0.2.
        let expected = [3.0 + 1.5 * 0.8f32.ln(), 3.0 + 1.5 * 0.2f32.ln()];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{out:?} vs {expected:?}");
        }
    }

    #[test]
    fn trades_kl_by_hand() {
        // p = softmax(0, ln 3) = (1/4, 3/4), q = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2).
        let kl = trades_kl(floats(vec![0.0, 3f32.ln()], [1, 2]), floats(vec![0.0, 0.0], [1, 2]));
        let expected = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!((scalar(kl) - expected).abs() < 1e-6);
        let zero = trades_kl(floats(vec![1.0, 2.0], [1, 2]), floats(vec![1.0, 2.0], [1, 2]));
        assert!(scalar(zero).abs() < 1e-6);
    }
}
