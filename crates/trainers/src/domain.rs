//! The values a numeric setting may take, and the messages that name the key when it does not: shared by the
//! configuration file's checks and the typed parts' (`Recipe`, `MethodConfig`).

use crate::error::{ConfigError, invalid};

/// What a number may be.
#[derive(Debug, Clone, Copy)]
pub enum Domain {
    /// Finite and >= 0 (weights of loss terms, margins).
    NonNegative,
    /// Finite and > 0 (scales, standard deviations).
    Positive,
    /// Finite (signed offsets).
    Finite,
}

/// `Ok` when `value` is in `domain`; else an error naming `key`, what it must be and the value.
pub fn number(key: &str, value: f64, domain: Domain) -> Result<(), ConfigError> {
    let (ok, requirement) = match domain {
        Domain::NonNegative => (value.is_finite() && value >= 0.0, "a finite number >= 0"),
        Domain::Positive => (value.is_finite() && value > 0.0, "a finite number > 0"),
        Domain::Finite => (value.is_finite(), "a finite number"),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{key} must be {requirement}, got {value}")))
    }
}

/// `Ok` when the size `value` is at most `max`; else an error naming `key`, the value and the bound.
pub fn at_most(key: &str, value: usize, max: usize) -> Result<(), ConfigError> {
    if value <= max {
        Ok(())
    } else {
        Err(invalid(format!(
            "{key} = {value} is more than tailguard allows (at most {max})"
        )))
    }
}
