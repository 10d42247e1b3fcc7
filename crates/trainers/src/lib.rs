//! # tailguard-trainers
//!
//! Adversarial training on long-tailed data, generic over the autodiff backend and the model
//! ([`tailguard_models::Classifier`]). One training step for every method (batch -> attack in inference mode ->
//! method loss in training mode -> backward -> SGD); methods plug into it through [`Method`]: natural training,
//! PGD-AT, AWP, TRADES, AT-BSL, RoBal, REAT and TAET, or one of your own. RobustLT's class-wise budgets and warm-up are a
//! [`BudgetPolicy`] that composes with any of them.
//!
//! A [`Trainer`] is built from typed parts (model, method, budget policy, [`TrainerConfig`], [`TrainData`]); a
//! [`Run`] gives any trainer checkpoints, resume, a log and a best checkpoint; [`evaluate`] is the one evaluation
//! entry point. [`TrainConfig`] builds the parts of the built-in methods and architectures from a TOML file.
//!
//! ```
//! use burn::backend::Autodiff;
//! use tailguard_flex::Flex;
//! use tailguard_trainers::{BudgetPolicy, RobustLtConfig};
//!
//! // RobustLT budgets for CIFAR-10-LT (rho 50), alpha 0.3: the head class gets 0.7 eps, the tail class the most.
//! let counts = [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100];
//! let policy = BudgetPolicy::robust_lt(8.0 / 255.0, &counts, RobustLtConfig::new(0.3, 0.8), 100);
//! let head = policy.full_budgets()[0] * 255.0;
//! let tail = policy.full_budgets()[9] * 255.0;
//! assert!((head - 5.6).abs() < 0.01 && (tail - 12.88).abs() < 0.01);
//! assert_eq!(policy.intensity(0), 0.0); // the warm-up starts from natural training
//! ```

#![warn(missing_docs)]

pub mod averaging;
pub mod budget;
pub mod config;
pub mod configured;
pub mod data;
pub mod domain;
pub mod epoch;
pub mod error;
pub mod evaluation;
pub mod losses;
pub mod method;
pub mod methods;
pub mod observer;
pub mod optimizer;
pub mod parallel;
pub mod recipe;
pub mod resume_state;
pub mod run;
pub mod schedule;
pub mod settings;
pub mod step;
pub mod tensorboard;
pub mod trainer;
pub mod weight_perturbation;

pub use averaging::{WeightAverage, WeightAverageConfig};
pub use budget::{BudgetPolicy, RobustLtConfig};
pub use config::TrainConfig;
pub use data::TrainData;
pub use epoch::{EpochRecord, EpochTally, StepFigures};
pub use error::ConfigError;
pub use error::{InvalidSetting, MethodStateError, OptimizerStateError, TrainError, chain};
pub use evaluation::{AttackResult, EvaluationAttack, PresetAttack, evaluate, evaluate_on_devices};
pub use method::{ExtraCleanForward, Method, StepInput, StepOutput, attack_from_start, pgd_examples};
pub use observer::{EvaluationObserver, Silent, TrainObserver};
pub use optimizer::{GroupedSgd, SgdSettings};
pub use parallel::{DataParallelConfig, Exchange, Peer, Replica, RunningStatistics, train_data_parallel};
pub use recipe::{AttackSection, Budget, MethodConfig, Recipe, StartKind};
pub use resume_state::{ResumeState, SameRun};
pub use run::{Opening, RESUME_SAFE_KEYS, Run, RunDescription};
pub use schedule::LrSchedule;
pub use settings::{AttackBatchNorm, StepOptions, TrainerConfig, ValidationConfig};
pub use step::{train_step, update_step};
pub use tensorboard::{EventWriter, TensorBoardObserver};
pub use trainer::Trainer;
