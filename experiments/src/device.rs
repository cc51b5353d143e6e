//! `--device auto|flex|ndarray|wgpu|vulkan|metal|webgpu|cuda|rocm|cpu`: picks among the backends
//! compiled in (cargo features). `auto` prefers a real GPU adapter — never a software rasteriser
//! such as lavapipe — then CUDA/ROCm, and falls back to flex (the fast CPU backend).

use anyhow::{Result, bail};
use burn::prelude::Device;

/// Every name `--device` accepts, with whether this binary was built with it.
pub fn compiled() -> Vec<(&'static str, bool)> {
    vec![
        ("flex", cfg!(feature = "flex")),
        ("ndarray", cfg!(feature = "ndarray")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("metal", cfg!(feature = "metal")),
        ("webgpu", cfg!(feature = "webgpu")),
        ("cuda", cfg!(feature = "cuda")),
        ("rocm", cfg!(feature = "rocm")),
        ("cpu", cfg!(feature = "cpu")),
    ]
}

/// The device for `name`, and a one-line description of what was picked.
pub fn select(name: &str) -> Result<(Device, String)> {
    let available =
        || compiled().iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let known = compiled().iter().any(|(n, _)| *n == name);
    if name != "auto" && !known {
        bail!("--device: unknown device `{name}` (allowed: auto, {})", available());
    }
    if name != "auto" && !compiled().iter().any(|(n, on)| *n == name && *on) {
        bail!(
            "--device: `{name}` is not compiled into this binary (compiled: {}); rebuild with `--features {name}`",
            available()
        );
    }
    let dev = match name {
        "auto" => return auto(),
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        #[cfg(feature = "ndarray")]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "metal")]
        "metal" => Device::metal(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "webgpu")]
        "webgpu" => Device::webgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        #[cfg(feature = "rocm")]
        "rocm" => Device::rocm(0),
        #[cfg(feature = "cpu")]
        "cpu" => Device::cpu(),
        _ => unreachable!("checked above"),
    };
    Ok((dev, name.to_string()))
}

fn auto() -> Result<(Device, String)> {
    #[cfg(feature = "cuda")]
    return Ok((Device::cuda(0), "cuda (auto)".into()));
    #[cfg(all(feature = "rocm", not(feature = "cuda")))]
    return Ok((Device::rocm(0), "rocm (auto)".into()));
    #[cfg(all(feature = "wgpu", not(any(feature = "cuda", feature = "rocm"))))]
    if let Some((kind, info)) = real_gpu_adapter() {
        return Ok((Device::wgpu(kind), format!("wgpu (auto: {info})")));
    }
    #[cfg(all(feature = "flex", not(any(feature = "cuda", feature = "rocm"))))]
    return Ok((Device::flex(), "flex (auto: no GPU adapter found)".into()));
    #[allow(unreachable_code)]
    {
        bail!("--device auto: no backend compiled in; build with --features flex (or wgpu, cuda, …)")
    }
}

/// The first discrete, then integrated GPU adapter wgpu sees (CPU adapters like lavapipe and
/// llvmpipe are skipped: the CPU backends are faster there).
#[cfg(feature = "wgpu")]
fn real_gpu_adapter() -> Option<(burn::tensor::DeviceKind, String)> {
    use burn::tensor::DeviceKind;
    use burn::tensor::wgpu::wgpu;
    // On Linux a GPU needs a DRM render node (or NVIDIA's device files); without one, skip the
    // probe (it would only find CPU adapters, and Mesa's loader prints noise while probing).
    if cfg!(target_os = "linux") {
        let has = |dir: &str, prefix: &str| {
            std::fs::read_dir(dir)
                .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(prefix)))
                .unwrap_or(false)
        };
        if !has("/dev/dri", "renderD") && !has("/dev", "nvidia") {
            return None;
        }
    }
    let instance = wgpu::Instance::default();
    let adapters = futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
    for want in [wgpu::DeviceType::DiscreteGpu, wgpu::DeviceType::IntegratedGpu] {
        if let Some(info) = infos.iter().find(|i| i.device_type == want) {
            let kind = match want {
                wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(0),
                _ => DeviceKind::IntegratedGpu(0),
            };
            return Some((kind, format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend)));
        }
    }
    None
}

/// The CPU device for small host-side work (inspect, data preparation).
pub fn cpu() -> Device {
    #[cfg(feature = "flex")]
    return Device::flex();
    #[cfg(all(feature = "ndarray", not(feature = "flex")))]
    return Device::ndarray();
    #[allow(unreachable_code)]
    Device::default()
}
