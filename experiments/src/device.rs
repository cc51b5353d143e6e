//! `--device auto|flex|ndarray|wgpu|vulkan|metal|webgpu|cuda|rocm|cpu`, optionally with an index
//! (`cuda:1`, `wgpu:0`; see `zoo devices`): picks among the backends compiled in (cargo
//! features). `auto` prefers a real GPU adapter — never a software rasteriser such as lavapipe —
//! then CUDA/ROCm, and falls back to flex (the fast CPU backend). `--devices` takes a list of
//! them (or `all`) for data-parallel training.

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

/// A `--device` value's backend and device index: `cuda:1` → (`cuda`, Some(1)).
fn split_index(spec: &str) -> Result<(&str, Option<usize>)> {
    match spec.split_once(':') {
        None => Ok((spec, None)),
        Some((name, i)) => match i.parse::<usize>() {
            Ok(i) => Ok((name, Some(i))),
            Err(_) => bail!("--device: `{spec}`: the index after `:` must be a number ≥ 0 (e.g. {name}:0)"),
        },
    }
}

/// The devices of a GPU backend this binary sees, in index order (empty where there are none
/// or the backend is not compiled in).
#[allow(unused_variables)]
pub fn enumerate(name: &str) -> Vec<Device> {
    #[allow(unused_imports)]
    use burn::tensor::DeviceType;
    let devices = match name {
        #[cfg(feature = "cuda")]
        "cuda" => Device::enumerate(DeviceType::Cuda),
        #[cfg(feature = "rocm")]
        "rocm" => Device::enumerate(DeviceType::Rocm),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::enumerate(DeviceType::Wgpu),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::enumerate(DeviceType::Vulkan),
        #[cfg(feature = "metal")]
        "metal" => Device::enumerate(DeviceType::Metal),
        #[cfg(feature = "webgpu")]
        "webgpu" => Device::enumerate(DeviceType::WebGpu),
        _ => return Vec::new(),
    };
    devices.into_vec()
}

/// The device for `name` (`cuda`, `cuda:1`, …), and a one-line description of what was picked.
pub fn select(spec: &str) -> Result<(Device, String)> {
    let (name, index) = split_index(spec)?;
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
    match (name, index) {
        ("auto", Some(_)) => bail!("--device: `auto` takes no index"),
        ("flex" | "ndarray" | "cpu", Some(i)) if i > 0 => {
            bail!("--device: {name} has one device ({name}:0); `{spec}` does not exist")
        }
        (_, Some(i)) if !matches!(name, "flex" | "ndarray" | "cpu") => {
            let found = enumerate(name);
            return match found.get(i) {
                Some(d) => Ok((d.clone(), spec.to_string())),
                None => bail!(
                    "--device: `{spec}` does not exist: this machine has {} {name} device(s){} (see `zoo devices`)",
                    found.len(),
                    if found.is_empty() {
                        String::new()
                    } else {
                        format!(", {name}:0 … {name}:{}", found.len() - 1)
                    }
                ),
            };
        }
        _ => {}
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
    Ok((dev, spec.to_string()))
}

/// `--devices`: a comma-separated list of `--device` values of one backend, or `all` (every
/// CUDA or ROCm device this binary sees). Each with the name it was picked by.
pub fn select_many(list: &str) -> Result<Vec<(Device, String)>> {
    if list.trim() == "all" {
        for name in ["cuda", "rocm"] {
            if compiled().iter().any(|(n, on)| *n == name && *on) {
                let found = enumerate(name);
                if found.is_empty() {
                    bail!("--devices all: this machine has no {name} device (see `zoo devices`)");
                }
                return Ok(found.into_iter().enumerate().map(|(i, d)| (d, format!("{name}:{i}"))).collect());
            }
        }
        bail!(
            "--devices all: lists the GPUs of a cuda or rocm build, and this binary has neither; name the devices instead (e.g. --devices wgpu:0,wgpu:1, or flex,flex to test the data-parallel path on a CPU)"
        );
    }
    let mut picked: Vec<(Device, String)> = Vec::new();
    for entry in list.split(',').map(str::trim) {
        if entry.is_empty() || entry == "auto" {
            bail!("--devices: `{list}`: name each device (e.g. cuda:0,cuda:1), or pass `all`");
        }
        let (name, _) = split_index(entry)?;
        if let Some((_, first)) = picked.first() {
            let (first_name, _) = split_index(first.as_str())?;
            if first_name != name {
                bail!(
                    "--devices: `{list}` mixes backends ({first_name} and {name}); data-parallel training uses one"
                );
            }
        }
        picked.push(
            select(entry)
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().replacen("--device:", "--devices:", 1)))?,
        );
    }
    Ok(picked)
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
