//! Why an attack setting is refused.

/// An impossible or unknown attack setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttackConfigError {
    /// A budget or step size that is negative or not finite.
    #[error("{setting} must be a non-negative number, got {value}")]
    Negative {
        /// `eps` or `step size`.
        setting: &'static str,
        /// The value given.
        value: f64,
    },
    /// A budget outside [0, 1] (pixels are in [0, 1]).
    #[error("eps must lie in [0, 1] (pixels are in [0, 1]), got {0}")]
    BudgetRange(f64),
    /// A budget that is neither a number nor a fraction.
    #[error("'{0}' is not a number or a fraction")]
    NotANumber(String),
    /// A fraction with a zero denominator.
    #[error("'{0}' divides by zero")]
    DivisionByZero(String),
    /// A norm other than linf and l2.
    #[error("the norm must be linf or l2, got '{0}'")]
    UnknownNorm(String),
    /// A random start defined for one norm only.
    #[error("the {start} start is defined for the L-inf ball only, not {norm}")]
    StartNotForNorm {
        /// The start.
        start: &'static str,
        /// The norm asked for.
        norm: crate::Norm,
    },
    /// APGD with no iteration or no restart.
    #[error("APGD needs at least one iteration and one restart")]
    NoIterations,
    /// An attack name that is not a preset.
    #[error("unknown attack '{name}' (expected one of {expected})")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The preset names, comma-separated.
        expected: String,
    },
}
