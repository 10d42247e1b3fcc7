//! The compute backend, chosen at compile time with cargo features: `cuda`, else `wgpu`, else `flex` (CPU).

#[cfg(feature = "cuda")]
pub type Compute = burn::backend::Cuda;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type Compute = burn::backend::Wgpu;
#[cfg(all(not(feature = "wgpu"), not(feature = "cuda")))]
pub type Compute = burn::backend::Flex;

/// The backend with automatic differentiation, for training and attacks.
#[allow(dead_code)]
pub type Train = burn::backend::Autodiff<Compute>;

/// Human-readable backend name for logs and reports.
pub fn name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else {
        "flex (CPU)"
    }
}

/// The default device, checked to work. GPU backends panic deep inside their runtime when no driver or adapter
/// is present; this turns that into an error message.
pub fn device() -> anyhow::Result<burn::tensor::Device<Compute>> {
    let device = burn::tensor::Device::<Compute>::default();
    if cfg!(any(feature = "cuda", feature = "wgpu")) {
        #[allow(clippy::clone_on_copy)] // the device is Copy on some backends only
        let probe_device = device.clone();
        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let t = burn::tensor::Tensor::<Compute, 1>::ones([4], &probe_device);
            t.sum().into_scalar()
        }));
        std::panic::set_hook(previous_hook);
        if result.is_err() {
            anyhow::bail!(
                "no usable {} device: is a GPU driver installed? (build without --features {} to run on the CPU)",
                name(),
                name()
            );
        }
    }
    Ok(device)
}
