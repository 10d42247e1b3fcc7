//! RoBal (Wu et al., CVPR 2021): a cosine classifier trained with a class-aware margin and a prior bias on
//! adversarial examples, plus a TRADES-style KL term. RoBal-R setting by default: scale 10, margin 0.1, tau_b 1.5,
//! tau_m 0.3, KL weight 6; the inner maximisation is PGD-5 (step 0.0078, eps 0.031, one-sided uniform start) on the
//! model's cosine logits.

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use tailguard_attacks::{FrozenModel, Inner, PgdConfig};
use tailguard_models::{Classifier, Mode};

use crate::losses::{robal_kl, robal_logits, robal_margins, smoothed_cross_entropy};
use crate::method::{Method, StepInput, StepOutput, pgd_examples};

/// RoBal's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Robal {
    /// The inner maximisation.
    pub attack: PgdConfig,
    /// Logit scale s applied in the loss (the cosine head itself has scale 1).
    pub scale: f64,
    /// Per-class margins `m + tau_m log(n_c / n_min) / s`.
    pub margins: Vec<f32>,
    /// `log(n_c / N)`.
    pub log_prior: Vec<f32>,
    /// Weight of the prior bias (tau_b).
    pub tau_b: f64,
    /// Weight of the margin loss (beta_adv).
    pub adversarial_weight: f64,
    /// Weight of the KL term (beta_reg).
    pub kl_weight: f64,
    /// Run the adversarial batch through the model a second time, after the clean batch, for the KL term, as the
    /// official code does: the gradient is the same, but BatchNorm's running statistics move once more (official:
    /// true).
    pub repeat_adversarial_forward: bool,
    /// Run the clean batch through the model once more before the KL term, as the original code does for its clean
    /// cross-entropy weighted by `beta_nat = 0`: no gradient, but BatchNorm's running statistics move once more
    /// (official: true; RobustLT's port: false).
    pub natural_forward: bool,
}

impl Robal {
    /// From per-class training counts and RoBal's hyper-parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        attack: PgdConfig,
        train_counts: &[usize],
        scale: f64,
        margin: f64,
        tau_m: f64,
        tau_b: f64,
        adversarial_weight: f64,
        kl_weight: f64,
    ) -> Self {
        Self {
            attack,
            scale,
            margins: robal_margins(train_counts, margin, tau_m, scale),
            log_prior: crate::losses::log_prior(train_counts),
            tau_b,
            adversarial_weight,
            kl_weight,
            repeat_adversarial_forward: true,
            natural_forward: true,
        }
    }

    /// Sets [`Robal::repeat_adversarial_forward`].
    pub fn with_repeat_adversarial_forward(mut self, repeat: bool) -> Self {
        self.repeat_adversarial_forward = repeat;
        self
    }

    /// Sets [`Robal::natural_forward`].
    pub fn with_natural_forward(mut self, natural: bool) -> Self {
        self.natural_forward = natural;
        self
    }
}

impl<B: AutodiffBackend, M: Classifier<B>> Method<B, M> for Robal {
    fn name(&self) -> &'static str {
        "robal"
    }

    fn adversarial(&self, model: &FrozenModel<B, M>, input: &StepInput<B>) -> Option<Tensor<Inner<B>, 4>> {
        Some(pgd_examples(&self.attack, model, input))
    }

    fn loss(&self, model: &M, input: &StepInput<B>, adversarial: Option<Tensor<B, 4>>) -> StepOutput<B> {
        let adversarial = adversarial.expect("RoBal trains on adversarial examples");
        // The official order of forward passes: adversarial (margin loss), clean (the natural loss the original
        // weights by 0), clean and adversarial again (KL term).
        let adv = model.forward(adversarial.clone(), Mode::Train);
        if self.natural_forward {
            // Only BatchNorm's running statistics keep anything of it.
            let _ = model.forward(input.images.clone(), Mode::Train);
        }
        let clean = model.forward(input.images.clone(), Mode::Train);
        let adv_kl = if self.repeat_adversarial_forward {
            model.forward(adversarial, Mode::Train)
        } else {
            adv.clone()
        };
        let device = adv.device();
        let margins = Tensor::<B, 1>::from_floats(self.margins.as_slice(), &device);
        let log_prior = Tensor::<B, 1>::from_floats(self.log_prior.as_slice(), &device);
        let margin_logits = robal_logits(
            adv.clone(),
            input.labels.clone(),
            margins,
            self.scale,
            log_prior,
            self.tau_b,
        );
        // The KL compares the model's own (scale 1) cosine logits, with RoBal's `log(q + 1e-12)`.
        let kl = robal_kl(clean.clone(), adv_kl);
        let loss = smoothed_cross_entropy(margin_logits, input.labels.clone(), input.label_smoothing)
            .mul_scalar(self.adversarial_weight)
            + kl.mul_scalar(self.kl_weight);
        StepOutput {
            loss,
            clean_logits: Some(clean),
            adversarial_logits: Some(adv),
        }
    }
}
