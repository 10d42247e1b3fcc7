//! What CPU a CPU figure was measured on: its model and the vector instructions the matrix multiply dispatches to.

/// The CPU's model name (`/proc/cpuinfo`), or "unknown".
pub fn model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The widest kernels of the `gemm` crate (burn-flex's matrix multiply) this CPU runs. gemm chooses them at run time
/// by CPU detection, as done here; its AVX-512 kernels exist in every build because tailguard-flex turns on gemm's
/// `x86-v4` feature by default (vendor/tailguard-flex/Cargo.toml).
pub fn matmul_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            "avx2+fma"
        } else {
            "sse2"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}
