//! AutoAttack (Croce and Hein 2020) as the reference code's `version='standard'` runs it: APGD-CE, APGD-T, FAB-T and
//! Square, each on the points still classified correctly (a point is robust only if every attack fails on it), and
//! AutoAttack-lite, the first two (the RoBal convention; FAB-T and Square add almost nothing on adversarially trained
//! models and cost about four times as much).

use std::time::Instant;

use burn::config::Config;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Int, Tensor};
use tailguard_models::Classifier;

use crate::apgd::ApgdConfig;
use crate::ball::Norm;
use crate::fab::FabConfig;
use crate::probe::{FrozenModel, Inner, host_flags};
use crate::square::SquareConfig;

/// Configuration of AutoAttack-lite; both stages share the APGD settings (100 iterations, 1 restart, 9 targets).
#[derive(Config, Debug, PartialEq)]
pub struct AutoAttackLiteConfig {
    /// Settings of both APGD stages.
    #[config(default = "ApgdConfig::new()")]
    pub apgd: ApgdConfig,
}

/// Configuration of standard AutoAttack; the defaults are the reference's L-inf settings at eps 8/255
/// ([`AutoAttackConfig::standard_in`] gives L2's).
#[derive(Config, Debug, PartialEq)]
pub struct AutoAttackConfig {
    /// APGD-CE and APGD-T (100 iterations, 1 restart, 9 targets).
    #[config(default = "ApgdConfig::new()")]
    pub apgd: ApgdConfig,
    /// FAB-T (100 iterations, 9 targets).
    #[config(default = "FabConfig::new()")]
    pub fab: FabConfig,
    /// Square (5,000 queries, p_init 0.8).
    #[config(default = "SquareConfig::new()")]
    pub square: SquareConfig,
}

impl AutoAttackConfig {
    /// Standard AutoAttack at L-inf budget `eps`.
    pub fn standard(eps: f64) -> Self {
        Self::standard_in(eps, Norm::Linf)
    }

    /// Standard AutoAttack at budget `eps` in the ball of `norm` (the reference's `norm='L2'` for L2).
    pub fn standard_in(eps: f64, norm: Norm) -> Self {
        Self::new()
            .with_apgd(ApgdConfig::new().with_eps(eps).with_norm(norm))
            .with_fab(FabConfig::new().with_eps(eps).with_norm(norm))
            .with_square(SquareConfig::new().with_eps(eps).with_norm(norm))
    }
}

/// The stages of AutoAttack by the index [`AutoAttackStages::broken_at`] uses.
pub const STAGE_NAMES: [&str; 5] = ["clean", "apgd-ce", "apgd-t", "fab-t", "square"];

/// Points still robust after each stage, and the seconds each stage took.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct AutoAttackStages {
    /// Correct on clean images.
    pub clean: usize,
    /// Still robust after APGD-CE.
    pub apgd_ce: usize,
    /// Still robust after APGD-T.
    pub apgd_t: usize,
    /// Still robust after FAB-T (standard AutoAttack only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fab_t: Option<usize>,
    /// Still robust after Square (standard AutoAttack only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub square: Option<usize>,
    /// Seconds per stage, in the order above (clean first).
    pub seconds: StageSeconds,
    /// For each image, in the order attacked (batches appended by [`AutoAttackStages::add`]): the stage that broke
    /// it, as an index into [`STAGE_NAMES`] (0: misclassified clean), or `None` when it stayed robust.
    #[serde(skip)]
    pub broken_at: Vec<Option<u8>>,
}

/// Seconds spent in each stage of AutoAttack.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct StageSeconds {
    /// The clean forward pass.
    pub clean: f64,
    /// APGD-CE.
    pub apgd_ce: f64,
    /// APGD-T.
    pub apgd_t: f64,
    /// FAB-T.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fab_t: Option<f64>,
    /// Square.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub square: Option<f64>,
}

impl AutoAttackStages {
    /// Adds another batch's counts and times.
    pub fn add(&mut self, other: &AutoAttackStages) {
        let sum = |a: Option<usize>, b: Option<usize>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        let sum_f = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        self.clean += other.clean;
        self.apgd_ce += other.apgd_ce;
        self.apgd_t += other.apgd_t;
        self.fab_t = sum(self.fab_t, other.fab_t);
        self.square = sum(self.square, other.square);
        let (s, o) = (&mut self.seconds, &other.seconds);
        s.clean += o.clean;
        s.apgd_ce += o.apgd_ce;
        s.apgd_t += o.apgd_t;
        s.fab_t = sum_f(s.fab_t, o.fab_t);
        s.square = sum_f(s.square, o.square);
        self.broken_at.extend_from_slice(&other.broken_at);
    }

    /// Records the flags of the points still robust after stage `stage` (an index into [`STAGE_NAMES`]): a point
    /// robust before and not now was broken by this stage. Returns how many are still robust.
    fn record(&mut self, stage: u8, robust: &[bool]) -> usize {
        if self.broken_at.is_empty() {
            self.broken_at = vec![None; robust.len()];
        }
        for (broken, &still) in self.broken_at.iter_mut().zip(robust) {
            if broken.is_none() && !still {
                *broken = Some(stage);
            }
        }
        robust.iter().filter(|&&r| r).count()
    }

    /// (stage name, robust points after it, seconds) for every stage that ran, clean first.
    pub fn rows(&self) -> Vec<(&'static str, usize, f64)> {
        let s = &self.seconds;
        let mut rows = vec![
            ("clean", self.clean, s.clean),
            ("APGD-CE", self.apgd_ce, s.apgd_ce),
            ("APGD-T", self.apgd_t, s.apgd_t),
        ];
        if let Some(n) = self.fab_t {
            rows.push(("FAB-T", n, s.fab_t.unwrap_or(0.0)));
        }
        if let Some(n) = self.square {
            rows.push(("Square", n, s.square.unwrap_or(0.0)));
        }
        rows
    }
}

type Images<B> = Tensor<Inner<B>, 4>;
type Flags<B> = Tensor<Inner<B>, 1, Bool>;

/// Runs `stage` on the current state and reads which points are still robust (reading the flags waits for the
/// device, so the time is the stage's).
fn timed<B: AutodiffBackend>(
    state: (Images<B>, Flags<B>),
    stage: impl FnOnce(Images<B>, Flags<B>) -> (Images<B>, Flags<B>),
) -> ((Images<B>, Flags<B>), Vec<bool>, f64) {
    let start = Instant::now();
    let (adversarial, robust) = stage(state.0, state.1);
    let flags = host_flags::<B>(robust.clone());
    ((adversarial, robust), flags, start.elapsed().as_secs_f64())
}

/// The clean stage and the two APGD stages both versions share.
fn apgd_stages<B: AutodiffBackend, M: Classifier<B>>(
    apgd: &ApgdConfig,
    model: &FrozenModel<B, M>,
    images: Images<B>,
    labels: &Tensor<Inner<B>, 1, Int>,
) -> ((Images<B>, Flags<B>), AutoAttackStages) {
    let mut stages = AutoAttackStages::default();
    let start = Instant::now();
    let robust = model.correct(images.clone(), labels.clone());
    let clean = stages.record(0, &host_flags::<B>(robust.clone()));
    (stages.clean, stages.seconds.clean) = (clean, start.elapsed().as_secs_f64());
    let state = (images, robust);
    let (state, flags, t) = timed::<B>(state, |x, r| apgd.apgd_ce(model, x, labels.clone(), r));
    (stages.apgd_ce, stages.seconds.apgd_ce) = (stages.record(1, &flags), t);
    // Rows still robust after APGD-CE hold their clean image, so later stages start from clean images for exactly
    // the points they attack, while broken rows keep their example.
    let (state, flags, t) = timed::<B>(state, |x, r| apgd.apgd_t(model, x, labels.clone(), r));
    (stages.apgd_t, stages.seconds.apgd_t) = (stages.record(2, &flags), t);
    (state, stages)
}

impl AutoAttackLiteConfig {
    /// Runs both stages; returns adversarial images (clean where nothing succeeded), robust flags (N) and the
    /// number of robust points after each stage.
    pub fn run<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>, AutoAttackStages) {
        let ((adversarial, robust), stages) = apgd_stages(&self.apgd, model, images, &labels);
        (adversarial, robust, stages)
    }
}

impl AutoAttackConfig {
    /// Runs the four stages; returns adversarial images (clean where nothing succeeded), robust flags (N) and the
    /// robust points and seconds after each stage.
    pub fn run<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>, AutoAttackStages) {
        let (state, mut stages) = apgd_stages(&self.apgd, model, images, &labels);
        let (state, flags, t) = timed::<B>(state, |x, r| self.fab.fab_t(model, x, labels.clone(), r));
        (stages.fab_t, stages.seconds.fab_t) = (Some(stages.record(3, &flags)), Some(t));
        let ((adversarial, robust), flags, t) =
            timed::<B>(state, |x, r| self.square.square(model, x, labels.clone(), r));
        (stages.square, stages.seconds.square) = (Some(stages.record(4, &flags)), Some(t));
        (adversarial, robust, stages)
    }
}
