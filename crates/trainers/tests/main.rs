//! The integration tests of tailguard-trainers, one binary: each file below was its own test binary, and each
//! linked and instantiated the training machinery for Flex again (minutes of CI's build per binary).

mod common;
mod data_parallel;
mod parity;
mod recipes;
mod runs;

/// Burn 0.21 keeps one random generator per process, shared by every thread: two tests drawing from it at once
/// would interleave their draws (initial weights, random starts, shuffles) and each would see the other's timing.
/// Every test of this binary takes this lock for its whole run (burn-collective also keeps one session per backend
/// and process: one data-parallel run at a time).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lock above; a test that panicked while holding it does not fail the others.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
