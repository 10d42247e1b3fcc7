//! # tailguard-attacks
//!
//! L-inf adversarial attacks for any model implementing [`tailguard_models::Classifier`], generic over the
//! autodiff backend: FGSM, PGD (cross-entropy, CW-inf margin, DLR; untargeted and targeted; per-sample budgets),
//! APGD-CE and APGD-T exactly as AutoAttack runs them, and AutoAttack-lite.
//!
//! Every attack runs the model in inference mode (BatchNorm running statistics, never updated) through a
//! [`FrozenModel`] whose parameters do not require gradients, so each step differentiates the input only. Inputs and
//! outputs are plain tensors of the inner backend; every adversarial image lies in the eps-ball and in [0, 1].
//!
//! ```
//! use burn::backend::Autodiff;
//! use tailguard_flex::Flex;
//! use burn::tensor::{Distribution, Int, Tensor};
//! use tailguard_attacks::{FrozenModel, PgdConfig};
//! use tailguard_models::{Architecture, ModelConfig};
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let model = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 10).init::<B>(&device).unwrap();
//! let frozen = FrozenModel::new(&model);
//! let images = Tensor::<Flex, 4>::random([4, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
//! let labels = Tensor::<Flex, 1, Int>::from_ints([0, 1, 2, 3], &device);
//! let adversarial = PgdConfig::new().with_steps(3).perturb(&frozen, images.clone(), labels, None);
//! let distance: f32 = (adversarial - images).abs().max().into_scalar();
//! assert!(distance <= 8.0 / 255.0 + 1e-6);
//! ```

#![warn(missing_docs)]

pub mod apgd;
pub mod auto_attack;
pub mod ball;
pub mod error;
pub mod fab;
pub mod loss;
pub mod masking;
pub mod pgd;
pub mod presets;
pub mod probe;
pub mod square;
pub mod subset;

pub use apgd::{ApgdConfig, FirstComparison, checkpoints};
pub use auto_attack::{AutoAttackConfig, AutoAttackLiteConfig, AutoAttackStages, STAGE_NAMES, StageSeconds};
pub use ball::{Ball, Norm, parse_budget, parse_eps};
pub use error::AttackConfigError;
pub use fab::FabConfig;
pub use loss::AttackLoss;
pub use masking::{MaskingWarning, check_model, check_model_in, check_restarts, check_stages};
pub use pgd::{PgdConfig, RandomStart, StartClip, StartRadius};
pub use presets::{AttackOutcome, AttackPreset};
pub use probe::{FrozenModel, Inner, host_flags, predictions};
pub use square::SquareConfig;
