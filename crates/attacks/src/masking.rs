//! Gradient-masking checks: signs that a robustness figure measures a blunted attack rather than a robust model.
//! AutoAttack's own checks (its `checks.py`: outputs that change between forward passes, outputs that are
//! probabilities, points with zero input gradient, Square lowering the robust accuracy left by the gradient attacks)
//! and one for long-tail losses, which rescale or adjust logits: a cross-entropy attack that finds clearly fewer
//! adversarial points than the same attack on the scale-free margin loss; and restarts: APGD-CE with the `plus`
//! version's five restarts finding clearly more than with one.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use tailguard_models::Classifier;

use crate::apgd::ApgdConfig;
use crate::auto_attack::AutoAttackStages;
use crate::ball::Norm;
use crate::loss::AttackLoss;
use crate::pgd::PgdConfig;
use crate::presets::AttackPreset;
use crate::probe::{FrozenModel, Inner, host_flags};

/// One tripped check: which, what was found and what to do about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MaskingWarning {
    /// `randomness`, `probabilities`, `zero-gradients`, `black-box`, `logit-scale` or `restarts`.
    pub check: &'static str,
    /// What was measured.
    pub finding: String,
    /// What to do.
    pub advice: &'static str,
}

/// Two forward passes whose logits differ by more than this (relative to the largest logit) mean a randomised model.
const RANDOMNESS_TOLERANCE: f32 = 1e-4;
/// The CW margin breaking this fraction of the batch more than the cross-entropy means a blunted cross-entropy.
const LOGIT_SCALE_GAP: f64 = 0.1;
/// AutoAttack's threshold for Square: robust accuracy lowered by more than 0.2 points after the gradient attacks.
const BLACK_BOX_ALPHA: f64 = 0.002;

/// The checks that look at a model on a batch of test images (N, C, H, W) with their labels (N): randomness,
/// probabilities, zero gradients (AutoAttack's), logit scale (PGD-20 on cross-entropy against PGD-20 on the CW
/// margin at `eps`) and restarts ([`check_restarts`]). Meant for the first batch of an evaluation: a few forward
/// passes, two PGD-20 runs and six APGD-CE runs on at most 64 points.
pub fn check_model<B: AutodiffBackend, M: Classifier<B>>(
    model: &FrozenModel<B, M>,
    images: Tensor<Inner<B>, 4>,
    labels: Tensor<Inner<B>, 1, Int>,
    eps: f64,
) -> Vec<MaskingWarning> {
    check_model_in(model, images, labels, eps, Norm::Linf)
}

/// [`check_model`] for a threat model of `norm` (the PGD-20 runs take that ball and its step).
pub fn check_model_in<B: AutodiffBackend, M: Classifier<B>>(
    model: &FrozenModel<B, M>,
    images: Tensor<Inner<B>, 4>,
    labels: Tensor<Inner<B>, 1, Int>,
    eps: f64,
    norm: Norm,
) -> Vec<MaskingWarning> {
    let n = labels.dims()[0];
    let mut warnings = Vec::new();
    let logits = model.logits(images.clone());
    let first: Vec<f32> = host(logits.clone());
    let scale = first.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let differs = (0..2).any(|_| {
        let again = host(model.logits(images.clone()));
        first
            .iter()
            .zip(&again)
            .any(|(a, b)| (a - b).abs() > RANDOMNESS_TOLERANCE * scale)
    });
    if differs {
        warnings.push(MaskingWarning {
            check: "randomness",
            finding: "the model's outputs change between forward passes of the same images".into(),
            advice: "a randomised defence: evaluate it with expectation over transformation (AutoAttack's rand \
                     version), not a single draw",
        });
    }
    let classes = logits.dims()[1];
    let in_unit = first.iter().all(|&v| (0.0..=1.0).contains(&v));
    let sums_to_one = first
        .chunks(classes.max(1))
        .all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    if in_unit && sums_to_one {
        warnings.push(MaskingWarning {
            check: "probabilities",
            finding: "the outputs lie in [0, 1] and sum to 1: probabilities, not logits".into(),
            advice: "give the attacks the logits (before softmax): a cross-entropy of probabilities saturates",
        });
    }
    let gradient = model
        .probe(images.clone(), AttackLoss::CrossEntropy, labels.clone(), None)
        .gradient;
    let largest: Vec<f32> = host(gradient.abs().flatten::<2>(1, 3).max_dim(1).squeeze_dim::<1>(1));
    let zero = largest.iter().filter(|&&g| g == 0.0).count();
    if zero > 0 {
        warnings.push(MaskingWarning {
            check: "zero-gradients",
            finding: format!("{zero} of {n} points have a zero input gradient of the cross-entropy"),
            advice: "gradient-based attacks cannot move these points: check for saturating or scaled logits and \
                     compare with margin-loss, black-box (Square) or adaptive attacks",
        });
    }
    let pgd = AttackPreset::Pgd20.pgd_in(eps, norm).expect("PGD-20 is a PGD preset");
    let robust = |config: &PgdConfig| -> usize {
        let flags = host_flags::<B>(config.outcome(model, images.clone(), labels.clone()).robust);
        flags.iter().filter(|&&f| f).count()
    };
    let under_ce = robust(&pgd);
    let under_margin = robust(&pgd.clone().with_loss(AttackLoss::CW));
    let gap = under_ce.saturating_sub(under_margin);
    // A few points either way are the two losses' usual difference; a tenth of the batch is not.
    if gap > 1 && gap as f64 > LOGIT_SCALE_GAP * n as f64 {
        warnings.push(MaskingWarning {
            check: "logit-scale",
            finding: format!(
                "PGD-20 on the cross-entropy leaves {under_ce} of {n} points robust, on the CW margin {under_margin}"
            ),
            advice: "the cross-entropy is blunted by the logits' scale (common with losses that rescale or adjust \
                     logits): report robustness under margin or DLR losses (cw20, AutoAttack's APGD-T)",
        });
    }
    warnings.extend(check_restarts(model, images, labels, eps, norm));
    warnings
}

/// Restarts that break more than this fraction of the checked points (and at least two) mean a clearly lower
/// robust accuracy under a restarted attack: on models without masking, AA+'s restarts move robust accuracy by a few
/// tenths of a point.
const RESTART_GAP: f64 = 0.02;
/// Points the restart check attacks (the first of the batch): six APGD-CE runs are its cost.
const RESTART_POINTS: usize = 64;

/// The restart check on the first [`RESTART_POINTS`] of a batch: APGD-CE with one restart against APGD-CE with the
/// `plus` version's five, at `eps` in the ball of `norm`. `None` when the restarts find no clearly larger share.
pub fn check_restarts<B: AutodiffBackend, M: Classifier<B>>(
    model: &FrozenModel<B, M>,
    images: Tensor<Inner<B>, 4>,
    labels: Tensor<Inner<B>, 1, Int>,
    eps: f64,
    norm: Norm,
) -> Option<MaskingWarning> {
    let n = labels.dims()[0].min(RESTART_POINTS);
    let (images, labels) = (images.narrow(0, 0, n), labels.narrow(0, 0, n));
    let apgd = ApgdConfig::new().with_eps(eps).with_norm(norm);
    let correct = model.correct(images.clone(), labels.clone());
    let robust = |flags: Tensor<Inner<B>, 1, burn::tensor::Bool>| host_flags::<B>(flags).iter().filter(|&&f| f).count();
    let once = robust(apgd.apgd_ce(model, images.clone(), labels.clone(), correct.clone()).1);
    let restarted = robust(apgd.with_restarts(5).apgd_ce(model, images, labels, correct).1);
    let gap = once.saturating_sub(restarted);
    (gap > 1 && gap as f64 > RESTART_GAP * n as f64).then(|| MaskingWarning {
        check: "restarts",
        finding: format!("APGD-CE leaves {once} of {n} points robust with one restart and {restarted} with five"),
        advice: "random restarts find what single runs miss, a sign of a rugged or masked loss surface: evaluate with \
                 AutoAttack's plus version (aa-plus) and report that figure",
    })
}

/// AutoAttack's Square check, extended to FAB-T: the black-box and minimum-norm stages after APGD lowered the robust
/// accuracy by more than 0.2 points of `n` (standard AutoAttack only; `None` for AA-lite or when it did not trip).
pub fn check_stages(stages: &AutoAttackStages, n: usize) -> Option<MaskingWarning> {
    let last = stages.square.or(stages.fab_t)?;
    let broken = stages.apgd_t.saturating_sub(last);
    (broken as f64 > BLACK_BOX_ALPHA * n as f64).then(|| MaskingWarning {
        check: "black-box",
        finding: format!(
            "FAB-T and Square broke {broken} of {n} points that APGD-CE and APGD-T left robust ({:.2} points of \
             robust accuracy)",
            100.0 * broken as f64 / n.max(1) as f64
        ),
        advice: "the gradient attacks miss points other attacks find: run Square with more queries and restarts, \
                 or an adaptive attack, before trusting the figure",
    })
}

fn host<B: burn::tensor::backend::Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default()
}
