//! Auto-PGD (Croce and Hein 2020) in the L-inf or the L2 ball, as the reference AutoAttack code (`fra31/auto-attack`,
//! `autopgd_base.py`) runs it: first step 2*eps, momentum 0.75, step halving at checkpoints with a restart from the
//! best point, per-sample best-loss tracking, and "any-time" robustness (a point is broken if any iterate is
//! misclassified). APGD-CE uses cross-entropy; APGD-DLR the DLR loss; APGD-T the targeted DLR loss towards each of
//! the most likely wrong classes in turn. For randomised models, each gradient can be an expectation over
//! `eot_iterations` passes (AutoAttack's `rand` version: 20).

use burn::config::Config;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use tailguard_models::Classifier;

use crate::ball::{Ball, Norm, l2_normalize};
use crate::loss::AttackLoss;
use crate::probe::{FrozenModel, Inner};
use crate::subset::Subset;

/// What the first oscillation check compares the first iterate's loss with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstComparison {
    /// The reference code's behaviour (default): Python's `loss_steps[-1]` is still 0 at the first checkpoint, so
    /// the first comparison is `loss_0 > 0`. torchattacks has the same quirk.
    ZeroLoss,
    /// The paper's definition: compare with the loss at the starting point.
    InitialLoss,
}

/// Configuration of APGD. Defaults are AutoAttack's standard L-inf settings.
#[derive(Config, Debug, PartialEq)]
pub struct ApgdConfig {
    /// Budget, in `norm`.
    #[config(default = "8.0 / 255.0")]
    pub eps: f64,
    /// The threat model's norm.
    #[config(default = "Norm::Linf")]
    pub norm: Norm,
    /// Gradients averaged per step (expectation over transformation, for randomised models; AutoAttack's `rand`
    /// version uses 20). The loss and logits of a step are those of its last pass, as in the reference.
    #[config(default = 1)]
    pub eot_iterations: usize,
    /// Iterations per run (N).
    #[config(default = 100)]
    pub iterations: usize,
    /// Runs from fresh random starts; each attacks only the points not yet broken.
    #[config(default = 1)]
    pub restarts: usize,
    /// Oscillation threshold: the step is halved when the loss increased in at most `rho * k` of the last `k` steps.
    #[config(default = 0.75)]
    pub rho: f64,
    /// Weight of the new step against the previous one (1 at the first iteration).
    #[config(default = 0.75)]
    pub momentum: f64,
    /// First step size as a multiple of eps.
    #[config(default = 2.0)]
    pub initial_step: f64,
    /// For APGD-T: how many of the most likely wrong classes to target, at most classes - 1.
    #[config(default = 9)]
    pub target_classes: usize,
    /// Which rule the first checkpoint uses (a quirk of the reference).
    #[config(default = "FirstComparison::ZeroLoss")]
    pub first_comparison: FirstComparison,
    /// Seeds the backend's generator at the start of each attack (AutoAttack uses seed 0); `None` leaves it.
    #[config(default = "Some(0)")]
    pub seed: Option<u64>,
}

/// Iteration counts after which APGD checks its step size, as the reference code derives them:
/// first after `max(floor(0.22 N), 1)` iterations, then windows shrinking by `max(floor(0.03 N), 1)` down to
/// `max(floor(0.06 N), 1)`. For N = 100: 22, 41, 57, 70, 80, 87, 93, 99.
pub fn checkpoints(iterations: usize) -> Vec<usize> {
    let (mut window, shrink, smallest) = schedule_constants(iterations);
    let mut marks = Vec::new();
    let mut at = window;
    while at <= iterations {
        marks.push(at);
        window = window.saturating_sub(shrink).max(smallest);
        at += window;
    }
    marks
}

/// (first window, shrink per checkpoint, smallest window).
fn schedule_constants(iterations: usize) -> (usize, usize, usize) {
    let part = |fraction: f64| ((fraction * iterations as f64) as usize).max(1);
    (part(0.22), part(0.03), part(0.06))
}

/// Result of one APGD run on a batch, on the inner backend.
pub struct ApgdRun<B: AutodiffBackend> {
    /// The last misclassified iterate where one exists, else the starting point, (N, C, H, W).
    pub adversarial: Tensor<Inner<B>, 4>,
    /// Whether no iterate was misclassified, (N).
    pub robust: Tensor<Inner<B>, 1, Bool>,
    /// Highest loss reached, (N).
    pub best_loss: Tensor<Inner<B>, 1>,
}

/// Per-sample choice between two tensors of shape (N, ...).
fn choose<B: burn::tensor::backend::Backend, const D: usize>(
    mask: &Tensor<B, 1, Bool>,
    if_true: Tensor<B, D>,
    if_false: Tensor<B, D>,
) -> Tensor<B, D> {
    let dims = if_false.dims();
    let mut shape = [1; D];
    shape[0] = dims[0];
    if_false.mask_where(mask.clone().reshape(shape).expand(dims), if_true)
}

impl ApgdConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), crate::AttackConfigError> {
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(crate::AttackConfigError::Negative {
                setting: "eps",
                value: self.eps,
            });
        }
        if self.iterations == 0 || self.restarts == 0 || self.eot_iterations == 0 {
            return Err(crate::AttackConfigError::NoIterations);
        }
        Ok(())
    }

    /// One run of `iterations` steps on every sample of `ball` (no early stopping, as in the reference).
    pub fn run_once<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        ball: &Ball<Inner<B>>,
        loss: AttackLoss,
        labels: Tensor<Inner<B>, 1, Int>,
        targets: Option<Tensor<Inner<B>, 1, Int>>,
    ) -> ApgdRun<B> {
        let [n, c, h, w] = ball.center.dims();
        let device = ball.center.device();
        // Start at distance exactly eps: L-inf, t ~ U[-1, 1] scaled to |t|_inf = eps (a random corner-ish point);
        // L2, t ~ N(0, 1) scaled to |t|_2 = eps (a uniform direction).
        let distribution = match ball.norm {
            Norm::Linf => burn::tensor::Distribution::Uniform(-1.0, 1.0),
            Norm::L2 => burn::tensor::Distribution::Normal(0.0, 1.0),
        };
        let t = Tensor::<Inner<B>, 4>::random([n, c, h, w], distribution, &device);
        self.run_from(model, ball, t, loss, labels, targets)
    }

    /// Loss, gradient and logits at `x`: with `eot_iterations` > 1, the gradient is the mean over that many passes
    /// and the loss and logits are the last pass's (the reference's expectation over transformation).
    fn probe<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        x: &Tensor<Inner<B>, 4>,
        loss: AttackLoss,
        labels: &Tensor<Inner<B>, 1, Int>,
        targets: &Option<Tensor<Inner<B>, 1, Int>>,
    ) -> crate::probe::Probe<B> {
        let mut probe = model.probe(x.clone(), loss, labels.clone(), targets.clone());
        if self.eot_iterations > 1 {
            let mut sum = probe.gradient;
            for _ in 1..self.eot_iterations {
                probe = model.probe(x.clone(), loss, labels.clone(), targets.clone());
                sum = sum + probe.gradient;
            }
            probe.gradient = sum.div_scalar(self.eot_iterations as f64);
        }
        probe
    }

    /// [`ApgdConfig::run_once`] from the start `x + eps * t / |t|` (the ball's norm) for a given direction `t`
    /// (N, C, H, W), instead of a random one: the same start on two backends gives the same attack.
    pub fn run_from<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        ball: &Ball<Inner<B>>,
        t: Tensor<Inner<B>, 4>,
        loss: AttackLoss,
        labels: Tensor<Inner<B>, 1, Int>,
        targets: Option<Tensor<Inner<B>, 1, Int>>,
    ) -> ApgdRun<B> {
        let center = ball.center.clone();
        let [n, c, h, w] = center.dims();
        let device = center.device();
        let direction = match ball.norm {
            Norm::Linf => {
                let t_max = t.clone().abs().reshape([n, c * h * w]).max_dim(1).reshape([n, 1, 1, 1]);
                t / t_max
            }
            Norm::L2 => l2_normalize(t),
        };
        let mut x = (center.clone() + direction * ball.eps.clone()).clamp(0.0, 1.0);

        let probe = self.probe(model, &x, loss, &labels, &targets);
        let mut grad = probe.gradient;
        let mut robust = crate::probe::predictions(probe.logits).equal(labels.clone());
        let mut best_loss = probe.loss.clone();
        let mut x_best = x.clone();
        let mut grad_best = grad.clone();
        let mut x_best_adv = x.clone();
        let mut step = ball.eps.clone().mul_scalar(self.initial_step);
        let mut x_prev = x.clone();

        let mut previous_loss = match self.first_comparison {
            FirstComparison::ZeroLoss => Tensor::zeros([n], &device),
            FirstComparison::InitialLoss => probe.loss,
        };
        let mut increases = Tensor::<Inner<B>, 1>::zeros([n], &device);
        let mut best_at_last_check = best_loss.clone();
        let mut reduced_at_last_check =
            Tensor::<Inner<B>, 1, Bool>::from_data(TensorData::new(vec![true; n], [n]), &device);
        let (mut window, shrink, smallest) = schedule_constants(self.iterations);
        let mut since_check = 0;

        for i in 0..self.iterations {
            let weight = if i == 0 { 1.0 } else { self.momentum };
            let momentum_term = x.clone() - x_prev;
            x_prev = x.clone();
            let z = ball.project(x.clone() + ball.steepest(grad) * step.clone());
            let x_next = ball.project(x.clone() + (z - x).mul_scalar(weight) + momentum_term.mul_scalar(1.0 - weight));

            let probe = self.probe(model, &x_next, loss, &labels, &targets);
            let correct = crate::probe::predictions(probe.logits).equal(labels.clone());
            robust = robust.bool_and(correct.clone());
            x_best_adv = choose(&correct.bool_not(), x_next.clone(), x_best_adv);

            let improved = probe.loss.clone().greater(best_loss.clone());
            x_best = choose(&improved, x_next.clone(), x_best);
            grad_best = choose(&improved, probe.gradient.clone(), grad_best);
            best_loss = choose(&improved, probe.loss.clone(), best_loss);

            increases = increases + probe.loss.clone().greater(previous_loss).float();
            previous_loss = probe.loss;
            x = x_next;
            grad = probe.gradient;

            since_check += 1;
            if since_check == window {
                let oscillating = increases.clone().lower_equal_elem(window as f64 * self.rho);
                let stalled = reduced_at_last_check
                    .bool_not()
                    .bool_and(best_at_last_check.greater_equal(best_loss.clone()));
                let reduce = oscillating.bool_or(stalled);
                step = choose(&reduce, step.clone().mul_scalar(0.5), step);
                x = choose(&reduce, x_best.clone(), x);
                grad = choose(&reduce, grad_best.clone(), grad);
                reduced_at_last_check = reduce;
                best_at_last_check = best_loss.clone();
                increases = increases.zeros_like();
                since_check = 0;
                window = window.saturating_sub(shrink).max(smallest);
            }
        }
        ApgdRun {
            adversarial: x_best_adv,
            robust,
            best_loss,
        }
    }

    /// APGD-CE: attacks the points of `images` that are classified correctly, `restarts` times, each restart only
    /// on the points still robust. Returns adversarial images (clean where no attack succeeded) and robust flags.
    pub fn apgd_ce<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        robust: Tensor<Inner<B>, 1, Bool>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        self.untargeted(model, AttackLoss::CrossEntropy, images, labels, robust)
    }

    /// APGD-DLR: as [`ApgdConfig::apgd_ce`] with the (untargeted) DLR loss. Needs at least 3 classes.
    pub fn apgd_dlr<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        robust: Tensor<Inner<B>, 1, Bool>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        self.untargeted(model, AttackLoss::Dlr, images, labels, robust)
    }

    fn untargeted<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        loss: AttackLoss,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        robust: Tensor<Inner<B>, 1, Bool>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        self.seed_backend(&images);
        self.restarts_on_robust(&images, (images.clone(), robust), |subset, clean| {
            let ball = Ball::uniform_with_norm(clean, self.eps, self.norm);
            self.run_once(model, &ball, loss, subset.rows(&labels), None)
        })
    }

    /// APGD-T: for the k-th most likely wrong class of each still-robust point's clean logits (k = 1 up to
    /// `target_classes`), `restarts` runs of the targeted DLR loss. Needs at least 4 classes.
    pub fn apgd_t<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        robust: Tensor<Inner<B>, 1, Bool>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        self.seed_backend(&images);
        let mut state = (images.clone(), robust);
        for rank in 1..=self.target_classes.min(model.num_classes().saturating_sub(1)) {
            state = self.restarts_on_robust(&images, state, |subset, clean| {
                let m = subset.len();
                // Clean logits sorted descending; column `rank` is the (rank+1)-th most likely class.
                let (_, order) = model.logits(clean.clone()).sort_descending_with_indices(1);
                let targets = order.slice([0..m, rank..rank + 1]).reshape([m]);
                let ball = Ball::uniform_with_norm(clean, self.eps, self.norm);
                self.run_once(model, &ball, AttackLoss::Dlr, subset.rows(&labels), Some(targets))
            });
        }
        state
    }

    /// `restarts` runs of `attack` on the clean images of the rows still robust; broken rows take the attack's
    /// adversarial image and lose their flag. `state` is (adversarial images, robust flags).
    fn restarts_on_robust<B: AutodiffBackend>(
        &self,
        images: &Tensor<Inner<B>, 4>,
        state: (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>),
        mut attack: impl FnMut(&Subset<Inner<B>>, Tensor<Inner<B>, 4>) -> ApgdRun<B>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        let (mut adversarial, mut robust) = state;
        for _ in 0..self.restarts {
            let Some(subset) = Subset::of(&robust) else { break };
            let run = attack(&subset, subset.rows(images));
            (adversarial, robust) = subset.merge(adversarial, robust, run.adversarial, run.robust);
        }
        (adversarial, robust)
    }

    fn seed_backend<B: burn::tensor::backend::Backend>(&self, images: &Tensor<B, 4>) {
        if let Some(seed) = self.seed {
            B::seed(&images.device(), seed);
        }
    }
}
