//! Projected gradient descent in the L-inf or the L2 ball (Madry et al. 2018), and FGSM as its one-step case.

use burn::config::Config;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor};
use tailguard_models::Classifier;

use crate::ball::{Ball, Norm, l2_norm};
use crate::loss::AttackLoss;
use crate::probe::{FrozenModel, Inner};

/// Where PGD starts inside the ball.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RandomStart {
    /// At the clean image (FGSM; deterministic PGD).
    None,
    /// `x + U(-eps, eps)` per pixel (Madry et al.; RoBal, AT-BSL and torchattacks evaluation). In the L2 ball,
    /// torchattacks' `PGDL2` start: a uniform direction at a radius `U(0, 1) * eps`.
    Uniform,
    /// `x + std * N(0, 1)` per pixel (TRADES-style; AT-BSL training and TAET use std = 0.001).
    Gaussian {
        /// Standard deviation of the start.
        std: f64,
    },
    /// `x + U[0, eps)` per pixel: RoBal's one-sided start (its code draws `torch.rand`, not `2 rand - 1`); L-inf
    /// only.
    UniformPositive,
}

/// What is done to the drawn start before the first gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartClip {
    /// Nothing: the first gradient is taken at the start as drawn, which may lie outside [0, 1] (the official code
    /// of TRADES, AT-BSL, RoBal, REAT and TAET).
    None,
    /// Clipped to [0, 1] (torchattacks; RobustLT's port).
    #[default]
    Box,
    /// Projected into the ball and [0, 1].
    Ball,
}

/// The radius a random start is drawn with when budgets differ per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartRadius {
    /// Each sample's own budget.
    #[default]
    Budget,
    /// The attack's configured `eps` for every sample: RobustLT's port draws `U(-eps, eps)` with the global eps
    /// whatever a sample's class-wise budget (the first step's projection then moves it into its own ball).
    Configured,
}

/// Configuration of a PGD attack. The defaults are PGD-10 with step 2/255 in an 8/255 ball, uniform start,
/// cross-entropy: the PGD-AT training attack.
#[derive(Config, Debug, PartialEq)]
pub struct PgdConfig {
    /// Radius of the ball.
    #[config(default = "8.0 / 255.0")]
    pub eps: f64,
    /// The ball's norm: each step moves `step_size` along the gradient's sign (L-inf) or its direction (L2).
    #[config(default = "Norm::Linf")]
    pub norm: Norm,
    /// Size of each step.
    #[config(default = "2.0 / 255.0")]
    pub step_size: f64,
    /// Number of steps.
    #[config(default = 10)]
    pub steps: usize,
    /// Where the attack starts.
    #[config(default = "RandomStart::Uniform")]
    pub start: RandomStart,
    /// The loss ascended.
    #[config(default = "AttackLoss::CrossEntropy")]
    pub loss: AttackLoss,
    /// What is done to the start before the first gradient. Every later iterate is projected into the ball and
    /// [0, 1] whatever this says.
    #[config(default = "StartClip::Box")]
    pub start_clip: StartClip,
    /// The radius of a random start under per-sample budgets.
    #[config(default = "StartRadius::Budget")]
    pub start_radius: StartRadius,
}

impl PgdConfig {
    /// FGSM: one step of size `eps` from the clean image.
    pub fn fgsm(eps: f64) -> Self {
        Self::new()
            .with_eps(eps)
            .with_step_size(eps)
            .with_steps(1)
            .with_start(RandomStart::None)
    }

    /// Checks that the attack stays meaningful.
    pub fn validate(&self) -> Result<(), crate::AttackConfigError> {
        for (setting, value) in [("eps", self.eps), ("step size", self.step_size)] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(crate::AttackConfigError::Negative { setting, value });
            }
        }
        if self.norm == Norm::L2 && self.start == RandomStart::UniformPositive {
            return Err(crate::AttackConfigError::StartNotForNorm {
                start: "uniform-positive",
                norm: self.norm,
            });
        }
        Ok(())
    }

    /// Attacks `images` (in [0, 1]) with labels `labels`: returns the final iterate, inside the ball and [0, 1].
    /// With `targets`, the attack pushes towards those classes instead of away from the labels.
    pub fn perturb<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        targets: Option<Tensor<Inner<B>, 1, Int>>,
    ) -> Tensor<Inner<B>, 4> {
        let n = images.dims()[0];
        let eps = Tensor::full([n], self.eps, &images.device());
        self.perturb_with_budgets(model, images, labels, targets, eps)
    }

    /// As [`PgdConfig::perturb`] with a budget per sample, `eps`: (N). Each sample's step is
    /// `step_size * eps_i / self.eps`, so the number of steps needed to cross the ball stays the same (RobustLT's
    /// class-wise budgets).
    pub fn perturb_with_budgets<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        targets: Option<Tensor<Inner<B>, 1, Int>>,
        eps: Tensor<Inner<B>, 1>,
    ) -> Tensor<Inner<B>, 4> {
        let (ball, step) = self.ball_and_step(images, eps);
        self.run(model, &ball, step, labels, targets)
    }

    /// The PGD loop in `ball` with a step per sample, `step`: (N, 1, 1, 1).
    pub fn run<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        ball: &Ball<Inner<B>>,
        step: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        targets: Option<Tensor<Inner<B>, 1, Int>>,
    ) -> Tensor<Inner<B>, 4> {
        let labels = Tensor::<B, 1, Int>::from_inner(labels);
        let targets = targets.map(Tensor::from_inner);
        self.run_with(model, ball, step, |logits| {
            self.loss.per_sample(logits, labels.clone(), targets.clone())
        })
    }

    /// The PGD loop for any per-sample loss of the logits (TRADES maximises a KL divergence, for example).
    pub fn run_with<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        ball: &Ball<Inner<B>>,
        step: Tensor<Inner<B>, 4>,
        loss: impl Fn(Tensor<B, 2>) -> Tensor<B, 1>,
    ) -> Tensor<Inner<B>, 4> {
        self.run_from(model, ball, step, None, loss)
    }

    /// As [`PgdConfig::run_with`] from `start` when given (a start drawn elsewhere: the parity tests pass the
    /// official code's draw), else from a draw of [`PgdConfig::start`]; either way clipped as
    /// [`PgdConfig::start_clip`] says.
    pub fn run_from<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        ball: &Ball<Inner<B>>,
        step: Tensor<Inner<B>, 4>,
        start: Option<Tensor<Inner<B>, 4>>,
        loss: impl Fn(Tensor<B, 2>) -> Tensor<B, 1>,
    ) -> Tensor<Inner<B>, 4> {
        let mut x = self.first_iterate(ball, start);
        for _ in 0..self.steps {
            let probe = model.probe_with(x.clone(), &loss);
            x = ball.project(x + ball.steepest(probe.gradient) * step.clone());
        }
        x
    }

    /// The ball and per-sample step for budgets `eps` (N): steps scale as `step_size * eps_i / self.eps`.
    pub fn ball_and_step<B: burn::tensor::backend::Backend>(
        &self,
        images: Tensor<B, 4>,
        eps: Tensor<B, 1>,
    ) -> (Ball<B>, Tensor<B, 4>) {
        let n = images.dims()[0];
        let scale = if self.eps > 0.0 { self.step_size / self.eps } else { 0.0 };
        let step = eps.clone().mul_scalar(scale).reshape([n, 1, 1, 1]);
        (Ball::with_norm(images, eps, self.norm), step)
    }

    /// The first iterate: `start`, or a draw of [`PgdConfig::start`], clipped as [`PgdConfig::start_clip`] says.
    pub fn first_iterate<B: burn::tensor::backend::Backend>(
        &self,
        ball: &Ball<B>,
        start: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let x = start.unwrap_or_else(|| match self.start_radius {
            StartRadius::Budget => draw_start(ball, self.start),
            StartRadius::Configured => {
                let n = ball.center.dims()[0];
                let eps = Tensor::full([n], self.eps, &ball.center.device());
                draw_start(&Ball::with_norm(ball.center.clone(), eps, ball.norm), self.start)
            }
        });
        match self.start_clip {
            StartClip::None => x,
            StartClip::Box => x.clamp(0.0, 1.0),
            StartClip::Ball => ball.project(x),
        }
    }
}

/// A starting point inside `ball`: a draw of `start`, projected into the ball and [0, 1].
pub fn random_start<B: burn::tensor::backend::Backend>(ball: &Ball<B>, start: RandomStart) -> Tensor<B, 4> {
    ball.project(draw_start(ball, start))
}

/// A draw of `start` around the ball's centre, as drawn (possibly outside [0, 1], and for a Gaussian outside the
/// ball).
pub fn draw_start<B: burn::tensor::backend::Backend>(ball: &Ball<B>, start: RandomStart) -> Tensor<B, 4> {
    let center = ball.center.clone();
    let shape = center.shape();
    let device = center.device();
    match start {
        RandomStart::None => center,
        RandomStart::Uniform if ball.norm == Norm::L2 => {
            let n = center.dims()[0];
            let direction = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let radius = Tensor::<B, 4>::random([n, 1, 1, 1], Distribution::Uniform(0.0, 1.0), &device);
            let length = l2_norm(direction.clone());
            center + direction * radius / length * ball.eps.clone()
        }
        RandomStart::Uniform => {
            let noise = Tensor::<B, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), &device);
            center + noise * ball.eps.clone()
        }
        RandomStart::UniformPositive => {
            let noise = Tensor::<B, 4>::random(shape, Distribution::Uniform(0.0, 1.0), &device);
            center + noise * ball.eps.clone()
        }
        RandomStart::Gaussian { std } => {
            let noise = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, std), &device);
            center + noise
        }
    }
}
