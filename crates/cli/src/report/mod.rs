//! Reports people read: JSON for machines, Markdown for people, PNG charts for a glance.

pub mod chart;
pub mod curves;
pub mod eval_report;
pub mod robustbench;

use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and a rename, so a report is never half-written, and never
/// over a file that tailguard did not write (see tailguard-output).
pub fn write_report(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    tailguard_output::write_owned(path, bytes)?;
    Ok(())
}

/// `0.1234` -> `"12.34"`; `None` -> `"-"`.
pub fn percent(value: Option<f64>) -> String {
    value.map(|v| format!("{:.2}", 100.0 * v)).unwrap_or_else(|| "-".into())
}
