//! The process's allocator tuned for a CPU backend that allocates a fresh buffer for every tensor operation.
//!
//! burn-flex gives each operation's output its own `Vec`. glibc's malloc serves blocks above its mmap threshold
//! (128 KiB at start, raised to the largest block freed so far, at most 32 MiB) with a fresh `mmap`, and returns
//! them on free: every large activation then costs a system call and a zero-filled page fault per 4 KiB, on every
//! operation of every step. Which blocks cross the threshold depends on the history of the process (a first batch
//! of 500 images raises it past a small CNN's activations; four batches of 128 do not), so the same attack ran
//! 1.7x slower after one loader than after another. [`keep_freed_memory`] makes every block come from the heap
//! and keeps freed memory for the next operation.

/// Serves every allocation of the process from malloc's heap and never trims it (glibc: `M_MMAP_MAX` 0,
/// `M_TRIM_THRESHOLD` at its maximum), so a freed activation's memory serves the next operation without a system
/// call or page faults. The resident memory stays at the process's peak (as a caching allocator's would). Call it
/// once at the start of `main`, before other threads allocate; `tailguard` does. Returns whether the allocator took
/// the settings: `false` where malloc is not glibc's (other targets, musl), which this leaves untouched.
///
/// On the 40-epoch small CNN, APGD-CE + APGD-T on 500 CIFAR-10 test images (2-vCPU AMD EPYC): 20.9 s -> 12.8 s.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; glibc takes its arena lock for it.
        unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings_and_large_blocks_still_allocate() {
        assert!(super::keep_freed_memory());
        // A block far above the former mmap threshold now comes from the heap, and is usable.
        let mut block = vec![1u8; 64 << 20];
        block[(64 << 20) - 1] = 2;
        assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), (64 << 20) + 1);
    }
}
