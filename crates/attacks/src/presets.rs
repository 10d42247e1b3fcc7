//! The attacks the papers report, by name, and one entry point to run any of them on a batch.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Int, Tensor};
use tailguard_models::Classifier;

use crate::apgd::ApgdConfig;
use crate::auto_attack::{AutoAttackConfig, AutoAttackLiteConfig, AutoAttackStages};
use crate::ball::Norm;
use crate::fab::FabConfig;
use crate::loss::AttackLoss;
use crate::pgd::{PgdConfig, RandomStart};
use crate::probe::{FrozenModel, Inner};
use crate::square::SquareConfig;

/// A named attack setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackPreset {
    /// No attack: clean accuracy.
    Clean,
    /// One step of size eps from the clean image.
    Fgsm,
    /// PGD-20, step 2/255, uniform start, cross-entropy (RoBal, AT-BSL, RobustLT).
    Pgd20,
    /// PGD-20, step 1/255 (TAET's evaluation).
    #[serde(rename = "pgd20-step1")]
    Pgd20Step1,
    /// CW-inf: PGD-20, step 2/255, uniform start, CW margin loss with kappa 50.
    Cw20,
    /// APGD-CE then APGD-T (100 iterations, 9 targets).
    AaLite,
    /// AutoAttack's `rand` version for randomised models: APGD-CE then APGD-DLR, each gradient the mean of 20
    /// passes (expectation over transformation), one restart of 100 iterations.
    AaRand,
    /// Standard AutoAttack: APGD-CE, APGD-T, FAB-T (9 targets, 100 iterations) and Square (5,000 queries).
    Aa,
    /// AutoAttack's `plus` version (AA+): APGD-CE and APGD-DLR with 5 restarts, FAB (untargeted, 5 restarts), Square
    /// (5,000 queries), APGD-T and FAB-T (9 targets each), each on the points still robust.
    AaPlus,
    /// APGD-CE alone (AutoAttack's settings), on the clean-correct points.
    ApgdCe,
    /// APGD-T alone (AutoAttack's settings: 9 targets), on the clean-correct points.
    ApgdT,
    /// APGD-DLR alone (the untargeted DLR loss; AutoAttack's `plus` settings but one restart), on the clean-correct
    /// points.
    ApgdDlr,
    /// APGD-CE with 5 restarts (the `plus` version's), alone on the clean-correct points.
    ApgdCePlus,
    /// APGD-DLR with 5 restarts (the `plus` version's), alone on the clean-correct points.
    ApgdDlrPlus,
    /// FAB, untargeted, 5 restarts (the `plus` version's), alone on the clean-correct points.
    Fab,
    /// APGD-CE with 20 gradient samples per step (the `rand` version's), alone on the clean-correct points.
    ApgdCeEot,
    /// APGD-DLR with 20 gradient samples per step (the `rand` version's), alone on the clean-correct points.
    ApgdDlrEot,
    /// FAB-T alone (AutoAttack's settings), on the clean-correct points.
    FabT,
    /// Square alone (AutoAttack's settings: 5,000 queries, p_init 0.8), on the clean-correct points.
    Square,
    /// PGD-10, step 2/255, uniform start: the PGD-AT training attack.
    Pgd10,
    /// TAET's training attack: 10 steps of 0.003 from `x + 0.001 N(0, 1)`, eps 0.031.
    TaetTraining,
}

impl AttackPreset {
    /// Every preset, in report order.
    pub const ALL: [AttackPreset; 21] = [
        AttackPreset::Clean,
        AttackPreset::Fgsm,
        AttackPreset::Pgd20,
        AttackPreset::Pgd20Step1,
        AttackPreset::Cw20,
        AttackPreset::AaLite,
        AttackPreset::AaRand,
        AttackPreset::Aa,
        AttackPreset::AaPlus,
        AttackPreset::ApgdCe,
        AttackPreset::ApgdT,
        AttackPreset::ApgdDlr,
        AttackPreset::ApgdCePlus,
        AttackPreset::ApgdDlrPlus,
        AttackPreset::Fab,
        AttackPreset::ApgdCeEot,
        AttackPreset::ApgdDlrEot,
        AttackPreset::FabT,
        AttackPreset::Square,
        AttackPreset::Pgd10,
        AttackPreset::TaetTraining,
    ];

    /// The preset's name on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            AttackPreset::Clean => "clean",
            AttackPreset::Fgsm => "fgsm",
            AttackPreset::Pgd20 => "pgd20",
            AttackPreset::Pgd20Step1 => "pgd20-step1",
            AttackPreset::Cw20 => "cw20",
            AttackPreset::AaLite => "aa-lite",
            AttackPreset::AaRand => "aa-rand",
            AttackPreset::Aa => "aa",
            AttackPreset::AaPlus => "aa-plus",
            AttackPreset::ApgdCePlus => "apgd-ce-plus",
            AttackPreset::ApgdDlrPlus => "apgd-dlr-plus",
            AttackPreset::Fab => "fab",
            AttackPreset::ApgdCe => "apgd-ce",
            AttackPreset::ApgdT => "apgd-t",
            AttackPreset::ApgdDlr => "apgd-dlr",
            AttackPreset::ApgdCeEot => "apgd-ce-eot",
            AttackPreset::ApgdDlrEot => "apgd-dlr-eot",
            AttackPreset::FabT => "fab-t",
            AttackPreset::Square => "square",
            AttackPreset::Pgd10 => "pgd10",
            AttackPreset::TaetTraining => "taet-training",
        }
    }

    /// The fewest classes a classifier must have for the preset to be defined: CW's margin needs another class,
    /// FAB-T and Square a target or a margin, AutoAttack's APGD-T the targeted DLR loss (four logits).
    pub fn min_classes(&self) -> usize {
        match self {
            AttackPreset::Cw20 | AttackPreset::FabT | AttackPreset::Fab | AttackPreset::Square => 2,
            AttackPreset::AaRand | AttackPreset::ApgdDlr | AttackPreset::ApgdDlrEot | AttackPreset::ApgdDlrPlus => 3,
            AttackPreset::AaLite | AttackPreset::Aa | AttackPreset::AaPlus | AttackPreset::ApgdT => 4,
            _ => 1,
        }
    }

    /// Whether the preset is defined in the ball of `norm`: every one in L-inf; in L2 all but TAET's training
    /// attack, which is L-inf by definition.
    pub fn supports(&self, norm: Norm) -> bool {
        norm == Norm::Linf || *self != AttackPreset::TaetTraining
    }

    /// AutoAttack's attacks run alone, each on every clean-correct point (the reference's "individual" mode):
    /// `aa` -> APGD-CE, APGD-T, FAB-T, Square; `aa-lite` -> APGD-CE, APGD-T; `aa-rand` -> APGD-CE and APGD-DLR with
    /// 20 gradient samples; `aa-plus` -> APGD-CE and APGD-DLR with 5 restarts, FAB, Square, APGD-T, FAB-T. Any other
    /// preset is itself.
    pub fn individual(&self) -> Vec<AttackPreset> {
        match self {
            AttackPreset::Aa => vec![
                AttackPreset::ApgdCe,
                AttackPreset::ApgdT,
                AttackPreset::FabT,
                AttackPreset::Square,
            ],
            AttackPreset::AaLite => vec![AttackPreset::ApgdCe, AttackPreset::ApgdT],
            AttackPreset::AaRand => vec![AttackPreset::ApgdCeEot, AttackPreset::ApgdDlrEot],
            AttackPreset::AaPlus => vec![
                AttackPreset::ApgdCePlus,
                AttackPreset::ApgdDlrPlus,
                AttackPreset::Fab,
                AttackPreset::Square,
                AttackPreset::ApgdT,
                AttackPreset::FabT,
            ],
            other => vec![*other],
        }
    }

    /// The PGD configuration behind a PGD-type preset for an L-inf budget `eps` (`None` for clean and
    /// AutoAttack). TAET's training attack keeps its own eps of 0.031.
    pub fn pgd(&self, eps: f64) -> Option<PgdConfig> {
        self.pgd_in(eps, Norm::Linf)
    }

    /// As [`AttackPreset::pgd`] in the ball of `norm`. Steps keep their ratio to the budget: 2/255 at 8/255 is
    /// eps / 4 (PGD-20, PGD-10, CW-20) and 1/255 is eps / 8 (PGD-20 step 1), so in L2 at 0.5 they are 0.125 and
    /// 0.0625.
    pub fn pgd_in(&self, eps: f64, norm: Norm) -> Option<PgdConfig> {
        // L2 steps as a fraction of the budget; the L-inf presets keep the papers' absolute steps below.
        let step = |fraction: f64| fraction * eps;
        let pgd20 = PgdConfig::new()
            .with_eps(eps)
            .with_norm(norm)
            .with_steps(20)
            .with_step_size(step(0.25));
        match self {
            AttackPreset::Clean
            | AttackPreset::AaLite
            | AttackPreset::AaRand
            | AttackPreset::Aa
            | AttackPreset::AaPlus
            | AttackPreset::ApgdCe
            | AttackPreset::ApgdT
            | AttackPreset::ApgdDlr
            | AttackPreset::ApgdCePlus
            | AttackPreset::ApgdDlrPlus
            | AttackPreset::Fab
            | AttackPreset::ApgdCeEot
            | AttackPreset::ApgdDlrEot
            | AttackPreset::FabT
            | AttackPreset::Square => None,
            AttackPreset::Fgsm => Some(PgdConfig::fgsm(eps).with_norm(norm)),
            AttackPreset::Pgd20 if norm == Norm::Linf => Some(pgd20.with_step_size(2.0 / 255.0)),
            AttackPreset::Pgd20 => Some(pgd20),
            AttackPreset::Pgd20Step1 if norm == Norm::Linf => Some(pgd20.with_step_size(1.0 / 255.0)),
            AttackPreset::Pgd20Step1 => Some(pgd20.with_step_size(step(0.125))),
            AttackPreset::Cw20 if norm == Norm::Linf => {
                Some(pgd20.with_step_size(2.0 / 255.0).with_loss(AttackLoss::CW))
            }
            AttackPreset::Cw20 => Some(pgd20.with_loss(AttackLoss::CW)),
            AttackPreset::Pgd10 if norm == Norm::Linf => Some(PgdConfig::new().with_eps(eps)),
            AttackPreset::Pgd10 => Some(
                PgdConfig::new()
                    .with_eps(eps)
                    .with_norm(norm)
                    .with_step_size(step(0.25)),
            ),
            AttackPreset::TaetTraining => Some(
                PgdConfig::new()
                    .with_eps(0.031)
                    .with_step_size(0.003)
                    .with_start(RandomStart::Gaussian { std: 0.001 }),
            ),
        }
    }

    /// Runs the attack on a batch and reports which points stay correctly classified.
    ///
    /// PGD-type attacks count the final iterate (as the papers do); AutoAttack (standard and lite) counts a point as
    /// broken if any stage found an adversarial image for it, starting from the clean-correct points.
    pub fn run<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        eps: f64,
    ) -> AttackOutcome<B> {
        self.run_in(model, images, labels, eps, Norm::Linf)
    }

    /// Whether only points the model classifies correctly on clean images can stay robust: AutoAttack's versions
    /// and its attacks alone start from the clean-correct points (robust = correct and not broken), while the
    /// PGD-type presets count the final iterate whatever the clean prediction was.
    pub fn attacks_correct_points_only(&self) -> bool {
        // Every preset but clean and the PGD type is AutoAttack's (see `run_in`).
        *self != AttackPreset::Clean && self.pgd_in(1.0, Norm::Linf).is_none()
    }

    /// As [`AttackPreset::run`] in the ball of `norm`.
    ///
    /// # Panics
    /// If the preset is not defined in that norm: check [`AttackPreset::supports`] before attacking (evaluation
    /// refuses such a request up front).
    pub fn run_in<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        eps: f64,
        norm: Norm,
    ) -> AttackOutcome<B> {
        assert!(self.supports(norm), "{self} is not defined in the {norm} ball");
        let apgd = ApgdConfig::new().with_eps(eps).with_norm(norm);
        match self {
            AttackPreset::Clean => AttackOutcome {
                robust: model.correct(images.clone(), labels),
                adversarial: images,
                stages: None,
            },
            AttackPreset::AaLite => {
                let config = AutoAttackLiteConfig::new().with_apgd(apgd);
                let (adversarial, robust, stages) = config.run(model, images, labels);
                AttackOutcome {
                    adversarial,
                    robust,
                    stages: Some(stages),
                }
            }
            AttackPreset::AaRand => {
                // The reference's `rand` version: one restart, 20 gradient samples per step, APGD-CE then APGD-DLR.
                let apgd = apgd.with_eot_iterations(20);
                let correct = model.correct(images.clone(), labels.clone());
                let (adversarial, robust) = apgd.apgd_ce(model, images, labels.clone(), correct);
                let (adversarial, robust) = apgd.apgd_dlr(model, adversarial, labels, robust);
                AttackOutcome {
                    adversarial,
                    robust,
                    stages: None,
                }
            }
            AttackPreset::Aa => {
                let (adversarial, robust, stages) = AutoAttackConfig::standard_in(eps, norm).run(model, images, labels);
                AttackOutcome {
                    adversarial,
                    robust,
                    stages: Some(stages),
                }
            }
            AttackPreset::AaPlus => {
                // The reference's `plus` version, in its order; each attack sees the rows still robust, which hold
                // their clean image.
                let plus = apgd.clone().with_restarts(5);
                let fab = FabConfig::new().with_eps(eps).with_norm(norm);
                let square = SquareConfig::new().with_eps(eps).with_norm(norm);
                let state = (images.clone(), model.correct(images, labels.clone()));
                let state = plus.apgd_ce(model, state.0, labels.clone(), state.1);
                let state = plus.apgd_dlr(model, state.0, labels.clone(), state.1);
                let state = fab.fab(model, state.0, labels.clone(), state.1, 5);
                let state = square.square(model, state.0, labels.clone(), state.1);
                let state = apgd.apgd_t(model, state.0, labels.clone(), state.1);
                let (adversarial, robust) = fab.fab_t(model, state.0, labels, state.1);
                AttackOutcome {
                    adversarial,
                    robust,
                    stages: None,
                }
            }
            AttackPreset::ApgdCe
            | AttackPreset::ApgdT
            | AttackPreset::ApgdDlr
            | AttackPreset::ApgdCePlus
            | AttackPreset::ApgdDlrPlus
            | AttackPreset::Fab
            | AttackPreset::ApgdCeEot
            | AttackPreset::ApgdDlrEot
            | AttackPreset::FabT
            | AttackPreset::Square => {
                let correct = model.correct(images.clone(), labels.clone());
                let eot = apgd.clone().with_eot_iterations(20);
                let plus = apgd.clone().with_restarts(5);
                let (adversarial, robust) = match self {
                    AttackPreset::ApgdCe => apgd.apgd_ce(model, images, labels, correct),
                    AttackPreset::ApgdT => apgd.apgd_t(model, images, labels, correct),
                    AttackPreset::ApgdDlr => apgd.apgd_dlr(model, images, labels, correct),
                    AttackPreset::ApgdCePlus => plus.apgd_ce(model, images, labels, correct),
                    AttackPreset::ApgdDlrPlus => plus.apgd_dlr(model, images, labels, correct),
                    AttackPreset::Fab => {
                        let fab = FabConfig::new().with_eps(eps).with_norm(norm);
                        fab.fab(model, images, labels, correct, 5)
                    }
                    AttackPreset::ApgdCeEot => eot.apgd_ce(model, images, labels, correct),
                    AttackPreset::ApgdDlrEot => eot.apgd_dlr(model, images, labels, correct),
                    AttackPreset::FabT => {
                        let fab = FabConfig::new().with_eps(eps).with_norm(norm);
                        fab.fab_t(model, images, labels, correct)
                    }
                    _ => {
                        let square = SquareConfig::new().with_eps(eps).with_norm(norm);
                        square.square(model, images, labels, correct)
                    }
                };
                AttackOutcome {
                    adversarial,
                    robust,
                    stages: None,
                }
            }
            pgd_like => pgd_like
                .pgd_in(eps, norm)
                .expect("PGD-type preset")
                .outcome(model, images, labels),
        }
    }
}

impl std::fmt::Display for AttackPreset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AttackPreset {
    type Err = crate::AttackConfigError;

    fn from_str(s: &str) -> Result<Self, crate::AttackConfigError> {
        AttackPreset::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = AttackPreset::ALL.iter().map(|p| p.name()).collect();
            crate::AttackConfigError::UnknownPreset {
                name: s.to_string(),
                expected: names.join(", "),
            }
        })
    }
}

impl PgdConfig {
    /// Attacks a batch and reports which points the final iterate leaves correctly classified.
    pub fn outcome<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
    ) -> AttackOutcome<B> {
        let adversarial = self.perturb(model, images, labels.clone(), None);
        AttackOutcome {
            robust: model.correct(adversarial.clone(), labels),
            adversarial,
            stages: None,
        }
    }
}

/// What an attack did to a batch.
pub struct AttackOutcome<B: AutodiffBackend> {
    /// The images the model was finally shown, (N, C, H, W).
    pub adversarial: Tensor<Inner<B>, 4>,
    /// Whether each point is still classified correctly, (N).
    pub robust: Tensor<Inner<B>, 1, Bool>,
    /// For AA-lite: robust points after each stage.
    pub stages: Option<AutoAttackStages>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoattack_presets_attack_clean_correct_points_only() {
        let gathered: Vec<&str> = AttackPreset::ALL
            .iter()
            .filter(|p| p.attacks_correct_points_only())
            .map(|p| p.name())
            .collect();
        for name in [
            "aa", "aa-lite", "aa-rand", "aa-plus", "apgd-ce", "apgd-t", "fab-t", "square", "fab",
        ] {
            assert!(gathered.contains(&name), "{name}: {gathered:?}");
        }
        for name in [
            "clean",
            "fgsm",
            "pgd20",
            "pgd20-step1",
            "cw20",
            "pgd10",
            "taet-training",
        ] {
            assert!(!gathered.contains(&name), "{name}: {gathered:?}");
        }
    }
}
