//! The compute backend, chosen at compile time with cargo features (`cuda`, else `wgpu`, else `flex`, the CPU), and
//! the device, chosen at run time with `--device` (see `tailguard devices`).

use anyhow::bail;
use burn::tensor::backend::Backend;

#[cfg(feature = "cuda")]
pub type Compute = burn::backend::Cuda;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type Compute = burn::backend::Wgpu;
#[cfg(all(not(feature = "wgpu"), not(feature = "cuda")))]
pub type Compute = tailguard_flex::Flex;

/// The backend with automatic differentiation, for training and attacks.
#[allow(dead_code)]
pub type Train = burn::backend::Autodiff<Compute>;

/// A device of the compiled backend.
pub type ComputeDevice = burn::tensor::Device<Compute>;

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

/// `--device`, shared by every command that computes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeviceArg {
    /// Device to compute on, as `tailguard devices` lists them: `cpu` (CPU build); `cuda:N` (CUDA build);
    /// `wgpu`, `wgpu:discrete:N`, `wgpu:integrated:N`, `wgpu:virtual:N` or `wgpu:cpu` (wgpu build)
    /// [default: the backend's default device].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
}

impl DeviceArg {
    /// The device, checked to exist and to work.
    pub fn open(&self) -> anyhow::Result<ComputeDevice> {
        device(self.device.as_deref())
    }
}

/// The spellings `--device` accepts in this build.
fn expected() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda:N (N from 0)"
    } else if cfg!(feature = "wgpu") {
        "wgpu, wgpu:discrete:N, wgpu:integrated:N, wgpu:virtual:N or wgpu:cpu"
    } else {
        "cpu (this build computes on the CPU only; build with --features wgpu or cuda for a GPU)"
    }
}

/// A device kind of the backend: its name prefix, burn's device type id, and whether it has indices.
struct Kind {
    prefix: &'static str,
    type_id: u16,
    indexed: bool,
}

#[cfg(feature = "cuda")]
const KINDS: &[Kind] = &[Kind {
    prefix: "cuda",
    type_id: 0,
    indexed: true,
}];
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
const KINDS: &[Kind] = &[
    Kind {
        prefix: "wgpu:discrete",
        type_id: 0,
        indexed: true,
    },
    Kind {
        prefix: "wgpu:integrated",
        type_id: 1,
        indexed: true,
    },
    Kind {
        prefix: "wgpu:virtual",
        type_id: 2,
        indexed: true,
    },
    Kind {
        prefix: "wgpu:cpu",
        type_id: 3,
        indexed: false,
    },
];
#[cfg(all(not(feature = "wgpu"), not(feature = "cuda")))]
const KINDS: &[Kind] = &[Kind {
    prefix: "cpu",
    type_id: 0,
    indexed: false,
}];

/// The device of kind `kind` with `index`.
fn make(kind: &Kind, index: usize) -> ComputeDevice {
    #[cfg(feature = "cuda")]
    {
        let _ = kind;
        burn::backend::cuda::CudaDevice::new(index)
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    {
        use burn::backend::wgpu::WgpuDevice;
        match kind.type_id {
            0 => WgpuDevice::DiscreteGpu(index),
            1 => WgpuDevice::IntegratedGpu(index),
            2 => WgpuDevice::VirtualGpu(index),
            _ => WgpuDevice::Cpu,
        }
    }
    #[cfg(all(not(feature = "wgpu"), not(feature = "cuda")))]
    {
        let _ = (kind, index);
        ComputeDevice::default()
    }
}

/// Runs `f`, turning a panic of the GPU runtime (no driver, no adapter) into `None`, silently.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    std::panic::set_hook(previous);
    result
}

/// How many devices of `kind` the backend sees (0 when its runtime cannot start).
fn count(kind: &Kind) -> usize {
    if !cfg!(any(feature = "cuda", feature = "wgpu")) {
        return 1;
    }
    quietly(|| <Compute as Backend>::device_count(kind.type_id)).unwrap_or(0)
}

/// Whether a small computation on `device` succeeds.
fn works(device: &ComputeDevice) -> bool {
    #[allow(clippy::clone_on_copy)] // the device is Copy on some backends only
    let device = device.clone();
    quietly(move || {
        let t = burn::tensor::Tensor::<Compute, 1>::ones([4], &device);
        t.sum().into_scalar()
    })
    .is_some()
}

/// Every device of the backend, by name, with whether it works.
pub fn list() -> Vec<(String, bool)> {
    let mut devices = Vec::new();
    for kind in KINDS {
        let n = if kind.indexed { count(kind) } else { count(kind).min(1) };
        for index in 0..n {
            let name = if kind.indexed {
                format!("{}:{index}", kind.prefix)
            } else {
                kind.prefix.to_string()
            };
            devices.push((name, works(&make(kind, index))));
        }
    }
    devices
}

/// The device named `spec` (the backend's default when `None`), checked to exist and to work.
pub fn device(spec: Option<&str>) -> anyhow::Result<ComputeDevice> {
    let device = match spec {
        None => ComputeDevice::default(),
        Some("wgpu") if cfg!(feature = "wgpu") && !cfg!(feature = "cuda") => ComputeDevice::default(),
        Some(spec) => {
            let (kind, index) = KINDS
                .iter()
                .find_map(|kind| {
                    let rest = spec.strip_prefix(kind.prefix)?;
                    match (kind.indexed, rest.strip_prefix(':')) {
                        (false, _) if rest.is_empty() => Some((kind, Some(0))),
                        (true, Some(n)) => Some((kind, n.parse::<usize>().ok())),
                        _ => None,
                    }
                })
                .ok_or_else(|| anyhow::anyhow!("unknown device '{spec}' (expected {})", expected()))?;
            let Some(index) = index else {
                bail!("unknown device '{spec}' (expected {})", expected());
            };
            let available = count(kind);
            if index >= available {
                bail!(
                    "device {spec} does not exist: the {} backend sees {available} {} device(s); `tailguard devices` \
                     lists them",
                    name(),
                    kind.prefix
                );
            }
            make(kind, index)
        }
    };
    if cfg!(any(feature = "cuda", feature = "wgpu")) && !works(&device) {
        bail!(
            "no usable {} device{}: is a GPU driver installed? (build without --features {} to run on the CPU)",
            name(),
            spec.map(|s| format!(" {s}")).unwrap_or_default(),
            name()
        );
    }
    Ok(device)
}

/// The devices of `--devices LIST` (comma-separated), each checked. On the CPU build every entry is a thread on the
/// CPU, named `cpu:N` (or `cpu`); the names must differ.
pub fn devices(list: &str) -> anyhow::Result<Vec<ComputeDevice>> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.iter().any(|name| name.is_empty()) {
        bail!("--devices '{list}' has an empty entry: list devices separated by commas, e.g. cuda:0,cuda:1");
    }
    let mut seen = std::collections::HashSet::new();
    let mut devices = Vec::new();
    for name in &names {
        if !seen.insert(*name) {
            bail!("--devices lists {name} twice: each device trains one shard");
        }
        let cpu_thread = !cfg!(any(feature = "cuda", feature = "wgpu"))
            && name.strip_prefix("cpu:").is_some_and(|n| n.parse::<usize>().is_ok());
        devices.push(device(Some(if cpu_thread { "cpu" } else { name }))?);
    }
    Ok(devices)
}
