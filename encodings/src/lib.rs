//! pezoo-encodings: every positional encoding of the zoo, behind one registry.
//!
//! - [`EncodingConfig`]: serde/TOML configuration tagged by `kind` (Hugging Face names:
//!   `rope_theta`, `partial_rotary_factor`, `rope_scaling`).
//! - [`Encoding`]: the initialised Burn module; [`Encoding::as_dyn`] gives the
//!   [`PositionalEncoding`] interface an attention layer uses: rotary maps on q/k
//!   ([`RotaryEncoding::apply_qk`]), a logits bias for a query × key block, or an embedding.
//! - [`inspect`]: what an encoding does, as numbers (`zoo inspect`); [`envelope`]: the logit
//!   vs distance for fixed and random q, k (`zoo inspect --envelope`).
//!
//! The math and its sources: `../shared/design/encodings.md` (summarised in each module).

// deny, not forbid: the bounds-checked calls into `gemm` (`attention::cpu::matmul`,
// `layers::flex::product`) and the layer ops' uninitialised outputs (`layers::flex::outputs`).
#![deny(unsafe_code)]

pub mod attention;
pub mod bias;
pub mod embedding;
pub mod envelope;
pub mod error;
#[doc(hidden)]
pub mod hooks;
pub mod inspect;
pub mod layers;
pub mod registry;
pub mod rotary;

use burn::prelude::Device;

pub use envelope::{Envelope, envelope};
pub use error::ConfigError;
pub use inspect::Inspection;
pub use registry::{
    Encoding, EncodingClass, EncodingConfig, EncodingContext, EncodingKind, PositionalEncoding,
    check_positions,
};
pub use rotary::{Layout, RotaryEncoding, RotarySpec, Side};

/// Builds the encoding for `ctx` and describes it at the given query–key distances.
pub fn inspect(
    config: &EncodingConfig,
    ctx: &EncodingContext,
    distances: &[usize],
    device: &Device,
) -> Result<Inspection, ConfigError> {
    let enc = config.init(ctx, device)?;
    let mut out = enc.as_dyn().inspect(distances, device);
    out.kind = config.kind().to_string();
    out.context = *ctx;
    Ok(out)
}

/// For tests: runs each named test body — a `fn(Device)` — on every CubeCL device compiled into
/// the calling crate, as candle's `test_device!` does: one `#[test]` per body in a module per
/// device (`wgpu::…`, `cuda::…`, …), so a `cuda` build on a GPU machine checks its own kernels
/// against the reference. (A macro: nothing of it is in a build that does not expand it.)
#[doc(hidden)]
#[macro_export]
macro_rules! cube_tests {
    ($($body:ident),+ $(,)?) => {
        $crate::cube_tests!(@on "wgpu", wgpu, Device::wgpu(burn::tensor::DeviceKind::DefaultDevice); $($body),+);
        $crate::cube_tests!(@on "vulkan", vulkan, Device::vulkan(burn::tensor::DeviceKind::DefaultDevice); $($body),+);
        $crate::cube_tests!(@on "webgpu", webgpu, Device::webgpu(burn::tensor::DeviceKind::DefaultDevice); $($body),+);
        $crate::cube_tests!(@on "metal", metal, Device::metal(burn::tensor::DeviceKind::DefaultDevice); $($body),+);
        $crate::cube_tests!(@on "cuda", cuda, Device::cuda(0); $($body),+);
        $crate::cube_tests!(@on "rocm", rocm, Device::rocm(0); $($body),+);
        $crate::cube_tests!(@on "cpu", cpu, Device::cpu(); $($body),+);
    };
    (@on $feature:literal, $module:ident, $device:expr; $($body:ident),+) => {
        #[cfg(feature = $feature)]
        mod $module {
            use burn::prelude::*;
            $(
                #[test]
                fn $body() {
                    super::$body($device)
                }
            )+
        }
    };
}
