//! AutoAttack-lite: APGD-CE, then APGD-T on the points still classified correctly (the RoBal convention; FAB-T and
//! Square add almost nothing on adversarially trained models and cost about four times as much).

use burn::config::Config;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, ElementConversion, Int, Tensor};
use tailguard_models::Classifier;

use crate::apgd::ApgdConfig;
use crate::probe::{FrozenModel, Inner};

/// Configuration of AutoAttack-lite; both stages share the APGD settings (100 iterations, 1 restart, 9 targets).
#[derive(Config, Debug, PartialEq)]
pub struct AutoAttackLiteConfig {
    /// Settings of both APGD stages.
    #[config(default = "ApgdConfig::new()")]
    pub apgd: ApgdConfig,
}

/// Points still robust after each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AutoAttackStages {
    /// Correct on clean images.
    pub clean: usize,
    /// Still robust after APGD-CE.
    pub apgd_ce: usize,
    /// Still robust after APGD-T.
    pub apgd_t: usize,
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
        let count = |flags: &Tensor<Inner<B>, 1, Bool>| flags.clone().int().sum().into_scalar().elem::<i64>() as usize;
        let robust = model.correct(images.clone(), labels.clone());
        let clean = count(&robust);
        let (adversarial, robust) = self.apgd.apgd_ce(model, images, labels.clone(), robust);
        let apgd_ce = count(&robust);
        // Rows still robust after APGD-CE hold their clean image, so APGD-T starts from clean images for exactly the
        // points it attacks, while broken rows keep their APGD-CE example.
        let (adversarial, robust) = self.apgd.apgd_t(model, adversarial, labels, robust);
        let apgd_t = count(&robust);
        (adversarial, robust, AutoAttackStages { clean, apgd_ce, apgd_t })
    }
}
