//! Peak memory of the process, for `tailguard bench`.
//!
//! On Linux the kernel keeps the peak resident set size (`VmHWM` in `/proc/self/status`) and resets it when "5" is
//! written to `/proc/self/clear_refs`, so each workload's peak can be read on its own. Elsewhere nothing is reported.

use std::fs;

/// Starts a new peak measurement (no effect where the kernel does not support it).
pub fn reset_peak() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since the last [`reset_peak`], in bytes, if the platform reports it.
pub fn peak_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
